"""The position estimate and its confidence, from a frame's ranked candidates.

**Rule.** The map is searched for ``max(k, 32)`` candidates. The best candidate ``b`` (highest
cosine similarity ``s_b``) defines the answer. A candidate is *near* ``b`` when it lies within
``far_radius`` of ``b``'s position (metres for lat/lon maps, map units for x/y[/z] maps); when
the map has no positions, when it is within ``far_frames`` map rows of ``b`` (rows follow
image-name order, i.e. the sequence). The first candidate that is not near is the *rival* with
similarity ``s_r``; if every candidate is near, ``s_r`` is the last candidate's similarity (all
other places score at most that).

- ``position``: similarity-weighted mean of the positions of the top-k matches within
  ``near_radius`` (default ``far_radius / 5``) of ``b``, weights ``s_i − s_r`` (so matches
  barely better than the rival barely count); None when the map has no positions. Averaging
  only close neighbours refines the best match's position without pulling it towards a
  different place that happens to rank second.
- ``margin = s_b − s_r``; ``confidence = clip(margin / (margin_scale · (1 − s_r)), 0, 1)``:
  the fraction of the remaining distance to a perfect match that the winner gains over the
  best rival place, scaled so that ``margin_scale`` of it counts as certain. Dividing by
  ``1 − s_r`` makes the number comparable across models whose similarities live in different
  ranges. The default 0.25 was chosen on Gardens Point (map ``day_left``, off-the-shelf
  Lite0, 20480-d, ``far_radius`` 25 frames): queries with confidence ≥ 0.5 were right 94 % of
  the time for ``day_right`` (94 % of queries) and 84 % for ``night_right`` (12 % of queries;
  night R@1 over all queries 45 %).
- Re-ranked answers (verified local evidence per candidate, in the new order): the rival is
  the best-scoring candidate at another place, and the confidence is
  :func:`verified_confidence` — the answer's evidence minus the best rival's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .geo import distances

CANDIDATES = 32  # candidates searched per frame (at least k): enough to find the rival place


@dataclass(frozen=True)
class Estimate:
    """Position (None: the map has no positions), confidence in [0, 1] and global margin."""

    position: tuple[float, ...] | None
    confidence: float
    margin: float


def verified_confidence(evidence_ranked: np.ndarray, near: np.ndarray) -> float:
    """Confidence of a re-ranked answer: its verified evidence minus the best evidence of a
    candidate at another place (``near``: which candidates, in the new order, are at the
    answer's place; index 0 is the answer). No evidence → 0, whatever the global margin."""
    ev = np.asarray(evidence_ranked, np.float64)
    far = ev[~np.asarray(near, bool)]
    rival = float(far.max()) if len(far) else 0.0
    return float(np.clip(ev[0] - rival, 0.0, 1.0))


class Estimator:
    """The rule above for one map's positions (``(N, d)``, NaN where unknown; ``d`` may be 0)."""

    def __init__(
        self,
        positions: np.ndarray,
        position_kind: str | None,
        far_radius: float = 25.0,
        far_frames: int = 10,
        margin_scale: float = 0.25,
        near_radius: float | None = None,
    ) -> None:
        if far_radius <= 0 or far_frames < 1 or margin_scale <= 0:
            raise ConfigError("far_radius, far_frames and margin_scale must be positive")
        self.positions = positions
        self.position_kind = position_kind
        self.far_radius, self.far_frames, self.margin_scale = far_radius, far_frames, margin_scale
        self.near_radius = far_radius / 5 if near_radius is None else near_radius

    def near(self, ids: np.ndarray, best: int, radius: float, frames: int) -> np.ndarray:
        """Which candidate ids lie within ``radius`` of ``best`` (else within ``frames`` rows)."""
        by_row = np.abs(ids - best) <= frames
        if self.positions.shape[1] == 0 or np.isnan(self.positions[best]).any():
            return by_row
        pos = self.positions[ids]
        dist = distances(pos, self.positions[best], self.position_kind)
        known = ~np.isnan(pos).any(axis=1)
        return np.where(known, dist <= radius, by_row)

    def estimate(
        self, ids: np.ndarray, sims: np.ndarray, k: int, evidence: np.ndarray | None = None
    ) -> Estimate:
        """The estimate from ranked candidates (ids, sims); the position averages the first
        ``k``. ``evidence``: verified evidence of the first candidates after re-ranking (their
        new order), or None for a global-only answer."""
        ids = ids.astype(np.int64)
        sims = sims.astype(np.float64)
        near = self.near(ids, int(ids[0]), self.far_radius, self.far_frames)
        far = np.flatnonzero(~near)
        rest = sims[far] if len(far) else sims[-1:]
        s_rival = float(rest.max()) if evidence is not None else float(rest[0])
        margin = max(0.0, float(sims[0]) - s_rival)
        if evidence is not None:
            confidence = verified_confidence(evidence, near[: len(evidence)])
        else:
            scale = self.margin_scale * max(1.0 - s_rival, 1e-6)
            confidence = float(np.clip(margin / scale, 0, 1))
        return Estimate(
            position=self._position(ids[:k], sims[:k], s_rival),
            confidence=round(confidence, 4),
            margin=round(margin, 6),
        )

    def _position(
        self, ids: np.ndarray, sims: np.ndarray, s_rival: float
    ) -> tuple[float, ...] | None:
        if self.positions.shape[1] == 0:
            return None
        pos = self.positions[ids]
        close = self.near(ids, int(ids[0]), self.near_radius, 0)
        use = close & ~np.isnan(pos).any(axis=1)
        if not use[0]:
            return None
        w = np.maximum(sims[use] - s_rival, 1e-9)
        est = (pos[use] * w[:, None]).sum(axis=0) / w.sum()
        return tuple(float(v) for v in est)
