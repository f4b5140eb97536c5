"""Temporal filtering of place recognition over a sliding window of frames.

Both filters assume the map's rows follow the route (true for maps built from a video or from
an ordered image folder), so moving along the route means moving to nearby rows. Input per
frame: the similarities of the frame to every map place (``scores``, shape (N,)). Each frame's
scores are standardised (z-score over the map) so that frames with compressed similarities
(night, blur) count as much as crisp ones.

**Steps and speed.** Motion is measured in *steps*: the frame numbers of the source (what
:meth:`TemporalFilter.update` gets as ``step``; by default it counts updates). A stream that
dropped frames therefore still moves the right distance along the map. ``speed`` is the
expected number of map rows per step (1 for Gardens Point, where frame i of one traversal
matches row i; about ``1 / (keyframe_step · camera_fps)`` for a map built from video and
driven again at the same speed); ``velocities`` and ``velocity`` are multiples of it.

- ``seq`` (SeqSLAM-style sequence matching): for each map row ``j`` and each velocity ``v``,
  the score of the straight line through the last ``window`` frames that ends at ``j``:
  ``mean_t z[t, j − round(v·speed·(step_now − step_t))]``; the best over ``v`` is the
  filtered score of ``j``. Rows before the map's start do not count.
- ``hmm`` (Bayes filter over map rows, run over the last ``window`` frames from a uniform
  prior): prediction moves belief forward by ``velocity·speed·Δstep`` rows with a Gaussian of
  width ``max(sigma·speed·Δstep, 0.5)`` rows (plus a small uniform ``jump`` probability to
  recover from errors); the update multiplies by ``exp(z / temperature)``.

``window = 1`` (or ``method = "none"``) returns the frame's own best place.

**Rows that carry evidence.** Per frame the filter needs only the rows with a known
similarity (:class:`FrameScores`): the search's candidates, the rows around the filter's
current belief (:meth:`TemporalFilter.focus`: every row a line or a transition of the next
update can touch) and, on HNSW maps, a fixed sample of rows that estimates the mean and spread
of the frame's similarities over the map (:func:`frame_scores`); every other row counts as the
mean (z = 0: no evidence either way). :meth:`TemporalFilter.observe` works on those rows only,
so a frame costs O(window × evidence rows) whatever the map's size:

- ``seq`` evaluates exactly the lines through a known cell. On exact maps every similarity is
  known (``FrameScores.full``) and no row outside the candidates beats the lowest candidate,
  so ``mean_t bound_t`` bounds every line not evaluated; when the best evaluated line beats
  that bound the answer is the dense filter's, else (counted in
  :attr:`TemporalFilter.fallbacks`) the dense filter runs. Same answers as :meth:`update`.
- ``hmm`` on HNSW maps keeps the belief explicitly on the rows evidence reached (known rows,
  spread by each transition, and the map's ends) and one shared value for all others; on exact
  maps it runs the dense filter on the rolling window of standardised frames (O(window × N),
  beside an O(N · dim) search).

:meth:`TemporalFilter.update` is the dense reference over full (N,) score vectors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError

METHODS = ("none", "seq", "hmm")


@dataclass(frozen=True)
class FilterConfig:
    """Settings of a :class:`TemporalFilter` (see module doc). Saved with results as a dict.

    The default, ``seq`` with a window of 5 frames, is the one default of every entry point
    (``FilterConfig()``, :func:`~sfrs_edge.stream.sequence.localize_stream`,
    ``Localizer.stream`` and ``localize --filter``): on real walks it answers right more often
    than the per-frame answer (Gardens Point night R@1 45.0 → 59.0 %, docs/STREAMING.md) and
    needs no tuning beyond ``speed``; its
    first frame, with a window of one, is the per-frame answer. ``none`` is an explicit choice.
    """

    method: str = "seq"
    window: int = 5
    velocities: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
    velocity: float = 1.0
    sigma: float = 1.5
    jump: float = 1e-3
    temperature: float = 1.0
    speed: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown filter {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.window < 1:
            raise ConfigError(f"filter window must be at least 1 frame, got {self.window}")
        if not self.velocities or min(self.sigma, self.temperature, self.speed) <= 0:
            raise ConfigError("filter velocities, sigma, temperature and speed must be positive")
        if not 0 <= self.jump < 1:
            raise ConfigError(f"filter jump probability must be in [0, 1), got {self.jump}")


SAMPLE_ROWS = 256  # rows scored every frame on large maps to estimate the z-score statistics
TAKE_CELLS = 48  # sparse seq: known cells per frame that start lines in the first pass


def standardise(scores: np.ndarray, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Z-score of one frame's similarities over the map (constant scores give zeros).

    ``stats``: (mean, std) of the similarities over the map when ``scores`` holds true values
    only for some rows (:func:`partial_scores`)."""
    s = np.asarray(scores, np.float64)
    mean, sd = (s.mean(), s.std()) if stats is None else stats
    return (s - mean) / sd if sd > 1e-12 else np.zeros_like(s)


@dataclass(frozen=True)
class FrameScores:
    """One frame's similarities as far as they are known (see module doc).

    ``rows``: sorted unique map rows with a true similarity, ``values`` (float64) theirs;
    ``count``: map rows; ``mean``, ``std``: the frame's similarity statistics over the map.
    ``full``: every row's similarity (exact maps), else None and rows outside ``rows`` count
    as the mean. ``bound`` (with ``full``): a similarity no row outside ``rows`` exceeds (the
    lowest search candidate; None when ``rows`` holds every row). ``sampled``: which of
    ``rows`` are there only to estimate the statistics (``hmm`` leaves them out).
    """

    rows: np.ndarray
    values: np.ndarray
    count: int
    mean: float
    std: float
    full: np.ndarray | None = None
    bound: float | None = None
    sampled: np.ndarray | None = None

    @classmethod
    def exact(
        cls, full: np.ndarray, ids: np.ndarray, sims: np.ndarray, focus: np.ndarray | None = None
    ) -> FrameScores:
        """A frame on an exact map: ``full`` (N,) similarities, the search's top candidates
        ``ids`` with ``sims`` (the rows no other row beats) and the filter's ``focus``."""
        full = np.asarray(full, np.float32).ravel()
        ids = np.asarray(ids, np.int64).ravel()
        rows = np.unique(ids) if focus is None else np.union1d(ids, np.asarray(focus, np.int64))
        s = full.astype(np.float64)
        bound = float(np.min(sims)) if len(ids) < len(full) else None
        return cls(rows, s[rows], len(full), float(s.mean()), float(s.std()), full, bound)

    def with_values(self, ids: np.ndarray, values: np.ndarray) -> FrameScores:
        """The frame with rows ``ids`` (among :attr:`rows`) set to ``values`` (re-ranked
        candidates' fused scores). Exact frames recompute their statistics, as a dense filter
        over the changed vector would; ``bound`` stays valid (it bounds the other rows)."""
        ids = np.asarray(ids, np.int64).ravel()
        at = np.searchsorted(self.rows, ids)
        if len(ids) and (at.max() >= len(self.rows) or (self.rows[at] != ids).any()):
            raise ValueError("with_values: ids must be rows of the frame")
        vals = self.values.copy()
        vals[at] = values
        if self.full is None:
            return replace(self, values=vals)
        full = self.full.copy()
        full[ids] = values
        s = full.astype(np.float64)
        return replace(self, values=vals, full=full, mean=float(s.mean()), std=float(s.std()))

    def dense(self) -> np.ndarray:
        """(N,) float32 similarities, the mean for rows not known (O(N): for display)."""
        if self.full is not None:
            return self.full
        out = np.full(self.count, self.mean, np.float32)
        out[self.rows] = self.values
        return out

    def similarity(self, row: int) -> float:
        """Row ``row``'s similarity as :meth:`dense` gives it (the mean when not known)."""
        if self.full is not None:
            return float(self.full[row])
        at = int(np.searchsorted(self.rows, row))
        known = at < len(self.rows) and self.rows[at] == row
        return float(self.values[at]) if known else float(np.float32(self.mean))

    @property
    def stats(self) -> tuple[float, float] | None:
        """(mean, std) for :meth:`TemporalFilter.update` of :meth:`dense` (None: exact)."""
        return None if self.full is not None else (self.mean, self.std)


def frame_scores(
    map_,
    query: np.ndarray,
    ids: np.ndarray,
    sims: np.ndarray,
    focus: np.ndarray | None,
    sample: int = SAMPLE_ROWS,
) -> FrameScores:
    """One query's (dim,) :class:`FrameScores` on a map searched approximately: the
    candidates ``ids`` (with ``sims``), the ``focus`` rows and ``sample`` evenly spaced rows,
    scored exactly (``map_.score``); the statistics are the sample's. See module doc."""
    n = len(map_)
    ids = np.asarray(ids, np.int64).ravel()
    spread = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
    extra = spread if focus is None else np.union1d(spread, np.asarray(focus, np.int64))
    rows = np.setdiff1d(extra, ids)
    exact = np.asarray(map_.score(query, rows), np.float64).ravel()
    known = np.concatenate([ids, rows])
    values = np.concatenate([np.asarray(sims, np.float64).ravel(), exact])
    order = np.argsort(known, kind="stable")
    known, values = known[order], values[order]
    keep = np.ones(len(known), bool)  # a row listed twice among the candidates: keep one
    keep[1:] = known[1:] != known[:-1]
    known, values = known[keep], values[keep]
    s_sample = values[np.searchsorted(known, spread)]
    evidence = ids if focus is None else np.union1d(ids, np.asarray(focus, np.int64))
    sampled = ~np.isin(known, evidence)
    stats = float(s_sample.mean()), float(s_sample.std())
    return FrameScores(known, values, n, *stats, sampled=sampled)


def partial_scores(
    map_,
    query: np.ndarray,
    ids: np.ndarray,
    sims: np.ndarray,
    focus: np.ndarray | None,
    sample: int = SAMPLE_ROWS,
) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`frame_scores` as a dense (N,) vector (the sample's mean for rows not scored)
    and the (mean, std) statistics, for :meth:`TemporalFilter.update`."""
    fs = frame_scores(map_, query, ids, sims, focus, sample)
    return fs.dense(), (fs.mean, fs.std)


def _offsets(velocities: tuple[float, ...], back: np.ndarray) -> np.ndarray:
    """(V, W) rows each frame of a line lies behind its end row, per velocity."""
    return np.array([[int(np.floor(v * b + 0.5)) for b in back] for v in velocities], np.int64)


def sequence_scores(
    z, velocities: tuple[float, ...], steps: np.ndarray | None = None
) -> np.ndarray:
    """SeqSLAM line scores: (W, N) standardised scores (an array, or W rows), oldest first
    → (N,) per end row.

    ``steps``: (W,) frame positions (default 0..W−1); ``velocities`` in rows per step."""
    w, n = len(z), len(z[0])
    steps = np.arange(w, dtype=np.float64) if steps is None else np.asarray(steps, np.float64)
    offs = _offsets(velocities, steps[-1] - steps)
    best = np.full(n, -np.inf)
    ends = np.arange(n)
    for vi in range(len(velocities)):
        total = np.zeros(n)
        count = np.zeros(n)
        for t in range(w):
            rows = ends - offs[vi, t]
            ok = rows >= 0
            total[ok] += z[t][rows[ok]]
            count[ok] += 1
        best = np.maximum(best, total / np.maximum(count, 1))
    return best


def _kernel(velocity: float, sigma: float) -> tuple[np.ndarray, int]:
    """Transition kernel over row offsets -r..r+velocity (Gaussian around ``velocity``)."""
    lo = int(np.floor(velocity - 3 * sigma))
    hi = int(np.ceil(velocity + 3 * sigma))
    offsets = np.arange(lo, hi + 1)
    k = np.exp(-0.5 * ((offsets - velocity) / sigma) ** 2)
    return k / k.sum(), lo


def _transition(cfg: FilterConfig, delta: float) -> tuple[np.ndarray, int]:
    """The kernel of one prediction step ``delta`` steps long, and its lowest offset."""
    delta = max(float(delta), 0.0)
    move = cfg.velocity * cfg.speed * delta
    return _kernel(move, max(cfg.sigma * cfg.speed * delta, 0.5))


def hmm_posterior(z, cfg: FilterConfig, steps: np.ndarray | None = None) -> np.ndarray:
    """Forward-filtered belief over map rows after the (W, N) frames (an array, or W rows),
    from a uniform prior."""
    w, n = len(z), len(z[0])
    steps = np.arange(w, dtype=np.float64) if steps is None else np.asarray(steps, np.float64)
    belief = np.full(n, 1.0 / n)
    for t in range(w):
        if t > 0:
            kernel, lo = _transition(cfg, steps[t] - steps[t - 1])
            moved = np.convolve(belief, kernel)  # moved[m] lands on row m + lo
            shifted = np.zeros(n)
            a, b = max(0, lo), min(n, lo + len(moved))
            if a < b:
                shifted[a:b] = moved[a - lo : b - lo]
            belief = (1 - cfg.jump) * shifted + cfg.jump / n
        like = np.exp((z[t] - z[t].max()) / cfg.temperature)
        belief = belief * like
        belief /= belief.sum()
    return belief


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The rows of the half-open intervals [starts, stops), concatenated."""
    lengths = stops - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return first + np.arange(total)


def _merge(starts: np.ndarray, stops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of half-open intervals as sorted disjoint intervals."""
    order = np.argsort(starts, kind="stable")
    starts, stops = starts[order], np.maximum.accumulate(stops[order])
    new = np.ones(len(starts), bool)
    new[1:] = starts[1:] > stops[:-1]
    first = np.flatnonzero(new)
    last = np.concatenate([first[1:] - 1, [len(starts) - 1]])
    return starts[first], stops[last]


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique rows as half-open intervals of consecutive rows."""
    if len(rows) == 0:
        return rows, rows
    cut = np.flatnonzero(np.diff(rows) != 1) + 1
    return rows[np.concatenate([[0], cut])], rows[np.concatenate([cut - 1, [len(rows) - 1]])] + 1


@dataclass
class _Frame:
    """A frame in the window: standardised known rows, a row of the rolling buffer (exact
    frames) and the z no row outside ``rows`` exceeds."""

    step: float
    rows: np.ndarray
    z: np.ndarray
    full: np.ndarray | None
    bound: float
    sampled: np.ndarray | None = None


class TemporalFilter:
    """Keeps the last ``window`` frames' standardised scores; :meth:`observe` (or the dense
    :meth:`update`) per frame.

    Call :meth:`reset` when the stream jumps (a new drive, a long pause).
    """

    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()
        self._frames: deque[_Frame] = deque(maxlen=self.config.window)
        self._ring: np.ndarray | None = None  # (window, N) standardised exact frames
        self._slot = 0
        self._count = 0
        self._best: int | None = None
        self._rows = 0
        self._scratch: np.ndarray | None = None  # (N,) zeros; sparse hmm's lookup table
        self.fallbacks = 0  # sparse seq frames that needed the dense filter

    def reset(self) -> None:
        self._frames.clear()
        self._best = None

    def focus(self, margin: int = 2) -> np.ndarray | None:
        """Map rows the next update can use near the current belief (None before any frame):
        lines of ``seq`` reach back ``window`` steps at the fastest velocity; ``hmm`` moves
        belief by ``velocity`` ± 3 sigma per step."""
        if self._best is None:
            return None
        cfg = self.config
        fastest = max(cfg.velocities) if cfg.method == "seq" else cfg.velocity + 3 * cfg.sigma
        reach = int(np.ceil(fastest * cfg.speed * (cfg.window + 1))) + margin
        return np.arange(max(0, self._best - reach), min(self._rows, self._best + reach + 1))

    def __len__(self) -> int:
        return len(self._frames)

    # --- adding frames ------------------------------------------------------------------

    def _step(self, step: float | None, count: int) -> float:
        if self._frames and self._rows != count:
            raise ConfigError(
                f"filter got scores over {count} places after {self._rows}; "
                "reset the filter when the map changes"
            )
        step = float(self._count if step is None else step)
        if self._frames and step < self._frames[-1].step:
            raise ConfigError(f"filter step went back from {self._frames[-1].step} to {step}")
        self._count = int(step) + 1
        self._rows = count
        return step

    def _buffer_row(self, n: int) -> np.ndarray:
        """The rolling buffer's row for the next exact frame (overwrites the oldest)."""
        w = self.config.window
        if self._ring is None or self._ring.shape != (w, n):
            self._ring = np.empty((w, n))
            self._slot = 0
        row = self._ring[self._slot]
        self._slot = (self._slot + 1) % w
        return row

    def _add_full(self, scores: np.ndarray, stats, step: float, rows, values, bound) -> None:
        s = np.asarray(scores, np.float64)
        mean, sd = (s.mean(), s.std()) if stats is None else stats
        z = self._buffer_row(len(s))
        if sd > 1e-12:
            np.subtract(s, mean, out=z)
            z /= sd
            zb = -np.inf if bound is None else (float(bound) - mean) / sd
            zr = (np.asarray(values, np.float64) - mean) / sd
        else:
            z[:] = 0.0
            zb = -np.inf if bound is None else 0.0
            zr = np.zeros(len(rows))
        self._frames.append(_Frame(step, rows, zr, z, zb))

    def update(
        self,
        scores: np.ndarray,
        step: float | None = None,
        stats: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Add one frame's similarities to every map row (N,); return filtered scores (N,).

        The dense reference (O(window × N)); :meth:`observe` gives the same answer from the
        rows that carry evidence. ``step``: the frame's position in the source (e.g. its frame
        number; must not go back); default: one more than the last. Higher output is better;
        the filtered answer is ``argmax``. ``none`` returns the standardised frame scores;
        ``seq`` line scores; ``hmm`` the posterior probability of each row. ``stats``: see
        :func:`partial_scores`.
        """
        step = self._step(step, len(scores))
        empty = np.zeros(0, np.int64)
        # no known rows and an unbeatable bound: a later sparse frame falls back to dense
        self._add_full(scores, stats, step, empty, np.zeros(0), float(np.max(scores)))
        out = self._dense()
        self._best = int(np.argmax(out))
        return out

    def observe(self, frame: FrameScores, step: float | None = None) -> tuple[int, float]:
        """Add one frame's :class:`FrameScores`; return the filtered answer (map row) and its
        filtered score (as :meth:`update` would give at that row). See module doc."""
        step = self._step(step, frame.count)
        if frame.full is not None:
            stats = (frame.mean, frame.std)  # computed as the dense filter computes them
            self._add_full(frame.full, stats, step, frame.rows, frame.values, frame.bound)
        else:
            sd = frame.std
            z = (frame.values - frame.mean) / sd if sd > 1e-12 else np.zeros(len(frame.rows))
            bound = 0.0 if len(frame.rows) < frame.count else -np.inf
            self._frames.append(_Frame(step, frame.rows, z, None, bound, frame.sampled))
        cfg = self.config
        if cfg.method == "hmm" and all(f.full is None for f in self._frames):
            best, score = self._sparse_hmm()
        elif cfg.method == "hmm":
            out = self._dense()
            best = int(np.argmax(out))
            score = float(out[best])
        else:
            best, score = self._sparse_seq()
        self._best = best
        return best, score

    # --- dense --------------------------------------------------------------------------

    def _dense_rows(self) -> list[np.ndarray]:
        out = []
        for f in self._frames:
            if f.full is None:
                row = np.zeros(self._rows)
                row[f.rows] = f.z
                out.append(row)
            else:
                out.append(f.full)
        return out

    def _dense(self) -> np.ndarray:
        cfg = self.config
        z = self._dense_rows()
        if cfg.method == "none" or len(z) == 1:
            return z[-1] if cfg.method != "hmm" else hmm_posterior(z[-1:], cfg)
        steps = np.array([f.step for f in self._frames])
        if cfg.method == "seq":
            return sequence_scores(z, tuple(v * cfg.speed for v in cfg.velocities), steps)
        return hmm_posterior(z, cfg, steps)

    # --- sparse seq ---------------------------------------------------------------------

    @staticmethod
    def _lookup(f: _Frame, rows: np.ndarray) -> np.ndarray:
        if f.full is not None:
            return f.full[rows]
        at = np.minimum(np.searchsorted(f.rows, rows), max(len(f.rows) - 1, 0))
        if len(f.rows) == 0:
            return np.zeros(len(rows))
        return np.where(f.rows[at] == rows, f.z[at], 0.0)

    def _sparse_seq(self) -> tuple[int, float]:
        """Best line through a known cell; dense when a line not evaluated might beat it.

        First only the cells above each frame's ``TAKE_CELLS``-th highest known z start lines
        (every other known cell is then below that z), then every known cell."""
        cfg, frames, n = self.config, list(self._frames), self._rows
        if cfg.method == "none" or len(frames) == 1:
            frames, vel = frames[-1:], (0.0,)
        else:
            vel: tuple[float, ...] = tuple(v * cfg.speed for v in cfg.velocities)
        steps = np.array([f.step for f in frames])
        offs = _offsets(vel, steps[-1] - steps)
        for take in (TAKE_CELLS, None):
            taken, bounds = [], []
            for f in frames:
                if take is None or len(f.rows) <= take:
                    taken.append(f.rows)
                    bounds.append(f.bound)
                else:
                    part = np.argpartition(-f.z, take)
                    taken.append(f.rows[part[:take]])
                    bounds.append(max(f.bound, float(f.z[part[take]])))
            found = self._best_line(frames, taken, bounds, offs, n)
            if found is not None:
                return found
        self.fallbacks += 1
        out = self._dense()
        j = int(np.argmax(out))
        return j, float(out[j])

    def _best_line(self, frames, taken, bounds, offs, n) -> tuple[int, float] | None:
        """The best line through a taken cell, when it beats every line through none."""
        ends = np.concatenate(
            [(r[None, :] + offs[:, t : t + 1]).ravel() for t, r in enumerate(taken)]
            + [np.arange(offs.max())]  # lines starting before the map's first row
        )
        ends = np.unique(ends[ends < n])
        if len(ends) == 0:
            return None
        total = np.zeros((len(offs), len(ends)))
        count = np.zeros((len(offs), len(ends)))
        for t, f in enumerate(frames):
            rows = ends[None, :] - offs[:, t : t + 1]
            ok = rows >= 0
            total[ok] += self._lookup(f, rows[ok])
            count[ok] += 1
        lines = total / np.maximum(count, 1)
        best = lines[0]
        for v in range(1, len(lines)):
            best = np.maximum(best, lines[v])
        bound = 0.0
        for b in bounds:  # in the order a line's cells are added: comparable exactly
            bound += b
        bound /= len(frames)
        i = int(np.argmax(best))
        return (int(ends[i]), float(best[i])) if best[i] > bound else None

    # --- sparse hmm ---------------------------------------------------------------------

    def _sparse_hmm(self) -> tuple[int, float]:
        """:func:`hmm_posterior` with the belief explicit on the rows evidence reached and one
        value (``rest``) for every other row (HNSW frames: unknown rows have z = 0)."""
        cfg, frames, n = self.config, list(self._frames), self._rows
        if self._scratch is None or len(self._scratch) != n:
            self._scratch = np.zeros(n)
        scratch = self._scratch
        rows = np.zeros(0, np.int64)
        vals = np.zeros(0)
        rest = 1.0 / n
        for t, f in enumerate(frames):
            keep = slice(None) if f.sampled is None else ~f.sampled
            f_rows, fz = f.rows[keep], f.z[keep]
            if t > 0:
                kernel, lo = _transition(cfg, f.step - frames[t - 1].step)
                hi = lo + len(kernel) - 1
                a, b = _runs(rows)
                starts = np.concatenate([a + lo, f_rows, [0, n + lo]])
                stops = np.concatenate([b + hi, f_rows + 1, [hi, n]])
                starts, stops = _merge(np.clip(starts, 0, n), np.clip(stops, 0, n))
                new = _ranges(starts, stops)
                scratch[rows] = vals - rest  # deltas from ``rest`` where explicit
                src = new[:, None] - np.arange(lo, hi + 1)[None, :]
                inside = (src >= 0) & (src < n)
                gathered = np.where(inside, scratch[np.clip(src, 0, n - 1)] + rest, 0.0)
                scratch[rows] = 0.0
                shifted = gathered @ kernel
                rows = new
                vals = (1 - cfg.jump) * shifted + cfg.jump / n
                rest = (1 - cfg.jump) * rest * float(kernel.sum()) + cfg.jump / n
            else:
                rows, vals = f_rows.copy(), np.full(len(f_rows), rest)
            unknown = len(f_rows) < n  # rows not scored count as z = 0
            zmax = max(float(fz.max()) if len(fz) else -np.inf, 0.0 if unknown else -np.inf)
            like_rest = float(np.exp((0.0 - zmax) / cfg.temperature))
            like = np.full(len(rows), like_rest)
            at = np.searchsorted(rows, f_rows)
            like[at] = np.exp((fz - zmax) / cfg.temperature)
            vals = vals * like
            rest = rest * like_rest
            total = vals.sum() + rest * (n - len(rows))
            vals /= total
            rest /= total
        i = int(np.argmax(vals))
        if vals[i] >= rest or len(rows) == n:
            return int(rows[i]), float(vals[i])
        free = np.setdiff1d(np.arange(min(n, len(rows) + 1)), rows)
        return int(free[0]), rest
