"""Local matching in detail: the boundaries and thresholds a mutation of re-ranking would move."""

from __future__ import annotations

import numpy as np

from sfrs_edge.rerank.match import MIN_POINTS, count_inliers, mutual_matches


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _similar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points and their image under a rotation + scale + shift (exact: every pair an inlier)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 100, (n, 2))
    c, s = np.cos(0.3) * 1.2, np.sin(0.3) * 1.2
    return a, a @ np.array([[c, -s], [s, c]]).T + [5.0, -3.0]


def test_similarity_geometry_counts_every_exact_pair():
    a, b = _similar(20)
    assert count_inliers(a, b, "similarity", 1.0) == 20


def test_each_geometry_needs_exactly_its_minimum_of_points():
    a, b = _similar(10, seed=1)
    for geometry, need in MIN_POINTS.items():
        assert count_inliers(a[: need - 1], b[: need - 1], geometry, 2.0) == 0, geometry
        assert count_inliers(a[:need], b[:need], geometry, 2.0) > 0, geometry


def test_reprojection_threshold_decides_which_displaced_points_count():
    a, b = _similar(30, seed=2)
    b = b.copy()
    b[:10] += [6.0, 0.0]  # ten points 6 px off the model
    assert count_inliers(a, b, "similarity", 2.0) == 20
    assert count_inliers(a, b, "similarity", 10.0) == 30


def test_mutual_matches_drop_one_sided_neighbours_and_keep_the_threshold_inclusive():
    q = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    c = np.array([[1.0, 0.0], [0.0, 1.0]])
    pairs, sims = mutual_matches(q, c, 0.0)
    # q2's nearest is c0, but c0's nearest is q0: only (0, 0) and (1, 1) are mutual.
    assert pairs.tolist() == [[0, 0], [1, 1]]
    np.testing.assert_allclose(sims, [1.0, 0.8], atol=1e-6)
    pairs, _ = mutual_matches(q, c, np.float32(0.8))
    assert pairs.tolist() == [[0, 0], [1, 1]]  # similarity equal to the threshold is kept
    assert mutual_matches(q, c, 0.81)[0].tolist() == [[0, 0]]


def test_mutual_matches_of_empty_features_are_empty():
    pairs, sims = mutual_matches(np.zeros((0, 4)), _unit(np.ones((3, 4))), 0.5)
    assert pairs.shape == (0, 2) and sims.shape == (0,)


def test_ransac_threshold_is_the_one_asked_for():
    """Matches displaced by 8-10 px from one homography are inliers at a 24 px threshold and
    outliers at 3 px (OpenCV's own default): the threshold reaches OpenCV."""
    rng = np.random.default_rng(5)
    q = rng.uniform(0, 600, size=(60, 2)).astype(np.float32)
    noise = rng.uniform(8, 10, size=(60, 1)) * _unit(rng.normal(size=(60, 2)))
    c = (q * 1.02 + np.array([15.0, -7.0])) + noise
    for geometry in ("homography", "similarity", "fundamental"):
        assert count_inliers(q, c, geometry, 24.0) >= 55, geometry
        assert count_inliers(q, c, geometry, 3.0) <= 30, geometry
