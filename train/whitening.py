"""PCA whitening fitted with the dual method (docs/DESIGN.md §5.5, after Relja's relja_PCA.m).

Descriptors are 20k–32k-dimensional and there are fewer images than dimensions, so the
eigen-decomposition is done on the N×N Gram matrix instead of the D×D covariance.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from sfrs_edge.errors import ConfigError

from .norms import l2_normalize

MIN_IMAGES_PER_DIM = 3  # measured: 200 images, 64 dims fine; 128 dims costs 7.5 R@1 at night


def fit_pca_whitening(
    descriptors: np.ndarray, dim: int, whiten: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit PCA (whitening) on (N, D) descriptors, returning (W, b, eigenvalues).

    ``y = W x + b`` with ``W = diag(λ^-1/2) Uᵀ`` (or ``Uᵀ`` without whitening) and ``b = −Wμ``;
    rows of W are sorted by decreasing eigenvalue, so a prefix of rows is a valid lower-dim PCA.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    n, d = x.shape
    if dim < 1:
        raise ConfigError(f"PCA dimension must be positive, got {dim}")
    if dim > min(n - 1, d):
        raise ConfigError(
            f"PCA dimension {dim} is larger than available: {n} descriptors of dim {d} give at "
            f"most {min(n - 1, d)} components; use --pca-dim {min(n - 1, d)} or fewer, or more images"
        )
    if n < MIN_IMAGES_PER_DIM * dim:
        warnings.warn(
            f"PCA whitening fitted on {n} images for {dim} dims (< {MIN_IMAGES_PER_DIM} images per "
            "dim): whitening on too few images amplifies noise and costs recall; use more images, a "
            "smaller --pca-dim, or --pca-dim none",
            UserWarning,
            stacklevel=2,
        )
    mu = x.mean(axis=0)
    xc = (x - mu).T  # D×N
    gram = xc.T @ xc / (n - 1)
    lams, vecs = np.linalg.eigh(gram)
    order = np.argsort(lams)[::-1][:dim]
    lams = np.clip(lams[order], 1e-9, None)
    vecs = vecs[:, order]
    u = xc @ vecs / np.sqrt(lams * (n - 1))  # D×dim, unit-norm columns
    w = (u / np.sqrt(lams)).T if whiten else u.T
    b = -w @ mu
    return w.astype(np.float32), b.astype(np.float32), lams.astype(np.float32)


class PCAWhitening(nn.Module):
    """Linear projection (fused PCA whitening) followed by L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    @property
    def out_dim(self) -> int:
        return self.linear.out_features

    @torch.no_grad()
    def set(self, weight: np.ndarray | torch.Tensor, bias: np.ndarray | torch.Tensor) -> None:
        self.linear.weight.copy_(torch.as_tensor(weight))
        self.linear.bias.copy_(torch.as_tensor(bias))

    @torch.no_grad()
    def truncate(self, dim: int) -> None:
        """Keep the first ``dim`` whitened components (rows sorted by eigenvalue)."""
        if not 1 <= dim <= self.out_dim:
            raise ConfigError(
                f"--pca-dim {dim} is larger than available: the model has {self.out_dim} PCA "
                f"dimensions; use --pca-dim {self.out_dim} or fewer"
            )
        old = self.linear
        self.linear = nn.Linear(old.in_features, dim).to(old.weight.dtype)
        self.linear.weight.copy_(old.weight[:dim])
        self.linear.bias.copy_(old.bias[:dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.linear(x), dim=-1)
