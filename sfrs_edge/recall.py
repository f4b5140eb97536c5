"""Recall@N and ground truth for place recognition (pure numpy; training imports it too)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def index_window_positives(num_queries: int, num_db: int, tolerance: int) -> list[np.ndarray]:
    """Positives for index-aligned traversals: query i matches db j when |i − j| ≤ tolerance."""
    return [
        np.arange(max(0, i - tolerance), min(num_db, i + tolerance + 1)) for i in range(num_queries)
    ]


def radius_positives(query_pos: np.ndarray, db_pos: np.ndarray, radius: float) -> list[np.ndarray]:
    """Positives by distance: db images within ``radius`` of each query (any-dim positions)."""
    q = np.asarray(query_pos, dtype=np.float64).reshape(len(query_pos), -1)
    d = np.asarray(db_pos, dtype=np.float64).reshape(len(db_pos), -1)
    out = []
    for row in q:
        dist = np.sqrt(((d - row) ** 2).sum(axis=1))
        out.append(np.flatnonzero(dist <= radius))
    return out


def rank_database(query_desc: np.ndarray, db_desc: np.ndarray, k: int) -> np.ndarray:
    """Top-k database indices per query by inner product (= cosine on unit vectors): the
    runtime's exact search (:func:`sfrs_edge.maps.index.top_k`), k capped at the database."""
    from .maps.index import top_k

    sims = np.asarray(query_desc, np.float32) @ np.asarray(db_desc, np.float32).T
    return top_k(sims, k)[0]


def recall_at_n(
    ranked: np.ndarray, positives: Sequence[np.ndarray], ns: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Percentage of queries with at least one positive among the first N retrieved."""
    ranked = np.asarray(ranked)
    if len(ranked) != len(positives):
        raise ValueError(f"{len(ranked)} ranked lists for {len(positives)} queries")
    hits = np.array([np.isin(r, p) for r, p in zip(ranked, positives, strict=True)])
    out = {}
    for n in ns:
        out[n] = 100.0 * float(hits[:, :n].any(axis=1).mean()) if len(hits) else 0.0
    return out
