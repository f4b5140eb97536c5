"""Latency benchmark: one frame through decode → preprocess → inference → search, per backend.

    python benchmarks/latency.py            # defaults: a few minutes on a 2-core CPU
    python benchmarks/latency.py --full     # more reps, batch 32 everywhere, 100k search maps
    python benchmarks/latency.py --device cuda   # GPU: torch on CUDA, onnxruntime CUDA/TensorRT
    python benchmarks/latency.py --cpu-table ... # model variants, threads, map build, localize
                                                 # (benchmarks/cpu_variants.py)

Backends run side by side in one process, interleaved call by call (A B C A B C ...), so their
ratios hold on a noisy shared machine: PyTorch eager FP32 (the torch SFRSNet fed the same uint8
image through the same input adapter), onnxruntime FP32 and FP16 through the runtime's
``Engine``, and CUDA/TensorRT providers when present.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import models, search  # noqa: E402
from benchmarks.common import (  # noqa: E402
    RESULTS,
    Stats,
    Table,
    data_root,
    limit_threads,
    log,
    machine,
    plt_module,
    reps_for_budget,
    savefig,
    time_call,
    time_interleaved,
    write_results,
)

STAGES = ("decode", "preprocess", "inference", "search")


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="Lite0 checkpoint to time (default: a quick "
        "off-the-shelf Lite0 built on Gardens Point + a random 4096-d PCA layer)",
    )
    p.add_argument("--backbones", default="efficientnet_lite0,vgg16")
    p.add_argument("--input-sizes", default="480x640,240x320")
    p.add_argument(
        "--pca-dim",
        default="4096",
        help="PCA layer of the timed models "
        "(random orthonormal weights; 'none': raw NetVLAD; 'keep': the checkpoint's)",
    )
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--reps", type=int, default=30, help="max timed repetitions per cell")
    p.add_argument("--budget-s", type=float, default=4.0, help="time per cell and backend")
    p.add_argument(
        "--max-call-s",
        type=float,
        default=6.0,
        help="skip a throughput batch whose single call would take longer (not --full)",
    )
    p.add_argument("--sizes", default="1000,10000", help="search map sizes")
    p.add_argument("--dims", default="4096,512", help="search descriptor dims")
    p.add_argument("--efs", default="16,32,64,128,256")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument(
        "--base-limit",
        type=int,
        default=0,
        help="real base descriptors: first N frames per traversal (0: all 822 images)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for torch and onnxruntime alike (0: each library's default)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--only", default="all", choices=("all", "inference", "search"))
    p.add_argument(
        "--full",
        action="store_true",
        help="100k search maps, batch 32 everywhere, 100 reps, 20 s budget per cell",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny run for tests: Lite0 96x160, 8 clusters, batches 1,2, map 1k",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.full:
        a.sizes = "1000,10000,100000" if a.sizes == "1000,10000" else a.sizes
        a.reps, a.budget_s, a.max_call_s = max(a.reps, 100), max(a.budget_s, 20.0), 1e9
    if a.smoke:
        a.backbones, a.input_sizes, a.batches = "efficientnet_lite0", "96x160", "1,2"
        a.sizes, a.dims, a.efs, a.queries, a.reps, a.budget_s = "1000", "512", "16,64", 50, 5, 1.0
        a.pca_dim, a.threads = "none", a.threads or 1
    return a


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


# ------------------------------------------------------------------------- backends


class TorchRunner:
    """PyTorch eager FP32: ExportWrapper (uint8 NHWC in, same input adapter as the export)."""

    def __init__(self, net, device: str) -> None:
        import torch
        from sfrs_edge.train.model import ExportWrapper

        self.torch = torch
        self.device = device
        self.model = ExportWrapper(net).eval().to(device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            y = self.model(x)
            return y.cpu().numpy()  # .cpu() synchronises CUDA


def open_engines(paths: dict[str, Path], device: str, threads: int = 0) -> dict:
    """name → Engine for each exported file and each execution provider to compare."""
    import onnxruntime as ort

    from sfrs_edge.engine import Engine

    kinds = ["cpu"]
    if device == "cuda":
        kinds = ["cuda"]
        if "TensorrtExecutionProvider" in ort.get_available_providers():
            kinds.append("tensorrt")
    out = {}
    for prec, path in paths.items():
        for kind in kinds:
            try:
                out[f"onnxruntime {kind.upper()} {prec}"] = Engine.open(
                    path, backend=kind, threads=threads or None
                )
            except Exception as exc:  # noqa: BLE001 - record and go on with the others
                log(f"cannot open {path.name} with {kind}: {exc}")
    return out


# -------------------------------------------------------------------------- benchmark


def frame_pipelines(runners: dict, engines: dict, pre, jpeg: bytes, db_map, stage_log):
    """name → a callable running one frame end to end, appending stage times to stage_log."""
    from sfrs_edge.images import decode_image, resize_for_model

    def torch_pipeline(run, name):
        buf = np.zeros((1, pre.height, pre.width, 3), np.uint8)

        def go():
            t0 = time.perf_counter()
            frame = decode_image(jpeg)
            t1 = time.perf_counter()
            resize_for_model(frame, pre, out=buf[0])
            t2 = time.perf_counter()
            desc = run(buf)[0]
            t3 = time.perf_counter()
            db_map.search(desc, 10)
            t4 = time.perf_counter()
            stage_log[name].append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))

        return go

    def engine_pipeline(engine, name):
        def go():
            t0 = time.perf_counter()
            frame = decode_image(jpeg)
            t1 = time.perf_counter()
            desc = engine.embed_frame(frame)
            t3 = time.perf_counter()
            db_map.search(desc, 10)
            t4 = time.perf_counter()
            tm = engine.last_timings
            stage_log[name].append((t1 - t0, tm["preprocess"], tm["inference"], t4 - t3))

        return go

    fns = {name: torch_pipeline(r, name) for name, r in runners.items()}
    fns.update({name: engine_pipeline(e, name) for name, e in engines.items()})
    return fns


def bench_model(net, size, args, verify, jpeg, base, seqs, tmp: Path) -> dict:
    """All backends on one (backbone, input size): frame stages + batch throughput."""
    net = models.resized(net, size)
    label = f"{net.config.backbone} {size[0]}x{size[1]}"
    pre = net.config.preprocessing()
    dim = net.config.descriptor_dim
    res: dict = {"backbone": net.config.backbone, "input": f"{size[0]}x{size[1]}", "dim": dim}
    stem = f"{net.config.backbone}_{size[0]}x{size[1]}"
    paths, errors = {}, {}
    for prec in ("fp32", "fp16"):
        rep, err = models.export(net, tmp / f"{stem}_{prec}.onnx", prec == "fp16", verify)
        if rep is not None:
            paths[prec.upper()] = rep.path
            res[f"parity_{prec}"] = {
                "min_cos": rep.min_cos,
                "mean_cos": rep.mean_cos,
                "images": rep.num_images,
            }
        else:
            errors[prec.upper()] = err
    res["export_errors"] = errors
    runners = {"PyTorch eager FP32": TorchRunner(net, args.device)}
    if args.device == "cuda":
        runners["PyTorch eager FP32 (CPU)"] = TorchRunner(net, "cpu")
    engines = open_engines(paths, args.device, args.threads)
    res["backends"] = list(runners) + list(engines)
    # a 10k exact map of this model's dimension, grown from real descriptors
    db = search.grow(search.to_dim(base, dim, 0), seqs, 10_000, np.random.default_rng(1))
    from sfrs_edge.maps.index import ExactIndex

    db_map = search.memory_map(db, ExactIndex(db))
    # ---- one frame, per stage, interleaved
    stage_log: dict[str, list] = {n: [] for n in res["backends"]}
    fns = frame_pipelines(runners, engines, pre, jpeg, db_map, stage_log)
    per_call = max(time_call(f) for f in fns.values())  # warm-up + estimate
    reps = reps_for_budget(per_call, args.budget_s, 3, args.reps)
    log(f"{label}: frame ~{per_call * 1e3:.0f} ms/backend, {reps} reps")
    for v in stage_log.values():
        v.clear()
    totals = time_interleaved(fns, reps, warmup=1)
    frame = {}
    for name in fns:
        arr = np.array(stage_log[name][-reps:])
        frame[name] = {
            "total": totals[name].summary(),
            **{s: Stats(list(arr[:, i])).summary() for i, s in enumerate(STAGES)},
        }
    res["frame"] = frame
    # ---- throughput
    rng = np.random.default_rng(0)
    calls = {n: r for n, r in runners.items()}
    calls.update({n: e.embed for n, e in engines.items()})
    res["throughput"] = {}
    for b in ints(args.batches):
        batch = rng.integers(0, 256, (b, size[0], size[1], 3), dtype=np.uint8)
        est = per_call * b
        if est > args.max_call_s:
            res["throughput"][b] = {"skipped": f"~{est:.0f} s per call; run with --full"}
            log(f"{label}: batch {b} skipped (~{est:.0f} s per call)")
            continue
        fns_b = {n: (lambda c=c, x=batch: c(x)) for n, c in calls.items()}
        one = max(time_call(f) for f in fns_b.values())
        r = reps_for_budget(one, args.budget_s, 2, args.reps)
        st = time_interleaved(fns_b, r, warmup=0)
        res["throughput"][b] = {
            n: {**s.summary(), "images_per_s": round(b / (s.p50 / 1e3), 2)} for n, s in st.items()
        }
        log(
            f"{label}: batch {b}: "
            + ", ".join(f"{n} {b / (s.p50 / 1e3):.1f}/s" for n, s in st.items())
        )
    del runners, engines, db_map, db
    gc.collect()
    return res


def search_only(args, base, seqs) -> list[dict]:
    cfg = search.SearchConfig(
        dims=ints(args.dims),
        sizes=ints(args.sizes),
        efs=ints(args.efs),
        queries=args.queries,
        timed_queries=min(args.queries, 100),
    )
    rows = search.run(base, seqs, cfg)
    search.speedups(rows)
    return rows


# ------------------------------------------------------------------------------ report


def tables(results: dict) -> list[Table]:
    out = []
    t_stage = Table(
        "One frame, per stage (ms, p50 / p90 / p99)",
        [
            "model",
            "input",
            "backend",
            "decode",
            "preprocess",
            "inference",
            "search (10k exact)",
            "end to end",
            "overhead / inference",
        ],
    )
    batches = sorted({int(b) for m in results.get("models", []) for b in m["throughput"]})
    t_tp = Table(
        "Throughput (images/s from p50 batch latency)",
        ["model", "input", "backend"] + [f"batch {b}" for b in batches],
    )
    t_par = Table(
        "Export parity vs torch FP32 (cosine on real images)",
        ["model", "input", "FP32 min cos", "FP16 min cos", "export errors"],
    )
    for m in results.get("models", []):
        for name, f in m["frame"].items():
            ov = (f["decode"]["p50_ms"] + f["preprocess"]["p50_ms"] + f["search"]["p50_ms"]) / f[
                "inference"
            ]["p50_ms"]

            def c(s):
                return f"{s['p50_ms']:.1f} / {s['p90_ms']:.1f} / {s['p99_ms']:.1f}"

            t_stage.rows.append(
                [
                    m["backbone"],
                    m["input"],
                    name,
                    c(f["decode"]),
                    c(f["preprocess"]),
                    c(f["inference"]),
                    c(f["search"]),
                    c(f["total"]),
                    f"{100 * ov:.1f} %",
                ]
            )
        for name in m["backends"]:
            row = [m["backbone"], m["input"], name]
            for b in batches:
                tp = m["throughput"].get(b) or m["throughput"].get(str(b))
                if tp is None:
                    row.append("–")
                elif "skipped" in tp:
                    row.append("skipped")
                else:
                    row.append(tp[name]["images_per_s"] if name in tp else "–")
            t_tp.rows.append(row)
        t_par.rows.append(
            [
                m["backbone"],
                m["input"],
                m.get("parity_fp32", {}).get("min_cos", "–"),
                m.get("parity_fp16", {}).get("min_cos", "–"),
                "; ".join(f"{k}: {v[:120]}" for k, v in m["export_errors"].items()) or "none",
            ]
        )
    if results.get("models"):
        out += [t_stage, t_tp, t_par]
    if results.get("search"):
        out.append(search.table(results["search"], results.get("search_note", "")))
    if results.get("goals"):
        g = Table("Goals", ["goal", "measured", "status"])
        g.rows = [[x["goal"], x["measured"], x["status"]] for x in results["goals"]]
        out.insert(0, g)
    return out


def goals(results: dict) -> list[dict]:
    out = []
    for m in results.get("models", []):
        f = m["frame"]
        torch_name, ort_name = "PyTorch eager FP32", "onnxruntime CPU FP32"
        if torch_name in f and ort_name in f:
            r = f[torch_name]["inference"]["p50_ms"] / f[ort_name]["inference"]["p50_ms"]
            out.append(
                {
                    "goal": f"ORT FP32 ≥ 1.5× PyTorch eager (CPU), {m['backbone']} {m['input']}",
                    "measured": f"{r:.2f}×",
                    "status": "met" if r >= 1.5 else "not met",
                }
            )
        if ort_name in f:
            x = f[ort_name]
            ov = (x["decode"]["p50_ms"] + x["preprocess"]["p50_ms"] + x["search"]["p50_ms"]) / x[
                "inference"
            ]["p50_ms"]
            out.append(
                {
                    "goal": f"overhead < 10 % of inference, {m['backbone']} {m['input']}",
                    "measured": f"{100 * ov:.1f} %",
                    "status": "met" if ov < 0.1 else "not met",
                }
            )
    rows = [
        r
        for r in results.get("search", [])
        if r["size"] == 100_000 and r["dim"] == 4096 and r["index"] == "hnsw"
    ]
    ok = [r for r in rows if r["top1_agreement"] >= 99.0]
    if rows:
        best = (
            max(ok, key=lambda r: r["speedup_vs_exact"])
            if ok
            else max(rows, key=lambda r: r["top1_agreement"])
        )
        met = bool(ok) and best["speedup_vs_exact"] >= 10
        out.append(
            {
                "goal": "HNSW 100k×4096: ≥10× exact with top-1 ≥ 99 %",
                "measured": f"ef={best['ef']}: {best['speedup_vs_exact']}×, top-1 "
                f"{best['top1_agreement']:.1f} %",
                "status": "met" if met else "not met",
            }
        )
    return out


def plots(results: dict, out: Path) -> list[Path]:
    figs = []
    plt = plt_module()
    ms = results.get("models", [])
    if ms:
        fig, axes = plt.subplots(1, len(ms), figsize=(2.6 * len(ms), 3.2), squeeze=False)
        for ax, m in zip(axes[0], ms, strict=True):
            names = list(m["frame"])
            bottom = np.zeros(len(names))
            for s in STAGES:
                v = np.array([m["frame"][n][s]["p50_ms"] for n in names])
                ax.bar(range(len(names)), v, bottom=bottom, label=s)
                bottom += v
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(
                [
                    n.replace("onnxruntime ", "ORT ").replace("PyTorch eager ", "torch ")
                    for n in names
                ],
                rotation=60,
                fontsize=6,
                ha="right",
            )
            ax.set_title(f"{m['backbone']}\n{m['input']}", fontsize=7)
            ax.tick_params(axis="y", labelsize=6)
        axes[0][0].set_ylabel("ms per frame (p50)")
        axes[0][0].legend(fontsize=6)
        figs.append(savefig(fig, out / "latency_stages.png"))
    if results.get("search"):
        figs.append(search.plot(results["search"], out / "search_tradeoff.png"))
    return figs


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--cpu-table" in argv:  # the CPU variant table: benchmarks/cpu_variants.py
        from benchmarks import cpu_variants

        return cpu_variants.main([a for a in argv if a != "--cpu-table"])
    args = parse_args(argv)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no CUDA GPU", file=sys.stderr)
            return 1
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        limit_threads(args.threads)
    # the Lite0 net: real ImageNet backbone + k-means NetVLAD (checkpoint or quick build)
    if args.checkpoint:
        lite0 = models.load_net(args.checkpoint)
    elif args.smoke:
        lite0 = models.quick_offtheshelf((96, 160), clusters=8)
    else:
        lite0 = models.quick_offtheshelf()
    # real base descriptors (GP + Corridor) for the search maps
    base_size = (96, 160) if args.smoke else (180, 320)
    base, seqs = search.base_descriptors(
        lite0,
        data_root(),
        base_size,
        cache=models.CACHE,
        per_seq=20 if args.smoke else args.base_limit,
    )
    results["search_base"] = {
        "descriptors": len(base),
        "dim": int(base.shape[1]),
        "model": lite0.config.backbone,
        "input": base_size,
    }
    if args.only in ("all", "inference"):
        pca = args.pca_dim.lower()
        pca_dim = None if pca in ("none", "keep") else int(pca)
        nets = {}
        for bb in args.backbones.split(","):
            if bb == "efficientnet_lite0":
                n = models.without_pca(lite0) if pca == "none" else lite0
                nets[bb] = n if pca in ("none", "keep") else models.with_random_pca(n, pca_dim)
            elif bb == "vgg16":
                nets[bb] = models.vgg16_random(pca_dim=None if pca in ("none", "keep") else pca_dim)
            else:
                print(f"error: unknown backbone {bb}", file=sys.stderr)
                return 1
        verify = models.gp_images(2, "day_left")
        jpeg = verify[0].read_bytes()
        results["models"] = []
        with tempfile.TemporaryDirectory(prefix="sfrs-bench-") as tmp:
            for net in nets.values():
                for size in [parse_size(s) for s in args.input_sizes.split(",")]:
                    results["models"].append(
                        bench_model(net, size, args, verify, jpeg, base, seqs, Path(tmp))
                    )
    if args.only in ("all", "search"):
        results["search"] = search_only(args, base, seqs)
        results["search_note"] = (
            f"Maps grown from {len(base)} real Lite0 NetVLAD descriptors of Gardens Point + "
            "Corridor (see benchmarks/search.py): consecutive-frame interpolation + noise. "
            f"HNSW M=16, ef_construction=200; {args.queries} queries for agreement."
        )
    results["goals"] = goals(results)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    figs = plots(results, args.out)
    intro = (
        f"Run time: {results['seconds']} s. Model weights: Lite0 = ImageNet backbone + "
        "k-means NetVLAD (real); VGG16 = random weights (speed only); PCA layers = random "
        f"orthonormal {args.pca_dim}-d (speed only)."
    )
    js, md = write_results("latency", args.out, results, tables(results), intro, figs)
    log(f"wrote {js} and {md} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
