"""Maps from rosbag2 recordings, localizing and evaluating bags, and what bad bags give.

Bags are written here with ``rosbags`` from a few real Gardens Point frames (resized to
320x180 to keep them small), in both storage formats (MCAP, sqlite3)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import cv2
import numpy as np
import pytest
from _bag_util import (
    DT,
    compressed_msg,
    frame_latlon,
    frame_stamp,
    gps_track,
    image_msg,
    navsatfix_msg,
    odometry_msg,
    typestore,
    write_bag,
)
from click.testing import CliRunner

pytest.importorskip("rosbags", reason="the [ros] extra (rosbags) is not installed")

from sfrs_edge.cli import main  # noqa: E402
from sfrs_edge.engine import Engine  # noqa: E402
from sfrs_edge.errors import ConfigError  # noqa: E402
from sfrs_edge.images import read_image  # noqa: E402
from sfrs_edge.maps import build_map  # noqa: E402
from sfrs_edge.ros.bag import Bag, BagError  # noqa: E402
from sfrs_edge.ros.mapping import build_map_from_bag  # noqa: E402
from sfrs_edge.video.keyframes import KeyframeConfig  # noqa: E402

SIZE = (320, 180)
N = 12
KEEP_ALL = KeyframeConfig(step=0, min_change=0)
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"


@pytest.fixture(scope="module")
def engine(tiny_onnx) -> Engine:
    return Engine.open(tiny_onnx, backend="cpu")


def small_jpegs(gardens_point, split: str, idx, folder):
    """JPEG files of the given frames at SIZE (the bytes the compressed messages carry)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in idx:
        img = cv2.imread(str(gardens_point / split / f"Image{i:03d}.jpg"))
        small = cv2.resize(img, SIZE, interpolation=cv2.INTER_AREA)
        path = folder / f"{split}_{i:03d}.jpg"
        cv2.imwrite(str(path), small, [cv2.IMWRITE_JPEG_QUALITY, 90])
        out.append(path)
    return out


def image_topic(files, compressed: bool, encoding: str = "bgr8"):
    ts = typestore()
    msgs = []
    for i, f in enumerate(files):
        t = frame_stamp(i)
        if compressed:
            msgs.append((t, compressed_msg(ts, f.read_bytes(), t)))
        else:
            msgs.append((t, image_msg(ts, read_image(f), t, encoding)))
    return (COMPRESSED if compressed else IMAGE, msgs)


def odom_track(n: int):
    """Odometry every 0.2 s at half-frame offsets: x = i, y = 0.5 i, yaw = 350 + 2 i (wraps)."""
    ts = typestore()
    out = []
    for k in range(-2, 2 * n + 1, 4):
        i = k / 2
        t = frame_stamp(0) + k * DT // 2
        out.append((t, odometry_msg(ts, float(i), 0.5 * i, (350 + 2 * i) % 360, t)))
    return out


@pytest.fixture(scope="module")
def day(tmp_path_factory, gardens_point):
    tmp = tmp_path_factory.mktemp("day")
    return small_jpegs(gardens_point, "day_left", range(0, 8 * N, 8), tmp / "jpg")


# --- maps from bags equal maps from folders -----------------------------------------------


@pytest.mark.parametrize(
    "storage, compressed, positions",
    [
        ("mcap", True, "gps"),
        ("sqlite3", False, "odom"),
        ("mcap", False, "gps"),
        ("sqlite3", True, "odom"),
    ],
)
def test_bag_map_equals_folder_map(engine, day, tmp_path, storage, compressed, positions):
    topics = {"/cam": image_topic(day, compressed)}
    if positions == "gps":
        topics["/fix"] = ("sensor_msgs/msg/NavSatFix", gps_track(N))
        csv = "name,lat,lon\n" + "".join(
            f"{f.name},{frame_latlon(i)[0]!r},{frame_latlon(i)[1]!r}\n" for i, f in enumerate(day)
        )
        kw = {"gps_topic": "/fix"}
    else:
        topics["/odom"] = ("nav_msgs/msg/Odometry", odom_track(N))
        csv = "name,x,y,z,heading\n" + "".join(
            f"{f.name},{i},{0.5 * i},0,{(350 + 2 * i) % 360}\n" for i, f in enumerate(day)
        )
        kw = {"pose_topic": "/odom"}
    bag = write_bag(tmp_path / "drive", topics, storage)
    (tmp_path / "poses.csv").write_text(csv)
    folder = tmp_path / "frames"
    if compressed:  # the same JPEG bytes as the messages
        folder = day[0].parent
    else:  # the decoded pixels, lossless
        folder.mkdir()
        for f in day:
            cv2.imwrite(str(folder / f.name.replace(".jpg", ".png")), read_image(f))
        (tmp_path / "poses.csv").write_text(csv.replace(".jpg", ".png"))
    bmap = build_map_from_bag(engine, bag, tmp_path / "bmap", "/cam", keyframes=KEEP_ALL, **kw)
    fmap = build_map(engine, folder, tmp_path / "fmap", poses=tmp_path / "poses.csv")
    assert len(bmap) == len(fmap) == N
    np.testing.assert_allclose(bmap.descriptors, fmap.descriptors, atol=1e-5)
    bp, fp = bmap.positions(), fmap.positions()
    np.testing.assert_allclose(bp, fp, atol=1e-9 if positions == "gps" else 1e-6)
    assert bmap.position_kind == ("latlon" if positions == "gps" else "xyz")
    places = bmap.all_places()
    assert [p.name for p in places] == [
        f"/cam@{frame_stamp(i) // 10**9}.{frame_stamp(i) % 10**9:09d}" for i in range(N)
    ]  # topic and exact stamp
    assert places[3].sequence == "/cam" and places[3].frame == 3
    assert places[3].timestamp == "1700000000.300000000"
    assert places[3].path == str(bag.resolve())
    if positions == "odom":  # heading interpolated along the shorter arc (350 → 12 wraps)
        heads = [p.heading for p in places]
        want = [(350 + 2 * i) % 360 for i in range(N)]
        assert np.allclose(np.unwrap(np.radians(heads)), np.unwrap(np.radians(want)), atol=1e-6)
    event = bmap.manifest["history"][-1]
    assert event["bag"]["image_topic"] == "/cam" and event["bag"]["frames"] == N
    assert bmap.manifest["positions"]["source"] == f"bag:{kw.popitem()[1]}"


def test_keyframes_by_stamp_and_descriptor_change(engine, day, tmp_path):
    # frames 0, 1, then 6 copies of frame 2 (a stop), then 3, 4: stamps 0.1 s apart
    files = [day[0], day[1], *[day[2]] * 6, day[3], day[4]]
    bag = write_bag(tmp_path / "stop", {"/cam": image_topic(files, True)})
    m = build_map_from_bag(
        engine, bag, tmp_path / "m1", "/cam", keyframes=KeyframeConfig(0.0, 0.02)
    )
    assert [p.frame for p in m.all_places()] == [0, 1, 2, 8, 9]
    assert m.manifest["history"][-1]["bag"]["rejected_unchanged"] == 5
    m2 = build_map_from_bag(
        engine, bag, tmp_path / "m2", "/cam", keyframes=KeyframeConfig(0.3, 0.0)
    )
    assert [p.frame for p in m2.all_places()] == [0, 3, 6, 9]
    assert m.position_kind is None


def test_single_mcap_file_is_a_bag(engine, day, tmp_path):
    bag = write_bag(tmp_path / "drive", {"/cam": image_topic(day[:4], True)}, "mcap")
    mcap = next(bag.glob("*.mcap"))
    m = build_map_from_bag(engine, mcap, tmp_path / "m", "/cam", keyframes=KEEP_ALL)
    assert len(m) == 4


def test_map_build_cli_from_bag(tiny_onnx, day, tmp_path):
    bag = write_bag(
        tmp_path / "drive",
        {"/cam": image_topic(day, True), "/fix": ("sensor_msgs/msg/NavSatFix", gps_track(N))},
    )
    out = tmp_path / "map"
    args = ["map", "build", str(bag), "--image-topic", "/cam", "--gps-topic", "/fix"]
    args += [
        "--model",
        str(tiny_onnx),
        "-o",
        str(out),
        "--keyframe-step",
        "0.2",
        "--min-change",
        "0",
        "--json",
    ]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["images"] == 6 and summary["with_positions"] == 6
    # bag options without a bag, and a bag without its topic, are usage errors
    r = CliRunner().invoke(main, ["map", "build", str(bag), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--image-topic" in r.output
    r = CliRunner().invoke(main, ["map", "build", str(day[0].parent), "--gps-topic", "/fix"])
    assert r.exit_code == 2 and "apply to rosbag2 sources only" in r.output


# --- localize --bag and evaluate --bag ----------------------------------------------------


@pytest.fixture(scope="module")
def lat_map(tmp_path_factory, engine, day):
    tmp = tmp_path_factory.mktemp("latmap")
    bag = write_bag(
        tmp / "day",
        {"/cam": image_topic(day, True), "/fix": ("sensor_msgs/msg/NavSatFix", gps_track(N))},
    )
    return build_map_from_bag(
        engine, bag, tmp / "map", "/cam", gps_topic="/fix", keyframes=KEEP_ALL
    )


@pytest.fixture(scope="module")
def night_bag(tmp_path_factory, gardens_point):
    """The night traversal's frames at the same places (same synthetic GPS) as ``day``."""
    tmp = tmp_path_factory.mktemp("night")
    files = small_jpegs(gardens_point, "night_right", range(0, 8 * N, 8), tmp / "jpg")
    return write_bag(
        tmp / "night",
        {"/cam": image_topic(files, False), "/fix": ("sensor_msgs/msg/NavSatFix", gps_track(N))},
    )


def read_bag(path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append(
                (t, conn.msgtype, r.deserialize(raw, conn.msgtype))
            )
    return out


def _haversine(a, b):
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = (
        math.sin((la2 - la1) / 2) ** 2
        + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    )
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def test_localize_bag_writes_one_fix_per_frame_and_recall_matches_evaluate(
    tiny_onnx, lat_map, night_bag, tmp_path
):
    out = tmp_path / "out.mcap"
    base = ["--model", str(tiny_onnx), "--map", str(lat_map.path)]
    r = CliRunner().invoke(
        main,
        [
            "localize",
            "--bag",
            str(night_bag),
            "--image-topic",
            "/cam",
            "--filter",
            "none",
            "-o",
            str(out),
            "--json",
            *base,
        ],
    )
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert len(lines) == N and out.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    written = read_bag(out)
    fixes = written["/visual_localization/fix"]
    matches = written["/visual_localization/matches"]
    assert len(fixes) == len(matches) == N
    for i, ((t, typ, fix), (t2, _, m)) in enumerate(zip(fixes, matches, strict=True)):
        assert typ == "sensor_msgs/msg/NavSatFix"
        stamp = fix.header.stamp.sec * 10**9 + fix.header.stamp.nanosec
        assert stamp == t == t2 == frame_stamp(i)  # the input frame's stamp, exactly
        info = json.loads(m.data)
        assert (
            info["stamp"] == f"{frame_stamp(i) // 10**9}.{frame_stamp(i) % 10**9:09d}"
            and info["frame"] == i
        )
        assert fix.latitude == pytest.approx(info["position"][0], abs=1e-12)
        assert fix.position_covariance[0] == pytest.approx(info["sigma"] ** 2, rel=1e-3)
        assert fix.status.status == 0 and math.isnan(fix.altitude)
    # recall@1 from the written messages, judged by the bag's own GPS within 3 m
    radius = 3.0
    right = []
    for i, (_, _, m) in enumerate(matches):
        best = json.loads(m.data)["matches"][0]
        right.append(_haversine(best["position"], frame_latlon(i)) <= radius)
    from_messages = 100.0 * sum(right) / N
    r = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--bag",
            str(night_bag),
            "--image-topic",
            "/cam",
            "--gps-topic",
            "/fix",
            "--radius",
            str(radius),
            "-o",
            str(tmp_path / "ev"),
            "--json",
            *base,
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["queries"] == N
    assert summary["recall"]["1"] == pytest.approx(from_messages)
    assert 0 < from_messages < 100  # the test can tell right from wrong
    rows = (tmp_path / "ev" / "queries.jsonl").read_text().splitlines()
    assert json.loads(rows[0])["query"] == "/cam@1700000000.000000000"
    # without --json and -o: one line per frame on stdout, a summary on stderr
    r = CliRunner().invoke(
        main, ["localize", "--bag", str(night_bag), "--image-topic", "/cam", *base]
    )
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == N and all(x.startswith(f"frame {i} ") for i, x in enumerate(lines))
    assert "| seq " in lines[-1] and lines[-1].endswith("| fix, matches")
    assert f"{N} frames of /cam localized" in r.stderr


def test_localize_bag_pose_messages_for_xy_maps(engine, day, tmp_path):
    from sfrs_edge.localize import Localizer
    from sfrs_edge.ros.core import CovarianceRule
    from sfrs_edge.ros.localize_bag import localize_bag

    bag = write_bag(
        tmp_path / "drive",
        {"/cam": image_topic(day, True), "/odom": ("nav_msgs/msg/Odometry", odom_track(N))},
        "sqlite3",
    )
    m = build_map_from_bag(
        engine, bag, tmp_path / "m", "/cam", pose_topic="/odom", keyframes=KEEP_ALL
    )
    loc = Localizer(engine, m, k=3, far_radius=4.0)
    rule = CovarianceRule.for_localizer(loc)
    extent = math.hypot(N - 1, 0.5 * (N - 1))
    assert rule.min_sigma == pytest.approx(0.8) and rule.max_sigma == pytest.approx(extent)
    out = tmp_path / "res"  # a rosbag2 folder this time
    got = list(localize_bag(loc, bag, "/cam", output=out))
    ahead = list(localize_bag(loc, bag, "/cam", in_flight=3))  # frames in flight: same answers
    assert [m.fields for _, ms in ahead for m in ms if m.key == "pose"] == [
        m.fields for _, ms in got for m in ms if m.key == "pose"
    ]
    assert (out / "metadata.yaml").is_file()
    poses = read_bag(out)["/visual_localization/pose"]
    assert len(poses) == len(got) == N
    for (t, _, p), (r, msgs) in zip(poses, got, strict=True):
        info = json.loads(next(x for x in msgs if x.key == "matches").fields["data"])
        assert t == frame_stamp(r.index) and p.header.frame_id == "map"
        cov = np.asarray(p.pose.covariance).reshape(6, 6)
        # the filter's place is the answer; the frame's confidence counts when it is near
        assert info["answer"]["id"] == (r.filtered or r.result.best).id
        gap = np.subtract(info["answer"]["position"], r.result.best.position)
        near = np.hypot(gap[0], gap[1]) <= loc.far_radius
        sigma = rule.sigma(info["confidence"] if near else 0.0)
        if info["answer"]["id"] == r.result.best.id:  # refined by the frame's own estimate
            assert info["position"] == pytest.approx(list(r.result.position))
        assert cov[0, 0] == pytest.approx(sigma**2, rel=1e-6) and cov[0, 0] == cov[1, 1]
        assert cov[2, 2] == pytest.approx(sigma**2, rel=1e-6)  # xyz map: z known as well
        assert p.pose.pose.position.x == pytest.approx(info["position"][0])
        # orientation = yaw of the answer place's heading
        yaw = math.degrees(2 * math.atan2(p.pose.pose.orientation.z, p.pose.pose.orientation.w))
        heading = m.places([info["answer"]["id"]])[0].heading
        assert (yaw - heading + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)


# --- bad bags: one line, nothing half-written ---------------------------------------------


def run_cli(args):
    r = CliRunner().invoke(main, args)
    return r.exit_code, r.output.strip()


def test_bad_bags_give_one_line_errors_and_write_nothing(tiny_onnx, lat_map, day, tmp_path):
    ts = typestore()
    good = write_bag(
        tmp_path / "good",
        {"/cam": image_topic(day[:4], True), "/fix": ("sensor_msgs/msg/NavSatFix", gps_track(4))},
    )
    model = ["--model", str(tiny_onnx)]
    out = tmp_path / "map"

    def build(bag, *extra):
        return run_cli(
            ["map", "build", str(bag), "--image-topic", "/cam", "-o", str(out), *model, *extra]
        )

    # missing topic: the topics that exist are listed
    code, text = run_cli(
        ["map", "build", str(good), "--image-topic", "/camera", "-o", str(out), *model]
    )
    assert code == 1 and len(text.splitlines()) == 1
    assert "/camera is not in the bag" in text and "/cam (sensor_msgs/msg/CompressedImage)" in text
    assert "/fix (sensor_msgs/msg/NavSatFix)" in text
    # wrong message type, both ways round
    code, text = run_cli(
        ["map", "build", str(good), "--image-topic", "/fix", "-o", str(out), *model]
    )
    assert code == 1 and "holds sensor_msgs/msg/NavSatFix; expected" in text
    code, text = build(good, "--gps-topic", "/cam")
    assert code == 1 and "--gps-topic /cam holds sensor_msgs/msg/CompressedImage" in text
    # unsupported encoding
    depth = [
        (
            frame_stamp(i),
            dataclasses.replace(
                image_msg(ts, np.zeros((32, 32, 3), np.uint8), frame_stamp(i)),
                encoding="32FC1",
                step=128,
                data=np.zeros(32 * 128, np.uint8),
            ),
        )
        for i in range(3)
    ]
    code, text = build(write_bag(tmp_path / "depth", {"/cam": (IMAGE, depth)}))
    assert code == 1 and "unsupported image encoding '32FC1'" in text and "bgr8" in text
    # no valid GPS fix before the first frame: early fixes have status -1 (no fix)
    late = gps_track(4, status=lambda k: -1 if k < 2 else 0)
    nofix = write_bag(
        tmp_path / "nofix",
        {"/cam": image_topic(day[:4], True), "/fix": ("sensor_msgs/msg/NavSatFix", late)},
    )
    code, text = build(nofix, "--gps-topic", "/fix")
    assert code == 1 and len(text.splitlines()) == 1  # before any frame is embedded
    assert "nofix:/fix: no position before the first frame: the first fix is at " in text
    assert "1700000000.100000000, 0.100 s after the first frame (1700000000.000000000)" in text
    assert not out.exists()
    code, _ = build(
        nofix,
        "--gps-topic",
        "/fix",
        "--allow-missing-poses",
        "--keyframe-step",
        "0",
        "--min-change",
        "0",
    )
    assert code == 0
    from sfrs_edge.maps import Map

    pos = Map.open(out).positions()
    assert np.isnan(pos[0]).all() and not np.isnan(pos[1:]).any()
    shutil.rmtree(out)
    # a truncated bag file
    mcap = next(good.glob("*.mcap"))
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    code, text = build(cut)
    assert code == 1 and len(text.splitlines()) == 1 and str(cut) in text
    code, text = run_cli(
        [
            "localize",
            "--bag",
            str(cut),
            "--image-topic",
            "/cam",
            "-o",
            str(tmp_path / "o.mcap"),
            "--map",
            str(lat_map.path),
            *model,
        ]
    )
    assert code == 1 and "cut.mcap" in text.splitlines()[-1]
    # not a bag at all, and a missing one
    code, text = build(day[0].parent / "nothing.mcap")
    assert code == 1 and "no such bag" in text
    assert not out.exists() and not (tmp_path / "o.mcap").exists()
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # no staging folder or temporary file (a map writer's lock file may stay)
    assert [p.name for p in leftovers if not p.name.endswith(".lock")] == []


def test_failure_midway_leaves_no_result_bag(tiny_onnx, lat_map, day, tmp_path):
    ts = typestore()
    topic = image_topic(day[:6], True)
    msgs = list(topic[1])
    msgs[4] = (frame_stamp(4), compressed_msg(ts, day[4].read_bytes(), frame_stamp(4), "h264"))
    bag = write_bag(tmp_path / "broken", {"/cam": (COMPRESSED, msgs)})
    out = tmp_path / "res.mcap"
    code, text = run_cli(
        [
            "localize",
            "--bag",
            str(bag),
            "--image-topic",
            "/cam",
            "-o",
            str(out),
            "--map",
            str(lat_map.path),
            "--model",
            str(tiny_onnx),
        ]
    )
    assert code == 1 and "message 4 (1700000000.400000000)" in text.splitlines()[-1]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # an earlier result file survives a failed run untouched; a folder output is never replaced
    out.write_bytes(b"earlier results")
    code, _ = run_cli(["localize", "--bag", str(bag), "--image-topic", "/cam", "-o", str(out),
                       "--map", str(lat_map.path), "--model", str(tiny_onnx)])  # fmt: skip
    assert code == 1 and out.read_bytes() == b"earlier results"
    (tmp_path / "folder_out").mkdir()
    code, text = run_cli(["localize", "--bag", str(bag), "--image-topic", "/cam", "-o",
                          str(tmp_path / "folder_out"), "--map", str(lat_map.path),
                          "--model", str(tiny_onnx)])  # fmt: skip
    assert code == 1 and "folder_out: exists; remove it or choose another output" in text
    assert not any((tmp_path / "folder_out").iterdir())


def test_bag_reader_errors_directly(tmp_path, day):
    with pytest.raises(BagError, match="no such bag"):
        Bag.open(tmp_path / "missing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match="not a rosbag2 folder"):
        Bag.open(tmp_path / "folder")
    (tmp_path / "x.bag").write_bytes(b"#ROSBAG V2.0")
    with pytest.raises(BagError, match="ROS 1"):
        Bag.open(tmp_path / "x.bag")
    (tmp_path / "e.mcap").write_bytes(b"")
    with pytest.raises(BagError, match="empty"):
        Bag.open(tmp_path / "e.mcap")
    (tmp_path / "junk.mcap").write_bytes(b"\x00" * 4096)
    with pytest.raises(BagError, match="cannot be read as a rosbag2"):
        Bag.open(tmp_path / "junk.mcap")
    bag = write_bag(tmp_path / "b", {"/cam": image_topic(day[:2], True)})
    with Bag.open(bag) as b:
        assert b.topics == {"/cam": COMPRESSED} and b.message_count("/cam") == 2
    with pytest.raises(ConfigError, match="either --gps-topic or --pose-topic"):
        from sfrs_edge.ros.mapping import bag_track

        with Bag.open(bag) as b:
            bag_track(b, "/a", "/b", 0)


def test_pose_topics_and_invalid_fixes_make_tracks(tmp_path):
    from sfrs_edge.ros.positions import read_track

    ts = typestore()
    t = ts.types
    poses, fixes = [], []
    for i in range(5):
        stamp = frame_stamp(i)
        odo = odometry_msg(ts, 2.0 * i, -1.0 * i, 90.0, stamp)
        ps = t["geometry_msgs/msg/PoseStamped"](header=odo.header, pose=odo.pose.pose)
        poses.append((stamp, ps))
        lat = float("nan") if i == 1 else frame_latlon(i)[0]
        fixes.append((stamp, navsatfix_msg(ts, lat, 153.0, stamp, -1 if i == 3 else 0)))
    bag = write_bag(
        tmp_path / "b",
        {
            "/pose": ("geometry_msgs/msg/PoseStamped", poses),
            "/fix": ("sensor_msgs/msg/NavSatFix", fixes),
        },
    )
    with Bag.open(bag) as b:
        track, dropped = read_track(b, "/pose", frame_stamp(0), "--pose-topic")
        assert dropped == 0 and track.kind == "xyz"
        pose = track.at(0.25).pose
        assert pose.position == pytest.approx((5.0, -2.5, 0.0)) and pose.heading == pytest.approx(
            90
        )
        track, dropped = read_track(b, "/fix", frame_stamp(0), "--gps-topic")
        assert dropped == 2 and list(np.round(track.times, 6)) == [0.0, 0.2, 0.4]
        with pytest.raises(BagError, match="--pose-topic /fix holds sensor_msgs/msg/NavSatFix"):
            read_track(b, "/fix", frame_stamp(0), "--pose-topic")


def test_frames_out_of_time_order_are_refused(tmp_path, day):
    from sfrs_edge.ros.source import BagFrames

    ts = typestore()
    stamps = [frame_stamp(0), frame_stamp(2), frame_stamp(1)]
    # logged in this order, header stamps going back at the third
    msgs = [
        (frame_stamp(0) + k, compressed_msg(ts, day[k].read_bytes(), s))
        for k, s in enumerate(stamps)
    ]
    bag = write_bag(tmp_path / "b", {"/cam": (COMPRESSED, msgs)})
    with Bag.open(bag) as b:
        frames = BagFrames(b, "/cam")
        with pytest.raises(BagError, match="message 2 is stamped 1700000000.100000000, before"):
            list(frames)
        assert frames.decoded == 2
