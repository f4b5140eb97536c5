"""Report and pictures on synthetic data: always runs (no dataset, no model, no torch)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sfrs_edge.evaluation import Evaluation, QueryOutcome
from sfrs_edge.localize import LocalizationResult, Match
from sfrs_edge.maps.metadata import Place
from sfrs_edge.report.html import write_report
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


def test_map_picture_marks_top_k_and_keyframes(tmp_path):
    the_map, ev = _synthetic(tmp_path)
    result = ev.outcomes[4].result
    img, marked = map_picture(the_map, result)
    assert img.shape == (480, 720, 3)
    assert marked == [m.id for m in result.matches]
    red = (img[:, :, 2] > 180) & (img[:, :, 1] < 80) & (img[:, :, 0] < 80)
    assert red.sum() > 100  # the rings around the matches
    plain, none = map_picture(the_map)
    assert none == [] and plain.shape == img.shape and not np.array_equal(plain, img)
