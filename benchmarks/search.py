"""Search benchmark: exact vs HNSW over maps of realistic descriptors.

Synthetic unit vectors are a poor stand-in for HNSW (no clusters, no near-duplicates), so maps
are grown from *real* descriptors: NetVLAD descriptors of the Gardens Point and Corridor images
(``base``), brought to the target dimension by an exact rotation (dim >= number of images) or an
uncentred PCA (dim < number of images), then expanded to N vectors the way a video map looks:
each vector interpolates two consecutive frames of one traversal at a random position and adds
noise (isotropic Gaussian plus a random combination of real descriptor deviations), then is
L2-normalised. Queries are drawn the same way with independent noise.

Searches go through :class:`sfrs_edge.maps.Map` (``Map.search``: the runtime's validation +
index), with the descriptors held in memory rather than written as a map directory.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.common import Table, log, percent_axis, plt_module, rss_bytes, savefig, time_fn

ISO_NOISE = 0.25  # norm of the isotropic Gaussian part, relative to a unit descriptor
DIR_NOISE = 0.25  # norm of the part along real descriptor deviations


@dataclass
class SearchConfig:
    dims: tuple[int, ...] = (4096, 512)
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000)
    efs: tuple[int, ...] = (16, 32, 64, 128, 256)
    queries: int = 200  # agreement is measured on all of them (batched exact ground truth)
    timed_queries: int = 100  # single-query latency samples per configuration
    k: int = 10
    M: int = 16
    ef_construction: int = 200
    seed: int = 0
    results: list[dict] = field(default_factory=list)


def to_dim(base: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Real descriptors (n, D) → (n, dim) unit rows with their geometry kept where possible."""
    base = np.asarray(base, np.float64)
    _, s, vt = np.linalg.svd(base, full_matrices=False)
    coords = base @ vt.T  # (n, r): exact coordinates in the span of the descriptors
    r = coords.shape[1]
    if dim >= r:  # rotate the span into a random r-dim subspace of R^dim: geometry exact
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, r)))
        out = coords @ q.T
    else:  # top principal (uncentred) directions: what a PCA projection keeps
        out = coords[:, :dim]
    out /= np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)
    return out.astype(np.float32)


def grow(
    base: np.ndarray, sequences: list[np.ndarray], n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` unit vectors along the traversals: interpolation of consecutive frames + noise."""
    dim = base.shape[1]
    centred = base - base.mean(0)
    # 512 directions of real variation: random combinations of 4 centred real descriptors
    w = rng.standard_normal((512, 4)).astype(np.float32)
    dirs = (w[:, :, None] * centred[rng.integers(0, len(base), (512, 4))]).sum(1)
    dirs *= DIR_NOISE / np.linalg.norm(dirs, axis=1, keepdims=True).clip(1e-12)
    seq_len = np.array([len(s) for s in sequences])
    flat = np.concatenate(sequences)
    offsets = np.concatenate([[0], np.cumsum(seq_len)[:-1]])
    out = np.empty((n, dim), np.float32)
    step = 8192
    for start in range(0, n, step):
        m = min(step, n - start)
        seq = rng.choice(len(sequences), m, p=seq_len / seq_len.sum())
        t = rng.random(m) * (seq_len[seq] - 1)
        lo = np.floor(t).astype(int)
        frac = (t - lo)[:, None].astype(np.float32)
        i0 = flat[offsets[seq] + lo]
        i1 = flat[offsets[seq] + np.minimum(lo + 1, seq_len[seq] - 1)]
        x = (1 - frac) * base[i0] + frac * base[i1]
        iso = rng.standard_normal((m, dim), dtype=np.float32)
        iso *= ISO_NOISE / np.linalg.norm(iso, axis=1, keepdims=True)
        x += iso
        x += dirs[rng.integers(0, len(dirs), m)] * rng.standard_normal((m, 1)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def exact_topk(db: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Ground truth top-k ids (batched, chunked over the database to bound memory)."""
    from sfrs_edge.maps.index import top_k

    sims = np.concatenate([q @ db[i : i + 50_000].T for i in range(0, len(db), 50_000)], axis=1)
    return top_k(sims, k)[0]


def memory_map(db: np.ndarray, index):
    """A :class:`Map` over in-memory descriptors (no directory): searches go through Map.search."""
    from sfrs_edge.maps import Map
    from sfrs_edge.maps.index import HnswIndex

    return Map.from_arrays(db, index if isinstance(index, HnswIndex) else None)


def hnsw_bytes_per_vector(dim: int, M: int) -> float:
    """hnswlib's own layout: level-0 links + vector + label, plus upper levels (~1/ln M)."""
    level0 = dim * 4 + (2 * M * 4 + 4) + 8
    upper = (M * 4 + 4) / np.log(M)  # expected upper-level link bytes per element
    return level0 + upper


def run(
    base: np.ndarray, sequences: list[np.ndarray], cfg: SearchConfig, rows: list | None = None
) -> list[dict]:
    """Benchmark exact and HNSW search at every (dim, size); returns one dict per row.

    ``rows``: a list to append to as rows are measured (an interrupted run keeps them)."""
    from sfrs_edge.maps.index import ExactIndex, HnswIndex, IndexConfig

    rows = [] if rows is None else rows
    for dim in cfg.dims:
        rng = np.random.default_rng(cfg.seed)
        b = to_dim(base, dim, cfg.seed)
        queries = grow(b, sequences, cfg.queries, np.random.default_rng(cfg.seed + 1))
        for size in cfg.sizes:
            t0 = time.perf_counter()
            db = grow(b, sequences, size, rng)
            log(f"search: {size} x {dim}-d map grown in {time.perf_counter() - t0:.1f} s")
            truth = exact_topk(db, queries, cfg.k)
            timed = queries[: cfg.timed_queries]

            def timed_search(m, ef=None, timed=timed):
                it = iter(range(10**9))
                return lambda: m.search(timed[next(it) % len(timed)], cfg.k, ef)

            exact_map = memory_map(db, ExactIndex(db))
            reps = cfg.timed_queries if size < 500_000 else max(cfg.timed_queries // 5, 10)
            st = time_fn(timed_search(exact_map), reps=reps, warmup=2)
            rows.append(
                {
                    "dim": dim,
                    "size": size,
                    "index": "exact",
                    "ef": None,
                    "build_s": 0.0,
                    "bytes_per_vector": 4 * dim,
                    "latency": st.summary(),
                    "top1_agreement": 100.0,
                    "top10_agreement": 100.0,
                }
            )
            log(f"search: exact {size} x {dim}: p50 {st.p50:.3f} ms")
            del exact_map
            gc.collect()
            rss0 = rss_bytes()
            icfg = IndexConfig(type="hnsw", M=cfg.M, ef_construction=cfg.ef_construction)
            t0 = time.perf_counter()
            index = HnswIndex.build(db, icfg)
            build_s = time.perf_counter() - t0
            rss_delta = (rss_bytes() - rss0) / size
            hmap = memory_map(db, index)
            log(f"search: HNSW build {size} x {dim}: {build_s:.1f} s")
            for ef in cfg.efs:
                ids = hmap.search(queries, cfg.k, ef)[0]
                top1 = 100.0 * float(np.mean(ids[:, 0] == truth[:, 0]))
                top10 = 100.0 * float(
                    np.mean(
                        [len(np.intersect1d(a, t)) / cfg.k for a, t in zip(ids, truth, strict=True)]
                    )
                )
                st = time_fn(timed_search(hmap, ef), reps=cfg.timed_queries, warmup=2)
                rows.append(
                    {
                        "dim": dim,
                        "size": size,
                        "index": "hnsw",
                        "ef": ef,
                        "M": cfg.M,
                        "ef_construction": cfg.ef_construction,
                        "build_s": round(build_s, 3),
                        "bytes_per_vector": round(hnsw_bytes_per_vector(dim, cfg.M)),
                        "rss_bytes_per_vector": round(rss_delta),
                        "latency": st.summary(),
                        "top1_agreement": top1,
                        "top10_agreement": top10,
                    }
                )
            del hmap, index, db
            gc.collect()
    cfg.results = rows
    return rows


def speedups(rows: list[dict]) -> None:
    """Add ``speedup_vs_exact`` (p50 exact / p50 HNSW) to every HNSW row."""
    exact = {(r["dim"], r["size"]): r["latency"]["p50_ms"] for r in rows if r["index"] == "exact"}
    for r in rows:
        e = exact.get((r["dim"], r["size"]))
        r["speedup_vs_exact"] = round(e / r["latency"]["p50_ms"], 2) if e else None


def table(rows: list[dict], note: str) -> Table:
    t = Table(
        "Search: exact vs HNSW (one query, k=10, through Map.search)",
        [
            "dim",
            "map size",
            "index",
            "ef",
            "build s",
            "bytes/vector",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "speed-up vs exact",
            "top-1 agree %",
            "top-10 agree %",
        ],
        note=note,
    )
    for r in rows:
        lat = r["latency"]
        t.rows.append(
            [
                r["dim"],
                f"{r['size']:,}",
                r["index"],
                r["ef"] if r["ef"] is not None else "–",
                r["build_s"],
                f"{r['bytes_per_vector']:,}",
                lat["p50_ms"],
                lat["p90_ms"],
                lat["p99_ms"],
                r.get("speedup_vs_exact") or 1.0,
                r["top1_agreement"],
                r["top10_agreement"],
            ]
        )
    return t


def plot(rows: list[dict], path: Path) -> Path:
    """Speed-up vs top-1 agreement per (dim, size), one line per map over ef."""
    plt = plt_module()
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({(r["dim"], r["size"]) for r in rows if r["index"] == "hnsw"})
    for dim, size in keys:
        rs = [r for r in rows if r["index"] == "hnsw" and r["dim"] == dim and r["size"] == size]
        ax.plot(
            [r["top1_agreement"] for r in rs],
            [r["speedup_vs_exact"] for r in rs],
            marker="o",
            ms=3,
            label=f"{dim}-d, {size:,}",
        )
    ax.set_xlabel("HNSW top-1 agreement with exact (%)")
    ax.set_ylabel("speed-up vs exact (p50)")
    ax.set_yscale("log")
    ax.axhline(10, color="grey", lw=0.5, ls="--")
    ax.axvline(99, color="grey", lw=0.5, ls="--")
    if keys:
        ax.legend()
    percent_axis(ax, "x")
    ax.set_title("exact vs HNSW (points: ef)")
    return savefig(fig, path)


def base_descriptors(
    net, root: Path, input_size: tuple[int, int], cache: Path | None = None, per_seq: int = 0
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Raw NetVLAD descriptors of the real traversals (Gardens Point x3, Corridor x2) with the
    torch model ``net`` at ``input_size``; returns (descriptors, index arrays per traversal).
    ``per_seq`` > 0 keeps only the first that many frames of each traversal (smoke runs)."""
    import copy

    from sfrs_edge.train.features import vlad_descriptors

    from sfrs_edge.images import list_images

    folders = [root / "gardens_point" / s for s in ("day_left", "day_right", "night_right")]
    folders += [root / "corridor" / s for s in ("ref", "query")]
    folders = [f for f in folders if f.is_dir()]
    if not folders:
        raise FileNotFoundError(f"no Gardens Point / Corridor images under {root}")
    files = [list_images(f)[: per_seq or None] for f in folders]
    from sfrs_edge.train.model import fingerprint

    fp = fingerprint(net.state_dict())[:12]
    key = f"base_{fp}_{input_size[0]}x{input_size[1]}_{sum(map(len, files))}.npz"
    if cache is not None and (cache / key).is_file():
        z = np.load(cache / key, allow_pickle=False)
        desc = z["desc"]
    else:
        n = copy.deepcopy(net)
        n.config.input_height, n.config.input_width = input_size
        t0 = time.perf_counter()
        desc = vlad_descriptors(n, [p for fs in files for p in fs], batch_size=8)
        log(f"search: {len(desc)} real base descriptors in {time.perf_counter() - t0:.1f} s")
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.savez(cache / key, desc=desc)
    bounds = np.cumsum([0] + [len(f) for f in files])
    seqs = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return desc, seqs
