"""Reading weight files: ``torch.load`` made safe and readable, and state-dict plumbing.

A leaf module (imports nothing else of ``train``): backbones, importers and checkpoints all
read files through it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sfrs_edge.errors import ModelError

VGG16_LAST_INDEX = 28  # conv5_3, before its ReLU


def torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with errors that name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such {what} file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, expected a {what} file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: {what} file is empty (0 bytes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/truncated/pickled files
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(
            f"{path}: not a readable {what} (corrupt, truncated or unsafe pickle: {msg})"
        ) from exc


def unwrap_state_dict(obj: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` and strip DataParallel's ``module.`` prefixes."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ModelError(f"{path}: not a {what} state dict (got {type(obj).__name__})")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    if not out:
        raise ModelError(f"{path}: {what} file holds no tensors")
    return out


def check_shapes(
    got: Mapping[str, torch.Tensor],
    want: Mapping[str, torch.Tensor],
    path: Path,
    what: str,
    names: Mapping[str, str] | None = None,
) -> None:
    """Missing keys and shape mismatches, named as the file names them (``names``: ours→file)."""
    names = names or {}
    missing = [names.get(k, k) for k in want if k not in got]
    if missing:
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise ModelError(f"{path}: not {what}: missing keys {missing[:6]}{more}")
    bad = [
        f"{names.get(k, k)} {tuple(got[k].shape)} (expected {tuple(want[k].shape)})"
        for k in want
        if tuple(got[k].shape) != tuple(want[k].shape)
    ]
    if bad:
        raise ModelError(f"{path}: not {what}: shape mismatch in {'; '.join(bad[:4])}")


def vgg16_features(
    state: Mapping[str, torch.Tensor], prefix: str, to: str = "features."
) -> dict[str, torch.Tensor]:
    """``{prefix}N.weight`` (N <= 28, up to conv5_3) → ``{to}N.weight``."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        index, _, name = key[len(prefix) :].partition(".")
        if index.isdigit() and int(index) <= VGG16_LAST_INDEX:
            out[f"{to}{index}.{name}"] = value
    return out
