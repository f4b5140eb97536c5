"""The rows a map gets from image files: which files, their positions, their descriptors.

Shared by ``map build`` (:mod:`.build`) and ``map add`` (:mod:`.update`).

Bad images: by default a corrupt or unreadable image among the sources fails the whole
operation with an error naming it (a map silently missing places is worse than no map);
``skip_bad=True`` skips such files with a warning and records them in the manifest.

Positions: from a CSV (``poses``), else from EXIF GPS of each JPEG, else none. With a CSV,
an image without a row is an error listing the images, unless ``allow_missing``.

Descriptors: the embedding pipeline (:mod:`sfrs_edge.embedding`) in this process, or with
``ray`` on a Ray actor pool (:mod:`.ray_embed`), whose actors run that same pipeline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..embedding import embed_images
from ..errors import ConfigError, ImageError, MapError
from ..images import IMAGE_SUFFIXES, list_images
from ..model_info import ModelInfo
from .metadata import Place
from .poses import Pose, match_poses, read_exif_gps, read_poses_csv
from .writer import Rows

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class EmbeddingEngine(Protocol):
    """What map building needs from :class:`sfrs_edge.engine.Engine` (the pipeline calls
    ``embed``, or ``embed_all`` when ``extra_outputs`` is not empty)."""

    info: ModelInfo

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class SourceRows:
    """Rows embedded from image files: the rows, skipped-file messages, how they were made
    (``embedded`` goes into the manifest's history: rate, ``embedded_by``, Ray actors)."""

    rows: Rows
    skipped: list[str]
    embedded: dict[str, Any] = field(default_factory=dict)


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


def poses_for(
    files: list[Path], poses: str | os.PathLike | None, allow_missing: bool
) -> tuple[list[Pose | None], dict[str, Any]]:
    """Each file's pose (CSV, else EXIF GPS, else None) and the manifest's positions source."""
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


def places_for(files: list[Path], poses: list[Pose | None], first_id: int) -> list[Place]:
    """One place per file, ids from ``first_id``."""
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


def embed_rows(
    engine: EmbeddingEngine,
    files: list[Path],
    poses: list[Pose | None],
    first_id: int,
    skip_bad: bool,
    batch_size: int,
    progress: Progress | None,
    threads: int | None = None,
    ray: str | None = None,
) -> SourceRows:
    """Embed ``files`` and make their rows (ids from ``first_id``); see the module doc."""
    embedded: dict[str, Any]
    if ray is not None:
        from .ray_embed import embed_with_ray

        result, actors = embed_with_ray(engine.path, files, ray, batch_size, skip_bad)
        embedded = {"embedded_by": "ray", "ray_actors": actors}
    else:
        result = embed_images(engine, files, batch_size, threads, skip_bad, progress)
        embedded = {"embedded_by": "pipeline"}
    log.info("embedded %d images at %.1f images/s", len(result.kept), result.images_per_s)
    arrays = dict(result.outputs)
    desc = np.ascontiguousarray(arrays.pop("descriptor"), dtype=np.float32)
    if desc.shape != (len(result.kept), engine.dim):
        raise MapError(
            f"engine returned descriptors of shape {desc.shape}, expected "
            f"({len(result.kept)}, {engine.dim})"
        )
    pose_of = dict(zip(files, poses, strict=True))
    places = places_for(result.kept, [pose_of[f] for f in result.kept], first_id)
    embedded["images_per_s"] = round(result.images_per_s, 2)
    return SourceRows(Rows(desc, places, arrays), result.skipped, embedded)
