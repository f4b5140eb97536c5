"""OpenCV's decoder pixel limit, set before ``cv2`` is first imported.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, while its library loads (a static initialiser
run by ``import cv2``); setting it later has no effect. ``sfrs_edge/__init__.py`` imports this
module first, so the limit is in place whenever sfrs-edge is the first to import ``cv2``.
"""

from __future__ import annotations

import os
import sys

MAX_PIXELS = 100_000_000  # 100 MP: far above any camera frame, 1/10 of OpenCV's default
ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"

_cv2_loaded_before = "cv2" in sys.modules
os.environ.setdefault(ENV, str(MAX_PIXELS))
_value_at_load = os.environ.get(ENV, "")


def opencv_limit_active() -> bool:
    """True when OpenCV's own pixel limit is known to be at most :data:`MAX_PIXELS`."""
    if _cv2_loaded_before:
        return False
    try:
        return 0 < int(_value_at_load) <= MAX_PIXELS
    except ValueError:
        return False
