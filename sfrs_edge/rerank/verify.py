"""Geometric verification: how many matches one homography / fundamental matrix explains."""

from __future__ import annotations

import cv2
import numpy as np

MIN_POINTS = {"homography": 4, "fundamental": 8}
CONFIDENCE = 0.99
MAX_ITERS = 500  # bounded: the query-time budget is milliseconds per candidate


def count_inliers(
    xy_query: np.ndarray, xy_candidate: np.ndarray, geometry: str, reproj_px: float
) -> int:
    """Inlier count of matched points (M, 2) under ``geometry`` (``none``: all matches)."""
    m = len(xy_query)
    if geometry == "none":
        return m
    if m < MIN_POINTS[geometry]:
        return 0
    a = np.ascontiguousarray(xy_query, np.float32)
    b = np.ascontiguousarray(xy_candidate, np.float32)
    if geometry == "homography":
        _, mask = cv2.findHomography(
            a, b, cv2.RANSAC, reproj_px, maxIters=MAX_ITERS, confidence=CONFIDENCE
        )
    else:
        _, mask = cv2.findFundamentalMat(a, b, cv2.FM_RANSAC, reproj_px, CONFIDENCE, MAX_ITERS)
    return 0 if mask is None else int(mask.sum())
