"""CPU speed table: model variants side by side in one run, interleaved.

    python benchmarks/latency.py --cpu-table \
        --lite0-checkpoint artifacts/lite0_gp.pt --lite0 today=artifacts/today_lite0.onnx \
        --lite0 int8=artifacts/int8_lite0.onnx \
        --vgg16-checkpoint artifacts/vgg16_random.pt --vgg16 today=artifacts/today_vgg16.onnx

Sections (each interleaved A B C A B C ..., so load hits all variants alike; ratios hold,
absolute figures are of a loaded machine when the load average says so):

1. per-frame inference (batch 1, preprocessed frame) of PyTorch eager (the anchor: the same
   uint8 frame through the same input adapter) and every ONNX variant, at each thread count,
   plus spin-waiting on/off for the first variant at the largest thread count;
2. map build images/s: a sequential loop (decode a batch, then infer it, in turn) vs the
   embedding pipeline (``sfrs_edge.embedding.embed_images``: decode pool overlapped with
   batched inference), same engine;
3. ``Localizer.localize`` frames/s over the night_right frames (decoded in memory) on an exact
   map of day_left, per Lite0 variant and thread count, with per-stage medians, the process CPU
   time per frame (idle-equivalent frames/s = 1 / CPU s per frame for one thread), and Recall@1
   of day_right and night_right against that map (|i - j| <= 2).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    RESULTS,
    Table,
    data_root,
    log,
    machine,
    time_interleaved,
    write_results,
)

TOLERANCE = 2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lite0-checkpoint", type=Path, required=True)
    p.add_argument("--vgg16-checkpoint", type=Path, default=None)
    p.add_argument("--lite0", action="append", default=[], help="LABEL=model.onnx (repeat)")
    p.add_argument("--vgg16", action="append", default=[], help="LABEL=model.onnx (repeat)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=15, help="Lite0 inference reps per variant")
    p.add_argument("--vgg-reps", type=int, default=4)
    p.add_argument("--build-images", type=int, default=100, help="images per map-build run")
    p.add_argument("--build-rounds", type=int, default=2)
    p.add_argument("--frames", type=int, default=200, help="night frames to localize")
    p.add_argument("--chunk", type=int, default=20, help="frames per variant turn")
    p.add_argument(
        "--skip", default="", help="comma list of sections to skip: infer,build,localize"
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    return p.parse_args(argv)


def _pairs(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        label, _, path = item.partition("=")
        out[label] = Path(path)
    return out


def gp(split: str, n: int = 0) -> list[Path]:
    from sfrs_edge.images import list_images

    return list_images(data_root() / "gardens_point" / split)[: n or None]


def _load(net_path: Path):
    from sfrs_edge.train.checkpoint import load_checkpoint
    from sfrs_edge.train.model import ExportWrapper

    net, _ = load_checkpoint(net_path)
    return ExportWrapper(net.eval()).eval(), net.config.preprocessing()


def inference(backbone: str, ckpt: Path, variants: dict[str, Path], threads, reps) -> list[dict]:
    """Section 1: per-frame inference, torch eager vs ONNX variants, per thread count."""
    import torch

    from sfrs_edge.backends.onnx import create_session
    from sfrs_edge.images import load_for_model

    wrapper, pre = _load(ckpt)
    frame = load_for_model(gp("night_right")[100], pre)[None]
    x = torch.from_numpy(frame)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        fns = {"pytorch eager": lambda: wrapper(x)}
        with torch.no_grad():
            for label, path in variants.items():
                sess = create_session(path, threads=t, spin=False)
                fns[label] = lambda s=sess: s.run(None, {"image": frame})
            if t == max(threads) and variants:
                first, path = next(iter(variants.items()))
                sess = create_session(path, threads=t, spin=True)
                fns[f"{first} (spin on)"] = lambda s=sess: s.run(None, {"image": frame})
            stats = time_interleaved(fns, reps)
        anchor = stats["pytorch eager"].p50
        for label, st in stats.items():
            rows.append(
                {
                    "backbone": backbone,
                    "threads": t,
                    "variant": label,
                    "p50_ms": round(st.p50, 1),
                    "p90_ms": round(st.p90, 1),
                    "speedup_vs_eager": round(anchor / st.p50, 2),
                    "load": round(os.getloadavg()[0], 1),
                }
            )
            log(f"{backbone} t={t} {label}: {st.p50:.1f} ms")
    return rows


def build_speed(model: Path, n: int, rounds: int, threads: int) -> list[dict]:
    """Section 2: a sequential embedding loop vs the overlapped pipeline, same engine,
    interleaved."""
    from sfrs_edge.embedding import embed_images
    from sfrs_edge.engine import Engine
    from sfrs_edge.images import load_for_model

    def sequential(files: list[Path], batch: int = 8) -> np.ndarray:
        pre = engine.info.preprocessing
        out = []
        for i in range(0, len(files), batch):
            out.append(
                engine.embed(np.stack([load_for_model(f, pre) for f in files[i : i + batch]]))
            )
        return np.concatenate(out)

    files = gp("day_left", n)
    engine = Engine.open(model, backend="cpu", threads=threads)
    rates: dict[str, list[float]] = {"sequential loop": [], "pipeline: decode pool": []}
    same = None
    for _ in range(rounds):
        t = time.perf_counter()
        a = sequential(files)
        rates["sequential loop"].append(len(files) / (time.perf_counter() - t))
        t = time.perf_counter()
        b = embed_images(engine, files, batch_size=8, threads=threads).descriptors
        rates["pipeline: decode pool"].append(len(files) / (time.perf_counter() - t))
        same = float(np.abs(a - b).max())
    base = float(np.median(rates["sequential loop"]))
    return [
        {
            "method": k,
            "images": len(files),
            "threads": threads,
            "images_per_s": round(float(np.median(v)), 2),
            "ratio": round(float(np.median(v)) / base, 2),
            "max_abs_diff": same,
            "load": round(os.getloadavg()[0], 1),
        }
        for k, v in rates.items()
    ]


def ray_speed(model: Path, n: int, tmp: Path) -> list[dict]:
    """Section 4: map build of the same folder, one process (pipeline) vs a local Ray instance
    with one actor per CPU; Ray's start-up is timed apart from the build."""
    import ray

    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import build_map

    files = gp("day_left", n)
    engine = Engine.open(model, backend="cpu")
    t = time.perf_counter()
    single = build_map(engine, files, tmp / "single")
    t_single = time.perf_counter() - t
    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t
    workers = int(ray.cluster_resources().get("CPU", 1))
    t = time.perf_counter()
    on_ray = build_map(engine, files, tmp / "ray", ray="auto")
    t_ray = time.perf_counter() - t
    ray.shutdown()
    diff = float(np.abs(single.descriptors - on_ray.descriptors).max())
    return [
        {
            "method": "one process (pipeline)",
            "images": n,
            "seconds": round(t_single, 1),
            "images_per_s": round(n / t_single, 2),
            "ratio": 1.0,
            "max_abs_diff": 0.0,
        },
        {
            "method": f"Ray Data, {workers} actors (+{t_init:.0f} s ray.init)",
            "images": n,
            "seconds": round(t_ray, 1),
            "images_per_s": round(n / t_ray, 2),
            "ratio": round(t_single / t_ray, 2),
            "max_abs_diff": diff,
        },
    ]


def _recall(ids: np.ndarray) -> float:
    return round(100.0 * float(np.mean(np.abs(ids - np.arange(len(ids))) <= TOLERANCE)), 1)


def localize_speed(variants: dict[str, Path], threads, n_frames: int, chunk: int, tmp: Path):
    """Section 3: Localizer.localize frames/s, stages, CPU time, and R@1 day/night per variant."""
    import cv2

    from sfrs_edge.engine import Engine
    from sfrs_edge.localize import Localizer
    from sfrs_edge.maps import build_map

    night = [cv2.imread(str(p)) for p in gp("night_right", n_frames)]
    day_q = gp("day_right")
    locs, recall = {}, {}
    for label, path in variants.items():
        m = build_map(Engine.open(path, backend="cpu"), gp("day_left"), tmp / f"map_{label}")
        ids, _ = m.search(Engine.open(path, backend="cpu").embed_files(day_q), 1)
        recall[label] = {"r1_day": _recall(ids[:, 0])}
        for t in threads:
            locs[(label, t)] = Localizer(path, tmp / f"map_{label}", backend="cpu", threads=t)
    acc = {key: {"wall": 0.0, "cpu": 0.0, "best": [], "stages": []} for key in locs}
    for start in range(0, len(night), chunk):
        for key, loc in locs.items():
            a = acc[key]
            c0, w0 = time.process_time(), time.perf_counter()
            for frame in night[start : start + chunk]:
                r = loc.localize(frame)
                a["best"].append(r.best.id)
                a["stages"].append(r.timings)
            a["wall"] += time.perf_counter() - w0
            a["cpu"] += time.process_time() - c0
    rows = []
    for (label, t), a in acc.items():
        n = len(a["best"])
        med = {k: round(float(np.median([s[k] for s in a["stages"]])), 1) for k in a["stages"][0]}
        rows.append(
            {
                "variant": label,
                "threads": t,
                "frames": n,
                "frames_per_s": round(n / a["wall"], 1),
                "cpu_ms_per_frame": round(1e3 * a["cpu"] / n, 1),
                "idle_equiv_fps_1core": round(n / a["cpu"], 1) if t == 1 else None,
                "preprocess_ms": med.get("preprocess"),
                "inference_ms": med.get("inference"),
                "search_ms": med.get("search"),
                "r1_night": _recall(np.array(a["best"])),
                "r1_day": recall[label]["r1_day"],
                "load": round(os.getloadavg()[0], 1),
            }
        )
        log(f"localize {label} t={t}: {rows[-1]}")
    return rows


def main(argv=None) -> int:
    import tempfile

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    threads = [int(t) for t in args.threads.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    lite0, vgg = _pairs(args.lite0), _pairs(args.vgg16)
    results: dict = {"machine": machine(), "load_start": os.getloadavg()[0]}
    t0 = time.perf_counter()
    if "infer" not in skip:
        rows = inference(
            "efficientnet_lite0 360x640", args.lite0_checkpoint, lite0, threads, args.reps
        )
        results["inference"] = rows
    if "build" not in skip:
        first = next(iter(lite0.values()))
        results["map_build"] = build_speed(
            first, args.build_images, args.build_rounds, max(threads)
        )
    if "localize" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            results["localize"] = localize_speed(lite0, threads, args.frames, args.chunk, Path(tmp))
    if "ray" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            first = next(iter(lite0.values()))
            results["ray"] = ray_speed(first, args.build_images, Path(tmp))
    if "infer" not in skip and args.vgg16_checkpoint and vgg:  # last: the slowest section
        results["inference"] += inference(
            "vgg16 480x640", args.vgg16_checkpoint, vgg, threads, args.vgg_reps
        )
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["load_end"] = os.getloadavg()[0]
    tables = [
        _table("Per-frame inference (batch 1)", results.get("inference", [])),
        _table("Map build embedding", results.get("map_build", [])),
        _table("Localizer.localize, night_right on an exact day_left map", results.get("localize")),
        _table("Map build: one process vs Ray (same folder)", results.get("ray")),
    ]
    write_results("cpu_variants", args.out, results, [t for t in tables if t.rows])
    return 0


def _table(title: str, rows: list[dict] | None) -> Table:
    rows = rows or []
    headers = list(rows[0]) if rows else []
    return Table(title, headers, [[r[h] for h in headers] for r in rows])
