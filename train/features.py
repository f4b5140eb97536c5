"""Run a network over image files: the one place that turns files into torch inputs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from sfrs_edge.images import load_for_model
from sfrs_edge.model_info import Preprocessing

from .model import InputAdapter, SFRSNet


def image_batches(
    paths: Sequence[str | os.PathLike], pre: Preprocessing, batch_size: int = 8
) -> Iterator[torch.Tensor]:
    """uint8 NHWC batches exactly as the exported model would receive them."""
    for i in range(0, len(paths), batch_size):
        yield torch.from_numpy(
            np.stack([load_for_model(p, pre) for p in paths[i : i + batch_size]])
        )


@torch.no_grad()
def map_images(
    net: SFRSNet,
    paths: Sequence[str | os.PathLike],
    fn: Callable[[SFRSNet, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 8,
    progress: bool | Callable[[int, int], None] = False,
) -> np.ndarray:
    """Apply ``fn(net, normalised_images)`` (default: the full descriptor) to every image file.

    ``progress``: True for a tqdm bar, or a ``report(done, total)`` callback."""
    fn = fn or (lambda n, x: n(x))
    pre = net.config.preprocessing()
    device = next(net.parameters()).device  # the images go where the network is
    adapter = InputAdapter(pre).to(device)
    was_training = net.training
    net.eval()
    batches = image_batches(paths, pre, batch_size)
    report = progress if callable(progress) else None  # report(done, total) per batch
    if progress is True:
        from tqdm import tqdm

        batches = tqdm(
            batches, total=(len(paths) + batch_size - 1) // batch_size, desc="images", unit="batch"
        )
    out = []
    for b in batches:
        out.append(fn(net, adapter(b.to(device))).float().cpu().numpy())
        if report is not None:
            report(min(len(out) * batch_size, len(paths)), len(paths))
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, net.config.descriptor_dim), np.float32)


def descriptors(
    net: SFRSNet, paths: Sequence[str | os.PathLike], batch_size: int = 8, progress: bool = False
) -> np.ndarray:
    """Final (PCA-whitened if the model has it) descriptors of image files, (N, dim) float32."""
    return map_images(net, paths, None, batch_size, progress)


def vlad_descriptors(
    net: SFRSNet, paths: Sequence[str | os.PathLike], batch_size: int = 8, progress: bool = False
) -> np.ndarray:
    """Global NetVLAD descriptors before PCA, (N, K·D) float32."""
    return map_images(net, paths, lambda n, x: n.vlad(x), batch_size, progress)
