"""Output conventions: ``--json`` on commands with a result; progress lines off a terminal."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.progress import progress, reporter


def test_progress_off_a_terminal_prints_about_every_ten_percent(capsys):
    with progress("embedding", unit="images") as report:
        for i in range(1, 101):
            report(i, 100)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "embedding: 1/100 images" and lines[-1] == "embedding: 100/100 images"
    assert 10 <= len(lines) <= 12
    call = reporter("dl", unit="bytes")
    call(3 << 20, 6 << 20)
    assert capsys.readouterr().err.strip() == "dl: 3.0 MiB/6.0 MiB"


def test_progress_can_be_silenced(capsys):
    with progress("x", enabled=False) as report:
        report(1, 2)
    assert capsys.readouterr().err == ""


def test_map_build_add_remove_json(tiny_onnx, gardens_point, tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(6):
        (src / f"Image{i:03d}.jpg").write_bytes(
            (gardens_point / "day_left" / f"Image{i:03d}.jpg").read_bytes()
        )
    run = CliRunner().invoke
    m = str(tmp_path / "map")
    r = run(main, ["map", "build", str(src), "--model", str(tiny_onnx), "-o", m, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d["images"] == 6 and d["map"] == m and d["index"] == "exact"
    extra = gardens_point / "day_left" / "Image010.jpg"
    r = run(main, ["map", "add", m, str(extra), "--model", str(tiny_onnx), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"map": m, "added": 1, "images": 7}
    r = run(main, ["map", "remove", m, "Image010.jpg", "--json"])
    assert json.loads(r.stdout.strip()) == {"map": m, "removed": 1, "images": 6}


@pytest.mark.slow
def test_init_reports_progress_over_both_passes(gardens_point):
    pytest.importorskip("torch")
    from sfrs_edge.train.config import InitConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    from sfrs_edge.images import list_images

    images = list_images(gardens_point / "day_right")[:12]
    model = ModelConfig(num_clusters=4, input_height=64, input_width=96, pca_dim=3)
    cfg = InitConfig(model=model, batch_size=4)
    seen = []
    build_offtheshelf(images, cfg, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (24, 24)  # 12 images for k-means, then 12 for PCA
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_evaluate_without_ground_truth_is_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path), "--map", str(tmp_path / "m")])
    assert r.exit_code == 1
    assert r.output.strip().startswith("error: ground truth:") and "--window" in r.output
    assert len(r.output.strip().splitlines()) == 1
