"""``sfrs-edge evaluate`` and the pictures, on real data, against numbers computed here."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.engine import Engine
from sfrs_edge.evaluation import GroundTruth, evaluate
from sfrs_edge.images import list_images, read_image
from sfrs_edge.localize import Localizer
from sfrs_edge.maps import build_map
from sfrs_edge.report.plots import fit

N_LATLON = 80


def numpy_recall(engine, db_files, q_files, window, ns=(1, 5, 10, 20)):
    """Recall@N computed independently: descriptors, one matrix product, argsort, |i-j|<=w."""
    db = engine.embed_files(db_files)
    q = engine.embed_files(q_files)
    order = np.argsort(-(q @ db.T), axis=1, kind="stable")
    hit_rank = []
    for i, row in enumerate(order):
        right = np.flatnonzero(np.abs(row - i) <= window)
        hit_rank.append(right[0] + 1 if len(right) else 10**9)
    hit_rank = np.array(hit_rank)
    return {n: 100.0 * float((hit_rank <= n).mean()) for n in ns}


@pytest.fixture(scope="module")
def engine(tiny_onnx) -> Engine:
    return Engine.open(tiny_onnx, backend="cpu")


@pytest.fixture(scope="module")
def gp_map(tmp_path_factory, engine, gardens_point) -> Path:
    out = tmp_path_factory.mktemp("ev") / "map"
    build_map(engine, gardens_point / "day_left", out)
    return out


@pytest.fixture(scope="module")
def gp_latlon_map(tmp_path_factory, engine, gardens_point) -> tuple[Path, Path]:
    """The first N_LATLON day_left frames with lat/lon 1e-4 degrees (about 11 m) apart per frame, and query poses."""
    tmp = tmp_path_factory.mktemp("evll")
    rows = "".join(f"Image{i:03d}.jpg,{-27.4 + i * 1e-4:.6f},153.0\n" for i in range(N_LATLON))
    poses = tmp / "poses.csv"
    poses.write_text("name,lat,lon\n" + rows)
    build_map(engine, list_images(gardens_point / "day_left")[:N_LATLON], tmp / "map", poses=poses)
    return tmp / "map", poses


def test_window_recall_matches_numpy_on_gardens_point(engine, gp_map, gardens_point):
    loc = Localizer(engine, gp_map, k=20)
    q = list_images(gardens_point / "night_right")
    ev = evaluate(loc, q, GroundTruth(window=2))
    expected = numpy_recall(engine, list_images(gardens_point / "day_left"), q, 2)
    assert ev.recall == pytest.approx(expected, abs=1e-9)
    assert 0 < ev.recall[1] < ev.recall[20] <= 100
    assert ev.without_positives == 0
    # outcome i is query i, in the order given (the JSONL's "index" names the query)
    assert [o.index for o in ev.outcomes] == list(range(len(q)))
    assert ev.queries == len(q) and ev.map_path == str(gp_map)
    assert [o.result.source for o in ev.outcomes] == [str(f) for f in q]


def test_radius_in_metres_equals_the_window_rule(engine, gp_latlon_map, gardens_point):
    """11.1 m between frames, 25 m radius: right exactly when |i - j| <= 2."""
    map_path, poses = gp_latlon_map
    loc = Localizer(engine, map_path, k=20)
    q = list_images(gardens_point / "day_right")[:N_LATLON]
    by_radius = evaluate(loc, q, GroundTruth(poses=str(poses), radius=25.0))
    by_window = evaluate(loc, q, GroundTruth(window=2))
    assert by_radius.recall == by_window.recall
    assert "25 m" in by_radius.ground_truth
    smaller = evaluate(loc, q, GroundTruth(poses=str(poses), radius=5.0))  # only j == i
    assert smaller.recall[1] <= by_radius.recall[1]


def test_corridor_recall_matches_numpy(engine, corridor, tmp_path):
    build_map(engine, corridor / "ref", tmp_path / "map")
    loc = Localizer(engine, tmp_path / "map", k=20)
    q = list_images(corridor / "query")
    ev = evaluate(loc, q, GroundTruth(window=2))
    assert ev.recall == pytest.approx(numpy_recall(engine, list_images(corridor / "ref"), q, 2))


def test_ground_truth_needs_exactly_one_rule():
    from sfrs_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        GroundTruth()
    with pytest.raises(ConfigError, match="exactly one"):
        GroundTruth(window=2, poses="q.csv")


def _images_in_html(text: str) -> list[np.ndarray]:
    out = []
    for src in re.findall(r'<img[^>]*src="([^"]+)"', text):
        assert src.startswith("data:image/"), f"not self-contained: {src[:60]}"
        data = base64.b64decode(src.split(",", 1)[1])
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.size > 0
        out.append(img)
    return out


@pytest.fixture(scope="module")
def cli_report(tiny_onnx, gp_map, gardens_point, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("report")
    args = ["evaluate", str(gardens_point / "night_right"), "--map", str(gp_map)]
    args += ["--model", str(tiny_onnx), "--window", "2", "-o", str(out), "--json"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return json.loads(r.output.strip().splitlines()[-1]), out


def test_cli_evaluate_writes_jsonl_and_a_self_contained_report(cli_report, engine, gardens_point):
    summary, out = cli_report
    expected = numpy_recall(
        engine,
        list_images(gardens_point / "day_left"),
        list_images(gardens_point / "night_right"),
        2,
    )
    assert {int(n): v for n, v in summary["recall"].items()} == pytest.approx(expected)
    lines = (out / "queries.jsonl").read_text().splitlines()
    assert len(lines) == 200
    rows = [json.loads(x) for x in lines]
    assert 100 * np.mean([r["right_at_1"] for r in rows]) == pytest.approx(expected[1])
    assert all(len(r["matches"]) == 20 for r in rows)
    # structural check: every picture is embedded and decodes
    imgs = _images_in_html((out / "report.html").read_text())
    assert len(imgs) == 2 + 8  # recall curve, confidence PR, 8 failure strips
    assert all(i.shape[0] >= 100 and i.shape[1] >= 300 for i in imgs)


def test_cli_evaluate_says_what_was_evaluated(tiny_onnx, gp_map, gardens_point, tmp_path):
    frames = list_images(gardens_point / "night_right")[:12]
    args = ["evaluate", *map(str, frames), "--map", str(gp_map), "--model", str(tiny_onnx)]
    r = CliRunner().invoke(main, [*args, "--window", "2", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert f"model {tiny_onnx}; re-ranking off" in r.output
    rows = [json.loads(x) for x in (tmp_path / "queries.jsonl").read_text().splitlines()]
    sure = [x for x in rows if x["confidence"] >= 0.5]
    share = f"{100 * len(sure) / len(rows):.1f} % of queries"
    assert f"answers with confidence >= 0.5: {share}" in r.output
    html = (tmp_path / "report.html").read_text()
    assert "12 images from" in html and str(tiny_onnx) in html


def test_report_renders_in_headless_chromium(cli_report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    _, out = cli_report
    shot = tmp_path / "shot.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1300,1400",
        f"--screenshot={shot}",
        (out / "report.html").resolve().as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    img = cv2.imread(str(shot))
    assert img is not None, "chromium wrote no screenshot"
    assert img.shape[:2] == (1400, 1300)
    # non-blank, and the embedded pictures were drawn: many colours, coloured pixels present
    assert img.std() > 20
    colourful = (img.max(axis=2).astype(int) - img.min(axis=2)) > 60
    assert colourful.mean() > 0.01, "no coloured pixels: images did not load"


def test_localize_show_draws_the_returned_matches(tiny_onnx, gp_map, gardens_point, tmp_path):
    frame = gardens_point / "night_right" / "Image050.jpg"
    out = tmp_path / "show.png"
    args = ["localize", str(frame), "--show", str(out), "--map", str(gp_map)]
    r = CliRunner().invoke(main, args + ["--model", str(tiny_onnx), "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output.strip().splitlines()[-1])
    ids = [m["id"] for m in d["matches"]]
    assert d["drawn_ids"] == ids and len(ids) == 3
    img = cv2.imread(str(out))
    assert img.shape[1] == 4 * 220 + 3 * 8 and img.shape[0] > 150
    from sfrs_edge.maps import Map

    m = Map.open(gp_map)
    for rank, pid in enumerate(ids, 1):  # tile pixels are the map image of that match
        expected = fit(read_image(m.places([pid])[0].path), 150, 220)
        x = rank * (220 + 8)
        assert np.array_equal(img[:150, x : x + 220], expected)


def test_show_format_follows_the_extension(tiny_onnx, gp_map, gardens_point, tmp_path):
    frame = gardens_point / "night_right" / "Image050.jpg"
    base = ["localize", str(frame), "--map", str(gp_map), "--model", str(tiny_onnx), "-k", "2"]
    r = CliRunner().invoke(main, [*base, "--show", str(tmp_path / "answer.jpg")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "answer.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG
    r = CliRunner().invoke(main, [*base, "--show", str(tmp_path / "answer.png")])
    assert (tmp_path / "answer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # an unknown extension fails before any work (here: before the missing model is opened)
    bad = ["localize", str(frame), "--model", str(tmp_path / "no.onnx"), "--show"]
    r = CliRunner().invoke(main, [*bad, str(tmp_path / "answer.gif")])
    assert r.exit_code == 1 and "'.gif'" in r.output and ".png or .jpg" in r.output
    assert not (tmp_path / "answer.gif").exists()
    r = CliRunner().invoke(main, ["map", "show", str(tmp_path / "nomap"), "-o", "m.bmp"])
    assert r.exit_code == 1 and "'.bmp'" in r.output


def test_map_show_marks_the_top_k(tiny_onnx, gp_latlon_map, gp_map, gardens_point, tmp_path):
    map_path, _ = gp_latlon_map
    out = tmp_path / "map.png"
    frame = gardens_point / "day_right" / "Image040.jpg"
    args = ["map", "show", str(map_path), "-o", str(out), "--query", str(frame)]
    r = CliRunner().invoke(main, args + ["--model", str(tiny_onnx), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output.strip().splitlines()[-1])
    assert d["marked_ids"] == [mm["id"] for mm in d["result"]["matches"]]
    assert cv2.imread(str(out)).shape == (600, 960, 3)
    # a map without 2-D positions is drawn along its rows, no query needed
    r = CliRunner().invoke(main, ["map", "show", str(gp_map), "-o", str(tmp_path / "m2.png")])
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(tmp_path / "m2.png")).shape == (600, 960, 3)
