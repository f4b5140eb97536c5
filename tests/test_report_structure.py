"""Report and pictures on synthetic data: always runs (no dataset, no model, no torch)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from sfrs_edge.evaluation import Evaluation, QueryOutcome
from sfrs_edge.localize import LocalizationResult, Match
from sfrs_edge.maps.metadata import Place
from sfrs_edge.report import plots
from sfrs_edge.report.html import write_report
from sfrs_edge.report.map_picture import layout, place_labels
from sfrs_edge.report.pictures import map_picture


@dataclass
class FakeMap:
    """The part of :class:`sfrs_edge.maps.Map` the pictures read."""

    path: str
    _places: list[Place]
    position_kind: str | None = "latlon"

    def places(self, ids):
        return [self._places[int(i)] for i in ids]

    def all_places(self):
        return list(self._places)

    def positions(self):
        return np.array([p.position for p in self._places], np.float64)

    def __len__(self):
        return len(self._places)


def _synthetic(tmp_path: Path, n: int = 12) -> tuple[FakeMap, Evaluation]:
    rng = np.random.default_rng(0)
    places = []
    for i in range(n):
        img = np.full((60, 80, 3), (20 * i) % 255, np.uint8)
        cv2.circle(img, (40, 30), 10 + i, (0, 0, 255), -1)
        f = tmp_path / f"db{i:02d}.jpg"
        cv2.imwrite(str(f), img)
        pos = (-27.4 + i * 1e-4, 153.0 + 0.5e-4 * np.sin(i))
        places.append(Place(i, f.name, str(f), pos, "latlon", sequence="v.mp4", frame=10 * i))
    the_map = FakeMap(str(tmp_path / "map"), places)
    outcomes = []
    for q in range(n):
        qf = tmp_path / f"q{q:02d}.jpg"
        cv2.imwrite(str(qf), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        ids = [(q + s) % n for s in (0, 3, 5)] if q % 3 else [(q + 4) % n, q, (q + 1) % n]
        matches = tuple(
            Match(i, places[i].name, 0.9 - 0.1 * r, places[i].position) for r, i in enumerate(ids)
        )
        res = LocalizationResult(
            matches, places[ids[0]].position, "latlon", q / n, 0.1, {}, str(qf)
        )
        first = next((r for r, i in enumerate(ids, 1) if i == q), None)
        outcomes.append(QueryOutcome(q, res, np.array([q]), first))
    ranks = np.array([o.first_right or 99 for o in outcomes])
    recall = {k: float(100 * (ranks <= k).mean()) for k in (1, 5)}
    ev = Evaluation(the_map.path, n, "within 25 m", recall, outcomes)
    return the_map, ev


def test_every_picture_in_the_report_is_embedded_and_decodes(tmp_path):
    the_map, ev = _synthetic(tmp_path)
    html = write_report(ev, tmp_path / "report.html", the_map).read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', html)
    wrong = sum(not o.right for o in ev.outcomes)
    assert len(srcs) == 2 + min(wrong, 8)
    for src in srcs:
        assert src.startswith("data:image/"), src[:40]
        img = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), 1)
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 300
    assert 'src="http' not in html and "<script" not in html


def test_report_header_names_queries_model_and_settings(tmp_path):
    the_map, ev = _synthetic(tmp_path)
    ev.setup = {
        "queries": "12 images from /data/night_right",
        "model": {"path": "/m/model.onnx", "backbone": "efficientnet_lite0",
                  "descriptor_dim": 20480, "precision": "fp32", "fingerprint": "abc123"},
        "rerank": {"k": 10, "geometry": "homography", "weight": 0.2},
        "filter": None,
    }  # fmt: skip
    text = write_report(ev, tmp_path / "report.html", the_map).read_text()
    header = text.split("<h2>")[0]
    for want in ("12 images from /data/night_right", "/m/model.onnx", "efficientnet_lite0",
                 "abc123", "top 10 re-ordered by verified local evidence",
                 "none (each query localized on its own)", "within 25 m"):  # fmt: skip
        assert want in header, want
    ev.setup = {**ev.setup, "rerank": None}
    text = write_report(ev, tmp_path / "report.html", the_map).read_text()
    assert "re-ranking</th><td>off" in text


def _ink_rows(img: np.ndarray) -> set[int]:
    return set(np.flatnonzero((img.min(axis=2) < 200).any(axis=1)).tolist())


def test_chart_axis_label_is_not_drawn_over_the_title():
    s = plots.Series("r", [1, 5], [40, 80])
    args = ((0, 6),)
    title_only = plots.line_chart([s], "Recall@N", "N", "", *args)
    label_only = plots.line_chart([s], "", "N", "% of queries", *args)
    neither = plots.line_chart([s], "", "N", "", *args)
    title_rows = _ink_rows(title_only) - _ink_rows(neither)
    label_rows = _ink_rows(label_only) - _ink_rows(neither)
    assert title_rows and label_rows and not title_rows & label_rows


def test_map_picture_marks_top_k_and_keyframes(tmp_path):
    the_map, ev = _synthetic(tmp_path)
    result = ev.outcomes[4].result
    img, marked = map_picture(the_map, result)
    assert img.shape == (600, 960, 3)
    assert marked == [m.id for m in result.matches]
    red = (img[:, :, 2] > 180) & (img[:, :, 1] < 80) & (img[:, :, 0] < 80)
    assert red.sum() > 100  # the rings around the matches
    plain, none = map_picture(the_map)
    assert none == [] and plain.shape == img.shape and not np.array_equal(plain, img)


def _xy_map(tmp_path: Path, ys) -> FakeMap:
    places = [
        Place(i, f"p{i}.jpg", str(tmp_path / f"p{i}.jpg"), (float(i), float(y)), "xy")
        for i, y in enumerate(ys)
    ]
    return FakeMap(str(tmp_path / "map"), places, "xy")


def test_map_picture_uses_the_positions_the_map_has(tmp_path):
    the_map, _ = _synthetic(tmp_path)
    assert layout(the_map, len(the_map))[0] == "2d"  # lat/lon that vary in both
    line = _xy_map(tmp_path, [0.0] * 20)  # x = frame index, y constant (the demo's map)
    mode, xy, known, axis = layout(line, 20)
    assert mode == "1d" and axis == 0 and known.all()
    np.testing.assert_array_equal(xy[:, 0], np.arange(20.0))  # drawn along x itself
    plan = _xy_map(tmp_path, np.sin(np.arange(20)))
    assert layout(plan, 20)[0] == "2d"
    nothing = FakeMap(str(tmp_path / "m"), [Place(i, f"{i}", f"{i}") for i in range(5)], None)
    nothing.positions = lambda: np.zeros((5, 0))
    assert layout(nothing, 5)[0] == "rows"


def test_map_picture_height_is_the_similarity_on_a_line_map(tmp_path):
    line = _xy_map(tmp_path, [0.0] * 20)
    scores = np.linspace(0.1, 0.5, 20)
    scores[7] = 0.9  # one clear peak
    img, _ = map_picture(line, None, scores)
    flat, _ = map_picture(line)
    assert img.shape == flat.shape and not np.array_equal(img, flat)
    # the peak's dot sits highest: the topmost dark-violet/yellow dot pixels are at x of row 7
    dots = np.abs(img.astype(int) - np.array(plots.colour_ramp(20)[7])).sum(axis=2) < 30
    ys, xs = np.nonzero(dots[90:-70])  # inside the plot area
    assert len(ys) and ys.min() < 20  # drawn at the top of the plot


def test_close_rank_labels_do_not_cover_each_other():
    img = np.full((300, 400, 3), 255, np.uint8)
    boxes = place_labels(img, [(200, 150)] * 5, ["1", "2", "3", "4", "5"], (0, 400, 0, 300))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)


def test_confident_share_and_precision():
    outcomes = []
    for q, (conf, right) in enumerate([(0.9, True), (0.6, False), (0.5, True), (0.1, True)]):
        m = (Match(q, f"p{q}", 0.8),)
        res = LocalizationResult(m, None, None, conf, 0.1)
        outcomes.append(QueryOutcome(q, res, np.array([q if right else 99]), 1 if right else None))
    ev = Evaluation("map", 4, "rule", {1: 75.0}, outcomes)
    assert ev.confident(0.5) == (75.0, pytest.approx(200 / 3))  # 3 of 4 sure, 2 of them right
    assert ev.confident(0.95) == (0.0, None)


def test_map_without_query_is_not_a_flat_row_of_dots(tmp_path):
    """Without a query a line map's height is each place's similarity to the previous one."""
    from sfrs_edge.report.map_picture import neighbour_similarity

    line = _xy_map(tmp_path, [0.0] * 6)
    d = np.eye(6, dtype=np.float32)
    d[3] = d[2]  # place 3 looks exactly like place 2
    line.descriptors = d
    np.testing.assert_allclose(neighbour_similarity(line, 6), [0, 0, 0, 1, 0, 0])
    img, _ = map_picture(line)
    plot = img[80:-70].astype(int)  # below the legend's colour bar
    ys, _ = np.nonzero(np.abs(plot - np.array(plots.colour_ramp(6)[3])).sum(axis=2) < 30)
    ys4, _ = np.nonzero(np.abs(plot - np.array(plots.colour_ramp(6)[4])).sum(axis=2) < 30)
    assert ys.min() < ys4.min() - 100  # place 3 drawn far higher than place 4
