"""The ROS 2 node's core and loop without ROS (what the robot runs, less rclpy), its parameters,
the covariance rule, and the rclpy shell where rclpy exists (it cannot be installed here)."""

from __future__ import annotations

import importlib.util
import json
import queue
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from _bag_util import compressed_msg, frame_latlon, frame_stamp, image_msg, typestore
from click.testing import CliRunner

pytest.importorskip("rosbags", reason="the [ros] extra (rosbags) is not installed")

from sfrs_edge.cli import main  # noqa: E402
from sfrs_edge.errors import ConfigError  # noqa: E402
from sfrs_edge.ros.core import CoreConfig, CovarianceRule, LocalizationCore, map_extent  # noqa: E402
from sfrs_edge.ros.loop import NodeConfig, NodeLoop  # noqa: E402
from sfrs_edge.ros.messages import to_rosbags  # noqa: E402
from sfrs_edge.stream.filtering import FilterConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HAVE_RCLPY = importlib.util.find_spec("rclpy") is not None
N = 10


@pytest.fixture(scope="module")
def localizer(tmp_path_factory, tiny_onnx, gardens_point):
    from sfrs_edge.engine import Engine
    from sfrs_edge.localize import Localizer
    from sfrs_edge.maps import build_map

    tmp = tmp_path_factory.mktemp("nodemap")
    folder = tmp / "day"
    folder.mkdir()
    rows = ["name,lat,lon"]
    for i in range(N):
        img = cv2.imread(str(gardens_point / "day_left" / f"Image{8 * i:03d}.jpg"))
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.resize(img, (320, 180)))
        rows.append(f"{i:03d}.jpg,{frame_latlon(i)[0]!r},{frame_latlon(i)[1]!r}")
    (tmp / "poses.csv").write_text("\n".join(rows) + "\n")
    engine = Engine.open(tiny_onnx, backend="cpu")
    m = build_map(engine, folder, tmp / "map", poses=tmp / "poses.csv")
    return Localizer(engine, m, k=3, far_radius=4.0)


@pytest.fixture(scope="module")
def night_msgs(gardens_point):
    ts = typestore()
    out = []
    for i in range(N):
        img = cv2.imread(str(gardens_point / "night_right" / f"Image{8 * i:03d}.jpg"))
        ok, jpg = cv2.imencode(".jpg", cv2.resize(img, (320, 180)))
        out.append(compressed_msg(ts, jpg.tobytes(), frame_stamp(i)))
    return out


def test_covariance_rule():
    rule = CovarianceRule(min_sigma=5.0, max_sigma=300.0)
    assert rule.sigma(1.0) == 5.0 and rule.sigma(0.5) == 10.0 and rule.sigma(0.1) == 50.0
    assert rule.sigma(0.0) == 300.0 and rule.sigma(1e-9) == 300.0 and rule.sigma(-1) == 300.0
    xy = np.array([[0.0, 0.0], [30.0, 40.0], [np.nan, np.nan]])
    assert map_extent(xy, "xy") == pytest.approx(50.0)
    ll = np.array([[0.0, 0.0], [0.001, 0.0]])  # 0.001 deg of latitude = 111.2 m
    assert map_extent(ll, "latlon") == pytest.approx(111.19, rel=1e-3)
    assert map_extent(np.zeros((0, 2)), None) == 0.0


def test_messages_build_and_serialize_every_output_type(localizer, night_msgs):
    from sfrs_edge.ros.frames import stamped_frame

    ts = typestore()
    core = LocalizationCore(localizer, FilterConfig("none"), CoreConfig(debug_image=True))
    frames = [
        stamped_frame(
            m, "sensor_msgs/msg/CompressedImage", i, frame_stamp(i), frame_stamp(0), "/cam", "test"
        )  # fmt: skip
        for i, m in enumerate(night_msgs[:2])
    ]
    outs = [msgs for _r, msgs in core.run(frames)]
    assert [[m.key for m in o] for o in outs] == [["fix", "matches", "debug_image"]] * 2
    for o in outs:
        for m in o + [core.diagnostics(frame_stamp(5), dropped=3)]:
            obj = to_rosbags(ts, m.msgtype, m.fields)
            back = ts.deserialize_cdr(ts.serialize_cdr(obj, m.msgtype), m.msgtype)
            assert type(back).__name__ == type(obj).__name__
    fix = to_rosbags(ts, outs[1][0].msgtype, outs[1][0].fields)
    assert (fix.header.stamp.sec, fix.header.stamp.nanosec) == (1_700_000_000, 100_000_000)
    assert fix.header.frame_id == "base_link" and fix.position_covariance_type == 1
    dbg = to_rosbags(ts, outs[0][2].msgtype, outs[0][2].fields)
    assert (dbg.encoding, dbg.width, dbg.height, len(dbg.data)) == ("bgr8", 320, 180, 320 * 180 * 3)
    diag = to_rosbags(ts, "diagnostic_msgs/msg/DiagnosticArray", core.diagnostics(0, 3).fields)
    values = {kv.key: kv.value for kv in diag.status[0].values}
    assert diag.status[0].level == 0 and values["frames_localized"] == "2"
    assert values["frames_dropped"] == "3" and values["last_stamp"] == "1700000000.100000000"
    with pytest.raises(KeyError, match="no field"):
        to_rosbags(ts, "std_msgs/msg/String", {"text": "x"})


class Published:
    """A publish callback that records messages and can hold the worker."""

    def __init__(self) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # the worker reached publish

    def __call__(self, m) -> None:
        self.entered.set()
        self.gate.wait(30)
        self.messages.put(m)

    def matches(self, n: int, timeout: float = 30.0) -> list[dict]:
        out = []
        while len(out) < n:
            m = self.messages.get(timeout=timeout)
            if m.key == "matches":
                out.append(json.loads(m.fields["data"]))
        return out


def test_node_loop_localizes_drops_stale_frames_and_resets(localizer, night_msgs):
    core = LocalizationCore(localizer, FilterConfig("seq", window=3), in_flight=1)
    streams = []
    real_stream = localizer.stream

    def counting_stream(*a, **kw):
        streams.append(1)
        return real_stream(*a, **kw)

    localizer.stream = counting_stream
    pub, errors = Published(), []
    loop = NodeLoop(core, pub, "/cam", errors.append).start()
    try:
        assert core.diagnostics(0).fields["status"][0]["level"] == bytes([1])  # WARN: no frame
        loop.on_image(night_msgs[0], "sensor_msgs/msg/CompressedImage")
        first = pub.matches(1)[0]
        assert first["frame"] == 0 and first["stamp"] == "1700000000.000000000"
        # the worker is busy (publishing blocked) while 4 frames arrive: only the newest waits
        pub.gate.clear()
        pub.entered.clear()
        loop.on_image(night_msgs[1], "sensor_msgs/msg/CompressedImage")
        assert pub.entered.wait(30)  # the worker localized frame 1 and waits in publish
        for m in night_msgs[2:6]:
            loop.on_image(m, "sensor_msgs/msg/CompressedImage")
        pub.gate.set()
        assert [g["frame"] for g in pub.matches(2)] == [1, 5]  # 2, 3, 4 were stale
        assert loop.dropped == 3
        assert len(streams) == 1
        # reset: a new stream (a fresh filter) for the next frame, nothing lost
        assert "reset" in loop.reset()
        loop.on_image(night_msgs[6], "sensor_msgs/msg/CompressedImage")
        assert pub.matches(1)[0]["frame"] == 6 and len(streams) == 2
        # a frame that cannot be read is reported and counted; the loop goes on
        bad = image_msg(typestore(), np.zeros((32, 32, 3), np.uint8), frame_stamp(7))
        bad.encoding = "32FC1"
        loop.on_image(bad, "sensor_msgs/msg/Image")
        tick = threading.Event()
        for _ in range(600):  # up to 30 s
            if errors or tick.wait(0.05):
                break
        assert "unsupported image encoding '32FC1'" in errors[0] and core.failed == 1
        status = core.diagnostics(0).fields["status"][0]
        assert status["level"] == bytes([2]) and "32FC1" in status["message"]
        loop.on_image(night_msgs[8], "sensor_msgs/msg/CompressedImage")
        assert pub.matches(1)[0]["frame"] == 8
        assert core.diagnostics(0).fields["status"][0]["level"] == bytes([0])
        assert loop.received == 9
    finally:
        loop.stop()
        del localizer.stream


def test_node_parameters_and_the_example_yaml(localizer):
    from ruamel.yaml import YAML

    params = YAML(typ="safe").load((REPO / "examples/ros2/params.yaml").read_text())
    values = params["sfrs_edge"]["ros__parameters"]
    cfg = NodeConfig.from_mapping(values)  # every name in the example is a parameter
    assert set(values) == set(NodeConfig.__dataclass_fields__)
    assert cfg.qos == "sensor_data" and cfg.qos_depth == 1 and cfg.msgtype.endswith("/Image")
    with pytest.raises(ConfigError, match="unknown node parameter"):
        NodeConfig.from_mapping({"map_dir": "x"})
    with pytest.raises(ConfigError, match="parameter filter"):
        NodeConfig(filter="kalman")
    with pytest.raises(ConfigError, match="image_transport"):
        NodeConfig(image_transport="theora")
    mapped = NodeConfig(model=str(localizer.engine.path), map=str(localizer.map.path), k=2,
                        filter="hmm", window=4, frame_id="world")  # fmt: skip
    core = mapped.build_core()
    assert core.loc.k == 2 and core.filter.method == "hmm" and core.filter.window == 4
    assert core.config.frame_id == "world" and core.in_flight == 1


@pytest.mark.skipif(HAVE_RCLPY, reason="rclpy is installed: the missing-ROS message cannot show")
def test_ros2_command_without_ros_is_one_line():
    r = CliRunner().invoke(main, ["ros2", "--ros-args", "-p", "k:=3"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "needs ROS 2" in lines[0] and "source /opt/ros" in lines[0]


@pytest.mark.skipif(
    not HAVE_RCLPY,
    reason="rclpy is not installable here (ROS 2 comes from apt/robostack, not pip); the "
    "node's logic is tested without it above",
)
def test_rclpy_node_publishes_a_fix_per_image(localizer, night_msgs):  # pragma: no cover
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    from sfrs_edge.ros.node import import_ros, make_node

    rclpy.init()
    try:
        node_cls = make_node(import_ros())
        params = [
            rclpy.parameter.Parameter("model", value=str(localizer.engine.path)),
            rclpy.parameter.Parameter("map", value=str(localizer.map.path)),
            rclpy.parameter.Parameter("image_transport", value="compressed"),
        ]
        node = node_cls(parameter_overrides=params)
        peer = Node("peer")
        got = []
        peer.create_subscription(String, "visual_localization/matches", got.append, 10)
        pub = peer.create_publisher(CompressedImage, "image", 10)
        msg = CompressedImage(format="jpeg", data=bytes(night_msgs[0].data))
        for _ in range(50):
            pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.1)
            rclpy.spin_once(peer, timeout_sec=0.1)
            if got:
                break
        assert got and json.loads(got[0].data)["matches"]
        node.destroy_node()
        peer.destroy_node()
    finally:
        rclpy.shutdown()
