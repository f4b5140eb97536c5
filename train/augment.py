"""Training-only colour jitter (docs/DESIGN.md §5.6), on float RGB images in [0, 1], NCHW.

torchvision is not a dependency; this follows ColorJitter's factor ranges (brightness,
contrast, saturation in [1−v, 1+v], hue shift in [−h, h] of a full turn) in a fixed order,
independently per image. Hue is rotated in YIQ space (an approximation of HSV hue).
"""

from __future__ import annotations

import math

import torch

_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _factors(n: int, v: float, gen: torch.Generator | None) -> torch.Tensor:
    return (1 - v + 2 * v * torch.rand(n, generator=gen)).view(n, 1, 1, 1)


def color_jitter(
    rgb: torch.Tensor,
    jitter: tuple[float, float, float, float],
    gen: torch.Generator | None = None,
) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue per image of ``rgb`` (N, 3, H, W)."""
    b, c, s, h = jitter
    n = len(rgb)
    x = rgb.clamp(0, 1)
    if b:
        x = (x * _factors(n, b, gen)).clamp(0, 1)
    if c:
        mean = (x * _GREY).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (mean + (x - mean) * _factors(n, c, gen)).clamp(0, 1)
    if s:
        grey = (x * _GREY).sum(1, keepdim=True)
        x = (grey + (x - grey) * _factors(n, s, gen)).clamp(0, 1)
    if h:
        theta = (torch.rand(n, generator=gen) * 2 - 1) * h * 2 * math.pi
        cos, sin = torch.cos(theta), torch.sin(theta)
        yiq = torch.einsum("ij,njhw->nihw", _RGB2YIQ, x)
        i, q = yiq[:, 1], yiq[:, 2]
        ci, cq = cos.view(n, 1, 1), sin.view(n, 1, 1)
        yiq = torch.stack([yiq[:, 0], i * ci - q * cq, i * cq + q * ci], dim=1)
        x = torch.einsum("ij,njhw->nihw", _YIQ2RGB, yiq).clamp(0, 1)
    return x
