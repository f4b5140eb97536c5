"""The embedding pipeline: decode in a thread pool, infer in batches, gather the rows in order.

Every path that turns many images into descriptors goes through :func:`embed_items` (files:
:func:`embed_images`): map build and ``map add``, maps from video, ``evaluate``, each Ray actor
on its share of a cluster build, export verification and the torch-side feature extraction of
``train/``. What differs between them is only the model call, a ``batch → outputs`` function:

- an :class:`~sfrs_edge.engine.Engine` (:func:`infer_fn`: ``embed``, or ``embed_all`` for a
  model with extra outputs);
- any other callable taking a uint8 (N, H, W, 3) batch and returning an array (taken as the
  descriptors) or a dict of row-aligned arrays (a torch network, onnxruntime beside torch).

Decoding a JPEG and resizing it (OpenCV, which releases the GIL) runs on ``threads`` pool
threads while the calling thread runs the model on the previous batch, so neither waits for the
other. At most ``prefetch`` batches are decoded ahead (a bounded queue of futures), so memory
stays at ``(prefetch + 1) × batch`` network inputs whatever the number of images.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import threads as threads_mod
from .errors import ConfigError, ImageError
from .images import load_for_model
from .model_info import Preprocessing

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Outputs = dict[str, np.ndarray]
Infer = Callable[[np.ndarray], "Outputs | np.ndarray"]
PREFETCH = 2  # batches decoded ahead of inference


@dataclass
class Embedded:
    """What the pipeline produced: ``outputs`` (``descriptor`` and any extra outputs) row-aligned
    with ``kept`` (the inputs that could be read, in input order); ``skipped``: messages of the
    inputs left out (``skip_bad``)."""

    outputs: Outputs
    kept: list[Any]
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def descriptors(self) -> np.ndarray:
        return self.outputs["descriptor"]

    @property
    def images_per_s(self) -> float:
        return len(self.kept) / self.seconds if self.seconds > 0 else 0.0


def infer_fn(engine: Any) -> Callable[[np.ndarray], Outputs]:
    """``batch → {name: array}`` of an engine: ``embed_all`` when it has extra outputs."""
    if getattr(engine, "extra_outputs", None) and hasattr(engine, "embed_all"):
        return engine.embed_all
    return lambda batch: {"descriptor": engine.embed(batch)}


def _as_outputs(out: Outputs | np.ndarray) -> Outputs:
    return out if isinstance(out, dict) else {"descriptor": out}


def embed_items(
    items: Iterable[Any],
    load: Callable[[Any], np.ndarray],
    infer: Infer,
    batch_size: int = 8,
    threads: int | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
    prefetch: int = PREFETCH,
) -> Embedded:
    """Run ``infer`` over ``load(item)`` of every item, in batches of ``batch_size``, in order.

    ``load`` (run on the pool's ``threads``; None: physical cores) turns an item into one uint8
    (H, W, 3) network input; an :class:`ImageError` from it fails the call, or with ``skip_bad``
    leaves the item out with a warning. ``items`` is read lazily (a generator of video frames
    is never held whole). ``progress(done, total)`` after each batch (total: 0 when ``items``
    has no length). An empty ``items`` gives empty outputs; items none of which can be read
    raise :class:`ImageError`.
    """
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    total = len(items) if isinstance(items, Sequence) else 0
    t0 = time.perf_counter()
    parts: dict[str, list[np.ndarray]] = {}
    kept: list[Any] = []
    skipped: list[str] = []
    seen = 0
    source = iter(items)
    with ThreadPoolExecutor(threads_mod.resolve(threads), thread_name_prefix="decode") as pool:
        pending: deque[tuple[list[Any], list[Future]]] = deque()

        def submit_next() -> None:
            chunk = list(itertools.islice(source, batch_size))
            if chunk:
                pending.append((chunk, [pool.submit(load, item) for item in chunk]))

        for _ in range(max(1, prefetch)):
            submit_next()
        try:
            while pending:
                chunk, futures = pending.popleft()
                submit_next()  # keep the decoders busy while this batch runs
                images, names = [], []
                for item, fut in zip(chunk, futures, strict=True):
                    try:
                        images.append(fut.result())
                        names.append(item)
                    except ImageError as exc:
                        if not skip_bad:
                            raise
                        log.warning("skipping %s", exc)
                        skipped.append(str(exc))
                if images:
                    for name, arr in _as_outputs(infer(np.stack(images))).items():
                        arr = np.asarray(arr)
                        if len(arr) != len(images):
                            raise ImageError(
                                f"the model returned {len(arr)} rows of {name!r} for a batch "
                                f"of {len(images)} images"
                            )
                        parts.setdefault(name, []).append(arr)
                    kept.extend(names)
                seen += len(chunk)
                if progress is not None:
                    progress(seen, max(total, seen))
        finally:
            for _, futures in pending:  # an error: do not decode the rest
                for fut in futures:
                    fut.cancel()
    if seen and not kept:
        raise ImageError(f"none of the {seen} images could be read: {skipped[0]}")
    outputs = {name: np.concatenate(p) for name, p in parts.items()}
    return Embedded(outputs, kept, skipped, time.perf_counter() - t0)


def embed_images(
    model: Any,
    files: Sequence[str | os.PathLike],
    batch_size: int = 8,
    threads: int | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
    prefetch: int = PREFETCH,
    preprocessing: Preprocessing | None = None,
) -> Embedded:
    """Outputs of ``model`` for image ``files``, in order (``kept`` holds them as Paths).

    ``model``: an :class:`~sfrs_edge.engine.Engine` (its metadata says how to decode), or a
    ``batch → array | dict`` callable with ``preprocessing`` given. A file that cannot be read
    raises :class:`ImageError` naming it, or with ``skip_bad`` is left out with a warning.
    """
    pre = preprocessing if preprocessing is not None else model.info.preprocessing
    infer = infer_fn(model) if hasattr(model, "embed") else model
    paths = [Path(f) for f in files]
    return embed_items(
        paths,
        lambda f: load_for_model(f, pre),
        infer,
        batch_size=batch_size,
        threads=threads,
        skip_bad=skip_bad,
        progress=progress,
        prefetch=prefetch,
    )
