"""Opened maps answer with the right rows: search order, segment offsets, dtypes, metadata.

Maps here are written from known rows (no model, no images), so every answer is checked
against the rows that went in: top-k ids and order against a brute-force ranking, vectors and
places across segment boundaries, float16 storage, chunked SQL lookups.
"""

from __future__ import annotations

import numpy as np
import pytest

from sfrs_edge.errors import MapError
from sfrs_edge.maps import Map, Rows, append_to_map
from sfrs_edge.maps.index import IndexConfig
from sfrs_edge.maps.metadata import Place
from sfrs_edge.maps.store import atomic_map_dir
from sfrs_edge.maps.writer import history_event, write_new_map

DIM = 16
FP = "0123456789abcdef"


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def places(first: int, n: int) -> list[Place]:
    """Place i named ``p<i>`` at x = i, y = -i (so a wrong row is visible in every column);
    every place i with i % 7 == 3 has no position."""
    out = []
    for i in range(first, first + n):
        pos = None if i % 7 == 3 else (float(i), -float(i))
        kind = None if pos is None else "xy"
        out.append(Place(i, f"p{i:05d}", f"/img/{i}.jpg", pos, kind, float(i % 360), str(i)))
    return out


def write(path, desc: np.ndarray, index: str = "exact", dtype: str = "float32") -> Map:
    config = IndexConfig(index, M=16, ef_construction=200, ef=400).resolved(len(desc))
    with atomic_map_dir(path) as staging:
        write_new_map(
            staging,
            Rows(desc, places(0, len(desc))),
            config,
            dtype,
            model={"fingerprint": FP},
            positions={"kind": "xy", "source": "test"},
            event=history_event("build", len(desc)),
        )
    return Map.open(path)


def grow(path, desc: np.ndarray, first: int) -> Map:
    append_to_map(path, Rows(desc, places(first, len(desc))), FP)
    return Map.open(path)


@pytest.fixture(params=["exact", "hnsw"])
def segmented(request, tmp_path):
    """A map of 3 segments (60 + 25 + 15 rows) and all its rows in order."""
    parts = [unit_rows(60, 1), unit_rows(25, 2), unit_rows(15, 3)]
    path = tmp_path / "map"
    write(path, parts[0], request.param)
    grow(path, parts[1], 60)
    m = grow(path, parts[2], 85)
    return m, np.concatenate(parts)


def brute_force(q: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ rows.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


def test_segments_really_are_separate(segmented):
    m, rows = segmented
    assert len(m) == 100 and len(m.segments) == 3
    assert [(s.start, s.rows) for s in m.segments] == [(0, 60), (60, 25), (85, 15)]
    if m.index_type == "hnsw":
        assert m.indexed == 60  # the later rows are searched exactly beside the graph


def test_search_returns_brute_force_ids_in_order(segmented):
    m, rows = segmented
    q = unit_rows(30, 9)
    for k in (1, 7, 100):
        ids, sims = m.search(q, k=k)
        want_ids, want_sims = brute_force(q, rows, k)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(sims, want_sims, atol=1e-5)
        assert ids.dtype == np.int64 and sims.dtype == np.float32


def test_each_row_finds_itself_in_every_segment(segmented):
    m, rows = segmented
    ids, sims = m.search(rows, k=2)
    np.testing.assert_array_equal(ids[:, 0], np.arange(100))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert (sims[:, 1] < sims[:, 0]).all()


def test_a_first_segment_of_one_row_is_searched_too(tmp_path):
    """An exact map has no graph rows: every segment is scanned, a first one of a single
    row too."""
    rows = unit_rows(6, 5)
    write(tmp_path / "map", rows[:1])
    m = grow(tmp_path / "map", rows[1:], 1)
    assert [(s.start, s.rows) for s in m.segments] == [(0, 1), (1, 5)]
    ids, sims = m.search(rows, k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(6))


def test_vectors_and_score_follow_ids_across_segments(segmented):
    m, rows = segmented
    ids = np.array([99, 0, 60, 59, 85, 84, 61, 3])
    np.testing.assert_allclose(m.vectors(ids), rows[ids], atol=1e-6)
    np.testing.assert_allclose(m.descriptors, rows, atol=1e-6)
    q = unit_rows(3, 4)
    np.testing.assert_allclose(m.score(q, ids), q @ rows[ids].T, atol=1e-5)
    np.testing.assert_allclose(m.similarities(q), q @ rows.T, atol=1e-5)
    with pytest.raises(MapError, match="place id 100 is not in this map"):
        m.vectors([5, 100])


def test_places_come_back_in_the_order_asked(segmented):
    m, _ = segmented
    ids = np.array([99, 0, 60, 59, 85, 84, 61, 3])
    got = m.places(ids)
    assert [p.id for p in got] == ids.tolist()
    assert [p.name for p in got] == [f"p{i:05d}" for i in ids]
    assert [p.position for p in got] == [None if i % 7 == 3 else (float(i), -float(i)) for i in ids]
    # more ids than one SQL query takes, repeated and shuffled: still one answer per id
    many = np.random.default_rng(0).permutation(np.tile(np.arange(100), 13))
    assert [p.id for p in m.places(many)] == many.tolist()
    assert [p.id for p in m.all_places()] == list(range(100))
    assert m.names == [f"p{i:05d}" for i in range(100)]


def test_find_names_across_query_chunks(segmented):
    m, _ = segmented
    asked = [f"absent{i}" for i in range(1300)]
    for where, i in ((0, 7), (499, 60), (500, 61), (999, 99), (1000, 0), (1299, 85)):
        asked[where] = f"p{i:05d}"
    assert sorted(m.find_names(asked)) == sorted(f"p{i:05d}" for i in (7, 60, 61, 99, 0, 85))
    assert m.find_names(["nope"]) == []


def test_positions_are_row_aligned(segmented):
    m, _ = segmented
    pos = m.positions()
    assert pos.shape == (100, 2)
    want = np.stack([np.arange(100.0), -np.arange(100.0)], 1)
    want[np.arange(100) % 7 == 3] = np.nan
    np.testing.assert_array_equal(pos, want)
    assert m.manifest["positions"]["count"] == 100 - len(range(3, 100, 7))


def test_float16_map_stores_float16_and_answers_float32(tmp_path):
    rows = unit_rows(80, 5)
    path = tmp_path / "half"
    one = write(path, rows[:50], "exact", "float16")
    assert one.descriptors.dtype == np.float32  # one float16 segment: still float32 out
    np.testing.assert_array_equal(one.descriptors, rows[:50].astype(np.float16))
    m = grow(path, rows[50:], 50)  # the new segment keeps the map's dtype
    assert m.dtype == "float16" and m.manifest["dtype"] == "float16"
    assert [s.descriptors.dtype for s in m.segments] == [np.float16, np.float16]
    assert [np.load(path / s.entry["descriptors"]).dtype for s in m.segments] == [np.float16] * 2
    half = rows.astype(np.float16).astype(np.float32)
    assert m.vectors([0, 79]).dtype == np.float32 and m.descriptors.dtype == np.float32
    np.testing.assert_array_equal(m.vectors(np.arange(80)), half)  # exactly the rounded rows
    q = unit_rows(10, 6)
    ids, sims = m.search(q, k=5)
    want_ids, want_sims = brute_force(q, half, 5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, atol=1e-5)
    assert sims.dtype == np.float32


def test_float32_map_is_float32(tmp_path):
    rows = unit_rows(20, 7)
    m = write(tmp_path / "full", rows)
    assert m.dtype == "float32" and m.segments[0].descriptors.dtype == np.float32
    np.testing.assert_array_equal(m.descriptors, rows)  # not rounded


def test_in_memory_map_search_order():
    rows = unit_rows(50, 8)
    q = unit_rows(4, 9)
    ids, sims = Map.from_arrays(rows).search(q, k=6)
    want_ids, want_sims = brute_force(q, rows, 6)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(sims, want_sims, atol=1e-6)


def test_in_memory_map_describes_its_index_and_searches_like_a_built_one():
    """``Map.from_arrays`` (benchmarks, tests): exact over the rows it holds, or over an HNSW
    index holding every row; no model recorded."""
    from sfrs_edge.maps.index import HnswIndex

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(30, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    exact = Map.from_arrays(rows)
    assert (len(exact), exact.dim, exact.index_type, exact.indexed) == (30, 8, "exact", 0)
    assert exact.fingerprint == "None" and exact.path.name == "<in-memory>"
    ids, sims = exact.search(rows[[4, 17]], k=1)
    assert ids[:, 0].tolist() == [4, 17] and np.allclose(sims[:, 0], 1.0, atol=1e-6)
    hnsw = Map.from_arrays(rows, HnswIndex.build(rows, IndexConfig("hnsw", M=8, ef=32)))
    assert (len(hnsw), hnsw.index_type, hnsw.indexed) == (30, "hnsw", 30)
    assert hnsw.search(rows[[4, 17]], k=1)[0][:, 0].tolist() == [4, 17]


def test_exact_similarities_use_the_rows_held_for_search(tmp_path):
    """Every similarity of an exact map, from the float32 rows its search already holds: no
    whole-map copy per call (a float16 or multi-segment map would double its memory)."""
    import tracemalloc

    rows = unit_rows(4000, 11)
    write(tmp_path / "half", rows[:3000], "exact", "float16")
    m = grow(tmp_path / "half", rows[3000:], 3000)
    q = unit_rows(1, 12)
    tracemalloc.start()
    try:
        sims = m.similarities(q)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sims.shape == (1, 4000) and sims.dtype == np.float32
    np.testing.assert_allclose(sims, q @ rows.astype(np.float16).astype(np.float32).T, atol=1e-5)
    assert peak < rows.nbytes // 2  # a copy of the rows would be rows.nbytes


def test_hnsw_map_opened_without_its_index_says_so(tmp_path):
    write(tmp_path / "graph", unit_rows(30, 13), "hnsw")
    m = Map.open(tmp_path / "graph", load_index=False)
    with pytest.raises(MapError, match=r"graph: opened without its index \(load_index=False\)"):
        m.search(unit_rows(1, 14), k=3)
    with pytest.raises(MapError, match=r"graph: opened without its index \(load_index=False\)"):
        m.vectors([0])


def test_bad_queries_and_ef_are_named(tmp_path):
    """What is wrong with the queries (their shape, which rows are not finite) and with ef,
    in the words a caller needs; no queries give empty answers of the promised dtypes."""
    from sfrs_edge.errors import ConfigError

    m = write(tmp_path / "m", unit_rows(30, 15))
    with pytest.raises(
        MapError, match=r"query descriptors have shape \(3, 7\); this map holds 16-d descriptors"
    ):
        m.search(np.ones((3, 7), np.float32), k=2)
    q = unit_rows(9, 16)
    q[[2, 3, 4, 5, 6, 8]] = np.nan
    with pytest.raises(
        MapError,
        match=r"query descriptor \[2, 3, 4, 5, 6\] contains NaN or infinite values; the model "
        r"output is invalid",
    ):
        m.search(q, k=2)
    for ef in (0, True):
        with pytest.raises(ConfigError, match=f"ef must be at least 1, got {ef!r}"):
            m.search(unit_rows(1, 17), k=2, ef=ef)
    assert m.search(unit_rows(1, 17), k=2, ef=1)[0].shape == (1, 2)
    ids, sims = m.search(np.zeros((0, 16), np.float32), k=3)
    assert ids.shape == sims.shape == (0, 3)
    assert ids.dtype == np.int64 and sims.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_queries_of_any_float_type_answer_float32(tmp_path, dtype):
    rows = unit_rows(30, 18)
    m = write(tmp_path / "m", rows)
    q = unit_rows(2, 19)
    ids, sims = m.search(q.astype(dtype), k=3)
    assert sims.dtype == np.float32 and m.similarities(q.astype(dtype)).dtype == np.float32
    want_ids, _ = brute_force(q.astype(dtype).astype(np.float32), rows, 3)
    np.testing.assert_array_equal(ids, want_ids)


def test_a_search_answers_five_places_by_default(segmented):
    m, rows = segmented
    ids, sims = m.search(rows[:3])
    assert ids.shape == sims.shape == (3, 5)


def test_the_callers_ef_reaches_the_graph():
    """A graph built narrow (M 4, ef 10): its default ef misses true neighbours; the caller's
    wide ef finds (almost) all of them, so the ef given to a search is the one used."""
    from sfrs_edge.maps.index import HnswIndex

    x = np.random.default_rng(5).standard_normal((3000, DIM)).astype(np.float32)
    rows = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = unit_rows(100, 6)
    config = IndexConfig("hnsw", M=4, ef_construction=10, ef=10)
    m = Map.from_arrays(rows, HnswIndex.build(rows, config))
    want, _ = brute_force(q, rows, 10)

    def recall(ids):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, want, strict=True)])

    narrow, wide = recall(m.search(q, 10)[0]), recall(m.search(q, 10, ef=1500)[0])
    assert narrow < 0.95 and wide >= 0.99, (narrow, wide)


def test_ids_of_any_iterable_and_only_whole_numbers(segmented):
    """Ids may come as a list, an array or a generator; ids that are not whole numbers are
    refused as ids (a MapError), even inside the map's range."""
    m, rows = segmented
    assert [p.id for p in m.places(i for i in (99, 0, 60))] == [99, 0, 60]
    np.testing.assert_allclose(m.vectors(iter([61, 3])), rows[[61, 3]], atol=1e-6)
    with pytest.raises(MapError, match=r"^place id 2\.0 is not in this map \(0\.\.99\)$"):
        m.vectors(np.array([2.0, 3.0]))
