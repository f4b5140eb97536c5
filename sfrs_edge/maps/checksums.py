"""sha256 of map files; files already verified are remembered by :mod:`sfrs_edge.verify_cache`
(the one cache for models and maps, with its rules), so warm opens skip rehashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..verify_cache import RACY_S, cache_file, is_verified, record

__all__ = ["RACY_S", "cache_file", "is_verified", "record", "sha256_fd", "sha256_file"]


def sha256_fd(fd: int, chunk: int = 1 << 22) -> str:
    """sha256 of an open file's whole content (reads with pread: the offset is untouched)."""
    h = hashlib.sha256()
    pos = 0
    while True:
        block = os.pread(fd, chunk, pos)
        if not block:
            return h.hexdigest()
        h.update(block)
        pos += len(block)


def sha256_file(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)
