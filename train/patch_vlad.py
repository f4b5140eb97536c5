"""Patch descriptors: NetVLAD aggregated over small windows of cells (Patch-NetVLAD).

Hausler et al. (CVPR 2021) re-rank NetVLAD's candidates with descriptors of square windows of
the feature map built from the same soft-assigned residuals as the global descriptor: for a
window w, V_k(w) = Σ_{x∈w} a_k(x)(x̂(x) − c_k), intra-normalised per cluster, L2-normalised,
then PCA-whitened and L2-normalised again. Their code sums windows with integral feature maps
(cumsum + a dilated 2×2 conv); here an ``AveragePool`` of kernel s and stride 1 does the same
sum (up to the constant 1/s², which the normalisation removes) with static shapes and one op
that TensorRT takes.

Exported graphs compute residuals as a·x̂ − a·c (one broadcast over K×C×H×W: 4.9 M values for
Lite0 at 360×640, about 20 MB; VGG16 at 480×640 needs 39 M, 157 MB per image).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfrs_edge.errors import ConfigError

from .norms import l2_normalize


def residual_map(net: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Soft-assigned residuals (N, K·C, H, W) of the map NetVLAD aggregates, in float32."""
    vlad = net.netvlad
    k = vlad.num_clusters
    c, h, w = (int(v) for v in final.shape[1:])
    xn = vlad.local_features(final.float())
    assign = torch.softmax(F.conv2d(xn, vlad.conv.weight.float()), dim=1)  # N,K,H,W
    res = assign.unsqueeze(2) * xn.unsqueeze(1) - assign.unsqueeze(
        2
    ) * vlad.centroids.float().reshape(1, k, c, 1, 1)
    return res.reshape(-1, k * c, h, w)


def window_sums(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over every size×size window at stride 1 of a (N, D, H, W) map: (N, D, H−s+1, W−s+1)."""
    if size == 1:
        return x
    return F.avg_pool2d(x, size, stride=1)


def grid_size(map_size: tuple[int, int], size: int) -> tuple[int, int]:
    """(rows, cols) of windows of ``size`` cells at stride 1 on a map of ``map_size`` cells."""
    h, w = (int(v) for v in map_size)
    if size > h or size > w:
        raise ConfigError(
            f"patch size {size} does not fit the {h}x{w}-cell feature map; use smaller "
            "patch_sizes or a larger input"
        )
    return h - size + 1, w - size + 1


def normalize_vlad(v: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Intra- then L2-normalise VLADs laid out (N, K·C, M) over their K·C axis."""
    kc, m = int(v.shape[1]), int(v.shape[2])
    per = l2_normalize(v.reshape(-1, num_clusters, kc // num_clusters, m), dim=2)
    return l2_normalize(per.reshape(-1, kc, m), dim=1)


def window_centres(map_size: tuple[int, int], size: int, input_size: tuple[int, int]) -> np.ndarray:
    """Pixel centres (M, 2) x, y in the network input of every window (row-major)."""
    h, w = (int(v) for v in map_size)
    gh, gw = grid_size(map_size, size)
    ih, iw = input_size
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    x = (cols.reshape(-1) + size / 2) * (iw / w)
    y = (rows.reshape(-1) + size / 2) * (ih / h)
    return np.stack([x, y], axis=-1).astype(np.float32)


def fit_whitening(
    samples: np.ndarray, dim: int, whiten: bool = True, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), projection (dim, D)) of PCA(-whitening) fitted on L2-normalised samples (N, D).

    Randomised SVD (Halko et al., ``torch.svd_lowrank``): D is K·C (20480 for Lite0), so a full
    decomposition would be needlessly slow. Whitening scales component i by 1/√(λ_i + eps·λ_0)."""
    x = torch.as_tensor(np.asarray(samples, np.float32))
    n, d = x.shape
    if dim > min(n - 1, d):
        raise ConfigError(
            f"local whitening to {dim} dims needs more than {dim} samples of at most {d} dims "
            f"(got {n}); fit on more images or lower the local dim"
        )
    mean = x.mean(0)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)  # svd_lowrank draws a random test matrix: make the fit repeatable
    try:
        _, s, v = torch.svd_lowrank(x - mean, q=min(dim + 16, n, d), niter=4)
    finally:
        torch.random.set_rng_state(gen_state)
    comps = v[:, :dim].t()  # dim, D
    if whiten:
        lam = (s[:dim] ** 2) / max(n - 1, 1)
        comps = comps / torch.sqrt(lam + eps * lam[0]).unsqueeze(1)
    return mean.numpy(), comps.contiguous().numpy()
