"""Localize a sequence of frames: the per-frame answer and a temporally filtered one.

Used by :meth:`sfrs_edge.localize.Localizer.stream` and ``sfrs-edge localize --video/--camera``.
Each input item is a :class:`~sfrs_edge.video.Frame` (from :class:`~sfrs_edge.stream.FrameStream`
or :class:`~sfrs_edge.video.VideoSource`) or a plain uint8 BGR array. Each output is a
:class:`StreamResult` holding the frame's own :class:`~sfrs_edge.results.LocalizationResult`,
the filtered best place (see :mod:`sfrs_edge.stream.filtering`), and the latency from capture (decode
of the frame) to result.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError
from ..results import LocalizationResult, Match
from .filtering import FilterConfig, FrameScores, TemporalFilter


class FrameLocalizer(Protocol):
    """What a stream needs of a :class:`~sfrs_edge.localize.Localizer` (which calls this module
    from ``Localizer.stream``, so the dependency runs one way only)."""

    def localize_evidence(
        self, frame_bgr: np.ndarray, focus: np.ndarray | None = None
    ) -> tuple[LocalizationResult, FrameScores]: ...

    def localize(self, frame_bgr: np.ndarray) -> LocalizationResult: ...

    def match(self, place_id: int, similarity: float) -> Match: ...


# Frames localized at the same time by default, chosen by `benchmarks.loop_scale --parts camera`
# on the 2-core machine (docs/BENCHMARKS.md, "Camera loop at scale"): over three interleaved runs
# a second frame in flight changed frames/s by -6 % to +41 % (median +5 %) at the same CPU per
# frame, and raised the median capture-to-result latency in 17 of 18 pairs (by up to 135 ms):
# one frame already keeps the cores busy. `in_flight=2` is for a machine with idle cores.
DEFAULT_IN_FLIGHT = 1


@dataclass(frozen=True)
class StreamResult:
    """One processed frame. ``filtered`` is None with ``method='none'``."""

    index: int
    timestamp: float | None
    result: LocalizationResult
    filtered: Match | None
    filtered_score: float | None
    latency_ms: float
    dropped: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Match:
        """The filtered answer when filtering, else the frame's own best match."""
        return self.filtered if self.filtered is not None else self.result.best

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["result"] = self.result.to_dict()
        return d


def _unpack(item: Any, n: int) -> tuple[int, float | None, np.ndarray, float]:
    image = getattr(item, "image", None)
    if image is not None:
        return int(item.index), float(item.timestamp), image, float(item.captured)
    return n, None, item, time.perf_counter()


def localize_stream(
    localizer: FrameLocalizer,
    frames: Iterable[Any],
    config: FilterConfig | None = None,
    in_flight: int = DEFAULT_IN_FLIGHT,
) -> Iterator[StreamResult]:
    """Results for ``frames`` one by one, in frame order (lazy: at most ``in_flight`` frames
    are read ahead of the last result).

    ``in_flight`` > 1 localizes that many frames at the same time on worker threads (the
    network, search and re-ranking release the GIL, so they use as many cores); the temporal
    filter then runs in frame order as each result comes back, and a frame's search scores the
    focus of the filter as it stood when the frame was read (up to ``in_flight − 1`` frames
    older; the focus reaches ``window + 1`` steps around the belief, which covers it).
    ``dropped`` of each result is ``frames.dropped`` when the input counts dropped frames
    (a :class:`~sfrs_edge.stream.FrameStream`), else 0.
    """
    if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
        raise ConfigError(f"frames in flight must be a whole number >= 1, got {in_flight!r}")
    config = config or FilterConfig()
    filt = TemporalFilter(config) if config.method != "none" else None

    def work(image: np.ndarray, focus: np.ndarray | None):
        if filt is None:  # no filter: the frame's own answer, no evidence rows to score
            return localizer.localize(image), None
        return localizer.localize_evidence(image, focus)

    def finish(meta, result, frame) -> StreamResult:
        index, ts, captured = meta
        filtered = score = None
        t0 = time.perf_counter()
        if filt is not None:
            best, score = filt.observe(frame, index)
            # a place among the frame's own matches keeps its similarity and (fused) score
            known = {m.id: m for m in result.matches}
            filtered = known.get(best) or localizer.match(best, frame.similarity(best))
        t_filter = time.perf_counter() - t0
        latency = (time.perf_counter() - captured) * 1000.0
        timings = dict(result.timings, filter=round(t_filter * 1000.0, 3))
        return StreamResult(
            index=index,
            timestamp=ts,
            result=result,
            filtered=filtered,
            filtered_score=None if score is None else round(score, 6),
            latency_ms=round(latency, 3),
            dropped=int(getattr(frames, "dropped", 0)),
            timings=timings,
        )

    if in_flight == 1:
        for n, item in enumerate(frames):
            index, ts, image, captured = _unpack(item, n)
            result, frame = work(image, filt.focus() if filt is not None else None)
            yield finish((index, ts, captured), result, frame)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(in_flight, thread_name_prefix="sfrs-edge-frame") as pool:
        try:
            for n, item in enumerate(frames):
                index, ts, image, captured = _unpack(item, n)
                focus = filt.focus() if filt is not None else None
                pending.append(((index, ts, captured), pool.submit(work, image, focus)))
                if len(pending) >= in_flight:
                    meta, fut = pending.popleft()
                    yield finish(meta, *fut.result())
            while pending:
                meta, fut = pending.popleft()
                yield finish(meta, *fut.result())
        finally:
            for _, fut in pending:  # the consumer stopped early: drop what is still queued
                fut.cancel()
