"""Local matches between a query and one candidate: mutual nearest neighbours, then the pairs
one geometric model (homography / similarity / fundamental matrix, OpenCV RANSAC) explains."""

from __future__ import annotations

import cv2
import numpy as np

MIN_POINTS = {"homography": 4, "fundamental": 8, "similarity": 3}
CONFIDENCE = 0.99
# Bounded: a wrong candidate (mostly outliers) runs every iteration; 500 cost 7.5 ms CPU for
# a homography on 40 points here, and the query-time budget is milliseconds per candidate.
MAX_ITERS = {"homography": 100, "fundamental": 100, "similarity": 100}


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
    iters = MAX_ITERS[geometry]
    if geometry == "homography":
        _, mask = cv2.findHomography(
            a, b, cv2.RANSAC, reproj_px, maxIters=iters, confidence=CONFIDENCE
        )
    elif geometry == "similarity":  # rotation, scale, translation: 2-point samples
        _, mask = cv2.estimateAffinePartial2D(
            a,
            b,
            method=cv2.RANSAC,
            ransacReprojThreshold=reproj_px,
            maxIters=iters,
            confidence=CONFIDENCE,
        )
    else:
        _, mask = cv2.findFundamentalMat(a, b, cv2.FM_RANSAC, reproj_px, CONFIDENCE, iters)
    return 0 if mask is None else int(mask.sum())
