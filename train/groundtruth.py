"""Weak GPS ground truth by radius (docs/DESIGN.md §5.3), in the dataset's position units."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sfrs_edge.errors import ConfigError
from sfrs_edge.recall import radius_positives

from .datasets import PlaceSet

log = logging.getLogger(__name__)


@dataclass
class TrainGroundTruth:
    """Per kept query: positives (≤ pos radius) and non-negatives (≤ non-negative radius)."""

    places: PlaceSet  # queries without a positive already removed
    positives: list[np.ndarray]
    nonnegatives: list[np.ndarray]
    dropped: int


def training_ground_truth(
    places: PlaceSet, pos_radius: float, nonneg_radius: float
) -> TrainGroundTruth:
    """Training positives and non-negatives; queries with no positive are dropped (count logged)."""
    pos = radius_positives(places.query_pos, places.db_pos, pos_radius)
    keep = np.array([i for i, p in enumerate(pos) if len(p)], dtype=int)
    dropped = places.num_queries - len(keep)
    if dropped:
        log.info(
            "%s: dropped %d of %d queries without a positive within %g",
            places.name,
            dropped,
            places.num_queries,
            pos_radius,
        )
    if not len(keep):
        raise ConfigError(f"{places.name}: no query has a database image within {pos_radius:g}")
    kept = places.subset_queries(keep)
    nonneg = radius_positives(kept.query_pos, kept.db_pos, nonneg_radius)
    if any(len(n) == kept.num_db for n in nonneg):
        raise ConfigError(
            f"{places.name}: some query has no negative (every database image within "
            f"{nonneg_radius:g}); use a smaller --nonneg-radius"
        )
    return TrainGroundTruth(kept, [pos[i] for i in keep], nonneg, dropped)


def eval_positives(places: PlaceSet, radius: float) -> list[np.ndarray]:
    """Evaluation positives (≤ eval radius); every query must have one."""
    pos = radius_positives(places.query_pos, places.db_pos, radius)
    missing = sum(1 for p in pos if not len(p))
    if missing:
        raise ConfigError(
            f"{places.name}: {missing} evaluation queries have no database image within "
            f"{radius:g}; use a larger --eval-radius"
        )
    return pos
