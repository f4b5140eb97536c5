"""Writing map generations: the one place that lays out map files (image and video maps).

A generation is written into a staging directory (:func:`.store.atomic_map_dir`) and swapped in.
Files are written once and never changed, so an update links the previous generation's files
(O(1) each) and writes only what is new:

- :func:`write_new_map`: a fresh map of one segment with a new manifest (``map build`` from
  images or video, ``map merge``); :func:`write_map`: the same under a given manifest (``map
  remove`` keeps the old map's history);
- :func:`append_rows`: a new segment after the existing ones (``map add``: O(k) work and
  writes). HNSW maps search rows added since the index was built exactly, and fold them into
  the index once they exceed :func:`fold_threshold` (amortised); exact maps concatenate their
  newer segments once there are more than :data:`MAX_SEGMENTS`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MapError
from . import checksums
from .index import HnswIndex, IndexConfig
from .manifest import DTYPES, INDEX, MANIFEST, dumps, new_manifest, now
from .metadata import Place, write_metadata
from .store import link_or_copy

log = logging.getLogger(__name__)

MAX_SEGMENTS = 32


@dataclass
class Rows:
    """Places to write: descriptors (n, dim) float32 unit rows, their metadata (ids set by the
    writer) and per-place extra arrays (n, ...) row-aligned."""

    descriptors: np.ndarray
    places: list[Place]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.places)
        if self.descriptors.ndim != 2 or len(self.descriptors) != n:
            raise MapError(f"{self.descriptors.shape} descriptors for {n} places")
        if not np.isfinite(self.descriptors).all():
            raise MapError("the model produced NaN/inf descriptors; the model file is unusable")
        for name, arr in self.extras.items():
            if len(arr) != n:
                raise MapError(f"extra array {name!r} has {len(arr)} rows for {n} places")


def model_section(engine: Any) -> dict[str, Any]:
    """The manifest's ``model`` section for an engine (contract 2 in the team brief)."""
    info = engine.info
    pre = info.preprocessing
    return {
        "fingerprint": engine.fingerprint,
        "backbone": info.backbone,
        "descriptor_dim": int(engine.dim),
        "pca_dim": info.pca_dim,
        "whitening": info.whitening,
        "precision": info.precision,
        "input_size": [pre.height, pre.width],
        "info": dataclasses.asdict(info),
    }


def check_engine(engine: Any) -> None:
    """Refuse an engine whose output dimension differs from its own metadata."""
    if engine.info.descriptor_dim != engine.dim:
        raise MapError(f"engine dim {engine.dim} differs from its metadata")


def history_event(op: str, count: int, skipped: list[str] | None = None, **extra) -> dict:
    e = {"op": op, "time": now(), "images": count, **extra}
    if skipped:
        e["skipped"] = skipped
    return e


def extra_specs(extras: dict[str, np.ndarray]) -> dict[str, dict]:
    return {n: {"shape": list(a.shape[1:]), "dtype": str(a.dtype)} for n, a in extras.items()}


def fold_threshold(indexed: int) -> int:
    """Rows searched exactly beside the HNSW graph before ``map add`` folds them into it."""
    return max(10_000, indexed // 4)


# --- files ------------------------------------------------------------------------------


class _Files:
    """Files of the generation being written: new ones are hashed, linked ones keep their
    recorded entry (no rehash)."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging
        self.entries: dict[str, dict] = {}
        self._hashed: list[tuple[os.stat_result, str]] = []

    def new(self, name: str) -> None:
        path = self.staging / name
        sha = checksums.sha256_file(path)
        st = path.stat()
        self.entries[name] = {"sha256": sha, "bytes": st.st_size}
        self._hashed.append((st, sha))

    def link(self, folder: Path, name: str, entry: dict) -> None:
        link_or_copy(folder, name, self.staging)
        self.entries[name] = dict(entry)

    def finish(self, manifest: dict[str, Any]) -> None:
        manifest["files"] = dict(sorted(self.entries.items()))
        (self.staging / MANIFEST).write_bytes(dumps(manifest))
        checksums.record(self._hashed)


def _segment(files: _Files, n: int, start: int, rows: Rows, dtype: str, keep_desc: bool) -> dict:
    """Write rows as segment number ``n`` (ids from ``start``); returns its manifest entry."""
    stem = f"seg-{n:06d}"
    places = [dataclasses.replace(p, id=start + i) for i, p in enumerate(rows.places)]
    meta = f"{stem}.meta.sqlite"
    write_metadata(files.staging / meta, places)
    files.new(meta)
    entry: dict[str, Any] = {"rows": len(places), "descriptors": None, "metadata": meta}
    if keep_desc:
        desc = f"{stem}.desc.npy"
        np.save(files.staging / desc, np.ascontiguousarray(rows.descriptors, dtype=dtype))
        files.new(desc)
        entry["descriptors"] = desc
    entry["extras"] = {}
    for name, arr in sorted(rows.extras.items()):
        fname = f"{stem}.x.{name}.npy"
        np.save(files.staging / fname, np.ascontiguousarray(arr), allow_pickle=False)
        files.new(fname)
        entry["extras"][name] = fname
    return entry


def write_map(
    staging: Path, manifest: dict[str, Any], rows: Rows, config: IndexConfig, dtype: str
) -> None:
    """Write a fresh map of one segment (+ HNSW graph holding its vectors) into ``staging``.

    ``manifest``: from :func:`.manifest.new_manifest` (count, segments, files are set here).
    """
    if dtype not in DTYPES:
        raise MapError(f"descriptor dtype {dtype!r}: expected {' or '.join(DTYPES)}")
    files = _Files(staging)
    hnsw = config.type == "hnsw"
    seg = _segment(files, 0, 0, rows, dtype, keep_desc=not hnsw)
    if hnsw:
        HnswIndex.build(np.ascontiguousarray(rows.descriptors, np.float32), config).save(
            staging / INDEX
        )
        files.new(INDEX)
    manifest.update(
        count=len(rows.places),
        dtype=dtype,
        index=config.to_manifest(),
        segments=[seg],
        indexed=len(rows.places) if hnsw else 0,
        next_segment=1,
        extras=extra_specs(rows.extras),
    )
    files.finish(manifest)


def write_new_map(
    staging: Path,
    rows: Rows,
    config: IndexConfig,
    dtype: str,
    *,
    model: dict[str, Any],
    positions: dict[str, Any],
    event: dict[str, Any],
) -> dict[str, Any]:
    """Write a fresh map of ``rows`` with a new manifest into ``staging``; returns the manifest.

    ``model``: the manifest's model section (:func:`model_section`); ``positions``: ``kind``
    and ``source`` of the places' positions (the count is taken from the rows, and the kind
    dropped when no place has one); ``event``: the history's first entry (:func:`history_event`).
    """
    count = sum(p.position is not None for p in rows.places)
    pos = dict(positions, count=count)
    if not count:
        pos["kind"] = None
    manifest = new_manifest(
        dim=rows.descriptors.shape[1],
        model=model,
        index=config.to_manifest(),
        count=len(rows.places),
        positions=pos,
        history=[event],
    )
    write_map(staging, manifest, rows, config, dtype)
    return manifest


def append_rows(staging: Path, old: Any, rows: Rows, manifest: dict[str, Any]) -> None:
    """A generation = ``old`` (a :class:`Map` opened without its graph) + ``rows`` as a new
    segment. Writes O(len(rows)) bytes, except when folding/compacting (see module doc)."""
    specs = extra_specs(rows.extras)
    have = old.manifest.get("extras", {})
    if specs != have:
        raise MapError(
            f"{old.path}: the map keeps extra arrays {have or 'none'}, the new images have "
            f"{specs or 'none'}; use the model that built the map"
        )
    files = _Files(staging)
    dtype = old.dtype
    start = len(old)
    number = int(old.manifest.get("next_segment", len(old.segments)))
    indexed = old.indexed
    hnsw = old.index_type == "hnsw"
    segs = [dict(s.entry) for s in old.segments]
    new = _segment(files, number, start, rows, dtype, keep_desc=True)
    if hnsw and (start + len(rows.places) - indexed) > fold_threshold(indexed):
        segs, indexed = _fold(files, old, rows, segs, new)
    else:
        segs.append(new)
        if not hnsw and len(segs) > MAX_SEGMENTS:
            segs = [segs[0], _concat(files, old, rows, segs[1:], number + 1)]
    used = {INDEX} if hnsw and indexed == old.indexed else set()
    for s in segs:
        used.update(f for f in [s["descriptors"], s["metadata"], *s["extras"].values()] if f)
    for name in sorted(used - set(files.entries)):
        files.link(old.folder, name, old.manifest["files"][name])
    for name in list(files.entries):  # files written but no longer referenced (folded)
        if name not in used and name != INDEX:
            (staging / name).unlink()
            del files.entries[name]
    manifest.update(
        count=start + len(rows.places),
        segments=segs,
        indexed=indexed,
        next_segment=number + 2,
        extras=specs,
    )
    files.finish(manifest)


def _fold(files: _Files, old: Any, rows: Rows, segs: list[dict], new: dict):
    """Insert every row after the graph into it (hnswlib add_items); their descriptor files
    are dropped: the graph holds them now."""
    config = IndexConfig.from_manifest(old.manifest["index"])
    total = len(old) + len(rows.places)
    index = HnswIndex.load(old.folder / INDEX, old.dim, old.indexed, config, total - old.indexed)
    tail = old.vectors(np.arange(old.indexed, len(old))) if len(old) > old.indexed else None
    add = rows.descriptors if tail is None else np.concatenate([tail, rows.descriptors])
    index.add(np.ascontiguousarray(add, np.float32), old.indexed)
    index.save(files.staging / INDEX)
    files.new(INDEX)
    out = []
    for s in segs + [new]:
        out.append(dict(s, descriptors=None))
    log.info("folded %d rows into the HNSW graph", len(add))
    return out, total


def _concat(files: _Files, old: Any, rows: Rows, segs: list[dict], number: int) -> dict:
    """One segment from the given trailing segments (exact maps with many segments)."""
    lo = len(old) + len(rows.places) - sum(s["rows"] for s in segs)
    ids = np.arange(lo, len(old))
    places = old.places(ids) + list(rows.places)
    desc = np.concatenate([old.vectors(ids), rows.descriptors])
    extras = {
        n: np.concatenate([old.extra_rows(n, ids), a]) for n, a in sorted(rows.extras.items())
    }
    return _segment(files, number, lo, Rows(desc, places, extras), old.dtype, keep_desc=True)
