"""OpenCV's decoder pixel limit, set before ``cv2`` is first imported.

OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, while its library loads (a static initialiser
run by ``import cv2``); setting it later has no effect. ``sfrs_edge/__init__.py`` imports this
module first, so the limit is in place whenever sfrs-edge is the first to import ``cv2``.
It is the second line of defence: :mod:`sfrs_edge.images` checks every header first (with a
per-format bound on the decoder's memory) and refuses formats it has no header parser for.
"""

from __future__ import annotations

import os

MAX_PIXELS = 100_000_000  # 100 MP: far above any camera frame, 1/10 of OpenCV's default
ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"

os.environ.setdefault(ENV, str(MAX_PIXELS))
