"""Run a network over image files (through the runtime's embedding pipeline)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from sfrs_edge.embedding import embed_images
from sfrs_edge.errors import ModelError
from sfrs_edge.images import load_for_model
from sfrs_edge.model_info import Preprocessing
from sfrs_edge.progress import progress as progress_bar

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

    The files go through the runtime's embedding pipeline (:mod:`sfrs_edge.embedding`: decode
    pool, batches, in order) with the network as the model call. ``fn`` returns one row per
    image, or the same number of rows for every image (e.g. sampled local descriptors), which
    come out image after image. ``progress``: True for the package's progress display (:mod:`sfrs_edge.progress`), or
    ``report(done, total)``.
    """
    fn = fn or (lambda n, x: n(x))
    pre = net.config.preprocessing()
    adapter = InputAdapter(pre)
    if not len(paths):
        return np.zeros((0, net.config.descriptor_dim), np.float32)

    def infer(batch: np.ndarray) -> np.ndarray:
        out = fn(net, adapter(torch.from_numpy(batch))).float().cpu().numpy()
        if len(out) % len(batch):
            raise ModelError(f"{len(out)} rows for a batch of {len(batch)} images")
        return out.reshape(len(batch), -1, *out.shape[1:])  # rows grouped by image

    was_training = net.training
    net.eval()
    try:
        with progress_bar("images", unit="images", enabled=progress is True) as bar:
            report = progress if callable(progress) else bar
            out = embed_images(infer, paths, batch_size, progress=report, preprocessing=pre)
    finally:
        net.train(was_training)
    rows = out.descriptors
    return rows.reshape(-1, *rows.shape[2:])


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
