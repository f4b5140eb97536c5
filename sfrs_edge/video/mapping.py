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

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageError
from ..images import resize_for_model
from ..maps.index import IndexConfig
from ..maps.manifest import new_manifest
from ..maps.map import Map
from ..maps.metadata import Place
from ..maps.poses import Pose
from ..maps.store import atomic_map_dir
from ..maps.writer import Rows, check_engine, history_event, model_section, write_map
from .keyframes import KeyframeConfig, KeyframeSelector
from .reader import Frame, VideoSource
from .tracks import DEFAULT_MAX_GAP, Track

log = logging.getLogger(__name__)


def embed_keyframes(
    engine,
    frames: Iterable[Frame],
    keyframes: KeyframeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    total: int | None = None,
) -> tuple[list[Frame], np.ndarray, KeyframeSelector]:
    """Embed the keyframes of a frame sequence (video or bag topic), in order: returns the kept
    frames (without their pixels), their descriptors (n, dim) and the selector (its counts)."""
    selector = KeyframeSelector(keyframes)
    pre = engine.info.preprocessing
    buf = np.zeros((1, pre.height, pre.width, 3), np.uint8)
    kept: list[Frame] = []
    descs: list[np.ndarray] = []
    for frame in frames:
        if not selector.due(frame.timestamp):
            continue
        resize_for_model(frame.image, pre, out=buf[0])
        d = engine.embed(buf)[0]
        if selector.accept(d):
            kept.append(dataclasses.replace(frame, image=None))
            descs.append(d)
        if progress is not None:
            progress(frame.index + 1, max(total or 0, frame.index + 1))
    dim = int(engine.dim)
    desc = np.stack(descs).astype(np.float32) if descs else np.zeros((0, dim), np.float32)
    return kept, desc, selector


def video_keyframes(
    engine,
    video: str | os.PathLike,
    keyframes: KeyframeConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[tuple[int, float]], np.ndarray, dict]:
    """Decode ``video`` and embed its keyframes: ([(frame, seconds)], descriptors, stats)."""
    with VideoSource(video) as source:
        frames, desc, selector = embed_keyframes(
            engine, source, keyframes, progress, source.frame_count
        )
        stats = {
            "frames": source.decoded,
            "corrupt_frames": source.corrupt,
            "candidates": selector.candidates,
            "rejected_unchanged": selector.rejected,
            "fps": source.fps,
        }
    if not frames:
        raise ImageError(f"{video}: no frame could be decoded")
    return [(f.index, f.timestamp) for f in frames], desc, stats


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
) -> Map:
    """Write a map of ``video``'s keyframes at ``output`` (replacing a map there); see module."""
    check_engine(engine)
    video = Path(video).expanduser()
    keyframes = keyframes or KeyframeConfig()
    trk = track if isinstance(track, Track) or track is None else Track.read(track)
    output = Path(output).expanduser()
    with atomic_map_dir(output) as staging:
        kept, desc, stats = video_keyframes(engine, video, keyframes, progress)
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
        count = sum(p.position is not None for p in places)
        pos_info = {
            "kind": trk.kind if trk is not None and count else None,
            "source": f"track:{Path(trk.source).name}" if trk is not None else None,
            "count": count,
        }
        event = history_event("build", len(places), source=str(video.resolve()))
        event.update(
            video=stats,
            keyframes={"step": keyframes.step, "min_change": keyframes.min_change},
        )
        if trk is not None:
            event["track"] = {"max_gap": max_gap, "offset": track_offset}
        manifest = new_manifest(
            dim=engine.dim,
            model=model_section(engine),
            index=config.to_manifest(),
            count=len(places),
            positions=pos_info,
            history=[event],
        )
        write_map(staging, manifest, Rows(desc, places), config, "float32")
    if stats["corrupt_frames"]:
        log.warning("%s: skipped %d corrupt frames", video, stats["corrupt_frames"])
    return Map.open(output, expect_fingerprint=engine.fingerprint)
