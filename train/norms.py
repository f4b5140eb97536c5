"""L2 normalisation and softmax that always compute in float32.

Under FP16 the sums of squares overflow 65504 (VGG16 features are on a 0-255 scale) and an
``eps`` of 1e-12 underflows to zero (docs/DESIGN.md §3.2). Computing these few cheap ops in FP32
and casting back keeps FP16 exports exact; for FP32 models the casts are no-ops.
"""

from __future__ import annotations

import torch

EPS = 1e-12


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32 (float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def l2_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x / max(||x||, eps)`` along ``dim``, computed in float32, returned in x's dtype.

    The clamp acts on the sum of squares (at eps²), not on the norm: ``sqrt`` has an infinite
    derivative at 0, so clamping after it gives a 0·∞ = NaN gradient for an all-zero vector
    (a NetVLAD cluster whose soft assignments underflow to 0 on a near-black frame). Values are
    the same either way.
    """
    x32 = _wide(x)
    norm = torch.sqrt((x32 * x32).sum(dim=dim, keepdim=True).clamp_min(EPS * EPS))
    return (x32 / norm).to(x.dtype)


def softmax32(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax computed in float32, returned in x's dtype."""
    return torch.softmax(_wide(x), dim=dim).to(x.dtype)
