"""Import weights published elsewhere: torchvision's VGG16 and the SFRS authors' OpenIBL model.

Neither file can be downloaded by sfrs-edge; users pass the file they have. Both loaders accept
a bare state dict or one wrapped as ``{'state_dict': ...}``, with or without DataParallel's
``module.`` prefix, and name the file and the keys that are missing or mismatched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from sfrs_edge.errors import ModelError

from .backbones import VGG16
from .checkpoint import torch_load
from .model import ModelConfig, SFRSNet

VGG16_LAST_INDEX = 28  # conv5_3, before its ReLU
# Prefixes of the VGG16 layers in OpenIBL state dicts: EmbedNetPCA.base_model.base, or bare.
OPENIBL_BASE_PREFIXES = ("base_model.base.", "base.")
OPENIBL_INPUT_SIZE = (480, 640)


def _state_dict(obj: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` and strip ``module.`` prefixes."""
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


def _check_shapes(
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


def _vgg_features(
    state: Mapping[str, torch.Tensor], prefix: str, to: str = "features."
) -> dict[str, torch.Tensor]:
    """``{prefix}N.weight`` (N <= 28) → ``{to}N.weight``."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        index, _, name = key[len(prefix) :].partition(".")
        if index.isdigit() and int(index) <= VGG16_LAST_INDEX:
            out[f"{to}{index}.{name}"] = value
    return out


@torch.no_grad()
def load_torchvision_vgg16(backbone: VGG16, path: str | os.PathLike) -> None:
    """Load torchvision's VGG16 ImageNet state dict (``features.N.*``; classifier ignored)."""
    path = Path(path)
    what = "torchvision VGG16 weights"
    state = _vgg_features(_state_dict(torch_load(path, what), path, what), "features.")
    want = backbone.state_dict()
    _check_shapes(state, want, path, what)
    backbone.load_state_dict({k: state[k].float() for k in want}, strict=True)


@torch.no_grad()
def import_openibl_sfrs(path: str | os.PathLike) -> SFRSNet:
    """Build an :class:`SFRSNet` from the SFRS authors' ``vgg16_netvlad.pth`` (OpenIBL).

    Keys: VGG16 layers 0..28 under ``base_model.base.`` or ``base.``, ``net_vlad.conv.weight``
    (K×512×1×1), ``net_vlad.centroids`` (K×512), ``pca_layer.weight`` (P×K·512×1×1) and
    ``pca_layer.bias`` (P). OpenIBL's VGG16 preprocessing equals ours; input 480×640.
    """
    path = Path(path)
    what = "an OpenIBL SFRS/NetVLAD model"
    state = _state_dict(torch_load(path, "OpenIBL model"), path, what)
    prefix = next((p for p in OPENIBL_BASE_PREFIXES if f"{p}0.weight" in state), None)
    if prefix is None:
        raise ModelError(
            f"{path}: not {what}: no VGG16 layers under {' or '.join(OPENIBL_BASE_PREFIXES)} "
            f"(first keys: {list(state)[:4]})"
        )
    for key in ("net_vlad.conv.weight", "net_vlad.centroids"):
        if key not in state:
            raise ModelError(f"{path}: not {what}: missing key {key!r}")
    k, d = state["net_vlad.centroids"].shape[:2]
    pca_w, pca_b = state.get("pca_layer.weight"), state.get("pca_layer.bias")
    if (pca_w is None) != (pca_b is None):
        raise ModelError(f"{path}: has only one of pca_layer.weight / pca_layer.bias")
    pca_dim = int(pca_w.shape[0]) if pca_w is not None else None
    h, w = OPENIBL_INPUT_SIZE
    net = SFRSNet(ModelConfig("vgg16", k, h, w, pca_dim=pca_dim, whiten=True))
    want = net.state_dict()
    names = {k: prefix + k[len("backbone.features.") :] for k in want if k.startswith("backbone.")}
    names.update({"netvlad.conv.weight": "net_vlad.conv.weight"})
    names.update({"netvlad.centroids": "net_vlad.centroids"})
    names.update({"pca.linear.weight": "pca_layer.weight", "pca.linear.bias": "pca_layer.bias"})
    mapped = _vgg_features(state, prefix, to="backbone.features.")
    mapped["netvlad.conv.weight"] = state["net_vlad.conv.weight"]
    mapped["netvlad.centroids"] = state["net_vlad.centroids"]
    if pca_w is not None:
        if pca_w.dim() == 4 and tuple(pca_w.shape[2:]) == (1, 1):
            pca_w = pca_w[:, :, 0, 0]
        mapped["pca.linear.weight"] = pca_w
        mapped["pca.linear.bias"] = pca_b
    _check_shapes(mapped, want, path, what, names)
    net.load_state_dict({key: mapped[key].float() for key in want}, strict=True)
    return net.eval()
