"""Patch descriptors vs cell features for re-ranking, with honest tuning (``--part patches``).

Every constant (scorer, patch sizes, fusion weights, ambiguity margin, k) is chosen on the
**tuning pairs** ``day_right ← night_right`` and Corridor only; ``day_left ← night_right`` and
``day_left ← day_right`` are **held out**: reported, never used to choose.

Network outputs are computed once per image set (``benchmarks.rerank`` caches the maps), local
features once per local config (cached as ``artifacts/rerank/local_<hash>_<set>.npz``); the
per-candidate evidence once per (features, scorer) for the top 50 of every query; recall at
every k and every fusion setting is then numpy on those arrays.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sfrs_edge.rerank.evidence import Segment, fuse_zscore, segment_scores

from .rerank import CACHE, KS, Features, global_ranking, positives, recall

log = logging.getLogger("rerank")
TUNING = (("day_right", "night_right"), ("corridor_ref", "corridor_query"))
HELD_OUT = (("day_left", "night_right"), ("day_left", "day_right"))
PAIRS = TUNING + HELD_OUT
KMAX = max(KS)
HONEST = (
    "Constants chosen on the tuning pairs `day_right<-night_right` and Corridor only; "
    "`day_left<-night_right` and `day_left<-day_right` are held out (reported, never used "
    "to choose)."
)


def _key(cfg) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


class PatchFeatures(Features):
    """:class:`Features` plus patch descriptors, whose projection is fitted on day_right."""

    def __init__(self) -> None:
        super().__init__()
        self._proj: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def projection(self, cfg) -> tuple[np.ndarray, np.ndarray]:
        """(mean, projection) fitted on 10 random windows per size of 100 day_right images
        (``init --rerank`` fits on the map images: day_right here)."""
        import torch
        from sfrs_edge.train.local_features import LocalHead, fit_projection

        key = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "num_features"})
        path = CACHE / f"projection_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz"
        if key not in self._proj and path.exists():
            with np.load(path) as z:
                self._proj[key] = (z["mean"], z["projection"])
        if key not in self._proj:
            probe = LocalHead(cfg, 1, self.net.config.preprocessing().size)
            gen = torch.Generator().manual_seed(0)
            rows = []
            maps = self.sets["day_right"]["final"][::2]
            with torch.no_grad():
                for i in range(0, len(maps), 10):
                    final = torch.from_numpy(maps[i : i + 10]).float()
                    for v in probe.patch_vlads(self.net, final):
                        for img in v:  # KC, M
                            idx = torch.randperm(img.shape[1], generator=gen)[:10]
                            rows.append(img[:, idx].t().numpy())
            self._proj[key] = fit_projection(np.concatenate(rows), cfg)
            np.savez(path, mean=self._proj[key][0], projection=self._proj[key][1])
        return self._proj[key]

    def local(self, name: str, cfg) -> tuple[np.ndarray, np.ndarray]:
        if cfg.descriptor == "cells":
            if cfg.whiten:
                raise ValueError("the benchmark's cell features use the plain PCA (whiten=False)")
            return super().local(name, cfg)
        path = CACHE / f"local_{_key(cfg)}_{name}.npz"
        if path.exists():
            with np.load(path) as z:
                return z["feats"], z["xy"]
        import torch
        from sfrs_edge.train.local_features import LocalHead

        s = self.sets[name]
        head = LocalHead(cfg, 1, self.net.config.preprocessing().size)
        head.set_projection(*self.projection(cfg))
        feats, xys = [], []
        t = time.time()
        with torch.no_grad():
            for i in range(0, len(s["desc"]), 10):
                final = torch.from_numpy(s["final"][i : i + 10]).float()
                f, xy = head(self.net, final, final)
                feats.append(f.numpy())
                xys.append(xy.numpy())
        feats, xy = np.concatenate(feats), np.concatenate(xys)
        np.savez(path, feats=feats, xy=xy)
        log.info("patch features %s %s in %.0f s", name, cfg.to_dict(), time.time() - t)
        return feats, xy

    def segments(self, cfg) -> list[Segment]:
        from sfrs_edge.train.local_features import LocalHead

        head = LocalHead(cfg, 1, self.net.config.preprocessing().size)
        return Segment.from_info(head.segments(self.sets["day_right"]["final"].shape[-2:]))


def pair_name(pair) -> str:
    return f"{pair[0]}<-{pair[1]}"


def evidence_tables(feats: PatchFeatures, cfg, reproj: float = 24.0):
    """Per scorer, per pair: (ranked (Q, 50), sims, scores (Q, 50, S), counts, positives).

    One mutual-NN pass per (query, segment) serves every scorer (FoL's count applies its own
    0.7 threshold to the same matches); cached on disk per local config."""
    from sfrs_edge.rerank.evidence import (
        Matches,
        homography_inliers,
        mutual_nn,
        spatial_scores,
    )

    segs = feats.segments(cfg)
    path = CACHE / f"evidence_{_key(cfg)}.npz"
    cached = dict(np.load(path)) if path.exists() else {}
    local = {n: feats.local(n, cfg) for n in {n for p in PAIRS for n in p}}
    out: dict[str, dict] = {s: {} for s in SCORER_ORDER}
    for db, q in PAIRS:
        name = pair_name((db, q))
        ranked, sims = global_ranking(feats.sets[q]["desc"], feats.sets[db]["desc"], KMAX)
        pos = positives(db, q, len(ranked), len(feats.sets[db]["desc"]))
        if f"{name}|ransac|sc" not in cached:
            t = time.time()
            (qf, qxy), (dbf, dbxy) = local[q], local[db]
            qxy, dbxy = qxy.astype(np.float32), dbxy.astype(np.float32)
            shape = ranked.shape + (len(segs),)
            sc = {s: np.zeros(shape) for s in SCORER_ORDER}
            ct = {s: np.zeros(shape, np.int64) for s in SCORER_ORDER}
            for i, row in enumerate(ranked):
                for j, seg in enumerate(segs):
                    sl = slice(seg.start, seg.stop)
                    n = seg.stop - seg.start
                    m = mutual_nn(qf[i, sl], dbf[row, sl], MIN_SIMILARITY["ransac"])
                    qx, cx = qxy[i, sl], dbxy[row, sl]
                    for s in ("ransac", "magsac"):
                        sc[s][i, :, j] = homography_inliers(qx, cx, m, reproj, s) / n
                        ct[s][i, :, j] = m.counts
                    sc["spatial"][i, :, j] = spatial_scores(qx, cx, m, seg) / n
                    ct["spatial"][i, :, j] = m.counts
                    strict = Matches(
                        m.index, m.ok & (m.similarity >= MIN_SIMILARITY["count"]), m.similarity
                    )
                    sc["count"][i, :, j] = strict.counts / n
                    ct["count"][i, :, j] = strict.counts
            for s in SCORER_ORDER:
                cached[f"{name}|{s}|sc"], cached[f"{name}|{s}|ct"] = sc[s], ct[s]
            np.savez(path, **cached)
            log.info("evidence %s %s in %.0f s", cfg.to_dict(), name, time.time() - t)
        for s in SCORER_ORDER:
            out[s][name] = (ranked, sims, cached[f"{name}|{s}|sc"], cached[f"{name}|{s}|ct"], pos)
    return out, segs


MIN_SIMILARITY = {"ransac": 0.3, "magsac": 0.3, "spatial": 0.3, "count": 0.7}


def fused_lists(ranked, sims, scores, k: int, fusion: dict, margin: float | None = None):
    """Top-k of each list re-ordered by ``fusion`` (see :func:`fuse`), the rest unchanged;
    with ``margin``: only lists whose global top-2 similarity gap is below it."""
    out = ranked.copy()
    for i in range(len(ranked)):
        if margin is not None and sims[i, 0] - sims[i, 1] >= margin:
            continue
        f = fuse(sims[i, :k], scores[i, :k], fusion)
        out[i, :k] = ranked[i, :k][np.argsort(-f, kind="stable")]
    return out


def fuse(sims: np.ndarray, scores: np.ndarray, fusion: dict) -> np.ndarray:
    """``zscore``: Patch-NetVLAD's z-normalised sum over sizes plus the z-normalised global
    similarity; ``linear``: similarity + Σ_s w_s · score_s (raw, per query feature)."""
    w = np.asarray(fusion["weights"], np.float64)
    if fusion["kind"] == "zscore":
        return fuse_zscore(sims, scores, fusion["global"], w)
    return np.asarray(sims, np.float64) + (scores * w).sum(1)


def recalls(table: dict, k: int, fusion: dict, margin=None, pairs=PAIRS) -> dict:
    out = {}
    for p in pairs:
        ranked, sims, sc, _, pos = table[pair_name(p)]
        out[pair_name(p)] = recall(fused_lists(ranked, sims, sc, k, fusion, margin), pos)
    return out


def tuning_objective(rec: dict) -> float:
    """Mean R@1 over the tuning pairs (the only figure constants are chosen by)."""
    return float(np.mean([rec[pair_name(p)][1] for p in TUNING]))


def fusion_grid(n_segments: int, scorer: str) -> list[dict]:
    """Fusion settings searched on the tuning pairs."""
    grid = []
    size_weights = [w for w in itertools.product((0.0, 0.5, 1.0), repeat=n_segments) if any(w)]
    for w in size_weights:
        for g in (0.0, 0.5, 1.0, 2.0):
            grid.append({"kind": "zscore", "global": g, "weights": list(w)})
    for w in size_weights:  # scores are per query feature, in [0, 1]
        for a in (0.05, 0.1, 0.2, 0.5, 1.0):
            grid.append({"kind": "linear", "weights": [a * v for v in w]})
    return grid


def best_fusion(table: dict, segs, scorer: str, k: int = 10) -> tuple[dict, float]:
    best, score = None, -1.0
    for fusion in fusion_grid(len(segs), scorer):
        s = tuning_objective(recalls(table, k, fusion, pairs=TUNING))
        if s > score:
            best, score = fusion, s
    return best, score


def row_for(table: dict, fusion: dict, margin=None) -> dict:
    return {
        pair_name(p): {
            "global": recall(table[pair_name(p)][0], table[pair_name(p)][4]),
            **{f"k{k}": recalls(table, k, fusion, margin, (p,))[pair_name(p)] for k in KS},
        }
        for p in PAIRS
    }


def latency(feats: PatchFeatures, cfg, segs, scorer, min_sim, reproj, fusion, k: int) -> dict:
    """Added CPU and wall ms per query (night queries against day_left): matching, scoring
    and fusion of the top-k over the segments ``segs``, as the runtime runs them."""
    (qf, qxy), (dbf, dbxy) = feats.local("night_right", cfg), feats.local("day_left", cfg)
    ranked, sims = global_ranking(
        feats.sets["night_right"]["desc"], feats.sets["day_left"]["desc"], k
    )
    qxy, dbxy = qxy.astype(np.float32), dbxy.astype(np.float32)
    wall, cpu = [], []
    for i in range(0, len(ranked), 3):  # 67 of the 200 night queries
        row = ranked[i]
        t, tc = time.perf_counter(), time.thread_time()
        sc = segment_scores(qf[i], qxy[i], dbf[row], dbxy[row], segs, scorer, min_sim, reproj)[0]
        np.argsort(-fuse(sims[i], sc, fusion), kind="stable")
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - tc) * 1000)
    return {
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
        "cpu_p90_ms": round(float(np.percentile(cpu, 90)), 2),
        "wall_p50_ms": round(float(np.percentile(wall, 50)), 2),
        "wall_p90_ms": round(float(np.percentile(wall, 90)), 2),
    }


def _cells(r: dict, pair: str, k: int) -> str:
    v = r[pair][f"k{k}"]
    return f"{v[1]} / {v[5]} / {v[10]}"


def _subset(table: dict, cols: list[int]) -> dict:
    return {
        p: (r, s, sc[..., cols], ct[..., cols], pos) for p, (r, s, sc, ct, pos) in table.items()
    }


def study(feats: PatchFeatures, name: str, cfg, scorer: str, subsets: dict) -> dict:
    """One (features, scorer): for every subset of segments (a patch size alone, or fused),
    fusion tuned on the tuning pairs at k = 10, recall at every k, latency, bytes."""
    min_sim = MIN_SIMILARITY[scorer]  # count: FoL's 0.7
    tables, segs = evidence_tables(feats, cfg, REPROJ_PX)
    table = tables[scorer]
    out = {}
    for label, cols in subsets.items():
        sub = _subset(table, cols)
        chosen = [segs[c] for c in cols]
        fusion, obj = best_fusion(sub, chosen, scorer)
        out[f"{name} / {label} / {scorer}"] = {
            "local": cfg.to_dict(),
            "segments": cols,
            "scorer": scorer,
            "min_similarity": min_sim,
            "fusion": fusion,
            "tuning_objective": obj,
            "recall": row_for(sub, fusion),
            "latency": {
                k: latency(feats, cfg, chosen, scorer, min_sim, REPROJ_PX, fusion, k)
                for k in (10, 20)
            },
            "bytes_per_image": sum((s.stop - s.start) * (cfg.dim + 2) * 2 for s in chosen),
            "network_cpu_ms": head_cost(feats, cfg, cols),
            "_table": sub,
        }
    return out


def margin_study(entry: dict, k: int = 10, fusion: dict | None = None) -> list[dict]:
    """Re-rank only when the global top-2 gap is below a margin: share re-ranked and R@1
    (top ``k`` re-ranked) per margin, margins compared on the tuning pairs."""
    table, fusion = entry["_table"], fusion or entry["fusion"]
    rows = []
    for margin in (None, 0.1, 0.05, 0.03, 0.02, 0.01):
        row = {"margin": margin}
        for p in PAIRS:
            ranked, sims, *_ = table[pair_name(p)]
            gap = sims[:, 0] - sims[:, 1]
            row[pair_name(p)] = {
                "r1": recalls(table, k, fusion, margin, (p,))[pair_name(p)][1],
                "reranked_share": 100.0
                if margin is None
                else round(100 * float((gap < margin).mean()), 1),
            }
        rows.append(row)
    return rows


REPROJ_PX = 24.0  # Patch-NetVLAD: 1.5 × the stride-16 VGG step at patch stride 1
BYTES_BUDGET = 64 * 1024  # per map image
CPU_BUDGET_MS = 30.0  # added per query, p90
CHOICE_KS = (10, 20)


_HEAD_COST: dict[str, float] = {}


def head_cost(feats: PatchFeatures, cfg, cols: list[int]) -> float:
    """CPU ms per image (p50, one thread, torch) of what the local head adds to the network:
    weight map, selection and descriptors of the segments ``cols`` (patch descriptors need the
    K·C residual map and a projection of every window: the exported graph pays the same)."""
    import torch
    from sfrs_edge.train.local_features import LocalHead

    if cfg.descriptor == "patches":
        cfg = replace(cfg, patch_sizes=tuple(cfg.patch_sizes[c] for c in cols))
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _HEAD_COST:
        final = torch.from_numpy(feats.sets["day_right"]["final"][:12]).float()
        in_dim = final.shape[1] * (
            feats.net.netvlad.num_clusters if cfg.descriptor == "patches" else 1
        )
        head = LocalHead(cfg, in_dim, feats.net.config.preprocessing().size).eval()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        times = []
        try:
            with torch.no_grad():
                for i in range(len(final)):
                    t = time.thread_time()
                    head(feats.net, final[i : i + 1], final[i : i + 1])
                    times.append((time.thread_time() - t) * 1000)
        finally:
            torch.set_num_threads(threads)
        _HEAD_COST[key] = round(float(np.median(times[2:])), 2)
    return _HEAD_COST[key]


def choose(variants: dict) -> dict:
    """The default, by a rule fixed before looking at the held-out pairs: among variants
    within the byte and CPU budgets (CPU = matching and scoring p90 + what the local head adds
    to the network), at k in :data:`CHOICE_KS` (fusion re-tuned at each k), the highest tuning
    objective; ties go to fewer bytes, then less CPU, then the smaller k."""
    best = None
    for name, e in variants.items():
        if e["bytes_per_image"] > BYTES_BUDGET:
            continue
        for k in CHOICE_KS:
            cpu = e["latency"][k]["cpu_p90_ms"] + e["network_cpu_ms"]
            if cpu > CPU_BUDGET_MS:
                continue
            fusion, obj = (
                (e["fusion"], e["tuning_objective"])
                if k == 10
                else best_fusion(e["_table"], e["segments"], e["scorer"], k)
            )
            key = (obj, -e["bytes_per_image"], -cpu, -k)
            if best is None or key > best[0]:
                best = (key, {"variant": name, "k": k, "fusion": fusion, "tuning_objective": obj})
    if best is None:
        raise RuntimeError("no variant within the byte and CPU budgets")
    return best[1]


def choose_margin(rows: list[dict]) -> float | None:
    """The margin that re-ranks the fewest tuning queries at the tuning recall of re-ranking
    every query (None: every margin tried loses recall on the tuning pairs)."""

    def objective(row):
        return float(np.mean([row[pair_name(p)]["r1"] for p in TUNING]))

    def share(row):
        return float(np.mean([row[pair_name(p)]["reranked_share"] for p in TUNING]))

    full = objective(rows[0])
    ok = [r for r in rows[1:] if objective(r) >= full]
    return min(ok, key=share)["margin"] if ok else None


def _md_choice(choice: dict) -> list[str]:
    return [
        "",
        "## Chosen default (rule: best tuning objective within 64 KB and 30 ms p90; "
        "margin: fewest re-ranked tuning queries at equal tuning recall)",
        "",
        HONEST,
        "",
        f"`{choice['variant']}`, k = {choice['k']}, fusion {json.dumps(choice['fusion'])}, "
        f"margin {choice['margin']}, tuning objective {choice['tuning_objective']:.2f}",
    ]


def run_patches(out: Path) -> None:
    """Cells vs patch descriptors (each size and fused) under every scorer → rerank_patches.*"""
    from sfrs_edge.train.local_features import LocalConfig

    from .rerank import _write

    feats = PatchFeatures()
    cells = LocalConfig(descriptor="cells", whiten=False)
    cells256 = LocalConfig(descriptor="cells", whiten=False, num_features=256)
    patches = LocalConfig(descriptor="patches", patch_sizes=(1, 2, 3, 5), whiten=True)
    report: dict = {"note": HONEST, "variants": {}}
    md = [
        "# Re-ranking with patch descriptors",
        "",
        "`python -m benchmarks.rerank --part patches`. " + HONEST,
        "",
    ]
    for scorer in SCORER_ORDER:
        found = study(feats, "cells", cells, scorer, {"cells": [0]})
        found.update(study(feats, "cells 256", cells256, scorer, {"cells": [0]}))
        sizes = {f"size {s}": [i] for i, s in enumerate(patches.patch_sizes)}
        sizes.update(
            {
                "sizes 2+5": [1, 3],
                "sizes 1+2+5": [0, 1, 3],
                "sizes 1+2+3+5": [0, 1, 2, 3],
                "sizes 2+3": [1, 2],
            }
        )
        found.update(study(feats, "patches", patches, scorer, sizes))
        report["variants"].update(found)
        _write(out, "rerank_patches", _public(report), md + _md(report))
    report["choice"] = choose(report["variants"])
    best = report["variants"][report["choice"]["variant"]]
    report["best"] = {k: v for k, v in best.items() if not k.startswith("_")}
    k = report["choice"]["k"]
    report["margins"] = margin_study(best, k, report["choice"]["fusion"])
    report["choice"]["margin"] = choose_margin(report["margins"])
    md2 = md + _md(report) + _md_choice(report["choice"]) + _md_margins(report["margins"], k)
    _write(out, "rerank_patches", _public(report), md2)


SCORER_ORDER = ("ransac", "spatial", "count", "magsac")


def _public(report: dict) -> dict:
    out = dict(report)
    out["variants"] = {
        n: {k: v for k, v in e.items() if not k.startswith("_")}
        for n, e in report["variants"].items()
    }
    return out


def _md(report: dict) -> list[str]:
    pairs = [pair_name(p) for p in PAIRS]
    lines = [
        "| variant | fusion (chosen on tuning pairs) | bytes/image | head CPU ms | CPU ms p50/p90 k=10 | k=20 | "
        + " | ".join(f"{p} global | k=10 | k=20" for p in pairs)
        + " |",
        "|---" * (6 + 3 * len(pairs)) + "|",
    ]
    for name, e in report["variants"].items():
        r = e["recall"]
        cells = []
        for p in pairs:
            g = r[p]["global"]
            cells += [f"{g[1]} / {g[5]} / {g[10]}", _cells(r, p, 10), _cells(r, p, 20)]
        lat = e["latency"]
        lines.append(
            f"| {name} | {json.dumps(e['fusion'])} | {e['bytes_per_image']} | "
            f"{e.get('network_cpu_ms', '-')} | {lat[10]['cpu_p50_ms']} / {lat[10]['cpu_p90_ms']} | "
            f"{lat[20]['cpu_p50_ms']} / {lat[20]['cpu_p90_ms']} | " + " | ".join(cells) + " |"
        )
    return lines


def runtime_latency(feats: PatchFeatures, cfg, rr, k: int) -> dict:
    """Added CPU and wall ms per query of the runtime's :func:`sfrs_edge.rerank.rerank` (the
    code a Localizer runs) over the top-k, night queries against day_left."""
    from sfrs_edge.rerank import rerank

    segs = feats.segments(cfg)
    (qf, qxy), (dbf, dbxy) = feats.local("night_right", cfg), feats.local("day_left", cfg)
    ranked, sims = global_ranking(
        feats.sets["night_right"]["desc"], feats.sets["day_left"]["desc"], k
    )
    wall, cpu = [], []
    for i in range(len(ranked)):
        row = ranked[i]
        t, tc = time.perf_counter(), time.thread_time()
        rerank(qf[i], qxy[i], dbf[row], dbxy[row], sims[i], replace(rr, k=k), segs)
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.thread_time() - tc) * 1000)
    return {
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 2),
        "cpu_p90_ms": round(float(np.percentile(cpu, 90)), 2),
        "wall_p50_ms": round(float(np.percentile(wall, 50)), 2),
        "wall_p90_ms": round(float(np.percentile(wall, 90)), 2),
    }


CALIBRATION_TOLERANCES = (24.0, 48.0, 72.0)  # reproj_px of the spatial scorer's verified matches


def calibration(feats: PatchFeatures, cfg, rr) -> dict:
    """Confidence of the runtime's :func:`sfrs_edge.rerank.rerank` answers per pair and
    tolerance: the answer's evidence minus the best evidence > 2 frames away (the estimate's
    rule on an index-ordered walk), share of queries at or above 0.3 / 0.5 / 0.8 and R@1 there."""
    from sfrs_edge.estimate import verified_confidence
    from sfrs_edge.rerank import rerank

    segs, out = feats.segments(cfg), {}
    for tol in CALIBRATION_TOLERANCES:
        for db, q in PAIRS:
            (qf, qxy), (dbf, dbxy) = feats.local(q, cfg), feats.local(db, cfg)
            ranked, sims = global_ranking(feats.sets[q]["desc"], feats.sets[db]["desc"], rr.k)
            pos = positives(db, q, len(ranked), len(feats.sets[db]["desc"]))
            conf, right = [], []
            for i, row in enumerate(ranked):
                res = rerank(
                    qf[i], qxy[i], dbf[row], dbxy[row], sims[i], replace(rr, reproj_px=tol), segs
                )
                ids = row[res.order]
                conf.append(verified_confidence(res.evidence, np.abs(ids - ids[0]) <= 2))
                right.append(bool(np.isin(ids[0], pos[i])))
            conf_a, right_a = np.array(conf), np.array(right)
            row_out = {"r1": round(100 * float(right_a.mean()), 1)}
            for th in (0.3, 0.5, 0.8):
                m = conf_a >= th
                row_out[str(th)] = [
                    round(100 * float(m.mean()), 1),
                    round(100 * float(right_a[m].mean()), 1) if m.any() else None,
                ]
            out[f"{tol}|{pair_name((db, q))}"] = row_out
    return out


def run_default(out: Path) -> None:
    """What ``init --rerank`` produces (``LocalConfig()``, ``RerankConfig()`` defaults, no
    tuning here): recall at every k on all pairs, margins, latency, bytes → rerank_default.*"""
    from sfrs_edge.train.local_features import LocalConfig

    from sfrs_edge.rerank import RerankConfig

    from .rerank import _write

    feats = PatchFeatures()
    cfg, rr = LocalConfig(), RerankConfig()
    tables, segs = evidence_tables(feats, cfg, rr.reproj_px)
    table = tables[rr.scorer]
    w = list(rr.size_weights) or [1.0] * len(segs)
    fusion = {"kind": rr.fusion, "global": rr.global_weight, "weights": w}
    entry = {
        "local": cfg.to_dict(),
        "rerank": rr.to_dict(),
        "fusion": fusion,
        "recall": row_for(table, fusion),
        "latency": {k: runtime_latency(feats, cfg, rr, k) for k in (10, 20)},
        "bytes_per_image": sum((s.stop - s.start) * (cfg.dim + 2) * 2 for s in segs),
        "network_cpu_ms": head_cost(feats, cfg, list(range(len(segs)))),
        "_table": table,
    }
    report = {"note": HONEST, "default": {k: v for k, v in entry.items() if k[0] != "_"}}
    report["margins"] = margin_study(entry, rr.k)
    report["calibration"] = calibration(feats, cfg, rr)
    md = ["# Re-ranking: the default of `init --rerank`", "", HONEST, ""]
    md += _md({"variants": {"default": entry}})
    md += ["", "## Confidence (share at or above / R@1 there)", "", HONEST, ""]
    md += ["| reproj_px | pair | R@1 | >= 0.3 | >= 0.5 | >= 0.8 |", "|---|---|---|---|---|---|"]
    for key, c in report["calibration"].items():
        tol, pair = key.split("|")
        cells = [f"{c[t][0]} / {c[t][1]}" for t in ("0.3", "0.5", "0.8")]
        md.append(f"| {tol} | {pair} | {c['r1']} | " + " | ".join(cells) + " |")
    _write(out, "rerank_default", report, md + _md_margins(report["margins"], rr.k))


def _md_margins(rows: list[dict], k: int = 10) -> list[str]:
    md = ["", f"## Re-rank only when ambiguous (k={k})", "", HONEST, ""]
    md += ["| margin | " + " | ".join(f"{pair_name(p)} R@1 (% re-ranked)" for p in PAIRS) + " |"]
    md += ["|---" * (1 + len(PAIRS)) + "|"]
    for row in rows:
        cells = [
            f"{row[pair_name(p)]['r1']} ({row[pair_name(p)]['reranked_share']})" for p in PAIRS
        ]
        md.append(f"| {row['margin']} | " + " | ".join(cells) + " |")
    return md
