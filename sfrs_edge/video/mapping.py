"""Maps from recorded video: decode, select keyframes, position them from a track, write a map.

Each keyframe becomes one place named ``<video stem>_<frame number:06d>``; its ``path`` is the
video, ``timestamp`` the frame time in seconds (text, 3 decimals), and the metadata columns
``sequence`` / ``frame`` / ``keyframe`` hold the video name, frame number and 1. Rows follow the
video's order (what the temporal filters of :mod:`sfrs_edge.stream.filtering` need).

Positions come from a track (CSV or GPX, :mod:`sfrs_edge.video.tracks`) by timestamp. A keyframe the
track cannot place (before/after the track, or inside a gap longer than ``max_gap``) is an
error listing the counts, unless ``allow_missing_poses`` (then it has no position).
Corrupt frames in the video are skipped and recorded in the manifest's history.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..embedding import embed_items
from ..errors import ConfigError, ImageError
from ..images import resize_for_model
from ..maps.index import IndexConfig
from ..maps.map import Map
from ..maps.metadata import Place
from ..maps.poses import Pose
from ..maps.store import atomic_map_dir
from ..maps.writer import Rows, check_engine, history_event, model_section, write_new_map
from .keyframes import KeyframeConfig, KeyframeSelector
from .reader import Frame, VideoSource
from .tracks import DEFAULT_MAX_GAP, Track

log = logging.getLogger(__name__)


def video_keyframes(
    engine,
    video: str | os.PathLike,
    keyframes: KeyframeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 8,
    threads: int | None = None,
) -> tuple[list[tuple[int, float]], np.ndarray, dict]:
    """Decode ``video`` and embed its keyframes: ([(frame, seconds)], descriptors, stats).

    Candidates (time step reached) go through the embedding pipeline in batches; the change
    test then runs over their descriptors in video order, as it would frame by frame (a
    candidate's verdict depends only on the keyframes before it).
    """
    selector = KeyframeSelector(keyframes)
    pre = engine.info.preprocessing
    with VideoSource(video) as source:
        total = source.frame_count or 0

        def candidates() -> Iterator[Frame]:
            for frame in source:
                if progress is not None:
                    progress(frame.index + 1, max(total, frame.index + 1))
                if selector.due(frame.timestamp):
                    yield frame

        got = embed_items(
            candidates(),
            lambda frame: resize_for_model(frame.image, pre),
            engine.embed,  # descriptors only: video maps keep no extra arrays
            batch_size=batch_size,
            threads=threads,
        )
        stats = {
            "frames": source.decoded,
            "corrupt_frames": source.corrupt,
            "candidates": selector.candidates,
            "fps": source.fps,
        }
    if not got.kept:
        raise ImageError(f"{video}: no frame could be decoded")
    desc = np.asarray(got.descriptors, np.float32)
    keep = [i for i, d in enumerate(desc) if selector.accept(d)]
    stats["rejected_unchanged"] = selector.rejected
    kept = [(got.kept[i].index, got.kept[i].timestamp) for i in keep]
    return kept, np.ascontiguousarray(desc[keep]), stats


def _track_poses(
    track: Track, times: list[float], max_gap: float, offset: float, allow_missing: bool
) -> list[Pose | None]:
    found = [track.at(t, max_gap, offset) for t in times]
    outside = sum(f.reason == "outside" for f in found)
    gaps = sum(f.reason == "gap" for f in found)
    if (outside or gaps) and not allow_missing:
        raise ConfigError(
            f"{track.source}: cannot place {outside + gaps} of {len(times)} keyframes "
            f"({outside} outside the track's time span {track.times[0]:.2f}..{track.times[-1]:.2f}"
            f" s, {gaps} in gaps longer than {max_gap} s); fix the track or --track-offset, "
            "raise --max-gap, or pass --allow-missing-poses"
        )
    return [f.pose for f in found]


def build_map_from_video(
    engine,
    video: str | os.PathLike,
    output: str | os.PathLike,
    track: str | os.PathLike | Track | None = None,
    keyframes: KeyframeConfig | None = None,
    max_gap: float = DEFAULT_MAX_GAP,
    track_offset: float = 0.0,
    allow_missing_poses: bool = False,
    index: str = "auto",
    hnsw_m: int = 16,
    ef_construction: int = 200,
    ef: int = 128,
    progress: Callable[[int, int], None] | None = None,
    dtype: str = "float32",
    batch_size: int = 8,
    threads: int | None = None,
) -> Map:
    """Write a map of ``video``'s keyframes at ``output`` (replacing a map there); see module.

    ``dtype``: storage of descriptor files, as for :func:`sfrs_edge.maps.build_map`;
    ``batch_size``/``threads``: the embedding pipeline's batch and decode threads."""
    check_engine(engine)
    video = Path(video).expanduser()
    keyframes = keyframes or KeyframeConfig()
    trk = track if isinstance(track, Track) or track is None else Track.read(track)
    output = Path(output).expanduser()
    with atomic_map_dir(output) as staging:
        kept, desc, stats = video_keyframes(engine, video, keyframes, progress, batch_size, threads)
        times = [t for _, t in kept]
        poses = (
            _track_poses(trk, times, max_gap, track_offset, allow_missing_poses)
            if trk is not None
            else [None] * len(kept)
        )
        places = [
            Place(
                id=i,
                name=f"{video.stem}_{idx:06d}",
                path=str(video.resolve()),
                position=pose.position if pose else None,
                position_kind=pose.kind if pose else None,
                heading=pose.heading if pose else None,
                timestamp=f"{t:.3f}",
                sequence=video.name,
                frame=idx,
            )
            for i, ((idx, t), pose) in enumerate(zip(kept, poses, strict=True))
        ]
        config = IndexConfig(index, hnsw_m, ef_construction, ef).resolved(len(places))
        event = history_event("build", len(places), source=str(video.resolve()))
        event.update(
            video=stats,
            keyframes={"step": keyframes.step, "min_change": keyframes.min_change},
        )
        if trk is not None:
            event["track"] = {"max_gap": max_gap, "offset": track_offset}
        positions = {
            "kind": trk.kind if trk is not None else None,
            "source": f"track:{Path(trk.source).name}" if trk is not None else None,
        }
        write_new_map(
            staging,
            Rows(desc, places),
            config,
            dtype,
            model=model_section(engine),
            positions=positions,
            event=event,
        )
    if stats["corrupt_frames"]:
        log.warning("%s: skipped %d corrupt frames", video, stats["corrupt_frames"])
    return Map.open(output, expect_fingerprint=engine.fingerprint)
