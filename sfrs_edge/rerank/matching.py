"""Mutual nearest-neighbour matching of two local feature sets."""

from __future__ import annotations

import numpy as np


def mutual_matches(
    query: np.ndarray, candidate: np.ndarray, min_similarity: float
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (M, 2) of mutual nearest neighbours with cosine ≥ ``min_similarity``, and
    their similarities (M,). Inputs: L2-normalised (P, D) and (Q, D) descriptors (any float)."""
    sims = np.asarray(query, np.float32) @ np.asarray(candidate, np.float32).T
    if sims.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    fwd = sims.argmax(axis=1)
    back = sims.argmax(axis=0)
    rows = np.arange(len(sims))
    keep = (back[fwd] == rows) & (sims[rows, fwd] >= min_similarity)
    pairs = np.stack([rows[keep], fwd[keep]], axis=1)
    return pairs, sims[rows[keep], fwd[keep]]
