"""Changing a map in place: ``map add`` (embed new images), :func:`append_to_map` (rows already
embedded), ``map remove``.

Every update writes a new generation into a staging directory and swaps it in atomically
(:mod:`.store`); adding writes only the new rows as one new segment and links the rest
(:mod:`.writer`). Ids: new images get ids after the existing ones; removing renumbers the
rows after the removed ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from . import sources
from .index import IndexConfig
from .manifest import FORMAT_VERSION, now
from .map import Map
from .sources import EmbeddingEngine, collect_images, poses_for
from .store import atomic_map_dir
from .writer import Rows, append_rows, check_engine, history_event, write_map

Progress = Callable[[int, int], None]


def add_to_map(
    engine: EmbeddingEngine,
    map_path: str | os.PathLike,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    poses: str | os.PathLike | None = None,
    skip_bad_images: bool = False,
    allow_missing_poses: bool = False,
    batch_size: int = 8,
    progress: Progress | None = None,
    threads: int | None = None,
) -> Map:
    """Add images (files and/or folders) to a map without recomputing existing descriptors.

    New images get ids after the existing ones; names must not already be in the map. The
    new rows are written as one new segment; existing files are linked, not rewritten.
    """
    check_engine(engine)
    files = collect_images(images)
    map_path = Path(map_path).expanduser()
    with atomic_map_dir(map_path) as staging:
        old = Map.open(map_path, expect_fingerprint=engine.fingerprint, load_index=False)
        dup = old.find_names([f.name for f in files])
        if dup:
            shown = ", ".join(dup[:5]) + (f" and {len(dup) - 5} more" if len(dup) > 5 else "")
            raise ConfigError(f"{map_path}: already holds images named {shown}; remove them first")
        pose_list, pos_info = poses_for(files, poses, allow_missing_poses)
        kind = old.position_kind
        if pos_info["kind"] and kind and pos_info["kind"] != kind:
            raise ConfigError(
                f"map positions are {kind}, the new images' are {pos_info['kind']}; "
                "use the same kind of coordinates"
            )
        got = sources.embed_rows(
            engine, files, pose_list, len(old), skip_bad_images, batch_size, progress, threads
        )
        _append(staging, old, got.rows, pos_info, got.skipped)
    return Map.open(map_path, expect_fingerprint=engine.fingerprint)


def append_to_map(map_path: str | os.PathLike, rows: Rows, expect_fingerprint: str | None) -> Map:
    """Add already-embedded places (``rows``) to a map: one new segment (see :mod:`.writer`)."""
    map_path = Path(map_path).expanduser()
    with atomic_map_dir(map_path) as staging:
        old = Map.open(map_path, expect_fingerprint=expect_fingerprint, load_index=False)
        dup = old.find_names([p.name for p in rows.places])
        if dup:
            raise ConfigError(f"{map_path}: already holds images named {', '.join(dup[:5])}")
        kinds = {p.position_kind for p in rows.places if p.position is not None}
        _append(staging, old, rows, {"kind": kinds.pop() if kinds else None, "source": None}, [])
    return Map.open(map_path, expect_fingerprint=expect_fingerprint, load_index=False)


def _append(staging: Path, old: Map, rows: Rows, pos_info: dict, skipped: list[str]) -> None:
    with_pos = sum(p.position is not None for p in rows.places)
    manifest = _updated_manifest(old, _positions(old) + with_pos, pos_info)
    manifest["history"].append(history_event("add", len(rows.places), skipped))
    append_rows(staging, old, rows, manifest)


def _positions(m: Map) -> int:
    return int((m.manifest.get("positions") or {}).get("count") or 0)


def _updated_manifest(
    old: Map, with_positions: int, new_pos: dict[str, Any] | None = None
) -> dict[str, Any]:
    m = {k: v for k, v in old.manifest.items() if k not in ("files", "segments")}
    m = dict(m, updated=now(), history=list(m.get("history", [])))
    m["format_version"] = FORMAT_VERSION
    pos = dict(m.get("positions") or {})
    if new_pos and new_pos.get("kind") and not pos.get("kind"):
        pos.update(kind=new_pos["kind"], source=new_pos["source"])
    pos["count"] = with_positions
    if pos["count"] == 0:
        pos["kind"] = None
    m["positions"] = pos
    return m


def remove_from_map(map_path: str | os.PathLike, names: Sequence[str]) -> Map:
    """Remove images by name. Later rows move up (ids renumbered); the map is rewritten as one
    segment and an HNSW graph rebuilt from the stored vectors (no model needed)."""
    map_path = Path(map_path).expanduser()
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("no image names to remove")
    with atomic_map_dir(map_path) as staging:
        old = Map.open(map_path)
        found = set(old.find_names(names))
        unknown = [n for n in names if n not in found]
        if unknown:
            raise ConfigError(f"{map_path}: no images named {', '.join(unknown[:10])} in the map")
        all_names = old.names
        keep_ids = np.array([i for i, n in enumerate(all_names) if n not in found], np.int64)
        if not len(keep_ids):
            raise ConfigError(
                f"{map_path}: removing all {len(old)} images would leave an empty map; "
                "delete the map folder instead"
            )
        rows = rows_of(old, keep_ids)
        with_pos = sum(p.position is not None for p in rows.places)
        manifest = _updated_manifest(old, with_pos)
        manifest["history"].append(history_event("remove", len(names), names=names[:100]))
        config = IndexConfig.from_manifest(old.manifest["index"])
        write_map(staging, manifest, rows, config, old.dtype)
    return Map.open(map_path)


def rows_of(m: Map, ids: np.ndarray) -> Rows:
    """Rows ``ids`` of a map (vectors, places, extras) to write elsewhere."""
    return Rows(m.vectors(ids), m.places(ids), {n: m.extra_rows(n, ids) for n in m.extras})
