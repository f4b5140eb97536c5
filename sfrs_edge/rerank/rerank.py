"""Re-rank one query's candidates: match, verify, fuse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RerankConfig
from .matching import mutual_matches
from .scoring import evidence, fused_scores
from .verify import count_inliers


@dataclass(frozen=True)
class RerankResult:
    """New order of the candidates (positions into the input arrays) and per-candidate evidence,
    all in the new order."""

    order: np.ndarray
    scores: np.ndarray
    matches: np.ndarray
    inliers: np.ndarray
    evidence: np.ndarray


def rerank(
    query_features: np.ndarray,
    query_xy: np.ndarray,
    candidate_features: np.ndarray,
    candidate_xy: np.ndarray,
    similarities: np.ndarray,
    config: RerankConfig,
) -> RerankResult:
    """Re-rank C candidates given the query's (P, D) features and (P, 2) coordinates, the
    candidates' (C, P, D) and (C, P, 2), and their global similarities (C,)."""
    n = len(similarities)
    matches = np.zeros(n, np.int64)
    inliers = np.zeros(n, np.int64)
    for c in range(n):
        pairs, _ = mutual_matches(query_features, candidate_features[c], config.min_similarity)
        matches[c] = len(pairs)
        if len(pairs) > config.min_inliers:
            inliers[c] = count_inliers(
                query_xy[pairs[:, 0]],
                candidate_xy[c][pairs[:, 1]],
                config.geometry,
                config.reproj_px,
            )
    scores = fused_scores(similarities, inliers, config)
    order = np.argsort(-scores, kind="stable")
    return RerankResult(
        order=order,
        scores=scores[order],
        matches=matches[order],
        inliers=inliers[order],
        evidence=evidence(inliers, config)[order],
    )
