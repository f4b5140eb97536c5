"""Recall on a recorded drive: a bag's frames against a map, judged by the bag's own positions.

Each frame of ``image_topic`` is localized through the core's stream path without a temporal
filter (per-frame answers, as ``evaluate`` judges image files), and its ground-truth position is
the bag's GPS (``sensor_msgs/NavSatFix``) or pose/odometry topic interpolated at the frame's
stamp (:func:`~sfrs_edge.ros.mapping.place_track`, the rule map building uses). A map place is
right within ``radius`` of it (metres for lat/lon, map units for x/y). A frame the track cannot
place is an error naming the counts.
"""

from __future__ import annotations

import dataclasses
import os

from ..errors import ConfigError
from ..evaluation import Evaluation, radius_positives, score
from ..localize import Localizer
from ..stream.filtering import FilterConfig
from ..video.tracks import DEFAULT_MAX_GAP
from .bag import Bag
from .core import LocalizationCore
from .mapping import bag_track, place_track
from .source import BagFrames


def evaluate_bag(
    loc: Localizer,
    bag_path: str | os.PathLike,
    image_topic: str,
    gps_topic: str | None = None,
    pose_topic: str | None = None,
    radius: float = 25.0,
    max_gap: float = DEFAULT_MAX_GAP,
) -> Evaluation:
    """Localize every frame of ``image_topic`` and score it by the bag's positions."""
    if not (gps_topic or pose_topic):
        raise ConfigError("evaluate --bag needs --gps-topic or --pose-topic for ground truth")
    if radius <= 0:
        raise ConfigError(f"--radius must be positive, got {radius}")
    core = LocalizationCore(loc, FilterConfig(method="none"))
    with Bag.open(bag_path) as bag:
        frames = BagFrames(bag, image_topic)
        t0 = frames.first_stamp()
        frames.t0_ns = t0
        track, _ = bag_track(bag, gps_topic, pose_topic, t0)
        results, stamps, names = [], [], []
        for r, _messages in core.run(_named(frames, names)):
            results.append(r.result)
            stamps.append(core.last_stamp_ns)
        poses = place_track(track, stamps, t0, max_gap, False, "frames", "or raise --max-gap")
    results = [dataclasses.replace(r, source=n) for r, n in zip(results, names, strict=True)]
    topic = gps_topic or pose_topic
    positives = radius_positives(loc, poses, radius, f"{bag.path}:{topic}")
    unit = "m" if loc.map.position_kind == "latlon" else "map units"
    return score(loc, results, positives, f"within {radius:g} {unit} of {topic} at the frame")


def _named(frames: BagFrames, names: list[str]):
    for f in frames:
        names.append(f.name)
        yield f
