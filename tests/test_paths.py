"""One ``data_root()`` rule for the CLI, the benchmarks and the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sfrs_edge import paths

REPO = Path(__file__).resolve().parents[1]


def test_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("SFRS_EDGE_DATA", str(tmp_path / "mine"))
    assert paths.data_root() == (tmp_path / "mine").resolve()


def test_checkout_then_working_folder_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("SFRS_EDGE_DATA", raising=False)
    monkeypatch.setenv("SFRS_EDGE_HOME", str(tmp_path / "home"))
    beside_checkout = REPO.parent / "shared" / "datasets"
    monkeypatch.chdir(tmp_path)
    if beside_checkout.is_dir():
        assert paths.data_root() == beside_checkout.resolve()
    monkeypatch.setattr(paths, "checkout", lambda: None)  # as an installed wheel
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert paths.data_root() == (tmp_path / "home" / "datasets").resolve()
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    assert paths.data_root() == (tmp_path / "shared" / "datasets").resolve()


def test_benchmarks_and_tests_use_the_same_rule():
    from benchmarks.common import data_root as bench_root
    from tests.conftest import data_root as test_root

    assert bench_root() == test_root() == paths.data_root()


def test_demo_finds_data_from_another_working_folder(gardens_point, tmp_path):
    """The demo's lookup (datasets.gardens_point without download) run from an unrelated
    folder, with no SFRS_EDGE_DATA, finds the data already on disk: no download."""
    if gardens_point.parent != (REPO.parent / "shared" / "datasets").resolve():
        import pytest

        pytest.skip("data found through SFRS_EDGE_DATA, not beside the checkout")
    env = {k: v for k, v in os.environ.items() if k != "SFRS_EDGE_DATA"}
    env["SFRS_EDGE_HOME"] = str(tmp_path / "home")
    code = "from sfrs_edge.datasets import gardens_point; print(gardens_point(download=False))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == gardens_point
    assert not (tmp_path / "home" / "datasets").exists()
