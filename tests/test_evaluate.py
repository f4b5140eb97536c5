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


# --- scoring answers already computed (a camera loop's, a bag's) ----------------------------


def _answer(ids, confidence, source=None):
    from sfrs_edge.results import LocalizationResult, Match

    matches = tuple(Match(int(i), f"Image{i:03d}.jpg", 0.9 - 0.1 * r) for r, i in enumerate(ids))
    return LocalizationResult(matches, None, None, confidence, 0.1, {}, source)


def test_confident_share_and_precision_of_given_answers(engine, gp_map, gardens_point):
    """``confident(t)``: the share of queries answered with confidence >= t, and how many of
    those are right at rank 1 (window 0: query i is right at map row i only)."""
    loc = Localizer(engine, gp_map, k=20)
    files = list_images(gardens_point / "night_right")[:5]
    answers = [
        _answer([0, 9], 1.0),  # right
        _answer([1, 9], 0.5),  # right, exactly at the threshold
        _answer([7, 2], 0.5),  # wrong at rank 1 (right at 2)
        _answer([3, 9], 0.9),  # right
        _answer([9, 8], 0.2),  # wrong, below the threshold
    ]
    ev = evaluate(loc, files, GroundTruth(window=0), results=answers)
    assert ev.recall == {1: 60.0}  # two matches each: recall@1 only
    share, precision = ev.confident(0.5)
    assert share == 80.0 and precision == pytest.approx(75.0)
    assert ev.confident(0.95) == (20.0, 100.0)
    assert ev.confident(1.5) == (0.0, None)  # nobody that sure: no precision to give
    one = evaluate(loc, files[:1], GroundTruth(window=0), results=answers[2:3])
    assert one.confident(0.0) == (100.0, 0.0)
    # the report's precision-recall curve: answers kept from the most confident down
    thresholds, precision, recall = ev.confidence_curve()
    assert thresholds.tolist() == [1.0, 0.9, 0.5, 0.5, 0.2]
    assert precision.tolist() == pytest.approx([100.0, 100.0, 100.0, 75.0, 60.0])
    assert recall.tolist() == pytest.approx([20.0, 40.0, 60.0, 60.0, 60.0])  # of all queries


def test_evaluate_refuses_no_queries_and_answers_of_another_count(engine, gp_map, gardens_point):
    from sfrs_edge.errors import ConfigError

    loc = Localizer(engine, gp_map, k=20)
    files = list_images(gardens_point / "night_right")[:3]
    with pytest.raises(ConfigError, match="no query images to evaluate"):
        evaluate(loc, [], GroundTruth(window=2))
    with pytest.raises(ConfigError, match="2 results for 3 query files"):
        evaluate(loc, files, GroundTruth(window=2), results=[_answer([0], 0.5)] * 2)
    seen = []
    ev = evaluate(
        loc, files, GroundTruth(window=2), progress=lambda done, n: seen.append((done, n))
    )
    assert seen and seen[-1] == (3, 3)  # the caller's progress bar reaches the end
    assert ev.setup["queries"] == f"3 images from {gardens_point / 'night_right'}"
    assert ev.ground_truth == "|i - j| <= 2 (index-aligned)"


def test_ground_truth_rules_are_checked_and_described():
    from sfrs_edge.errors import ConfigError
    from sfrs_edge.recall import index_window_positives

    with pytest.raises(ConfigError, match=r"--radius\) or --window N \(index-aligned"):
        GroundTruth()  # the message names both options
    with pytest.raises(ConfigError, match=r"give query positions \(--poses CSV, right within"):
        GroundTruth(window=1, poses="q.csv")
    # window 1 over a 3-place map: neighbours on both sides, clipped at the map's ends
    rows = [p.tolist() for p in index_window_positives(4, 3, 1)]
    assert rows == [[0, 1], [0, 1, 2], [1, 2], [2]]
    with pytest.raises(ConfigError, match="--window must be 0 or more, got -1"):
        GroundTruth(window=-1)
    with pytest.raises(ConfigError, match="--radius must be positive, got 0"):
        GroundTruth(poses="q.csv", radius=0)
    assert GroundTruth(window=0).describe() == "|i - j| <= 0 (index-aligned)"
    near = GroundTruth(poses="q.csv", radius=0.5)
    assert near.describe("xy") == "within 0.5 map units of the query's position"
    assert near.describe("latlon") == "within 0.5 m of the query's position"
    assert GroundTruth(poses="q.csv").describe("latlon") == "within 25 m of the query's position"


def test_score_counts_queries_without_a_right_place_and_says_what_was_run(engine, gp_map, tmp_path):
    """:func:`score` is what a bag evaluation reports directly: a query whose positives are
    empty counts as a miss and is counted; the setup names the query set and the model."""
    from dataclasses import replace

    from sfrs_edge.evaluation import score

    loc = Localizer(engine, gp_map, k=20)
    folder = Path("/drive/frames")
    answers = [_answer([i, 50, 51, 52, 53], 0.5, str(folder / f"f{i}.jpg")) for i in range(4)]
    positives = [np.array([0]), np.array([], np.int64), np.array([9, 50]), np.array([3])]
    ev = score(loc, answers, positives, "within 25 m of /gps at the frame")
    # of all four queries (query 1 can never be right); five matches each: N = 1 and 5
    assert ev.recall == {1: 50.0, 5: 75.0}
    # positives from wrong counts are an error, not a recall over the shorter list
    with pytest.raises(ValueError):
        score(loc, answers, positives[:3], "rule")
    assert ev.without_positives == 1
    # the object `evaluate --json` prints (scripts read these keys)
    assert ev.summary() == {
        "map": str(gp_map),
        "queries": 4,
        "ground_truth": "within 25 m of /gps at the frame",
        "recall": {"1": 50.0, "5": 75.0},
        "queries_without_right_place": 1,
        "setup": ev.setup,
    }
    assert ev.queries == 4 and ev.map_path == str(gp_map)
    assert ev.ground_truth == "within 25 m of /gps at the frame"
    assert [o.first_right for o in ev.outcomes] == [1, None, 2, 1]
    assert [o.index for o in ev.outcomes] == [0, 1, 2, 3]
    rows = [json.loads(x) for x in ev.write_jsonl(tmp_path / "q.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    row = rows[2]  # the line of query 2, as queries.jsonl holds it
    matches = row.pop("matches")
    assert row == {
        "index": 2,
        "query": str(folder / "f2.jpg"),
        "right_at_1": False,
        "first_right_rank": 2,
        "positives": 2,
        "confidence": 0.5,
        "position": None,
    }
    assert [m["right"] for m in matches] == [False, True, False, False, False]
    assert [m["id"] for m in matches] == [2, 50, 51, 52, 53]
    keys = {"id", "name", "similarity", "position", "inliers", "score", "right"}
    assert all(set(m) == keys for m in matches)
    assert rows[1]["first_right_rank"] is None and rows[1]["positives"] == 0
    info = engine.info
    assert ev.setup == {
        "queries": f"4 images from {folder}",
        "model": {
            "path": str(engine.path),
            "backbone": info.backbone,
            "descriptor_dim": info.descriptor_dim,
            "precision": info.precision,
            "fingerprint": engine.fingerprint,
        },
        "k": 20,
        "rerank": None,
        "filter": None,
    }
    two = [replace(a, source=f"/drive/{'ab'[i % 2]}/f{i}.jpg") for i, a in enumerate(answers)]
    ev = score(loc, two, positives, "rule")
    assert ev.setup["queries"] == "4 images from 2 folders (/drive/a, ...)"


# --- radius ground truth: which map places are right, and the errors that name the fix ------


@pytest.fixture(scope="module")
def small_maps(tmp_path_factory, engine, gardens_point) -> dict[str, Localizer]:
    """Six day_left frames as an x/y map (place i at x = 3 i; frame 5 without a position) and
    as an x/y/z map (place i at (3 i, 0, 100 i))."""
    tmp = tmp_path_factory.mktemp("small")
    files = list_images(gardens_point / "day_left")[:6]
    out = {}
    for kind, header, row in (
        ("xy", "name,x,y", lambda i: f"{3 * i},0"),
        ("xyz", "name,x,y,z", lambda i: f"{3 * i},0,{100 * i}"),
    ):
        rows = [f"{f.name},{row(i)}\n" for i, f in enumerate(files) if kind == "xyz" or i != 5]
        poses = tmp / f"{kind}.csv"
        poses.write_text(header + "\n" + "".join(rows))
        build_map(engine, files, tmp / kind, poses=poses, allow_missing_poses=True)
        out[kind] = Localizer(engine, tmp / kind, k=3)
    return out


def test_radius_positives_within_the_radius_on_x_y_and_x_y_z_maps(small_maps):
    from sfrs_edge.evaluation import radius_positives
    from sfrs_edge.maps.poses import Pose

    xy, xyz = small_maps["xy"], small_maps["xyz"]
    # "within" includes the radius itself; a place without a position is never right
    got = radius_positives(xy, [Pose((6.0, 0.0), "xy"), Pose((15.0, 0.0), "xy")], 3.0, "q.csv")
    assert [g.tolist() for g in got] == [[1, 2, 3], [4]]
    # x/y queries on an x/y/z map compare x/y, x/y/z queries on an x/y map likewise
    got = radius_positives(xyz, [Pose((6.0, 0.0), "xy")], 1.0, "q.csv")
    assert [g.tolist() for g in got] == [[2]]
    got = radius_positives(xy, [Pose((6.0, 0.0, 900.0), "xyz")], 1.0, "q.csv")
    assert [g.tolist() for g in got] == [[2]]
    mixed = [Pose((0.0, 0.0), "xy"), Pose((3.0, 0.0, 100.0), "xyz")]
    assert [g.tolist() for g in radius_positives(xy, mixed, 1.0, "q.csv")] == [[0], [1]]
    assert [g.tolist() for g in radius_positives(xyz, mixed, 1.0, "q.csv")] == [[0], [1]]


def test_radius_ground_truth_errors_name_the_source_and_the_fix(
    engine, gp_map, gp_latlon_map, small_maps, gardens_point, tmp_path
):
    from sfrs_edge.errors import ConfigError
    from sfrs_edge.evaluation import radius_positives
    from sfrs_edge.maps.poses import Pose

    _, poses = gp_latlon_map
    plain = Localizer(engine, gp_map, k=5)  # a map built without positions
    q = list_images(gardens_point / "day_right")[:3]
    with pytest.raises(
        ConfigError, match="no positions, so --poses cannot judge matches; use --window N"
    ):
        evaluate(plain, q, GroundTruth(poses=str(poses)))
    with pytest.raises(ConfigError, match="the map has no positions to judge matches by"):
        radius_positives(plain, [Pose((0.0, 0.0), "xy")], 25.0, "bag:/gps")
    latlon = Localizer(engine, gp_latlon_map[0], k=5)
    xy_poses = tmp_path / "xy.csv"
    xy_poses.write_text("name,x,y\n" + "".join(f"{f.name},1,2\n" for f in q))
    with pytest.raises(
        ConfigError,
        match=f"^{re.escape(str(xy_poses))}: query positions are xy but the map's are latlon",
    ):
        evaluate(latlon, q, GroundTruth(poses=str(xy_poses)))
    mixed = [Pose((0.0, 0.0), "xy"), Pose((0.0, 0.0, 1.0), "xyz")]
    with pytest.raises(
        ConfigError, match="^bag:/gps: query positions are xy, xyz but the map's are latlon"
    ):
        radius_positives(latlon, mixed, 25.0, "bag:/gps")
    with pytest.raises(ConfigError, match="query positions are latlon but the map's are xy"):
        radius_positives(small_maps["xy"], [Pose((48.0, 11.0), "latlon")], 25.0, "q.csv")
    few = tmp_path / "few.csv"
    few.write_text("name,lat,lon\n" + "".join(f"{f.name},-27.4,153.0\n" for f in q[:2]))
    with pytest.raises(ConfigError, match=f"^{re.escape(str(few))}: no position for 1 of 3 images"):
        evaluate(latlon, q, GroundTruth(poses=str(few)))


@pytest.fixture(scope="module")
def rerank_loc(tmp_path_factory, tiny_checkpoint, gardens_point) -> Localizer:
    """A re-ranking Localizer: the local-feature export of tests/test_local_features.py (the
    same recipe under the same name, so mutmut keeps one copy) and 20 day_left places."""
    from conftest import built_once
    from sfrs_edge.export import export_model
    from sfrs_edge.train.checkpoint import load_checkpoint
    from sfrs_edge.train.local_features import LocalConfig, fit_local_head

    def export(out: Path) -> None:
        net = load_checkpoint(tiny_checkpoint)[0]
        images = list_images(gardens_point / "day_right")[::10]
        config = LocalConfig("patches", patch_sizes=(1, 2), num_features=16, dim=16, whiten=True)
        export_model(net, out, verify_images=images[:3], local=fit_local_head(net, images, config))

    engine = Engine.open(built_once(tmp_path_factory, "local.onnx", export))
    out = tmp_path_factory.mktemp("rr") / "map"
    build_map(engine, list_images(gardens_point / "day_left")[:20], out)
    return Localizer(engine, out, k=5, rerank=5)


def test_evaluate_asks_a_reranking_localizer_frame_by_frame(rerank_loc, gardens_point):
    """Re-ranking needs each frame's local features, so every query is localized on its own:
    the answers are re-ranked, progress counts frames, the setup names the settings."""
    files = list_images(gardens_point / "night_right")[:3]
    seen = []
    ev = evaluate(rerank_loc, files, GroundTruth(window=2), progress=lambda *a: seen.append(a))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [o.result.source for o in ev.outcomes] == [str(f) for f in files]
    assert all(o.result.reranked for o in ev.outcomes)
    stages = {"decode", "preprocess", "inference", "search", "rerank", "rerank_cpu", "total"}
    assert all(set(o.result.timings) == stages for o in ev.outcomes)  # every stage timed
    assert [o.result.matches for o in ev.outcomes] == [
        rerank_loc.localize_file(f).matches for f in files
    ]
    assert ev.setup["rerank"] == rerank_loc.rerank.to_dict() and ev.setup["rerank"]["k"] == 5
