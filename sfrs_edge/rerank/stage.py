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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..model_info import LOCAL_FEATURES, LOCAL_XY
from . import evidence as batched
from .config import RerankConfig
from .evidence import Segment, fuse_zscore, segment_scores
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


def get_scorer(name: str) -> Scorer | None:
    """The per-candidate scorer called ``name``, None for a batched one
    (:data:`.evidence.SCORERS`); ConfigError naming the known ones otherwise."""
    if name in batched.SCORERS:
        return None
    try:
        return SCORERS[name]
    except KeyError:
        known = sorted([*SCORERS, *batched.SCORERS])
        raise ConfigError(
            f"unknown re-ranking scorer {name!r}; known: {', '.join(known)}"
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
    segments: list[Segment] | None = None,
) -> RerankResult:
    """Re-rank C candidates given the query's (P, D) features and (P, 2) coordinates, the
    candidates' (C, P, D) and (C, P, 2), and their global similarities (C,). ``segments``:
    the output's segments (one per patch size; None: one over all P)."""
    score = get_scorer(config.scorer)
    if score is None:
        return _rerank_batched(
            query_features,
            query_xy,
            candidate_features,
            candidate_xy,
            similarities,
            config,
            segments or [whole_segment(query_xy)],
        )
    n = len(similarities)
    matches = np.zeros(n, np.int64)
    inliers = np.zeros(n, np.int64)
    for c in range(n):
        matches[c], inliers[c] = score(
            query_features, query_xy, candidate_features[c], candidate_xy[c], config
        )
    return _result(fused_scores(similarities, inliers, config), matches, inliers, config)


def _result(scores, matches, inliers, config: RerankConfig) -> RerankResult:
    order = np.argsort(-scores, kind="stable")
    return RerankResult(
        order=order,
        scores=scores[order],
        matches=matches[order],
        inliers=inliers[order],
        evidence=evidence(inliers, config)[order],
    )


def whole_segment(xy: np.ndarray) -> Segment:
    """One segment over all of a model's local features when its metadata names none (models
    exported before patch descriptors): grid step = the smallest spacing of the coordinates."""
    xy = np.asarray(xy, np.float64)
    step = []
    for axis in (0, 1):
        gaps = np.diff(np.unique(xy[:, axis]))
        step.append(float(gaps[gaps > 1e-3].min()) if (gaps > 1e-3).any() else 1.0)
    span = xy.max(0) - xy.min(0) if len(xy) else np.zeros(2)
    grid = (int(round(span[1] / step[1])) + 1, int(round(span[0] / step[0])) + 1)
    return Segment(0, len(xy), grid, (step[0], step[1]))


def _rerank_batched(qf, qxy, cf, cxy, sims, config: RerankConfig, segments) -> RerankResult:
    """Batched per-segment scoring (:mod:`.evidence`), then ``config.fusion``."""
    sc, counts, verified = segment_scores(
        qf,
        np.asarray(qxy, np.float32),
        cf,
        np.asarray(cxy, np.float32),
        segments,
        config.scorer,
        config.min_similarity,
        config.reproj_px,
    )
    w = np.asarray(config.size_weights, np.float64)
    if len(w) != len(segments):
        w = np.ones(len(segments))
    sims = np.asarray(sims, np.float64)
    # "inliers" (what evidence and confidence read): verified matches over all segments, as
    # the cell-feature scorer counts them
    inliers = verified.sum(1)
    if config.fusion == "linear":
        fused = sims + sc @ w
    elif config.fusion == "zscore":
        z = fuse_zscore(sims, sc, config.global_weight, w)
        # back on the similarity scale (temporal filters compare these with similarities)
        spread = sims.std() if len(sims) > 1 else 0.0
        fused = sims.mean() + spread * z / max(config.global_weight + w.sum(), 1e-12)
    else:
        fused = fused_scores(sims, inliers, config)
    return _result(fused, counts.sum(1), inliers, config)


def map_local_fingerprint(the_map: Any) -> str | None:
    """Fingerprint of the local head that made a map's local features (None: unknown)."""
    info = getattr(the_map, "manifest", {}).get("model", {}).get("info") or {}
    return (info.get("local") or {}).get("fingerprint")


def _map_source(the_map: Any) -> str:
    """The folder the map was built from (its manifest's first build event), else IMAGES."""
    for event in getattr(the_map, "manifest", {}).get("history", []) or []:
        if event.get("op") == "build" and event.get("source"):
            return str(event["source"])
    return "IMAGES"


def rebuild_command(engine: Any, the_map: Any) -> str:
    """The ``map build`` command that gives ``the_map`` this model's local features."""
    where = getattr(the_map, "path", "MAP")
    return f"`sfrs-edge map build {_map_source(the_map)} --model {engine.path} -o {where}`"


def why_not(engine: Any, the_map: Any) -> str | None:
    """Why re-ranking cannot run with this model and map (None: it can), with every step that
    makes it run: a model without local features also needs the map rebuilt with it."""
    local = engine.info.local
    map_name = f"map {getattr(the_map, 'path', '')}"
    if not local or LOCAL_FEATURES not in engine.extra_outputs:
        return (
            f"{engine.path.name} emits no local features; two steps make re-ranking run: "
            f"re-export the model with local features (`sfrs-edge export --rerank -o "
            f"{engine.path}`), then rebuild the map with it "
            f"({rebuild_command(engine, the_map)}: the map must store that model's features)"
        )
    names = set(getattr(the_map, "extras", ()) or ())
    if not {LOCAL_FEATURES, LOCAL_XY} <= names:
        return (
            f"{map_name} stores no local features; rebuild it with this model: "
            f"{rebuild_command(engine, the_map)}"
        )
    if map_local_fingerprint(the_map) != local.get("fingerprint"):
        return (
            f"{map_name} holds local features of another local head "
            f"({map_local_fingerprint(the_map)}, the model's is {local.get('fingerprint')}); "
            f"rebuild the map with this model: {rebuild_command(engine, the_map)}"
        )
    return None


# Frames re-ranked without one candidate getting evidence before the stage says so (once):
# real frames have some matches; none at all over a run means broken local features (NaN,
# another model's) and every answer silently falls back to the global order.
NO_EVIDENCE_FRAMES = 20


@dataclass
class RerankStage:
    """Re-ranks a query's global candidates with the map's stored local features."""

    config: RerankConfig
    map: Any  # reads candidates' rows of the map extras (memory-mapped)
    segments: list[Segment] | None = None  # the model's output segments (patch sizes)
    frames: int = field(default=0, init=False)  # frames re-ranked so far
    frames_with_evidence: int = field(default=0, init=False)
    _warned: bool = field(default=False, init=False, repr=False)

    @classmethod
    def create(cls, engine: Any, the_map: Any, config: RerankConfig) -> RerankStage | None:
        """A stage, or None (with one warning saying why) when re-ranking cannot run."""
        get_scorer(config.scorer)  # an unknown scorer is a configuration error, not a warning
        reason = why_not(engine, the_map)
        if reason is not None:
            log.warning("re-ranking off, answering from the global descriptor only: %s", reason)
            return None
        segs = (engine.info.local or {}).get("segments")
        return cls(config, the_map, Segment.from_info(segs) if segs else None)

    def _rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        read = getattr(self.map, "extra_rows", None)
        return read(name, ids) if read is not None else self.map.extra(name)[ids]

    def ambiguous(self, sims: np.ndarray) -> bool:
        """Whether the global answer is close enough to its rival to need re-ranking
        (always, without a ``margin``)."""
        margin = self.config.margin
        return margin is None or len(sims) < 2 or float(sims[0] - sims[1]) < margin

    def apply(
        self, outputs: dict[str, np.ndarray], ids: np.ndarray, sims: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, RerankResult | None]:
        """Re-rank the first ``config.k`` of (ids, sims); the rest keep their global order.
        A clear global answer (see :meth:`ambiguous`) is returned as is, with None."""
        if not self.ambiguous(sims):
            return ids, sims, None
        k = min(self.config.k, len(ids))
        head = ids[:k]
        feats, xy = self._rows(LOCAL_FEATURES, head), self._rows(LOCAL_XY, head)
        result = rerank(
            outputs[LOCAL_FEATURES],
            outputs[LOCAL_XY],
            feats,
            xy,
            sims[:k],
            self.config,
            self.segments,
        )
        self._note_evidence(result)
        new_ids = np.concatenate([head[result.order], ids[k:]])
        new_sims = np.concatenate([sims[:k][result.order], sims[k:]])
        return new_ids, new_sims, result

    def _note_evidence(self, result: RerankResult) -> None:
        """Count frames with any evidence; warn once when a run has none at all."""
        self.frames += 1
        if len(result.evidence) and result.evidence.max() > 0:
            self.frames_with_evidence += 1
        if self.frames >= NO_EVIDENCE_FRAMES and not self.frames_with_evidence and not self._warned:
            self._warned = True
            log.warning(
                "re-ranking found no verified local evidence for any candidate in %d frames: "
                "the map's local features may be damaged or from another model (check it with "
                "`sfrs-edge map verify`); answers keep the global order",
                self.frames,
            )
