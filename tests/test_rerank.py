"""Re-ranking (sfrs_edge.rerank): matching, verification, fusion, confidence — numpy + OpenCV."""

from __future__ import annotations

import numpy as np
import pytest

from sfrs_edge.errors import ConfigError
from sfrs_edge.estimate import verified_confidence
from sfrs_edge.rerank import RerankConfig, rerank
from sfrs_edge.rerank.match import count_inliers, mutual_matches
from sfrs_edge.rerank.stage import evidence, fused_scores


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def scene(rng, p: int = 64, d: int = 32):
    feats = unit(rng.normal(size=(p, d))).astype(np.float16)
    xy = rng.uniform([0, 0], [640, 360], size=(p, 2)).astype(np.float32)
    return feats, xy


def test_mutual_matches_finds_permuted_copies_and_respects_threshold():
    rng = np.random.default_rng(0)
    q, _ = scene(rng)
    perm = rng.permutation(len(q))
    pairs, sims = mutual_matches(q, q[perm], 0.9)
    assert len(pairs) == len(q)
    assert (perm[pairs[:, 1]] == pairs[:, 0]).all()
    assert (sims > 0.99).all()
    other, _ = scene(np.random.default_rng(1))
    assert len(mutual_matches(q, other, 0.9)[0]) == 0  # unrelated: nothing above 0.9


def test_count_inliers_homography_and_fundamental():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 600, size=(60, 2)).astype(np.float32)
    b = a * 1.1 + np.array([20.0, -5.0], np.float32)  # a similarity: also a homography
    b[:15] = rng.uniform(0, 600, size=(15, 2))  # 15 outliers
    h = count_inliers(a, b, "homography", 3.0)
    assert 43 <= h <= 47
    assert count_inliers(a, b, "none", 3.0) == 60
    assert count_inliers(a[:3], b[:3], "homography", 3.0) == 0  # too few points
    assert count_inliers(a, b, "fundamental", 3.0) >= 45


def test_fusion_keeps_global_order_without_evidence():
    cfg = RerankConfig(min_inliers=8, full_inliers=30, weight=0.2)
    sims = np.array([0.5, 0.45, 0.4])
    assert (np.argsort(-fused_scores(sims, [0, 7, 8], cfg)) == [0, 1, 2]).all()
    assert evidence([8, 19, 30, 99], cfg).tolist() == [0.0, 0.5, 1.0, 1.0]
    assert np.argmax(fused_scores(sims, [0, 0, 30], cfg)) == 2  # strong evidence wins


def test_rerank_promotes_the_geometrically_consistent_candidate():
    rng = np.random.default_rng(3)
    qf, qxy = scene(rng)
    cands_f, cands_xy = [], []
    for c in range(5):
        f, xy = scene(np.random.default_rng(10 + c))
        if c == 3:  # the true place: same features, shifted view, a few replaced
            f = qf.copy()
            xy = qxy + np.array([30.0, 4.0], np.float32)
            f[:10] = scene(np.random.default_rng(99))[0][:10]
        cands_f.append(f)
        cands_xy.append(xy)
    sims = np.array([0.6, 0.58, 0.57, 0.55, 0.5])
    res = rerank(qf, qxy, np.stack(cands_f), np.stack(cands_xy), sims, RerankConfig(k=5))
    assert res.order[0] == 3
    assert res.inliers[0] >= 50 and res.evidence[0] == 1.0
    assert (res.order[1:] == [0, 1, 2, 4]).all()  # no evidence elsewhere: global order kept


def test_verified_confidence():
    near = np.array([True, True, False, False])
    assert verified_confidence([1.0, 0.5, 0.2, 0.0], near) == pytest.approx(0.8)
    assert verified_confidence([0.0, 0.0, 0.0, 0.0], near) == 0.0
    assert verified_confidence([0.3, 0.0, 0.9, 0.0], near) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"k": 0}, {"geometry": "affine"}, {"min_inliers": 30, "full_inliers": 30}, {"reproj_px": 0}],
)
def test_config_errors(kwargs):
    with pytest.raises(ConfigError):
        RerankConfig(**kwargs)
