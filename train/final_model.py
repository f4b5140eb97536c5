"""The end of training: the best model plus PCA whitening, the export-ready ``checkpoint.pt``.

PCA whitening is fitted on NetVLAD descriptors of (up to ``pca_images``) training images with
the same function ``sfrs-edge init`` uses (:func:`~.offtheshelf.add_pca_whitening`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from .config import TrainConfig
from .evaluation import embed
from .inputs import FrozenInputs
from .model import SFRSNet
from .offtheshelf import add_pca_whitening

log = logging.getLogger(__name__)


def pca_image_sample(images: Sequence[str | os.PathLike], cfg: TrainConfig) -> list:
    """At most ``cfg.pca_images`` of ``images`` (a seeded random subset, in order)."""
    images = list(images)
    if len(images) <= cfg.pca_images:
        return images
    rng = np.random.default_rng(cfg.seed)
    return [images[i] for i in sorted(rng.choice(len(images), cfg.pca_images, False))]


def fit_final_pca(
    net: SFRSNet,
    inputs: FrozenInputs,
    images: Sequence[str | os.PathLike],
    cfg: TrainConfig,
    progress: bool = False,
) -> int | None:
    """Fuse PCA whitening (``cfg.model.pca_dim``, capped by the number of images) into ``net``.

    Returns the dimension fitted, or None when the config asks for no PCA.
    """
    want = cfg.model.pca_dim
    if not want:
        return None
    dim = min(want, len(images) - 1)
    if dim < want:
        log.warning("PCA: %d images allow at most %d dims (asked %d)", len(images), dim, want)
    vlads = embed(net, inputs, list(images), cfg.batch_size, progress, "PCA: embed")
    add_pca_whitening(net, vlads, dim, cfg.model.whiten)
    return dim
