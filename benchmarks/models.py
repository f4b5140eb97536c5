"""Models for the benchmarks: real off-the-shelf Lite0, random-weight VGG16, ONNX exports."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, data_root, log

CACHE = RESULTS / "cache"


def gp_images(n: int = 0, split: str = "day_right") -> list[Path]:
    """Gardens Point images (the first ``n``; all when 0)."""
    from sfrs_edge.images import list_images

    return list_images(data_root() / "gardens_point" / split)[: n or None]


def quick_offtheshelf(input_size: tuple[int, int] = (180, 320), clusters: int = 64):
    """A real off-the-shelf Lite0 (ImageNet backbone, k-means NetVLAD on 50 Gardens Point
    day_right images, no PCA): seconds to build. Weights matter for the search benchmark's
    base descriptors, not for speed."""
    from sfrs_edge.train.config import InitConfig, KMeansConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    h, w = input_size
    cfg = InitConfig(
        model=ModelConfig("efficientnet_lite0", clusters, h, w, pca_dim=None),
        kmeans=KMeansConfig(descriptors_per_image=50, iters=30),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, _ = build_offtheshelf(gp_images()[::4], cfg)
    return net


def with_random_pca(net, pca_dim: int | None, seed: int = 0):
    """A copy of ``net`` with a random orthonormal PCA layer of ``pca_dim`` rows (speed only;
    None: keep the net's own PCA)."""
    net = copy.deepcopy(net)
    if pca_dim is None:
        return net
    rng = np.random.default_rng(seed)
    d = net.config.vlad_dim
    w = rng.standard_normal((pca_dim, d), dtype=np.float32)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    net.set_pca(w, np.zeros(pca_dim, np.float32))
    return net.eval()


def vgg16_random(clusters: int = 64, pca_dim: int | None = 4096, seed: int = 0):
    """VGG16 + NetVLAD with random weights (no ImageNet weights here): right for speed only."""
    import torch
    from sfrs_edge.train.model import ModelConfig, SFRSNet

    torch.manual_seed(seed)
    net = SFRSNet(ModelConfig(backbone="vgg16", num_clusters=clusters)).eval()
    return with_random_pca(net, pca_dim, seed)


def load_net(checkpoint: Path):
    from sfrs_edge.train.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)[0]


def resized(net, input_size: tuple[int, int]):
    """A copy of the (fully convolutional) net that takes ``input_size`` images."""
    net = copy.deepcopy(net)
    net.config.input_height, net.config.input_width = input_size
    return net.eval()


def without_pca(net):
    net = copy.deepcopy(net)
    net.pca = None
    net.config.pca_dim = None
    return net.eval()


def export(net, out: Path, fp16: bool, verify: list[Path], pca_dim: int | None = None):
    """export.export_model; returns (report or None, error message or None)."""
    from sfrs_edge.export import export_model

    from sfrs_edge.errors import SfrsEdgeError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = export_model(net, out, fp16=fp16, pca_dim=pca_dim, verify_images=verify)
        log(f"exported {out.name}: {rep.line()} ({rep.seconds} s)")
        return rep, None
    except SfrsEdgeError as exc:
        log(f"export {out.name} failed: {exc}")
        return None, str(exc)
