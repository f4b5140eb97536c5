"""Maps from rosbag2 recordings: an image topic's keyframes, positioned from a GPS or pose topic.

The same steps as a map from video (:mod:`sfrs_edge.video.mapping`): frames in time order,
keyframes by time step and descriptor change (:func:`~sfrs_edge.video.mapping.embed_keyframes`,
:class:`~sfrs_edge.video.keyframes.KeyframeConfig`), positions interpolated at each keyframe's
stamp (:meth:`sfrs_edge.video.tracks.Track.at`), one map writer.

Each keyframe becomes a place named ``<topic>@<sec>.<nanosec>`` (its header stamp,
:func:`~sfrs_edge.ros.source.frame_name`); ``path`` is the bag, ``timestamp`` the stamp as
``sec.nanosec`` text, ``sequence`` the topic and ``frame`` the message number on the topic.

Positions: ``gps_topic`` (``sensor_msgs/NavSatFix``, lat/lon; fixes with ``status < 0``
dropped) or ``pose_topic`` (``PoseStamped``, ``PoseWithCovarianceStamped``, ``Odometry``: x, y, z
and heading). A keyframe before the first fix or after the last one, or inside a gap longer
than ``max_gap`` seconds, cannot be placed: an error giving the counts and the first stamp that
fails, unless ``allow_missing_poses`` (then it has no position).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError, ImageError
from ..maps.index import IndexConfig
from ..maps.map import Map
from ..maps.metadata import Place
from ..maps.poses import Pose
from ..maps.store import atomic_map_dir
from ..maps.writer import Rows, check_engine, history_event, model_section, write_new_map
from ..video.keyframes import KeyframeConfig
from ..video.mapping import embed_keyframes
from ..video.tracks import DEFAULT_MAX_GAP, Track
from .bag import Bag
from .frames import stamp_text
from .positions import read_track
from .source import BagFrames

log = logging.getLogger(__name__)


def place_track(
    track: Track,
    stamps_ns: list[int],
    t0_ns: int,
    max_gap: float,
    allow_missing: bool,
    what: str = "frames",
    remedy: str = "raise --max-gap, or pass --allow-missing-poses",
) -> list[Pose | None]:
    """Positions of frames at ``stamps_ns`` (None where the track cannot place them; an error
    naming the counts and the first such stamp unless ``allow_missing``)."""
    found = [track.at((s - t0_ns) / 1e9, max_gap) for s in stamps_ns]
    first_fix = t0_ns + round(track.times[0] * 1e9)
    last_fix = t0_ns + round(track.times[-1] * 1e9)
    pairs = list(zip(found, stamps_ns, strict=True))
    before = sum(f.reason == "outside" and s < first_fix for f, s in pairs)
    after = sum(f.reason == "outside" and s > last_fix for f, s in pairs)
    gaps = sum(f.reason == "gap" for f in found)
    if (before or after or gaps) and not allow_missing:
        bad = next(s for f, s in pairs if f.pose is None)
        parts = [
            f"{before} before the first fix ({stamp_text(first_fix)})" if before else "",
            f"{after} after the last fix ({stamp_text(last_fix)})" if after else "",
            f"{gaps} in gaps longer than {max_gap} s" if gaps else "",
        ]
        raise ConfigError(
            f"{track.source}: cannot place {before + after + gaps} of {len(stamps_ns)} {what} "
            f"({', '.join(p for p in parts if p)}; first at {stamp_text(bad)}); record the "
            f"position topic over the whole drive, {remedy}"
        )
    return [f.pose for f in found]


def _check_start(track: Track, t0_ns: int) -> None:
    if track.times[0] > 0:
        first = t0_ns + round(track.times[0] * 1e9)
        raise ConfigError(
            f"{track.source}: no position before the first frame: the first fix is at "
            f"{stamp_text(first)}, {track.times[0]:.3f} s after the first frame "
            f"({stamp_text(t0_ns)}); record the position topic from the start, or pass "
            "--allow-missing-poses"
        )


def bag_track(
    bag: Bag, gps_topic: str | None, pose_topic: str | None, t0_ns: int
) -> tuple[Track | None, int]:
    """The bag's positions (at most one of the two topics) and the number of dropped fixes."""
    if gps_topic and pose_topic:
        raise ConfigError("give either --gps-topic or --pose-topic, not both")
    if gps_topic:
        return read_track(bag, gps_topic, t0_ns, "--gps-topic")
    if pose_topic:
        return read_track(bag, pose_topic, t0_ns, "--pose-topic")
    return None, 0


def build_map_from_bag(
    engine,
    bag_path: str | os.PathLike,
    output: str | os.PathLike,
    image_topic: str,
    gps_topic: str | None = None,
    pose_topic: str | None = None,
    keyframes: KeyframeConfig | None = None,
    max_gap: float = DEFAULT_MAX_GAP,
    allow_missing_poses: bool = False,
    skip_bad_images: bool = False,
    index: str = "auto",
    hnsw_m: int = 16,
    ef_construction: int = 200,
    ef: int = 128,
    dtype: str = "float32",
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 8,
    threads: int | None = None,
) -> Map:
    """Write a map of the keyframes of ``image_topic`` in the bag at ``output`` (replacing a
    map there; nothing is written on error); see the module doc. ``dtype``,
    ``batch_size``, ``threads``: as for :func:`sfrs_edge.maps.build_map`."""
    check_engine(engine)
    keyframes = keyframes or KeyframeConfig()
    output = Path(output).expanduser()
    with Bag.open(bag_path) as bag:
        frames = BagFrames(bag, image_topic, skip_bad=skip_bad_images)
        t0 = frames.first_stamp()
        frames.t0_ns = t0
        track, dropped = bag_track(bag, gps_topic, pose_topic, t0)
        if track is not None and not allow_missing_poses:
            _check_start(track, t0)  # the first frame is always a keyframe: fail before embedding
        with atomic_map_dir(output) as staging:
            kept, desc, selector = embed_keyframes(
                engine, frames, keyframes, progress, frames.count, batch_size, threads
            )
            if not kept:
                raise ImageError(f"{bag.path}: {image_topic}: no frame could be decoded")
            stamps = [f.stamp_ns for f in kept]
            poses = (
                place_track(track, stamps, t0, max_gap, allow_missing_poses, "keyframes")
                if track is not None
                else [None] * len(kept)
            )
            bag_abs = str(bag.path.resolve())
            places = [
                Place(
                    id=i,
                    name=f.name,
                    path=bag_abs,
                    position=pose.position if pose else None,
                    position_kind=pose.kind if pose else None,
                    heading=pose.heading if pose else None,
                    timestamp=stamp_text(f.stamp_ns),
                    sequence=image_topic,
                    frame=f.index,
                )
                for i, (f, pose) in enumerate(zip(kept, poses, strict=True))
            ]
            config = IndexConfig(index, hnsw_m, ef_construction, ef).resolved(len(places))
            topic = gps_topic or pose_topic
            event = history_event("build", len(places), source=bag_abs)
            event["bag"] = {
                "image_topic": image_topic,
                "position_topic": topic,
                "frames": frames.decoded,
                "corrupt_frames": frames.corrupt,
                "candidates": selector.candidates,
                "rejected_unchanged": selector.rejected,
                "dropped_fixes": dropped,
            }
            event["keyframes"] = {"step": keyframes.step, "min_change": keyframes.min_change}
            if track is not None:
                event["track"] = {"max_gap": max_gap}
            positions = {
                "kind": track.kind if track is not None else None,
                "source": f"bag:{topic}" if topic else None,
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
    if frames.corrupt:
        log.warning("%s: skipped %d undecodable frames", bag_path, frames.corrupt)
    return Map.open(output, expect_fingerprint=engine.fingerprint)
