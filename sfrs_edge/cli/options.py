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


def _allow_unverified(ctx: click.Context, param, value: bool) -> None:
    """Set for this command only: every model it opens may lack a content digest."""
    if not value:
        return
    import os

    from ..model_digest import ALLOW_UNVERIFIED_ENV

    before = os.environ.get(ALLOW_UNVERIFIED_ENV)
    os.environ[ALLOW_UNVERIFIED_ENV] = "1"

    def restore() -> None:
        if before is None:
            os.environ.pop(ALLOW_UNVERIFIED_ENV, None)
        else:
            os.environ[ALLOW_UNVERIFIED_ENV] = before

    ctx.call_on_close(restore)


def model_option(func):
    """``--model PATH`` and ``--allow-unverified-model`` (accept a model without a digest)."""
    func = click.option(
        "--allow-unverified-model",
        is_flag=True,
        expose_value=False,
        callback=_allow_unverified,
        help="Accept a model without a content digest (refused otherwise): only for a model "
        "you know.",
    )(func)
    return click.option(
        "--model",
        "model_path",
        type=click.Path(path_type=Path),
        default=None,
        help="Exported model (.onnx or .engine) [default: $SFRS_EDGE_HOME/model.onnx].",
    )(func)


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
