"""Reading one map generation from disk: every check of ``Map.open`` (``docs/MAPS.md``).

A generation swapped in while it is being read (an update finished meanwhile) is read again,
up to :data:`OPEN_ATTEMPTS` times; what is read is always one consistent generation
(:mod:`.snapshot`). Each segment's descriptors and extras must have the shape and dtype the
manifest says, and its metadata exactly the ids of its rows; an HNSW graph's header must match.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MapError
from .index import HnswIndex, IndexConfig
from .manifest import INDEX
from .metadata import sqlite_readonly
from .snapshot import MissingFile, Snapshot, check_hnsw_header, read_npy
from .store import resolve

OPEN_ATTEMPTS = 4  # a generation swapped in while we read is read again, up to this often


@dataclass
class Segment:
    """Rows ``start .. start+rows-1`` of a map: their descriptors (None when held only by the
    HNSW index), metadata connection and extra arrays (memory-mapped)."""

    start: int
    rows: int
    descriptors: np.ndarray | None
    metadata: sqlite3.Connection | None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def stop(self) -> int:
        return self.start + self.rows


@dataclass
class Generation:
    """What :func:`read_generation` read: the manifest, segments in row order, the HNSW graph
    (None for exact maps or when not loaded) and the directory actually read."""

    manifest: dict[str, Any]
    segments: list[Segment]
    index: HnswIndex | None
    folder: Path


def read_generation(
    path: str | os.PathLike,
    expect_fingerprint: str | None = None,
    verify: bool | str = True,
    load_index: bool = True,
) -> Generation:
    """Read and check the map at ``path`` as one consistent generation (see ``Map.open``)."""
    requested = Path(path).expanduser()
    missing = None
    for attempt in range(OPEN_ATTEMPTS):
        folder = resolve(requested)
        try:
            return _load(folder, requested, expect_fingerprint, verify, load_index)
        except FileNotFoundError as exc:
            if not resolve(requested).exists():
                raise MapError(f"{requested}: no such map directory") from None
            missing = str(exc) if isinstance(exc, MissingFile) else None
            time.sleep(0.05 * attempt)  # swapped while we read it: read the new one
    if missing is not None:  # still missing after every retry: the map is incomplete
        raise MapError(missing)
    raise MapError(
        f"{requested}: the map was replaced {OPEN_ATTEMPTS} times while it was opened "
        "(is something rebuilding it in a loop?); try again"
    )


def _load(
    folder: Path,
    requested: Path,
    expect_fingerprint: str | None,
    verify: bool | str,
    load_index: bool,
) -> Generation:
    where = str(requested)
    if not folder.exists():
        raise FileNotFoundError(folder)
    with Snapshot(folder, where) as snap:
        manifest = snap.manifest()
        model_fp = manifest["model"].get("fingerprint")
        if expect_fingerprint is not None and model_fp != expect_fingerprint:
            raise MapError(
                f"{where}: map was built with model fingerprint {model_fp} "
                f"({manifest['model'].get('backbone')}, {manifest['dim']}-d) but the model "
                f"in use has fingerprint {expect_fingerprint}; rebuild the map with this "
                "model (`sfrs-edge map build`) or use the model that built it"
            )
        fds = snap.check_files(manifest, verify)
        dim, dtype = manifest["dim"], np.dtype(manifest.get("dtype", "float32"))
        specs = manifest.get("extras", {})
        segments, start = [], 0
        for entry in manifest["segments"]:
            rows = entry["rows"]
            desc = None
            if entry["descriptors"] is not None:
                name = entry["descriptors"]
                desc = read_npy(fds[name], name, where)
                if desc.shape != (rows, dim) or desc.dtype != dtype:
                    raise MapError(
                        f"{where}: {name} is {desc.dtype} {desc.shape}, the manifest says "
                        f"{dtype} ({rows}, {dim}); rebuild the map"
                    )
            extras = {}
            for xname, fname in entry.get("extras", {}).items():
                arr = read_npy(fds[fname], fname, where)
                spec = specs[xname]
                if arr.shape != (rows, *spec["shape"]) or arr.dtype != np.dtype(spec["dtype"]):
                    raise MapError(
                        f"{where}: {fname} is {arr.dtype} {arr.shape}, the manifest says "
                        f"{spec['dtype']} ({rows}, {', '.join(map(str, spec['shape']))}); "
                        "rebuild the map"
                    )
                extras[xname] = arr
            meta = entry["metadata"]
            con = _open_metadata(folder, fds[meta], meta, where, start, rows)
            segments.append(Segment(start, rows, desc, con, extras, entry))
            start += rows
        index = None
        config = IndexConfig.from_manifest(manifest["index"])
        if config.type == "hnsw":
            indexed = manifest["indexed"]
            check_hnsw_header(fds[INDEX], dim, indexed, config.M, f"{where}: {INDEX}")
            if load_index:
                index = HnswIndex.load(snap.path(fds[INDEX], INDEX), dim, indexed, config)
    return Generation(manifest, segments, index, folder)


def _names_same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (False once a swap replaced it)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _open_metadata(
    folder: Path, fd: int, name: str, where: str, start: int, rows: int
) -> sqlite3.Connection:
    """Open a segment's metadata read-only and check it holds exactly ids start..start+rows-1.

    SQLite opens by path (and canonicalises even ``/proc/self/fd`` links), so after it has
    opened ``folder/name`` we check that path still names the file we opened through the
    directory handle (``fd``): if not, a swap happened meanwhile and the open is retried
    (FileNotFoundError). Files are shared between generations only when identical."""
    try:
        con = sqlite_readonly(str(folder / name))
        (n,) = con.execute("SELECT count(*) FROM places").fetchone()
        (lo,) = con.execute("SELECT min(id) FROM places").fetchone()
        (hi,) = con.execute("SELECT max(id) FROM places").fetchone()
    except sqlite3.Error as exc:
        if not _names_same_file(folder / name, fd):  # swapped meanwhile: Map.open retries
            raise FileNotFoundError(folder / name) from None
        raise MapError(
            f"{where}: {name} is not readable map metadata ({exc}); rebuild the map"
        ) from None
    if not _names_same_file(folder / name, fd):
        con.close()
        raise FileNotFoundError(folder / name)  # swapped while opening: Map.open retries
    if (n, lo, hi) != (rows, start, start + rows - 1):
        con.close()
        raise MapError(
            f"{where}: {name} has {n} rows (ids {lo}..{hi}) that do not match the manifest's "
            f"{rows} (ids {start}..{start + rows - 1}); rebuild the map"
        )
    return con
