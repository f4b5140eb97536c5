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
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from ..results import LocalizationResult, Match
from .filtering import FilterConfig, TemporalFilter


class FrameLocalizer(Protocol):
    """What a stream needs of a :class:`~sfrs_edge.localize.Localizer` (which calls this module
    from ``Localizer.stream``, so the dependency runs one way only)."""

    def localize_for_filter(
        self, frame_bgr: np.ndarray, focus: np.ndarray | None = None
    ) -> tuple[LocalizationResult, np.ndarray, tuple[float, float] | None]: ...

    def match(self, place_id: int, similarity: float) -> Match: ...


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
) -> Iterator[StreamResult]:
    """Results for ``frames`` one by one (lazy: a frame is read only when the last is done).

    ``dropped`` of each result is ``frames.dropped`` when the input counts dropped frames
    (a :class:`~sfrs_edge.stream.FrameStream`), else 0.
    """
    config = config or FilterConfig()
    filt = TemporalFilter(config) if config.method != "none" else None
    for n, item in enumerate(frames):
        index, ts, image, captured = _unpack(item, n)
        result, scores, stats = localizer.localize_for_filter(
            image, filt.focus() if filt is not None else None
        )
        filtered = score = None
        t0 = time.perf_counter()
        if filt is not None:
            smoothed = filt.update(scores, index, stats)
            best = int(np.argmax(smoothed))
            filtered, score = localizer.match(best, float(scores[best])), float(smoothed[best])
        t_filter = time.perf_counter() - t0
        latency = (time.perf_counter() - captured) * 1000.0
        timings = dict(result.timings, filter=round(t_filter * 1000.0, 3))
        yield StreamResult(
            index=index,
            timestamp=ts,
            result=result,
            filtered=filtered,
            filtered_score=None if score is None else round(score, 6),
            latency_ms=round(latency, 3),
            dropped=int(getattr(frames, "dropped", 0)),
            timings=timings,
        )
