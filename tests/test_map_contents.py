"""Tampering that keeps checksums valid (recomputed): what checks of the stored numbers catch."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_maps
from test_map_storage import ExtrasEngine

from sfrs_edge.errors import MapError
from sfrs_edge.maps import Map, add_to_map, build_map, reader, verify_map
from sfrs_edge.maps.contents import NORM_TOLERANCE, SAMPLE_ROWS, check_similarities, check_vectors
from sfrs_edge.maps.hnsw_file import HEADER
from sfrs_edge.maps.snapshot import MissingFile
from sfrs_edge.model_info import check_map_model

engine, images = test_maps.engine, test_maps.images  # the same fixtures


def _restamp(out: Path, name: str, data: bytes) -> None:
    """Write ``data`` as the map's file ``name`` and recompute its checksum in the manifest."""
    (out / name).write_bytes(data)
    man = json.loads((out / "manifest.json").read_text())
    man["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (out / "manifest.json").write_text(json.dumps(man))


def _replace_npy(out: Path, name: str, arr: np.ndarray) -> None:
    """Write ``arr`` as the map's array file ``name``, its checksum recomputed."""
    tmp = out / "edited.npy"
    np.save(tmp, arr)
    data = tmp.read_bytes()
    tmp.unlink()
    _restamp(out, name, data)


def _edit_npy(out: Path, name: str, edit) -> None:
    arr = np.load(out / name)
    edit(arr)
    _replace_npy(out, name, arr)


DESC = "seg-000000.desc.npy"


def test_scaled_descriptors_are_refused_at_open_and_verify(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    assert verify_map(out)["ok"]
    _edit_npy(out, DESC, lambda a: a.__imul__(10))  # the issue's ×10, checksum recomputed
    for check in (lambda: Map.open(out), lambda: verify_map(out)):
        with pytest.raises(MapError, match="row 0 has length 10, not 1"):
            check()


def test_a_nan_row_beyond_the_open_sample_is_found_by_verify(tmp_path, gardens_point, engine):
    folder = tmp_path / "src"
    folder.mkdir()
    for p in sorted((gardens_point / "day_left").iterdir())[: 2 * SAMPLE_ROWS + 6]:
        (folder / p.name).symlink_to(p)
    out = tmp_path / "map"
    build_map(engine, folder, out, index="exact")
    _edit_npy(out, DESC, lambda a: a.__setitem__((SAMPLE_ROWS + 2, 5), np.nan))
    Map.open(out, verify=False)  # sizes only: the first and last rows are sampled
    for check in (lambda: Map.open(out), lambda: verify_map(out)):  # a changed file is hashed
        with pytest.raises(MapError, match=f"row {SAMPLE_ROWS + 2} holds NaN"):  # and read
            check()


@pytest.mark.parametrize("sign", [1, -1])
def test_rows_just_outside_unit_length_are_refused(sign):
    """The tolerance is the model's plus float16 rounding, not more: rows 1.5 tolerances off
    unit length are refused (naming the row), rows half a tolerance off pass."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((5, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    check_vectors(rows * (1 + sign * 0.5 * NORM_TOLERANCE), "descriptors")
    bad = rows.copy()
    bad[3] *= 1 + sign * 1.5 * NORM_TOLERANCE
    with pytest.raises(MapError, match="row 3"):
        check_vectors(bad, "descriptors")


def test_search_refuses_impossible_similarities():
    check_similarities(np.array([[0.99, -1.0, 1.005]]), "m")
    for bad in (5.9, np.nan, -1.5):
        with pytest.raises(MapError, match="impossible between unit-length descriptors"):
            check_similarities(np.array([[0.5, bad]]), "m")


def test_nan_local_features_are_refused(tmp_path, images):
    out = tmp_path / "map"
    build_map(ExtrasEngine(), images, out)
    name = next(p.name for p in out.iterdir() if "local_features" in p.name)
    _edit_npy(out, name, lambda a: a.fill(np.nan))
    with pytest.raises(MapError, match=f"{name}: row 0 holds NaN"):
        Map.open(out)


def _two_segments(tmp_path: Path, images: Path) -> Path:
    """A map of 8 + 4 rows in two segments, with extras (rows 8..11 live in segment 1)."""
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    build_map(ExtrasEngine(), files[:8], out, index="exact")
    add_to_map(ExtrasEngine(), out, files[8:])
    return out


def _file(out: Path, segment: int, kind: str) -> str:
    return next(
        p.name
        for p in sorted(out.iterdir())
        if p.name.startswith(f"seg-{segment:06d}") and kind in p.name
    )


@pytest.mark.parametrize("kind", [".desc.", "local_xy"])
def test_a_bad_row_of_a_later_segment_is_named_by_file_and_map_row(tmp_path, images, kind):
    out = _two_segments(tmp_path, images)
    name = _file(out, 1, kind)
    _edit_npy(out, name, lambda a: a.__setitem__((1, 0), np.nan))
    with pytest.raises(MapError, match=re.escape(f"{out}: {name}: row 9 holds NaN")):
        Map.open(out)


def test_extras_beyond_the_open_sample_are_read_whole_when_changed(tmp_path, gardens_point):
    folder = tmp_path / "src"
    folder.mkdir()
    for p in sorted((gardens_point / "day_left").iterdir())[: SAMPLE_ROWS + 8]:
        (folder / p.name).symlink_to(p)
    out = tmp_path / "map"
    build_map(ExtrasEngine(), folder, out, index="exact")
    name = _file(out, 0, "local_xy")
    _edit_npy(out, name, lambda a: a.__setitem__((SAMPLE_ROWS + 3, 1, 0), np.inf))
    Map.open(out, verify=False)  # sizes only: the first rows are sampled
    with pytest.raises(MapError, match=f"{name}: row {SAMPLE_ROWS + 3} holds NaN"):
        Map.open(out)  # a changed file is hashed, then read whole


def test_extras_of_another_shape_are_refused_naming_both_shapes(tmp_path, images):
    out = _two_segments(tmp_path, images)
    name = _file(out, 0, "local_xy")
    arr = np.load(out / name)  # (8, 4, 2) float32: the same dtype and size, another shape
    _replace_npy(out, name, arr.reshape(8, 2, 4))
    said = (
        f"{out}: {name} is float32 (8, 2, 4), the manifest says float32 (8, 4, 2); rebuild the map"
    )
    with pytest.raises(MapError, match=re.escape(said)):
        Map.open(out)


@pytest.mark.parametrize("kind", [".desc.", "local_features", ".meta."])
def test_a_file_that_does_not_parse_is_named(tmp_path, images, kind):
    out = _two_segments(tmp_path, images)
    name = _file(out, 1, kind)
    _restamp(out, name, b"this is no array and no database" * 40)
    said = "is not readable map metadata" if kind == ".meta." else "is unreadable"
    with pytest.raises(MapError, match=re.escape(f"{out}: {name} {said}")):
        Map.open(out)


def test_metadata_of_other_rows_is_refused_naming_both_ranges(tmp_path, images):
    out = _two_segments(tmp_path, images)
    name = _file(out, 1, ".meta.")
    with sqlite3.connect(out / name) as con:
        con.execute("DELETE FROM places WHERE id = 9")
    _restamp(out, name, (out / name).read_bytes())
    said = f"{out}: {name} has 3 rows (ids 8..11) that do not match the manifest's 4 (ids 8..11)"
    with pytest.raises(MapError, match=re.escape(said)):
        Map.open(out)


def test_a_manifest_without_its_optional_fields_opens_as_float32_without_extras(
    tmp_path, images, engine
):
    """``dtype`` and ``extras`` (top level and per segment) may be absent: float32, none."""
    out = tmp_path / "map"
    build_map(engine, images, out)
    man = json.loads((out / "manifest.json").read_text())
    man.pop("dtype")
    man.pop("extras")
    for seg in man["segments"]:
        seg.pop("extras", None)
    (out / "manifest.json").write_text(json.dumps(man))
    m = Map.open(out)
    assert m.descriptors.dtype == np.float32 and m.extras == [] and len(m) == 12


def test_a_map_replaced_at_every_attempt_says_so(monkeypatch, tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    monkeypatch.setattr(reader.time, "sleep", lambda s: None)
    attempts = []

    def swapped(*args):
        attempts.append(args)
        raise FileNotFoundError(out / "seg-000000.desc.npy")

    monkeypatch.setattr(reader, "_load", swapped)
    with pytest.raises(
        MapError, match=f"replaced {reader.OPEN_ATTEMPTS} times while it was opened"
    ):
        Map.open(out)
    assert len(attempts) == reader.OPEN_ATTEMPTS  # read again each time, then given up

    def incomplete(*args):
        raise MissingFile(f"{out}: descriptors seg-000000.desc.npy is missing")

    monkeypatch.setattr(reader, "_load", incomplete)
    with pytest.raises(MapError, match=r"desc.npy is missing$"):
        Map.open(out)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m["model"]["info"].__setitem__("descriptor_dim", "48"), "does not parse"),
        (lambda m: m["model"].pop("info"), "records no model description"),
    ],
)
def test_a_manifest_model_record_that_does_not_parse_is_refused(
    tmp_path, images, engine, edit, message
):
    """No falling back to comparing the top-level fingerprint alone."""
    out = tmp_path / "map"
    build_map(engine, images, out)
    man = json.loads((out / "manifest.json").read_text())
    edit(man)
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MapError, match=message):  # what Localizer checks before answering
        check_map_model(Map.open(out).manifest["model"], engine.info, str(out))


# --- the hnswlib graph ---------------------------------------------------------------------


def _hnsw_map(tmp_path: Path, images: Path, engine) -> tuple[Path, bytearray, tuple]:
    out = tmp_path / "map"
    build_map(engine, images, out, index="hnsw")
    data = bytearray((out / "index.bin").read_bytes())
    return out, data, HEADER.unpack_from(data, 0)


def _verify_cli(out: Path, command: str = "verify") -> subprocess.CompletedProcess:
    """``map verify`` in its own process: a crash inside hnswlib would be a signal there."""
    code = "from sfrs_edge.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "map", command, str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _level0(header: tuple, element: int) -> int:
    return HEADER.size + element * header[3]


@pytest.mark.parametrize(
    "case",
    ["link id past the end", "link count over maxM0", "upper-level size", "label", "vector"],
)
def test_crafted_hnsw_links_are_refused_by_verify(tmp_path, images, engine, case):
    out, data, head = _hnsw_map(tmp_path, images, engine)
    count, per_el, maxm0 = head[2], head[3], head[9]
    assert _verify_cli(out).returncode == 0
    at = _level0(head, 3)
    if case == "link id past the end":
        struct.pack_into("<H", data, at, 1)
        struct.pack_into("<I", data, at + 4, 10**6)
    elif case == "link count over maxM0":
        struct.pack_into("<H", data, at, maxm0 + 40)
    elif case == "upper-level size":
        struct.pack_into("<I", data, HEADER.size + count * per_el, 12345)
    elif case == "label":
        struct.pack_into("<Q", data, at + per_el - 8, 10**9)
    else:
        struct.pack_into("<f", data, at + 4 + 4 * maxm0, np.inf)
    _restamp(out, "index.bin", bytes(data))
    for command in ("verify", "info"):  # info opens it as localize does: a changed file is read
        r = _verify_cli(out, command)
        assert r.returncode == 1, (command, r.returncode, r.stderr[-400:])
        assert "index graph is corrupt" in r.stderr or "index vectors: row 3 holds NaN" in r.stderr
