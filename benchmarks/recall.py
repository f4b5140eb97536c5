"""Recall benchmark: R@1/5/10 on Gardens Point (3 pairings) and Corridor, |i-j| <= 2.

    python benchmarks/recall.py --checkpoint model.pt      # torch FP32 vs ONNX FP32 vs FP16
    python benchmarks/recall.py --model a.onnx --model b.onnx   # exported models as they are

Compares PyTorch FP32 against the exported ONNX FP32 and FP16 models (run through the runtime's
``Engine``), over PCA dimensions (truncations of the model's whitening; those above what the
model has are skipped and listed), with exact and HNSW search. Writes recall.json, recall.md and
one precision-recall plot per pairing.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import models, search  # noqa: E402
from benchmarks.common import (  # noqa: E402
    PAIRINGS_GP,
    RESULTS,
    Table,
    data_root,
    limit_threads,
    log,
    machine,
    plt_module,
    savefig,
    write_results,
)

TOLERANCE = 2
NS = (1, 5, 10)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="sfrs-edge checkpoint (repeatable); default: build an off-the-shelf Lite0",
    )
    p.add_argument(
        "--model",
        type=Path,
        action="append",
        default=[],
        help="exported .onnx model evaluated as is (repeatable)",
    )
    p.add_argument(
        "--vgg16-weights",
        type=Path,
        help="torchvision VGG16 ImageNet state dict: adds an off-the-shelf VGG16",
    )
    p.add_argument(
        "--pca-dims",
        default="4096,1024,512,256,128,64,32,none",
        help="PCA truncations to evaluate (those the model has)",
    )
    p.add_argument(
        "--onnx-dims",
        default="native",
        help="dims exported to ONNX FP32/FP16: 'native' (the model's own), 'all', or a list",
    )
    p.add_argument("--efs", default="16,128", help="HNSW ef values")
    p.add_argument(
        "--threads", type=int, default=0, help="torch/onnxruntime CPU threads (0: default)"
    )
    p.add_argument("--limit", type=int, default=0, help="use only the first N images per traversal")
    p.add_argument("--smoke", action="store_true", help="tiny run for tests")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.smoke:
        a.limit = a.limit or 20
        a.efs = "16"
        a.threads = a.threads or 1
    return a


# ------------------------------------------------------------------------------- data


def datasets(limit: int) -> dict[str, tuple[list[Path], list[Path]]]:
    """name → (database images, query images)."""
    from sfrs_edge.images import list_images

    root = data_root()
    out = {}
    gp = root / "gardens_point"
    if gp.is_dir():
        for db, q in PAIRINGS_GP:
            out[f"GP {db} <- {q}"] = (list_images(gp / db), list_images(gp / q))
    cor = root / "corridor"
    if cor.is_dir():
        out["Corridor ref <- query"] = (list_images(cor / "ref"), list_images(cor / "query"))
    if not out:
        raise SystemExit(f"error: no Gardens Point or Corridor images under {root}")
    return {k: (d[: limit or None], q[: limit or None]) for k, (d, q) in out.items()}


def unique_paths(sets: dict) -> list[Path]:
    seen: dict[Path, None] = {}
    for db, q in sets.values():
        for p in [*db, *q]:
            seen.setdefault(p, None)
    return list(seen)


# ---------------------------------------------------------------------------- scoring


def evaluate(desc: dict[Path, np.ndarray], sets: dict, efs: tuple[int, ...]) -> dict:
    """R@N (exact and HNSW at each ef) and top-1 (score, correct) per pairing."""
    from sfrs_edge.maps.index import HnswIndex, IndexConfig
    from sfrs_edge.recall import index_window_positives, rank_database, recall_at_n

    out = {}
    for name, (dbp, qp) in sets.items():
        db = np.stack([desc[p] for p in dbp]).astype(np.float32)
        q = np.stack([desc[p] for p in qp]).astype(np.float32)
        pos = index_window_positives(len(q), len(db), TOLERANCE)
        ranked = rank_database(q, db, max(NS))
        r = {"exact": recall_at_n(ranked, pos, NS)}
        for ef in efs:
            idx = HnswIndex.build(db, IndexConfig(type="hnsw", ef=ef))
            ids = search.memory_map(db, idx).search(q, max(NS), ef)[0]
            r[f"hnsw ef={ef}"] = recall_at_n(ids, pos, NS)
        sims = (q @ db.T)[np.arange(len(q)), ranked[:, 0]]
        correct = np.array([ranked[i, 0] in pos[i] for i in range(len(q))])
        r["top1"] = {"score": sims.tolist(), "correct": correct.tolist()}
        out[name] = r
    return out


def pr_curve(score: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Precision/recall of accepting the top-1 match above a threshold (all queries have a
    true match, so recall = correct accepted / queries)."""
    order = np.argsort(-np.asarray(score))
    c = np.asarray(correct, float)[order]
    tp = np.cumsum(c)
    precision = tp / np.arange(1, len(c) + 1)
    recall = tp / max(len(c), 1)
    return recall, precision


def cosines(a: dict[Path, np.ndarray], b: dict[Path, np.ndarray]) -> dict[str, float]:
    keys = list(a)
    x = np.stack([a[k] for k in keys]).astype(np.float64)
    y = np.stack([b[k] for k in keys]).astype(np.float64)
    c = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return {"min_cos": float(c.min()), "mean_cos": float(c.mean())}


# ----------------------------------------------------------------------------- models


def torch_variants(net, paths: list[Path], dims: list) -> tuple[dict, dict]:
    """Torch FP32 descriptors for each PCA dim, from one pass of the backbone + NetVLAD."""
    import torch
    from sfrs_edge.train.features import vlad_descriptors

    t0 = time.perf_counter()
    vlad = vlad_descriptors(net, paths, batch_size=8)
    log(f"torch: {len(paths)} images in {time.perf_counter() - t0:.1f} s")
    out, skipped = {}, {}
    have = net.pca.out_dim if net.pca is not None else 0
    for d in dims:
        if d == "none":
            out[d] = vlad
        elif d > have:
            skipped[d] = f"model has {have} PCA dims" if have else "model has no PCA layer"
        else:
            pca = copy.deepcopy(net.pca)
            pca.truncate(d)
            with torch.no_grad():
                out[d] = pca(torch.from_numpy(vlad)).numpy()
    return {d: dict(zip(paths, v, strict=True)) for d, v in out.items()}, skipped


def onnx_descriptors(path: Path, paths: list[Path], threads: int) -> dict[Path, np.ndarray]:
    from sfrs_edge.engine import Engine

    eng = Engine.open(path, backend="cpu", threads=threads or None)
    t0 = time.perf_counter()
    d = eng.embed_files(paths, batch_size=8)
    log(f"{path.name}: {len(paths)} images in {time.perf_counter() - t0:.1f} s")
    return dict(zip(paths, d, strict=True))


def bench_checkpoint(net, label: str, args, sets, paths, tmp: Path) -> list[dict]:
    """Rows for one torch model: torch dims + ONNX FP32/FP16 at the chosen dims."""
    dims = [d if d == "none" else int(d) for d in args.pca_dims.split(",")]
    efs = tuple(int(e) for e in args.efs.split(","))
    native = net.pca.out_dim if net.pca is not None else "none"
    if native not in dims:
        dims.insert(0, native)  # the model's own dimension is always evaluated
    tdesc, skipped = torch_variants(net, paths, dims)
    if args.onnx_dims == "native":
        odims = [native]
    elif args.onnx_dims == "all":
        odims = list(tdesc)
    else:
        odims = [d if d == "none" else int(d) for d in args.onnx_dims.split(",")]
    rows = []
    verify = models.gp_images(4, "day_left")
    for d, desc in tdesc.items():
        rows.append(
            {
                "model": label,
                "dim": d,
                "backend": "PyTorch FP32",
                "recall": evaluate(desc, sets, efs),
            }
        )
        if d not in odims:
            continue
        src = models.without_pca(net) if d == "none" else net
        for prec in ("fp32", "fp16"):
            out = tmp / f"{label}_{d}_{prec}.onnx"
            rep, err = models.export(
                src, out, prec == "fp16", verify, pca_dim=None if d == "none" else d
            )
            row = {"model": label, "dim": d, "backend": f"ONNX {prec.upper()}"}
            if rep is None:
                row["error"] = err
            else:
                od = onnx_descriptors(out, paths, args.threads)
                row["cosine_vs_torch"] = cosines(desc, od)
                row["recall"] = evaluate(od, sets, efs)
                out.unlink()
            rows.append(row)
    for d, why in skipped.items():
        rows.append({"model": label, "dim": d, "backend": "PyTorch FP32", "skipped": why})
    return rows


# ----------------------------------------------------------------------------- report


def tables(rows: list[dict], sets: list[str]) -> list[Table]:
    ts = []
    main = Table(
        "Recall@1 / @5 / @10 (%, exact search, |i-j| <= 2)",
        ["model", "PCA dim", "backend", "cos vs torch (min)"] + sets,
    )
    hn = Table("Recall@1 (%): exact vs HNSW", ["model", "PCA dim", "backend", "search"] + sets)
    skip = []
    for r in rows:
        if "skipped" in r or "error" in r:
            skip.append(
                f"- {r['model']} dim {r['dim']} {r['backend']}: "
                f"{r.get('skipped') or r.get('error')}"
            )
            continue
        rec = r["recall"]
        cos = r.get("cosine_vs_torch", {}).get("min_cos", "–")
        main.rows.append(
            [r["model"], r["dim"], r["backend"], cos if cos == "–" else f"{cos:.6f}"]
            + ["{:.1f} / {:.1f} / {:.1f}".format(*(rec[s]["exact"][n] for n in NS)) for s in sets]
        )
        for kind in [k for k in rec[sets[0]] if k != "top1"]:
            hn.rows.append(
                [r["model"], r["dim"], r["backend"], kind] + [rec[s][kind][1] for s in sets]
            )
    if skip:
        main.note = "Not run:\n" + "\n".join(skip)
    ts += [main, hn]
    return ts


def headline(rows: list[dict], sets: list[str]) -> list[dict]:
    """FP16 vs FP32 (torch) at each exported dim: min cosine and R@1 difference in points."""
    out = []
    torch_rows = {
        (r["model"], r["dim"]): r for r in rows if r["backend"] == "PyTorch FP32" and "recall" in r
    }
    for r in rows:
        if not r["backend"].startswith("ONNX") or "recall" not in r:
            continue
        t = torch_rows.get((r["model"], r["dim"]))
        diffs = {s: round(r["recall"][s]["exact"][1] - t["recall"][s]["exact"][1], 6) for s in sets}
        worst = max(abs(v) for v in diffs.values())
        cos = r["cosine_vs_torch"]["min_cos"]
        entry = {
            "model": r["model"],
            "dim": r["dim"],
            "backend": r["backend"],
            "min_cos": cos,
            "r1_diff_points": diffs,
            "worst_abs_r1_diff": worst,
        }
        if r["backend"] == "ONNX FP16":
            entry["goal"] = "FP16 vs FP32: cosine ≥ 0.999, R@1 diff ≤ 0.5 points"
            entry["status"] = "met" if cos >= 0.999 and worst <= 0.5 else "not met"
        out.append(entry)
    return out


def plot_pr(rows: list[dict], sets: list[str], out: Path) -> list[Path]:
    plt = plt_module()
    figs = []
    for i, s in enumerate(sets):
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in rows:
            if "recall" not in r:
                continue
            if r["backend"] == "PyTorch FP32" and not any(
                x["model"] == r["model"]
                and x["dim"] == r["dim"]
                and "recall" in x
                and x["backend"] != "PyTorch FP32"
                for x in rows
            ):
                continue  # PR curves for the dims with all backends (keeps the plot readable)
            rc, pr = pr_curve(**r["recall"][s]["top1"])
            ax.plot(rc, pr, lw=1, label=f"{r['model']} {r['dim']}-d {r['backend']}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_ylim(0, 1.0)
        ax.set_xlim(0, 1.0)
        for line in ax.get_lines():
            line.set_clip_on(False)  # precision 1.0 is on the frame, not above it
        ax.set_title(s)
        ax.legend(fontsize=7)
        figs.append(savefig(fig, out / f"recall_pr_{i}.png"))
    return figs


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        limit_threads(args.threads)
    sets = datasets(args.limit)
    paths = unique_paths(sets)
    names = list(sets)
    rows: list[dict] = []
    nets = []
    for ck in args.checkpoint:
        nets.append((models.load_net(ck), ck.stem))
    if not args.checkpoint and not args.model:
        log(
            "no --checkpoint/--model: building an off-the-shelf Lite0 (k-means NetVLAD on 50 "
            "Gardens Point day_right images, PCA whitening 32-d)"
        )
        net = models.quick_offtheshelf(
            (96, 160) if args.smoke else (360, 640), clusters=8 if args.smoke else 64
        )
        from sfrs_edge.train.features import vlad_descriptors
        from sfrs_edge.train.whitening import fit_pca_whitening

        fit = models.gp_images()[::4]
        w, b, _ = fit_pca_whitening(vlad_descriptors(net, fit), 32)
        net.set_pca(w, b)
        nets.append((net, "lite0-offtheshelf"))
    if args.vgg16_weights:
        from sfrs_edge.train.config import InitConfig
        from sfrs_edge.train.model import ModelConfig
        from sfrs_edge.train.offtheshelf import build_offtheshelf

        model = ModelConfig(backbone="vgg16", pca_dim=128)
        cfg = InitConfig(model=model, weights=str(args.vgg16_weights))
        nets.append((build_offtheshelf(models.gp_images(), cfg)[0], "vgg16-offtheshelf"))
    with tempfile.TemporaryDirectory(prefix="sfrs-recall-") as tmp:
        for net, label in nets:
            rows += bench_checkpoint(net, label, args, sets, paths, Path(tmp))
    efs = tuple(int(e) for e in args.efs.split(","))
    for m in args.model:
        d = onnx_descriptors(m, paths, args.threads)
        rows.append(
            {
                "model": m.stem,
                "dim": next(iter(d.values())).shape[0],
                "backend": "ONNX (as given)",
                "recall": evaluate(d, sets, efs),
            }
        )
    if not args.vgg16_weights:
        rows.append(
            {
                "model": "vgg16",
                "dim": "–",
                "backend": "–",
                "skipped": "no VGG16 ImageNet weights here (pass --vgg16-weights vgg16-397923af.pth)",
            }
        )
    results = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "pairings": names,
        "tolerance": TOLERANCE,
        "rows": rows,
        "headline": headline(rows, names),
    }
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    ts = tables(rows, names)
    hl = Table(
        "Headline: exported vs PyTorch FP32 (R@1 difference in points, exact search)",
        ["model", "PCA dim", "backend", "min cosine"] + names + ["goal"],
    )
    for h in results["headline"]:
        hl.rows.append(
            [h["model"], h["dim"], h["backend"], f"{h['min_cos']:.6f}"]
            + [f"{h['r1_diff_points'][s]:+.1f}" for s in names]
            + [h.get("status", "–")]
        )
    figs = plot_pr(rows, names, args.out)
    intro = (
        f"Run time: {results['seconds']} s. Ground truth |i-j| <= {TOLERANCE}; "
        f"{'first ' + str(args.limit) + ' images per traversal; ' if args.limit else ''}"
        "PCA dims are truncations of the model's whitening (rows sorted by eigenvalue), "
        "applied to the torch NetVLAD output; ONNX models are exported with export_model "
        "and run through sfrs_edge.engine.Engine (CPU)."
    )
    js, md = write_results("recall", args.out, results, [hl, *ts], intro, figs)
    log(f"wrote {js} and {md} in {results['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
