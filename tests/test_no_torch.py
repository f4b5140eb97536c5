"""The runtime never imports torch, train or export (docs/DESIGN.md §1), and works without them.

Two installs are checked. The editable one of this checkout, with torch blocked in a fresh
interpreter (fast). And the real thing a robot gets (slow): the wheel built from this checkout,
installed into a new virtual environment *without* system site-packages, so torch is not there
at all; there ``sfrs-edge localize`` must work and every command that needs torch must say in
one line which extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "train", "export", "sfrs_edge.train", "sfrs_edge.export")

IMPORT_ALL = (
    f"FORBIDDEN = {FORBIDDEN!r}\n"
    + """
import importlib, json, pkgutil, sys
import sfrs_edge
def walk(pkg):
    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
        if info.name in FORBIDDEN:  # installed inside sfrs_edge by a wheel: torch-side
            continue
        yield info.name
        if info.ispkg:
            yield from walk(importlib.import_module(info.name))
names = sorted(walk(sfrs_edge))
for name in names:
    importlib.import_module(name)
from sfrs_edge import Engine, Localizer, Map  # the lazy public names
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
print(json.dumps({"modules": names, "forbidden": loaded, "file": sfrs_edge.__file__}))
"""
)

BLOCK = f"""
import sys
for name in {FORBIDDEN!r}:
    sys.modules[name] = None  # any import of them now raises ImportError
"""

CLI = """
import sys
from sfrs_edge.cli import main
main(sys.argv[1:], prog_name="sfrs-edge")
"""


def _run(code: str, *args: str, python: str = sys.executable, cwd: Path = REPO, timeout=180):
    return subprocess.run(
        [python, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _check_runtime_imports(out: dict) -> None:
    for required in (
        "sfrs_edge.engine",
        "sfrs_edge.localize",
        "sfrs_edge.maps",
        "sfrs_edge.cli",
        "sfrs_edge.cli.localize",
        "sfrs_edge.datasets",
        "sfrs_edge.stream.sequence",
        "sfrs_edge.video.mapping",
    ):
        assert required in out["modules"]
    assert out["forbidden"] == []


def test_importing_the_runtime_loads_no_torch():
    proc = _run(IMPORT_ALL)
    assert proc.returncode == 0, proc.stderr
    _check_runtime_imports(json.loads(proc.stdout.strip().splitlines()[-1]))


def _map_and_frame(tiny_onnx: Path, gardens_point: Path, tmp_path: Path) -> tuple[Path, Path]:
    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import build_map

    files = [gardens_point / "day_left" / f"Image{i:03d}.jpg" for i in range(0, 60, 10)]
    build_map(Engine.open(tiny_onnx), files, tmp_path / "map")
    return tmp_path / "map", gardens_point / "day_right" / "Image030.jpg"


def _check_localized(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["matches"][0]["name"].startswith("Image0")
    assert result["timings"]["inference"] > 0


def test_localize_runs_with_torch_unavailable(tiny_onnx, gardens_point, tmp_path):
    the_map, frame = _map_and_frame(tiny_onnx, gardens_point, tmp_path)
    args = ["localize", str(frame), "--model", str(tiny_onnx), "--map", str(the_map)]
    _check_localized(_run(BLOCK + CLI, *args, "--json", "--timings"))


# Each command that needs an extra, with arguments that get it past option parsing.
def torch_commands(tmp: Path) -> list[tuple[list[str], str, str]]:
    """(arguments, extra, the modules it needs that a runtime-only install lacks)."""
    return [
        (["init", "--images", str(tmp), "-o", str(tmp / "m.pt")], "train", "torch, scikit-learn"),
        (["export", str(tmp / "m.pt"), "-o", str(tmp / "m.onnx")], "export", "torch, onnx"),
        (["import", "--from", "openibl", str(tmp / "x.pth")], "train", "torch"),
        (
            ["train", "--dataset", "csv", "--data", str(tmp / "d.csv"), "-o", str(tmp / "run")],
            "train",
            "torch, scikit-learn",
        ),
        (["demo", "--no-download"], "train", "torch, onnx, scikit-learn"),
    ]


def _check_one_line(proc, command: str, extra: str, needs: str, tmp: Path) -> None:
    want = f"error: sfrs-edge {command} needs {needs}: pip install 'sfrs-edge[{extra}]'"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [want]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in tmp.iterdir()) == []  # nothing written


def test_torch_commands_name_their_extra_when_torch_is_blocked(tmp_path):
    for args, extra, _ in torch_commands(tmp_path):
        proc = _run(BLOCK + CLI, *args, cwd=tmp_path)
        # only torch is blocked here: scikit-learn and onnx are installed in this environment
        _check_one_line(proc, args[0], extra, "torch", tmp_path)


DECOY = 'raise ImportError("the decoy {name}.py in the working folder was imported")\n'


def _decoys(folder: Path) -> None:
    for name in ("train", "export"):
        (folder / f"{name}.py").write_text(DECOY.format(name=name))


def test_a_train_py_in_the_working_folder_does_not_shadow_the_package(tmp_path):
    pytest.importorskip("torch")
    _decoys(tmp_path)
    (tmp_path / "no_images").mkdir()
    code = """
import json, sys
try:
    import train
except ImportError as exc:
    decoy = str(exc)
from sfrs_edge.train.offtheshelf import build_offtheshelf
from sfrs_edge.train.trainer import Trainer
from sfrs_edge.export import export_model
from click.testing import CliRunner
from sfrs_edge.cli import main
res = CliRunner().invoke(main, ["init", "--images", "no_images"])
print(json.dumps({"decoy": decoy, "files": [m.__file__ for m in (
    sys.modules["sfrs_edge.train.offtheshelf"], sys.modules["sfrs_edge.export"])],
    "exit": res.exit_code, "output": res.output}))
"""
    proc = _run(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "decoy train.py" in out["decoy"]  # the working folder is on sys.path: a real threat
    assert all(tmp_path not in Path(f).parents for f in out["files"])
    # `init` reaches its own check of the folder (it imported sfrs_edge.train, not the decoy)
    assert out["exit"] == 1 and "no_images" in out["output"] and "decoy" not in out["output"]


# ----------------------------------------------------------------- the wheel, without torch


def _copy_source(dest: Path) -> Path:
    """The files a clean checkout has (no build/, egg-info or venv whose leftovers could
    slip into the wheel)."""
    skip = shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "*.onnx"
    )
    shutil.copytree(REPO, dest, ignore=skip)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout (``pip wheel --no-deps``)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _copy_source(tmp / "src")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), "."]
    proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp / "dist").glob("sfrs_edge-*.whl")
    return path


@pytest.fixture(scope="module")
def runtime_venv(wheel, tmp_path_factory) -> Path:
    """bin/ of a new virtual environment (no system site-packages) with only the wheel and its
    runtime dependencies (from the package index; pip's cache makes repeats fast)."""
    venv = tmp_path_factory.mktemp("venv") / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return venv / "bin"


@pytest.mark.slow
def test_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"sfrs_edge", wheel.name.split("-py")[0] + ".dist-info"}
    # train/ and export/ are inside, as sfrs_edge.train and sfrs_edge.export, and nothing else:
    # every module of the wheel is a file of this checkout (no stale build leftovers)
    modules = {n for n in names if n.endswith(".py")}
    installed_as = {
        "sfrs_edge": "sfrs_edge",
        "train": "sfrs_edge/train",
        "export": "sfrs_edge/export",
    }
    source = {
        f"{prefix}/{p.relative_to(REPO / folder).as_posix()}"
        for folder, prefix in installed_as.items()
        for p in (REPO / folder).rglob("*.py")
    }
    assert {"sfrs_edge/train/trainer.py", "sfrs_edge/export/pipeline.py"} <= modules
    missing, stale = sorted(source - modules), sorted(modules - source)
    assert not missing, f"not in the wheel (list the package in pyproject.toml): {missing}"
    assert not stale, f"in the wheel but not in the checkout: {stale}"
    # the version is written once (sfrs_edge/version.py) and the wheel's metadata reads it
    from sfrs_edge import __version__

    assert wheel.name.startswith(f"sfrs_edge-{__version__}-")


@pytest.mark.slow
def test_wheel_without_torch_localizes(runtime_venv, tiny_onnx, gardens_point, tmp_path):
    python = str(runtime_venv / "python")
    proc = _run("import torch", python=python)
    assert proc.returncode == 1 and "No module named 'torch'" in proc.stderr
    work = tmp_path / "work"
    work.mkdir()
    _decoys(work)  # a train.py and an export.py where the user runs the command
    proc = _run(IMPORT_ALL, python=python, cwd=work)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    _check_runtime_imports(out)
    assert Path(out["file"]).is_relative_to(runtime_venv.parent)  # the wheel, not this checkout
    the_map, frame = _map_and_frame(tiny_onnx, gardens_point, tmp_path)
    cmd = [str(runtime_venv / "sfrs-edge"), "localize", str(frame), "--model", str(tiny_onnx)]
    cmd += ["--map", str(the_map), "--json", "--timings"]
    env = {**os.environ, "SFRS_EDGE_HOME": str(tmp_path / "home")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=180, env=env)
    _check_localized(proc)
    assert time.perf_counter() - t0 < 120


@pytest.mark.slow
def test_wheel_without_torch_names_the_extra_for_every_torch_command(runtime_venv, tmp_path):
    env = {**os.environ, "SFRS_EDGE_HOME": str(tmp_path / "home")}
    work = tmp_path / "work"
    work.mkdir()
    for args, extra, needs in torch_commands(work):
        cmd = [str(runtime_venv / "sfrs-edge"), *args]
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120, env=env)
        _check_one_line(proc, args[0], extra, needs, work)
