"""Localizer and `sfrs-edge localize`: real model + real map, the confidence rule, errors."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.engine import Engine
from sfrs_edge.errors import ConfigError, ImageError, MapError
from sfrs_edge.images import read_image
from sfrs_edge.localize import LocalizationResult, Localizer, Match
from sfrs_edge.maps import Map, build_map
from sfrs_edge.maps.metadata import Place

MAP_FRAMES = range(0, 100, 2)  # day_left 0, 2, ..., 98: 50 places, x = frame index


@pytest.fixture(scope="module")
def engine(tiny_onnx) -> Engine:
    return Engine.open(tiny_onnx, backend="cpu")


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory, engine, gardens_point) -> Path:
    tmp = tmp_path_factory.mktemp("loc")
    files = [gardens_point / "day_left" / f"Image{i:03d}.jpg" for i in MAP_FRAMES]
    poses = tmp / "poses.csv"
    poses.write_text(
        "name,x,y\n" + "".join(f"{f.name},{i},0\n" for i, f in zip(MAP_FRAMES, files, strict=True))
    )
    build_map(engine, files, tmp / "map", poses=poses)
    return tmp / "map"


@pytest.fixture(scope="module")
def loc(engine, tiny_map) -> Localizer:
    return Localizer(engine, tiny_map, k=5, far_radius=10)


def query(gardens_point, split: str, i: int) -> Path:
    return gardens_point / split / f"Image{i:03d}.jpg"


def test_localize_real_frames(loc, gardens_point):
    hits = 0
    queries = list(range(1, 99, 4))
    for i in queries:
        r = loc.localize_file(query(gardens_point, "day_right", i))
        assert isinstance(r, LocalizationResult) and len(r.matches) == 5
        assert all(isinstance(m, Match) for m in r.matches)
        sims = [m.similarity for m in r.matches]
        assert sims == sorted(sims, reverse=True)
        assert r.best.name == f"Image{r.best.position[0]:03.0f}.jpg"
        assert r.position_kind == "xy" and len(r.position) == 2
        assert abs(r.position[0] - r.best.position[0]) <= loc.near_radius
        assert 0.0 <= r.confidence <= 1.0 and r.margin >= 0
        assert set(r.timings) == {"decode", "preprocess", "inference", "search", "total"}
        assert r.timings["total"] >= r.timings["inference"] > 0
        hits += abs(r.position[0] - i) <= 3
    # chance is ~7/50 places; the tiny 16-d model gets most viewpoint-shifted frames right
    assert hits / len(queries) >= 0.6


def test_localize_file_equals_localize_frame(loc, gardens_point):
    path = query(gardens_point, "night_right", 40)
    a = loc.localize_file(path)
    b = loc.localize(read_image(path))
    assert a.matches == b.matches and a.position == b.position
    assert a.source == str(path) and b.source is None and b.timings["decode"] == 0.0
    d = json.loads(json.dumps(a.to_dict()))
    assert d["matches"][0]["name"] == a.best.name and d["confidence"] == a.confidence


def test_map_image_as_query_is_certain(loc, gardens_point):
    r = loc.localize_file(query(gardens_point, "day_left", 30))
    assert r.best.name == "Image030.jpg" and r.best.similarity > 0.999
    assert r.confidence == 1.0  # margin = 1 - s_rival: the full distance to a perfect match
    assert abs(r.position[0] - 30) <= 2


def test_grayscale_frame_and_bad_frames(loc, gardens_point, tmp_path):
    gray = read_image(query(gardens_point, "night_right", 20))[:, :, 0]
    assert loc.localize(gray).matches
    with pytest.raises(ImageError, match="at least 16x16"):
        loc.localize(np.zeros((5, 5, 3), np.uint8))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    with pytest.raises(ImageError, match="bad.jpg: file is empty"):
        loc.localize_file(bad)


def test_from_many_threads(loc, gardens_point):
    frames = [read_image(query(gardens_point, "day_right", i)) for i in (3, 33, 63, 93)]
    expected = [loc.localize(f).matches for f in frames]
    got: dict[int, list] = {i: [] for i in range(len(frames))}

    def work(i):
        for _ in range(5):
            got[i].append(loc.localize(frames[i]).matches)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, results in got.items():
        assert len(results) == 5 and all(m == expected[i] for m in results)


def test_map_from_another_model_is_refused(tiny_map, tmp_path, engine):
    other = tmp_path / "other"
    shutil.copytree(tiny_map, other)
    manifest_path = other / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["fingerprint"] = "ffffffffffffffff"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=f"ffffffffffffffff.*{engine.fingerprint}"):
        Localizer(engine, other)
    opened = Map.open(tiny_map)
    fake = FakeMap(10, "xy", fingerprint="eeeeeeeeeeeeeeee", dim=engine.dim)
    with pytest.raises(MapError, match=f"eeeeeeeeeeeeeeee.*{engine.fingerprint}"):
        Localizer(engine, fake)
    assert Localizer(engine, opened).map is opened
    with pytest.raises(ConfigError):
        Localizer(engine, opened, k=0)


def test_localizer_from_paths(tiny_onnx, tiny_map, gardens_point):
    loc = Localizer(str(tiny_onnx), str(tiny_map), k=2, backend="cpu")
    assert len(loc.localize_file(query(gardens_point, "day_right", 10)).matches) == 2
    import sfrs_edge

    assert sfrs_edge.Localizer is Localizer


# --- the confidence and position rule, on a map with chosen search results ----------------


class FakeMap:
    """A map whose search returns chosen ids/similarities; place i sits at x = i."""

    def __init__(self, n, kind, fingerprint="", dim=16, result=None):
        self.n, self.position_kind, self.fingerprint, self.dim = n, kind, fingerprint, dim
        self.result = result
        self.path = Path("fake-map")

    def __len__(self):
        return self.n

    def positions(self):
        i = np.arange(self.n, dtype=float)
        if self.position_kind == "xy":
            return np.stack([i, np.zeros(self.n)], axis=1)
        if self.position_kind == "latlon":  # 1e-4 degree latitude ≈ 11.1 m per place
            return np.stack([48.0 + i * 1e-4, np.full(self.n, 11.0)], axis=1)
        return np.zeros((self.n, 0))

    def all_places(self):
        return [Place(i, f"p{i}", f"/p{i}") for i in range(self.n)]

    def places(self, ids):
        return [Place(int(i), f"p{i}", f"/p{i}") for i in ids]

    @property
    def names(self):
        return [f"p{i}" for i in range(self.n)]

    def search(self, q, k, ef=None):
        ids, sims = self.result
        return np.array([ids[:k]], np.int64), np.array([sims[:k]], np.float32)


def _fake_loc(engine, kind, ids, sims, **kw) -> Localizer:
    fake = FakeMap(100, kind, engine.fingerprint, engine.dim, (ids, sims))
    return Localizer(engine, fake, k=3, **kw)


FRAME = np.full((40, 60, 3), 128, np.uint8)


def test_confidence_margin_to_far_rival(engine):
    loc = _fake_loc(
        engine, "xy", [50, 51, 49, 80, 10], [0.60, 0.58, 0.55, 0.50, 0.40], far_radius=10
    )
    r = loc.localize(FRAME)
    assert [m.name for m in r.matches] == ["p50", "p51", "p49"]
    assert r.margin == pytest.approx(0.10, abs=1e-6)  # rival: p80, the first far candidate
    assert r.confidence == pytest.approx(0.10 / (0.25 * 0.50), abs=1e-4)
    # near_radius = 2: p50, p51, p49 averaged with weights s - s_rival = .10, .08, .05
    assert r.position[0] == pytest.approx((50 * 0.10 + 51 * 0.08 + 49 * 0.05) / 0.23, abs=1e-4)
    assert r.best.position == (50.0, 0.0)


def test_confidence_when_all_candidates_are_near(engine):
    loc = _fake_loc(engine, "xy", [50, 51, 52], [0.60, 0.59, 0.58], far_radius=10)
    r = loc.localize(FRAME)
    assert r.margin == pytest.approx(0.02, abs=1e-6)  # bound: the last candidate
    assert r.confidence == pytest.approx(0.02 / (0.25 * 0.42), abs=1e-4)


def test_confidence_ambiguous_places_is_low(engine):
    loc = _fake_loc(engine, "xy", [50, 90, 10], [0.600, 0.599, 0.5], far_radius=10)
    r = loc.localize(FRAME)
    assert r.confidence <= 0.02 and r.position == (50.0, 0.0)


def test_no_positions_uses_map_rows(engine):
    loc = _fake_loc(engine, None, [50, 55, 70, 1], [0.7, 0.65, 0.6, 0.5], far_frames=10)
    r = loc.localize(FRAME)
    assert r.position is None and r.position_kind is None and r.best.position is None
    assert r.margin == pytest.approx(0.1, abs=1e-6)  # p55 is 5 rows away: near; p70 is far


def test_latlon_distances_in_metres(engine):
    # p52 is 22 m from p50 (near at 25 m), p53 is 33 m away: the rival
    loc = _fake_loc(engine, "latlon", [50, 52, 53], [0.7, 0.66, 0.6], far_radius=25)
    r = loc.localize(FRAME)
    assert r.margin == pytest.approx(0.1, abs=1e-6)
    assert r.position == pytest.approx((48.005, 11.0))  # near_radius 5 m: only p50 itself


def test_reranked_answer_carries_both_scores_and_the_position_follows_the_order(engine):
    """Re-ranking moved p49 (global 0.50) to the top with a fused score of 0.70. The matches
    are in score order, each carries its fused score and its global similarity, and the
    position centres on p49: weights come from the scores that order the list (the global
    similarities would have pulled it towards p51)."""
    from sfrs_edge.rerank import RerankResult

    loc = _fake_loc(engine, "xy", [], [], far_radius=10)
    ids = np.array([49, 51, 52, 80, 10])
    sims = np.array([0.50, 0.60, 0.58, 0.45, 0.40])
    verified = RerankResult(
        order=np.array([2, 0, 1, 3]),
        scores=np.array([0.70, 0.60, 0.58, 0.45]),
        matches=np.array([30, 4, 3, 2]),
        inliers=np.array([20, 0, 0, 0]),
        evidence=np.array([1.0, 0.0, 0.0, 0.0]),
    )
    r = loc._result(ids, sims, verified, {}, "q.jpg")
    assert r.reranked and [m.name for m in r.matches] == ["p49", "p51", "p52"]
    assert [m.score for m in r.matches] == [0.70, 0.60, 0.58]  # the order printed
    assert [m.similarity for m in r.matches] == [0.50, 0.60, 0.58]
    assert r.matches[0].inliers == 20
    # near_radius 2: p49 and p51; rival p80 (score 0.45): weights 0.25 and 0.15
    assert r.position[0] == pytest.approx((49 * 0.25 + 51 * 0.15) / 0.40, abs=1e-6)
    assert abs(r.position[0] - 49) < abs(r.position[0] - 51)
    assert r.to_dict()["matches"][0]["score"] == 0.70


def test_reranked_scores_stay_a_ranking_with_a_fusion_on_another_scale(engine):
    """A fusion whose scores are z-scores (below the global similarities of the rest): the
    candidates after the re-ranked head are shifted below it, keeping their own order."""
    from sfrs_edge.rerank import RerankResult

    loc = _fake_loc(engine, "xy", [], [], far_radius=10)
    ids = np.array([49, 51, 80, 10, 30])
    sims = np.array([0.50, 0.60, 0.45, 0.44, 0.40])
    verified = RerankResult(
        order=np.array([0, 1, 2]),
        scores=np.array([1.2, -0.3, -0.9]),
        matches=np.zeros(3, int),
        inliers=np.array([30, 0, 0]),
        evidence=np.array([1.0, 0.0, 0.0]),
    )
    loc.k = 5  # all five candidates as matches
    r = loc._result(ids, sims, verified, {}, "q.jpg")
    scores = [m.score for m in r.matches]
    assert len(scores) == 5 and scores[3] > scores[4]
    assert scores == sorted(scores, reverse=True) and scores[:3] == [1.2, -0.3, -0.9]


def test_cli_prints_reranked_order_with_score_and_similarity(engine, monkeypatch, tmp_path):
    from sfrs_edge.cli.localize import _print_human
    from sfrs_edge.rerank import RerankConfig
    from sfrs_edge.results import LocalizationResult, Match

    matches = (Match(3, "a.jpg", 0.3214, None, 20, 0.5214), Match(7, "b.jpg", 0.3565, None, 0))
    r = LocalizationResult(matches, None, None, 0.8, 0.1, {}, "q.jpg", reranked=True)
    import click

    lines = []
    monkeypatch.setattr(click, "echo", lambda msg="", **k: lines.append(msg))
    _print_human(r, False, RerankConfig(k=10))
    assert "re-ranked: top 10" in lines[0] and "score 0.521" in lines[0]
    assert "score  0.5214  similarity  0.3214  20 inliers" in lines[1]
    assert "score  0.3565  similarity  0.3565" in lines[2]  # score defaults to the similarity


# --- the command line ---------------------------------------------------------------------


def test_cli_human_and_json(tiny_onnx, tiny_map, gardens_point):
    runner = CliRunner()
    frame = str(query(gardens_point, "day_right", 30))
    args = ["localize", frame, "--model", str(tiny_onnx), "--map", str(tiny_map), "-k", "3"]
    res = runner.invoke(main, [*args, "--timings"])
    assert res.exit_code == 0, res.output
    assert "Image030.jpg" in res.output.splitlines()[0] or "confidence" in res.output
    assert "timings (ms): decode" in res.output and res.output.count("\n  ") >= 3
    res = runner.invoke(main, [*args, "--json"])
    assert res.exit_code == 0
    d = json.loads(res.output.strip())
    assert d["source"] == frame and len(d["matches"]) == 3 and "timings" not in d
    assert d["position_kind"] == "xy" and 0 <= d["confidence"] <= 1


def test_cli_bad_frame_is_reported_and_others_continue(
    tiny_onnx, tiny_map, gardens_point, tmp_path
):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    good = str(query(gardens_point, "night_right", 10))
    runner = CliRunner()
    base = ["localize", "--model", str(tiny_onnx), "--map", str(tiny_map), "--json"]
    res = runner.invoke(main, [*base, str(bad), good, str(tmp_path / "missing.jpg")])
    assert res.exit_code == 1
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert [("error" in x) for x in lines] == [True, False, True]
    assert "corrupt.jpg" in lines[0]["error"] and "no such file" in lines[2]["error"]
    assert "2 frame(s) could not be localized" in res.stderr


def test_cli_defaults_work_as_typed(tiny_onnx, tiny_map, gardens_point, tmp_path, monkeypatch):
    from sfrs_edge import paths

    runner = CliRunner()
    frame = str(query(gardens_point, "day_right", 50))
    res = runner.invoke(main, ["localize", frame])
    assert res.exit_code == 1 and "model.onnx: no such model file" in res.stderr
    paths.home().mkdir(parents=True)
    shutil.copy(tiny_onnx, paths.default_model())
    res = runner.invoke(main, ["localize", frame])
    assert res.exit_code == 1 and "map" in res.stderr
    shutil.copytree(tiny_map, paths.default_map())
    res = runner.invoke(main, ["localize", frame])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"{frame}: Image0")
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (5, 6):
        shutil.copy(query(gardens_point, "night_right", i), folder)
    res = runner.invoke(main, ["localize", str(folder), "--json"])
    assert res.exit_code == 0 and len(res.output.strip().splitlines()) == 2


def test_cli_map_from_other_model(tiny_map, tmp_path, gardens_point, engine):
    """A model whose metadata was edited fails its digest; a map built at another input size
    is refused naming the input size (one line, exit 1)."""
    import dataclasses

    import onnx

    from sfrs_edge.model_info import ModelInfo

    edited = tmp_path / "edited.onnx"
    model = onnx.load(str(engine.path))
    for p in model.metadata_props:
        if p.key == "sfrs_edge":
            info = json.loads(p.value)
            info["fingerprint"] = "0000111122223333"
            p.value = json.dumps(info)
    onnx.save(model, str(edited))
    frame = str(query(gardens_point, "day_right", 50))
    args = ["localize", frame, "--model", str(edited), "--map", str(tiny_map)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "does not match the digest" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

    other_map = tmp_path / "other_map"
    shutil.copytree(tiny_map, other_map)
    man = json.loads((other_map / "manifest.json").read_text())
    pre = dataclasses.replace(engine.info.preprocessing, height=128)
    built = dataclasses.replace(engine.info, preprocessing=pre)
    assert built.fingerprint != engine.fingerprint
    man["model"]["info"] = json.loads(built.to_json())
    man["model"]["fingerprint"] = ModelInfo.from_json(built.to_json()).fingerprint
    (other_map / "manifest.json").write_text(json.dumps(man))
    args = ["localize", frame, "--model", str(engine.path), "--map", str(other_map)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    assert "input size differs (map: 128x160, this model: 96x160)" in res.stderr


def test_localize_scores_answers_as_localize_with_every_similarity(loc, gardens_point):
    """`map show --query` draws every place's similarity beside the answer of a frame handed
    in as an array: the same matches as localize, the same timings, nothing decoded."""
    image = read_image(query(gardens_point, "day_right", 30))
    result, scores = loc.localize_scores(image)
    plain = loc.localize(image)
    assert result.matches == plain.matches and set(plain.timings) == set(result.timings)
    assert scores.shape == (len(loc.map),) and scores.dtype == np.float32
    assert int(np.argmax(scores)) == result.best.id
    assert [round(float(scores[m.id]), 6) for m in result.matches] == [
        m.similarity for m in result.matches
    ]
    assert set(result.timings) == {"decode", "preprocess", "inference", "search", "total"}
    assert result.timings["decode"] == 0.0
    assert result.timings["total"] >= result.timings["inference"] > 0


def test_verified_confidence_stays_within_one():
    """The confidence is documented in [0, 1] (thresholds such as 0.5 compare against it),
    also for evidence on a scale above one."""
    from sfrs_edge.estimate import verified_confidence

    assert verified_confidence([3.0, 0.5, 0.0], [True, True, False]) == 1.0
    assert verified_confidence([1.0, 0.0], [True, False]) == 1.0


def test_match_names_a_map_place_with_its_position_and_score(loc):
    """What a temporal filter's answer outside the frame's own matches is reported as."""
    m = loc.match(3, 0.5)
    assert (m.id, m.name, m.similarity, m.position) == (3, "Image006.jpg", 0.5, (6.0, 0.0))
    assert m.score == 0.5  # no fused score: the similarity orders it
    assert loc.match(3, 0.5, 0.75).score == 0.75


def test_damaged_jpeg_frame_is_answered_marked_and_logged(loc, gardens_point, tmp_path, caplog):
    """A robot's frame with damaged JPEG data is answered (better judged than dropped), marked
    damaged, and a warning names the file and what libjpeg said; intact frames are neither."""
    import logging

    frame = query(gardens_point, "day_left", 0)
    data = bytearray(frame.read_bytes())
    data[20000] ^= 0x08  # one bit inside the Huffman-coded data: libjpeg still decodes it
    bad = tmp_path / "flipped.jpg"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="sfrs_edge.localize"):
        intact = loc.localize_file(frame)
        assert not intact.damaged and not caplog.records
        assert 0 <= intact.timings["decode"] <= intact.timings["total"]
        r = loc.localize_file(bad)
    assert r.damaged and len(r.matches) == 5 and r.source == str(bad)
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith(f"{bad}: damaged JPEG data (libjpeg: Corrupt")
    assert message.endswith("; answered anyway, marked damaged — the answer may be wrong")


class ExactFakeMap(FakeMap):
    """A FakeMap searched exactly: every place's similarity comes from ``similarities``, and
    the search breadth each search was asked for is kept."""

    index_type = "exact"

    def __init__(self, *a, full=None, **kw):
        super().__init__(*a, **kw)
        self.full, self.efs = full, []

    def similarities(self, q):
        return np.asarray(self.full, np.float32)[None]

    def search(self, q, k, ef=None):
        self.efs.append(ef)
        return super().search(q, k, ef)


def test_search_gives_frame_scores_only_when_asked(loc, engine):
    from sfrs_edge.localize import search

    desc = engine.embed_frame(FRAME)
    found = search(loc.map, desc, 5)
    assert len(found.ids) == 5 and found.frame is None and found.scores is None
    every = search(loc.map, desc, 5, all_scores=True, focus=np.arange(40, 45))
    assert every.ids.tolist() == found.ids.tolist() and every.scores.shape == (len(loc.map),)
    # the filter's focus rows are among the rows that carry evidence
    assert set(range(40, 45)) <= set(every.frame.rows.tolist())


def test_the_localizers_ef_reaches_the_maps_search(engine):
    fake = ExactFakeMap(100, "xy", engine.fingerprint, engine.dim, ([5, 60], [0.6, 0.5]))
    Localizer(engine, fake, k=2, ef=77).localize(FRAME)
    Localizer(engine, fake, k=2).localize(FRAME)
    assert fake.efs == [77, None]  # None: the map's own default


def test_damaged_map_similarities_name_the_map(engine):
    """Similarities beyond 1 mean stored descriptors are damaged: the error names the map
    (its path, or "map" for one without a path) on both search paths."""
    ids, sims = [5, 60, 70], [1.5, 0.5, 0.4]
    fake = ExactFakeMap(100, "xy", engine.fingerprint, engine.dim, (ids, sims))
    with pytest.raises(MapError, match="^fake-map: search returned similarity 1.5"):
        Localizer(engine, fake, k=2).localize(FRAME)
    del fake.path
    with pytest.raises(MapError, match="^map: search returned similarity 1.5"):
        Localizer(engine, fake, k=2).localize(FRAME)
    full = np.linspace(0.0, 0.5, 100)
    full[7] = 1.5
    fake = ExactFakeMap(100, "xy", engine.fingerprint, engine.dim, (ids, sims), full=full)
    with pytest.raises(MapError, match="^fake-map: search returned similarity 1.5"):
        Localizer(engine, fake, k=2).localize_scores(FRAME)


def test_more_matches_than_the_candidates_searched_by_default(engine, tiny_map, gardens_point):
    """k above the 32 candidates a frame is searched for: the user still gets k matches."""
    loc = Localizer(engine, tiny_map, k=40)
    r = loc.localize(read_image(query(gardens_point, "day_right", 30)))
    assert len(r.matches) == 40 and len({m.id for m in r.matches}) == 40
    sims = [m.similarity for m in r.matches]
    assert sims == sorted(sims, reverse=True)


# --- the Localizer's options, as documented ------------------------------------------------


def test_localizer_defaults_are_the_documented_ones(engine):
    loc = Localizer(engine, FakeMap(100, "xy", engine.fingerprint, engine.dim))
    assert (loc.k, loc.ef, loc.rerank) == (5, None, None)
    assert (loc.far_radius, loc.far_frames, loc.margin_scale) == (25.0, 10, 0.25)
    assert loc.near_radius == 5.0  # far_radius / 5
    loc = Localizer(engine, FakeMap(100, "xy", engine.fingerprint, engine.dim), near_radius=3)
    assert loc.near_radius == 3 and loc.estimator.near_radius == 3


def test_estimator_options_are_checked_one_by_one():
    from sfrs_edge.estimate import Estimator

    pos = np.zeros((4, 2))
    e = Estimator(pos, "xy")
    assert (e.far_radius, e.far_frames, e.margin_scale, e.near_radius) == (25.0, 10, 0.25, 5.0)
    assert Estimator(pos, "xy", near_radius=7.5).near_radius == 7.5
    # the smallest accepted values
    e = Estimator(pos, "xy", far_radius=0.5, far_frames=1, margin_scale=0.01)
    assert (e.far_radius, e.far_frames, e.margin_scale) == (0.5, 1, 0.01)
    for bad in ({"far_radius": 0}, {"far_frames": 0}, {"margin_scale": 0}):
        with pytest.raises(
            ConfigError, match="^far_radius, far_frames and margin_scale must be positive$"
        ):
            Estimator(pos, "xy", **bad)


def test_after_reranking_the_rival_is_the_most_similar_other_place():
    """Re-ranked candidates are no longer in similarity order: the margin (and the position
    weights) are measured against the best candidate at another place, not the first one."""
    from sfrs_edge.estimate import Estimator

    pos = np.array([[0.0, 0.0], [1.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    e = Estimator(pos, "xy")
    ids, sims = np.array([0, 1, 2, 3]), np.array([0.8, 0.79, 0.5, 0.7])
    got = e.estimate(ids, sims, k=2, evidence=np.array([0.9, 0.5, 0.1, 0.2]))
    assert got.margin == pytest.approx(0.1) and got.confidence == pytest.approx(0.7)
    w = np.array([0.1, 0.09])  # similarity above the rival's 0.7
    assert got.position == pytest.approx(((w * [0.0, 1.0]).sum() / w.sum(), 0.0))


def test_localizer_opening_a_model_passes_threads_and_allow_unverified(tiny_onnx, engine, tmp_path):
    import onnx

    from sfrs_edge import model_digest
    from sfrs_edge.errors import ModelError

    fake = FakeMap(100, "xy", engine.fingerprint, engine.dim)
    loc = Localizer(str(tiny_onnx), fake, backend="cpu", threads=1)
    assert loc.engine.backend.threads == 1
    model = onnx.load(str(tiny_onnx))
    keep = [p for p in model.metadata_props if p.key != model_digest.DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    onnx.save(model, str(tmp_path / "old.onnx"))
    with pytest.raises(ModelError, match="no content digest"):
        Localizer(tmp_path / "old.onnx", fake, backend="cpu")
    loc = Localizer(tmp_path / "old.onnx", fake, backend="cpu", allow_unverified=True)
    assert not loc.engine.verified


def test_localizer_holds_numpy_blas_to_the_search_threads(engine):
    from threadpoolctl import ThreadpoolController

    from sfrs_edge.localize import SEARCH_BLAS_THREADS

    ctl = ThreadpoolController()
    with ctl.limit(limits=4, user_api="blas"):  # undone after the test
        Localizer(engine, FakeMap(100, "xy", engine.fingerprint, engine.dim))
        blas = [m["num_threads"] for m in ctl.info() if m["user_api"] == "blas"]
    assert blas and set(blas) == {SEARCH_BLAS_THREADS}


def test_map_model_and_size_errors_name_the_map(engine, tiny_map, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_map, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"]["fingerprint"] = "ffffffffffffffff"
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MapError, match=f"^{other}"):
        Localizer(engine, other)
    wide = FakeMap(10, "xy", engine.fingerprint, engine.dim + 1)
    with pytest.raises(
        MapError,
        match=f"^map holds {engine.dim + 1}-d descriptors, the model makes {engine.dim}-d$",
    ):
        Localizer(engine, wide)
    with pytest.raises(MapError, match="^fake-map: the map is empty$"):
        Localizer(engine, FakeMap(0, "xy", engine.fingerprint, engine.dim))
    empty = FakeMap(0, "xy", engine.fingerprint, engine.dim)
    del empty.path
    with pytest.raises(MapError, match="^map: the map is empty$"):
        Localizer(engine, empty)


def test_a_one_place_map_answers_with_its_place(engine):
    one = FakeMap(1, "xy", engine.fingerprint, engine.dim, ([0], [0.4]))
    r = Localizer(engine, one, k=1).localize(FRAME)
    assert [m.name for m in r.matches] == ["p0"] and r.position == (0.0, 0.0)


class PlacesOnlyMap(FakeMap):
    """A duck-typed map that cannot list its names: only places(ids)."""

    @property
    def names(self):  # as if the attribute were absent: getattr's default applies
        raise AttributeError("names")

    def places(self, ids):
        self.asked = [int(i) for i in ids]
        return super().places(ids)


def test_a_map_that_cannot_list_names_is_asked_per_frame(engine):
    fake = PlacesOnlyMap(100, "xy", engine.fingerprint, engine.dim, ([7, 60], [0.6, 0.5]))
    r = Localizer(engine, fake, k=2).localize(FRAME)
    assert [m.name for m in r.matches] == ["p7", "p60"] and fake.asked == [7, 60]


def test_a_rerank_config_is_kept_as_given(engine, tiny_map):
    from sfrs_edge.rerank import RerankConfig

    config = RerankConfig(k=7)
    loc = Localizer(engine, tiny_map, rerank=config)  # no local features: warns, global only
    assert loc.rerank in (None, config)


def _verified(scores, evidence, inliers=None):
    from sfrs_edge.rerank import RerankResult

    n = len(scores)
    return RerankResult(
        order=np.arange(n),
        scores=np.array(scores),
        matches=np.zeros(n, int),
        inliers=np.zeros(n, int) if inliers is None else np.array(inliers),
        evidence=np.array(evidence),
    )


def test_the_rest_is_shifted_below_the_head_only_when_it_would_rise_above_it(engine):
    """The candidates after the re-ranked head rise above its last score: shifted to just
    below it (1e-6), in their own order; the match scores are reported to 6 decimals."""
    loc = _fake_loc(engine, "xy", [], [], far_radius=10)
    loc.k = 5
    ids = np.array([49, 51, 80, 10, 30])
    sims = np.array([0.50, 0.60, 0.45, 0.75, 0.72])
    r = loc._result(ids, sims, _verified([0.9123456, 0.8, 0.7], [1.0, 0.0, 0.0]), {}, None)
    assert [m.score for m in r.matches] == [0.912346, 0.8, 0.7, 0.699999, 0.669999]
    # the rest already below the head: unchanged
    sims = np.array([0.50, 0.60, 0.45, 0.44, 0.40])
    r = loc._result(ids, sims, _verified([0.9, 0.8, 0.7], [1.0, 0.0, 0.0]), {}, None)
    assert [m.score for m in r.matches] == [0.9, 0.8, 0.7, 0.44, 0.40]
    # every candidate re-ranked: nothing after the head
    r = loc._result(ids[:3], sims[:3], _verified([0.9, 0.8, 0.7], [1.0, 0.0, 0.0]), {}, None)
    assert [m.score for m in r.matches] == [0.9, 0.8, 0.7]


def test_a_reranked_answers_confidence_is_its_verified_evidence_over_the_best_far_rival(engine):
    """Evidence 0.6 for the answer, 0.5 for p52 (near it), 0.2 for p80 (another place):
    confidence 0.6 - 0.2, whatever the global margin says."""
    loc = _fake_loc(engine, "xy", [], [], far_radius=10)
    ids = np.array([49, 52, 80, 10])
    sims = np.array([0.50, 0.60, 0.45, 0.40])
    verified = _verified([0.80, 0.70, 0.50], [0.6, 0.5, 0.2], inliers=[12, 9, 3])
    r = loc._result(ids, sims, verified, {}, None)
    assert r.confidence == pytest.approx(0.4, abs=1e-9)
    assert r.margin == pytest.approx(0.80 - 0.50, abs=1e-9)  # rival p80's fused score
    assert [m.inliers for m in r.matches] == [12, 9, 3]


def test_the_position_averages_only_the_top_k(engine):
    """p51 is near p50 and scores almost as high, but with k = 1 only p50 is a match: the
    position is p50's own."""
    loc = _fake_loc(engine, "xy", [50, 51, 80], [0.60, 0.59, 0.40], far_radius=10)
    loc.k = 1
    r = loc.localize(FRAME)
    assert r.position == (50.0, 0.0) and len(r.matches) == 1


def test_the_timings_are_milliseconds_to_three_decimals_and_the_total_spans_the_call(engine):
    import time

    loc = _fake_loc(engine, "xy", [50, 51, 80], [0.60, 0.59, 0.40], far_radius=10)
    t0 = time.perf_counter()
    r = loc.localize(FRAME)
    wall_ms = (time.perf_counter() - t0) * 1000.0
    assert {"total", "search"} <= set(r.timings)
    for value in r.timings.values():
        assert isinstance(value, float) and value == round(value, 3) and value >= 0
    assert max(r.timings.values()) == r.timings["total"] <= wall_ms + 1e-3


def test_the_margin_and_confidence_are_reported_to_six_and_four_decimals(engine):
    loc = _fake_loc(engine, "xy", [50, 80], [0.6123457, 0.5], far_radius=10)
    r = loc.localize(FRAME)
    assert r.margin == round(0.6123457 - 0.5, 6) == 0.112346
    assert r.confidence == round(0.112346 / (0.25 * 0.5), 4) == 0.8988


def test_the_rival_is_judged_from_the_answer_not_the_runner_up(engine):
    """The second candidate is another place: it is the rival, even though the third (near the
    answer) would be near the second by neither rule."""
    loc = _fake_loc(engine, "xy", [50, 80, 51], [0.60, 0.55, 0.50], far_radius=10)
    r = loc.localize(FRAME)
    assert r.margin == pytest.approx(0.05, abs=1e-6)


def test_near_counts_rows_inclusively_and_per_candidate_when_positions_are_missing():
    from sfrs_edge.estimate import Estimator

    rows = Estimator(np.zeros((100, 0)), None)
    assert rows.near(np.array([50, 55, 56, 45, 44]), 50, 10.0, 5).tolist() == [
        True,
        True,
        False,
        True,
        False,
    ]
    pos = np.array([[0.0, 0.0], [100.0, 0.0], [np.nan, np.nan], [3.0, 0.0]])
    e = Estimator(pos, "xy")
    # p1 is a row away but 100 m off: far; p2 has no position: near by its row; p3 is 3 m away
    assert e.near(np.array([0, 1, 2, 3]), 0, 10.0, 10).tolist() == [True, False, True, True]
    # a candidate without a position among the top k does not cost the answer its position
    est = e.estimate(np.array([0, 2, 3, 1]), np.array([0.6, 0.58, 0.55, 0.4]), 3)
    w = np.array([0.6 - 0.4, 0.55 - 0.4])
    assert est.position == pytest.approx(((0 * w[0] + 3 * w[1]) / w.sum(), 0.0))


def test_a_one_dimensional_descriptor_with_nan_is_one_bad_descriptor():
    from sfrs_edge.engine import check_finite
    from sfrs_edge.errors import ModelError

    with pytest.raises(
        ModelError, match=r"^descriptor: the model produced NaN/inf values \(1 of 3"
    ):
        check_finite(np.array([np.nan, 1.0, 0.0]))


def test_a_place_id_outside_the_map_names_the_maps_range(engine):
    loc = _fake_loc(engine, "xy", [], [])
    with pytest.raises(MapError, match=r"^place id 100 is not in this map \(0\.\.99\)$"):
        loc.match(100, 0.5)


def test_descriptors_are_answered_with_the_localizers_ef_and_without_sources(engine):
    fake = ExactFakeMap(100, "xy", engine.fingerprint, engine.dim, ([5, 60], [0.6, 0.5]))
    desc = engine.embed_frame(FRAME)
    (r,) = Localizer(engine, fake, k=2, ef=77).localize_descriptors(desc)
    assert fake.efs == [77] and r.source is None and [m.id for m in r.matches] == [5, 60]
    (r,) = Localizer(engine, fake, k=2).localize_descriptors(desc, ["q.jpg"])
    assert fake.efs == [77, None] and r.source == "q.jpg"
