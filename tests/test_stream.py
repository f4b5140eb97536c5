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


# --- Localizer.localize_for_filter: the dense vector and statistics TemporalFilter.update takes


@pytest.fixture(scope="module")
def hnsw_loc(tmp_path_factory, loc, gardens_point) -> Localizer:
    """An HNSW map of 300 places: more than the rows sampled per frame, so some rows are
    neither candidates nor sampled and stay unscored unless a filter asks for them."""
    from sfrs_edge.images import list_images

    tmp = tmp_path_factory.mktemp("hnsw")
    src = tmp / "images"
    src.mkdir()
    for split, n in (("day_left", 200), ("night_right", 100)):
        for f in list_images(gardens_point / split)[:n]:
            (src / f"{split}_{f.name}").symlink_to(f)  # map names must be unique
    build_map(loc.engine, src, tmp / "map", index="hnsw")
    return Localizer(loc.engine, tmp / "map", k=3)


def _day_right(gardens_point, i: int) -> np.ndarray:
    from sfrs_edge.images import read_image

    return read_image(gardens_point / "day_right" / f"Image{i:03d}.jpg")


def test_localize_for_filter_on_an_exact_map_gives_every_true_similarity(loc, gardens_point):
    image = _day_right(gardens_point, 40)
    result, scores, stats = loc.localize_for_filter(image, np.arange(3))
    assert result.matches == loc.localize(image).matches
    true = loc.map.similarities(loc.engine.embed_frame(image))[0]
    assert scores.shape == (len(loc.map),) and scores.dtype == np.float32
    assert np.allclose(scores, true, atol=1e-6)
    assert stats is None  # every row is exact: the filter computes its own statistics
    # a frame handed in as an array: nothing decoded, every stage timed
    assert set(result.timings) == {"decode", "preprocess", "inference", "search", "total"}
    assert result.timings["decode"] == 0.0
    assert result.timings["total"] >= result.timings["inference"] > 0


def test_localize_for_filter_scores_the_focus_rows_exactly_on_hnsw_maps(hnsw_loc, gardens_point):
    """The rows a filter focuses on get their true similarity; without a focus they read as the
    sample's mean, which the returned statistics describe."""
    from sfrs_edge.stream.filtering import FilterConfig, TemporalFilter

    image = _day_right(gardens_point, 40)
    true = hnsw_loc.map.descriptors @ hnsw_loc.engine.embed_frame(image).ravel()
    result, plain, stats = hnsw_loc.localize_for_filter(image)
    assert result.matches == hnsw_loc.localize(image).matches
    assert plain.shape == (len(hnsw_loc.map),) and plain.dtype == np.float32
    mean, std = stats
    unscored = np.flatnonzero(plain == np.float32(mean))
    assert len(unscored) >= 10 and std > 0
    assert not np.isin([m.id for m in result.matches], unscored).any()
    focus = unscored[:10]
    assert not np.allclose(true[focus], mean, atol=1e-4)  # so the focus visibly changes them
    again, scores, stats_again = hnsw_loc.localize_for_filter(image, focus)
    assert again.matches == result.matches and stats_again == pytest.approx(stats)
    assert np.allclose(scores[focus], true[focus], atol=1e-5)
    rest = np.setdiff1d(np.arange(len(scores)), focus)
    assert np.allclose(scores[rest], plain[rest], atol=1e-6)
    # what the method is for: the filter's dense update takes both as they come
    out = TemporalFilter(FilterConfig(method="seq", window=3)).update(scores, stats=stats)
    assert out.shape == scores.shape


def test_stream_filter_options_reach_the_filter(loc, walk):
    """``filter``, ``window`` and the other options configure the same filter a FilterConfig
    does; the default is seq over 5 frames."""
    from sfrs_edge.stream.filtering import FilterConfig

    images = [f.image for f in VideoSource(walk)][:10]

    def answers(**kw):
        return [(r.filtered.id, r.filtered_score) for r in loc.stream(images, **kw)]

    default = answers()
    assert default == answers(filter=FilterConfig(method="seq", window=5))
    assert default != answers(window=6)  # the window shows in the answers
    three = answers(window=3, velocities=(1.0,))
    assert three == answers(filter=FilterConfig(window=3, velocities=(1.0,)))
    assert three != answers(window=3) and three != answers(velocities=(1.0,))
    hmm = answers(filter=FilterConfig(method="hmm", window=3))
    assert hmm == answers(filter="hmm", window=3) and hmm != answers(window=3)
