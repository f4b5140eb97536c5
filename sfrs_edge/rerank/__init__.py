"""Re-ranking of global candidates by local evidence (FoL-style, adapted to NetVLAD).

:mod:`.matching` pairs local features (mutual nearest neighbours above a similarity),
:mod:`.verify` keeps the pairs one geometric model explains (OpenCV RANSAC), :mod:`.scoring`
fuses the inlier count with the global similarity so that weak local evidence leaves the global
order alone, and :mod:`.rerank` runs the three over a query's candidates. See docs/RERANKING.md.
"""

from .config import RerankConfig
from .rerank import RerankResult, rerank

__all__ = ["RerankConfig", "RerankResult", "rerank"]
