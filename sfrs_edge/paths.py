"""Where things live by default: the working home of the main job and the real datasets."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Default folder for the main job's artifacts (``$SFRS_EDGE_HOME`` or ``~/.sfrs-edge``)."""
    return Path(os.environ.get("SFRS_EDGE_HOME", Path.home() / ".sfrs-edge")).expanduser()


def default_checkpoint() -> Path:
    return home() / "checkpoint.pt"


def default_model(precision: str = "fp32") -> Path:
    """``model.onnx`` (FP32, what commands use by default), or ``model-fp16.onnx`` /
    ``model-int8.onnx``: one default name per precision, so exporting another precision never
    replaces the FP32 model a map was built with."""
    return home() / ("model.onnx" if precision == "fp32" else f"model-{precision}.onnx")


def default_map() -> Path:
    return home() / "map"


def checkout() -> Path | None:
    """The repository this package runs from (an editable install or a source tree), or None
    for an installed wheel."""
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "pyproject.toml").is_file() else None


def data_root() -> Path:
    """The folder holding the real datasets (``gardens_point/``, ``corridor/``, ...).

    One rule, used by the CLI, the benchmarks and the tests, first match wins:

    1. ``$SFRS_EDGE_DATA`` when set (even if it does not exist: an explicit choice is honoured);
    2. ``<checkout>/../shared/datasets`` when running from a source checkout and it exists;
    3. ``./../shared/datasets`` relative to the working folder when it exists;
    4. ``$SFRS_EDGE_HOME/datasets`` (where downloads go).

    So ``sfrs-edge demo`` finds data already on disk from any working folder.
    """
    env = os.environ.get("SFRS_EDGE_DATA")
    if env:
        return Path(env).expanduser().resolve()
    repo = checkout()
    beside = [repo.parent / "shared" / "datasets"] if repo is not None else []
    for folder in [*beside, Path.cwd().parent / "shared" / "datasets"]:
        if folder.is_dir():
            return folder.resolve()
    return (home() / "datasets").resolve()
