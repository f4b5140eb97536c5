"""The camera loop: latest-frame slot, decode thread, clean end, errors, Localizer.stream, CLI."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from _video_util import corrupt_frames, write_video
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.engine import Engine
from sfrs_edge.errors import ConfigError, MapError
from sfrs_edge.localize import Localizer
from sfrs_edge.maps import build_map
from sfrs_edge.stream import FrameStream, LatestFrame
from sfrs_edge.stream.sequence import StreamResult
from sfrs_edge.video import Frame, VideoError, VideoSource

MAP_FRAMES = range(0, 200, 4)  # 50 places of day_left


def frame(i: int) -> Frame:
    return Frame(i, i / 10, np.zeros((2, 2, 3), np.uint8), time.perf_counter())


def test_latest_frame_drops_stale_frames():
    slot = LatestFrame(drop=True)
    for i in range(3):
        assert slot.put(frame(i))
    assert slot.dropped == 2 and slot.get().index == 2
    with pytest.raises(TimeoutError):
        slot.get(timeout=0.01)
    slot.put(frame(3))
    slot.close()
    assert slot.get().index == 3  # what is left is still handed out after close...
    assert slot.get() is None  # ...then the end
    assert not slot.put(frame(4))  # a closed slot tells the producer to stop


def test_latest_frame_without_drops_waits_for_the_consumer():
    slot = LatestFrame(drop=False)
    got = []

    def consume():
        while (f := slot.get()) is not None:
            got.append(f.index)
            time.sleep(0.002)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(20):
        slot.put(frame(i))
    slot.close()
    t.join(5)
    assert got == list(range(20)) and slot.dropped == 0


def test_producer_error_reaches_the_consumer():
    slot = LatestFrame()
    slot.close(RuntimeError("decoder died"))
    with pytest.raises(RuntimeError, match="decoder died"):
        slot.get()


@pytest.fixture(scope="module")
def walk(tmp_path_factory, gardens_point):
    """day_right 0, 4, ..., 196 as a 10 fps video (the map is day_left)."""
    files = [gardens_point / "day_right" / f"Image{i:03d}.jpg" for i in MAP_FRAMES]
    return write_video(tmp_path_factory.mktemp("stream") / "walk.avi", files, fps=10.0)


def test_stream_ends_cleanly_at_end_of_file(walk):
    with FrameStream(walk, drop=False, realtime=False) as frames:
        got = [f.index for f in frames]
        assert got == list(range(50)) and frames.dropped == 0 and frames.decoded == 50
        assert list(frames) == []  # iterating again after the end: nothing, no hang
    assert not frames._thread.is_alive()


def test_slow_consumer_gets_the_newest_frames(walk):
    with FrameStream(walk, fps=100.0) as frames:  # a 100 fps "camera", a 30 ms model
        got = []
        for f in frames:
            got.append(f.index)
            time.sleep(0.03)
            assert time.perf_counter() - f.captured < 0.1  # never an old frame
    assert frames.dropped > 10 and frames.decoded == 50
    assert frames.delivered + frames.dropped == 50
    assert got == sorted(got) and got[-1] == 49  # the last frame is never dropped


def test_close_early_stops_the_thread(walk):
    frames = FrameStream(walk, drop=False, realtime=False)
    for f in frames:
        if f.index == 3:
            break
    frames.close()
    assert not frames._thread.is_alive()


def test_camera_that_cannot_be_opened():
    with pytest.raises(VideoError, match="camera 98: cannot be opened"):
        FrameStream(98)


def test_decode_error_surfaces_in_the_consumer(walk):
    class Broken(VideoSource):
        def _frames(self):
            yield from list(super()._frames())[:2]
            raise OSError("device unplugged")

    frames = FrameStream(Broken(walk), drop=False)
    with pytest.raises(OSError, match="unplugged"):
        [f.index for f in frames]
    frames.close()


@pytest.fixture(scope="module")
def loc(tmp_path_factory, tiny_onnx, gardens_point) -> Localizer:
    engine = Engine.open(tiny_onnx, backend="cpu")
    files = [gardens_point / "day_left" / f"Image{i:03d}.jpg" for i in MAP_FRAMES]
    out = tmp_path_factory.mktemp("smap") / "map"
    build_map(engine, files, out)
    return Localizer(engine, out, k=3)


def test_localizer_stream_matches_localize(loc, walk):
    with FrameStream(walk, drop=False, realtime=False) as frames:
        results = list(loc.stream(frames, filter="seq", window=5))
    assert [r.index for r in results] == list(range(50))
    assert all(isinstance(r, StreamResult) and r.filtered is not None for r in results)
    assert all(r.latency_ms >= r.result.timings["inference"] > 0 for r in results)
    frames_again = list(VideoSource(walk))
    plain = [loc.localize(f.image) for f in frames_again[:5]]
    assert [r.result.matches for r in results[:5]] == [p.matches for p in plain]
    assert results[0].filtered.id == results[0].result.best.id  # window of one frame
    single = np.mean([abs(r.result.best.id - r.index) <= 2 for r in results])
    filtered = np.mean([abs(r.filtered.id - r.index) <= 2 for r in results])
    assert filtered >= single - 0.05  # on a real walk the filter does not make things worse
    d = json.loads(json.dumps(results[7].to_dict()))
    assert d["filtered"]["id"] == results[7].filtered.id and d["index"] == 7
    # arrays in, results out; no filter
    out = list(loc.stream([f.image for f in frames_again[:3]], filter="none"))
    assert [r.index for r in out] == [0, 1, 2] and all(r.filtered is None for r in out)
    assert out[2].best == out[2].result.best and out[2].timestamp is None


@pytest.mark.parametrize("method", ["seq", "hmm"])
def test_frames_in_flight_give_the_same_results_in_frame_order(loc, walk, method):
    """Two and three frames localized at once: each frame's own answer is the same as one at a
    time, results come in frame order, the filtered answer stays on the route."""
    images = [f.image for f in VideoSource(walk)][:30]
    one = list(loc.stream(images, filter=method, in_flight=1))
    for flight in (2, 3):
        many = list(loc.stream(images, filter=method, in_flight=flight))
        assert [r.index for r in many] == list(range(30))
        assert [r.result.matches for r in many] == [r.result.matches for r in one]
        near = np.mean(
            [abs(a.filtered.id - b.filtered.id) <= 2 for a, b in zip(many, one, strict=True)]
        )
        assert near >= 0.9
    gen = loc.stream(iter(images), in_flight=2)
    assert next(gen).index == 0
    gen.close()  # stopping early is clean (the worker's frame is dropped)
    with pytest.raises(ConfigError, match="frames in flight"):
        next(loc.stream(images, in_flight=0))


def test_stream_names_matches_without_metadata_queries(loc, walk, monkeypatch):
    """Names and positions are held in memory: a frame reads no metadata."""

    names = loc.map.names

    def no_sql(*a, **k):
        raise AssertionError("metadata queried per frame")

    monkeypatch.setattr(loc.map, "places", no_sql)
    monkeypatch.setattr(loc.map._meta, "query", no_sql)
    images = [f.image for f in VideoSource(walk)][:3]
    out = list(loc.stream(images))
    for r in out:
        assert [m.name for m in r.result.matches] == [names[m.id] for m in r.result.matches]
        assert r.filtered.name == names[r.filtered.id]
    with pytest.raises(MapError, match="not in this map"):
        loc.match(len(loc.map), 0.5)


def test_localize_video_cli(loc, tiny_onnx, walk, tmp_path):
    bad = corrupt_frames(walk, tmp_path / "bad.avi", [10, 11, 30])
    runner = CliRunner()
    base = ["localize", "--model", str(tiny_onnx), "--map", str(loc.map.path)]
    r = runner.invoke(main, [*base, "--video", str(bad), "--all-frames", "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [d["index"] for d in lines] == [i for i in range(50) if i not in (10, 11, 30)]
    assert all(d["filtered"] is not None and d["latency_ms"] > 0 for d in lines)
    assert "47 frames localized of 47 decoded (0 dropped while busy, 3 corrupt)" in r.stderr
    r = runner.invoke(main, [*base, "--video", str(walk), "--fps", "200", "--filter", "none"])
    assert r.exit_code == 0, r.output
    shown = [int(line.split()[1]) for line in r.stdout.splitlines()]
    assert shown == sorted(shown) and shown[-1] == 49 and r.stdout.startswith("frame 0 t=0.00s: ")
    dropped = int(r.stderr.split("(")[1].split()[0])
    assert f"{len(shown)} frames localized of 50 decoded ({dropped} dropped" in r.stderr
    assert len(shown) + dropped == 50
    r = runner.invoke(main, [*base, "--camera", "96"])
    assert r.exit_code == 1 and "camera 96: cannot be opened" in r.output
    r = runner.invoke(main, [*base, "--video", str(walk), "--camera", "0"])
    assert r.exit_code == 2 and "exactly one" in r.output


def test_example_camera_loop_runs(loc, tiny_onnx, walk):
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "camera_loop.py"
    cmd = [sys.executable, str(example), str(walk), "--model", str(tiny_onnx)]
    cmd += ["--map", str(loc.map.path), "--camera-fps", "50", "--filter", "hmm"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("frame     0 t=   0.00s  frame says Image")
    n = int(lines[-1].split()[0])
    assert n == len(lines) - 1 and f"{n} frames localized" in lines[-1]
