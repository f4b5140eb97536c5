"""Cost of verifying a model at open: content hash vs the digest cache, and ``Engine.open``.

::

    python -m benchmarks.model_open --make-vgg16 /tmp/vgg16.onnx   # random-weight VGG16 480x640
    python -m benchmarks.model_open /tmp/vgg16.onnx

Interleaves "cache cleared" and "cached" runs; prints medians and every run (seconds).
The digest cache lives in a temporary ``$SFRS_EDGE_HOME``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def make_vgg16(out: Path) -> None:
    """A random-weight VGG16 + NetVLAD(64) + PCA 4096 at 480x640, exported (about 600 MB)."""
    import numpy as np
    import torch
    from sfrs_edge.export.onnx_export import write_onnx
    from sfrs_edge.train.model import ModelConfig, SFRSNet, model_info

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vgg16", num_clusters=64, input_height=480, input_width=640)
    net = SFRSNet(cfg).eval()
    w = np.random.default_rng(0).standard_normal((4096, cfg.vlad_dim), dtype=np.float32)
    net.set_pca(w / np.sqrt(cfg.vlad_dim), np.zeros(4096, np.float32))
    write_onnx(net, out, model_info(net))


def measure(model: Path, verify_reps: int, open_reps: int) -> dict:
    os.environ["SFRS_EDGE_CACHE"] = tempfile.mkdtemp(prefix="sfrs-open-")
    from sfrs_edge import model_digest, verify_cache
    from sfrs_edge.engine import Engine

    runs: dict[str, list[float]] = {"verify_rehash": [], "verify_cached": []}
    runs |= {"open_rehash": [], "open_cached": []}

    def timed(key: str, fn) -> None:
        t = time.perf_counter()
        fn()
        runs[key].append(time.perf_counter() - t)

    for _ in range(verify_reps):
        verify_cache.forget()
        timed("verify_rehash", lambda: model_digest.verify_model_file(model))
        timed("verify_cached", lambda: model_digest.verify_model_file(model))
    for _ in range(open_reps):
        verify_cache.forget()
        timed("open_rehash", lambda: Engine.open(model, backend="cpu"))
        timed("open_cached", lambda: Engine.open(model, backend="cpu"))
    return {
        "model": str(model),
        "size_mb": round(model.stat().st_size / 1e6, 1),
        **{
            k: {"median": round(statistics.median(v), 4), "runs": [round(x, 4) for x in v]}
            for k, v in runs.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path)
    ap.add_argument("--make-vgg16", type=Path, help="export a random-weight VGG16 here and stop")
    ap.add_argument("--verify-reps", type=int, default=5)
    ap.add_argument("--open-reps", type=int, default=3)
    args = ap.parse_args()
    if args.make_vgg16:
        make_vgg16(args.make_vgg16)
        return
    if args.model is None:
        ap.error("give a model path (or --make-vgg16 OUT)")
    print(json.dumps(measure(args.model, args.verify_reps, args.open_reps)))


if __name__ == "__main__":
    main()
