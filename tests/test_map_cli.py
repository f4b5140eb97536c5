"""`sfrs-edge map build | add | remove | info` with a real exported model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.maps import Map


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture
def src(tmp_path, gardens_point) -> Path:
    """16 real day_left images (every 4th of the first 64)."""
    folder = tmp_path / "src"
    folder.mkdir()
    for i in range(0, 64, 4):
        shutil.copy(gardens_point / "day_left" / f"Image{i:03d}.jpg", folder)
    return folder


@pytest.fixture
def poses(tmp_path, src) -> Path:
    p = tmp_path / "poses.csv"
    rows = [f"{f.name},{int(f.stem[5:])},0,{i * 5}" for i, f in enumerate(sorted(src.iterdir()))]
    p.write_text("name,x,y,heading\n" + "\n".join(rows) + "\n")
    return p


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not [
        p
        for p in out.parent.iterdir()
        if p.name.startswith(f".{out.name}.") and "lock" not in p.name
    ]


@pytest.mark.slow
def test_build_info_add_remove(tmp_path, tiny_onnx, src, poses, gardens_point):
    out = tmp_path / "map"
    r = run("map", "build", src, "--poses", poses, "--model", tiny_onnx, "-o", out)
    assert r.exit_code == 0, r.output
    assert "16 images" in r.output and "exact index" in r.output and "16 with positions" in r.output
    m = Map.open(out)
    p = m.places([2])[0]
    assert p.name == "Image008.jpg" and p.position == (8.0, 0.0) and p.heading == 10.0

    from sfrs_edge.engine import Engine

    engine = Engine.open(tiny_onnx)
    assert m.fingerprint == engine.fingerprint and m.dim == engine.dim
    np.testing.assert_allclose(m.descriptors, engine.embed_files(sorted(src.iterdir())), atol=1e-6)

    r = run("map", "info", out)
    assert r.exit_code == 0, r.output
    size = sum(f.stat().st_size for f in out.iterdir())
    for text in (
        "images:      16",
        f"{engine.dim}-d float32",
        engine.fingerprint,
        "efficientnet_lite0",
        "input 96x160",
        "index:       exact",
        "positions:   16 of 16 (xy, from csv:poses.csv)",
        "1 segment(s), all 16 rows searched exactly",
        "checksums:   ok",
    ):
        assert text in r.output, (text, r.output)
    info = json.loads(run("map", "info", out, "--json").output)
    assert info["size_bytes"] == size and info["count"] == 16

    extra = [gardens_point / "day_left" / f"Image{i:03d}.jpg" for i in (100, 101)]
    r = run("map", "add", out, *extra, "--model", tiny_onnx)
    assert r.exit_code == 0, r.output
    assert "added 2 images" in r.output and "now 18" in r.output
    m2 = Map.open(out)
    np.testing.assert_array_equal(m2.descriptors[:16], m.descriptors)
    assert m2.names[16:] == ["Image100.jpg", "Image101.jpg"]
    assert m2.places([16])[0].position is None  # no --poses for the added images

    r = run("map", "remove", out, "Image000.jpg", "Image100.jpg")
    assert r.exit_code == 0, r.output
    assert "removed 2 images" in r.output and "now 16" in r.output
    assert "Image000.jpg" not in Map.open(out).names

    r = run("map", "remove", out, "nope.jpg")
    assert r.exit_code == 1 and "no images named nope.jpg" in r.output


@pytest.mark.slow
def test_hnsw_build_and_default_paths(tmp_path, tiny_onnx, src):
    home = Path(tmp_path / "sfrs-edge-home")  # conftest points SFRS_EDGE_HOME here
    home.mkdir(exist_ok=True)
    shutil.copy(tiny_onnx, home / "model.onnx")
    r = run("map", "build", src, "--index", "hnsw", "--hnsw-m", "8", "--ef", "40")
    assert r.exit_code == 0, r.output
    assert (home / "map" / "index.bin").is_file()
    r = run("map", "info")
    assert r.exit_code == 0, r.output
    assert "index:       hnsw (M=8, ef_construction=200, ef=40, seed=100)" in r.output
    assert "16 rows in the HNSW graph\n" in r.output


@pytest.mark.slow
def test_build_errors_exit_1_and_leave_no_map(tmp_path, tiny_onnx, src, poses):
    out = tmp_path / "map"
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("map", "build", empty, "--model", tiny_onnx, "-o", out)
    assert r.exit_code == 1 and "no image files" in r.output and _nothing_written(out)

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(poses.read_text().replace(",0,10\n", ",zero,10\n"))
    r = run("map", "build", src, "--poses", bad_csv, "--model", tiny_onnx, "-o", out)
    assert r.exit_code == 1 and "line 4: y 'zero' is not a number" in r.output
    assert _nothing_written(out)

    (src / "Image999.jpg").write_bytes(b"")
    r = run("map", "build", src, "--model", tiny_onnx, "-o", out)
    assert r.exit_code == 1 and "Image999.jpg" in r.output and "empty" in r.output
    assert _nothing_written(out)

    r = run("map", "build", src, "--model", tiny_onnx, "-o", out, "--skip-bad-images")
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable" in r.output and "16 images" in r.output

    r = run("map", "build", src, "--model", tmp_path / "missing.onnx", "-o", tmp_path / "m2")
    assert r.exit_code == 1 and "missing.onnx" in r.output and _nothing_written(tmp_path / "m2")

    r = run("map", "info", tmp_path / "nowhere")
    assert r.exit_code == 1 and "no such map" in r.output


@pytest.mark.slow
def test_add_with_another_model_is_refused(tmp_path, tiny_onnx, src):
    """A map built by one model refuses images embedded by another (fingerprints named)."""
    from sfrs_edge.engine import Engine

    out = tmp_path / "map"
    assert run("map", "build", src, "--model", tiny_onnx, "-o", out).exit_code == 0
    man_path = out / "manifest.json"
    man = json.loads(man_path.read_text())
    man["model"]["fingerprint"] = "0000000000000000"  # as if another model had built it
    man_path.write_text(json.dumps(man))
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    r = run("map", "add", out, src / "Image000.jpg", "--model", tiny_onnx)
    assert r.exit_code == 1
    assert "0000000000000000" in r.output and Engine.open(tiny_onnx).fingerprint in r.output
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
