"""Global-descriptor embedding through the frozen-prefix cache, and recall@1/5/10 of a split."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from sfrs_edge.progress import progress as progress_bar
from sfrs_edge.recall import rank_database, recall_at_n

from .datasets import PlaceSet
from .inputs import FrozenInputs
from .model import SFRSNet


@torch.no_grad()
def embed(
    net: SFRSNet,
    inputs: FrozenInputs,
    paths: Sequence[str | os.PathLike],
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "embed",
    full: bool = False,
) -> np.ndarray:
    """Global NetVLAD descriptors (N, K·D) with the test transform (no augmentation);
    ``full``: the model's final descriptor (PCA-whitened when it has PCA)."""
    was_training = net.training
    net.eval()
    out = []
    with progress_bar(desc, unit="images", enabled=progress) as report:
        for i in range(0, len(paths), batch_size):
            f = inputs(net, paths[i : i + batch_size])
            v = net.netvlad(inputs.suffix(net, f))
            if full and net.pca is not None:
                v = net.pca(v)
            out.append(v.float().numpy())
            report(min(i + batch_size, len(paths)), len(paths))
    net.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, net.config.vlad_dim), np.float32)


def evaluate(
    net: SFRSNet,
    inputs: FrozenInputs,
    places: PlaceSet,
    positives: Sequence[np.ndarray],
    batch_size: int = 8,
    progress: bool = False,
    full: bool = False,
) -> dict[int, float]:
    """Recall@1/5/10 (%) of ``places`` with the global descriptor (``full``: with PCA)."""
    q = embed(net, inputs, places.query_paths, batch_size, progress, f"{places.name} q", full)
    db = embed(net, inputs, places.db_paths, batch_size, progress, f"{places.name} db", full)
    return recall_at_n(rank_database(q, db, 10), positives, (1, 5, 10))
