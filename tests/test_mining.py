"""Tuple mining (docs/DESIGN.md §5.3) and radius ground truth on synthetic 1-D positions."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from sfrs_edge.train.datasets import PlaceSet
from sfrs_edge.train.groundtruth import eval_positives, training_ground_truth
from sfrs_edge.train.mining import NegativeCache, mine_chunk, mine_tuple, reorder_by_rank_gap


def places(nq=30, ndb=60, seed=0):
    rng = np.random.default_rng(seed)
    return PlaceSet(
        "synthetic",
        [Path(f"q{i}.jpg") for i in range(nq)],
        rng.uniform(0, 100, nq),
        [Path(f"d{i}.jpg") for i in range(ndb)],
        np.linspace(0, 100, ndb),
    )


def unit_rows(n, d, rng):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ground_truth_drops_queries_without_positive(caplog):
    ps = places()
    ps.query_pos[:3] = 500.0  # far from every database image
    with caplog.at_level(logging.INFO, logger="sfrs_edge.train"):
        gt = training_ground_truth(ps, pos_radius=3, nonneg_radius=8)
    assert gt.dropped == 3
    assert gt.places.num_queries == 27
    assert "dropped 3 of 30 queries" in caplog.text
    for qpos, pos, nonneg in zip(gt.places.query_pos, gt.positives, gt.nonnegatives, strict=True):
        d = np.abs(gt.places.db_pos[:, 0] - qpos[0])
        assert set(pos) == set(np.flatnonzero(d <= 3))
        assert set(nonneg) == set(np.flatnonzero(d <= 8))


def test_eval_positives_require_one_each():
    ps = places()
    ps.query_pos[0] = 500.0
    with pytest.raises(Exception, match="no database image within"):
        eval_positives(ps, 3)


@pytest.mark.parametrize("seed", range(5))
def test_mining_never_returns_negative_within_nonnegative_radius(seed):
    rng = np.random.default_rng(seed)
    gt = training_ground_truth(places(seed=seed), pos_radius=4, nonneg_radius=10)
    ps = gt.places
    q_desc, db_desc = unit_rows(ps.num_queries, 16, rng), unit_rows(ps.num_db, 16, rng)
    cache = NegativeCache()
    for _ in range(3):  # repeated visits use the negative cache
        tuples = mine_chunk(np.arange(ps.num_queries), q_desc, db_desc, gt, cache, rng, 5, 12, 3, 6)
        for t in tuples:
            d = np.abs(ps.db_pos[:, 0] - ps.query_pos[t.query, 0])
            assert (d[t.negatives] > 10).all()
            assert len(t.negatives) == 5 and len(set(t.negatives)) == 5
            assert d[t.positive] <= 4
            assert (d[t.difficult] <= 4).all()
            sims = db_desc @ q_desc[t.query]
            pos = gt.positives[t.query]
            assert t.positive == pos[np.argmax(sims[pos])]  # best positive in feature space
            # difficult positives: the nearest GPS positives by feature similarity
            expected = pos[np.argsort(-sims[pos], kind="stable")][:3]
            assert list(t.difficult) == list(expected)
            assert (np.diff(sims[t.negatives]) <= 1e-7).all()  # hardest first


def test_negative_cache_keeps_previous_hard_negatives():
    rng = np.random.default_rng(0)
    gt = training_ground_truth(places(), pos_radius=4, nonneg_radius=10)
    ps = gt.places
    q_desc, db_desc = unit_rows(ps.num_queries, 16, rng), unit_rows(ps.num_db, 16, rng)
    sims = db_desc @ q_desc[0]
    is_neg = np.ones(ps.num_db, bool)
    is_neg[gt.nonnegatives[0]] = False
    hardest = np.flatnonzero(is_neg)[np.argsort(-sims[is_neg])][:2]
    cache = NegativeCache()
    cache.put(0, hardest)
    # a pool of a single random negative: the cached ones must still be found
    t = mine_tuple(0, sims, gt, cache, rng, neg_num=2, neg_pool=1, pos_num=2, pos_pool=4)
    assert sorted(t.negatives) == sorted(hardest)
    state = cache.state_dict()
    other = NegativeCache()
    other.load_state_dict(state)
    assert list(other.get(0)) == list(cache.get(0))


def test_reorder_by_rank_gap():
    cands = np.array([10, 11, 12, 13])
    # other distance ranks: 12 first (moved up 2), 10 second (down 1), 11 third (down 1), 13 same
    other = np.array([0.2, 0.3, 0.1, 0.9])
    assert list(reorder_by_rank_gap(cands, other)) == [12, 13]
    assert list(reorder_by_rank_gap(cands, np.arange(4.0))) == [10, 11, 12, 13]
