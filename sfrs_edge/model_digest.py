"""A digest of an ONNX file's content, stored inside the file at export and checked at open.

The digest is SHA-256 over every top-level field of the ``ModelProto`` (graph, weights
(initializers), opsets, the ``sfrs_edge`` metadata ...) except the metadata entry that holds
the digest itself. It is computed on the serialised bytes with a minimal protobuf walk, so the
runtime needs neither the ``onnx`` package nor a copy of a 500 MB file in memory (the file is
memory-mapped). Models with weights in external data files are not covered beyond the graph.

Hashing a 550 MB VGG16 takes about a second, so verified digests are cached by
(resolved path, size, mtime_ns) in ``$SFRS_EDGE_HOME/model-digests.json``; an unwritable cache
only means rehashing next time. The cache trusts that a file whose size and modification time
are unchanged has unchanged content; set ``SFRS_EDGE_VERIFY=full`` to rehash on every open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
from pathlib import Path

from .errors import ModelError

log = logging.getLogger(__name__)

DIGEST_KEY = "sfrs_edge.digest"
_METADATA_FIELD = 14  # ModelProto.metadata_props
CACHE_NAME = "model-digests.json"
CACHE_ENTRIES = 32


class _Malformed(ValueError):
    pass


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= end or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, field start, payload start, field end) of each field."""
    i = start
    while i < end:
        begin = i
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i, end)
            payload = i
        elif wire == 1:
            payload, i = i, i + 8
        elif wire == 5:
            payload, i = i, i + 4
        elif wire == 2:
            size, payload = _varint(buf, i, end)
            i = payload + size
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if i > end or number == 0:
            raise _Malformed("field runs past the end")
        yield number, wire, begin, payload, i


def _entry_key(buf, start: int, end: int) -> bytes | None:
    for number, wire, _, payload, stop in _fields(buf, start, end):
        if number == 1 and wire == 2:
            return bytes(buf[payload:stop])
    return None


def _entry_value(buf, start: int, end: int) -> bytes | None:
    for number, wire, _, payload, stop in _fields(buf, start, end):
        if number == 2 and wire == 2:
            return bytes(buf[payload:stop])
    return None


def scan(data) -> tuple[str, dict[str, str]]:
    """(digest hex, metadata dict) of serialised ONNX bytes (bytes, mmap or memoryview)."""
    view = memoryview(data)
    h = hashlib.sha256()
    meta: dict[str, str] = {}
    try:
        for number, wire, begin, payload, stop in _fields(view, 0, len(view)):
            if number == _METADATA_FIELD and wire == 2:
                key = _entry_key(view, payload, stop)
                value = _entry_value(view, payload, stop)
                if key is not None:
                    meta[key.decode("utf-8", "replace")] = (value or b"").decode("utf-8", "replace")
                if key == DIGEST_KEY.encode():
                    continue
            h.update(view[begin:stop])
    finally:
        view.release()
    return "sha256:" + h.hexdigest(), meta


def file_digest(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """:func:`scan` of a file, memory-mapped (no copy of the file in memory)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise ModelError(f"{path}: model file is empty (0 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return scan(mm)
    except _Malformed as exc:
        raise ModelError(f"{path}: not a loadable ONNX model (bad protobuf: {exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror})") from None


# --- cache -----------------------------------------------------------------------------------


def _cache_path() -> Path:
    from .paths import home

    return home() / CACHE_NAME


def _stat_key(path: Path) -> tuple[str, list[int]]:
    st = path.stat()
    return str(path.resolve()), [st.st_size, st.st_mtime_ns]


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    from .atomic import atomic_write_bytes

    if len(cache) > CACHE_ENTRIES:  # keep the newest entries
        cache = dict(list(cache.items())[-CACHE_ENTRIES:])
    try:
        atomic_write_bytes(_cache_path(), json.dumps(cache, indent=0).encode())
    except OSError as exc:
        log.debug("model digest cache not written (%s); the model is rehashed next time", exc)


def verify_model_file(path: str | os.PathLike) -> bool:
    """Check the digest recorded in an ONNX file against its content.

    Returns True when verified, False (with a one-line warning) for a model exported before
    digests existed; raises :class:`ModelError` when the content does not match.
    """
    path = Path(path)
    key, stamp = _stat_key(path)
    cache = {} if os.environ.get("SFRS_EDGE_VERIFY") == "full" else _read_cache()
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stat") == stamp and entry.get("verified"):
        return True
    digest, meta = file_digest(path)
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        log.warning(
            "%s: model has no content digest (exported before sfrs-edge recorded one); "
            "it is used unverified — re-export it to have it verified",
            path,
        )
        return False
    if recorded != digest:
        raise ModelError(
            f"{path}: model content does not match the digest recorded at export (file "
            "corrupted or modified after export); re-export or copy the model again"
        )
    cache.pop(key, None)
    cache[key] = {"stat": stamp, "verified": True}
    _write_cache(cache)
    return True
