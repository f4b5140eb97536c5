"""Video decoding (timestamps, corrupt frames), keyframe selection and maps built from video.

Videos are assembled here from real Gardens Point frames with cv2.VideoWriter (MJPG .avi)."""

from __future__ import annotations

import json
import sqlite3

import cv2
import numpy as np
import pytest
from _video_util import SIZE, corrupt_frames, write_video
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.engine import Engine
from sfrs_edge.errors import ConfigError
from sfrs_edge.localize import Localizer
from sfrs_edge.maps import build_map
from sfrs_edge.video import VideoError, VideoSource, is_video
from sfrs_edge.video.keyframes import KeyframeConfig, KeyframeSelector
from sfrs_edge.video.mapping import build_map_from_video

FPS = 10.0


def frames_of(gardens_point, split: str, idx) -> list:
    return [gardens_point / split / f"Image{i:03d}.jpg" for i in idx]


@pytest.fixture(scope="module")
def engine(tiny_onnx) -> Engine:
    return Engine.open(tiny_onnx, backend="cpu")


@pytest.fixture(scope="module")
def drive(tmp_path_factory, gardens_point):
    """12 frames of day_left (every 8th image) at 10 fps."""
    tmp = tmp_path_factory.mktemp("video")
    return write_video(
        tmp / "drive.avi", frames_of(gardens_point, "day_left", range(0, 96, 8)), FPS
    )


def decode_all(path):
    with VideoSource(path) as v:
        frames = list(v)
    return frames, v


def test_decode_frames_and_timestamps(drive, gardens_point):
    frames, v = decode_all(drive)
    assert v.fps == pytest.approx(FPS) and v.frame_count == 12 and v.corrupt == 0
    assert [f.index for f in frames] == list(range(12))
    assert [f.timestamp for f in frames] == pytest.approx([i / FPS for i in range(12)])
    src = frames_of(gardens_point, "day_left", range(0, 96, 8))
    for f, path in zip(frames, src, strict=True):
        assert f.image.shape == (SIZE[1], SIZE[0], 3) and f.image.dtype == np.uint8
        ref = cv2.resize(cv2.imread(str(path)), SIZE, interpolation=cv2.INTER_AREA)
        assert np.abs(f.image.astype(int) - ref).mean() < 6  # MJPG is lossy, but it is this frame
    with pytest.raises(VideoError, match="only once"):
        list(v)


def test_corrupt_frames_in_the_middle_are_skipped(drive, tmp_path):
    bad = corrupt_frames(drive, tmp_path / "bad.avi", [4, 5, 9])
    good, _ = decode_all(drive)
    frames, v = decode_all(bad)
    assert v.corrupt == 3 and v.decoded == 9
    assert [f.index for f in frames] == [0, 1, 2, 3, 6, 7, 8, 10, 11]
    assert [f.timestamp for f in frames] == pytest.approx([f.index / FPS for f in frames])
    for f in frames:  # the frames after the damage are the right ones
        assert np.array_equal(f.image, good[f.index].image)


def test_unopenable_sources(tmp_path):
    with pytest.raises(VideoError, match="no such video file"):
        VideoSource(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        VideoSource(tmp_path / "empty.mp4")
    (tmp_path / "junk.avi").write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="cannot open as a video"):
        VideoSource(tmp_path / "junk.avi")
    with pytest.raises(VideoError, match="camera 97: cannot be opened"):
        VideoSource(97)
    assert is_video("a/b.MP4") and not is_video("a/b.jpg")


def test_keyframe_selector_time_step_and_change():
    sel = KeyframeSelector(KeyframeConfig(step=0.5, min_change=0.1))
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 1.0, 0.0])
    assert [sel.due(t) for t in (0.0, 0.2, 0.4, 0.5, 0.9, 1.0)] == [1, 0, 0, 1, 0, 1]
    assert sel.accept(a)  # the first frame is always kept
    assert not sel.accept(a)  # standing still: same view, not added again
    near_a = np.array([0.99, 0.141, 0.0]) / np.linalg.norm([0.99, 0.141, 0.0])
    assert not sel.accept(near_a)  # 1 - cos ~ 0.01 < 0.1
    assert sel.accept(b) and not sel.accept(b) and sel.accept(a)
    assert sel.rejected == 3
    keep_all = KeyframeSelector(KeyframeConfig(step=0, min_change=0))
    assert all(keep_all.due(0.0) and keep_all.accept(a) for _ in range(3))
    with pytest.raises(ConfigError):
        KeyframeConfig(step=-1)


def test_a_stopped_vehicle_adds_no_duplicates(engine, gardens_point, tmp_path):
    # drive past 2 places, stand at the 3rd for 8 frames, drive on past 2: 12 frames
    idx = [0, 20, *[40] * 8, 60, 80]
    video = write_video(tmp_path / "stop.avi", frames_of(gardens_point, "day_left", idx), FPS)
    m = build_map_from_video(
        engine, video, tmp_path / "map", keyframes=KeyframeConfig(step=0.0, min_change=0.02)
    )
    assert [p.frame for p in m.all_places()] == [0, 1, 2, 10, 11]
    event = m.manifest["history"][-1]
    assert event["video"]["candidates"] == 12 and event["video"]["rejected_unchanged"] == 7
    # and the time step alone halves the candidates
    m2 = build_map_from_video(
        engine, video, tmp_path / "map2", keyframes=KeyframeConfig(step=0.2, min_change=0.0)
    )
    assert [p.frame for p in m2.all_places()] == [0, 2, 4, 6, 8, 10]


def test_video_map_equals_image_map(engine, drive, gardens_point, tmp_path):
    """Same frames, once as a video and once as image files: same map, same answers."""
    vmap = build_map_from_video(
        engine, drive, tmp_path / "vmap", keyframes=KeyframeConfig(step=0, min_change=0)
    )
    folder = tmp_path / "frames"
    folder.mkdir()
    frames, _ = decode_all(drive)
    for f in frames:
        cv2.imwrite(str(folder / f"drive_{f.index:06d}.png"), f.image)  # lossless
    imap = build_map(engine, folder, tmp_path / "imap")
    assert len(vmap) == len(imap) == 12
    assert [p.name for p in vmap.all_places()] == [p.stem for p in sorted(folder.iterdir())]
    np.testing.assert_allclose(vmap.descriptors, imap.descriptors, atol=1e-5)
    lv, li = Localizer(engine, vmap, k=3), Localizer(engine, imap, k=3)
    for q in frames_of(gardens_point, "day_right", (4, 30, 57, 83)):
        a, b = lv.localize_file(q), li.localize_file(q)
        assert [m.id for m in a.matches] == [m.id for m in b.matches]
        assert [m.similarity for m in a.matches] == pytest.approx(
            [m.similarity for m in b.matches], abs=1e-5
        )
    # metadata: source video, frame numbers and times
    p = vmap.all_places()[3]
    assert p.sequence == "drive.avi" and p.frame == 3 and p.timestamp == "0.300"
    assert p.path == str(drive.resolve())
    with sqlite3.connect(vmap.path / "seg-000000.meta.sqlite") as con:
        rows = con.execute("SELECT sequence, frame, keyframe, timestamp FROM places").fetchall()
    assert rows[5] == ("drive.avi", 5, 1, "0.500")


def test_map_build_cli_with_track(engine, tiny_onnx, drive, tmp_path):
    csv = tmp_path / "track.csv"  # fixes every 0.5 s, x = 10 m/s
    csv.write_text("t,x,y\n" + "".join(f"{t / 2},{5 * t},0\n" for t in range(0, 3)))
    out = tmp_path / "map"
    runner = CliRunner()
    args = ["map", "build", str(drive), "--model", str(tiny_onnx), "-o", str(out)]
    args += ["--poses", str(csv), "--keyframe-step", "0", "--min-change", "0"]
    r = runner.invoke(main, args)
    # frames 0..11 at 0.0..1.1 s; the track ends at 1.0 s
    assert r.exit_code == 1 and "cannot place 1 of 12 keyframes (1 outside" in r.output
    r = runner.invoke(main, [*args, "--allow-missing-poses"])
    assert r.exit_code == 0, r.output
    assert "12 keyframes of 12 frames" in r.output and "11 with positions" in r.output
    info = json.loads(runner.invoke(main, ["map", "info", str(out), "--json"]).output)
    assert info["positions"] == {"kind": "xy", "source": "track:track.csv", "count": 11}
    from sfrs_edge.maps import Map

    pos = Map.open(out).positions()
    np.testing.assert_allclose(pos[:11, 0], np.arange(11))  # 10 m/s * 0.1 s per frame
    assert np.isnan(pos[11]).all()
    gpx = tmp_path / "t.gpx"
    gpx.write_text(
        '<gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        '<trkpt lat="1.0" lon="2.0"><time>2024-01-01T00:00:00Z</time></trkpt>'
        '<trkpt lat="1.0" lon="2.0011"><time>2024-01-01T00:00:01.1Z</time></trkpt>'
        "</trkseg></trk></gpx>"
    )
    r = runner.invoke(main, [*args[:7], "--gpx", str(gpx), "--keyframe-step", "0.5"])
    assert r.exit_code == 0, r.output
    places = Map.open(out).all_places()
    assert [p.frame for p in places][:2] == [0, 5] and places[1].position_kind == "latlon"
    assert places[1].position == pytest.approx((1.0, 2.0005))


def test_map_build_cli_video_float16_is_float16(tiny_onnx, drive, tmp_path):
    """``--dtype float16`` reaches a map built from video: its descriptor files are float16
    and hold the same rows as a float32 build, rounded."""
    runner = CliRunner()
    base = ["map", "build", str(drive), "--model", str(tiny_onnx), "--keyframe-step", "0"]
    base += ["--min-change", "0", "--index", "exact"]
    r = runner.invoke(main, [*base, "-o", str(tmp_path / "f16"), "--dtype", "float16"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, [*base, "-o", str(tmp_path / "f32")])
    assert r.exit_code == 0, r.output
    from sfrs_edge.maps import Map

    half, full = Map.open(tmp_path / "f16"), Map.open(tmp_path / "f32")
    assert half.dtype == "float16" and half.manifest["dtype"] == "float16"
    assert half.segments[0].descriptors.dtype == np.float16
    assert full.segments[0].descriptors.dtype == np.float32
    assert np.load(tmp_path / "f16" / "seg-000000.desc.npy").dtype == np.float16
    np.testing.assert_allclose(half.descriptors, full.descriptors, atol=2e-3)
    assert not np.array_equal(half.descriptors, full.descriptors)  # really rounded
