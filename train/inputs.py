"""Image files → frozen-prefix features, with optional colour jitter and an in-memory cache.

When augmentation is off the frozen layers see the same pixels every time, so their output is
computed once per image and reused by mining, training and validation (a CPU speed option that
does not change the method).

On a GPU: images are decoded by ``workers`` threads into pinned memory and copied
asynchronously; the frozen prefix runs under the backbone's mixed precision (the cache keeps
float32) and, with ``channels_last``, in NHWC.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
        device: torch.device | str = "cpu",
        workers: int = 0,
        channels_last: bool = False,
        amp: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        self.pre = net.config.preprocessing()
        self.device = torch.device(device)
        self.adapter = InputAdapter(self.pre).to(self.device)
        self.pool = ThreadPoolExecutor(workers) if workers > 0 else None
        self.channels_last = channels_last
        self.amp = amp
        self.jitter = jitter
        self.use_cache = cache and jitter is None
        self.split = split_point(net.backbone)  # from the student, fixed for the whole run
        self._cache: dict[str, torch.Tensor] = {}

    def _pixels(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        """uint8 NHWC pixels of ``paths`` on the device (pinned + asynchronous copy on a GPU)."""
        load = lambda p: load_for_model(p, self.pre)  # noqa: E731
        arrays = list(self.pool.map(load, paths)) if self.pool else [load(p) for p in paths]
        px = torch.from_numpy(np.stack(arrays))
        if self.device.type == "cuda":
            return px.pin_memory().to(self.device, non_blocking=True)
        return px

    def _normalised(self, paths: Sequence[str | os.PathLike], augment: bool) -> torch.Tensor:
        px = self._pixels(paths)
        if augment and self.jitter is not None:
            rgb = px.flip(-1).permute(0, 3, 1, 2).float() / 255.0
            rgb = color_jitter(rgb, self.jitter)
            px = (rgb * 255.0).permute(0, 2, 3, 1).flip(-1)
        x = self.adapter(px)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _prefix(self, net: SFRSNet, x: torch.Tensor) -> torch.Tensor:
        with self.amp() if self.amp else contextlib.nullcontext():
            return frozen_prefix(net.backbone, x, self.split).float()

    def suffix(self, net: SFRSNet, f: torch.Tensor) -> torch.Tensor:
        """The trainable stages of ``net`` on prefix features: the backbone feature map
        (float32; computed under the backbone's mixed precision, if any)."""
        with self.amp() if self.amp else contextlib.nullcontext():
            return trainable_suffix(net.backbone, f, self.split).float()

    def __call__(
        self, net: SFRSNet, paths: Sequence[str | os.PathLike], augment: bool = False
    ) -> torch.Tensor:
        """Frozen-prefix outputs (N, C, h, w) of ``paths`` (no autograd)."""
        if not self.use_cache:
            return self._prefix(net, self._normalised(paths, augment))
        keys = [str(Path(p)) for p in paths]
        todo = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if todo:
            feats = self._prefix(net, self._normalised(todo, False))
            for k, f in zip(todo, feats, strict=True):
                self._cache[k] = f.clone()
        return torch.stack([self._cache[k] for k in keys])
