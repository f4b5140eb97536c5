"""Re-ranking (sfrs_edge.rerank): matching, verification, fusion, confidence — numpy + OpenCV."""

from __future__ import annotations

import numpy as np
import pytest

from sfrs_edge.errors import ConfigError
from sfrs_edge.estimate import verified_confidence
from sfrs_edge.rerank import RerankConfig, rerank
from sfrs_edge.rerank.evidence import Segment
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


class StoredFeatures:
    """A map's stored local features by row id (what RerankStage reads for candidates)."""

    def __init__(self, rows: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self.rows = rows

    def extra_rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        part = 0 if name == "local_features" else 1
        return np.stack([self.rows[int(i)][part] for i in ids])


def test_stage_promotes_the_candidate_whose_own_stored_features_align():
    """Map row 9 holds the query's place (same features, a shifted view), rows 5, 2 and 7 hold
    other places. Re-ranking must read each candidate's *own* row: 9 is promoted over the
    globally better 5 with many inliers, the others get none and keep their global order."""
    from sfrs_edge.localize import Candidates, rerank_candidates
    from sfrs_edge.rerank import RerankStage
    from sfrs_edge.stream.filtering import FrameScores

    rng = np.random.default_rng(3)
    qf, qxy = scene(rng)
    right = (qf.copy(), qxy * 1.05 + np.array([30.0, 4.0], np.float32))
    rows = {i: scene(np.random.default_rng(20 + i)) for i in (5, 2, 7)}
    rows[9] = right
    stage = RerankStage(
        RerankConfig(k=4, scorer="inliers", fusion="evidence"), StoredFeatures(rows)
    )
    ids = np.array([5, 9, 2, 7, 11])  # 11: beyond k, never re-ranked
    sims = np.array([0.60, 0.58, 0.57, 0.55, 0.50])
    outputs = {"local_features": qf, "local_xy": qxy}
    new_ids, new_sims, res = stage.apply(outputs, ids, sims)
    assert new_ids.tolist() == [9, 5, 2, 7, 11]
    assert new_sims.tolist() == [0.58, 0.60, 0.57, 0.55, 0.50]  # each id keeps its similarity
    assert res.inliers[0] >= 50 and res.evidence[0] == 1.0
    assert res.evidence[1:].tolist() == [0.0, 0.0, 0.0]  # the unrelated places: no evidence
    assert res.inliers[1:].max() <= 6
    # a temporal filter sees the fused score of each re-ranked id, the rest unchanged
    scores = np.linspace(0.0, 0.1, 12).astype(np.float32)
    found = Candidates(ids, sims, FrameScores.exact(scores, ids, sims))
    fused, verified = rerank_candidates(stage, outputs, found)
    assert fused.ids.tolist() == [9, 5, 2, 7, 11]
    assert fused.scores[9] == pytest.approx(0.58 + 0.2) and fused.scores[5] == pytest.approx(0.6)
    assert fused.scores[11] == scores[11] and scores[9] == pytest.approx(9 / 110)  # input kept


def aligned_scene(seed: int = 3):
    """Query outputs, stored rows (9: the query's place seen shifted; 5, 2, 7: other places)."""
    rng = np.random.default_rng(seed)
    qf, qxy = scene(rng)
    rows = {i: scene(np.random.default_rng(20 + i)) for i in (5, 2, 7)}
    rows[9] = (qf.copy(), qxy * 1.05 + np.array([30.0, 4.0], np.float32))
    return {"local_features": qf, "local_xy": qxy}, StoredFeatures(rows)


def test_default_spatial_zscore_promotes_the_aligned_candidate_only():
    """The default scoring (spatial + z-score fusion): the aligned place rises to the top with
    its verified matches counted; unrelated places get no verified evidence (their order among
    themselves follows their unverified spatial scores); the candidate beyond k is untouched."""
    from sfrs_edge.rerank import RerankStage

    outputs, stored = aligned_scene()
    cfg = RerankConfig(k=4)
    assert (cfg.scorer, cfg.fusion) == ("spatial", "zscore")
    ids = np.array([5, 9, 2, 7, 11])
    sims = np.array([0.60, 0.58, 0.57, 0.55, 0.50])
    new_ids, new_sims, res = RerankStage(cfg, stored).apply(outputs, ids, sims)
    assert new_ids[0] == 9 and sorted(new_ids[1:4].tolist()) == [2, 5, 7] and new_ids[4] == 11
    assert dict(zip(new_ids.tolist(), new_sims.tolist(), strict=True)) == dict(
        zip(ids.tolist(), sims.tolist(), strict=True)
    )  # each id keeps its similarity
    assert res.inliers[0] >= 50 and res.evidence[0] == 1.0
    assert res.inliers[1:].max() <= 6 and res.evidence[1:].tolist() == [0.0, 0.0, 0.0]
    assert np.all(np.diff(res.scores) <= 0)  # scores are the new order


def test_margin_re_ranks_only_ambiguous_answers():
    """With ``margin``, a clear global answer (top-2 gap at or above it) keeps its order and
    reports no re-ranking; an ambiguous one is re-ranked."""
    from sfrs_edge.rerank import RerankStage

    outputs, stored = aligned_scene()
    stage = RerankStage(RerankConfig(k=4, margin=0.05), stored)
    ids = np.array([5, 9, 2, 7, 11])
    clear = np.array([0.72, 0.65, 0.57, 0.55, 0.50])  # gap 0.07: not below the margin
    same_ids, same_sims, res = stage.apply(outputs, ids, clear)
    assert res is None and same_ids.tolist() == ids.tolist() and same_sims is clear
    at_margin = RerankStage(RerankConfig(k=4, margin=0.25), stored)
    assert at_margin.apply(outputs, ids, np.array([0.75, 0.5, 0.4, 0.3, 0.2]))[2] is None
    close = np.array([0.70, 0.66, 0.57, 0.55, 0.50])
    new_ids, _, res = stage.apply(outputs, ids, close)
    assert res is not None and new_ids[0] == 9
    assert stage.frames == 1  # only re-ranked frames count towards the no-evidence warning
    with pytest.raises(ConfigError):
        RerankConfig(margin=0.0)


def test_stage_keeps_the_top_candidate_when_its_own_features_align():
    from sfrs_edge.rerank import RerankStage

    rng = np.random.default_rng(4)
    qf, qxy = scene(rng)
    rows = {i: scene(np.random.default_rng(40 + i)) for i in (1, 2)}
    rows[0] = (qf.copy(), qxy + 12.0)
    stage = RerankStage(RerankConfig(k=3), StoredFeatures(rows))
    ids = np.array([0, 1, 2])
    new_ids, _, res = stage.apply(
        {"local_features": qf, "local_xy": qxy}, ids, np.array([0.7, 0.69, 0.68])
    )
    assert new_ids.tolist() == [0, 1, 2] and res.evidence.tolist() == [1.0, 0.0, 0.0]
    assert res.inliers[0] >= 50


def test_a_registered_scorer_is_the_one_config_names(monkeypatch):
    from sfrs_edge.rerank import stage

    monkeypatch.setattr(stage, "SCORERS", dict(stage.SCORERS))  # undone after the test

    @stage.scorer("second_only")
    def second_only(qf, qxy, cf, cxy, config):  # evidence for the candidate whose features are 2
        return 0, 40 if cf[0, 0] == 2 else 0

    feats = np.stack([np.full((3, 2), v, np.float32) for v in (1, 2, 3)])
    xy = np.zeros((3, 3, 2), np.float32)
    sims = np.array([0.9, 0.8, 0.7])
    res = rerank(feats[0], xy[0], feats, xy, sims, RerankConfig(k=3, scorer="second_only"))
    assert res.order.tolist() == [1, 0, 2] and res.inliers.tolist() == [40, 0, 0]
    with pytest.raises(ConfigError, match="unknown re-ranking scorer 'nope'; known: .*inliers"):
        rerank(feats[0], xy[0], feats, xy, sims, RerankConfig(k=3, scorer="nope"))


# ------------------------------------------- batched evidence (patch descriptors, segments)


def _brute_mutual(q, c, min_sim):
    sims = q.astype(np.float32) @ c.astype(np.float32).T
    out = {}
    for p in range(len(q)):
        j = int(sims[p].argmax())
        if int(sims[:, j].argmax()) == p and sims[p, j] >= min_sim:
            out[p] = j
    return out


def test_batched_mutual_nn_equals_the_per_candidate_definition():
    from sfrs_edge.rerank.evidence import mutual_nn

    rng = np.random.default_rng(1)
    q, _ = scene(rng, 20, 8)
    cands = np.stack([scene(rng, 30, 8)[0] for _ in range(5)])
    cands[2, :20] = q  # candidate 2 holds the query's features
    m = mutual_nn(q, cands, 0.2)
    for c in range(5):
        want = _brute_mutual(q, cands[c], 0.2)
        got = {int(p): int(m.index[c, p]) for p in np.flatnonzero(m.ok[c])}
        assert got == want
    assert m.counts[2] == 20


def test_spatial_score_rewards_one_shared_displacement():
    from sfrs_edge.rerank.evidence import Matches, Segment, spatial_scores

    seg = Segment(0, 4, grid=(5, 9), step_px=(32.0, 32.0))
    qxy = np.array([[16, 16], [80, 48], [144, 80], [208, 16]], np.float32)
    shifted = qxy + [64, 0]  # every match moved by 2 grid steps
    scattered = np.array([[300, 100], [16, 140], [208, 16], [40, 40]], np.float32)
    cxy = np.stack([shifted, scattered])
    m = Matches(np.tile(np.arange(4), (2, 1)), np.ones((2, 4), bool), np.ones((2, 4), np.float32))
    s = spatial_scores(qxy, cxy, m, seg)
    assert s[0] == pytest.approx(4.0)  # each consistent match adds exactly 1
    assert s[1] < s[0]
    none = Matches(m.index, np.zeros((2, 4), bool), m.similarity)
    assert spatial_scores(qxy, cxy, none, seg).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("method", ["ransac", "magsac"])
def test_homography_inliers_counts_a_consistent_candidate(method):
    from sfrs_edge.rerank.evidence import Matches, homography_inliers

    rng = np.random.default_rng(2)
    qxy = rng.uniform([0, 0], [640, 360], size=(40, 2)).astype(np.float32)
    good = qxy * 0.9 + [30, 10]
    bad = rng.uniform([0, 0], [640, 360], size=(40, 2)).astype(np.float32)
    few = good.copy()
    m = Matches(np.tile(np.arange(40), (3, 1)), np.ones((3, 40), bool), np.ones((3, 40)))
    ok = m.ok.copy()
    ok[2, 3:] = False  # three matches: no homography
    m = Matches(m.index, ok, m.similarity)
    inl = homography_inliers(qxy, np.stack([good, bad, few]), m, 8.0, method)
    assert inl[0] == 40 and inl[1] < 15 and inl[2] == 0


def test_segment_scores_keep_segments_apart_and_normalise_by_count():
    from sfrs_edge.rerank.evidence import Segment, segment_scores

    rng = np.random.default_rng(3)
    q, qxy = scene(rng, 30, 16)
    other, oxy = scene(rng, 30, 16)
    c = np.stack([np.concatenate([q[:10], other[10:]]), other])  # cand 0 = query in segment 0
    cxy = np.stack([np.concatenate([qxy[:10], oxy[10:]]), oxy])
    segs = [Segment(0, 10, (3, 5), (32.0, 32.0)), Segment(10, 30, (4, 5), (32.0, 32.0))]
    sc, counts, _ = segment_scores(q, qxy, c, cxy, segs, "count", 0.7, 24.0)
    assert counts[0, 0] == 10 and sc[0, 0] == pytest.approx(1.0)
    assert counts[1, 0] == 0 and counts[:, 1].max() == 0
    sc, _, _ = segment_scores(q, qxy, c, cxy, segs, "ransac", 0.3, 24.0)
    assert sc[0, 0] == pytest.approx(1.0) and sc[1, 0] < 0.5


def test_zscore_fusion_weighs_sizes_and_the_global_similarity():
    from sfrs_edge.rerank.evidence import fuse_zscore, zscore

    assert zscore(np.ones(4)).tolist() == [0.0] * 4
    sims = np.array([0.9, 0.8, 0.7])
    scores = np.array([[0.0, 0.1], [1.0, 0.0], [0.0, 0.9]])
    assert np.argmax(fuse_zscore(sims, scores, 0.0, [1.0, 0.0])) == 1
    assert np.argmax(fuse_zscore(sims, scores, 0.0, [0.0, 1.0])) == 2
    assert np.argmax(fuse_zscore(sims, scores, 10.0, [1.0, 1.0])) == 0


def _two_segment_scene():
    """Query of 2 segments (40 + 24 features) and 4 candidates; candidate 2 is the query seen
    shifted, in both segments."""
    rng = np.random.default_rng(4)
    qf, qxy = scene(rng, 64, 32)
    qxy = np.round(qxy / 32) * 32 + 16  # on a 32-px grid
    cf, cxy = [], []
    for c in range(4):
        f, xy = scene(np.random.default_rng(20 + c), 64, 32)
        if c == 2:
            f, xy = qf.copy(), qxy + np.array([64.0, 0.0], np.float32)
        cf.append(f)
        cxy.append(xy)
    segs = [Segment(0, 40, (12, 20), (32.0, 32.0)), Segment(40, 64, (11, 19), (32.0, 32.0))]
    return qf, qxy, np.stack(cf), np.stack(cxy), segs


@pytest.mark.parametrize("scorer", ["ransac", "magsac", "spatial", "count"])
@pytest.mark.parametrize("fusion", ["linear", "zscore", "evidence"])
def test_batched_scorers_promote_the_consistent_candidate(scorer, fusion):
    qf, qxy, cf, cxy, segs = _two_segment_scene()
    sims = np.array([0.7, 0.6, 0.55, 0.5])
    cfg = RerankConfig(
        k=4, scorer=scorer, fusion=fusion, size_weights=(1.0, 0.5), min_similarity=0.5
    )
    res = rerank(qf, qxy, cf, cxy, sims, cfg, segs)
    assert res.order[0] == 2
    assert res.matches[0] == 64 and res.inliers[0] >= 60
    assert list(res.order[1:]) == [0, 1, 3] or fusion == "zscore"  # no evidence elsewhere
    if fusion != "evidence":  # fused scores stay on the similarity scale for the filters
        assert sims.min() - 0.5 < res.scores[-1] <= res.scores[0] < sims.max() + 1.5


def test_batched_scorer_without_segment_metadata_infers_the_grid():
    from sfrs_edge.rerank.stage import whole_segment

    qf, qxy, cf, cxy, _ = _two_segment_scene()
    seg = whole_segment(qxy)
    assert seg.start == 0 and seg.stop == 64 and seg.step_px == (32.0, 32.0)
    assert seg.grid[1] == int(round((qxy[:, 0].max() - qxy[:, 0].min()) / 32)) + 1
    cfg = RerankConfig(scorer="spatial", fusion="linear", min_similarity=0.5)
    res = rerank(qf, qxy, cf, cxy, np.array([0.7, 0.6, 0.55, 0.5]), cfg)
    assert res.order[0] == 2


def test_rerank_config_refuses_unknown_fusion_and_negative_weights():
    with pytest.raises(ConfigError, match="fusion"):
        RerankConfig(fusion="max")
    with pytest.raises(ConfigError, match="negative"):
        RerankConfig(size_weights=(1.0, -0.5))
    from sfrs_edge.rerank.stage import get_scorer

    with pytest.raises(ConfigError, match="magsac"):
        get_scorer("sift")


# ------------------------------------------- batched evidence against its definitions


def test_half_precision_features_are_compared_in_float32():
    """Maps store local features as float16; their similarities are float32 dot products of
    those values (a float16 product would be 1e-3 off and reorder near-ties)."""
    from sfrs_edge.rerank.evidence import mutual_nn

    rng = np.random.default_rng(7)
    q, _ = scene(rng, 24, 64)  # float16, as stored
    cands = np.stack([scene(rng, 24, 64)[0] for _ in range(3)])
    cands[1] = q[rng.permutation(24)]
    m = mutual_nn(q, cands, 0.0)
    exact = np.einsum("cqd,pd->cqp", cands.astype(np.float64), q.astype(np.float64))
    want = np.take_along_axis(exact, m.index[:, None, :], 1)[:, 0, :]
    np.testing.assert_allclose(m.similarity, want, atol=1e-6)
    assert m.counts[1] == 24


def test_batched_mutual_nn_keeps_a_similarity_equal_to_the_threshold():
    from sfrs_edge.rerank.evidence import mutual_nn

    q = np.array([[1.0, 0.0]], np.float32)
    c = np.array([[[0.5, np.sqrt(0.75)]]], np.float32)  # cosine exactly 0.5
    assert mutual_nn(q, c, 0.5).ok.tolist() == [[True]]
    assert mutual_nn(q, c, 0.5001).ok.tolist() == [[False]]


def _spatial_by_the_formula(qxy, cxy, ok, seg):
    """Rapid spatial scoring written out per candidate and match (module docstring)."""
    x_max, y_max = seg.grid[1] - 1, seg.grid[0] - 1
    out = []
    for c in range(len(cxy)):
        d = [((qxy[p] - cxy[c][p]) / seg.step_px) for p in range(len(qxy)) if ok[c, p]]
        if not d:
            out.append(0.0)
            continue
        mean = np.mean(d, axis=0)
        total = sum(
            (x_max - abs(dx - mean[0])) ** 2 + (y_max - abs(dy - mean[1])) ** 2 for dx, dy in d
        )
        out.append(total / max(x_max**2 + y_max**2, 1))
    return np.array(out)


@pytest.mark.parametrize("grid", [(3, 7), (6, 4), (2, 1)])
def test_spatial_score_equals_the_rapid_spatial_scoring_formula(grid):
    """On non-square grids (x_max and y_max differ), with candidates of many, one and no
    matches: a lone match is consistent with itself and adds exactly 1."""
    from sfrs_edge.rerank.evidence import Matches, Segment, spatial_scores

    rng = np.random.default_rng(11)
    seg = Segment(0, 6, grid=grid, step_px=(16.0, 24.0))
    qxy = rng.uniform(0, 200, (6, 2)).astype(np.float32)
    cxy = rng.uniform(0, 200, (4, 6, 2)).astype(np.float32)
    ok = np.ones((4, 6), bool)
    ok[1, 1:] = False  # one match
    ok[2] = False  # none
    ok[3, ::2] = False
    m = Matches(np.tile(np.arange(6), (4, 1)), ok, np.ones((4, 6), np.float32))
    got = spatial_scores(qxy, cxy, m, seg)
    np.testing.assert_allclose(got, _spatial_by_the_formula(qxy, cxy, ok, seg), rtol=1e-5)
    assert got[1] == pytest.approx(1.0) and got[2] == 0.0


def _noisy_view(seed: int = 5):
    """40 matched points under a similarity plus up to 12 px noise, 10 of them outliers:
    OpenCV's RANSAC and MAGSAC count these differently."""
    rng = np.random.default_rng(seed)
    q = rng.uniform([0, 0], [640, 360], size=(40, 2)).astype(np.float32)
    c = q * 0.9 + [30, 10] + rng.uniform(-12, 12, size=(40, 2)).astype(np.float32)
    c[:10] = rng.uniform([0, 0], [640, 360], size=(10, 2))
    return q, c.astype(np.float32)


def test_homography_scorers_are_opencv_ransac_and_magsac():
    import cv2

    from sfrs_edge.rerank.evidence import RANSAC_CONFIDENCE, RANSAC_ITERS, Matches
    from sfrs_edge.rerank.evidence import homography_inliers as inliers

    q, c = _noisy_view()
    m = Matches(np.arange(40)[None], np.ones((1, 40), bool), np.ones((1, 40), np.float32))
    want = {}
    for name, flag in (("ransac", cv2.RANSAC), ("magsac", cv2.USAC_MAGSAC)):
        _, mask = cv2.findHomography(
            q, c, flag, 8.0, maxIters=RANSAC_ITERS, confidence=RANSAC_CONFIDENCE
        )
        want[name] = int(mask.sum())
        assert inliers(q, c[None], m, 8.0, name).tolist() == [want[name]]
    assert want["ransac"] != want["magsac"]  # the data tells the two apart
    assert inliers(q, c[None], m, 8.0).tolist() == [want["ransac"]]  # RANSAC by default
    assert inliers(q, c[None], m, 8.0).dtype.kind == "i"  # counts


def test_homography_needs_four_matches_and_degenerate_ones_count_nothing():
    from sfrs_edge.rerank.evidence import Matches, homography_inliers

    q = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [50, 50]], np.float32)
    cands = np.stack([q + 5, q + 5, np.zeros_like(q)])  # the last: every point on one pixel
    ok = np.ones((3, 5), bool)
    ok[0, 4] = False  # exactly four matches: enough for a homography
    ok[1, 3:] = False  # three: not enough
    m = Matches(np.tile(np.arange(5), (3, 1)), ok, np.ones((3, 5), np.float32))
    assert homography_inliers(q, cands, m, 3.0).tolist() == [4, 0, 0]


def test_each_segment_scorer_is_the_one_named():
    """``count`` ignores geometry, ``spatial`` is rapid spatial scoring, ``ransac``/``magsac``
    count homography inliers at the given threshold: a candidate whose matches are scattered
    scores full under count only, and noisy views differ between the geometric scorers."""
    from sfrs_edge.rerank.evidence import (
        Segment,
        homography_inliers,
        mutual_nn,
        segment_scores,
        spatial_scores,
    )

    rng = np.random.default_rng(6)
    qxy, noisy = _noisy_view()
    q = unit(rng.normal(size=(40, 16))).astype(np.float32)
    scattered = rng.uniform([0, 0], [640, 360], size=(40, 2)).astype(np.float32)
    cf, cxy = np.stack([q, q]), np.stack([noisy, scattered])
    seg = Segment(0, 40, (12, 20), (32.0, 32.0))
    m = mutual_nn(q, cf, 0.5)
    got = {
        s: segment_scores(q, qxy, cf, cxy, [seg], s, 0.5, 8.0)[0][:, 0]
        for s in ("count", "spatial", "ransac", "magsac")
    }
    assert got["count"].tolist() == [1.0, 1.0]
    np.testing.assert_allclose(got["spatial"], spatial_scores(qxy, cxy, m, seg) / 40)
    for name in ("ransac", "magsac"):
        np.testing.assert_allclose(got[name], homography_inliers(qxy, cxy, m, 8.0, name) / 40)
        assert got[name][1] < 0.3
    assert got["ransac"][0] != got["magsac"][0]
    with pytest.raises(ValueError, match="unknown scorer 'sift'"):
        segment_scores(q, qxy, cf, cxy, [seg], "sift", 0.5, 8.0)


def test_zscore_standardises_each_column_on_its_own():
    from sfrs_edge.rerank.evidence import fuse_zscore, zscore

    x = np.array([[0.01, 5.0], [0.02, 7.0], [0.06, 9.0]])  # small spread, non-zero means
    z = zscore(x, 0)
    np.testing.assert_allclose(z.mean(0), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(z.std(0), [1.0, 1.0])
    np.testing.assert_allclose(z[:, 1], [-1.224744871, 0.0, 1.224744871])
    assert zscore(np.array([[1.0, 2.0], [1.0, 3.0]]), 0)[:, 0].tolist() == [0.0, 0.0]
    sims = np.array([0.9, 0.8, 0.7])
    fused = fuse_zscore(sims, x, 0.5, [1.0, 2.0])
    np.testing.assert_allclose(fused, 0.5 * zscore(sims) + z[:, 0] + 2.0 * z[:, 1])


def test_batched_fusions_give_their_defined_scores():
    """linear: g + Σ w_s·s; zscore: back on the similarity scale, mean(g) + std(g) · fused z /
    (global weight + Σ w); evidence: g + weight · evidence of the verified matches over all
    segments (the perfect view: all 64)."""
    from sfrs_edge.rerank.evidence import fuse_zscore, segment_scores

    qf, qxy, cf, cxy, segs = _two_segment_scene()
    sims = np.array([0.7, 0.6, 0.55, 0.5])
    weights = (0.1, 0.15)
    ev = segment_scores(qf, qxy, cf, cxy, segs, "ransac", 0.5, 8.0)
    sc = ev.scores
    for fusion in ("linear", "zscore", "evidence"):
        cfg = RerankConfig(
            k=4,
            scorer="ransac",
            fusion=fusion,
            size_weights=weights,
            global_weight=0.25,
            min_similarity=0.5,
            reproj_px=8.0,
        )
        res = rerank(qf, qxy, cf, cxy, sims, cfg, segs)
        if fusion == "linear":
            want = sims + sc @ weights
        elif fusion == "zscore":
            z = fuse_zscore(sims, sc, 0.25, weights)
            want = sims.mean() + sims.std() * z / 0.5
        else:
            want = fused_scores(sims, ev.verified.sum(1), cfg)
        np.testing.assert_allclose(res.scores, want[res.order], err_msg=fusion)
        assert res.order[0] == 2 and res.inliers[0] == 64 and res.inliers.dtype.kind == "i"


def test_zscore_fusion_of_two_candidates_promotes_the_verified_one():
    qf, qxy, cf, cxy, segs = _two_segment_scene()
    cfg = RerankConfig(k=2, scorer="count", fusion="zscore", min_similarity=0.5)
    res = rerank(qf, qxy, cf[1:3], cxy[1:3], np.array([0.6, 0.55]), cfg, segs)
    assert res.order.tolist() == [1, 0] and res.scores[0] > res.scores[1]


def test_whole_segment_infers_each_axis_on_its_own():
    from sfrs_edge.rerank.stage import whole_segment

    xs, ys = np.meshgrid(np.arange(5) * 24.0 + 12, np.arange(3) * 40.0 + 20)
    seg = whole_segment(np.stack([xs.ravel(), ys.ravel()], 1))
    assert (seg.start, seg.stop, seg.grid, seg.step_px) == (0, 15, (3, 5), (24.0, 40.0))
    row = whole_segment(np.array([[8.0, 30.0], [40.0, 30.0], [72.0, 30.0]]))
    assert row.grid == (1, 3) and row.step_px[0] == 32.0  # one row: no y spacing to read
    assert whole_segment(np.zeros((0, 2))).grid == (1, 1)  # no local features at all


def test_translation_inliers_count_matches_one_shift_explains():
    """Verified matches of the spatial scorer: those within the tolerance of the mean shift."""
    from sfrs_edge.rerank.evidence import Matches, translation_inliers

    qxy = np.array([[0, 0], [100, 0], [0, 100], [100, 100], [50, 50]], np.float32)
    shifted = qxy + np.array([10.0, -5.0], np.float32)
    shifted[4] += 200.0  # one wild match
    cxy = np.stack([shifted, shifted])
    ok = np.ones((2, 5), bool)
    ok[1, [0, 4]] = False  # candidate 1: three good matches, no wild one
    m = Matches(np.tile(np.arange(5), (2, 1)), ok, np.ones((2, 5), np.float32))
    assert translation_inliers(qxy, cxy, m, 60.0).tolist() == [4, 3]
    assert translation_inliers(qxy, cxy, m, 50.0).tolist() == [0, 3]  # 56.6 px off the mean
    assert translation_inliers(qxy, cxy, m, 1.0).tolist() == [0, 3]  # the wild one drags the mean
    none = Matches(m.index, np.zeros((2, 5), bool), m.similarity)
    assert translation_inliers(qxy, cxy, none, 60.0).tolist() == [0, 0]


def test_rule_names_the_fusion_the_order_comes_from():
    assert (
        RerankConfig(fusion="evidence", weight=0.3).rule() == "score = similarity + 0.3 x evidence"
    )
    assert "z(similarity)" in RerankConfig().rule() and "spatial" in RerankConfig().rule()
    assert "ransac" in RerankConfig(fusion="linear", scorer="ransac").rule()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size_weights": (0.0, 1.0)},  # a size may be switched off
        {"global_weight": 0.0},
        {"min_inliers": 0},
        {"reproj_px": 0.5},
        {"weight": 0.0},
        {"k": 1},
        {"margin": 1e-6},
    ],
)
def test_config_accepts_its_boundary_values(kwargs):
    cfg = RerankConfig(**kwargs)
    for key, value in kwargs.items():
        assert getattr(cfg, key) == value


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size_weights": (-0.5,)}, "size_weights and global_weight must not be negative"),
        ({"global_weight": -1.0}, "size_weights and global_weight must not be negative"),
        ({"k": 0}, "re-ranking needs k >= 1 candidates, got 0"),
        ({"min_inliers": -1}, "need 0 <= min_inliers < full_inliers"),
        ({"reproj_px": 0.0}, "reproj_px must be positive and weight not negative"),
        ({"weight": -0.1}, "reproj_px must be positive and weight not negative"),
        ({"fusion": "max"}, "fusion must be one of"),
        ({"geometry": "affine"}, "geometry must be one of"),
        ({"margin": -0.1}, "margin must be positive"),
    ],
)
def test_config_errors_say_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RerankConfig(**kwargs)


def test_config_keeps_size_weights_as_a_tuple_of_floats():
    cfg = RerankConfig(size_weights=[1, 0.5])  # JSON gives lists of ints
    assert cfg.size_weights == (1.0, 0.5) and all(type(w) is float for w in cfg.size_weights)
    assert cfg.to_dict()["size_weights"] == (1.0, 0.5)
    assert RerankConfig(fusion="linear").rule() == "score = similarity + weighted spatial scores"


def test_verified_confidence_is_the_answer_minus_the_best_rival_elsewhere():
    """``near`` may come as 0/1 ints (a mask, not indices); with no candidate elsewhere the
    answer's own evidence is the confidence; it never leaves [0, 1]."""
    from sfrs_edge.estimate import verified_confidence

    assert verified_confidence([0.9, 0.6, 0.1], [1, 1, 0]) == pytest.approx(0.8)
    assert verified_confidence(np.array([0.9, 0.6, 0.1]), np.array([True, False, False])) == (
        pytest.approx(0.3)
    )
    assert verified_confidence([0.7], [1]) == pytest.approx(0.7)  # no rival place at all
    assert verified_confidence([0.2, 0.9], [1, 0]) == 0.0  # a rival with more evidence


def test_fused_rule_in_words_names_its_scale():
    cfg = RerankConfig(global_weight=0.5)
    assert cfg.rule() == (
        "score = 0.5 x z(similarity) + weighted z(spatial scores), on the similarity scale"
    )


def test_segments_follow_each_other_in_the_model_outputs():
    """Each patch size's rows start where the previous size's end; grid and pixel step kept."""
    segs = Segment.from_info(
        [
            {"size": 2, "count": 6, "grid": [2, 3], "step_px": [16, 8]},
            {"size": 5, "count": 4, "grid": [2, 2], "step_px": [32.5, 16]},
            {"size": 8, "count": 1, "grid": [1, 1], "step_px": [64, 64]},
        ]
    )
    assert [(s.start, s.stop) for s in segs] == [(0, 6), (6, 10), (10, 11)]
    assert segs[0].grid == (2, 3) and segs[1].step_px == (32.5, 16.0)
    assert all(isinstance(v, float) for v in segs[0].step_px)


def test_matching_degenerate_inputs_gives_no_evidence():
    """No features, or points no model can be fitted to (all at one pixel), count nothing;
    the empty match list still indexes point arrays (integer pairs)."""
    q = unit(np.random.default_rng(0).normal(size=(5, 8))).astype(np.float32)
    pairs, sims = mutual_matches(q, np.zeros((0, 8), np.float32), 0.5)
    assert pairs.shape == (0, 2) and pairs.dtype == np.int64 and sims.dtype == np.float32
    assert np.zeros((5, 2))[pairs[:, 0]].shape == (0, 2)
    same = np.full((12, 2), 50.0, np.float32)
    for geometry in ("homography", "similarity", "fundamental"):
        assert count_inliers(same, same + 3.0, geometry, 3.0) == 0, geometry


# --- the stage: when it runs, what it says, what it reads -------------------------------------


class _Unmatched:
    """A map whose stored local features match nothing (zeros: finite, of the right shape)."""

    def extra_rows(self, name, ids):
        width = 16 if name == "local_features" else 2
        return np.zeros((len(ids), 8, width), np.float32)


def test_reranking_without_any_evidence_says_so_once(caplog):
    """A run whose frames never find verified evidence (broken or foreign local features)
    warns once, after NO_EVIDENCE_FRAMES frames, naming the check to run; a run with evidence
    in some frame never warns."""
    import logging

    from sfrs_edge.rerank.stage import NO_EVIDENCE_FRAMES, RerankStage

    stage = RerankStage(RerankConfig(k=3), _Unmatched())
    rng = np.random.default_rng(0)
    outputs = {
        "local_features": rng.normal(size=(8, 16)).astype(np.float32),
        "local_xy": rng.uniform(0, 50, (8, 2)).astype(np.float32),
    }
    ids, sims = np.arange(5), np.linspace(0.9, 0.5, 5)
    with caplog.at_level(logging.WARNING, logger="sfrs_edge.rerank.stage"):
        for _ in range(NO_EVIDENCE_FRAMES - 1):
            stage.apply(outputs, ids, sims)
        assert not caplog.records and stage.frames == NO_EVIDENCE_FRAMES - 1
        for _ in range(3 * NO_EVIDENCE_FRAMES):
            new_ids, _, _ = stage.apply(outputs, ids, sims)
    assert stage.frames == 4 * NO_EVIDENCE_FRAMES - 1 and stage.frames_with_evidence == 0
    assert [r.getMessage() for r in caplog.records] == [
        f"re-ranking found no verified local evidence for any candidate in {NO_EVIDENCE_FRAMES} "
        "frames: the map's local features may be damaged or from another model (check it with "
        "`sfrs-edge map verify`); answers keep the global order"
    ]
    assert list(new_ids) == list(ids)  # the global order stands
    caplog.clear()
    outputs, stored = aligned_scene()
    seen = RerankStage(RerankConfig(k=4), stored)
    with caplog.at_level(logging.WARNING, logger="sfrs_edge.rerank.stage"):
        for _ in range(2 * NO_EVIDENCE_FRAMES):
            seen.apply(outputs, np.array([5, 9, 2, 7]), np.array([0.6, 0.58, 0.57, 0.55]))
    assert seen.frames_with_evidence == seen.frames == 2 * NO_EVIDENCE_FRAMES
    assert not caplog.records


class _Engine:
    """What the stage reads of an engine: its path, local-head metadata and outputs."""

    def __init__(self, local=None, outputs=("local_features", "local_xy")) -> None:
        from pathlib import Path
        from types import SimpleNamespace

        self.path = Path("models/walk.onnx")
        self.info = SimpleNamespace(local=local)
        self.extra_outputs = tuple(outputs)


class _StoredMap:
    """What the stage reads of a map: path, extras, manifest (model info, history)."""

    def __init__(self, extras=("local_features", "local_xy"), fingerprint="abc", history=None):
        self.path = "maps/walk"
        self.extras = tuple(extras)
        self.manifest = {
            "model": {"info": {"local": {"fingerprint": fingerprint}}},
            "history": history
            if history is not None
            else [
                {"op": "add", "source": "data/later"},
                {"op": "build", "source": "data/walk"},
            ],
        }


def test_why_not_names_what_is_missing_and_the_commands_that_fix_it():
    from sfrs_edge.rerank.stage import why_not

    local = {"fingerprint": "abc", "segments": None}
    rebuild = "`sfrs-edge map build data/walk --model models/walk.onnx -o maps/walk`"
    assert why_not(_Engine(local), _StoredMap()) is None
    no_head = (
        "walk.onnx emits no local features; two steps make re-ranking run: re-export the model "
        "with local features (`sfrs-edge export --rerank -o models/walk.onnx`), then rebuild "
        f"the map with it ({rebuild}: the map must store that model's features)"
    )
    assert why_not(_Engine(None), _StoredMap()) == no_head
    assert why_not(_Engine(local, outputs=("local_xy",)), _StoredMap()) == no_head
    assert why_not(_Engine(local), _StoredMap(extras=("local_features",))) == (
        f"map maps/walk stores no local features; rebuild it with this model: {rebuild}"
    )
    assert why_not(_Engine(local), _StoredMap(fingerprint="old")) == (
        "map maps/walk holds local features of another local head (old, the model's is abc); "
        f"rebuild the map with this model: {rebuild}"
    )


def test_rebuild_command_without_a_build_record_or_a_path():
    """A map with no recorded build source (or no manifest at all) names placeholders the
    user fills in, instead of failing to say anything."""
    from types import SimpleNamespace

    from sfrs_edge.rerank.stage import map_local_fingerprint, rebuild_command

    engine = _Engine({"fingerprint": "abc"})
    added_only = _StoredMap(history=[{"op": "add", "source": "data/later"}, {"op": "build"}])
    assert rebuild_command(engine, added_only) == (
        "`sfrs-edge map build IMAGES --model models/walk.onnx -o maps/walk`"
    )
    bare = SimpleNamespace()
    assert rebuild_command(engine, bare) == (
        "`sfrs-edge map build IMAGES --model models/walk.onnx -o MAP`"
    )
    assert map_local_fingerprint(bare) is None
    assert map_local_fingerprint(SimpleNamespace(manifest={"model": {}})) is None
    assert map_local_fingerprint(_StoredMap(fingerprint="f00")) == "f00"


def test_stage_create_runs_or_says_why_not(caplog):
    import logging

    from sfrs_edge.rerank.stage import RerankStage

    segments = [{"size": 1, "count": 4, "grid": [2, 2], "step_px": [8, 8]}]
    made = RerankStage.create(
        _Engine({"fingerprint": "abc", "segments": segments}), _StoredMap(), RerankConfig()
    )
    assert made.segments == [Segment(0, 4, (2, 2), (8.0, 8.0))]
    plain = RerankStage.create(_Engine({"fingerprint": "abc"}), _StoredMap(), RerankConfig())
    assert plain is not None and plain.segments is None  # one segment over all features
    with caplog.at_level(logging.WARNING, logger="sfrs_edge.rerank.stage"):
        off = RerankStage.create(_Engine(None), _StoredMap(), RerankConfig())
    assert off is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(
        "re-ranking off, answering from the global descriptor only: walk.onnx emits no local"
    )
    with pytest.raises(ConfigError, match="unknown re-ranking scorer 'sift'; known: "):
        RerankStage.create(_Engine(None), _StoredMap(), RerankConfig(scorer="sift"))


def test_stage_reads_rows_from_a_map_without_row_reads():
    """A map object that only offers whole extra arrays still gives each candidate its row."""
    from sfrs_edge.rerank.stage import RerankStage

    class WholeArrays:
        def __init__(self) -> None:
            self.arrays = {
                "local_features": np.arange(24, dtype=np.float32).reshape(3, 4, 2),
                "local_xy": np.arange(24, dtype=np.float32).reshape(3, 4, 2) * 10,
            }

        def extra(self, name):
            return self.arrays[name]

    stage = RerankStage(RerankConfig(), WholeArrays())
    got = stage._rows("local_xy", np.array([2, 0]))
    assert got.tolist() == (np.arange(24).reshape(3, 4, 2)[[2, 0]] * 10).tolist()


def test_ties_after_fusion_keep_the_global_order(monkeypatch):
    """Candidates whose fused scores tie keep their global rank order (a stable sort), here
    with 21 candidates and ties in an interleaved pattern."""
    from sfrs_edge.rerank import stage

    monkeypatch.setattr(stage, "SCORERS", dict(stage.SCORERS))
    lit = [1, 1, 0, 1, 0, 0, 1] * 3

    @stage.scorer("pattern")
    def pattern(qf, qxy, cf, cxy, config):
        return 0, 40 if cf[0, 0] == 1 else 0

    feats = np.stack([np.full((3, 2), v, np.float32) for v in lit])
    xy = np.zeros((21, 3, 2), np.float32)
    cfg = RerankConfig(k=21, scorer="pattern", fusion="evidence")
    res = rerank(feats[0], xy[0], feats, xy, np.full(21, 0.5), cfg)
    with_evidence = [i for i, v in enumerate(lit) if v]
    assert res.order.tolist() == with_evidence + [i for i, v in enumerate(lit) if not v]


def test_translation_inliers_count_one_match_and_the_tolerance_itself():
    """A candidate with one match has that match at its own mean displacement (1 verified);
    a match exactly ``tolerance_px`` from the mean is within it."""
    from sfrs_edge.rerank.evidence import Matches, translation_inliers

    qxy = np.array([[100.0, 100.0], [300.0, 100.0]], np.float32)
    one = np.array([[[0.0, 100.0], [0.0, 0.0]]], np.float32)  # only the first, 100 px off
    m1 = Matches(np.array([[0, 1]]), np.array([[True, False]]), np.ones((1, 2), np.float32))
    assert translation_inliers(qxy, one, m1, 24.0).tolist() == [1]
    # displacements (0, 0) and (48, 0): the mean (24, 0) is 24 px from each
    two = np.array([[[100.0, 100.0], [252.0, 100.0]]], np.float32)
    m2 = Matches(np.array([[0, 1]]), np.ones((1, 2), bool), np.ones((1, 2), np.float32))
    assert translation_inliers(qxy, two, m2, 24.0).tolist() == [2]
    assert translation_inliers(qxy, two, m2, 23.9).tolist() == [0]
    assert translation_inliers(qxy, two, m2, 24.0).dtype == np.int64


@pytest.mark.parametrize("scorer", ["spatial", "ransac", "inliers"])
def test_rerank_counts_are_integers(scorer):
    """Match and inlier counts stay integers (they are printed and compared as counts)."""
    qf, qxy, cf, cxy, segs = _two_segment_scene()
    res = rerank(qf, qxy, cf, cxy, np.array([0.7, 0.6, 0.55, 0.5]), RerankConfig(scorer=scorer))
    assert res.matches.dtype.kind == "i" and res.inliers.dtype.kind == "i"
    assert res.matches.max() >= res.inliers.max() > 0


def test_margin_with_two_candidates_and_the_stage_segments():
    """With a margin, two candidates with a clear gap keep the global order (no re-ranking);
    the stage scores with the model's own segments, not one inferred from the coordinates."""
    from sfrs_edge.rerank import RerankStage

    outputs, stored = aligned_scene()
    stage = RerankStage(RerankConfig(k=4, margin=0.05), stored)
    assert stage.apply(outputs, np.array([5, 9]), np.array([0.7, 0.6]))[2] is None
    assert stage.apply(outputs, np.array([5, 9]), np.array([0.7, 0.68]))[2] is not None
    assert stage.ambiguous(np.array([0.7]))
    qf, qxy, cf, cxy, segs = _two_segment_scene()
    rows = {i: (cf[i], cxy[i]) for i in range(4)}
    sims = np.array([0.7, 0.6, 0.55, 0.5])
    cfg = RerankConfig(k=4, fusion="linear")
    with_segs = RerankStage(cfg, StoredFeatures(rows), segs)
    got = with_segs.apply({"local_features": qf, "local_xy": qxy}, np.arange(4), sims)[2]
    want = rerank(qf, qxy, cf, cxy, sims, cfg, segs)
    inferred = rerank(qf, qxy, cf, cxy, sims, cfg)
    assert got.scores.tolist() == want.scores.tolist() != inferred.scores.tolist()


def test_whole_segment_of_one_row_of_features():
    """Features on one image row: the row spacing is unknown, one pixel stands for it."""
    from sfrs_edge.rerank.stage import whole_segment

    xy = np.array([[16.0, 40.0], [48.0, 40.0], [80.0, 40.0]])
    seg = whole_segment(xy)
    assert seg.step_px == (32.0, 1.0) and seg.grid == (1, 3) and (seg.start, seg.stop) == (0, 3)


def test_unknown_scorer_lists_every_known_one():
    from sfrs_edge.rerank.stage import get_scorer

    with pytest.raises(ConfigError) as err:
        get_scorer("sift")
    assert str(err.value) == (
        "unknown re-ranking scorer 'sift'; known: count, inliers, magsac, ransac, spatial"
    )


def test_count_inliers_similarity_geometry():
    """Rotation, scale and translation: the consistent matches are inliers, a homography-only
    (perspective) view is not a similarity, and fewer than three points count nothing."""
    rng = np.random.default_rng(5)
    a = rng.uniform(0, 600, size=(60, 2)).astype(np.float32)
    angle = np.deg2rad(10.0)
    rot = 1.2 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    b = (a @ rot.T + np.array([15.0, -40.0])).astype(np.float32)
    b[:12] = rng.uniform(0, 600, size=(12, 2))  # 12 outliers
    assert 46 <= count_inliers(a, b, "similarity", 3.0) <= 49
    persp = np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.002, 0.0, 1.0]])
    h = np.c_[a, np.ones(60)] @ persp.T
    bent = (h[:, :2] / h[:, 2:]).astype(np.float32)
    assert count_inliers(a, bent, "similarity", 3.0) < count_inliers(a, bent, "homography", 3.0)
    assert count_inliers(a[:2], b[:2], "similarity", 3.0) == 0
