"""Files already verified, remembered by ``stat``: one cache for model digests and map checksums.

Hashing a 550 MB model or a large map takes seconds, and their files are written once and not
modified in place. A file whose content matched its expected digest is recorded under
``(device, inode, size, mtime_ns)`` with that digest: any later write through the filesystem
changes the mtime, so a hit means the bytes are those that were hashed.

- **Racy files are never trusted.** An entry recorded less than :data:`RACY_S` after the file's
  mtime is not trusted (a write in the same timestamp tick as the hash could keep the mtime);
  the next check rehashes and records it afresh.
- **What it cannot see:** bytes changed without a write through the filesystem (media bit rot,
  a deliberate mtime reset). ``SFRS_EDGE_VERIFY=full`` turns the cache off (every model open
  and map open rehashes); ``sfrs-edge map verify`` and ``Map.open(verify="full")`` always do.
- **Where:** ``$SFRS_EDGE_CACHE``, else ``$XDG_CACHE_HOME/sfrs-edge``, else
  ``~/.cache/sfrs-edge``; file ``verified-files.json``. An unwritable cache only means
  rehashing next time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_NAME = "verified-files.json"
RACY_S = 2.0
MAX_ENTRIES = 4096
ENV_VERIFY = "SFRS_EDGE_VERIFY"  # "full": trust nothing, rehash every time
_lock = threading.Lock()
_memory: dict[str, dict] = {}


def cache_dir() -> Path:
    """``$SFRS_EDGE_CACHE``, else ``$XDG_CACHE_HOME/sfrs-edge``, else ``~/.cache/sfrs-edge``."""
    root = os.environ.get("SFRS_EDGE_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "sfrs-edge"


def cache_file() -> Path:
    return cache_dir() / CACHE_NAME


def full_verification() -> bool:
    """True when ``SFRS_EDGE_VERIFY=full``: the cache is not consulted."""
    return os.environ.get(ENV_VERIFY, "").strip().lower() == "full"


def stat_key(st: os.stat_result) -> str:
    """The cache key of one file version."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _load() -> dict[str, dict]:
    try:
        data = json.loads(cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def known_digest(st: os.stat_result) -> str | None:
    """The digest this exact file version was hashed to earlier, when that can be trusted (not
    racy, and ``SFRS_EDGE_VERIFY`` is not ``full``); else None."""
    if full_verification():
        return None
    key = stat_key(st)
    with _lock:
        entry = _memory.get(key)
        if entry is None:
            entry = _load().get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        return None
    recorded = entry.get("recorded_ns")
    if not isinstance(recorded, int) or recorded - st.st_mtime_ns <= RACY_S * 1e9:
        return None
    return entry["sha256"]


def is_verified(st: os.stat_result, digest: str) -> bool:
    """True when this exact file version was hashed to ``digest`` earlier (see
    :func:`known_digest`)."""
    return known_digest(st) == digest


def record(entries: list[tuple[os.stat_result, str]]) -> None:
    """Remember files just hashed to their digests (best effort: a failure costs a rehash)."""
    if not entries:
        return
    t = time.time_ns()
    with _lock:
        new = {stat_key(st): {"sha256": digest, "recorded_ns": t} for st, digest in entries}
        _memory.update(new)
        path = cache_file()
        try:
            data = _load()
            data.update(new)
            if len(data) > MAX_ENTRIES:
                keep = sorted(data.items(), key=lambda kv: kv[1].get("recorded_ns", 0))
                data = dict(keep[-MAX_ENTRIES:])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                tmp.write_text(json.dumps(data))
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot write the verification cache %s: %s", path, exc)


def forget() -> None:
    """Drop every entry, in memory and on disk (benchmarks measuring a cold open)."""
    with _lock:
        _memory.clear()
        cache_file().unlink(missing_ok=True)
