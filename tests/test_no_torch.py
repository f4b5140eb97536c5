"""The runtime never imports torch, train or export (DESIGN.md §1), and works without them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, json, pkgutil, sys
import sfrs_edge
names = sorted(m.name for m in pkgutil.walk_packages(sfrs_edge.__path__, "sfrs_edge."))
for name in names:
    importlib.import_module(name)
from sfrs_edge import Engine, Localizer, Map  # the lazy public names
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "train", "export"))
print(json.dumps({"modules": names, "forbidden": loaded}))
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_importing_the_runtime_loads_no_torch():
    proc = _run(IMPORT_ALL)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for required in (
        "sfrs_edge.engine",
        "sfrs_edge.localize",
        "sfrs_edge.maps",
        "sfrs_edge.cli",
        "sfrs_edge.cli.localize",
        "sfrs_edge.datasets",
    ):
        assert required in out["modules"]
    assert out["forbidden"] == []


BLOCKED = """
import sys
for name in ("torch", "train", "export"):
    sys.modules[name] = None  # any import of them now raises ImportError
from click.testing import CliRunner
from sfrs_edge.cli import main
res = CliRunner().invoke(main, ["localize", *sys.argv[1:], "--json", "--timings"])
print(res.output)
sys.exit(res.exit_code)
"""


def test_localize_runs_with_torch_unavailable(tiny_onnx, gardens_point, tmp_path):
    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import build_map

    files = [gardens_point / "day_left" / f"Image{i:03d}.jpg" for i in range(0, 60, 10)]
    build_map(Engine.open(tiny_onnx), files, tmp_path / "map")
    frame = gardens_point / "day_right" / "Image030.jpg"
    proc = _run(BLOCKED, str(frame), "--model", str(tiny_onnx), "--map", str(tmp_path / "map"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["matches"][0]["name"].startswith("Image0")
    assert result["timings"]["inference"] > 0
