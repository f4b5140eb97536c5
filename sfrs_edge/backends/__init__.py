"""Inference backends behind :class:`sfrs_edge.engine.Engine`.

A backend runs the exported graph: uint8 NHWC images in, float32 descriptors out. It knows
nothing about preprocessing, which the engine derives from the model's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class Backend(Protocol):
    """What the engine needs from a backend."""

    name: str  # e.g. "onnxruntime:CPUExecutionProvider" or "tensorrt"
    max_batch: int | None  # largest batch the backend accepts (None: unlimited)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) → float32 (N, dim)."""
        ...

    def bind(self, inp: np.ndarray, out: np.ndarray) -> Callable[[], None]:
        """A runner reading ``inp`` (1, H, W, 3) and writing ``out`` (1, dim) in place."""
        ...
