"""Checkpoints: plain dicts of config, weights and provenance, loadable with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from sfrs_edge.atomic import atomic_file
from sfrs_edge.errors import ConfigError, ModelError

from .model import ModelConfig, SFRSNet
from .weight_files import torch_load

CHECKPOINT_FORMAT = "sfrs-edge-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    net: SFRSNet, path: str | os.PathLike, provenance: dict | None = None, extra: dict | None = None
) -> Path:
    """Write a checkpoint atomically (temp file + fsync + rename)."""
    path = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "provenance": dict(provenance or {}),
    }
    if extra:
        payload.update(extra)
    with atomic_file(path) as f:
        torch.save(payload, f)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a checkpoint dict (without building the network)."""
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(
            f"{path}: not an sfrs-edge checkpoint (no 'format': '{CHECKPOINT_FORMAT}'); "
            "import other weights with `sfrs-edge import`"
        )
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format version {ckpt.get('format_version')} is not "
            f"supported (expects {CHECKPOINT_VERSION})"
        )
    for key in ("config", "state_dict"):
        if key not in ckpt:
            raise ModelError(f"{path}: checkpoint has no '{key}'")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> tuple[SFRSNet, dict[str, Any]]:
    """Build the network from a checkpoint; returns (net in eval mode, provenance)."""
    ckpt = read_checkpoint(path)
    try:
        config = ModelConfig(**ckpt["config"])
    except (TypeError, ConfigError) as exc:
        raise ModelError(f"{path}: checkpoint config is invalid ({exc})") from exc
    net = SFRSNet(config)
    state = ckpt["state_dict"]
    if config.pca_dim and "pca.linear.weight" not in state:
        raise ModelError(
            f"{path}: config says pca_dim={config.pca_dim} but weights have no PCA layer"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"{path}: weights do not match the config ({str(exc).splitlines()[0]})"
        ) from exc
    net.eval()
    return net, dict(ckpt.get("provenance", {}))
