"""An off-the-shelf SFRS model: pretrained backbone, k-means NetVLAD, PCA whitening.

This is what ``sfrs-edge init`` writes and what generational training starts from.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sfrs_edge.errors import ConfigError

from .config import InitConfig
from .features import map_images, vlad_descriptors
from .model import SFRSNet
from .whitening import fit_pca_whitening

log = logging.getLogger(__name__)


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
        idx = idx.to(f.device)
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
    net = SFRSNet(replace(cfg.model, pca_dim=None))  # PCA is fitted after k-means
    net.backbone.load_pretrained(cfg.weights)
    return net.eval()


def add_pca_whitening(net: SFRSNet, vlads: np.ndarray, dim: int, whiten: bool = True) -> None:
    """Fit PCA (whitening) of ``dim`` components on NetVLAD descriptors and fuse it into ``net``.

    The last step of both ``sfrs-edge init`` and training (docs/DESIGN.md §5.5).
    """
    w, b, _ = fit_pca_whitening(vlads, dim, whiten=whiten)
    net.set_pca(w, b)
    net.config.whiten = whiten


def build_offtheshelf(
    images: Sequence[str | os.PathLike],
    cfg: InitConfig,
    progress: Callable[[int, int], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[SFRSNet, dict]:
    """Pretrained backbone + k-means NetVLAD (+ PCA whitening) fitted on ``images``.

    Returns the network (on the CPU) and a provenance dict for the checkpoint.
    ``progress(done, total)`` counts images over both passes (local descriptors, then global
    ones for PCA); ``device`` runs those passes (k-means and PCA are fitted on the CPU).
    """
    images = [Path(p) for p in images]
    pca_dim = cfg.model.pca_dim
    if pca_dim is not None and pca_dim > len(images) - 1:
        raise ConfigError(
            f"--pca-dim {pca_dim} is larger than available: {len(images)} images give at most "
            f"{max(len(images) - 1, 0)} PCA components; use fewer dims, more images, or --pca-dim none"
        )
    t0 = time.time()
    net = pretrained_backbone_net(cfg).to(device)
    rng = np.random.default_rng(cfg.seed)
    kimages = images
    km = cfg.kmeans
    if len(images) > km.max_images:
        kimages = [images[i] for i in sorted(rng.choice(len(images), km.max_images, replace=False))]
    total = len(kimages) + (len(images) if pca_dim else 0)

    def report(offset: int):
        return None if progress is None else (lambda done, _n: progress(offset + done, total))

    local = sample_local_descriptors(
        net, kimages, km.descriptors_per_image, cfg.seed, cfg.batch_size, report(0)
    )
    centroids = kmeans(local, cfg.model.num_clusters, km.iters, cfg.seed)
    alpha = net.netvlad.init_from_kmeans(centroids, local)
    log.info(
        "k-means on %d local descriptors from %d images; alpha=%.1f",
        len(local),
        len(kimages),
        alpha,
    )
    vlads = None
    if pca_dim:
        vlads = vlad_descriptors(net, images, cfg.batch_size, report(len(kimages)) or False)
    net = net.cpu()
    if vlads is not None:
        add_pca_whitening(net, vlads, pca_dim, cfg.model.whiten)
    provenance = {
        "kind": "off-the-shelf",
        "init": cfg.to_dict(),
        "images": str(Path(images[0]).parent.resolve()),
        "num_images": len(images),
        "num_kmeans_images": len(kimages),
        "alpha": alpha,
        "generation": None,
        "seconds": round(time.time() - t0, 1),
    }
    return net.eval(), provenance
