"""Re-rank one query's candidates: score each with a *scorer*, fuse with the global similarity,
reorder; and the stage a :class:`~sfrs_edge.localize.Localizer` runs it from.

**Scorers** turn the local features of the query and of one candidate into evidence counts
``(matches, inliers)``; :data:`SCORERS` holds them by name (``RerankConfig.scorer`` picks one)
and :func:`scorer` registers a new one. The evidence is the inlier count mapped to [0, 1]
between ``min_inliers`` and ``full_inliers``; the fused score is global similarity + ``weight``
· evidence, so that weak local evidence leaves the global order alone.

The stage decides once, at construction, whether re-ranking can run (the model emits local
features, the map stores them, both from the same local head) and says why not in one warning
when it cannot: the localizer then answers from the global descriptor alone, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..model_info import LOCAL_FEATURES, LOCAL_XY
from .config import RerankConfig
from .match import count_inliers, mutual_matches

log = logging.getLogger(__name__)

# (query features (P, D), query xy (P, 2), candidate features, candidate xy, config)
#   -> (mutual matches, verified inliers) for that candidate
Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, RerankConfig], tuple[int, int]]
SCORERS: dict[str, Scorer] = {}


def scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Register a scorer under ``name`` (decorator)."""

    def register(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn

    return register


def get_scorer(name: str) -> Scorer:
    """The scorer called ``name`` (ConfigError naming the known ones otherwise)."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown re-ranking scorer {name!r}; known: {', '.join(sorted(SCORERS))}"
        ) from None


@scorer("inliers")
def verified_inliers(
    query_features: np.ndarray,
    query_xy: np.ndarray,
    candidate_features: np.ndarray,
    candidate_xy: np.ndarray,
    config: RerankConfig,
) -> tuple[int, int]:
    """Mutual nearest neighbours, then the pairs one ``config.geometry`` explains."""
    pairs, _ = mutual_matches(query_features, candidate_features, config.min_similarity)
    if len(pairs) <= config.min_inliers:  # cannot reach any evidence: skip RANSAC
        return len(pairs), 0
    inliers = count_inliers(
        query_xy[pairs[:, 0]], candidate_xy[pairs[:, 1]], config.geometry, config.reproj_px
    )
    return len(pairs), inliers


def evidence(inliers: np.ndarray, config: RerankConfig) -> np.ndarray:
    """Inlier counts mapped to [0, 1]: 0 up to ``min_inliers``, 1 from ``full_inliers``."""
    span = config.full_inliers - config.min_inliers
    return np.clip((np.asarray(inliers, np.float64) - config.min_inliers) / span, 0.0, 1.0)


def fused_scores(similarities: np.ndarray, inliers: np.ndarray, config: RerankConfig) -> np.ndarray:
    """Global similarity + weight · evidence: with no evidence anywhere the global order stands."""
    return np.asarray(similarities, np.float64) + config.weight * evidence(inliers, config)


@dataclass(frozen=True)
class RerankResult:
    """New order of the candidates (positions into the input arrays) and per-candidate evidence,
    all in the new order."""

    order: np.ndarray
    scores: np.ndarray
    matches: np.ndarray
    inliers: np.ndarray
    evidence: np.ndarray


def rerank(
    query_features: np.ndarray,
    query_xy: np.ndarray,
    candidate_features: np.ndarray,
    candidate_xy: np.ndarray,
    similarities: np.ndarray,
    config: RerankConfig,
) -> RerankResult:
    """Re-rank C candidates given the query's (P, D) features and (P, 2) coordinates, the
    candidates' (C, P, D) and (C, P, 2), and their global similarities (C,)."""
    score = get_scorer(config.scorer)
    n = len(similarities)
    matches = np.zeros(n, np.int64)
    inliers = np.zeros(n, np.int64)
    for c in range(n):
        matches[c], inliers[c] = score(
            query_features, query_xy, candidate_features[c], candidate_xy[c], config
        )
    scores = fused_scores(similarities, inliers, config)
    order = np.argsort(-scores, kind="stable")
    return RerankResult(
        order=order,
        scores=scores[order],
        matches=matches[order],
        inliers=inliers[order],
        evidence=evidence(inliers, config)[order],
    )


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
        get_scorer(config.scorer)  # an unknown scorer is a configuration error, not a warning
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
