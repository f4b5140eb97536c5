"""Build, extend and shrink maps: ``build_map``, ``add_to_map``, ``remove_from_map``, ``map_info``.

Every update writes a new generation into a staging directory and swaps it in atomically
(:mod:`.store`), so an error, a crash or Ctrl-C leaves the previous map (or none) intact;
``map add`` writes only the new rows and links the rest (:mod:`.writer`).

Bad images: by default a corrupt or unreadable image among the sources fails the whole
operation with an error naming it (a map silently missing places is worse than no map);
``skip_bad_images=True`` skips such files with a warning and records them in the manifest.

Positions: from a CSV (``poses``), else from EXIF GPS of each JPEG, else none. With a CSV,
an image without a row is an error listing the images, unless ``allow_missing_poses``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, ImageError, MapError
from ..images import IMAGE_SUFFIXES, list_images
from ..model_info import ModelInfo
from .embedding import Embedded, embed_images
from .index import IndexConfig
from .manifest import FORMAT_VERSION, new_manifest, now
from .map import Map
from .metadata import Place
from .poses import Pose, match_poses, read_exif_gps, read_poses_csv
from .store import atomic_map_dir
from .writer import Rows, append_rows, check_engine, history_event, model_section, write_map

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
EMBED_CHUNK = 64  # files per engine call: bounds the work redone when a bad file is met
# what an unreadable-image error of a build ends with: the remedy, not only the cause
SKIP_REMEDY = "pass --skip-bad-images (skip_bad_images=True) to leave unreadable images out"


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


def _embed_files(engine: EmbeddingEngine, files: list[Path], batch_size: int) -> dict:
    """{"descriptor": (n, dim), extra outputs...} of ``files`` (contract 1: ``embed_all``)."""
    if not getattr(engine, "extra_outputs", None):
        return {"descriptor": engine.embed_files(files, batch_size=batch_size)}
    from ..images import read_image, resize_for_model

    pre = engine.info.preprocessing
    out: dict[str, list[np.ndarray]] = {}
    for a in range(0, len(files), batch_size):
        chunk = files[a : a + batch_size]
        batch = np.stack([resize_for_model(read_image(f), pre) for f in chunk])
        for name, arr in engine.embed_all(batch).items():
            out.setdefault(name, []).append(np.asarray(arr))
    return {n: np.concatenate(v) for n, v in out.items()}


def _embed(
    engine: EmbeddingEngine,
    files: list[Path],
    skip_bad: bool,
    batch_size: int,
    progress: Progress | None,
    threads: int | None = None,
    ray: str | None = None,
) -> tuple[np.ndarray, list[Path], list[str], dict[str, np.ndarray]]:
    """Descriptors of ``files``; returns (descriptors, files kept, skipped file messages,
    extra outputs row-aligned with the descriptors).

    A real :class:`~sfrs_edge.engine.Engine` goes through the overlapped decode/inference
    pipeline (:mod:`.embedding`), or with ``ray`` (an address, or ``local``) through a Ray
    actor pool (:mod:`.ray_embed`); an engine offering only ``embed_files`` is called in chunks.
    """
    try:
        if ray is not None:
            from .ray_embed import embed_with_ray

            result = embed_with_ray(engine.path, files, ray, batch_size, skip_bad)
        elif hasattr(engine, "embed") and hasattr(engine.info, "preprocessing"):
            result = embed_images(engine, files, batch_size, threads, skip_bad, progress)
            log.info("embedded %d images at %.1f images/s", len(result.kept), result.images_per_s)
        else:
            result = _embed_in_chunks(engine, files, skip_bad, batch_size, progress)
    except ImageError as exc:
        if skip_bad:
            raise
        raise ImageError(f"{exc}; {SKIP_REMEDY}") from exc
    arrays = dict(result.outputs)
    desc = np.ascontiguousarray(arrays.pop("descriptor"), dtype=np.float32)
    if desc.shape != (len(result.kept), engine.dim):
        raise MapError(
            f"engine returned descriptors of shape {desc.shape}, expected {len(result.kept)}"
        )
    if not np.isfinite(desc).all():
        raise MapError("the model produced NaN/inf descriptors; the model file is unusable")
    return desc, result.kept, result.skipped, arrays


def _embed_in_chunks(
    engine: EmbeddingEngine,
    files: list[Path],
    skip_bad: bool,
    batch_size: int,
    progress: Progress | None,
) -> Embedded:
    parts: list[dict] = []
    kept, skipped = [], []
    total = len(files)
    for start in range(0, total, EMBED_CHUNK):
        chunk = files[start : start + EMBED_CHUNK]
        try:
            parts.append(_embed_files(engine, chunk, batch_size))
            kept.extend(chunk)
        except ImageError:
            if not skip_bad:
                raise
            for f in chunk:  # find the bad ones: one file at a time
                try:
                    parts.append(_embed_files(engine, [f], 1))
                    kept.append(f)
                except ImageError as exc:
                    log.warning("skipping %s", exc)
                    skipped.append(str(exc))
        if progress is not None:
            progress(min(start + EMBED_CHUNK, total), total)
    if not kept:
        raise ImageError(f"none of the {total} images could be read: {skipped[0]}")
    arrays = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
    return Embedded(arrays, kept, skipped)


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
    dtype: str = "float32",
    threads: int | None = None,
    ray: str | None = None,
) -> Map:
    """Embed every image of ``source`` and write a map at ``output`` (replacing a map there).

    ``index``: ``auto`` (exact below 50k images, else HNSW), ``exact`` or ``hnsw``.
    ``dtype``: storage of descriptor files (``float16`` halves them; HNSW graphs hold float32).
    ``threads``: image-decoding threads (None: physical cores). ``ray``: embed on a Ray
    cluster at this address (``local``: a local instance). Returns the new map, opened;
    ``manifest["history"][-1]["images_per_s"]`` is the embedding rate.
    """
    check_engine(engine)
    files = collect_images(source)
    config = IndexConfig(index, hnsw_m, ef_construction, ef).resolved(len(files))
    pose_list, pos_info = _poses_for(files, poses, allow_missing_poses)
    output = Path(output).expanduser()
    with atomic_map_dir(output) as staging:
        t0 = time.perf_counter()
        desc, kept, skipped, extras = _embed(
            engine, files, skip_bad_images, batch_size, progress, threads, ray
        )
        rate = round(len(kept) / max(time.perf_counter() - t0, 1e-9), 2)
        keep = {f: p for f, p in zip(files, pose_list, strict=True)}
        places = _places(kept, [keep[f] for f in kept], 0)
        pos_info["count"] = sum(p.position is not None for p in places)
        manifest = new_manifest(
            dim=engine.dim,
            model=model_section(engine),
            index=config.to_manifest(),
            count=len(places),
            positions=pos_info,
            history=[
                history_event(
                    "build", len(places), skipped, source=_describe(source), images_per_s=rate
                )
            ],
        )
        write_map(staging, manifest, Rows(desc, places, extras), config, dtype)
    return Map.open(output, expect_fingerprint=engine.fingerprint)


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    return f"{len(source)} paths"


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
        pose_list, pos_info = _poses_for(files, poses, allow_missing_poses)
        kind = old.position_kind
        if pos_info["kind"] and kind and pos_info["kind"] != kind:
            raise ConfigError(
                f"map positions are {kind}, the new images' are {pos_info['kind']}; "
                "use the same kind of coordinates"
            )
        desc, kept, skipped, extras = _embed(
            engine, files, skip_bad_images, batch_size, progress, threads
        )
        keep = {f: p for f, p in zip(files, pose_list, strict=True)}
        new_places = _places(kept, [keep[f] for f in kept], len(old))
        _append(staging, old, Rows(desc, new_places, extras), pos_info, skipped)
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
    manifest = _updated_manifest(old, old_positions(old) + with_pos, pos_info)
    manifest["history"].append(history_event("add", len(rows.places), skipped))
    append_rows(staging, old, rows, manifest)


def old_positions(m: Map) -> int:
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


def map_info(path: str | os.PathLike, verify: bool | str = True) -> dict[str, Any]:
    """Summary of a map: counts, dims, model, index, positions, size on disk and per place."""
    m = Map.open(path, verify=verify, load_index=False)
    man = m.manifest
    files = {n: e["bytes"] for n, e in man["files"].items()}
    manifest_bytes = (m.folder / "manifest.json").stat().st_size
    total = sum(files.values()) + manifest_bytes
    model = {k: v for k, v in man["model"].items() if k != "info"}
    n = max(len(m), 1)
    per_kind = {"descriptors": 0, "index": 0, "metadata": 0}
    per_extra = {x: 0 for x in m.extras}
    for seg in man["segments"]:
        if seg["descriptors"]:
            per_kind["descriptors"] += files[seg["descriptors"]]
        per_kind["metadata"] += files[seg["metadata"]]
        for x, f in seg.get("extras", {}).items():
            per_extra[x] += files[f]
    per_kind["index"] = files.get("index.bin", 0)
    return {
        "path": str(m.path),
        "format_version": man["format_version"],
        "count": len(m),
        "dim": m.dim,
        "dtype": m.dtype,
        "metric": man["metric"],
        "model": model,
        "index": man["index"],
        "indexed": m.indexed,
        "segments": len(man["segments"]),
        "extras": man.get("extras", {}),
        "positions": man.get("positions"),
        "created": man.get("created"),
        "updated": man.get("updated"),
        "sfrs_edge_version": man.get("sfrs_edge_version"),
        "files": dict(files, **{"manifest.json": manifest_bytes}),
        "size_bytes": total,
        "bytes_per_image": total / n,
        "bytes_per_place": {
            **{k: v / n for k, v in per_kind.items()},
            **{f"extra:{x}": v / n for x, v in per_extra.items()},
        },
        "checksums": {"full": "verified (full)", False: "not checked"}.get(verify, "ok"),
        "history": man.get("history", []),
    }
