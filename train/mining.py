"""SFRS tuple mining (docs/DESIGN.md §5.3) on descriptors from the current student.

Per anchor query: the best positive p* (nearest GPS positive in feature space), the hardest
negatives from a random pool of negatives ∪ the query's previous negatives, and the top-k
"difficult" positives for the soft loss. Pure numpy: descriptors in, indices out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .groundtruth import TrainGroundTruth


@dataclass
class Tuple:
    """Indices of one training tuple: query index and database indices."""

    query: int
    positive: int
    negatives: np.ndarray
    difficult: np.ndarray


class NegativeCache:
    """Each query's negatives from its previous visit (persists across chunks/epochs/gens)."""

    def __init__(self) -> None:
        self.data: dict[int, np.ndarray] = {}

    def get(self, q: int) -> np.ndarray:
        return self.data.get(q, np.zeros(0, dtype=np.int64))

    def put(self, q: int, negatives: np.ndarray) -> None:
        self.data[q] = np.asarray(negatives, dtype=np.int64)

    def state_dict(self) -> dict[int, list[int]]:
        return {int(k): [int(x) for x in v] for k, v in self.data.items()}

    def load_state_dict(self, state: dict) -> None:
        self.data = {int(k): np.asarray(v, dtype=np.int64) for k, v in state.items()}


def reorder_by_rank_gap(candidates: np.ndarray, other_distance: np.ndarray) -> np.ndarray:
    """Re-rank ``candidates`` (sorted by feature distance) by ``other_distance`` (e.g. Jaccard);
    keep those that moved up (largest move first), then those that stayed; drop those that fell."""
    new_rank = np.empty(len(candidates), dtype=np.int64)
    new_rank[np.argsort(other_distance, kind="stable")] = np.arange(len(candidates))
    gap = new_rank - np.arange(len(candidates))
    up = np.flatnonzero(gap < 0)
    up = up[np.argsort(gap[up], kind="stable")]
    same = np.flatnonzero(gap == 0)
    return candidates[np.concatenate([up, same])]


def mine_tuple(
    q: int,
    sims: np.ndarray,
    gt: TrainGroundTruth,
    cache: NegativeCache,
    rng: np.random.Generator,
    neg_num: int,
    neg_pool: int,
    pos_num: int,
    pos_pool: int,
    other_distance: np.ndarray | None = None,
) -> Tuple:
    """Mine one tuple for query ``q`` from its similarity row ``sims`` (q · every db image)."""
    positives = gt.positives[q]
    pos_sorted = positives[np.argsort(-sims[positives], kind="stable")]
    best = int(pos_sorted[0])
    # negatives: a random pool of non-"non-negatives" ∪ previous negatives, hardest first
    is_neg = np.ones(len(sims), dtype=bool)
    is_neg[gt.nonnegatives[q]] = False
    candidates = np.flatnonzero(is_neg)
    pool = rng.choice(candidates, size=min(neg_pool, len(candidates)), replace=False)
    pool = np.union1d(pool, cache.get(q)).astype(np.int64)
    negatives = pool[np.argsort(-sims[pool], kind="stable")][:neg_num]
    cache.put(q, negatives)
    # difficult positives: the pos_pool nearest GPS positives, optionally re-ranked
    near = pos_sorted[:pos_pool]
    if other_distance is not None:
        near = reorder_by_rank_gap(near, other_distance[near])
    return Tuple(q, best, negatives, near[:pos_num].astype(np.int64))


def mine_chunk(
    queries: np.ndarray,
    q_desc: np.ndarray,
    db_desc: np.ndarray,
    gt: TrainGroundTruth,
    cache: NegativeCache,
    rng: np.random.Generator,
    neg_num: int = 10,
    neg_pool: int = 1000,
    pos_num: int = 10,
    pos_pool: int = 20,
) -> list[Tuple]:
    """Tuples for a chunk of query indices from L2-normalised descriptors (dot = −½‖·‖² + 1)."""
    sims = np.asarray(q_desc[queries], np.float32) @ np.asarray(db_desc, np.float32).T
    return [
        mine_tuple(int(q), row, gt, cache, rng, neg_num, neg_pool, pos_num, pos_pool)
        for q, row in zip(queries, sims, strict=True)
    ]
