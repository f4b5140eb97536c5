"""Build, extend and shrink maps: ``build_map``, ``add_to_map``, ``remove_from_map``, ``map_info``.

Every update writes a complete new map into a staging directory and swaps it in atomically
(:mod:`.store`), so an error, a crash or Ctrl-C leaves the previous map (or none) intact.

Bad images: by default a corrupt or unreadable image among the sources fails the whole
operation with an error naming it (a map silently missing places is worse than no map);
``skip_bad_images=True`` skips such files with a warning and records them in the manifest.

Positions: from a CSV (``poses``), else from EXIF GPS of each JPEG, else none. With a CSV,
an image without a row is an error listing the images, unless ``allow_missing_poses``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, ImageError, MapError
from ..images import IMAGE_SUFFIXES, list_images
from ..model_info import ModelInfo, check_precision
from .embedding import embed_images
from .index import HnswIndex, IndexConfig
from .manifest import (
    DESCRIPTORS,
    INDEX,
    METADATA,
    file_entries,
    new_manifest,
    now,
    write_manifest,
)
from .map import Map
from .metadata import Place, write_metadata
from .poses import Pose, match_poses, read_exif_gps, read_poses_csv
from .store import atomic_map_dir

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
EMBED_CHUNK = 64  # files per engine call: bounds the work redone when a bad file is met


class EmbeddingEngine(Protocol):
    """What map building needs from :class:`sfrs_edge.engine.Engine`."""

    info: ModelInfo

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed_files(
        self, paths: Sequence[str | os.PathLike], batch_size: int = 8, progress: Any = None
    ) -> np.ndarray: ...


# --- inputs ---------------------------------------------------------------------------------


def collect_images(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files from a folder, or from a list of files and folders; names must be unique."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[Path] = []
    for src in sources:
        src = Path(src).expanduser()
        if src.is_dir():
            files.extend(list_images(src))
        elif src.is_file():
            if src.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImageError(f"{src}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            files.append(src)
        else:
            raise ImageError(f"{src}: no such file or folder")
    if not files:
        raise ImageError("no images given")
    seen: dict[str, Path] = {}
    for f in files:
        if f.name in seen:
            raise ConfigError(
                f"two images share the name {f.name!r} ({seen[f.name]} and {f}); map image "
                "names must be unique"
            )
        seen[f.name] = f
    return files


def _poses_for(
    files: list[Path], poses: str | os.PathLike | None, allow_missing: bool
) -> tuple[list[Pose | None], dict[str, Any]]:
    names = [f.name for f in files]
    if poses is not None:
        table = read_poses_csv(poses)
        matched = match_poses(names, table, str(poses), allow_missing)
        source = f"csv:{Path(poses).name}"
    else:
        matched = [
            read_exif_gps(f) if f.suffix.lower() in (".jpg", ".jpeg") else None for f in files
        ]
        source = "exif" if any(matched) else None
    kinds = {p.kind for p in matched if p is not None}
    info = {"kind": kinds.pop() if kinds else None, "source": source}
    return matched, info


def _embed(
    engine: EmbeddingEngine,
    files: list[Path],
    skip_bad: bool,
    batch_size: int,
    progress: Progress | None,
    threads: int | None = None,
    ray: str | None = None,
) -> tuple[np.ndarray, list[Path], list[str]]:
    """Descriptors of ``files``; returns (descriptors, files kept, skipped file messages).

    A real :class:`~sfrs_edge.engine.Engine` goes through the overlapped decode/inference
    pipeline (:mod:`.embedding`), or with ``ray`` (an address, or ``local``) through a Ray
    actor pool (:mod:`.ray_embed`); an engine offering only ``embed_files`` is called in chunks.
    """
    if ray is not None:
        from .ray_embed import embed_with_ray

        result = embed_with_ray(engine.path, files, ray, batch_size, skip_bad)
        desc, kept, skipped = result.descriptors, result.kept, result.skipped
    elif hasattr(engine, "embed") and hasattr(engine.info, "preprocessing"):
        result = embed_images(engine, files, batch_size, threads, skip_bad, progress)
        log.info("embedded %d images at %.1f images/s", len(result.kept), result.images_per_s)
        desc, kept, skipped = result.descriptors, result.kept, result.skipped
    else:
        desc, kept, skipped = _embed_in_chunks(engine, files, skip_bad, batch_size, progress)
    desc = np.ascontiguousarray(desc, dtype=np.float32)
    if desc.shape != (len(kept), engine.dim):
        raise MapError(f"engine returned descriptors of shape {desc.shape}, expected {len(kept)}")
    if not np.isfinite(desc).all():
        raise MapError("the model produced NaN/inf descriptors; the model file is unusable")
    return desc, kept, skipped


def _embed_in_chunks(
    engine: EmbeddingEngine,
    files: list[Path],
    skip_bad: bool,
    batch_size: int,
    progress: Progress | None,
) -> tuple[np.ndarray, list[Path], list[str]]:
    parts, kept, skipped = [], [], []
    total = len(files)
    for start in range(0, total, EMBED_CHUNK):
        chunk = files[start : start + EMBED_CHUNK]
        try:
            parts.append(engine.embed_files(chunk, batch_size=batch_size))
            kept.extend(chunk)
        except ImageError:
            if not skip_bad:
                raise
            for f in chunk:  # find the bad ones: one file at a time
                try:
                    parts.append(engine.embed_files([f], batch_size=1))
                    kept.append(f)
                except ImageError as exc:
                    log.warning("skipping %s", exc)
                    skipped.append(str(exc))
        if progress is not None:
            progress(min(start + EMBED_CHUNK, total), total)
    if not kept:
        raise ImageError(f"none of the {total} images could be read: {skipped[0]}")
    return np.concatenate(parts), kept, skipped


def _model_section(engine: EmbeddingEngine) -> dict[str, Any]:
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


# --- writing --------------------------------------------------------------------------------


def _write(
    folder: Path,
    manifest: dict[str, Any],
    descriptors: np.ndarray,
    places: list[Place],
    hnsw: HnswIndex | None,
) -> None:
    """Write all map files into ``folder`` (a staging directory); the manifest goes last."""
    np.save(folder / DESCRIPTORS, descriptors, allow_pickle=False)
    write_metadata(folder / METADATA, places)
    names = [DESCRIPTORS, METADATA]
    if hnsw is not None:
        hnsw.save(folder / INDEX)
        names.append(INDEX)
    manifest["files"] = file_entries(folder, names)
    write_manifest(folder, manifest)


def _places(files: list[Path], poses: list[Pose | None], first_id: int) -> list[Place]:
    out = []
    for i, (f, pose) in enumerate(zip(files, poses, strict=True)):
        out.append(
            Place(
                id=first_id + i,
                name=f.name,
                path=str(f.resolve()),
                position=pose.position if pose else None,
                position_kind=pose.kind if pose else None,
                heading=pose.heading if pose else None,
                timestamp=pose.timestamp if pose else None,
            )
        )
    return out


def _check_dim(engine: EmbeddingEngine) -> None:
    if engine.info.descriptor_dim != engine.dim:
        raise MapError(f"engine dim {engine.dim} differs from its metadata")


def build_map(
    engine: EmbeddingEngine,
    source: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    poses: str | os.PathLike | None = None,
    index: str = "auto",
    hnsw_m: int = 16,
    ef_construction: int = 200,
    ef: int = 128,
    skip_bad_images: bool = False,
    allow_missing_poses: bool = False,
    batch_size: int = 8,
    progress: Progress | None = None,
    threads: int | None = None,
    ray: str | None = None,
) -> Map:
    """Embed every image of ``source`` and write a map at ``output`` (replacing a map there).

    ``index``: ``auto`` (exact below 50k images, else HNSW), ``exact`` or ``hnsw``.
    ``threads``: image-decoding threads (None: physical cores). ``ray``: embed on a Ray
    cluster at this address (``local``: a local instance). Returns the new map, opened;
    ``manifest["history"][-1]["images_per_s"]`` is the embedding rate.
    """
    _check_dim(engine)
    files = collect_images(source)
    config = IndexConfig(index, hnsw_m, ef_construction, ef).resolved(len(files))
    pose_list, pos_info = _poses_for(files, poses, allow_missing_poses)
    output = Path(output).expanduser()
    with atomic_map_dir(output) as staging:
        t0 = time.perf_counter()
        desc, kept, skipped = _embed(
            engine, files, skip_bad_images, batch_size, progress, threads, ray
        )
        rate = round(len(kept) / max(time.perf_counter() - t0, 1e-9), 2)
        keep = {f: p for f, p in zip(files, pose_list, strict=True)}
        places = _places(kept, [keep[f] for f in kept], 0)
        hnsw = HnswIndex.build(desc, config) if config.type == "hnsw" else None
        pos_info["count"] = sum(p.position is not None for p in places)
        manifest = new_manifest(
            dim=engine.dim,
            model=_model_section(engine),
            index=config.to_manifest(),
            count=len(places),
            positions=pos_info,
            history=[
                _event("build", len(places), skipped, source=_describe(source), images_per_s=rate)
            ],
        )
        _write(staging, manifest, desc, places, hnsw)
    return Map.open(output, expect_fingerprint=engine.fingerprint)


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    return f"{len(source)} paths"


def _event(op: str, count: int, skipped: list[str] | None = None, **extra) -> dict[str, Any]:
    e = {"op": op, "time": now(), "images": count, **extra}
    if skipped:
        e["skipped"] = skipped
    return e


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

    New images get ids after the existing ones; names must not already be in the map.
    HNSW maps get the new items inserted into the stored graph.
    """
    _check_dim(engine)
    files = collect_images(images)
    map_path = Path(map_path).expanduser()
    with atomic_map_dir(map_path) as staging:
        old = Map.open(map_path, expect_fingerprint=engine.fingerprint)
        check_precision(old.manifest["model"], engine.info, str(map_path))
        have = set(old.names)
        dup = [f.name for f in files if f.name in have]
        if dup:
            shown = ", ".join(dup[:5]) + (f" and {len(dup) - 5} more" if len(dup) > 5 else "")
            raise ConfigError(f"{map_path}: already holds images named {shown}; remove them first")
        pose_list, pos_info = _poses_for(files, poses, allow_missing_poses)
        kind = old.position_kind
        if pos_info["kind"] and kind and pos_info["kind"] != kind:
            raise ConfigError(
                f"map positions are {kind}, the new images' are {pos_info['kind']}; "
                "use the same kind of coordinates"
            )
        desc, kept, skipped = _embed(engine, files, skip_bad_images, batch_size, progress, threads)
        keep = {f: p for f, p in zip(files, pose_list, strict=True)}
        new_places = _places(kept, [keep[f] for f in kept], len(old))
        places = old.all_places() + new_places
        all_desc = np.concatenate([old.descriptors, desc])
        hnsw = None
        if isinstance(old.index, HnswIndex):
            hnsw = old.index
            hnsw.add(desc, len(old))
        manifest = _updated_manifest(old, len(places), places, pos_info)
        manifest["history"].append(_event("add", len(new_places), skipped))
        _write(staging, manifest, all_desc, places, hnsw)
    return Map.open(map_path, expect_fingerprint=engine.fingerprint)


def _updated_manifest(
    old: Map, count: int, places: list[Place], new_pos: dict[str, Any] | None = None
) -> dict[str, Any]:
    m = {k: v for k, v in old.manifest.items() if k != "files"}
    m = dict(m, count=count, updated=now(), history=list(m.get("history", [])))
    pos = dict(m.get("positions") or {})
    if new_pos and new_pos.get("kind") and not pos.get("kind"):
        pos.update(kind=new_pos["kind"], source=new_pos["source"])
    pos["count"] = sum(p.position is not None for p in places)
    if pos["count"] == 0:
        pos["kind"] = None
    m["positions"] = pos
    return m


def remove_from_map(map_path: str | os.PathLike, names: Sequence[str]) -> Map:
    """Remove images by name. Later rows move up (ids renumbered); HNSW is rebuilt from the
    stored descriptors (no model needed)."""
    map_path = Path(map_path).expanduser()
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("no image names to remove")
    with atomic_map_dir(map_path) as staging:
        old = Map.open(map_path)
        have = set(old.names)
        unknown = [n for n in names if n not in have]
        if unknown:
            raise ConfigError(f"{map_path}: no images named {', '.join(unknown[:10])} in the map")
        drop = set(names)
        keep_ids = [p.id for p in old.all_places() if p.name not in drop]
        if not keep_ids:
            raise ConfigError(
                f"{map_path}: removing all {len(old)} images would leave an empty map; "
                "delete the map folder instead"
            )
        desc = np.ascontiguousarray(old.descriptors[keep_ids])
        places = [dataclasses.replace(p, id=i) for i, p in enumerate(old.places(keep_ids))]
        hnsw = None
        if isinstance(old.index, HnswIndex):
            hnsw = HnswIndex.build(desc, old.index.config)
        manifest = _updated_manifest(old, len(places), places)
        manifest["history"].append(_event("remove", len(names), names=names[:100]))
        _write(staging, manifest, desc, places, hnsw)
    return Map.open(map_path)


def map_info(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Summary of a map: counts, dims, model, index and parameters, positions, size on disk."""
    m = Map.open(path, verify=verify)
    man = m.manifest
    files = {n: e["bytes"] for n, e in man["files"].items()}
    manifest_bytes = (Path(m.path) / "manifest.json").stat().st_size
    total = sum(files.values()) + manifest_bytes
    model = {k: v for k, v in man["model"].items() if k != "info"}
    return {
        "path": str(m.path),
        "format_version": man["format_version"],
        "count": len(m),
        "dim": m.dim,
        "dtype": man.get("dtype", "float32"),
        "metric": man["metric"],
        "model": model,
        "index": man["index"],
        "positions": man.get("positions"),
        "created": man.get("created"),
        "updated": man.get("updated"),
        "sfrs_edge_version": man.get("sfrs_edge_version"),
        "files": dict(files, **{"manifest.json": manifest_bytes}),
        "size_bytes": total,
        "bytes_per_image": total / max(len(m), 1),
        "checksums": "ok" if verify else "not checked",
        "history": man.get("history", []),
    }
