"""Temporal filters on synthetic sequences where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from sfrs_edge.errors import ConfigError
from sfrs_edge.stream.filtering import FilterConfig, TemporalFilter, sequence_scores, standardise

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
    "kwargs",
    [{"method": "kalman"}, {"window": 0}, {"sigma": 0}, {"jump": 1.0}, {"velocities": ()}],
)
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        FilterConfig(**kwargs)


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
