"""Temporal filters on synthetic sequences where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sfrs_edge.errors import ConfigError
from sfrs_edge.maps.index import top_k
from sfrs_edge.stream.filtering import (
    FilterConfig,
    FrameScores,
    TemporalFilter,
    frame_scores,
    partial_scores,
    sequence_scores,
    standardise,
)

N_PLACES = 120


def noisy_sequence(rows: np.ndarray, seed: int, signal: float = 2.2) -> np.ndarray:
    """(T, N) similarities: Gaussian noise, the true row of frame t raised by ``signal``.

    Tuned so that the single-frame argmax is right well under half of the time."""
    rng = np.random.default_rng(seed)
    sims = rng.normal(0.0, 1.0, (len(rows), N_PLACES))
    sims[np.arange(len(rows)), rows] += signal
    return 0.5 + 0.05 * sims  # cosine-like range


def run(sims: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    f = TemporalFilter(cfg)
    return np.array([int(np.argmax(f.update(s))) for s in sims])


def accuracy(answers: np.ndarray, rows: np.ndarray, tol: int = 1) -> float:
    return float(np.mean(np.abs(answers - rows) <= tol))


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_filter_recovers_a_noisy_traversal(method):
    rows = np.arange(20, 100)  # one map row per frame, forwards
    sims = noisy_sequence(rows, seed=1)
    single = accuracy(sims.argmax(1), rows)
    assert single < 0.5  # the per-frame answer is unreliable...
    answers = run(sims, FilterConfig(method=method, window=10))
    settled = slice(10, None)  # once the window is full
    filtered = accuracy(answers[settled], rows[settled])
    assert filtered >= 0.9 and filtered > single + 0.3  # ...the sequence is not


def test_seq_handles_other_speeds():
    rows = 20 + np.arange(80) // 2  # half a map row per frame
    sims = noisy_sequence(rows, seed=2)
    answers = run(sims, FilterConfig(method="seq", window=10, velocities=(0.5, 1.0)))
    single = accuracy(sims.argmax(1)[10:], rows[10:])
    assert accuracy(answers[10:], rows[10:]) >= max(0.7, single + 0.2)
    wrong_speed = run(sims, FilterConfig(method="seq", window=10, velocities=(2.0,)))
    assert accuracy(wrong_speed[10:], rows[10:]) < accuracy(answers[10:], rows[10:])


def test_window_one_and_none_are_per_frame():
    rows = np.arange(30, 70)
    sims = noisy_sequence(rows, seed=3)
    per_frame = sims.argmax(1)
    for cfg in (
        FilterConfig(method="seq", window=1),
        FilterConfig(method="hmm", window=1),
        FilterConfig(method="none", window=10),
    ):
        assert (run(sims, cfg) == per_frame).all()


def test_reset_forgets_history():
    rows = np.arange(20, 40)
    sims = noisy_sequence(rows, seed=4, signal=6.0)
    f = TemporalFilter(FilterConfig(method="seq", window=5))
    for s in sims:
        f.update(s)
    assert len(f) == 5
    f.reset()
    assert len(f) == 0
    assert int(np.argmax(f.update(sims[0]))) == int(np.argmax(sims[0]))


def test_sequence_scores_by_hand():
    z = np.zeros((3, 5))
    z[0, 1], z[1, 2], z[2, 3] = 3.0, 3.0, 3.0  # a diagonal ending at row 3
    s = sequence_scores(z, (1.0,))
    assert int(np.argmax(s)) == 3 and s[3] == pytest.approx(3.0)
    # rows before the map start are left out of the mean, not counted as zeros
    assert s[0] == pytest.approx(0.0)


def test_standardise_constant_scores():
    assert (standardise(np.full(7, 0.3)) == 0).all()
    z = standardise(np.arange(5.0))
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)


def test_map_size_change_is_an_error():
    f = TemporalFilter(FilterConfig(method="hmm", window=3))
    f.update(np.random.default_rng(0).random(10))
    with pytest.raises(ConfigError, match="reset the filter"):
        f.update(np.zeros(11))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "kalman"}, "unknown filter 'kalman'; choose one of none, seq, hmm"),
        ({"window": 0}, "filter window must be at least 1 frame, got 0"),
        ({"sigma": 0}, "filter velocities, sigma, temperature and speed must be positive"),
        ({"temperature": 0}, "filter velocities, sigma, temperature and speed must be positive"),
        ({"speed": -1.0}, "filter velocities, sigma, temperature and speed must be positive"),
        ({"velocities": ()}, "filter velocities, sigma, temperature and speed must be positive"),
        ({"jump": 1.0}, "filter jump probability must be in [0, 1), got 1.0"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError) as err:
        FilterConfig(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_dropped_frames_keep_the_motion_model_right(method):
    """A stream that skips frames passes frame numbers as steps; the filter moves that far."""
    rng = np.random.default_rng(5)
    kept = np.sort(rng.choice(np.arange(10, 110), 50, replace=False))  # ~half dropped, irregular
    rows = kept  # frame i is at map row i
    sims = noisy_sequence(rows, seed=6)
    cfg = FilterConfig(method=method, window=8, velocities=(1.0,))
    f = TemporalFilter(cfg)
    with_steps = np.array(
        [int(np.argmax(f.update(s, step))) for s, step in zip(sims, kept, strict=True)]
    )
    counted = run(sims, cfg)  # pretends the kept frames were consecutive
    good = accuracy(with_steps[8:], rows[8:])
    assert good >= 0.75 and good > accuracy(sims.argmax(1)[8:], rows[8:]) + 0.2
    assert good > accuracy(counted[8:], rows[8:]) + 0.1


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_speed_scales_rows_per_step(method):
    rows = 20 + np.arange(90) // 3  # a third of a map row per frame (dense camera, sparse map)
    sims = noisy_sequence(rows, seed=7)
    answers = run(sims, FilterConfig(method=method, window=12, speed=1 / 3))
    assert accuracy(answers[12:], rows[12:]) >= 0.85
    assert accuracy(answers[12:], rows[12:]) > accuracy(sims.argmax(1)[12:], rows[12:]) + 0.3


def test_step_must_not_go_back():
    f = TemporalFilter(FilterConfig(method="seq", window=3))
    f.update(np.arange(5.0), 10)
    with pytest.raises(ConfigError, match="went back"):
        f.update(np.arange(5.0), 9)
    f.update(np.arange(5.0), 10)  # two frames with one frame number (a repeated stamp)
    assert len(f) == 2


# --- the sparse filter (rows that carry evidence) against the dense reference ----------------


class ArrayMap:
    """The two things the filters' scoring needs of a map: its size and exact row scores."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.scored: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.x)

    def score(self, q: np.ndarray, ids) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        self.scored.append(ids)
        return (q[None] @ self.x[ids].T).astype(np.float32)


def unit_rows(rng, n: int, dim: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def walk_queries(x: np.ndarray, rng, rows: np.ndarray, noise: float) -> np.ndarray:
    q = x[rows] + noise * rng.standard_normal((len(rows), x.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_frame(scores: np.ndarray, focus, c: int = 32) -> FrameScores:
    ids, sims = top_k(scores[None], c)
    return FrameScores.exact(scores, ids[0], sims[0], focus)


@pytest.mark.parametrize("method", ["seq", "hmm", "none"])
@pytest.mark.parametrize("window", [1, 4, 10])
def test_sparse_filter_equals_dense_on_exact_maps(method, window):
    """Same answer and score as the dense filter on every frame, dropped frames included."""
    sims = noisy_sequence(np.arange(20, 100), seed=11 + window).astype(np.float32)
    steps = np.cumsum(np.random.default_rng(window).integers(1, 3, len(sims)))
    cfg = FilterConfig(method=method, window=window)
    dense, sparse = TemporalFilter(cfg), TemporalFilter(cfg)
    for s, step in zip(sims, steps, strict=True):
        out = dense.update(s, step)
        best, score = sparse.observe(exact_frame(s, sparse.focus()), step)
        assert best == int(np.argmax(out))
        assert score == pytest.approx(float(out[best]), rel=1e-12, abs=1e-15)


def test_sparse_seq_falls_back_when_a_line_off_the_candidates_may_win():
    """Every frame's evidence flat: no line through a candidate beats the bound, so the dense
    filter answers (and the answer is still the dense one)."""
    rng = np.random.default_rng(3)
    cfg = FilterConfig(method="seq", window=5)
    dense, sparse = TemporalFilter(cfg), TemporalFilter(cfg)
    for _ in range(8):
        s = (0.5 + 0.01 * rng.standard_normal(300)).astype(np.float32)
        out = dense.update(s)
        assert sparse.observe(exact_frame(s, sparse.focus(), c=2))[0] == int(np.argmax(out))
    assert sparse.fallbacks == 7  # each frame after the first (alone, its best row is its line)


@pytest.mark.parametrize("candidates", [1, 100])
def test_sparse_seq_finds_a_steady_line_hidden_below_the_spikes(candidates):
    """A place seen steadily at 0.6 (row 100 + t) against one-frame spikes at 0.62..0.66: the
    dense filter follows the steady line; so must the sparse one, although the line's cells are
    outside the candidates (1) or below the first pass's cells (100 candidates, 60 spikes)."""
    rng = np.random.default_rng(7)
    cfg = FilterConfig(method="seq", window=5)
    dense, sparse = TemporalFilter(cfg), TemporalFilter(cfg)
    for t in range(12):
        s = (0.3 + 0.01 * rng.standard_normal(3000)).astype(np.float32)
        spikes = rng.choice(np.r_[0:90, 130:3000], 60, replace=False)
        s[spikes] = rng.uniform(0.62, 0.66, 60)
        s[100 + t] = 0.6
        out = dense.update(s)
        # no focus rows either: the line is never among the known cells
        best, score = sparse.observe(exact_frame(s, None, c=candidates))
        assert best == int(np.argmax(out))
        assert score == pytest.approx(float(out[best]), rel=1e-9)
        if t >= cfg.window:
            assert best == 100 + t  # the steady line, not a spike


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_sparse_filter_on_partial_frames_matches_the_dense_one(method):
    """HNSW-like frames (candidates, focus, sample): seq gives the dense answer over the same
    partial vectors; hmm (sample rows left out of its likelihood) agrees on ≥ 95 % of frames."""
    rng = np.random.default_rng(5)
    x = unit_rows(rng, 3000)
    m = ArrayMap(x)
    rows = np.arange(200, 280)
    cfg = FilterConfig(method=method, window=6)
    dense, sparse = TemporalFilter(cfg), TemporalFilter(cfg)
    same = []
    for q in walk_queries(x, rng, rows, 0.25):
        ids, sims = top_k((x @ q)[None], 32)
        fd = frame_scores(m, q, ids[0], sims[0], dense.focus())
        out = dense.update(fd.dense(), stats=fd.stats)
        best, _ = sparse.observe(frame_scores(m, q, ids[0], sims[0], sparse.focus()))
        same.append(best == int(np.argmax(out)))
    agree = float(np.mean(same))
    assert agree == 1.0 if method == "seq" else agree >= 0.95


def test_sparse_filter_on_hnsw_frames_tracks_the_exact_dense_filter():
    """Partial frames answer like the dense filter over every true similarity within the
    tolerance stated in docs/STREAMING.md (here ≥ 95 % of frames within one row)."""
    rng = np.random.default_rng(8)
    x = unit_rows(rng, 4000)
    m = ArrayMap(x)
    rows = np.arange(1000, 1100)
    for method in ("seq", "hmm"):
        cfg = FilterConfig(method=method, window=5)
        dense, sparse = TemporalFilter(cfg), TemporalFilter(cfg)
        near = []
        for q in walk_queries(x, rng, rows, 0.3):
            s = x @ q
            ids, sims = top_k(s[None], 32)
            a = int(np.argmax(dense.update(s)))
            b, _ = sparse.observe(frame_scores(m, q, ids[0], sims[0], sparse.focus()))
            near.append(abs(a - b) <= 1)
        assert np.mean(near) >= 0.95, method


def test_sparse_filter_cost_does_not_read_the_whole_map():
    """On a partial frame the filter touches only the known rows: a frame over a 2-million-row
    map is answered without any (N,) array (memory stays far below 8 bytes × N × window)."""
    import tracemalloc

    n = 2_000_000
    cfg = FilterConfig(method="seq", window=5)
    f = TemporalFilter(cfg)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    for t in range(8):
        rows = np.unique(np.concatenate([500_000 + t + np.arange(-5, 30), rng.integers(0, n, 200)]))
        vals = 0.5 + 0.05 * rng.standard_normal(len(rows))
        vals[rows == 500_000 + t] += 0.4
        f.observe(FrameScores(rows, vals, n, 0.5, 0.05), t)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < n  # bytes: less than one byte per map row
    assert f.fallbacks == 0
    assert f.observe(FrameScores(rows, vals, n, 0.5, 0.05), 8)[0] in range(500_000, 500_040)


def test_frame_scores_and_partial_scores():
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 1000)
    m = ArrayMap(x)
    q = x[10]
    s = x @ q
    ids, sims = top_k(s[None], 8)
    focus = np.arange(500, 511)
    fs = frame_scores(m, q, ids[0], sims[0], focus, sample=50)
    spread = np.unique(np.linspace(0, 999, 50).astype(np.int64))
    expect_rows = np.union1d(np.union1d(ids[0], focus), spread)
    assert (fs.rows == expect_rows).all()
    assert np.allclose(fs.values, s[fs.rows], atol=1e-6)
    # candidates are not scored again; the sample gives the statistics
    assert not np.isin(ids[0], np.concatenate(m.scored)).any()
    assert fs.mean == pytest.approx(float(s[spread].mean()), abs=1e-6)
    assert fs.std == pytest.approx(float(s[spread].std()), abs=1e-6)
    assert (fs.sampled == ~np.isin(fs.rows, np.union1d(ids[0], focus))).all()
    dense, stats = partial_scores(m, q, ids[0], sims[0], focus, sample=50)
    assert stats == (fs.mean, fs.std)
    unknown = np.setdiff1d(np.arange(1000), fs.rows)
    assert np.allclose(dense[unknown], fs.mean) and np.allclose(dense[fs.rows], fs.values)
    # a sample bigger than the map scores every row once
    every = frame_scores(m, q, ids[0], sims[0], None, sample=5000)
    assert (every.rows == np.arange(1000)).all()


def test_exact_frame_bound_and_rerank_values():
    s = np.linspace(0.0, 1.0, 50).astype(np.float32)
    fs = exact_frame(s, np.array([3, 4]), c=5)
    assert set(fs.rows) == {3, 4, 45, 46, 47, 48, 49}
    assert fs.bound == pytest.approx(float(s[45]))  # no other row beats the lowest candidate
    assert fs.mean == pytest.approx(float(s.astype(np.float64).mean()))
    fused = fs.with_values(np.array([45, 49]), np.array([2.0, 0.0]))
    assert fused.full[45] == 2.0 and fused.values[list(fused.rows).index(49)] == 0.0
    assert fused.mean > fs.mean and fs.full[45] == pytest.approx(float(s[45]))
    with pytest.raises(ValueError):
        fs.with_values(np.array([10]), np.array([1.0]))
    assert exact_frame(s, None, c=50).bound is None


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_focus_covers_the_next_update_and_stays_in_the_map(method):
    cfg = FilterConfig(method=method, window=5, speed=2.0)
    f = TemporalFilter(cfg)
    assert f.focus() is None
    s = np.zeros(400)
    s[200] = 1.0
    f.update(s)
    focus = f.focus()
    fastest = max(cfg.velocities) if method == "seq" else cfg.velocity + 3 * cfg.sigma
    reach = int(np.ceil(fastest * cfg.speed * (cfg.window + 1))) + 2
    assert (focus == np.arange(200 - reach, 200 + reach + 1)).all()
    # every cell of a line the next frame's answer (moved at most the fastest speed) can
    # use lies in the focus
    ahead = int(np.ceil(fastest * cfg.speed))
    assert {200 + ahead, 200 + ahead - int(fastest * cfg.speed * cfg.window)} <= set(focus)
    s = np.zeros(400)
    s[3] = 1.0
    f.reset()
    f.update(s)
    assert f.focus()[0] == 0 and f.focus(margin=0)[-1] == 3 + reach - 2
    f.reset()
    assert f.focus() is None


def test_frame_similarity_of_a_row_is_what_dense_gives_it():
    """What the stream prints for the filtered answer: the row's own similarity when the frame
    knows it (exact maps: every row), the frame's mean where an approximate search never
    scored it."""
    scores = np.linspace(-0.2, 0.7, 50).astype(np.float32)
    exact = exact_frame(scores, None, c=5)
    assert [exact.similarity(r) for r in (0, 17, 49)] == [float(scores[r]) for r in (0, 17, 49)]
    rows = np.array([3, 10, 40])
    part = FrameScores(rows, np.array([0.9, 0.5, 0.6]), 50, 0.125, 0.05)
    dense = part.dense()
    for row in (0, 3, 9, 10, 11, 40, 49):
        assert part.similarity(row) == pytest.approx(float(dense[row]))
    assert part.similarity(10) == pytest.approx(0.5) and part.similarity(11) == 0.125
    assert part.similarity(49) == 0.125  # after the last known row
    assert dense.dtype == np.float32 and exact.dense().dtype == np.float32  # (N,) of a map


def test_standardise_uses_the_map_statistics_it_is_given():
    """A frame's z-scores: over its own values, or with the (mean, std) of the whole map when
    only some rows are known; constant similarities (no information) give zeros."""
    s = np.array([0.1, 0.2, 0.3])  # std 0.0816: well below 1
    np.testing.assert_allclose(standardise(s), [-1.224744871, 0.0, 1.224744871], atol=1e-9)
    np.testing.assert_allclose(standardise(s, (0.0, 0.5)), [0.2, 0.4, 0.6])
    assert standardise(np.full(4, 0.3)).tolist() == [0.0] * 4
    assert standardise(s, (0.2, 0.0)).tolist() == [0.0] * 3


# --- the dense filters against a plain, loop-by-loop reading of the module doc ---------------


def reference_seq(z: np.ndarray, velocities, steps) -> np.ndarray:
    """Per end row j: the best over v of the mean of z[t, j − round(v·(step_now − step_t))]
    over the frames whose row is inside the map (rounding half up)."""
    w, n = z.shape
    out = np.empty(n)
    for j in range(n):
        best = -np.inf
        for v in velocities:
            cells = [
                z[t, j - int(np.floor(v * (steps[-1] - steps[t]) + 0.5))]
                for t in range(w)
                if j - int(np.floor(v * (steps[-1] - steps[t]) + 0.5)) >= 0
            ]
            best = max(best, sum(cells) / len(cells) if cells else 0.0)
        out[j] = best
    return out


def reference_hmm(z: np.ndarray, cfg: FilterConfig, steps) -> np.ndarray:
    """Bayes filter from a uniform prior: move by velocity·speed·Δ rows with a Gaussian of
    width max(sigma·speed·Δ, 0.5) cut at ±3 widths, mix in a uniform jump, multiply by
    exp(z / temperature), normalise."""
    w, n = z.shape
    belief = [1.0 / n] * n
    for t in range(w):
        if t > 0:
            delta = max(steps[t] - steps[t - 1], 0.0)
            move = cfg.velocity * cfg.speed * delta
            width = max(cfg.sigma * cfg.speed * delta, 0.5)
            offsets = range(int(np.floor(move - 3 * width)), int(np.ceil(move + 3 * width)) + 1)
            weights = {o: np.exp(-0.5 * ((o - move) / width) ** 2) for o in offsets}
            total = sum(weights.values())
            moved = [
                sum(belief[i - o] * k / total for o, k in weights.items() if 0 <= i - o < n)
                for i in range(n)
            ]
            belief = [(1 - cfg.jump) * b + cfg.jump / n for b in moved]
        top = max(z[t])
        belief = [b * np.exp((z[t, i] - top) / cfg.temperature) for i, b in enumerate(belief)]
        total = sum(belief)
        belief = [b / total for b in belief]
    return np.array(belief)


FILTER_VARIANTS = [
    dict(method="seq", window=4, velocities=(0.5, 1.0, 1.7), speed=1.5),
    dict(method="seq", window=6, velocities=(2.0,), speed=1.0),
    dict(method="hmm", window=4, velocity=1.3, sigma=0.7, jump=0.05, temperature=0.6, speed=1.5),
    dict(method="hmm", window=5, velocity=0.5, sigma=2.0, jump=0.0, temperature=2.0, speed=0.8),
]


@pytest.mark.parametrize("variant", FILTER_VARIANTS, ids=lambda v: f"{v['method']}-{v['window']}")
def test_dense_filter_is_the_documented_model(variant):
    """Every filtered score of every frame (dropped frames included) as the module doc defines
    it, over frames standardised with the map statistics; the sparse filter gives the same
    answer and score on the exact frames."""
    rng = np.random.default_rng(len(str(variant)))
    cfg = FilterConfig(**variant)
    n = 40
    sims = 0.5 + 0.05 * rng.standard_normal((9, n))
    sims[np.arange(9), 5 + 2 * np.arange(9)] += 0.1
    steps = np.cumsum(rng.integers(1, 4, 9)).astype(np.float64)
    dense, sparse, f32 = TemporalFilter(cfg), TemporalFilter(cfg), TemporalFilter(cfg)
    z = []
    for t, (s, step) in enumerate(zip(sims, steps, strict=True)):
        z.append((s - s.mean()) / s.std())
        out = dense.update(s, step)
        window = np.array(z[-cfg.window :])
        at = steps[max(0, t + 1 - cfg.window) : t + 1]
        if cfg.method == "seq":
            expect = reference_seq(window, [v * cfg.speed for v in cfg.velocities], at)
        else:
            expect = reference_hmm(window, cfg, at)
        np.testing.assert_allclose(out, expect, rtol=1e-9, atol=1e-12)
        best, score = sparse.observe(exact_frame(s.astype(np.float32), sparse.focus(), c=6), step)
        out32 = f32.update(s.astype(np.float32), step)
        assert best == int(np.argmax(out32)) and score == pytest.approx(float(out32[best]))


def test_dense_filter_uses_given_statistics_and_gaps_of_steps():
    """``stats`` replaces the frame's own mean and spread; a frame that arrives after a gap
    moves the line (seq) by the gap, not by one row."""
    cfg = FilterConfig(method="seq", window=2, velocities=(1.0,))
    f = TemporalFilter(cfg)
    a, b = np.zeros(10), np.zeros(10)
    a[2], b[5] = 1.0, 1.0
    f.update(a, 0, stats=(0.0, 0.5))
    out = f.update(b, 3, stats=(0.0, 0.5))
    assert int(np.argmax(out)) == 5 and out[5] == pytest.approx(2.0)  # (2 + 2) / 2
    assert np.count_nonzero(out) == 1  # the one line through both lit cells
    g = TemporalFilter(cfg)
    g.update(a, 0, stats=(0.0, 0.5))
    assert g.update(b, 1, stats=(0.0, 0.5))[5] == pytest.approx(1.0)  # row 4 of a is 0


def test_with_values_on_partial_and_exact_frames():
    """Re-ranked candidates' fused scores replace their values; an exact frame's statistics
    are those of the changed vector, a partial frame keeps the sample's statistics; ids not
    in the frame are refused."""
    part = FrameScores(np.array([3, 10, 40]), np.array([0.9, 0.5, 0.6]), 50, 0.125, 0.05)
    fused = part.with_values(np.array([40, 3]), np.array([0.1, 0.2]))
    assert fused.values.tolist() == [0.2, 0.5, 0.1] and part.values.tolist() == [0.9, 0.5, 0.6]
    assert (fused.rows == part.rows).all() and (fused.mean, fused.std) == (0.125, 0.05)
    assert fused.count == 50 and fused.full is None
    for bad in ([41], [51], [3, 11]):
        with pytest.raises(ValueError, match="ids must be rows of the frame"):
            part.with_values(np.array(bad), np.zeros(len(bad)))
    s = np.linspace(0.0, 1.0, 50).astype(np.float32)
    exact = exact_frame(s, None, c=5)
    changed = exact.with_values(np.array([49]), np.array([5.0]))
    full = s.astype(np.float64)
    full[49] = 5.0
    assert changed.std == pytest.approx(float(full.std()), rel=1e-6)
    assert changed.mean == pytest.approx(float(full.mean()), rel=1e-6)
    assert changed.bound == exact.bound and (changed.rows == exact.rows).all()


def test_standardise_gives_float64_z_scores():
    """Single-precision similarities are standardised in double precision (the sparse and
    dense filters agree to 1e-12 only so)."""
    s = np.array([0.1, 0.2, 0.3], np.float32)
    assert standardise(s).dtype == np.float64 and standardise(s, (0.2, 0.1)).dtype == np.float64


def test_sparse_hmm_is_the_dense_filter_over_the_known_rows():
    """On partial frames the sparse hmm is exactly the dense filter over a vector holding the
    known rows' similarities and the mean everywhere else (sample rows count as the mean):
    same answer, same posterior, frame by frame, with gaps in the steps, frames at both ends
    of the map, a frame whose known rows are all below the mean (an unknown row wins) and, on
    a small map, frames that know every row."""
    variants = [
        (300, dict()),
        (300, dict(velocity=1.3, sigma=0.7, jump=0.05, temperature=0.6, speed=1.5)),
        (300, dict(window=3, jump=0.0)),
        (40, dict(window=4, sigma=0.6)),
    ]
    unknown_wins = 0
    for n, variant in variants:
        cfg = FilterConfig(method="hmm", **variant)
        rng = np.random.default_rng(1)
        dense, sparse = TemporalFilter(cfg), TemporalFilter(cfg)
        step = 0
        for t in range(30):
            step += int(rng.integers(1, 3))
            lit = (100 + 2 * t) % n
            edges = np.array([0, 1, n - 1] if t % 5 == 0 else [], np.int64)
            rows = np.arange(n) if n < 100 and t % 3 == 0 else rng.integers(0, n, 30)
            rows = np.unique(np.concatenate([rows, lit + np.arange(-3, 4), edges]) % n)
            vals = 0.5 + 0.05 * rng.standard_normal(len(rows))
            vals[rows == lit] += 0.3
            if t == 20:
                vals[:] = 0.3
            sampled = rng.random(len(rows)) < (0.2 if len(rows) < n else 0.0)
            values = np.full(n, 0.5)
            values[rows[~sampled]] = vals[~sampled]
            out = dense.update(values, step, stats=(0.5, 0.05))
            best, score = sparse.observe(
                FrameScores(rows, vals, n, 0.5, 0.05, sampled=sampled), step
            )
            assert best == int(np.argmax(out)), (n, variant, t)
            assert score == pytest.approx(float(out[best]), rel=1e-12), (n, variant, t)
            unknown_wins += best not in rows[~sampled]
    assert unknown_wins > 0


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_dense_and_sparse_frames_mixed_in_one_filter(method):
    """A stream may hand the filter full vectors (``update``) and frame evidence (``observe``)
    in turn: every answer equals a dense filter's over the same frames."""
    sims = noisy_sequence(np.arange(30, 60), seed=21).astype(np.float32)
    cfg = FilterConfig(method=method, window=4)
    dense, mixed = TemporalFilter(cfg), TemporalFilter(cfg)
    for t, s in enumerate(sims):
        out = dense.update(s, t)
        if t % 3 == 0:
            got = mixed.update(s, t)
            assert int(np.argmax(got)) == int(np.argmax(out))
            np.testing.assert_allclose(got, out, rtol=1e-12)
        else:
            best, score = mixed.observe(exact_frame(s, mixed.focus(), c=4), t)
            assert best == int(np.argmax(out)) and score == pytest.approx(float(out[best]))


def test_sparse_seq_falls_back_to_the_dense_filter_on_partial_frames():
    """Partial frames whose known rows are all ordinary (no line can beat the unknown rows'
    bound): the dense filter over the frames' known rows answers, row for row."""
    n = 200
    cfg = FilterConfig(method="seq", window=3)
    sparse, dense = TemporalFilter(cfg), TemporalFilter(cfg)
    rng = np.random.default_rng(4)
    for t in range(6):
        rows = np.sort(rng.choice(n, 20, replace=False))
        vals = 0.5 - 0.01 * rng.random(20)  # every known row below the mean
        fs = FrameScores(rows, vals, n, 0.5, 0.05)
        out = dense.update(fs.dense().astype(np.float64), t, stats=fs.stats)
        best, score = sparse.observe(fs, t)
        assert best == int(np.argmax(out)) and score == pytest.approx(float(out[best]))
    assert sparse.fallbacks > 0


@pytest.mark.parametrize("second_step, moved", [(3, 0), (4, 10)])
def test_hmm_moves_belief_by_the_steps_between_frames(second_step, moved):
    """A frame with the same frame number as the last (a repeated timestamp) predicts no
    motion; one step later, belief moves ``speed`` rows."""
    f = TemporalFilter(FilterConfig(method="hmm", speed=10))
    peak = np.full(200, 0.1)
    peak[50] = 0.9
    f.update(peak, step=3)
    out = f.update(np.full(200, 0.5), step=second_step)  # no evidence: prediction only
    assert int(np.argmax(out)) == 50 + moved
