"""Write small rosbag2 recordings for tests with ``rosbags`` (both storage formats)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

T0 = 1_700_000_000_000_000_000  # ns: a 2023 date, as a recording would carry
DT = 100_000_000  # 10 Hz frames
LAT0, LON0 = -27.4775, 153.0280  # Gardens Point, Brisbane
STEP_DEG = 1e-5  # ~1.1 m north per frame


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def _header(ts, stamp_ns: int, frame_id: str = "camera"):
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    return Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def image_msg(ts, bgr: np.ndarray, stamp_ns: int, encoding: str = "bgr8"):
    """A sensor_msgs/Image of ``bgr`` in ``encoding`` (bgr8, rgb8, mono8, mono16, bayer_rggb8)."""
    Image = ts.types["sensor_msgs/msg/Image"]
    h, w = bgr.shape[:2]
    if encoding == "bgr8":
        pix = bgr
    elif encoding == "rgb8":
        pix = bgr[:, :, ::-1]
    elif encoding == "mono8":
        pix = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif encoding == "mono16":
        pix = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype("<u2") * 257
    elif encoding == "bayer_rggb8":
        pix = np.zeros((h, w), np.uint8)
        pix[0::2, 0::2] = bgr[0::2, 0::2, 2]  # R
        pix[0::2, 1::2] = bgr[0::2, 1::2, 1]  # G
        pix[1::2, 0::2] = bgr[1::2, 0::2, 1]  # G
        pix[1::2, 1::2] = bgr[1::2, 1::2, 0]  # B
    else:
        raise ValueError(encoding)
    data = np.ascontiguousarray(pix).view(np.uint8).reshape(-1)
    return Image(
        header=_header(ts, stamp_ns),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=len(data) // h,
        data=data,
    )


def compressed_msg(ts, data: bytes, stamp_ns: int, fmt: str = "jpeg"):
    CompressedImage = ts.types["sensor_msgs/msg/CompressedImage"]
    return CompressedImage(
        header=_header(ts, stamp_ns), format=fmt, data=np.frombuffer(data, np.uint8)
    )


def navsatfix_msg(ts, lat: float, lon: float, stamp_ns: int, status: int = 0):
    Fix = ts.types["sensor_msgs/msg/NavSatFix"]
    Status = ts.types["sensor_msgs/msg/NavSatStatus"]
    return Fix(
        header=_header(ts, stamp_ns, "gps"),
        status=Status(status=status, service=1),
        latitude=lat,
        longitude=lon,
        altitude=20.0,
        position_covariance=np.zeros(9),
        position_covariance_type=0,
    )


def odometry_msg(ts, x: float, y: float, yaw_deg: float, stamp_ns: int):
    t = ts.types
    yaw = math.radians(yaw_deg)
    pose = t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
        orientation=t["geometry_msgs/msg/Quaternion"](
            x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)
        ),
    )
    twist = t["geometry_msgs/msg/Twist"](
        linear=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
        angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
    )
    return t["nav_msgs/msg/Odometry"](
        header=_header(ts, stamp_ns, "odom"),
        child_frame_id="base_link",
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=np.zeros(36)),
    )


def write_bag(
    path: Path, topics: dict[str, tuple[str, Sequence[tuple[int, object]]]], storage: str = "mcap"
) -> Path:
    """Write ``{topic: (msgtype, [(log_ns, msg), ...])}`` as a rosbag2 folder at ``path``
    (``storage``: mcap or sqlite3), messages interleaved by time."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    events = []
    with Writer(path, version=9, storage_plugin=plugin) as w:
        for topic, (msgtype, msgs) in topics.items():
            conn = w.add_connection(topic, msgtype, typestore=ts)
            events += [(t, i, conn, msgtype, m) for i, (t, m) in enumerate(msgs)]
        for t, _i, conn, msgtype, m in sorted(events, key=lambda e: (e[0], e[1])):
            w.write(conn, t, ts.serialize_cdr(m, msgtype))
    return path


def gps_track(n: int, start: int = -1, stop: int | None = None, status=None):
    """NavSatFix messages every 0.2 s from frame ``start`` to ``stop`` (frame times), north
    ``STEP_DEG`` per frame; ``status(i)`` gives each fix's status."""
    ts = typestore()
    stop = n if stop is None else stop
    out = []
    for k in range(2 * start, 2 * stop + 1, 4):  # every 2 frames (0.2 s), half-frame offset
        t = T0 + k * DT // 2
        frame_pos = k / 2
        s = 0 if status is None else status(k)
        out.append((t, navsatfix_msg(ts, LAT0 + frame_pos * STEP_DEG, LON0, t, s)))
    return out


def frame_stamp(i: int) -> int:
    return T0 + i * DT


def frame_latlon(i: float) -> tuple[float, float]:
    return LAT0 + i * STEP_DEG, LON0
