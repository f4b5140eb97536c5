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

**Large (HNSW) maps.** Scoring every place per frame is what an HNSW index exists to avoid.
:func:`partial_scores` scores exactly the HNSW candidates, the rows around the filter's current
belief (:meth:`TemporalFilter.focus`: every row a line or a transition of the next update can
touch) and a fixed sample of rows that estimates the mean and spread of the frame's
similarities over the map (the z-score statistics, passed to :meth:`TemporalFilter.update`);
every other row gets the sample's mean (z = 0: no evidence either way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

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


def standardise(scores: np.ndarray, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Z-score of one frame's similarities over the map (constant scores give zeros).

    ``stats``: (mean, std) of the similarities over the map when ``scores`` holds true values
    only for some rows (:func:`partial_scores`)."""
    s = np.asarray(scores, np.float64)
    mean, sd = (s.mean(), s.std()) if stats is None else stats
    return (s - mean) / sd if sd > 1e-12 else np.zeros_like(s)


def partial_scores(
    map_,
    query: np.ndarray,
    ids: np.ndarray,
    sims: np.ndarray,
    focus: np.ndarray | None,
    sample: int = SAMPLE_ROWS,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Similarities of one query (dim,) to every map row for the filter, scoring exactly only
    the candidates ``ids`` (with ``sims``), the ``focus`` rows and ``sample`` evenly spaced
    rows; returns (scores (N,), (mean, std) estimated from the sample). See module doc."""
    n = len(map_)
    spread = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
    extra = spread if focus is None else np.union1d(spread, np.asarray(focus, np.int64))
    rows = np.setdiff1d(extra, ids)
    exact = np.asarray(map_.score(query, rows), np.float64).ravel()
    known = np.concatenate([np.asarray(ids, np.int64).ravel(), rows])
    values = np.concatenate([np.asarray(sims, np.float64).ravel(), exact])
    at = dict(zip(known.tolist(), values.tolist(), strict=True))
    s_sample = np.array([at[int(i)] for i in spread])
    mean, std = float(s_sample.mean()), float(s_sample.std())
    scores = np.full(n, mean, np.float32)
    scores[known] = values
    return scores, (mean, std)


def sequence_scores(
    z: np.ndarray, velocities: tuple[float, ...], steps: np.ndarray | None = None
) -> np.ndarray:
    """SeqSLAM line scores: (W, N) standardised scores, oldest first → (N,) per end row.

    ``steps``: (W,) frame positions (default 0..W−1); ``velocities`` in rows per step."""
    w, n = z.shape
    steps = np.arange(w, dtype=np.float64) if steps is None else np.asarray(steps, np.float64)
    back = steps[-1] - steps  # steps from each frame to the newest
    best = np.full(n, -np.inf)
    ends = np.arange(n)
    for v in velocities:
        total = np.zeros(n)
        count = np.zeros(n)
        for t in range(w):
            rows = ends - int(np.floor(v * back[t] + 0.5))
            ok = rows >= 0
            total[ok] += z[t, rows[ok]]
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


def hmm_posterior(z: np.ndarray, cfg: FilterConfig, steps: np.ndarray | None = None) -> np.ndarray:
    """Forward-filtered belief over map rows after the (W, N) frames, from a uniform prior."""
    w, n = z.shape
    steps = np.arange(w, dtype=np.float64) if steps is None else np.asarray(steps, np.float64)
    belief = np.full(n, 1.0 / n)
    for t in range(w):
        if t > 0:
            delta = max(float(steps[t] - steps[t - 1]), 0.0)
            move = cfg.velocity * cfg.speed * delta
            kernel, lo = _kernel(move, max(cfg.sigma * cfg.speed * delta, 0.5))
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


class TemporalFilter:
    """Keeps the last ``window`` frames' standardised scores; :meth:`update` per frame.

    Call :meth:`reset` when the stream jumps (a new drive, a long pause).
    """

    def __init__(self, config: FilterConfig | None = None) -> None:
        self.config = config or FilterConfig()
        self._history: deque[np.ndarray] = deque(maxlen=self.config.window)
        self._steps: deque[float] = deque(maxlen=self.config.window)
        self._count = 0
        self._best: int | None = None
        self._rows = 0

    def reset(self) -> None:
        self._history.clear()
        self._steps.clear()
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
        return len(self._history)

    def update(
        self,
        scores: np.ndarray,
        step: float | None = None,
        stats: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Add one frame's similarities to every map row (N,); return filtered scores (N,).

        ``step``: the frame's position in the source (e.g. its frame number; must not go
        back); default: one more than the last. Higher output is better; the filtered answer
        is ``argmax``. ``none`` returns the standardised frame scores; ``seq`` line scores;
        ``hmm`` the posterior probability of each row. ``stats``: see :func:`partial_scores`.
        """
        out = self._update(standardise(scores, stats), step)
        self._best, self._rows = int(np.argmax(out)), len(out)
        return out

    def _update(self, z: np.ndarray, step: float | None) -> np.ndarray:
        if self._history and len(self._history[-1]) != len(z):
            raise ConfigError(
                f"filter got scores over {len(z)} places after {len(self._history[-1])}; "
                "reset the filter when the map changes"
            )
        step = float(self._count if step is None else step)
        if self._steps and step < self._steps[-1]:
            raise ConfigError(f"filter step went back from {self._steps[-1]} to {step}")
        self._count = int(step) + 1
        self._history.append(z)
        self._steps.append(step)
        cfg = self.config
        if cfg.method == "none" or len(self._history) == 1:
            return z if cfg.method != "hmm" else hmm_posterior(z[None], cfg)
        stack, steps = np.stack(self._history), np.asarray(self._steps)
        if cfg.method == "seq":
            return sequence_scores(stack, tuple(v * cfg.speed for v in cfg.velocities), steps)
        return hmm_posterior(stack, cfg, steps)
