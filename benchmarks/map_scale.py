"""Maps at scale: build, open (cold/warm), query, agreement, memory, disk and ``map add`` cost.

Maps are grown from real descriptors exactly as :mod:`benchmarks.search` does (Lite0 NetVLAD of
Gardens Point + Corridor, brought to ``--dim``, interpolated along the traversals + noise) and
written as real map directories through the runtime's writer. Open, query latency, agreement
and resident memory are measured in a fresh process per map (``open`` = ``Map.open`` with
default verification + the HNSW graph load). "cold" is the first open after the build in a new
process (page cache not dropped: the machine is shared), "warm" the second.

    python benchmarks/map_scale.py --dim 512 --sizes 1000 10000 100000 1000000 \\
        --out benchmarks/results/map_scale_512
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import models, search
from benchmarks.common import data_root, log, plt_module, rss_bytes, savefig

FINGERPRINT = "benchmark-grown"


def _model(dim: int) -> dict:
    return {"fingerprint": FINGERPRINT, "backbone": "grown", "descriptor_dim": dim}


def _rows(desc: np.ndarray, first: int):
    from sfrs_edge.maps.metadata import Place
    from sfrs_edge.maps.writer import Rows

    places = [Place(first + i, f"p{first + i:08d}", "grown") for i in range(len(desc))]
    return Rows(desc, places)


def build(path: Path, desc: np.ndarray, index: str, M: int, efc: int, ef: int, dtype: str):
    from sfrs_edge.maps.index import IndexConfig
    from sfrs_edge.maps.store import atomic_map_dir
    from sfrs_edge.maps.writer import history_event, write_new_map

    config = IndexConfig(index, M, efc, ef).resolved(len(desc))
    with atomic_map_dir(path) as staging:
        write_new_map(
            staging,
            _rows(desc, 0),
            config,
            dtype,
            model=_model(desc.shape[1]),
            positions={"kind": None, "source": None},
            event=history_event("build", len(desc), source="synthetic"),
        )


_PROBE = """
import json, sys, time, numpy as np
sys.path.insert(0, {repo!r})
from benchmarks.common import rss_bytes
t0 = time.perf_counter()
from sfrs_edge.maps import Map
m = Map.open({path!r})
open_s = time.perf_counter() - t0
rss = rss_bytes()
q = np.load({queries!r}); truth = np.load({truth!r})
by_ef = []
for ef in {efs!r}:
    ids = np.concatenate([m.search(x, 10, ef)[0] for x in q])
    top1 = float(np.mean(ids[:, 0] == truth[:, 0]) * 100)
    top10 = float(np.mean([len(np.intersect1d(a, t)) / 10 for a, t in zip(ids, truth)]) * 100)
    lat = []
    for i in range(300):
        t = time.perf_counter(); m.search(q[i % len(q)], 10, ef); lat.append(time.perf_counter() - t)
    lat = np.array(lat[20:]) * 1e3
    by_ef.append(dict(ef=ef, top1=top1, top10=top10, p50_ms=float(np.percentile(lat, 50)),
        p99_ms=float(np.percentile(lat, 99))))
print(json.dumps(dict(open_s=open_s, rss_bytes=rss, by_ef=by_ef, **by_ef[0])))
"""


def probe(path: Path, qfile: Path, tfile: Path, efs: list[int]) -> dict:
    """Open ``path`` in a fresh process; agreement and latency at each ef (first = headline)."""
    code = _PROBE.format(
        repo=str(Path(__file__).resolve().parents[1]),
        path=str(path),
        queries=str(qfile),
        truth=str(tfile),
        efs=list(efs),
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def add_time(path: Path, extra: np.ndarray, first: int) -> float:
    from sfrs_edge.maps import append_to_map

    t0 = time.perf_counter()
    append_to_map(path, _rows(extra, first), FINGERPRINT)
    return time.perf_counter() - t0


def run(args) -> list[dict]:
    from sfrs_edge.maps import map_info

    net = models.quick_offtheshelf()
    base, seqs = search.base_descriptors(
        net, data_root(), (180, 320), cache=models.CACHE, per_seq=args.base_limit
    )
    b = search.to_dim(base, args.dim, 0)
    queries = search.grow(b, seqs, args.queries, np.random.default_rng(1))
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        rng = np.random.default_rng(0)
        db = search.grow(b, seqs, size, rng)
        extra = search.grow(b, seqs, 1000, np.random.default_rng(2))
        truth = search.exact_topk(db, queries, 10)
        qfile, tfile = work / "queries.npy", work / "truth.npy"
        np.save(qfile, queries)
        np.save(tfile, truth)
        row: dict = {"dim": args.dim, "size": size, "index": args.index}
        if args.dim <= 4096:  # float16 storage: top-1 agreement of exact search vs float32
            from sfrs_edge.maps.index import ExactIndex

            ids16 = ExactIndex(db.astype(np.float16)).search(queries, 10)[0]
            row["fp16_top1_vs_fp32"] = float(np.mean(ids16[:, 0] == truth[:, 0]) * 100)
        path = work / f"map_{args.dim}_{size}"
        shutil.rmtree(path, ignore_errors=True)
        rss0 = rss_bytes()
        t0 = time.perf_counter()
        build(path, db, args.index, args.M, args.ef_construction, args.ef, args.dtype)
        row["build_s"] = time.perf_counter() - t0
        row["build_rss_delta_bytes"] = rss_bytes() - rss0
        log(f"map_scale: built {size} x {args.dim} in {row['build_s']:.1f} s")
        del db
        cold = probe(path, qfile, tfile, [args.ef])
        time.sleep(2.5)  # files younger than verify_cache.RACY_S are rehashed, not trusted
        probe(path, qfile, tfile, [args.ef])  # records the verification
        warm = probe(path, qfile, tfile, [args.ef, *args.efs])
        row["open_cold_s"], row["open_warm_s"] = cold["open_s"], warm["open_s"]
        keys = ("rss_bytes", "top1", "top10", "p50_ms", "p99_ms", "by_ef")
        row.update({k: warm[k] for k in keys})
        info = map_info(path, verify=False)
        row["disk_bytes_per_place"] = info["size_bytes"] / size
        row["add_1000_s"] = add_time(path, extra, size)
        log(f"map_scale: {json.dumps(row)}")
        rows.append(row)
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "map_scale.json").write_text(json.dumps(rows, indent=2))
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of the rows (one per map)."""
    head = (
        "| dim | places | build s | open cold s | open warm s | ef | p50 ms | p99 ms | top-1 % "
        "| top-10 % | RSS MiB | disk B/place | add 1,000 s | fp16 exact top-1 vs fp32 % |"
    )
    out = [head, "|" + "---|" * 14]
    for r in rows:
        for e in r.get("by_ef") or [r]:
            out.append(
                f"| {r['dim']} | {r['size']:,} | {r['build_s']:.1f} | {r['open_cold_s']:.2f} "
                f"| {r['open_warm_s']:.2f} | {e.get('ef', '')} | {e['p50_ms']:.2f} "
                f"| {e['p99_ms']:.2f} | {e['top1']:.1f} | {e['top10']:.1f} "
                f"| {r['rss_bytes'] / 2**20:.0f} | {r['disk_bytes_per_place']:,.0f} "
                f"| {r['add_1000_s']:.2f} | {r.get('fp16_top1_vs_fp32', float('nan')):.1f} |"
            )
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> Path:
    plt = plt_module()
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    for dim in sorted({r["dim"] for r in rows}):
        rs = sorted((r for r in rows if r["dim"] == dim), key=lambda r: r["size"])
        x = [r["size"] for r in rs]
        ax[0].plot(x, [r["p50_ms"] for r in rs], marker="o", label=f"{dim}-d p50")
        ax[0].plot(x, [r["p99_ms"] for r in rs], marker="x", ls="--", label=f"{dim}-d p99")
        ax[1].plot(x, [r["rss_bytes"] / 2**20 for r in rs], marker="o", label=f"{dim}-d RSS")
    for a, lab in zip(ax, ("query latency (ms)", "resident memory after open (MiB)"), strict=True):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("map size (places)")
        a.set_ylabel(lab)
        a.legend(fontsize=7)
    fig.suptitle("HNSW maps (M=16): one query, k=10, through Map.search", fontsize=9)
    fig.tight_layout()
    return savefig(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--index", default="hnsw")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument("--ef", type=int, default=128)
    ap.add_argument("--efs", type=int, nargs="*", default=[256, 512], help="more ef to probe")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--probe", type=Path, default=None, help="only probe this existing map")
    ap.add_argument("--report", type=Path, nargs="*", help="only print tables + plot of JSONs")
    ap.add_argument(
        "--add-bench",
        type=Path,
        nargs="*",
        help="only time `map add` of 1,000 places into "
        "each of these maps, interleaved, --reps times",
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--base-limit", type=int, default=60)
    ap.add_argument("--work", type=Path, default=Path("/tmp/sfrs_map_scale"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/map_scale"))
    ap.add_argument("--keep", action="store_true", help="keep the map folders")
    args = ap.parse_args(argv)
    if args.probe:
        warm = probe(
            args.probe, args.work / "queries.npy", args.work / "truth.npy", [args.ef, *args.efs]
        )
        print(json.dumps(warm, indent=2))
        return 0
    if args.add_bench:
        times: dict[str, list[float]] = {str(p): [] for p in args.add_bench}
        for rep in range(args.reps):
            for p in args.add_bench:
                from sfrs_edge.maps import Map

                m = Map.open(p, load_index=False)
                extra = np.random.default_rng(rep).standard_normal((1000, m.dim)).astype(np.float32)
                extra /= np.linalg.norm(extra, axis=1, keepdims=True)
                n = len(m)
                del m
                times[str(p)].append(add_time(p, extra, n + 10_000_000 * (rep + 1)))
                log(f"add 1000 into {p} ({n:,} places): {times[str(p)][-1]:.3f} s")
        print(
            json.dumps({p: {"median_s": float(np.median(t)), "all_s": t} for p, t in times.items()})
        )
        return 0
    if args.report:
        rows = [r for p in args.report for r in json.loads(p.read_text())]
        print(table(rows))
        plot(rows, args.out / "map_scale.png")
        return 0
    rows = run(args)
    (args.out / "map_scale.md").write_text(table(rows) + "\n")
    plot(rows, args.out / f"map_scale_{args.dim}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
