"""``map build`` from images: embed every image of a source and write a fresh map.

The map is written into a staging directory and swapped in atomically (:mod:`.store`), so an
error, a crash or Ctrl-C leaves the previous map (or none) intact. Which files, their positions
and how they are embedded: :mod:`.sources`; maps from video: :mod:`sfrs_edge.video.mapping`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from . import sources
from .index import IndexConfig
from .map import Map
from .sources import EmbeddingEngine, collect_images, poses_for
from .store import atomic_map_dir
from .writer import check_engine, history_event, model_section, write_new_map

Progress = Callable[[int, int], None]


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
    ``manifest["history"][-1]`` records the embedding rate (``images_per_s``) and route
    (``embedded_by``: ``pipeline``, or ``ray`` with ``ray_actors``: rows embedded per actor).
    """
    check_engine(engine)
    files = collect_images(source)
    config = IndexConfig(index, hnsw_m, ef_construction, ef).resolved(len(files))
    pose_list, pos_info = poses_for(files, poses, allow_missing_poses)
    output = Path(output).expanduser()
    with atomic_map_dir(output) as staging:
        got = sources.embed_rows(
            engine, files, pose_list, 0, skip_bad_images, batch_size, progress, threads, ray
        )
        event = history_event(
            "build", len(got.rows.places), got.skipped, source=_describe(source), **got.embedded
        )
        write_new_map(
            staging,
            got.rows,
            config,
            dtype,
            model=model_section(engine),
            positions=pos_info,
            event=event,
        )
    return Map.open(output, expect_fingerprint=engine.fingerprint)


def _describe(source: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    return f"{len(source)} paths"
