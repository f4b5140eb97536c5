"""Positions recorded in a bag → a :class:`~sfrs_edge.video.tracks.Track`, interpolated at each
image's stamp by the one interpolation rule of the package (:meth:`Track.at`: linear between
the two fixes around the time, heading along the shorter arc, no extrapolation, no position
inside gaps longer than ``max_gap``).

- ``sensor_msgs/NavSatFix``: lat/lon (degrees). Fixes with ``status.status < 0``
  (``STATUS_NO_FIX``) are dropped, as are NaN coordinates; no heading.
- ``geometry_msgs/PoseStamped``, ``geometry_msgs/PoseWithCovarianceStamped`` and
  ``nav_msgs/Odometry``: x, y, z in the message's frame (map units), heading = yaw of the
  orientation in degrees, counter-clockwise from +x (REP 103), in [0, 360).

Times: seconds relative to ``t0_ns`` (the bag's first image stamp), so the same clock as the
image frames; message header stamps, or the recorder's log time when a header stamp is zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..video.tracks import Track
from .bag import Bag, BagError

NAVSATFIX = "sensor_msgs/msg/NavSatFix"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_COV_STAMPED = "geometry_msgs/msg/PoseWithCovarianceStamped"
ODOMETRY = "nav_msgs/msg/Odometry"
GPS_TYPES = (NAVSATFIX,)
POSE_TYPES = (POSE_STAMPED, POSE_COV_STAMPED, ODOMETRY)


def yaw_degrees(q: Any) -> float:
    """Yaw of a quaternion (x, y, z, w fields) in degrees in [0, 360), CCW from +x."""
    x, y, z, w = float(q.x), float(q.y), float(q.z), float(q.w)
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return math.degrees(yaw) % 360.0


def _pose_of(msg: Any, msgtype: str) -> Any:
    if msgtype == POSE_STAMPED:
        return msg.pose
    return msg.pose.pose  # PoseWithCovarianceStamped, Odometry


def read_track(bag: Bag, topic: str, t0_ns: int, role: str = "--gps-topic") -> tuple[Track, int]:
    """The positions on ``topic`` as a Track (times in seconds from ``t0_ns``), and the number
    of messages dropped (no fix, NaN). ``role``: ``--gps-topic`` (NavSatFix) or
    ``--pose-topic`` (poses, odometry)."""
    accepted = GPS_TYPES if role == "--gps-topic" else POSE_TYPES
    times, pos, heads = [], [], []
    rejected = 0
    kind = "latlon" if accepted == GPS_TYPES else "xyz"
    for m in bag.messages(topic, accepted, role):
        t = (m.stamp_ns - t0_ns) / 1e9
        if m.msgtype == NAVSATFIX:
            lat, lon = float(m.msg.latitude), float(m.msg.longitude)
            if int(m.msg.status.status) < 0 or not (math.isfinite(lat) and math.isfinite(lon)):
                rejected += 1
                continue
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise BagError(
                    f"{bag.path}: {topic} message {m.index}: lat/lon {lat}, {lon} out of range"
                )
            pos.append((lat, lon))
        else:
            p = _pose_of(m.msg, m.msgtype)
            xyz = (float(p.position.x), float(p.position.y), float(p.position.z))
            if not all(math.isfinite(v) for v in xyz):
                rejected += 1
                continue
            pos.append(xyz)
            heads.append(yaw_degrees(p.orientation))
        times.append(t)
    if not times:
        why = f" ({rejected} without a valid fix, status < 0 or NaN)" if rejected else ""
        raise BagError(f"{bag.path}: {topic} has no usable positions{why}")
    headings = np.asarray(heads) if heads else None
    source = f"{bag.path.name}:{topic}"
    return Track(np.asarray(times), np.asarray(pos), kind, headings, source=source), rejected
