"""Helpers that assemble test videos from real images (no video files are committed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = (320, 180)  # w, h: small frames keep tests fast; the tiny model takes 160x96


def write_video(path: Path, images: list[Path], fps: float = 10.0, size=SIZE) -> Path:
    """MJPG .avi of ``images`` resized to ``size`` (works with opencv-python-headless)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened(), "cv2.VideoWriter cannot write MJPG .avi here"
    for f in images:
        writer.write(cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


def corrupt_frames(src: Path, dst: Path, frames: list[int]) -> Path:
    """Copy ``src`` with the JPEG data of the given frame numbers zeroed (size unchanged)."""
    data = bytearray(src.read_bytes())
    raw = np.frombuffer(bytes(data), np.uint8)
    soi = np.flatnonzero((raw[:-1] == 0xFF) & (raw[1:] == 0xD8))
    for i in frames:
        start, end = int(soi[i]), int(soi[i + 1])
        data[start : end - 16] = bytes(end - 16 - start)
    dst.write_bytes(bytes(data))
    return dst
