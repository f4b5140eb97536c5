"""Embedding a map's images on a Ray cluster (Ray Data), for ``map build SOURCE --ray [ADDRESS]``.

The file list becomes a dataset (``ray.data.from_items``), ``map_batches`` runs it through a
pool of actors that each hold one :class:`~sfrs_edge.engine.Engine` (created once per actor, not
per batch) and run their batch through the embedding pipeline (:mod:`sfrs_edge.embedding`), and
the driver gathers the outputs back in file order;
the map itself is then written by the normal single-process writer (atomic, checksummed).

Sizing: Ray Data schedules its own tasks (splitting, output) beside the actors. An actor pool
that reserves every CPU of the cluster leaves them none, and the dataset never finishes (seen
with Ray 2.60 on a 2-CPU local cluster with two 1-CPU actors). Each actor therefore asks for
``ACTOR_CPUS`` (a fraction) and there is one actor per CPU, so 1 − ``ACTOR_CPUS`` of every CPU
stays free for Ray's own tasks, while each actor still runs onnxruntime on one thread.

Paths: the model file and the images must be readable at the same path on every node (a
shared filesystem); a local cluster always satisfies this.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embedding import Embedded, embed_images
from ..errors import ConfigError, ImageError

log = logging.getLogger(__name__)

ACTOR_CPUS = 0.75
LOCAL = "local"  # --ray without an address: start a local Ray instance


class EmbedActor:
    """One Engine per actor; a batch of paths in, outputs (or per-file errors) out.

    The batch goes through the same embedding pipeline as a one-process build
    (:func:`sfrs_edge.embedding.embed_images`). Every output batch also carries ``actor`` (this
    actor's process id), so the driver can report which actors embedded how many rows.
    """

    def __init__(self, model: str, backend: str = "cpu", threads: int = 1) -> None:
        from ..engine import Engine

        self.engine = Engine.open(model, backend=backend, threads=threads)
        self.threads = threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(str(p)) for p in batch["path"]]
        n = len(paths)
        try:
            got = embed_images(self.engine, paths, n, self.threads, skip_bad=True)
            outputs, kept, skipped = got.outputs, set(got.kept), iter(got.skipped)
        except ImageError as exc:  # none of the batch could be read
            outputs, kept, skipped = {}, set(), iter([str(exc)] * n)
        mask = np.array([p in kept for p in paths])
        out: dict[str, np.ndarray] = {
            "index": np.asarray(batch["index"]),
            "error": np.asarray(["" if ok else next(skipped) for ok in mask], dtype=object),
            "actor": np.full(n, os.getpid(), np.int64),
        }
        if not outputs:
            outputs = {"descriptor": np.zeros((0, self.engine.dim), np.float32)}
        for name, arr in outputs.items():
            full = np.zeros((n, *arr.shape[1:]), arr.dtype)
            full[mask] = arr
            out[name] = full
        return out


def connect(address: str | None, num_cpus: int | None = None) -> Any:
    """``ray.init`` for an address (``local``/None: a local instance, ``auto``: the running
    cluster, ``ray://host:port``: a remote one). Returns the ray module."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            "--ray needs Ray Data: pip install 'sfrs-edge[cluster]' (ray[data]>=2.9)"
        ) from exc
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": False,
        }
        if address in (None, LOCAL):
            if num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
        else:
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address!r} ({exc})") from exc
    return ray


def embed_with_ray(
    model: str | os.PathLike,
    files: Sequence[str | os.PathLike],
    address: str | None = None,
    batch_size: int = 8,
    skip_bad: bool = False,
    workers: int | None = None,
    backend: str = "cpu",
) -> tuple[Embedded, dict[str, int]]:
    """Outputs of ``model`` for ``files`` computed by a Ray actor pool, in file order, and
    the rows each actor embedded (``{"pid <process id>": rows}``)."""
    ray = connect(address)
    files = [Path(f) for f in files]
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = workers or max(1, cpus)
    t0 = time.perf_counter()
    items = [{"index": i, "path": str(f.resolve())} for i, f in enumerate(files)]
    blocks = max(1, -(-len(items) // batch_size))  # one block per batch: every actor gets work
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"model": str(Path(model).resolve()), "backend": backend},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=workers,
        num_cpus=ACTOR_CPUS,
    )
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for name, arr in batch.items():
            parts.setdefault(name, []).append(arr)
    cols = {name: np.concatenate(p) for name, p in parts.items()}
    order = np.argsort(cols["index"], kind="stable")
    cols = {name: arr[order] for name, arr in cols.items()}
    if len(cols["index"]) != len(files) or not (cols["index"] == np.arange(len(files))).all():
        raise ImageError(f"Ray returned {len(cols['index'])} results for {len(files)} images")
    errors = [str(e) for e in cols.pop("error")]
    cols.pop("index")
    pids, rows = np.unique(cols.pop("actor"), return_counts=True)
    actors = {f"pid {int(p)}": int(r) for p, r in zip(pids, rows, strict=True)}
    bad = [i for i, e in enumerate(errors) if e]
    if bad and not skip_bad:
        raise ImageError(errors[bad[0]])
    for i in bad:
        log.warning("skipping %s", errors[i])
    keep = np.array([not e for e in errors])
    if not keep.any():
        raise ImageError(f"none of the {len(files)} images could be read: {errors[bad[0]]}")
    outputs = {name: np.ascontiguousarray(arr[keep]) for name, arr in cols.items()}
    kept = [f for f, k in zip(files, keep, strict=True) if k]
    embedded = Embedded(outputs, kept, [errors[i] for i in bad], time.perf_counter() - t0)
    return embedded, actors
