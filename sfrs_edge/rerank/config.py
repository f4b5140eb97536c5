"""Settings of query-time re-ranking (one small dataclass, saved with benchmark results)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

GEOMETRIES = ("homography", "similarity", "fundamental", "none")


@dataclass(frozen=True)
class RerankConfig:
    """How candidates are re-ranked.

    ``k``: candidates re-ranked. ``min_similarity``: cosine a mutual nearest neighbour needs.
    ``geometry``: RANSAC model (``none``: count mutual matches, FoL's own score).
    ``reproj_px``: RANSAC threshold in network-input pixels. Evidence = inliers mapped to
    [0, 1] between ``min_inliers`` (below: no evidence, the global order stands) and
    ``full_inliers``; fused score = global similarity + ``weight`` · evidence. ``scorer``:
    which registered scorer (:data:`~sfrs_edge.rerank.SCORERS`) counts the evidence.
    """

    k: int = 10
    min_similarity: float = 0.3
    geometry: str = "homography"
    reproj_px: float = 24.0
    min_inliers: int = 6
    full_inliers: int = 20
    weight: float = 0.2
    scorer: str = "inliers"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"re-ranking needs k >= 1 candidates, got {self.k}")
        if self.geometry not in GEOMETRIES:
            raise ConfigError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if not 0 <= self.min_inliers < self.full_inliers:
            raise ConfigError("need 0 <= min_inliers < full_inliers")
        if self.reproj_px <= 0 or self.weight < 0:
            raise ConfigError("reproj_px must be positive and weight not negative")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
