"""The embedding pipeline of map building: decode in a thread pool, infer in batches, overlapped.

Decoding a JPEG and resizing it (OpenCV, which releases the GIL) runs on ``decoders`` pool
threads while the main thread runs the network on the previous batch, so neither waits for
the other. At most ``prefetch`` batches are decoded ahead (a bounded queue of futures), so
memory stays at ``(prefetch + 1) × batch`` network inputs whatever the number of images.

Every batch yields a dict of arrays (contract 1): ``descriptor`` and, for a model with extra
outputs (``Engine.extra_outputs``), those too, all row-aligned with the kept files.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import threads as threads_mod
from ..errors import ImageError, MapError
from ..images import load_for_model

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
PREFETCH = 2  # batches decoded ahead of inference


@dataclass
class Embedded:
    """What the pipeline produced: outputs row-aligned with ``kept``."""

    outputs: dict[str, np.ndarray]
    kept: list[Path]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def descriptors(self) -> np.ndarray:
        return self.outputs["descriptor"]

    @property
    def images_per_s(self) -> float:
        return len(self.kept) / self.seconds if self.seconds > 0 else 0.0


def infer_fn(engine: Any) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``batch → {name: array}``: ``embed_all`` when the engine has extra outputs."""
    if getattr(engine, "extra_outputs", None) and hasattr(engine, "embed_all"):
        return engine.embed_all
    return lambda batch: {"descriptor": engine.embed(batch)}


def embed_images(
    engine: Any,
    files: Sequence[str | os.PathLike],
    batch_size: int = 8,
    threads: int | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
    prefetch: int = PREFETCH,
) -> Embedded:
    """Outputs of ``engine`` (an :class:`~sfrs_edge.engine.Engine`) for ``files``, in order.

    ``threads``: decode threads (None: physical cores). A file that cannot be read raises
    :class:`ImageError` naming it, or with ``skip_bad`` is left out with a warning.
    """
    if batch_size < 1:
        raise MapError(f"batch size must be at least 1, got {batch_size}")
    files = [Path(f) for f in files]
    pre = engine.info.preprocessing
    infer = infer_fn(engine)
    t0 = time.perf_counter()
    parts: dict[str, list[np.ndarray]] = {}
    kept: list[Path] = []
    skipped: list[str] = []
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    done = 0
    with ThreadPoolExecutor(threads_mod.resolve(threads), thread_name_prefix="decode") as pool:
        pending: deque[list[Future]] = deque()
        ahead = iter(batches)

        def submit_next() -> None:
            chunk = next(ahead, None)
            if chunk is not None:
                pending.append([pool.submit(load_for_model, f, pre) for f in chunk])

        for _ in range(max(1, prefetch)):
            submit_next()
        try:
            for chunk in batches:
                futures = pending.popleft()
                submit_next()  # keep the decoders busy while this batch runs
                images, names = [], []
                for f, fut in zip(chunk, futures, strict=True):
                    try:
                        images.append(fut.result())
                        names.append(f)
                    except ImageError as exc:
                        if not skip_bad:
                            raise
                        log.warning("skipping %s", exc)
                        skipped.append(str(exc))
                if images:
                    out = infer(np.stack(images))
                    for name, arr in out.items():
                        parts.setdefault(name, []).append(np.asarray(arr))
                    kept.extend(names)
                done += len(chunk)
                if progress is not None:
                    progress(done, len(files))
        finally:
            for futures in pending:  # an error: do not decode the rest
                for fut in futures:
                    fut.cancel()
    if not kept:
        first = f": {skipped[0]}" if skipped else ""
        raise ImageError(f"none of the {len(files)} images could be read{first}")
    outputs = {name: np.concatenate(p) for name, p in parts.items()}
    return Embedded(outputs, kept, skipped, time.perf_counter() - t0)
