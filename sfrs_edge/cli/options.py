"""Small click parameter types shared by commands."""

from __future__ import annotations

from pathlib import Path

import click


class PcaDim(click.ParamType):
    """An integer PCA dimension or ``none``."""

    name = "N|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).lower() in ("none", "0", "off"):
            return None
        try:
            dim = int(value)
        except ValueError:
            self.fail(f"{value!r} is not an integer or 'none'", param, ctx)
        if dim < 1:
            self.fail(f"PCA dimension must be positive, got {dim}", param, ctx)
        return dim


class InputSize(click.ParamType):
    """``HxW`` such as ``480x640``."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        try:
            h, w = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not HxW (for example 480x640)", param, ctx)
        if h < 32 or w < 32:
            self.fail(f"input size {h}x{w} is too small (at least 32x32)", param, ctx)
        return (h, w)


def threads_option(func):
    """``--threads N``: every CPU pool the command starts (onnxruntime, BLAS, decoding, torch)."""
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for every pool (inference, BLAS search, image decoding) "
        "[default: the machine's physical cores].",
    )(func)


model_option = click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Exported model (.onnx or .engine) [default: $SFRS_EDGE_HOME/model.onnx].",
)
map_option = click.option(
    "--map",
    "map_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Map directory [default: $SFRS_EDGE_HOME/map].",
)
backend_option = click.option(
    "--backend",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]),
    default="auto",
    show_default=True,
    help="Inference backend.",
)
