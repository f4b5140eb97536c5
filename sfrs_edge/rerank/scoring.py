"""Fusing verified local evidence with the global similarity."""

from __future__ import annotations

import numpy as np

from .config import RerankConfig


def evidence(inliers: np.ndarray, config: RerankConfig) -> np.ndarray:
    """Inlier counts mapped to [0, 1]: 0 up to ``min_inliers``, 1 from ``full_inliers``."""
    span = config.full_inliers - config.min_inliers
    return np.clip((np.asarray(inliers, np.float64) - config.min_inliers) / span, 0.0, 1.0)


def fused_scores(similarities: np.ndarray, inliers: np.ndarray, config: RerankConfig) -> np.ndarray:
    """Global similarity + weight · evidence: with no evidence anywhere the global order stands."""
    return np.asarray(similarities, np.float64) + config.weight * evidence(inliers, config)


def verified_confidence(evidence_ranked: np.ndarray, near: np.ndarray) -> float:
    """Confidence of a re-ranked answer: its verified evidence minus the best evidence of a
    candidate at another place (``near``: which candidates, in the new order, are at the
    answer's place; index 0 is the answer). No evidence → 0, whatever the global margin."""
    ev = np.asarray(evidence_ranked, np.float64)
    far = ev[~np.asarray(near, bool)]
    rival = float(far.max()) if len(far) else 0.0
    return float(np.clip(ev[0] - rival, 0.0, 1.0))
