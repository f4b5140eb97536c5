"""Distances between map positions: great-circle metres for lat/lon, Euclidean otherwise.

One home for the geography the localizer (which candidates are at the same place) and the
evaluation (which map places are right for a query) both rely on.
"""

from __future__ import annotations

import math

import numpy as np

EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), metres


def haversine_m(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between (n, 2) lat/lon rows ``a`` and one lat/lon ``b``."""
    lat1, lon1 = np.radians(a[:, 0]), np.radians(a[:, 1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (
        np.sin((lat1 - lat2) / 2) ** 2
        + np.cos(lat1) * math.cos(lat2) * np.sin((lon1 - lon2) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def distances(points: np.ndarray, ref: np.ndarray, kind: str | None) -> np.ndarray:
    """Distance from each of the (n, d) ``points`` to the position ``ref``: metres when ``kind``
    is ``latlon``, else Euclidean over the dimensions both have (an x/y query against an x/y/z
    map compares x/y). NaN where a point's position is unknown."""
    points = np.asarray(points, np.float64)
    ref = np.asarray(ref, np.float64)
    if kind == "latlon":
        return haversine_m(points, ref)
    d = min(len(ref), points.shape[1])
    return np.sqrt(((points[:, :d] - ref[:d]) ** 2).sum(axis=1))
