"""Localize camera frames against a map: top-k places, a position estimate and a confidence.

::

    loc = Localizer("model.onnx", "map/")
    result = loc.localize(frame_bgr)          # numpy uint8 HxWx3 BGR (gray/BGRA also accepted)
    print(result.best.name, result.position, result.confidence)

A frame goes through four stages, each a function of what the one before returns: embed
(:class:`~sfrs_edge.engine.Engine`), :func:`search` (the map's candidates, and every place's
similarity when a temporal filter needs them), :func:`rerank_candidates` (optional: local
evidence reorders the first candidates) and the estimate (:mod:`sfrs_edge.estimate`, where the rule
for the position and the confidence is written down). Temporal filtering of a stream lives in
:mod:`sfrs_edge.stream.sequence`. The result types are in :mod:`sfrs_edge.results`.

A :class:`Localizer` holds one model session and one map and is safe to call from several
threads at once (frames in flight: the engine runs each caller on its own bound buffers, the map
search is thread-safe); it allocates no session or buffers per call. Names and positions are
held in memory (no metadata query per frame), and numpy's BLAS is held to one thread for the
process once, at construction (:func:`~sfrs_edge.threads.hold_blas`): a frame's BLAS work is
matrix-vector products and small matches, memory-bound, and a BLAS pool spinning beside the
network's took its cores (measured 11.1 → 18.5 frames/s with BLAS held to one).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .errors import MapError
from .estimate import CANDIDATES, Estimator
from .images import read_image_tolerant
from .maps.contents import check_similarities
from .maps.index import check_k, top_k
from .model_info import check_map_model
from .results import LocalizationResult, Match
from .stream.filtering import FrameScores, frame_scores
from .threads import hold_blas

log = logging.getLogger(__name__)

__all__ = [
    "CANDIDATES",
    "Candidates",
    "LocalizationResult",
    "Localizer",
    "Match",
    "rerank_candidates",
    "search",
]

# One frame's exact search is a matrix-vector product: memory-bound, no faster on more BLAS
# threads, and OpenBLAS's threads spin after each call, taking cores from the next inference
# (measured 11.1 → 18.5 frames/s with BLAS held to one). Held to 1 whatever ``threads`` is.
SEARCH_BLAS_THREADS = 1


@dataclass(frozen=True)
class Candidates:
    """One frame's ranked map candidates (``ids``, ``sims``: (n,)). With ``frame``: the
    similarities a temporal filter uses (:class:`~sfrs_edge.stream.filtering.FrameScores`)."""

    ids: np.ndarray
    sims: np.ndarray
    frame: FrameScores | None = None

    @property
    def scores(self) -> np.ndarray | None:
        """The frame's similarity to every map place (N,) float32 (O(N): exact maps hold it,
        HNSW maps give the sample mean for rows not scored)."""
        return None if self.frame is None else self.frame.dense()

    @property
    def stats(self) -> tuple[float, float] | None:
        """z-score statistics of the estimated rows (None when every row is exact)."""
        return None if self.frame is None else self.frame.stats


def search(
    the_map: Any,
    descriptor: np.ndarray,
    n: int,
    ef: int | None = None,
    all_scores: bool = False,
    focus: np.ndarray | None = None,
) -> Candidates:
    """The ``n`` best places for one (1, D) descriptor; with ``all_scores`` also the frame's
    :class:`~sfrs_edge.stream.filtering.FrameScores` for a temporal filter (exact maps: one
    matrix product serves both; HNSW maps: the candidates, the ``focus`` rows and a fixed
    sample scored exactly, :func:`~sfrs_edge.stream.filtering.frame_scores`)."""
    where = str(getattr(the_map, "path", "map"))
    if all_scores and the_map.index_type == "exact":
        scores = np.asarray(the_map.similarities(descriptor)[0], np.float32)
        ids, sims = top_k(scores[None], n)
        check_similarities(sims, where)  # a unit query: beyond ±1 means damaged rows
        return Candidates(ids[0], sims[0], FrameScores.exact(scores, ids[0], sims[0], focus))
    ids, sims = the_map.search(descriptor, n, ef)
    check_similarities(sims, where)
    if not all_scores:
        return Candidates(ids[0], sims[0])
    return Candidates(ids[0], sims[0], frame_scores(the_map, descriptor, ids[0], sims[0], focus))


def rerank_candidates(
    stage: Any, outputs: dict[str, np.ndarray], found: Candidates
) -> tuple[Candidates, Any]:
    """``found`` re-ranked by a :class:`~sfrs_edge.rerank.RerankStage` (the model's outputs hold
    the frame's local features), and the :class:`~sfrs_edge.rerank.RerankResult`. A temporal
    filter sees the fused (verified) scores of the re-ranked candidates."""
    ids, sims, verified = stage.apply(outputs, found.ids, found.sims)
    frame = found.frame
    if frame is not None and verified is not None:
        frame = frame.with_values(ids[: len(verified.scores)], verified.scores)
    return Candidates(ids, sims, frame), verified


class Localizer:
    """Model + map, ready for frames. See :mod:`sfrs_edge.estimate` for the estimate's rule."""

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
        allow_unverified: bool = False,
    ) -> None:
        """``rerank``: re-rank the top-``rerank`` candidates by local evidence (an int K or a
        :class:`~sfrs_edge.rerank.RerankConfig`); off when None. With a model or map without
        local features it logs one warning and answers from the global descriptor.
        ``allow_unverified``: accept a model without a content digest (:meth:`Engine.open`)."""
        check_k(k)
        # checked before the model and map are opened: a bad option fails fast
        Estimator(np.zeros((0, 0)), None, far_radius, far_frames, margin_scale, near_radius)
        from .maps import Map  # hnswlib only when localizing

        self.engine = (
            model
            if isinstance(model, Engine)
            else Engine.open(model, backend, threads, allow_unverified=allow_unverified)
        )
        self.map = Map.open(map) if isinstance(map, (str, os.PathLike)) else map
        # property by property, so the message names what differs (input size, weights, ...)
        where = str(getattr(self.map, "path", "map"))
        manifest = getattr(self.map, "manifest", None)
        if manifest is not None:  # a map on disk: its manifest must describe its model
            check_map_model(manifest.get("model"), self.engine.info, where)
        elif self.map.fingerprint != self.engine.fingerprint:  # the caller's in-memory map
            raise MapError(
                f"{where}: this map was built by a different model: its fingerprint differs "
                f"(map: {self.map.fingerprint}, this model: {self.engine.fingerprint})"
            )
        if self.map.dim != self.engine.dim:
            raise MapError(
                f"map holds {self.map.dim}-d descriptors, the model makes {self.engine.dim}-d"
            )
        if len(self.map) == 0:
            raise MapError(f"{getattr(self.map, 'path', 'map')}: the map is empty")
        self.k, self.ef = k, ef
        self.position_kind: str | None = self.map.position_kind
        self._positions = self.map.positions()  # (N, d), NaN where unknown
        self._names = None  # None: ask the map per frame (maps that cannot list names)
        table = getattr(self.map, "name_table", None)
        try:
            self._names = table() if table is not None else getattr(self.map, "names", None)
        except MapError:  # a map without metadata (in-memory): searches still work
            pass
        hold_blas(SEARCH_BLAS_THREADS)
        self.estimator = Estimator(
            self._positions, self.position_kind, far_radius, far_frames, margin_scale, near_radius
        )
        self.reranker = None
        if rerank is not None:
            from .rerank import RerankConfig, RerankStage

            config = rerank if isinstance(rerank, RerankConfig) else RerankConfig(k=int(rerank))
            self.reranker = RerankStage.create(self.engine, self.map, config)

    @property
    def far_radius(self) -> float:
        return self.estimator.far_radius

    @property
    def far_frames(self) -> int:
        return self.estimator.far_frames

    @property
    def margin_scale(self) -> float:
        return self.estimator.margin_scale

    @property
    def near_radius(self) -> float:
        return self.estimator.near_radius

    @property
    def rerank(self):
        """The active :class:`~sfrs_edge.rerank.RerankConfig`, or None (re-ranking off)."""
        return self.reranker.config if self.reranker is not None else None

    def __repr__(self) -> str:
        return f"Localizer({self.engine!r}, {self.map!r}, k={self.k})"

    # --- public -------------------------------------------------------------------------

    def localize(self, frame_bgr: np.ndarray) -> LocalizationResult:
        """Where was this frame taken? ``frame_bgr``: uint8 HxWx3 BGR (gray/BGRA/16-bit ok)."""
        return self._localize(frame_bgr, {"decode": 0.0}, None, time.perf_counter())[0]

    def localize_scores(self, frame_bgr: np.ndarray) -> tuple[LocalizationResult, np.ndarray]:
        """:meth:`localize`, plus the frame's similarity to every map place (N,) float32.

        Exact maps give true similarities; HNSW maps true similarities for the candidates, the
        ``focus`` rows and a fixed sample of rows, and the sample's mean for every other place
        (:func:`~sfrs_edge.stream.filtering.partial_scores`).
        """
        t0 = time.perf_counter()
        result, found = self._localize(frame_bgr, {"decode": 0.0}, None, t0, True)
        return result, found.scores

    def localize_for_filter(
        self, frame_bgr: np.ndarray, focus: np.ndarray | None = None
    ) -> tuple[LocalizationResult, np.ndarray, tuple[float, float] | None]:
        """:meth:`localize_scores` for a temporal filter: also scores the rows ``focus`` (the
        filter's :meth:`~sfrs_edge.stream.filtering.TemporalFilter.focus`) exactly and returns
        the z-score statistics for ``TemporalFilter.update`` (None when every row is exact)."""
        result, frame = self.localize_evidence(frame_bgr, focus)
        return result, frame.dense(), frame.stats

    def localize_evidence(
        self, frame_bgr: np.ndarray, focus: np.ndarray | None = None
    ) -> tuple[LocalizationResult, FrameScores]:
        """:meth:`localize` for a temporal filter: the result and the frame's
        :class:`~sfrs_edge.stream.filtering.FrameScores` (the rows that carry evidence, with
        ``focus`` scored exactly), for :meth:`TemporalFilter.observe`. O(k + focus) after
        the search on HNSW maps."""
        t0 = time.perf_counter()
        result, found = self._localize(frame_bgr, {"decode": 0.0}, None, t0, True, focus)
        return result, found.frame

    def localize_descriptors(
        self, descriptors: np.ndarray, sources: list[str] | None = None
    ) -> list[LocalizationResult]:
        """Results for descriptors already computed (e.g. batched by ``Engine.embed_files``):
        the same search and estimate as :meth:`localize`, one result per row."""
        n = min(len(self.map), max(self.k, CANDIDATES))
        ids, sims = self.map.search(descriptors, n, self.ef)
        sources = sources or [None] * len(ids)
        return [
            self._result(i, s, None, {}, src) for i, s, src in zip(ids, sims, sources, strict=True)
        ]

    def match(self, place_id: int, similarity: float, score: float | None = None) -> Match:
        """A :class:`Match` for map row ``place_id`` (its name and position)."""
        return self.matches([place_id], [similarity], None if score is None else [score])[0]

    def matches(self, ids, similarities, scores=None) -> list[Match]:
        """:class:`Match` es for map rows ``ids`` (names and positions held in memory);
        ``scores``: their ordering scores when re-ranked (default: the similarities)."""
        if self._names is None:
            names = [p.name for p in self.map.places(ids)]
        else:
            n = len(self._names)
            bad = [int(i) for i in ids if not 0 <= int(i) < n]
            if bad:
                raise MapError(f"place id {bad[0]} is not in this map (0..{n - 1})")
            names = [self._names[int(i)] for i in ids]
        out = []
        scores = similarities if scores is None else scores
        for i, s, f, name in zip(ids, similarities, scores, names, strict=True):
            i = int(i)
            pos = self._positions[i] if self._positions.shape[1] else None
            known = pos is not None and not np.isnan(pos).any()
            out.append(
                Match(
                    id=i,
                    name=name,
                    similarity=round(float(s), 6),
                    position=tuple(float(v) for v in pos) if known else None,
                    score=round(float(f), 6),
                )
            )
        return out

    def stream(
        self,
        frames,
        filter="seq",  # noqa: A002
        window: int = 5,
        in_flight: int | None = None,
        **filter_options: Any,
    ):
        """Localize an iterable of frames lazily: one :class:`~sfrs_edge.stream.sequence.StreamResult`
        per frame, in frame order, with the per-frame and the temporally filtered answer.

        ``frames``: uint8 BGR arrays or :class:`~sfrs_edge.video.Frame` s (e.g. a
        :class:`~sfrs_edge.stream.FrameStream`). ``filter``: ``seq`` (the default everywhere, see
        :class:`~sfrs_edge.stream.filtering.FilterConfig`), ``hmm`` or ``none``, or a
        ``FilterConfig``; ``window`` and ``filter_options`` (its other fields) configure it.
        ``in_flight``: frames localized at the same time (None:
        :data:`~sfrs_edge.stream.sequence.DEFAULT_IN_FLIGHT`).
        """
        from .stream.filtering import FilterConfig
        from .stream.sequence import DEFAULT_IN_FLIGHT, localize_stream

        if isinstance(filter, FilterConfig):
            config = filter
        else:
            config = FilterConfig(method=filter, window=window, **filter_options)
        flight = DEFAULT_IN_FLIGHT if in_flight is None else in_flight
        return localize_stream(self, frames, config, flight)

    def localize_file(self, path: str | os.PathLike) -> LocalizationResult:
        """Read an image file (clear ImageError when unreadable) and localize it.

        A JPEG whose data is damaged is still answered (a robot's frame is better judged than
        dropped), with ``damaged=True`` in the result and a warning logged: the answer may be
        wrong. Map images with damaged data are refused instead (they would stay wrong).
        """
        t0 = time.perf_counter()
        decoded = read_image_tolerant(path)
        times = {"decode": time.perf_counter() - t0}
        result = self._localize(decoded.image, times, str(path), t0)[0]
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
        all_scores: bool = False,
        focus: np.ndarray | None = None,
    ) -> tuple[LocalizationResult, Candidates]:
        """Embed → search → re-rank → estimate; ``times`` collects seconds per stage."""
        rk = self.reranker.config.k if self.reranker is not None else 0
        n = min(len(self.map), max(self.k, CANDIDATES, rk))
        if self.reranker is not None:
            outputs = self.engine.embed_frame_all(frame, times)
            desc = outputs["descriptor"]
        else:
            desc = self.engine.embed_frame(frame, times)
        t = time.perf_counter()
        found = search(self.map, desc, n, self.ef, all_scores, focus)
        times["search"] = time.perf_counter() - t
        verified = None
        if self.reranker is not None:
            t, cpu = time.perf_counter(), time.thread_time()
            found, verified = rerank_candidates(self.reranker, outputs, found)
            times["rerank"] = time.perf_counter() - t
            times["rerank_cpu"] = time.thread_time() - cpu  # this thread's: no hidden pools
        result = self._result(found.ids, found.sims, verified, times, source, t0)
        return result, found

    def _result(
        self,
        ids: np.ndarray,
        sims: np.ndarray,
        verified: Any,
        times: dict[str, float],
        source: str | None,
        t0: float | None = None,
    ) -> LocalizationResult:
        """The answer for ranked candidates (``verified``: the re-ranking result, or None).

        The estimate weighs the scores the candidates are ordered by: the fused scores of the
        re-ranked head, then the global similarities of the rest (no evidence: fused equals
        similarity), so the best match printed first is the one the position centres on."""
        scores = sims
        if verified is not None:
            head = np.asarray(verified.scores, np.float64)
            tail = np.asarray(sims[len(head) :], np.float64)
            if len(head) and len(tail) and tail[0] > head[-1]:
                # a fusion on another scale (e.g. z-scores): the rest stays below the head, in
                # its own order, so the scores remain the ranking
                tail = tail - (tail[0] - head[-1]) - 1e-6
            scores = np.concatenate([head, tail])
        est = self.estimator.estimate(
            ids, scores, self.k, None if verified is None else verified.evidence
        )
        matches = self.matches(ids[: self.k], sims[: self.k], scores[: self.k])
        if verified is not None:
            inl = verified.inliers
            matches = [
                replace(m, inliers=int(inl[j])) if j < len(inl) else m
                for j, m in enumerate(matches)
            ]
        if t0 is not None:
            times["total"] = time.perf_counter() - t0
        return LocalizationResult(
            matches=tuple(matches),
            position=est.position,
            position_kind=self.position_kind,
            confidence=est.confidence,
            margin=est.margin,
            timings={key: round(v * 1000.0, 3) for key, v in times.items()},
            source=source,
            reranked=verified is not None,
        )


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
