"""Where things live by default: the working home of the main job and the real datasets."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Default folder for the main job's artifacts (``$SFRS_EDGE_HOME`` or ``~/.sfrs-edge``)."""
    return Path(os.environ.get("SFRS_EDGE_HOME", Path.home() / ".sfrs-edge")).expanduser()


def default_checkpoint() -> Path:
    return home() / "checkpoint.pt"


def default_model() -> Path:
    return home() / "model.onnx"


def default_map() -> Path:
    return home() / "map"


def data_root() -> Path:
    """Real datasets (``$SFRS_EDGE_DATA``, else ``../shared/datasets`` from the current folder)."""
    return Path(os.environ.get("SFRS_EDGE_DATA", "../shared/datasets")).expanduser().resolve()
