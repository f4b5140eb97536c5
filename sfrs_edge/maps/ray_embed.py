"""Embedding a map's images on a Ray cluster (Ray Data), for ``map build SOURCE --ray [ADDRESS]``.

The file list becomes a dataset (``ray.data.from_items``), ``map_batches`` runs it through a
pool of actors that each hold one :class:`~sfrs_edge.engine.Engine` (created once per actor, not
per batch) and decode their own batch, and the driver gathers the outputs back in file order;
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

from ..errors import ConfigError, ImageError
from .embedding import Embedded, infer_fn

log = logging.getLogger(__name__)

ACTOR_CPUS = 0.75
LOCAL = "local"  # --ray without an address: start a local Ray instance


class EmbedActor:
    """One Engine per actor; a batch of paths in, outputs (or per-file errors) out."""

    def __init__(self, model: str, backend: str = "cpu", threads: int = 1) -> None:
        from ..engine import Engine

        self.engine = Engine.open(model, backend=backend, threads=threads)
        self.infer = infer_fn(self.engine)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..images import load_for_model

        pre = self.engine.info.preprocessing
        images, ok, errors = [], [], []
        for path in batch["path"]:
            try:
                images.append(load_for_model(str(path), pre))
                ok.append(True)
                errors.append("")
            except ImageError as exc:
                ok.append(False)
                errors.append(str(exc))
        n = len(batch["path"])
        out: dict[str, np.ndarray] = {
            "index": np.asarray(batch["index"]),
            "error": np.asarray(errors, dtype=object),
        }
        result = self.infer(np.stack(images)) if images else {}
        mask = np.asarray(ok)
        names = result.keys() if result else ["descriptor"]
        for name in names:
            if result:
                arr = np.asarray(result[name])
                full = np.zeros((n, *arr.shape[1:]), arr.dtype)
                full[mask] = arr
            else:
                full = np.zeros((n, self.engine.dim), np.float32)
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
) -> Embedded:
    """Outputs of ``model`` for ``files`` computed by a Ray actor pool, in file order."""
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
    return Embedded(outputs, kept, [errors[i] for i in bad], time.perf_counter() - t0)
