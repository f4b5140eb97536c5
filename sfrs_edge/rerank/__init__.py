"""Re-ranking of global candidates by local evidence (FoL-style, adapted to NetVLAD).

:mod:`.config` holds the settings; :mod:`.match` pairs local features (mutual nearest
neighbours above a similarity) and keeps the pairs one geometric model explains (OpenCV
RANSAC); :mod:`.stage` scores each candidate with a registered scorer, fuses the evidence with
the global similarity so that weak local evidence leaves the global order alone, and runs it
for a :class:`~sfrs_edge.localize.Localizer`. See docs/RERANKING.md.
"""

from .config import RerankConfig
from .stage import SCORERS, RerankResult, RerankStage, rerank, scorer

__all__ = ["SCORERS", "RerankConfig", "RerankResult", "RerankStage", "rerank", "scorer"]
