"""The re-ranking stage of a :class:`~sfrs_edge.localize.Localizer`: model + map local features.

Decides once, at construction, whether re-ranking can run (the model emits local features, the
map stores them, both from the same local head) and says why not in one warning when it cannot:
the localizer then answers from the global descriptor alone, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model_info import LOCAL_FEATURES, LOCAL_XY
from .config import RerankConfig
from .rerank import RerankResult, rerank

log = logging.getLogger(__name__)


def map_local_fingerprint(the_map: Any) -> str | None:
    """Fingerprint of the local head that made a map's local features (None: unknown)."""
    info = getattr(the_map, "manifest", {}).get("model", {}).get("info") or {}
    return (info.get("local") or {}).get("fingerprint")


def why_not(engine: Any, the_map: Any) -> str | None:
    """Why re-ranking cannot run with this model and map (None: it can)."""
    local = engine.info.local
    if not local or LOCAL_FEATURES not in engine.extra_outputs:
        return (
            f"{engine.path.name} emits no local features (export it with "
            "`sfrs-edge export --rerank`)"
        )
    names = set(getattr(the_map, "extras", ()) or ())
    if not {LOCAL_FEATURES, LOCAL_XY} <= names:
        return (
            f"map {getattr(the_map, 'path', '')} stores no local features (rebuild it with a "
            "model exported with --rerank)"
        )
    if map_local_fingerprint(the_map) != local.get("fingerprint"):
        return (
            f"map {getattr(the_map, 'path', '')} holds local features of another local head "
            f"({map_local_fingerprint(the_map)}, the model's is {local.get('fingerprint')}); "
            "rebuild the map with this model"
        )
    return None


@dataclass
class RerankStage:
    """Re-ranks a query's global candidates with the map's stored local features."""

    config: RerankConfig
    map: Any  # reads candidates' rows of the map extras (memory-mapped)

    @classmethod
    def create(cls, engine: Any, the_map: Any, config: RerankConfig) -> RerankStage | None:
        """A stage, or None (with one warning saying why) when re-ranking cannot run."""
        reason = why_not(engine, the_map)
        if reason is not None:
            log.warning("re-ranking off, answering from the global descriptor only: %s", reason)
            return None
        return cls(config, the_map)

    def _rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        read = getattr(self.map, "extra_rows", None)
        return read(name, ids) if read is not None else self.map.extra(name)[ids]

    def apply(
        self, outputs: dict[str, np.ndarray], ids: np.ndarray, sims: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, RerankResult]:
        """Re-rank the first ``config.k`` of (ids, sims); the rest keep their global order."""
        k = min(self.config.k, len(ids))
        head = ids[:k]
        feats, xy = self._rows(LOCAL_FEATURES, head), self._rows(LOCAL_XY, head)
        result = rerank(
            outputs[LOCAL_FEATURES], outputs[LOCAL_XY], feats, xy, sims[:k], self.config
        )
        new_ids = np.concatenate([head[result.order], ids[k:]])
        new_sims = np.concatenate([sims[:k][result.order], sims[k:]])
        return new_ids, new_sims, result
