"""The map manifest (``manifest.json``): what the map is, what built it, its segments, checksums.

Every field is type- and range-checked when read (:func:`read_manifest`): a malformed manifest is
a :class:`MapError` naming the field and its value, never a traceback. Only the current format
version is read (earlier layouts were never released): any other version is refused with the
remedy, rebuilding the map.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any

from .. import __version__
from ..errors import MapError

MANIFEST = "manifest.json"
FORMAT = "sfrs-edge-map"
FORMAT_VERSION = 2
INDEX = "index.bin"
DTYPES = ("float32", "float16")
EXTRA_DTYPES = ("float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64")
MAX_MANIFEST_BYTES = 64 << 20

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def new_manifest(
    *,
    dim: int,
    model: dict[str, Any],
    index: dict[str, Any],
    count: int,
    positions: dict[str, Any],
    dtype: str = "float32",
    created: str | None = None,
    history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A manifest without ``segments``/``files`` (the writer adds them with the files)."""
    t = now()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sfrs_edge_version": __version__,
        "created": created or t,
        "updated": t,
        "count": int(count),
        "dim": int(dim),
        "dtype": dtype,
        "metric": "ip",
        "normalized": True,
        "model": model,
        "index": index,
        "positions": positions,
        "history": list(history or []),
        "extras": {},
    }


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    """Parse and validate manifest bytes (MapError naming what is wrong)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise MapError(f"{where}: manifest is {len(data)} bytes, not an sfrs-edge manifest")
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MapError(f"{where}: manifest is unreadable or corrupt ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MapError(f"{where}: not an sfrs-edge map manifest")
    version = manifest.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise MapError(
            f"{where}: map format version {version!r} is not supported by sfrs-edge "
            f"{__version__} (reads version {FORMAT_VERSION}); rebuild the map with this version"
        )
    validate(manifest, where)
    return manifest


def _field(where: str, name: str, value: Any, expected: str) -> MapError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return MapError(f"{where}: manifest field {name!r} is {shown}, expected {expected}")


def _int(m: dict, key: str, where: str, lo: int, hi: int, prefix: str = "") -> int:
    v = m.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise _field(where, prefix + key, v, f"an integer in [{lo}, {hi}]")
    return v


def _dict(m: dict, key: str, where: str, prefix: str = "") -> dict:
    v = m.get(key)
    if not isinstance(v, dict):
        raise _field(where, prefix + key, v, "an object")
    return v


def validate(m: dict[str, Any], where: str) -> None:
    """Type and range checks of every field the runtime uses (MapError naming field + value)."""
    count = _int(m, "count", where, 1, 1 << 40)
    _int(m, "dim", where, 1, 1 << 20)
    if m.get("metric") != "ip":
        raise _field(where, "metric", m.get("metric"), "'ip'")
    if m.get("dtype", "float32") not in DTYPES:
        raise _field(where, "dtype", m.get("dtype"), " or ".join(DTYPES))
    model = _dict(m, "model", where)
    fp = model.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise _field(where, "model.fingerprint", fp, "a string")
    index = _dict(m, "index", where)
    if index.get("type") not in ("exact", "hnsw"):
        raise _field(where, "index.type", index.get("type"), "'exact' or 'hnsw'")
    if index["type"] == "hnsw":
        for key, hi in (("M", 4096), ("ef_construction", 1 << 20), ("ef", 1 << 20)):
            _int(index, key, where, 1, hi, "index.")
        _int(index, "seed", where, -(1 << 63), (1 << 63) - 1, "index.")
    files = _dict(m, "files", where)
    for name, entry in files.items():
        if not isinstance(name, str) or not _NAME.match(name) or name == MANIFEST:
            raise _field(where, "files", name, "plain file names inside the map folder")
        if not isinstance(entry, dict):
            raise _field(where, f"files.{name}", entry, "an object with sha256 and bytes")
        if not isinstance(entry.get("sha256"), str) or not _SHA.match(entry["sha256"]):
            raise _field(where, f"files.{name}.sha256", entry.get("sha256"), "64 hex digits")
        _int(entry, "bytes", where, 0, 1 << 50, f"files.{name}.")
    for key in ("positions",):
        if m.get(key) is not None and not isinstance(m[key], dict):
            raise _field(where, key, m[key], "an object or null")
    if not isinstance(m.get("history", []), list):
        raise _field(where, "history", m.get("history"), "a list")
    extras = m.get("extras", {})
    if not isinstance(extras, dict):
        raise _field(where, "extras", extras, "an object")
    for name, spec in extras.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise _field(where, "extras", name, "names of letters, digits, '_', '.', '-'")
        if not isinstance(spec, dict):
            raise _field(where, f"extras.{name}", spec, "an object with shape and dtype")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(
            type(s) is int and 1 <= s <= 1 << 24 for s in shape
        ):
            raise _field(where, f"extras.{name}.shape", shape, "a list of positive integers")
        if spec.get("dtype") not in EXTRA_DTYPES:
            raise _field(where, f"extras.{name}.dtype", spec.get("dtype"), "a numeric dtype")
    segments = m.get("segments")
    if not isinstance(segments, list) or not segments:
        raise _field(where, "segments", segments, "a non-empty list")
    total = 0
    bounds = {0}
    indexed = _int(m, "indexed", where, 0, count)
    for i, seg in enumerate(segments):
        p = f"segments[{i}]."
        if not isinstance(seg, dict):
            raise _field(where, f"segments[{i}]", seg, "an object")
        rows = _int(seg, "rows", where, 1, count, p)
        desc = seg.get("descriptors")
        if desc is None:
            if index["type"] != "hnsw" or total + rows > indexed:
                raise _field(where, p + "descriptors", desc, "a file (rows not in the index)")
        elif desc not in files:
            raise _field(where, p + "descriptors", desc, "a file listed in 'files'")
        if seg.get("metadata") not in files:
            raise _field(where, p + "metadata", seg.get("metadata"), "a file listed in 'files'")
        seg_extras = seg.get("extras", {})
        if not isinstance(seg_extras, dict) or set(seg_extras) != set(extras):
            raise _field(where, p + "extras", seg_extras, f"one file per extra {sorted(extras)}")
        for name, f in seg_extras.items():
            if f not in files:
                raise _field(where, f"{p}extras.{name}", f, "a file listed in 'files'")
        total += rows
        bounds.add(total)
    if indexed not in bounds:
        raise _field(where, "indexed", indexed, f"a segment boundary {sorted(bounds)[:5]}")
    if total != count:
        raise _field(where, "count", count, f"the segments' total rows ({total})")
    if index["type"] == "hnsw":
        if INDEX not in files:
            raise MapError(f"{where}: manifest does not list {INDEX}; rebuild the map")
        if indexed < 1:
            raise _field(where, "indexed", indexed, "at least 1 for an HNSW map")
    elif indexed != 0:
        raise _field(where, "indexed", indexed, "0 for an exact map")
