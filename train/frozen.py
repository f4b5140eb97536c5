"""Split a backbone into its frozen prefix and trainable suffix.

The frozen prefix never changes during training (no gradient, BatchNorm statistics frozen), so
its output can be computed without autograd and, when augmentation is off, cached per image.
"""

from __future__ import annotations

import torch
from torch import nn

from sfrs_edge.errors import ConfigError

from .backbones import VGG16, EfficientNetLite0


def set_first_trainable(backbone: nn.Module, first: int | None) -> None:
    """Freeze everything before ``first`` (VGG16: module index, Lite0: block index)."""
    if first is None:
        return
    if isinstance(backbone, EfficientNetLite0):
        backbone.set_trainable(first)
    elif isinstance(backbone, VGG16):
        if not 0 <= first <= len(backbone.features):
            raise ConfigError(f"vgg16: first trainable module must be 0..{len(backbone.features)}")
        for i, module in enumerate(backbone.features):
            for p in module.parameters():
                p.requires_grad = i >= first
    else:
        raise ConfigError(f"cannot set frozen layers of {type(backbone).__name__}")


def _stages(backbone: nn.Module) -> list[nn.Module]:
    if isinstance(backbone, EfficientNetLite0):
        stem = nn.Sequential(backbone._conv_stem, backbone._bn0, nn.ReLU6())
        return [stem, *backbone._blocks]
    if isinstance(backbone, VGG16):
        return list(backbone.features)
    raise ConfigError(f"cannot split {type(backbone).__name__} into frozen/trainable parts")


def split_point(backbone: nn.Module) -> int:
    """Number of leading stages with no trainable parameter."""
    n = 0
    for stage in _stages(backbone):
        if any(p.requires_grad for p in stage.parameters()):
            break
        n += 1
    return n


def frozen_prefix(backbone: nn.Module, x: torch.Tensor, split: int) -> torch.Tensor:
    """Output of the first ``split`` (frozen) stages, computed without autograd."""
    with torch.no_grad():
        for stage in _stages(backbone)[:split]:
            x = stage(x)
    return x


def trainable_suffix(backbone: nn.Module, f: torch.Tensor, split: int) -> torch.Tensor:
    """Stages from ``split`` on applied to a frozen-prefix output: the backbone feature map.

    ``split`` comes from the student (:func:`split_point`); a frozen teacher uses the same one.
    """
    for stage in _stages(backbone)[split:]:
        f = stage(f)
    return f
