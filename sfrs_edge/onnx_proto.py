"""The one reader of the ONNX file format the runtime needs without the ``onnx`` package: a walk
over the top-level protobuf fields of a serialised ``ModelProto``.

Two uses, one walk each: :func:`scan` hashes every field but the digest entry and collects the
``metadata_props`` on the way (model verification, :mod:`sfrs_edge.model_digest`);
:func:`read_metadata_props` only reads the field headers and the metadata entries (the graph
and its weights are skipped, so it costs microseconds even for a 500 MB model). Files are
memory-mapped: nothing is copied.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator

METADATA_FIELD = 14  # ModelProto.metadata_props (onnx.proto)


class Malformed(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= end or shift > 63:
            raise Malformed("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
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
            raise Malformed(f"unsupported wire type {wire}")
        if i > end or number == 0:
            raise Malformed("field runs past the end")
        yield number, wire, begin, payload, i


def _entry(buf, start: int, end: int) -> tuple[bytes | None, bytes | None]:
    """(key, value) of a StringStringEntryProto (key = 1, value = 2)."""
    key = value = None
    for number, wire, _, payload, stop in fields(buf, start, end):
        if wire == 2 and number == 1:
            key = bytes(buf[payload:stop])
        elif wire == 2 and number == 2:
            value = bytes(buf[payload:stop])
    return key, value


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")


def scan(data, skip_key: str | None = None) -> tuple[str, dict[str, str]]:
    """("sha256:<hex>", metadata) of serialised ONNX bytes (bytes, mmap or memoryview): the
    hash covers every top-level field except the metadata entry named ``skip_key``."""
    view = memoryview(data)
    h = hashlib.sha256()
    meta: dict[str, str] = {}
    skip = skip_key.encode() if skip_key is not None else None
    try:
        for number, wire, begin, payload, stop in fields(view, 0, len(view)):
            if number == METADATA_FIELD and wire == 2:
                key, value = _entry(view, payload, stop)
                if key is not None:
                    meta[_text(key)] = _text(value)
                if skip is not None and key == skip:
                    continue
            h.update(view[begin:stop])
    finally:
        view.release()
    return "sha256:" + h.hexdigest(), meta


def metadata_of(data) -> dict[str, str]:
    """The ``metadata_props`` of serialised ONNX bytes (headers only; no hashing)."""
    view = memoryview(data)
    meta: dict[str, str] = {}
    try:
        for number, wire, _, payload, stop in fields(view, 0, len(view)):
            if number == METADATA_FIELD and wire == 2:
                key, value = _entry(view, payload, stop)
                if key is not None:
                    meta[_text(key)] = _text(value)
    finally:
        view.release()
    return meta


def map_file(path: str | os.PathLike, fn):
    """``fn(mmap)`` of the file at ``path`` (read-only; an empty file maps to ``b""``)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return fn(b"")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return fn(mm)


def read_metadata_props(path: str | os.PathLike) -> dict[str, str]:
    """ONNX ``metadata_props`` of a model file; an empty dict when the file is not a readable
    protobuf (callers that must know raise their own error later)."""
    try:
        return map_file(path, metadata_of)
    except (Malformed, OSError, ValueError):
        return {}
