"""Decode video files and cameras into timestamped frames (OpenCV ``cv2.VideoCapture``).

::

    with VideoSource("drive.mp4") as video:      # or VideoSource(0) for camera 0
        for frame in video:                       # Frame(index, timestamp, image, captured)
            ...
    print(video.corrupt)                          # frames that could not be decoded

**Timestamps.** For a file, ``timestamp`` is the frame's presentation time in seconds from the
start of the file (``CAP_PROP_POS_MSEC`` after the read, which stays right after a corrupt
frame, unlike ``CAP_PROP_POS_FRAMES``); when the container gives none, ``index / fps``. For a
camera, it is seconds since the camera was opened (monotonic clock).

**Corrupt frames.** A file whose container says it holds ``N`` frames and whose read fails
before ``N`` attempts has a corrupt frame there: it is skipped and counted in
:attr:`VideoSource.corrupt` (``index`` keeps counting it, so indices stay the frame numbers of
the file). After ``max_bad_frames`` failures in a row the source is treated as ended (a
truncated file). A camera that stops delivering frames for ``max_bad_frames`` reads ends too.

**Bounds.** Only regular files are opened (``is_file``: FIFOs and devices are refused); frames
over ``MAX_PIXELS`` (100 MP) and every OpenCV error raise :class:`VideoError` naming the
source; memory per frame is one decoded frame (3 bytes per pixel) plus FFmpeg's buffers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageError
from ..images import MAX_PIXELS, check_utf8_name, opencv_message

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
MAX_BAD_FRAMES = 25
# Camera numbers are /dev/videoN-style indices. OpenCV's VideoCapture(-1) ("any camera")
# segfaults inside its V4L2 backend when no camera exists, so negatives are refused here; the
# upper end is what OpenCV's C ``int`` index holds.
MAX_CAMERA = 2**31 - 1


class VideoError(ImageError):
    """A video file or camera cannot be opened or read."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` uint8 BGR; ``captured`` = ``time.perf_counter()`` at decode."""

    index: int
    timestamp: float
    image: np.ndarray
    captured: float


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """OpenCV's own log below ERROR off: a failed open prints ``[ WARN ...]`` lines of every
    backend it tried, before (and instead of) the one-line error this module raises."""
    logging_api = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_api is None:  # pragma: no cover - OpenCV builds without the logging module
        yield
        return
    level = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging_api.setLogLevel(level)


def _capture(source: str | int, name: str) -> cv2.VideoCapture:
    try:
        with _quiet_opencv():
            return cv2.VideoCapture(source)
    except cv2.error as exc:
        raise VideoError(f"{name}: cannot be opened ({opencv_message(exc)})") from None


def is_video(path: str | os.PathLike) -> bool:
    """True when ``path`` names a file with a video suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoSource:
    """A video file or a camera, read frame by frame. Iterate it (once) for :class:`Frame` s.

    ``source``: a path, or an int camera number. ``fps``: ask a camera for this rate (a file's
    rate is what the file says). Opening raises :class:`VideoError` with a clear message when
    the file is missing or not decodable, or the camera cannot be opened.
    """

    def __init__(
        self,
        source: str | os.PathLike | int,
        fps: float | None = None,
        max_bad_frames: int = MAX_BAD_FRAMES,
    ) -> None:
        self.is_camera = isinstance(source, int)
        self.name = f"camera {source}" if self.is_camera else str(source)
        self.max_bad_frames = max_bad_frames
        self.corrupt = 0  # frames skipped because they could not be decoded
        self.decoded = 0
        if not self.is_camera:
            path = Path(source).expanduser()
            if not path.is_file():
                raise VideoError(f"{path}: no such video file")
            if path.stat().st_size == 0:
                raise VideoError(f"{path}: video file is empty (0 bytes)")
            check_utf8_name(path)
            self._cap = _capture(str(path), self.name)
            if not self._cap.isOpened():
                raise VideoError(
                    f"{path}: cannot open as a video (unsupported container/codec or corrupt "
                    "file; OpenCV's FFmpeg backend reads .mp4/.avi/.mkv/...)"
                )
        else:
            if isinstance(source, bool) or not 0 <= source <= MAX_CAMERA:
                raise VideoError(
                    f"camera {source!r}: not a camera number (0, 1, ... up to {MAX_CAMERA}; "
                    "0 is the first camera)"
                )
            self._cap = _capture(int(source), self.name)
            if not self._cap.isOpened():
                self._cap.release()
                raise VideoError(
                    f"camera {source}: cannot be opened (no such device, in use by another "
                    "program, or no permission; list devices with `v4l2-ctl --list-devices` "
                    "on Linux)"
                )
            if fps:
                self._cap.set(cv2.CAP_PROP_FPS, float(fps))
        rate = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = rate if rate > 0 and np.isfinite(rate) else (fps or None)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: int | None = count if count > 0 and not self.is_camera else None
        self._t0 = time.monotonic()
        self._used = False

    def __repr__(self) -> str:
        return f"VideoSource({self.name}, fps {self.fps}, frames {self.frame_count})"

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file or camera (safe to call twice)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __iter__(self) -> Iterator[Frame]:
        if self._used:
            raise VideoError(f"{self.name}: a VideoSource can be iterated only once; reopen it")
        self._used = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        attempt = 0  # frame number in the source, corrupt frames included
        bad_run = 0
        while self._cap is not None:
            try:
                ok, image = self._cap.read()
            except cv2.error as exc:
                raise VideoError(f"{self.name}: frame {attempt}: {opencv_message(exc)}") from None
            captured = time.perf_counter()
            if not ok or image is None or image.size == 0:
                if self._may_be_corrupt(attempt) and bad_run < self.max_bad_frames:
                    bad_run += 1
                    self.corrupt += 1
                    log.warning("%s: frame %d could not be decoded; skipped", self.name, attempt)
                    attempt += 1
                    continue
                if bad_run >= self.max_bad_frames:
                    log.warning("%s: %d unreadable frames in a row; stopping", self.name, bad_run)
                return
            if image.shape[0] * image.shape[1] > MAX_PIXELS:
                raise VideoError(
                    f"{self.name}: frames are {image.shape[1]}x{image.shape[0]}, over the "
                    f"{MAX_PIXELS // 1_000_000} MP limit"
                )
            bad_run = 0
            self.decoded += 1
            yield Frame(attempt, self._timestamp(attempt), image, captured)
            attempt += 1

    def _may_be_corrupt(self, attempt: int) -> bool:
        if self.is_camera:
            return True
        return self.frame_count is not None and attempt < self.frame_count

    def _timestamp(self, index: int) -> float:
        if self.is_camera:
            return time.monotonic() - self._t0
        ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        if (ms > 0 or index == 0) and np.isfinite(ms):
            return ms / 1000.0
        return index / self.fps if self.fps else float(index)
