"""Image files → frozen-prefix features, with optional colour jitter and an in-memory cache.

When augmentation is off the frozen layers see the same pixels every time, so their output is
computed once per image and reused by mining, training and validation (a CPU speed option that
does not change the method).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sfrs_edge.images import load_for_model

from .augment import color_jitter
from .frozen import frozen_prefix, split_point, trainable_suffix
from .model import InputAdapter, SFRSNet


class FrozenInputs:
    """Frozen-prefix features of image files for one network input convention."""

    def __init__(
        self,
        net: SFRSNet,
        jitter: tuple[float, float, float, float] | None = None,
        cache: bool = True,
    ) -> None:
        self.pre = net.config.preprocessing()
        self.adapter = InputAdapter(self.pre)
        self.jitter = jitter
        self.use_cache = cache and jitter is None
        self.split = split_point(net.backbone)  # from the student, fixed for the whole run
        self._cache: dict[str, torch.Tensor] = {}

    def _pixels(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        return torch.from_numpy(np.stack([load_for_model(p, self.pre) for p in paths]))

    def _normalised(self, paths: Sequence[str | os.PathLike], augment: bool) -> torch.Tensor:
        px = self._pixels(paths)
        if augment and self.jitter is not None:
            rgb = px.flip(-1).permute(0, 3, 1, 2).float() / 255.0
            rgb = color_jitter(rgb, self.jitter)
            px = (rgb * 255.0).permute(0, 2, 3, 1).flip(-1)
        return self.adapter(px)

    def suffix(self, net: SFRSNet, f: torch.Tensor) -> torch.Tensor:
        """The trainable stages of ``net`` on prefix features: the backbone feature map."""
        return trainable_suffix(net.backbone, f, self.split)

    def __call__(
        self, net: SFRSNet, paths: Sequence[str | os.PathLike], augment: bool = False
    ) -> torch.Tensor:
        """Frozen-prefix outputs (N, C, h, w) of ``paths`` (no autograd)."""
        if not self.use_cache:
            return frozen_prefix(net.backbone, self._normalised(paths, augment), self.split)
        keys = [str(Path(p)) for p in paths]
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if todo:
            feats = frozen_prefix(net.backbone, self._normalised(todo, False), self.split)
            for k, f in zip(todo, feats, strict=True):
                self._cache[k] = f.clone()
        return torch.stack([self._cache[k] for k in keys])
