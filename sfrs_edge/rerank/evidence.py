"""Local evidence for all of a query's candidates at once (numpy + OpenCV, no Python loop over
points): batched mutual nearest neighbours per output segment (one per patch size), then a
scorer per segment, then a fusion of the per-segment scores with the global similarity.

Scorers (:data:`SCORERS`), each a (C,) score per segment, larger = more evidence:

- ``ransac`` / ``magsac``: inliers of one homography (``cv2.RANSAC`` with a bounded iteration
  count, or ``cv2.USAC_MAGSAC``) over the mutual matches; the only loop is one OpenCV call per
  candidate and segment;
- ``spatial``: Patch-NetVLAD's *rapid spatial scoring*: the matches' displacements in window
  grid steps, their deviation from the mean displacement d̄, and
  Σ_matches (x_max − |dx − d̄x|)² + (y_max − |dy − d̄y|)² (x_max, y_max: the grid's last column
  and row), divided by x_max² + y_max² (a constant per size: each match adds at most 1),
  fully vectorised;
- ``count``: FoL's score, the number of mutual matches above the similarity threshold.

Every segment's score is divided by the query's number of features in it (Patch-NetVLAD: so
that patch sizes weigh only by their fusion weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

SCORERS = ("ransac", "magsac", "spatial", "count")
RANSAC_CONFIDENCE = 0.99
# Bounded: a wrong candidate (mostly outliers) runs every iteration; 500 cost 7.5 ms CPU for
# a homography on 40 points here, and the query-time budget is milliseconds per candidate.
RANSAC_ITERS = 100
MIN_POINTS = 4  # a homography


@dataclass(frozen=True)
class Segment:
    """One window size's slice of the local outputs: rows [start, stop), its window grid
    (rows, cols) and the pixel size of one grid step (x, y)."""

    start: int
    stop: int
    grid: tuple[int, int]
    step_px: tuple[float, float]

    @classmethod
    def from_info(cls, segments: Sequence[dict]) -> list[Segment]:
        """Segments from a model's ``local`` metadata (``segments``: size, count, grid, step)."""
        out, start = [], 0
        for seg in segments:
            n = int(seg["count"])
            out.append(
                cls(start, start + n, tuple(seg["grid"]), tuple(float(v) for v in seg["step_px"]))
            )
            start += n
        return out


@dataclass(frozen=True)
class Matches:
    """Mutual nearest neighbours of one query segment against C candidates: for query feature
    p, ``index[c, p]`` is its neighbour in candidate c, valid where ``ok[c, p]``."""

    index: np.ndarray  # (C, P) int
    ok: np.ndarray  # (C, P) bool
    similarity: np.ndarray  # (C, P) float32

    @property
    def counts(self) -> np.ndarray:
        return self.ok.sum(1)


def mutual_nn(query: np.ndarray, candidates: np.ndarray, min_similarity: float) -> Matches:
    """Mutual nearest neighbours of (P, D) query features in each of (C, Q, D) candidates'
    (L2-normalised, any float dtype), cosine ≥ ``min_similarity``: one batched matmul."""
    q = np.asarray(query, np.float32)
    c = np.asarray(candidates, np.float32)
    sims = np.matmul(c, q.T)  # C,Q,P
    fwd = sims.argmax(1)  # C,P: best candidate feature of every query feature
    back = sims.argmax(2)  # C,Q: best query feature of every candidate feature
    p = np.arange(q.shape[0])
    mutual = np.take_along_axis(back, fwd, 1) == p
    best = np.take_along_axis(sims, fwd[:, None, :], 1)[:, 0, :]
    return Matches(fwd, mutual & (best >= min_similarity), best)


def _gather(xy: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Candidate xy (C, Q, 2) at (C, P) indices → (C, P, 2)."""
    return np.take_along_axis(xy, index[..., None], 1)


def spatial_scores(
    query_xy: np.ndarray, candidate_xy: np.ndarray, m: Matches, seg: Segment
) -> np.ndarray:
    """Rapid spatial scoring (see the module docstring), (C,), in grid-step units."""
    step = np.asarray(seg.step_px, np.float32)
    d = (np.asarray(query_xy, np.float32)[None] - _gather(candidate_xy, m.index)) / step  # C,P,2
    w = m.ok.astype(np.float32)[..., None]
    n = np.maximum(w.sum(1, keepdims=True), 1.0)
    mean = (d * w).sum(1, keepdims=True) / n
    lim = np.array([seg.grid[1] - 1, seg.grid[0] - 1], np.float32)  # x_max, y_max
    s = ((lim - np.abs(d - mean)) ** 2 * w).sum((1, 2)) / max(float((lim**2).sum()), 1.0)
    return s.astype(np.float64)


def translation_inliers(
    query_xy: np.ndarray, candidate_xy: np.ndarray, m: Matches, tolerance_px: float
) -> np.ndarray:
    """Matches (C,) whose displacement lies within ``tolerance_px`` of the mean displacement of
    the candidate's matches: what the spatial score rewards, counted as verified matches (so
    that evidence and confidence mean "matches one geometry explains" for every scorer)."""
    d = np.asarray(query_xy, np.float32)[None] - _gather(candidate_xy, m.index)  # C,P,2
    w = m.ok.astype(np.float32)[..., None]
    mean = (d * w).sum(1, keepdims=True) / np.maximum(w.sum(1, keepdims=True), 1.0)
    near = np.linalg.norm(d - mean, axis=2) <= tolerance_px
    return (near & m.ok).sum(1).astype(np.int64)


def homography_inliers(
    query_xy: np.ndarray,
    candidate_xy: np.ndarray,
    m: Matches,
    reproj_px: float,
    method: str = "ransac",
    min_matches: int = MIN_POINTS,
) -> np.ndarray:
    """Inliers (C,) of one homography over each candidate's matches (``ransac``: 100-iteration
    ``cv2.RANSAC``; ``magsac``: ``cv2.USAC_MAGSAC``); fewer than ``min_matches`` → 0."""
    flag = cv2.RANSAC if method == "ransac" else cv2.USAC_MAGSAC
    qxy = np.asarray(query_xy, np.float32)
    cxy = _gather(np.asarray(candidate_xy, np.float32), m.index)
    out = np.zeros(len(m.ok), np.int64)
    for c in np.flatnonzero(m.counts >= max(min_matches, MIN_POINTS)):
        keep = m.ok[c]
        a, b = np.ascontiguousarray(qxy[keep]), np.ascontiguousarray(cxy[c][keep])
        _, mask = cv2.findHomography(
            a, b, flag, reproj_px, maxIters=RANSAC_ITERS, confidence=RANSAC_CONFIDENCE
        )
        out[c] = 0 if mask is None else int(mask.sum())
    return out


class SegmentEvidence(NamedTuple):
    """Per candidate and segment (C, S): ``scores`` (the scorer's, divided by the query's
    feature count in the segment), mutual ``matches``, and ``verified`` matches (RANSAC
    inliers; spatial: matches within the threshold of the mean displacement; count: the
    matches counted)."""

    scores: np.ndarray
    matches: np.ndarray
    verified: np.ndarray


def segment_scores(
    query_features: np.ndarray,
    query_xy: np.ndarray,
    candidate_features: np.ndarray,
    candidate_xy: np.ndarray,
    segments: Sequence[Segment],
    scorer: str,
    min_similarity: float,
    reproj_px: float,
    min_matches: int = MIN_POINTS,
) -> SegmentEvidence:
    """Evidence of C candidates for every segment (see :class:`SegmentEvidence`)."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}")  # RerankConfig validated it already
    c = len(candidate_features)
    scores = np.zeros((c, len(segments)))
    counts = np.zeros((c, len(segments)), np.int64)
    verified = np.zeros((c, len(segments)), np.int64)
    for j, seg in enumerate(segments):
        sl = slice(seg.start, seg.stop)
        m = mutual_nn(query_features[sl], candidate_features[:, sl], min_similarity)
        counts[:, j] = m.counts
        qxy, cxy = query_xy[sl], candidate_xy[:, sl]
        if scorer == "count":
            verified[:, j] = m.counts
            s = m.counts.astype(np.float64)
        elif scorer == "spatial":
            verified[:, j] = translation_inliers(qxy, cxy, m, reproj_px)
            s = spatial_scores(qxy, cxy, m, seg)
        else:
            verified[:, j] = homography_inliers(qxy, cxy, m, reproj_px, scorer, min_matches)
            s = verified[:, j].astype(np.float64)
        scores[:, j] = s / max(seg.stop - seg.start, 1)
    return SegmentEvidence(scores, counts, verified)


def zscore(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """(x − mean) / std along ``axis``; 0 where the values are all equal."""
    x = np.asarray(x, np.float64)
    sd = x.std(axis, keepdims=True)
    return np.where(sd > 1e-12, (x - x.mean(axis, keepdims=True)) / np.maximum(sd, 1e-12), 0.0)


def fuse_zscore(
    similarities: np.ndarray, scores: np.ndarray, global_weight: float, weights: Sequence[float]
) -> np.ndarray:
    """Patch-NetVLAD's fusion over patch sizes (a weighted sum of per-size scores z-normalised
    over the candidates) plus the z-normalised global similarity at ``global_weight``."""
    w = np.asarray(weights, np.float64)
    return global_weight * zscore(similarities) + (zscore(scores, 0) * w).sum(1)
