"""Import a whole model published elsewhere: the SFRS authors' OpenIBL model.

The file cannot be downloaded by sfrs-edge; users pass the file they have. The loader accepts
a bare state dict or one wrapped as ``{'state_dict': ...}``, with or without DataParallel's
``module.`` prefix, and names the file and the keys that are missing or mismatched. Backbone
ImageNet weights (torchvision's VGG16, Lite0's) load with the backbone's ``load_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sfrs_edge.errors import ModelError

from .model import ModelConfig, SFRSNet
from .weight_files import check_shapes, torch_load, unwrap_state_dict, vgg16_features

# Prefixes of the VGG16 layers in OpenIBL state dicts: EmbedNetPCA.base_model.base, or bare.
OPENIBL_BASE_PREFIXES = ("base_model.base.", "base.")
OPENIBL_INPUT_SIZE = (480, 640)


@torch.no_grad()
def import_openibl_sfrs(path: str | os.PathLike) -> SFRSNet:
    """Build an :class:`SFRSNet` from the SFRS authors' ``vgg16_netvlad.pth`` (OpenIBL).

    Keys: VGG16 layers 0..28 under ``base_model.base.`` or ``base.``, ``net_vlad.conv.weight``
    (K×512×1×1), ``net_vlad.centroids`` (K×512), ``pca_layer.weight`` (P×K·512×1×1) and
    ``pca_layer.bias`` (P). OpenIBL's VGG16 preprocessing equals ours; input 480×640.
    """
    path = Path(path)
    what = "an OpenIBL SFRS/NetVLAD model"
    state = unwrap_state_dict(torch_load(path, "OpenIBL model"), path, what)
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
    mapped = vgg16_features(state, prefix, to="backbone.features.")
    mapped["netvlad.conv.weight"] = state["net_vlad.conv.weight"]
    mapped["netvlad.centroids"] = state["net_vlad.centroids"]
    if pca_w is not None:
        if pca_w.dim() == 4 and tuple(pca_w.shape[2:]) == (1, 1):
            pca_w = pca_w[:, :, 0, 0]
        mapped["pca.linear.weight"] = pca_w
        mapped["pca.linear.bias"] = pca_b
    check_shapes(mapped, want, path, what, names)
    net.load_state_dict({key: mapped[key].float() for key in want}, strict=True)
    return net.eval()
