"""A camera loop's input side: decode in a thread, hand the consumer only the newest frame.

::

    with FrameStream("drive.mp4") as frames:      # or FrameStream(0) for camera 0
        for frame in frames:                      # video.Frame, newest available
            result = localizer.localize(frame.image)
    print(frames.dropped, frames.corrupt)

The decode thread writes each frame into a one-frame slot (:class:`LatestFrame`). When the
consumer (the model) is slower than the camera, a frame still unread when the next one
arrives is **dropped** (counted in :attr:`FrameStream.dropped`) instead of queued, so the
consumer always works on the newest frame and latency does not grow. ``drop=False`` makes the
thread wait for the consumer instead (every frame processed, for offline runs).

A video file is played at its own frame rate (``realtime=True``, the default for files when
``drop`` is on; ``fps`` overrides the rate), as a camera would deliver it; ``realtime=False``
decodes as fast as possible. A camera is always real time. At end of file iteration stops
cleanly after the last frame; a camera or file that cannot be opened raises
:class:`~sfrs_edge.video.VideoError` in the constructor, and an error inside the decode thread
is re-raised in the consumer.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

from ..video.reader import Frame, VideoSource


class LatestFrame:
    """A one-frame mailbox between a producer thread and a consumer.

    ``put`` replaces an unread frame (counting it in :attr:`dropped`) when ``drop``; otherwise
    it waits until the consumer took the previous one. ``get`` waits for a frame and returns
    None once the producer called :meth:`close` and nothing is left.
    """

    def __init__(self, drop: bool = True) -> None:
        self.drop = drop
        self.dropped = 0
        self._frame: Frame | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """Offer a frame; False when the slot was closed by the consumer (stop producing)."""
        with self._cond:
            if not self.drop:
                self._cond.wait_for(lambda: self._frame is None or self._closed)
            if self._closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()
            return True

    def close(self, error: BaseException | None = None) -> None:
        """No more frames (``error``: the producer failed; ``get`` re-raises it)."""
        with self._cond:
            self._closed = True
            self._error = self._error or error
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest unread frame; None at the end. Raises the producer's error, if any."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout):
                raise TimeoutError("no frame within the timeout")
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            if frame is None and self._error is not None:
                raise self._error
            return frame


class FrameStream:
    """Frames of a video file or camera, decoded in a background thread. See module doc."""

    def __init__(
        self,
        source: str | os.PathLike | int | VideoSource,
        fps: float | None = None,
        realtime: bool | None = None,
        drop: bool = True,
    ) -> None:
        self.video = source if isinstance(source, VideoSource) else VideoSource(source, fps)
        self.realtime = (drop and not self.video.is_camera) if realtime is None else realtime
        self.rate = fps or self.video.fps or 30.0
        self.slot = LatestFrame(drop)
        self.delivered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sfrs-edge-decode", daemon=True)
        self._started = False

    @property
    def dropped(self) -> int:
        """Frames decoded but never handed out (the consumer was busy)."""
        return self.slot.dropped

    @property
    def corrupt(self) -> int:
        """Frames of the source that could not be decoded (skipped)."""
        return self.video.corrupt

    @property
    def decoded(self) -> int:
        return self.video.decoded

    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            frame = self.slot.get()
            if frame is None:
                return
            self.delivered += 1
            yield frame

    def close(self) -> None:
        """Stop decoding and release the source (safe to call twice, and from ``finally``)."""
        self._stop.set()
        self.slot.close()
        if self._started:
            self._thread.join(timeout=5.0)
        self.video.close()

    def _run(self) -> None:
        start = None
        try:
            for frame in self.video:
                if self._stop.is_set():
                    break
                if self.realtime and not self.video.is_camera:
                    # play the file as a camera would deliver it: frame i at i / rate
                    now = time.perf_counter()
                    start = now - frame.index / self.rate if start is None else start
                    wait = start + frame.index / self.rate - now
                    if wait > 0 and self._stop.wait(wait):
                        break
                    frame = Frame(frame.index, frame.timestamp, frame.image, time.perf_counter())
                if not self.slot.put(frame):
                    break
        except BaseException as exc:  # surfaced in the consumer by slot.get
            self.slot.close(exc)
            return
        self.slot.close()
