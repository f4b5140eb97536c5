"""Localize camera frames against a map: top-k places, a position estimate and a confidence.

::

    loc = Localizer("model.onnx", "map/")
    result = loc.localize(frame_bgr)          # numpy uint8 HxWx3 BGR (gray/BGRA also accepted)
    print(result.best.name, result.position, result.confidence)

**Rule for the estimate and its confidence.** The map is searched for ``max(k, 32)``
candidates. The best candidate ``b`` (highest cosine similarity ``s_b``) defines the answer.
A candidate is *near* ``b`` when it lies within ``far_radius`` of ``b``'s position (metres for
lat/lon maps, map units for x/y[/z] maps); when the map has no positions, when it is within
``far_frames`` map rows of ``b`` (rows follow image-name order, i.e. the sequence). The first
candidate that is not near is the *rival* with similarity ``s_r``; if every candidate is near,
``s_r`` is the last candidate's similarity (all other places score at most that).

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

A :class:`Localizer` holds one model session and one map and is safe to call from several
threads (calls are serialised by a lock); it allocates no session or buffers per call.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .errors import ConfigError, MapError
from .images import read_image_tolerant
from .maps.index import check_k, top_k
from .model_info import check_map_model
from .stream.filtering import partial_scores
from .threads import blas_limit

log = logging.getLogger(__name__)

CANDIDATES = 32
# One frame's exact search is a matrix-vector product: memory-bound, no faster on more BLAS
# threads, and OpenBLAS's threads spin after each call, taking cores from the next inference
# (issue 13: 11.1 → 18.5 frames/s with BLAS held to one). Held to 1 whatever ``threads`` is.
SEARCH_BLAS_THREADS = 1
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Match:
    """One retrieved map place."""

    id: int
    name: str
    similarity: float
    position: tuple[float, ...] | None = None
    inliers: int | None = None  # verified local matches (re-ranked candidates only)


@dataclass(frozen=True)
class LocalizationResult:
    """Answer for one frame. ``timings`` are milliseconds per stage (and ``total``)."""

    matches: tuple[Match, ...]
    position: tuple[float, ...] | None
    position_kind: str | None
    confidence: float
    margin: float
    timings: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    reranked: bool = False  # True: order and confidence come from verified local evidence
    damaged: bool = False  # the frame's JPEG data was damaged (decoded as far as libjpeg could)

    @property
    def best(self) -> Match:
        return self.matches[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matches"] = [asdict(m) for m in self.matches]
        return d


def _haversine_m(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between (n, 2) lat/lon rows and one lat/lon ``b``."""
    lat1, lon1 = np.radians(a[:, 0]), np.radians(a[:, 1])
    lat2, lon2 = math.radians(b[0]), math.radians(b[1])
    h = (
        np.sin((lat1 - lat2) / 2) ** 2
        + np.cos(lat1) * math.cos(lat2) * np.sin((lon1 - lon2) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


class Localizer:
    """Model + map, ready for frames. See the module docstring for the estimate's rule."""

    def __init__(
        self,
        model: str | os.PathLike | Engine,
        map: str | os.PathLike | Any,  # noqa: A002 - the public name users expect
        k: int = 5,
        backend: str = "auto",
        threads: int | None = None,
        ef: int | None = None,
        far_radius: float = 25.0,
        far_frames: int = 10,
        margin_scale: float = 0.25,
        near_radius: float | None = None,
        rerank: int | Any | None = None,
    ) -> None:
        """``rerank``: re-rank the top-``rerank`` candidates by local evidence (an int K or a
        :class:`~sfrs_edge.rerank.RerankConfig`); off when None. With a model or map without
        local features it logs one warning and answers from the global descriptor."""
        check_k(k)
        if far_radius <= 0 or far_frames < 1 or margin_scale <= 0:
            raise ConfigError("far_radius, far_frames and margin_scale must be positive")
        from .maps import Map  # hnswlib only when localizing

        self.engine = model if isinstance(model, Engine) else Engine.open(model, backend, threads)
        self.map = Map.open(map) if isinstance(map, (str, os.PathLike)) else map
        # property by property, so the message names what differs (input size, weights, ...)
        section = getattr(self.map, "manifest", {}).get("model") or {
            "fingerprint": self.map.fingerprint
        }
        check_map_model(section, self.engine.info, str(getattr(self.map, "path", "map")))
        if self.map.dim != self.engine.dim:
            raise MapError(
                f"map holds {self.map.dim}-d descriptors, the model makes {self.engine.dim}-d"
            )
        if len(self.map) == 0:
            raise MapError(f"{getattr(self.map, 'path', 'map')}: the map is empty")
        self.k, self.ef = k, ef
        self.far_radius, self.far_frames, self.margin_scale = far_radius, far_frames, margin_scale
        self.near_radius = far_radius / 5 if near_radius is None else near_radius
        self.position_kind: str | None = self.map.position_kind
        self._positions = self.map.positions()  # (N, d), NaN where unknown
        self._lock = threading.Lock()
        self.reranker = None
        if rerank is not None:
            from .rerank import RerankConfig
            from .rerank.stage import RerankStage

            config = rerank if isinstance(rerank, RerankConfig) else RerankConfig(k=int(rerank))
            self.reranker = RerankStage.create(self.engine, self.map, config)

    @property
    def rerank(self):
        """The active :class:`~sfrs_edge.rerank.RerankConfig`, or None (re-ranking off)."""
        return self.reranker.config if self.reranker is not None else None

    def __repr__(self) -> str:
        return f"Localizer({self.engine!r}, {self.map!r}, k={self.k})"

    # --- public -------------------------------------------------------------------------

    def localize(self, frame_bgr: np.ndarray) -> LocalizationResult:
        """Where was this frame taken? ``frame_bgr``: uint8 HxWx3 BGR (gray/BGRA/16-bit ok)."""
        return self._localize(frame_bgr, {"decode": 0.0}, None, time.perf_counter())

    def localize_scores(self, frame_bgr: np.ndarray) -> tuple[LocalizationResult, np.ndarray]:
        """:meth:`localize`, plus the frame's similarity to every map place (N,) float32.

        Exact maps give true similarities; HNSW maps true similarities for the candidates, the
        ``focus`` rows and a fixed sample of rows, and the sample's mean for every other place
        (:func:`~sfrs_edge.stream.filtering.partial_scores`).
        """
        result, scores, _ = self.localize_for_filter(frame_bgr)
        return result, scores

    def localize_for_filter(
        self, frame_bgr: np.ndarray, focus: np.ndarray | None = None
    ) -> tuple[LocalizationResult, np.ndarray, tuple[float, float] | None]:
        """:meth:`localize_scores` for a temporal filter: also scores the rows ``focus`` (the
        filter's :meth:`~sfrs_edge.stream.filtering.TemporalFilter.focus`) exactly and returns
        the z-score statistics for ``TemporalFilter.update`` (None when every row is exact)."""
        out: list = []
        t0 = time.perf_counter()
        result = self._localize(frame_bgr, {"decode": 0.0}, None, t0, out, focus)
        return result, out[0], out[1]

    def localize_descriptors(
        self, descriptors: np.ndarray, sources: list[str] | None = None
    ) -> list[LocalizationResult]:
        """Results for descriptors already computed (e.g. batched by ``Engine.embed_files``):
        the same search and estimate as :meth:`localize`, one result per row."""
        n = min(len(self.map), max(self.k, CANDIDATES))
        ids, sims = self.map.search(descriptors, n, self.ef)
        sources = sources or [None] * len(ids)
        return [
            LocalizationResult(**self._estimate(i, s), source=src)
            for i, s, src in zip(ids, sims, sources, strict=True)
        ]

    def match(self, place_id: int, similarity: float) -> Match:
        """A :class:`Match` for map row ``place_id`` (its name and position)."""
        return self.matches([place_id], [similarity])[0]

    def matches(self, ids, similarities) -> list[Match]:
        """:class:`Match` es for map rows ``ids`` (names read from the map in one query)."""
        out = []
        for place, s in zip(self.map.places(ids), similarities, strict=True):
            pos = self._positions[place.id] if self._positions.shape[1] else None
            known = pos is not None and not np.isnan(pos).any()
            out.append(
                Match(
                    id=int(place.id),
                    name=place.name,
                    similarity=round(float(s), 6),
                    position=tuple(float(v) for v in pos) if known else None,
                )
            )
        return out

    def stream(self, frames, filter="seq", window: int = 5, **filter_options: Any):  # noqa: A002
        """Localize an iterable of frames lazily: one :class:`~sfrs_edge.stream.sequence.StreamResult`
        per frame, with the per-frame and the temporally filtered answer.

        ``frames``: uint8 BGR arrays or :class:`~sfrs_edge.video.Frame` s (e.g. a
        :class:`~sfrs_edge.stream.FrameStream`). ``filter``: ``seq`` (the default everywhere, see
        :class:`~sfrs_edge.stream.filtering.FilterConfig`), ``hmm`` or ``none``, or a
        ``FilterConfig``; ``window`` and ``filter_options`` (its other fields) configure it.
        """
        from .stream.filtering import FilterConfig
        from .stream.sequence import localize_stream

        if isinstance(filter, FilterConfig):
            config = filter
        else:
            config = FilterConfig(method=filter, window=window, **filter_options)
        return localize_stream(self, frames, config)

    def localize_file(self, path: str | os.PathLike) -> LocalizationResult:
        """Read an image file (clear ImageError when unreadable) and localize it.

        A JPEG whose data is damaged is still answered (a robot's frame is better judged than
        dropped), with ``damaged=True`` in the result and a warning logged: the answer may be
        wrong. Map images with damaged data are refused instead (they would stay wrong).
        """
        t0 = time.perf_counter()
        decoded = read_image_tolerant(path)
        result = self._localize(decoded.image, {"decode": time.perf_counter() - t0}, str(path), t0)
        if decoded.damage is None:
            return result
        log.warning(
            "%s: damaged JPEG data (libjpeg: %s); answered anyway, marked damaged — the answer "
            "may be wrong",
            path,
            decoded.damage,
        )
        return replace(result, damaged=True)

    # --- internals ----------------------------------------------------------------------

    def _localize(
        self,
        frame: np.ndarray,
        times: dict[str, float],
        source: str | None,
        t0: float,
        scores_out: list | None = None,
        focus: np.ndarray | None = None,
    ) -> LocalizationResult:
        with self._lock:
            if self.reranker is not None:
                outputs = self.engine.embed_frame_all(frame, times)
                desc = outputs["descriptor"]
            else:
                desc = self.engine.embed_frame(frame, times)
            t = time.perf_counter()
            rk = self.reranker.config.k if self.reranker is not None else 0
            n = min(len(self.map), max(self.k, CANDIDATES, rk))
            stats = None
            with blas_limit(SEARCH_BLAS_THREADS):
                if scores_out is not None and self.map.index_type == "exact":
                    # the filter needs every similarity: one matrix product serves both
                    scores = np.asarray(self.map.similarities(desc)[0], np.float32)
                    ids, sims = top_k(scores[None], n)
                else:
                    ids, sims = self.map.search(desc, n, self.ef)
                    if scores_out is not None:  # HNSW: candidates + focus + sample, exactly
                        scores, stats = partial_scores(self.map, desc, ids[0], sims[0], focus)
            times["search"] = time.perf_counter() - t
            if scores_out is not None:
                scores_out.extend([scores, stats])
        verified = None
        ids, sims = ids[0], sims[0]
        if self.reranker is not None:
            t = time.perf_counter()
            ids, sims, verified = self.reranker.apply(outputs, ids, sims)
            times["rerank"] = time.perf_counter() - t
            if scores_out is not None:  # temporal filters see the fused (verified) scores
                fused = scores_out[0].copy()
                fused[ids[: len(verified.scores)]] = verified.scores
                scores_out[0] = fused
        result = self._estimate(ids, sims, verified)
        times["total"] = time.perf_counter() - t0
        ms = {key: round(v * 1000.0, 3) for key, v in times.items()}
        return LocalizationResult(**result, timings=ms, source=source)

    def _near(self, ids: np.ndarray, best: int, radius: float, frames: int) -> np.ndarray:
        """Which candidate ids lie within ``radius`` of ``best`` (else within ``frames`` rows)."""
        by_row = np.abs(ids - best) <= frames
        if self._positions.shape[1] == 0 or np.isnan(self._positions[best]).any():
            return by_row
        pos = self._positions[ids]
        if self.position_kind == "latlon":
            dist = _haversine_m(pos, self._positions[best])
        else:
            diff = pos - self._positions[best]
            dist = np.sqrt(np.nansum(diff**2, axis=1))
        known = ~np.isnan(pos).any(axis=1)
        return np.where(known, dist <= radius, by_row)

    def _estimate(self, ids: np.ndarray, sims: np.ndarray, verified=None) -> dict[str, Any]:
        """``verified``: the re-ranking result of the first candidates (their new order)."""
        ids = ids.astype(np.int64)
        sims = sims.astype(np.float64)
        best = int(ids[0])
        near = self._near(ids, best, self.far_radius, self.far_frames)
        far = np.flatnonzero(~near)
        s_best = float(sims[0])
        rest = sims[far] if len(far) else sims[-1:]
        s_rival = float(rest.max()) if verified is not None else float(rest[0])
        margin = max(0.0, s_best - s_rival)
        confidence = float(np.clip(margin / (self.margin_scale * max(1.0 - s_rival, 1e-6)), 0, 1))
        if verified is not None:
            from .rerank.scoring import verified_confidence

            confidence = verified_confidence(verified.evidence, near[: len(verified.evidence)])
        matches = self.matches(ids[: self.k], sims[: self.k])
        if verified is not None:
            inl = verified.inliers
            matches = [
                replace(m, inliers=int(inl[j])) if j < len(inl) else m
                for j, m in enumerate(matches)
            ]
        return {
            "matches": tuple(matches),
            "position": self._position(ids[: self.k], sims[: self.k], s_rival),
            "position_kind": self.position_kind,
            "confidence": round(confidence, 4),
            "margin": round(margin, 6),
            "reranked": verified is not None,
        }

    def _position(
        self, ids: np.ndarray, sims: np.ndarray, s_rival: float
    ) -> tuple[float, ...] | None:
        if self._positions.shape[1] == 0:
            return None
        pos = self._positions[ids]
        close = self._near(ids, int(ids[0]), self.near_radius, 0)
        use = close & ~np.isnan(pos).any(axis=1)
        if not use[0]:
            return None
        w = np.maximum(sims[use] - s_rival, 1e-9)
        est = (pos[use] * w[:, None]).sum(axis=0) / w.sum()
        return tuple(float(v) for v in est)


def open_localizer(
    model: str | os.PathLike | None = None,
    map: str | os.PathLike | None = None,  # noqa: A002
    **kwargs: Any,
) -> Localizer:
    """A :class:`Localizer` with the main job's defaults for missing paths."""
    from . import paths

    return Localizer(
        Path(model) if model else paths.default_model(),
        Path(map) if map else paths.default_map(),
        **kwargs,
    )
