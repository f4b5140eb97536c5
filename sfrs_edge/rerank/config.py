"""Settings of query-time re-ranking (one small dataclass, saved with benchmark results)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError

GEOMETRIES = ("homography", "similarity", "fundamental", "none")
FUSIONS = ("evidence", "linear", "zscore")


@dataclass(frozen=True)
class RerankConfig:
    """How candidates are re-ranked.

    ``k``: candidates re-ranked. ``min_similarity``: cosine a mutual nearest neighbour needs.
    ``geometry``: RANSAC model (``none``: count mutual matches, FoL's own score).
    ``reproj_px``: RANSAC threshold in network-input pixels. Evidence = inliers mapped to
    [0, 1] between ``min_inliers`` (below: no evidence, the global order stands) and
    ``full_inliers``; fused score = global similarity + ``weight`` · evidence. ``scorer``:
    which scorer counts the evidence: ``inliers`` (per candidate, over all local features:
    the cell-feature method, :data:`~sfrs_edge.rerank.SCORERS`) or a batched per-segment one
    (:data:`~sfrs_edge.rerank.evidence.SCORERS`: ``ransac``, ``magsac``, ``spatial``,
    ``count``), scored per output segment (one per patch size).

    ``fusion`` of the per-segment scores s (each per query feature, in [0, 1]) with the global
    similarity g: ``linear``: g + Σ w_s·s; ``zscore`` (Patch-NetVLAD's, plus the global
    score): ``global_weight``·z(g) + Σ w_s·z(s), z over the k candidates; ``evidence``: g +
    ``weight``·evidence (the cell-feature rule). ``size_weights`` w_s per segment (empty: 1
    each; a model whose segments differ in number uses 1 each).

    ``margin``: re-rank only frames whose global answer is ambiguous (top-2 similarity gap
    below it, in cosine); the others keep the global order and say ``reranked: false``. None
    (the default): every frame; at equal recall on the tuning pairs a margin skipped under 2 %
    of the frames. The gap's scale depends on the model's descriptor.

    The defaults are the measured best (docs/RERANKING.md), chosen on the tuning pairs only:
    the top 20, Patch-NetVLAD's rapid spatial scoring of the default patch descriptors (sizes
    1, 2, 5), z-score fusion with the global similarity at half weight.
    """

    k: int = 20
    min_similarity: float = 0.3
    geometry: str = "homography"
    reproj_px: float = 24.0
    min_inliers: int = 6
    full_inliers: int = 20
    weight: float = 0.2
    scorer: str = "spatial"
    fusion: str = "zscore"
    size_weights: tuple[float, ...] = (1.0, 0.5, 0.5)
    global_weight: float = 0.5
    margin: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "size_weights", tuple(float(w) for w in self.size_weights))
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if any(w < 0 for w in self.size_weights) or self.global_weight < 0:
            raise ConfigError("size_weights and global_weight must not be negative")
        if self.k < 1:
            raise ConfigError(f"re-ranking needs k >= 1 candidates, got {self.k}")
        if self.geometry not in GEOMETRIES:
            raise ConfigError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")
        if not 0 <= self.min_inliers < self.full_inliers:
            raise ConfigError("need 0 <= min_inliers < full_inliers")
        if self.margin is not None and not self.margin > 0:
            raise ConfigError(
                f"margin must be positive (or None: re-rank every frame), got {self.margin}"
            )
        if self.reproj_px <= 0 or self.weight < 0:
            raise ConfigError("reproj_px must be positive and weight not negative")

    def rule(self) -> str:
        """How the re-ranked order's score is made, in words (printed beside the answers)."""
        if self.fusion == "evidence":
            return f"score = similarity + {self.weight} x evidence"
        if self.fusion == "linear":
            return f"score = similarity + weighted {self.scorer} scores"
        return (
            f"score = {self.global_weight} x z(similarity) + weighted z({self.scorer} scores), "
            "on the similarity scale"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
