"""The map manifest (``manifest.json``): what the map is, what built it, and file checksums."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import MapError
from .store import MANIFEST

FORMAT = "sfrs-edge-map"
FORMAT_VERSION = 1
DESCRIPTORS = "descriptors.npy"
METADATA = "metadata.sqlite"
INDEX = "index.bin"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entries(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """Checksum and size of each data file (everything except the manifest itself)."""
    return {
        n: {"sha256": sha256_file(folder / n), "bytes": (folder / n).stat().st_size} for n in names
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


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
    """A manifest without the ``files`` section (added once the files are written)."""
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
    }


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and validate ``manifest.json`` (format, version, required keys)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise MapError(f"{folder}: no such map directory")
    if not path.is_file():
        raise MapError(f"{folder}: not an sfrs-edge map (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MapError(f"{path}: manifest is unreadable or corrupt ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MapError(f"{path}: not an sfrs-edge map manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise MapError(
            f"{folder}: map format version {version} is not supported by sfrs-edge {__version__} "
            f"(reads version {FORMAT_VERSION}); rebuild the map with this version"
        )
    for key in ("count", "dim", "metric", "model", "index", "files"):
        if key not in manifest:
            raise MapError(f"{path}: manifest lacks {key!r}; the map is corrupt, rebuild it")
    if manifest["metric"] != "ip":
        raise MapError(f"{path}: unsupported metric {manifest['metric']!r}")
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any]) -> None:
    """Check every listed file exists and matches its recorded size and sha256."""
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            what = "index file" if name == INDEX else "file"
            raise MapError(f"{folder}: {what} {name} is missing; the map is incomplete, rebuild it")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise MapError(
                f"{folder}: {name} fails its checksum (corrupted or modified after the map was "
                "written); rebuild the map"
            )
