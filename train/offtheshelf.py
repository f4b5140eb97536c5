"""An off-the-shelf SFRS model: pretrained backbone, k-means NetVLAD, PCA whitening.

This is what ``sfrs-edge init`` writes and what generational training starts from.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sfrs_edge.errors import ConfigError

from .features import map_images, vlad_descriptors
from .model import ModelConfig, SFRSNet
from .whitening import fit_pca_whitening

log = logging.getLogger(__name__)


@dataclass
class InitConfig:
    """Settings of ``sfrs-edge init``; saved in the checkpoint's provenance."""

    backbone: str = "efficientnet_lite0"
    num_clusters: int = 64
    input_height: int = 0
    input_width: int = 0
    pca_dim: int | None = None
    whiten: bool = True
    descriptors_per_image: int = 100  # SFRS_METHOD.md §1.3
    max_images: int = 500  # SFRS_METHOD.md §1.3: 500 random images for k-means
    kmeans_iters: int = 100
    seed: int = 43
    weights: str | None = None  # backbone ImageNet weights file (required for vgg16)
    batch_size: int = 8


def sample_local_descriptors(
    net: SFRSNet,
    paths: Sequence[str | os.PathLike],
    per_image: int,
    seed: int,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``per_image`` random L2-normalised local descriptors from each image's feature map
    (all of its locations when the map is smaller)."""
    gen = torch.Generator().manual_seed(seed)

    def sample(n: SFRSNet, x: torch.Tensor) -> torch.Tensor:
        f = n.netvlad.local_features(n.features(x))  # N,D,H,W
        f = f.flatten(2).transpose(1, 2)  # N,HW,D
        hw = f.shape[1]
        take = min(per_image, hw)  # small inputs have fewer locations than asked for: use all
        idx = torch.stack([torch.randperm(hw, generator=gen)[:take] for _ in range(len(f))])
        return torch.gather(f, 1, idx.unsqueeze(2).expand(-1, -1, f.shape[2])).flatten(0, 1)

    return map_images(net, paths, sample, batch_size, progress or False)


def kmeans(descriptors: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """k-means centroids (sklearn, as the authors use)."""
    from sklearn.cluster import KMeans

    if len(descriptors) < k:
        raise ConfigError(f"k-means needs at least {k} descriptors, got {len(descriptors)}")
    km = KMeans(n_clusters=k, max_iter=iters, random_state=seed, n_init=1)
    return km.fit(descriptors).cluster_centers_.astype(np.float32)


def pretrained_backbone_net(cfg: InitConfig) -> SFRSNet:
    """An :class:`SFRSNet` whose backbone carries ImageNet weights (NetVLAD not yet set)."""
    mcfg = ModelConfig(
        backbone=cfg.backbone,
        num_clusters=cfg.num_clusters,
        input_height=cfg.input_height,
        input_width=cfg.input_width,
        pca_dim=None,
        whiten=cfg.whiten,
    )
    net = SFRSNet(mcfg)
    if cfg.backbone == "vgg16" and not cfg.weights:
        raise ConfigError(
            "vgg16 needs ImageNet weights from a file: pass --weights vgg16-397923af.pth "
            "(torchvision's VGG16 state dict); they cannot be downloaded by sfrs-edge"
        )
    net.backbone.load_pretrained(cfg.weights)
    return net.eval()


def build_offtheshelf(
    images: Sequence[str | os.PathLike],
    cfg: InitConfig,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[SFRSNet, dict]:
    """Pretrained backbone + k-means NetVLAD (+ PCA whitening) fitted on ``images``.

    Returns the network and a provenance dict for the checkpoint. ``progress(done, total)``
    counts images over both passes (local descriptors, then global ones for PCA).
    """
    images = [Path(p) for p in images]
    if cfg.pca_dim is not None and cfg.pca_dim > len(images) - 1:
        raise ConfigError(
            f"--pca-dim {cfg.pca_dim} is larger than available: {len(images)} images give at most "
            f"{max(len(images) - 1, 0)} PCA components; use fewer dims, more images, or --pca-dim none"
        )
    t0 = time.time()
    net = pretrained_backbone_net(cfg)
    rng = np.random.default_rng(cfg.seed)
    kimages = images
    if len(images) > cfg.max_images:
        kimages = [
            images[i] for i in sorted(rng.choice(len(images), cfg.max_images, replace=False))
        ]
    total = len(kimages) + (len(images) if cfg.pca_dim else 0)

    def report(offset: int):
        return None if progress is None else (lambda done, _n: progress(offset + done, total))

    local = sample_local_descriptors(
        net, kimages, cfg.descriptors_per_image, cfg.seed, cfg.batch_size, report(0)
    )
    centroids = kmeans(local, cfg.num_clusters, cfg.kmeans_iters, cfg.seed)
    alpha = net.netvlad.init_from_kmeans(centroids, local)
    log.info(
        "k-means on %d local descriptors from %d images; alpha=%.1f",
        len(local),
        len(kimages),
        alpha,
    )
    if cfg.pca_dim:
        vlads = vlad_descriptors(net, images, cfg.batch_size, report(len(kimages)) or False)
        w, b, _ = fit_pca_whitening(vlads, cfg.pca_dim, whiten=cfg.whiten)
        net.set_pca(w, b)
        net.config.whiten = cfg.whiten
    provenance = {
        "kind": "off-the-shelf",
        "init": asdict(cfg),
        "images": str(Path(images[0]).parent.resolve()),
        "num_images": len(images),
        "num_kmeans_images": len(kimages),
        "alpha": alpha,
        "generation": None,
        "seconds": round(time.time() - t0, 1),
    }
    return net.eval(), provenance
