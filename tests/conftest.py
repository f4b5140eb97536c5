"""Shared fixtures: real datasets (skipped clearly when absent) and tiny models built on them."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Under mutmut (which sets MUTANT_UNDER_TEST) this file runs from its copy in mutants/, where
# the package is the copied sfrs_edge/ folder: pyproject's package-dir mapping of the
# top-level train/ and export/ folders (copied there by `also_copy`) does not exist.
MUTMUT = "MUTANT_UNDER_TEST" in os.environ
# What mutmut names its runs without a mutant (stats, the clean run, test listing).
MUTMUT_CLEAN_RUNS = {"", "stats", "mutant_generation", "list_all_tests"}


class _PackageDirs(importlib.abc.MetaPathFinder):
    """``sfrs_edge.train`` and ``sfrs_edge.export`` from the copied train/ and export/, as
    pyproject's ``[tool.setuptools.package-dir]`` installs them."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in ("sfrs_edge.train", "sfrs_edge.export"):
            return None
        folder = REPO / fullname.rpartition(".")[2]
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )


if MUTMUT and (REPO / "train").is_dir():
    sys.meta_path.insert(0, _PackageDirs())
    # The data beside the real checkout (mutants/ is one level below it).
    _data = REPO.parent.parent / "shared" / "datasets"
    if "SFRS_EDGE_DATA" not in os.environ and _data.is_dir():
        os.environ["SFRS_EDGE_DATA"] = str(_data)

from sfrs_edge import paths  # noqa: E402


def data_root() -> Path:
    """The real datasets: :func:`sfrs_edge.paths.data_root` (one rule for CLI, benchmarks, tests)."""
    return paths.data_root()


def _dataset(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {path} (set SFRS_EDGE_DATA to its parent)")
    return path


@pytest.fixture(scope="session")
def gardens_point() -> Path:
    """``gardens_point/`` with day_left, day_right, night_right (200 images each)."""
    return _dataset("gardens_point")


@pytest.fixture(scope="session")
def corridor() -> Path:
    """``corridor/`` with query/ and ref/ (111 tiny images each)."""
    return _dataset("corridor")


# What a test may never write: the user's home, $SFRS_EDGE_HOME and caches. Read once, at
# import (before any fixture runs), so tests can check that their writes went elsewhere.
USER_PLACES = {name: os.environ.get(name) for name in ("HOME", "SFRS_EDGE_HOME", "XDG_CACHE_HOME")}
ISOLATED = ("HOME", "SFRS_EDGE_HOME", "XDG_CACHE_HOME", "SFRS_EDGE_CACHE", "XDG_CONFIG_HOME")


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory):
    """HOME, $SFRS_EDGE_HOME and the caches point into the session's temporary folder for the
    whole run, session fixtures included (they run before any function-scoped fixture).

    Kept from the user's environment: where the real datasets are (found through the real
    home when it holds them) and pip's own configuration and cache (venv tests install
    packages), which are pip's, not sfrs-edge's."""
    real_data = paths.data_root()
    keep_data = "SFRS_EDGE_DATA" not in os.environ and real_data == paths.home() / "datasets"
    pip_config = Path.home() / ".config" / "pip" / "pip.conf"
    pip_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip"
    root = tmp_path_factory.mktemp("isolated")
    with pytest.MonkeyPatch.context() as mp:
        if keep_data:  # found through the real home, which is about to be hidden
            mp.setenv("SFRS_EDGE_DATA", str(real_data))
        if "PIP_CONFIG_FILE" not in os.environ and pip_config.is_file():
            mp.setenv("PIP_CONFIG_FILE", str(pip_config))
        mp.setenv("PIP_CACHE_DIR", os.environ.get("PIP_CACHE_DIR") or str(pip_cache))
        for name in ISOLATED:
            mp.setenv(name, str(root / name.lower()))
        mp.delenv("SFRS_EDGE_VERIFY", raising=False)
        yield root


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Each test gets its own $SFRS_EDGE_HOME and verification cache (no test sees another's
    artifacts or verified files)."""
    monkeypatch.setenv("SFRS_EDGE_HOME", str(tmp_path / "sfrs-edge-home"))
    monkeypatch.setenv("SFRS_EDGE_CACHE", str(tmp_path / "sfrs-edge-cache"))


@pytest.fixture(autouse=True)
def _no_internet(monkeypatch):
    """Tests never download from outside this machine: urllib may only reach 127.0.0.1
    (the tests' own servers) and file:// URLs; anything else fails like an offline machine."""
    import urllib.error
    import urllib.parse
    import urllib.request

    real = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        full = url.full_url if isinstance(url, urllib.request.Request) else str(url)
        parts = urllib.parse.urlsplit(full)
        if parts.scheme != "file" and parts.hostname not in ("127.0.0.1", "localhost"):
            raise urllib.error.URLError("network disabled in tests")
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``build(path)`` writes a test model to a fresh temporary ``path``, which is returned.

    Under mutmut the model built by a run without a mutant is kept in mutants/ and reused by
    every mutant's run (each is a fresh pytest session; rebuilding costs 5 to 20 s a mutant).
    A run with a mutant active never writes the kept copy: its model could be wrong."""
    kept = REPO / ".mutmut-models" / name
    if MUTMUT and kept.is_file():
        return kept
    out = tmp_path_factory.mktemp(Path(name).stem) / name
    build(out)
    if MUTMUT and os.environ["MUTANT_UNDER_TEST"] in MUTMUT_CLEAN_RUNS:
        kept.parent.mkdir(exist_ok=True)
        part = kept.with_name(kept.name + ".part")
        shutil.copyfile(out, part)
        part.replace(kept)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, gardens_point) -> Path:
    """A small real off-the-shelf Lite0 model (96x160 input, 8 clusters, 16-d whitening)
    fitted on 40 Gardens Point day_right images; seconds to build on a 2-core CPU."""
    pytest.importorskip("torch")
    return built_once(tmp_path_factory, "tiny.pt", lambda path: _build_tiny(path, gardens_point))


def _build_tiny(path: Path, gardens_point: Path) -> None:
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.config import InitConfig, KMeansConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    from sfrs_edge.images import list_images

    images = list_images(gardens_point / "day_right")[::5]
    model = ModelConfig("efficientnet_lite0", 8, input_height=96, input_width=160, pca_dim=16)
    cfg = InitConfig(model=model, kmeans=KMeansConfig(descriptors_per_image=10))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, prov = build_offtheshelf(images, cfg)
    save_checkpoint(net, path, prov)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint, gardens_point) -> Path:
    """``tiny_checkpoint`` exported to ONNX (fp32, verified against torch on 4 real images)."""
    pytest.importorskip("torch")
    from sfrs_edge.images import list_images

    try:
        from sfrs_edge.export import export_checkpoint
    except ImportError:
        pytest.skip("export package not available")
    images = list_images(gardens_point / "day_left")[:4]
    return built_once(
        tmp_path_factory,
        "tiny.onnx",
        lambda out: export_checkpoint(tiny_checkpoint, out, verify_images=images),
    )
