"""Self-verification of an exported model: onnxruntime (CPU) against torch fp32 on real images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sfrs_edge.train.model import ExportWrapper, SFRSNet

from sfrs_edge.backends.onnx import create_session
from sfrs_edge.errors import ModelError
from sfrs_edge.images import load_for_model
from sfrs_edge.model_info import INPUT_NAME

# Minimum cosine between torch fp32 and exported descriptors (docs/DESIGN.md §3.5).
THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999}


@dataclass(frozen=True)
class Parity:
    """Cosine between torch fp32 and onnxruntime descriptors over the verification images."""

    min_cos: float
    mean_cos: float
    num_images: int

    def line(self) -> str:
        return (
            f"parity vs torch fp32: min cosine {self.min_cos:.6f}, mean {self.mean_cos:.6f} "
            f"on {self.num_images} images"
        )


@torch.no_grad()
def parity(
    onnx_path: Path,
    reference: SFRSNet,
    images: Sequence[str | os.PathLike],
    batch_size: int = 4,
) -> Parity:
    """Cosines between ``reference`` (fp32 torch) and the ONNX model on ``images``."""
    if not images:
        raise ModelError("export verification needs at least one real image")
    pre = reference.config.preprocessing()
    wrapper = ExportWrapper(reference).eval()
    sess = create_session(onnx_path)
    cos: list[np.ndarray] = []
    for i in range(0, len(images), batch_size):
        batch = np.stack([load_for_model(p, pre) for p in images[i : i + batch_size]])
        want = wrapper(torch.from_numpy(batch)).numpy().astype(np.float64)
        try:
            got = sess.run(None, {INPUT_NAME: batch})[0].astype(np.float64)
        except Exception as exc:
            raise ModelError(f"{onnx_path}: onnxruntime failed to run the model ({exc})") from exc
        if got.shape != want.shape:
            raise ModelError(f"{onnx_path}: output shape {got.shape}, expected {want.shape}")
        num = (got * want).sum(1)
        den = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
        c = np.where(np.isfinite(num) & (den > 0), num / np.maximum(den, 1e-30), -1.0)
        cos.append(c)
    c = np.concatenate(cos)
    return Parity(float(c.min()), float(c.mean()), len(c))


def check(result: Parity, precision: str, source: str | os.PathLike) -> None:
    """Raise :class:`ModelError` when parity is below the threshold for ``precision``."""
    threshold = THRESHOLDS[precision]
    if not result.min_cos >= threshold:
        raise ModelError(
            f"{source}: export verification failed: {result.line()}; {precision} needs min "
            f"cosine >= {threshold}. Nothing was written."
        )
