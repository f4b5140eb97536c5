"""``map merge`` and ``map verify``: several maps of one model into one; full checksum check."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MapError
from .index import IndexConfig
from .map import Map
from .store import atomic_map_dir
from .writer import Rows, history_event, write_new_map

DUPLICATES = ("error", "first", "rename")


def merge_maps(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    duplicates: str = "error",
    index: str = "auto",
) -> Map:
    """Write the places of ``sources`` (in order) as one map at ``output``.

    All sources must share the model fingerprint, dimension, position kind and extra arrays.
    Names that occur in more than one source: ``duplicates="error"`` refuses listing them,
    ``"first"`` keeps the first source's place, ``"rename"`` keeps all, naming later ones
    ``<source map folder>/<name>``. ``index``: ``auto`` (HNSW when any source is HNSW or the
    result is large), ``exact`` or ``hnsw`` (parameters from the first HNSW source).
    """
    if duplicates not in DUPLICATES:
        raise ConfigError(f"duplicates={duplicates!r}: expected one of {', '.join(DUPLICATES)}")
    if len(sources) < 2:
        raise ConfigError("map merge needs at least two maps")
    output = Path(output).expanduser()
    maps = [Map.open(s) for s in sources]
    first = maps[0]
    for m in maps[1:]:
        if m.fingerprint != first.fingerprint:
            raise MapError(
                f"cannot merge {m.path} (model fingerprint {m.fingerprint}) with {first.path} "
                f"(model fingerprint {first.fingerprint}): maps must be built with the same model"
            )
        if m.dim != first.dim or m.manifest.get("extras") != first.manifest.get("extras"):
            raise MapError(f"cannot merge {m.path}: its descriptors or extra arrays differ")
        if m.position_kind and first.position_kind and m.position_kind != first.position_kind:
            raise MapError(
                f"cannot merge {m.path}: positions are {m.position_kind}, {first.path}'s are "
                f"{first.position_kind}"
            )
    parts, seen = [], {}
    for m in maps:
        names = m.names
        keep = []
        for i, name in enumerate(names):
            if name in seen:
                if duplicates == "first":
                    continue
                if duplicates == "error":
                    clash = [n for n in names if n in seen]
                    raise ConfigError(
                        f"{len(clash)} image names occur in both {seen[name]} and {m.path} "
                        f"(e.g. {', '.join(clash[:3])}); pass --duplicates first or rename"
                    )
            keep.append(i)
        ids = np.array(keep, np.int64)
        places = m.places(ids)
        if duplicates == "rename":
            places = [
                dataclasses.replace(p, name=f"{Path(m.path).name}/{p.name}")
                if p.name in seen
                else p
                for p in places
            ]
        for p in places:
            seen.setdefault(p.name, m.path)
        parts.append(Rows(m.vectors(ids), places, {x: m.extra_rows(x, ids) for x in m.extras}))
    rows = Rows(
        np.concatenate([p.descriptors for p in parts]),
        [p for part in parts for p in part.places],
        {x: np.concatenate([p.extras[x] for p in parts]) for x in first.extras},
    )
    hnsw_src = next((m for m in maps if m.index_type == "hnsw"), None)
    if index == "auto" and hnsw_src is not None:
        index = "hnsw"
    base = IndexConfig.from_manifest(hnsw_src.manifest["index"]) if hnsw_src else IndexConfig()
    config = dataclasses.replace(base, type=index).resolved(len(rows.places))
    kind = next((m.position_kind for m in maps if m.position_kind), None)
    read = [str(Path(m.path).resolve()) for m in maps]
    with atomic_map_dir(output) as staging:
        write_new_map(
            staging,
            rows,
            config,
            first.dtype,
            model=first.manifest["model"],
            positions={"kind": kind, "source": "merge"},
            event=history_event("merge", len(rows.places), sources=read),
        )
    return Map.open(output)


def verify_map(path: str | os.PathLike) -> dict[str, Any]:
    """Rehash every file of a map against its manifest and load every part (MapError if not)."""
    m = Map.open(path, verify="full")
    if m.index_type == "hnsw":
        m.search(m.vectors(np.arange(min(len(m), 16))), k=1)  # the graph loads and answers
    files = m.manifest["files"]
    return {
        "path": str(m.path),
        "files": len(files),
        "bytes": sum(e["bytes"] for e in files.values()),
        "count": len(m),
        "segments": len(m.segments),
        "ok": True,
    }
