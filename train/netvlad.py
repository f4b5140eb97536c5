"""NetVLAD (Arandjelović et al. 2016) as SFRS uses it, plus SFRS's 9 region descriptors.

Aggregation is written as one batched matmul (docs/DESIGN.md §3.1):
``V = A·Xᵀ − (A·1) ⊙ C`` with A the K×HW soft assignment and X the D×HW local features,
which never materialises the N×K×D×HW residual tensor and exports to plain MatMul/Mul ops.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .norms import l2_normalize

NUM_REGIONS = 9
REGION_NAMES = (
    "global",
    "top",
    "bottom",
    "left",
    "right",
    "top_left",
    "top_right",
    "bottom_left",
    "bottom_right",
)


class NetVLAD(nn.Module):
    """NetVLAD layer: per-location L2 → 1×1 conv (no bias) softmax → residual sum."""

    def __init__(self, num_clusters: int = 64, dim: int = 512) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.conv = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=False)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    @torch.no_grad()
    def init_from_kmeans(self, centroids: np.ndarray, descriptors: np.ndarray) -> float:
        """Initialise from k-means centroids with the α rule (docs/DESIGN.md §5.1).

        ``descriptors`` are the L2-normalised local features k-means ran on. Returns α.
        conv weight = α·ĉ (ĉ = unit centroids), centroid parameter = raw centroids, where
        α = −ln(0.01) / mean(top1 − top2 dot gap) makes the best cluster ≈100× the second.
        """
        centroids = np.asarray(centroids, dtype=np.float32)
        unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-12)
        dots = np.asarray(descriptors, dtype=np.float32) @ unit.T
        top2 = -np.sort(-dots, axis=1)[:, :2]
        gap = float(np.mean(top2[:, 0] - top2[:, 1]))
        alpha = -math.log(0.01) / max(gap, 1e-12)
        self.conv.weight.copy_(torch.from_numpy(alpha * unit)[:, :, None, None])
        self.centroids.copy_(torch.from_numpy(centroids))
        return alpha

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-location L2-normalised features (N, D, H, W)."""
        return l2_normalize(x, dim=1)

    def assignments(self, xn: torch.Tensor) -> torch.Tensor:
        """Soft assignments (N, K, H, W) of normalised features xn (N, D, H, W), in xn's dtype
        promoted to at least float32."""
        dtype = torch.promote_types(xn.dtype, torch.float32)
        xn = xn.to(dtype)
        return torch.softmax(F.conv2d(xn, self.conv.weight.to(dtype)), dim=1)

    def _vlad(self, xn: torch.Tensor) -> torch.Tensor:
        """Unnormalised VLAD (N, K, D), at least float32, of normalised features xn (N, D, H, W).

        Computed in fp32 whatever xn's dtype (fp16 exports): the logits are large (α·ĉ), the
        sums run over all H·W locations, and clusters with tiny mass are amplified by the
        intra-normalisation. Measured on VGG16 at 480x640: fp16 here gives cosine 0.993.
        """
        # Batch as -1 and the static sizes as Python ints: the exported Reshapes get constant
        # shapes instead of Shape/Gather/Concat chains (only the batch axis is dynamic).
        hw = int(xn.shape[2]) * int(xn.shape[3])
        dtype = torch.promote_types(xn.dtype, torch.float32)  # fp16 → fp32, fp64 stays
        xn = xn.to(dtype)
        assign = self.assignments(xn).reshape(-1, self.num_clusters, hw)  # N,K,HW
        feats = xn.reshape(-1, self.dim, hw)  # N,D,HW
        vlad = torch.bmm(assign, feats.transpose(1, 2))  # N,K,D
        return vlad - assign.sum(dim=2).unsqueeze(2) * self.centroids.to(dtype).unsqueeze(0)

    def aggregate(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised VLAD (N, K, D) of backbone features x (N, D, H, W)."""
        return self._vlad(self.local_features(x))

    @staticmethod
    def normalize(vlad: torch.Tensor) -> torch.Tensor:
        """Intra-normalise each cluster row, flatten, L2-normalise: (..., K, D) → (..., K·D)."""
        v = l2_normalize(vlad, dim=-1)
        # Not flatten(-2): it exports as Shape/Slice/Concat; -1 stands for the dynamic batch.
        v = v.reshape(-1, *(int(s) for s in v.shape[1:-2]), int(v.shape[-2]) * int(v.shape[-1]))
        return l2_normalize(v, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global descriptor (N, K·D), intra- and L2-normalised (fp32 inside, x's dtype out)."""
        return self.normalize(self.aggregate(x)).to(x.dtype)

    def quarter_vlads(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised VLADs of the 4 quarters (N, 4, K, D) in order TL, TR, BL, BR.

        The map is split at (H//2, W//2), so the quarters partition the pixels exactly and
        their VLADs sum to the whole-image VLAD whatever the map size.
        """
        xn = self.local_features(x)
        h2, w2 = xn.shape[2] // 2, xn.shape[3] // 2
        parts = [xn[:, :, :h2, :w2], xn[:, :, :h2, w2:], xn[:, :, h2:, :w2], xn[:, :, h2:, w2:]]
        return torch.stack([self._vlad(p) for p in parts], dim=1)

    def region_vlads(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised region VLADs (N, 9, K, D) in :data:`REGION_NAMES` order."""
        q = self.quarter_vlads(x)
        tl, tr, bl, br = q.unbind(1)
        regions = [tl + tr + bl + br, tl + tr, bl + br, tl + bl, tr + br, tl, tr, bl, br]
        return torch.stack(regions, dim=1)

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """The 9 normalised region descriptors (N, 9, K·D) used by SFRS training."""
        return self.normalize(self.region_vlads(x))
