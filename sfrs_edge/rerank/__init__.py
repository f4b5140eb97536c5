"""Re-ranking of global candidates by local evidence (FoL-style, adapted to NetVLAD).

:mod:`.config` holds the settings; :mod:`.match` pairs local features (mutual nearest
neighbours above a similarity) and keeps the pairs one geometric model explains (OpenCV
RANSAC) one candidate at a time; :mod:`.evidence` scores all candidates at once per output
segment (one per patch size: batched mutual NN, RANSAC/MAGSAC, rapid spatial scoring, match
count) and fuses the segments' scores; :mod:`.stage` picks the scorer, fuses the evidence with
the global similarity, and runs it for a :class:`~sfrs_edge.localize.Localizer`. See
docs/RERANKING.md.
"""

from .config import RerankConfig
from .stage import SCORERS, RerankResult, RerankStage, rerank, scorer

__all__ = ["SCORERS", "RerankConfig", "RerankResult", "RerankStage", "rerank", "scorer"]
