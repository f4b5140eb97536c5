"""sha256 of map files, and a record of files already verified so warm opens skip rehashing.

Every map file is written once and never modified (updates write a new generation). A file
whose sha256 matched its manifest is recorded in a small cache keyed by
``(device, inode, size, mtime_ns)``: any later write to the file changes its mtime, so a hit
means the bytes are those that were hashed. Entries younger than :data:`RACY_S` (the file was
modified within that long before it was hashed, where a same-tick write could keep its mtime)
are not trusted. What the cache cannot see: bytes changed without a write through the
filesystem (media bit rot, a deliberate mtime reset). ``sfrs-edge map verify`` and
``Map.open(verify="full")`` always rehash.

Cache: ``$SFRS_EDGE_CACHE`` or ``$XDG_CACHE_HOME/sfrs-edge`` (``~/.cache/sfrs-edge``),
file ``verified-map-files.json``; unwritable caches just mean rehashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

RACY_S = 2.0
MAX_ENTRIES = 4096
_lock = threading.Lock()
_memory: dict[str, dict] = {}


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


def cache_file() -> Path:
    root = os.environ.get("SFRS_EDGE_CACHE")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "sfrs-edge")
    return Path(root) / "verified-map-files.json"


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _load() -> dict[str, dict]:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def is_verified(st: os.stat_result, sha256: str) -> bool:
    """True when this exact file version was hashed to ``sha256`` earlier (and not racily)."""
    key = _key(st)
    with _lock:
        entry = _memory.get(key)
        if entry is None:
            entry = _load().get(key)
    if not isinstance(entry, dict) or entry.get("sha256") != sha256:
        return False
    recorded = entry.get("recorded_ns")
    return isinstance(recorded, int) and recorded - st.st_mtime_ns > RACY_S * 1e9


def record(entries: list[tuple[os.stat_result, str]]) -> None:
    """Remember files just hashed (best effort; failures only cost a rehash later)."""
    if not entries:
        return
    t = time.time_ns()
    with _lock:
        new = {_key(st): {"sha256": sha, "recorded_ns": t} for st, sha in entries}
        _memory.update(new)
        path = cache_file()
        try:
            data = _load()
            data.update(new)
            if len(data) > MAX_ENTRIES:
                keep = sorted(data.items(), key=lambda kv: kv[1].get("recorded_ns", 0))
                data = dict(keep[-MAX_ENTRIES:])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write the verification cache %s: %s", path, exc)
