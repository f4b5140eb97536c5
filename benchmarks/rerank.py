"""Re-ranking benchmark: global-only vs re-ranked recall, weight-map ablation, latency, bytes.

Model: the off-the-shelf EfficientNet-Lite0 + NetVLAD fitted on Gardens Point ``day_right``
(as ``sfrs-edge demo``; 20480-d, no PCA). Step 1 (``--cache``) runs the network once over the
800 images and keeps global descriptors and both dense feature maps in ``artifacts/rerank/``;
every variant after that runs only the (torch) local head on the cached maps and the runtime's
numpy/OpenCV re-ranking, so ablations cost seconds.

    python -m benchmarks.rerank            # cache (first time), then all tables
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sfrs_edge.recall import index_window_positives, recall_at_n
from sfrs_edge.rerank import RerankConfig, rerank

from .common import REPO, data_root

log = logging.getLogger("rerank")
CACHE = REPO / "artifacts" / "rerank"
TOLERANCE = 2
SETS = {
    "day_left": ("gardens_point", "day_left"),
    "day_right": ("gardens_point", "day_right"),
    "night_right": ("gardens_point", "night_right"),
    "corridor_ref": ("corridor", "ref"),
    "corridor_query": ("corridor", "query"),
}
PAIRS = (
    ("day_left", "night_right"),
    ("day_left", "day_right"),
    ("day_right", "night_right"),
    ("corridor_ref", "corridor_query"),
)
KS = (5, 10, 20, 50)


# ----------------------------------------------------------------------------- caching


def build_cache() -> None:
    """Fit the off-the-shelf model on day_right and store descriptors + dense maps per set."""
    import torch
    from sfrs_edge.train.checkpoint import load_checkpoint, save_checkpoint
    from sfrs_edge.train.features import image_batches
    from sfrs_edge.train.local_features import backbone_maps
    from sfrs_edge.train.model import InputAdapter
    from sfrs_edge.train.offtheshelf import InitConfig, build_offtheshelf

    from sfrs_edge.images import list_images

    CACHE.mkdir(parents=True, exist_ok=True)
    ckpt = CACHE / "checkpoint.pt"
    root = data_root()
    if not ckpt.exists():
        net, prov = build_offtheshelf(
            list_images(root / "gardens_point" / "day_right"), InitConfig()
        )
        save_checkpoint(net, ckpt, prov)
    net, _ = load_checkpoint(ckpt)
    pre = net.config.preprocessing()
    adapter = InputAdapter(pre)
    for name, (ds, sub) in SETS.items():
        out = CACHE / f"{name}.npz"
        if out.exists():
            continue
        files = list_images(root / ds / sub)
        desc, fine, final = [], [], []
        t = time.time()
        with torch.no_grad():
            for batch in image_batches(files, pre, 8):
                x = adapter(batch)
                f, y = backbone_maps(net.backbone, x)
                g = net.netvlad(y)
                g = net.pca(g) if net.pca is not None else g
                desc.append(g.numpy())
                fine.append(f.half().numpy())
                final.append(y.half().numpy())
        np.savez(
            out,
            desc=np.concatenate(desc),
            fine=np.concatenate(fine),
            final=np.concatenate(final),
            names=np.array([p.name for p in files]),
        )
        log.info("cached %s: %d images in %.0f s", name, len(files), time.time() - t)


def load_set(name: str) -> dict[str, np.ndarray]:
    with np.load(CACHE / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------- local features


class Features:
    """Cached sets + the model, turning a :class:`LocalConfig` into local features per set."""

    def __init__(self) -> None:
        from sfrs_edge.train.checkpoint import load_checkpoint

        self.net, _ = load_checkpoint(CACHE / "checkpoint.pt")
        self.sets = {name: load_set(name) for name in SETS}
        self._pca: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def pca(self, layer: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Local PCA fitted on every location of 100 day_right images (``init`` fits on day_right)."""
        from sfrs_edge.train.local_features import fit_local_pca

        if (layer, dim) not in self._pca:
            maps = self.sets["day_right"][layer][::2].astype(np.float32)  # 100 images
            x = maps.transpose(0, 2, 3, 1).reshape(-1, maps.shape[1])
            x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
            self._pca[(layer, dim)] = fit_local_pca(x, dim)
        return self._pca[(layer, dim)]

    def local(self, name: str, cfg) -> tuple[np.ndarray, np.ndarray]:
        """(features (N, P, D) float16, xy (N, P, 2) float32) of a set under ``cfg``."""
        import torch
        from sfrs_edge.train.local_features import LocalHead

        s = self.sets[name]
        head = LocalHead(cfg, s[cfg.layer].shape[1], self.net.config.preprocessing().size)
        head.set_projection(*self.pca(cfg.layer, cfg.dim))
        feats, xys = [], []
        with torch.no_grad():
            for i in range(0, len(s["desc"]), 25):
                fine = torch.from_numpy(s["fine"][i : i + 25]).float()
                final = torch.from_numpy(s["final"][i : i + 25]).float()
                f, xy = head(self.net, fine, final)
                feats.append(f.numpy())
                xys.append(xy.numpy())
        return np.concatenate(feats), np.concatenate(xys)


# ----------------------------------------------------------------------------- evaluation


def positives(db: str, query: str, n_q: int, n_db: int) -> list[np.ndarray]:
    return index_window_positives(n_q, n_db, TOLERANCE)


def global_ranking(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ db.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def candidate_inliers(
    qf, qxy, dbf, dbxy, ranked: np.ndarray, rr: RerankConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Inliers and matches (Q, K) of every query against its top-K global candidates."""
    from sfrs_edge.rerank.match import count_inliers, mutual_matches

    inl = np.zeros(ranked.shape, np.int64)
    mat = np.zeros(ranked.shape, np.int64)
    for i, row in enumerate(ranked):
        for j, c in enumerate(row):
            pairs, _ = mutual_matches(qf[i], dbf[c], rr.min_similarity)
            mat[i, j] = len(pairs)
            if len(pairs) > rr.min_inliers:
                inl[i, j] = count_inliers(
                    qxy[i][pairs[:, 0]], dbxy[c][pairs[:, 1]], rr.geometry, rr.reproj_px
                )
    return inl, mat


def reranked_lists(ranked, sims, inliers, k: int, rr: RerankConfig) -> np.ndarray:
    """Top-k of each global list re-ordered by the fused score, the rest unchanged."""
    from sfrs_edge.rerank.stage import fused_scores

    out = ranked.copy()
    for i in range(len(ranked)):
        order = np.argsort(-fused_scores(sims[i, :k], inliers[i, :k], rr), kind="stable")
        out[i, :k] = ranked[i, :k][order]
    return out


def recall(lists: np.ndarray, pos) -> dict[int, float]:
    return {n: round(v, 1) for n, v in recall_at_n(lists, pos, (1, 5, 10)).items()}


def latency(qf, qxy, dbf, dbxy, ranked, sims, rr: RerankConfig, k: int = 10) -> dict[str, float]:
    """Added time per query of :func:`sfrs_edge.rerank.rerank` over the top-k, in ms: wall
    time and (``cpu_*``) this thread's CPU time, which a loaded machine inflates far less."""
    times, cpu = [], []
    for i in range(len(ranked)):
        c = ranked[i, :k]
        t, tc = time.perf_counter(), time.thread_time()
        rerank(qf[i], qxy[i], dbf[c], dbxy[c], sims[i, :k], replace(rr, k=k))
        times.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - tc) * 1000)
    return {
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
        "cpu_p90_ms": round(float(np.percentile(cpu, 90)), 2),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p90_ms": round(float(np.percentile(times, 90)), 2),
    }


def bytes_per_image(feats: np.ndarray) -> int:
    """Bytes a map stores per image: float16 features + float16 pixel coordinates."""
    p, d = feats.shape[1:]
    return p * d * 2 + p * 2 * 2


def run_variant(feats: Features, lcfg, rr: RerankConfig, ks=KS, pairs=PAIRS, timing=True) -> dict:
    """Recall (global and re-ranked at every k), latency at k=10 and bytes, for every pair."""
    local = {name: feats.local(name, lcfg) for name in {n for p in pairs for n in p}}
    out = {"local": lcfg.to_dict(), "rerank": rr.to_dict(), "pairs": {}}
    kmax = max(ks)
    for db, q in pairs:
        dset, qset = feats.sets[db], feats.sets[q]
        pos = positives(db, q, len(qset["desc"]), len(dset["desc"]))
        ranked, sims = global_ranking(qset["desc"], dset["desc"], kmax)
        (qf, qxy), (dbf, dbxy) = local[q], local[db]
        inl, _ = candidate_inliers(qf, qxy, dbf, dbxy, ranked, rr)
        row = {"global": recall(ranked, pos)}
        for k in ks:
            row[f"k{k}"] = recall(reranked_lists(ranked, sims, inl, k, rr), pos)
        if timing:
            row["latency_k10"] = latency(qf, qxy, dbf, dbxy, ranked, sims, rr)
        out["pairs"][f"{db}<-{q}"] = row
        out["_cache"] = out.get("_cache", {})
        out["_cache"][f"{db}<-{q}"] = (ranked, sims, inl, pos)
    out["bytes_per_image"] = bytes_per_image(local[pairs[0][0]][0])
    return out


def fusion_grid(result: dict, grid: list[RerankConfig], k: int = 10) -> list[dict]:
    """R@1 per pair for fusion settings, reusing the inliers of ``result`` (no re-matching)."""
    rows = []
    for rr in grid:
        row = {"weight": rr.weight, "min_inliers": rr.min_inliers, "full_inliers": rr.full_inliers}
        for pair, (ranked, sims, inl, pos) in result["_cache"].items():
            row[pair] = recall(reranked_lists(ranked, sims, inl, k, rr), pos)[1]
        rows.append(row)
    return rows


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------- calibration


def _estimator(n: int):
    """A Localizer's answer/confidence rule over a map of ``n`` index-positioned places
    (positions = frame index, as the demo's map; far radius 25, the default)."""
    from sfrs_edge.estimate import Estimator

    return Estimator(np.arange(n, dtype=np.float64)[:, None], "xy", 25.0, 10, 0.25, 5.0)


def _filtered(scores: np.ndarray, method: str) -> np.ndarray:
    """Temporally filtered best row per frame (frames in sequence order)."""
    from sfrs_edge.stream.filtering import FilterConfig, TemporalFilter

    filt = TemporalFilter(FilterConfig(method=method, window=5))
    return np.array([int(np.argmax(filt.update(s))) for s in scores])


def calibration(result: dict, rr: RerankConfig, k: int = 10) -> dict:
    """Per pair: share of answers with confidence ≥ t and how many of those are right,
    global vs re-ranked; and R@1 of the seq/hmm-filtered answers over global vs fused scores."""
    from sfrs_edge.rerank import RerankResult
    from sfrs_edge.rerank.stage import evidence, fused_scores

    out = {}
    for pair, (ranked, sims, inl, pos) in result["_cache"].items():
        db, q = pair.split("<-")
        full = result["_full"][pair]  # (Q, N) global similarities
        est = _estimator(full.shape[1])
        rows = {"global": [], "reranked": []}
        fused_all = full.copy()
        for i in range(len(ranked)):
            g = est.estimate(ranked[i, :32], sims[i, :32], 5)
            f = fused_scores(sims[i, :k], inl[i, :k], rr)
            order = np.argsort(-f, kind="stable")
            vr = RerankResult(
                order,
                f[order],
                inl[i, :k][order],
                inl[i, :k][order],
                evidence(inl[i, :k][order], rr),
            )
            ids = np.concatenate([ranked[i, :k][order], ranked[i, k:32]])
            ss = np.concatenate([sims[i, :k][order], sims[i, k:32]])
            r = est.estimate(ids, ss, 5, vr.evidence)
            right = set(pos[i].tolist())
            for name, res, best in (("global", g, ranked[i, 0]), ("reranked", r, ids[0])):
                rows[name].append((res.confidence, int(best) in right))
            fused_all[i, ranked[i, :k]] = f
        table = {}
        for name, vals in rows.items():
            conf = np.array([v[0] for v in vals])
            right = np.array([v[1] for v in vals])
            table[name] = {
                str(t): {
                    "share": round(100 * float((conf >= t).mean()), 1),
                    "right": round(100 * float(right[conf >= t].mean()), 1)
                    if (conf >= t).any()
                    else None,
                }
                for t in (0.3, 0.5, 0.8)
            }
        filt = {}
        for method in ("seq", "hmm"):
            for name, sc in (("global", full), ("reranked", fused_all)):
                best = _filtered(sc, method)
                filt[f"{method}_{name}"] = round(
                    100
                    * float(
                        np.mean([b in set(p.tolist()) for b, p in zip(best, pos, strict=True)])
                    ),
                    1,
                )
        out[pair] = {"confidence": table, "filtered_r1": filt}
    return out


# --------------------------------------------------------------------------------- report


def _md_recall(result: dict, ks=KS) -> list[str]:
    lines = [
        "| pair | global R@1/5/10 | "
        + " | ".join(f"re-ranked k={k} R@1/5/10" for k in ks)
        + " | added ms p50/p90 (k=10) |"
    ]
    lines.append("|---" * (3 + len(ks)) + "|")
    for pair, row in result["pairs"].items():
        g = row["global"]
        cells = [f"{g[1]} / {g[5]} / {g[10]}"] + [
            f"{row[f'k{k}'][1]} / {row[f'k{k}'][5]} / {row[f'k{k}'][10]}"
            for k in ks
            if f"k{k}" in row
        ]
        lat = row.get("latency_k10", {})
        lines.append(
            f"| {pair} | "
            + " | ".join(cells)
            + f" | {lat.get('p50_ms', '-')} / {lat.get('p90_ms', '-')} |"
        )
    return lines


def _write(out: Path, name: str, report: dict, md: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    (out / f"{name}.md").write_text("\n".join(md) + "\n")


def run_main(feats: Features, out: Path, base_l, base_r: RerankConfig) -> None:
    """Recall at every k on every pair, latency, calibration, fusion settings → rerank_main.*"""
    report: dict = {"local": base_l.to_dict(), "rerank": base_r.to_dict()}
    md = [
        "# Re-ranking: recall, calibration, fusion",
        "",
        "`python -m benchmarks.rerank --part main` (loaded machine)",
        "",
    ]
    t = time.time()
    res = run_variant(feats, base_l, base_r)
    res["_full"] = {
        f"{db}<-{q}": feats.sets[q]["desc"] @ feats.sets[db]["desc"].T for db, q in PAIRS
    }
    log.info("main variant in %.0f s", time.time() - t)
    report["main"] = strip(res)
    md += [f"bytes per map image: {res['bytes_per_image']}", ""] + _md_recall(res) + [""]
    _write(out, "rerank_main", report, md)
    report["calibration"] = calibration(res, base_r)
    md += [
        "## Calibration (k=10)",
        "",
        "| pair | answers | conf>=0.3 share / right | >=0.5 | >=0.8 |",
        "|---|---|---|---|---|",
    ]
    for pair, c in report["calibration"].items():
        for name, tab in c["confidence"].items():
            cells = [f"{tab[t]['share']} / {tab[t]['right']}" for t in ("0.3", "0.5", "0.8")]
            md.append(f"| {pair} | {name} | " + " | ".join(cells) + " |")
    md += [
        "",
        "## Temporal filtering (window 5), R@1",
        "",
        "| pair | seq global | seq re-ranked | hmm global | hmm re-ranked |",
        "|---|---|---|---|---|",
    ]
    for pair, c in report["calibration"].items():
        f = c["filtered_r1"]
        md.append(
            f"| {pair} | {f['seq_global']} | {f['seq_reranked']} | {f['hmm_global']} | {f['hmm_reranked']} |"
        )
    _write(out, "rerank_main", report, md)
    grid = [
        replace(base_r, weight=w, min_inliers=lo, full_inliers=hi)
        for w in (0.1, 0.2, 0.5, 1.0)
        for lo, hi in ((4, 20), (6, 20), (8, 30))
    ]
    report["fusion"] = fusion_grid(res, grid)
    pairs = [f"{db}<-{q}" for db, q in PAIRS]
    md += [
        "",
        "## Fusion settings (k=10), R@1",
        "",
        "| weight | min/full inliers | " + " | ".join(pairs) + " |",
        "|---" * (2 + len(pairs)) + "|",
    ]
    for row in report["fusion"]:
        md.append(
            f"| {row['weight']} | {row['min_inliers']}/{row['full_inliers']} | "
            + " | ".join(str(row[p]) for p in pairs)
            + " |"
        )
    _write(out, "rerank_main", report, md)


ABLATION_PAIRS = (("day_left", "night_right"), ("day_left", "day_right"))


def run_ablation(feats: Features, out: Path, base_l, base_r: RerankConfig) -> None:
    """Weight maps, layer, N, dim, geometry at k=10 on two pairs → rerank_ablation.*"""
    variants = {
        "weight=contribution": (base_l, base_r),
        "weight=confidence": (replace(base_l, weight="confidence"), base_r),
        "weight=norm": (replace(base_l, weight="norm"), base_r),
        "weight=uniform (NMS only)": (replace(base_l, weight="uniform"), base_r),
        "all 240 locations (Patch-NetVLAD-like)": (
            replace(base_l, weight="uniform", num_features=240, nms_radius=0),
            base_r,
        ),
        "layer=fine (stride 16, 112-ch)": (replace(base_l, layer="fine"), base_r),
        "geometry=similarity": (base_l, replace(base_r, geometry="similarity")),
        "geometry=fundamental": (base_l, replace(base_r, geometry="fundamental")),
        "geometry=none (FoL: count mutual matches)": (base_l, replace(base_r, geometry="none")),
        "N=64": (replace(base_l, num_features=64), base_r),
        "dim=128": (replace(base_l, dim=128), base_r),
    }
    pairs = [f"{db}<-{q}" for db, q in ABLATION_PAIRS]
    report: dict = {}
    md = [
        "# Re-ranking ablation (k=10, R@1)",
        "",
        "`python -m benchmarks.rerank --part ablation` (loaded machine)",
        "",
    ]
    md += [
        "| variant | " + " | ".join(pairs) + " | added ms p50/p90 (night) | bytes/image |",
        "|---" * (3 + len(pairs)) + "|",
    ]
    for name, (lc, rc) in variants.items():
        t = time.time()
        res = run_variant(feats, lc, rc, ks=(10,), pairs=ABLATION_PAIRS)
        log.info("%s in %.0f s", name, time.time() - t)
        if not report:
            md.append(
                "| global only | "
                + " | ".join(str(res["pairs"][p]["global"][1]) for p in pairs)
                + " | 0 | 0 |"
            )
        report[name] = strip(res)
        lat = res["pairs"][pairs[0]]["latency_k10"]
        md.append(
            f"| {name} | "
            + " | ".join(str(res["pairs"][p]["k10"][1]) for p in pairs)
            + f" | {lat['p50_ms']} / {lat['p90_ms']} | {res['bytes_per_image']} |"
        )
        _write(out, "rerank_ablation", report, md)


def run_latency(feats: Features, out: Path, base_l, base_r: RerankConfig) -> None:
    """Added ms per query (k=10, night queries): wall and CPU time → rerank_latency.*"""
    variants = {
        "regions (N=128)": (base_l, base_r),
        "all 240 locations": (
            replace(base_l, weight="uniform", num_features=240, nms_radius=0),
            base_r,
        ),
        "regions, geometry=similarity": (base_l, replace(base_r, geometry="similarity")),
    }
    md = [
        "# Re-ranking latency (k=10, day_left <- night_right)",
        "",
        "`python -m benchmarks.rerank --part latency` (loaded machine)",
        "",
    ]
    md += ["| variant | wall p50/p90 ms | CPU p50/p90 ms | bytes/image |", "|---|---|---|---|"]
    report = {}
    for name, (lc, rc) in variants.items():
        (qf, qxy), (dbf, dbxy) = feats.local("night_right", lc), feats.local("day_left", lc)
        ranked, sims = global_ranking(
            feats.sets["night_right"]["desc"], feats.sets["day_left"]["desc"], 10
        )
        lat = latency(qf, qxy, dbf, dbxy, ranked, sims, rc)
        report[name] = {**lat, "bytes_per_image": bytes_per_image(dbf)}
        md.append(
            f"| {name} | {lat['p50_ms']} / {lat['p90_ms']} | {lat['cpu_p50_ms']} / {lat['cpu_p90_ms']} | {bytes_per_image(dbf)} |"
        )
        _write(out, "rerank_latency", report, md)


def main(argv: list[str] | None = None) -> None:
    from sfrs_edge.train.local_features import LocalConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument(
        "--part",
        choices=("all", "main", "ablation", "latency", "patches", "default"),
        default="all",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)  # per-query work is small: one thread, no spinning pools
    threadpool_limits(1)
    build_cache()
    if args.part in ("patches", "default"):
        from .rerank_patches import run_default, run_patches

        (run_patches if args.part == "patches" else run_default)(args.out)
        return
    feats = Features()
    # The cell-feature study (the earlier default): cells, plain PCA.
    base_l = LocalConfig(descriptor="cells", whiten=False)
    # the per-candidate inlier scorer with evidence fusion at k = 10 (the earlier default);
    # the patch-descriptor study and today's default are --part patches / default
    base_r = RerankConfig(
        k=10, scorer="inliers", fusion="evidence", size_weights=(), global_weight=1.0
    )
    if args.part in ("all", "main"):
        run_main(feats, args.out, base_l, base_r)
    if args.part in ("all", "ablation"):
        run_ablation(feats, args.out, base_l, base_r)
    if args.part in ("all", "latency"):
        run_latency(feats, args.out, base_l, base_r)


if __name__ == "__main__":
    main()
