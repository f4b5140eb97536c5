"""Split a backbone into its frozen prefix and trainable suffix.

The frozen prefix never changes during training (no gradient, BatchNorm statistics frozen), so
its output can be computed without autograd and, when augmentation is off, cached per image.
Works on any registered backbone through its stages (:class:`~.backbones.Backbone`).
"""

from __future__ import annotations

import torch

from .backbones import Backbone


def split_point(backbone: Backbone) -> int:
    """Number of leading stages with no trainable parameter."""
    n = 0
    for stage in backbone.stages():
        if any(p.requires_grad for p in stage.parameters()):
            break
        n += 1
    return n


def frozen_prefix(backbone: Backbone, x: torch.Tensor, split: int) -> torch.Tensor:
    """Output of the first ``split`` (frozen) stages, computed without autograd."""
    with torch.no_grad():
        for stage in backbone.stages()[:split]:
            x = stage(x)
    return x


def trainable_suffix(backbone: Backbone, f: torch.Tensor, split: int) -> torch.Tensor:
    """Stages from ``split`` on applied to a frozen-prefix output: the backbone feature map.

    ``split`` comes from the student (:func:`split_point`); a frozen teacher uses the same one.
    """
    for stage in backbone.stages()[split:]:
        f = stage(f)
    return f
