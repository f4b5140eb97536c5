"""The camera loop at scale: what a frame costs after inference, at 1k to 1M places.

Four parts (``--parts``), each written to ``benchmarks/results/loop_scale.json`` (a list of
row objects; ``part`` says which):

- ``after``: per-frame time of everything after inference (search k=32, temporal filter,
  re-ranking k=10 from the map's memory-mapped local features, metadata, position) through
  ``Localizer.stream``, for maps of ``--sizes`` places (512-d HNSW, local features included,
  positions along the route), filters ``none|seq|hmm``, re-ranking off and on, interleaved frame
  by frame. Descriptors are grown from real ones exactly as :mod:`benchmarks.search` does
  (Lite0 NetVLAD of Gardens Point + Corridor, 512-d); each place's local features are those of
  a real Gardens Point image (``--model``: a re-ranking export), query frames the night
  traversal's. Inference is replaced by a stand-in engine that hands out the precomputed
  outputs, so the figure is the loop's own cost. Each size runs in a fresh process: resident
  memory (RSS) and open time are that process's.
- ``fp16``: exact search over float32 vs float16 maps (converted at open, the runtime's rule)
  vs the per-query conversion used before, interleaved; top-1 agreement; conversion time.
- ``rerank``: ``RerankStage.apply`` alone (the night frames' outputs against ``--map``), wall
  and CPU per frame, and where cProfile finds the time, per ``--scorers`` entry.
- ``camera``: frames/s and CPU time per frame of ``Localizer.stream`` over Gardens Point night
  as an MJPG video (every frame, no drops), filter ``seq``, re-ranking off/on, 1 and 2 inference
  threads, 1 and 2 frames in flight, interleaved in chunks.

    python -m benchmarks.loop_scale --model /tmp/i21/lite0_rr.onnx --map /tmp/i21/gp_map \\
        --sizes 1000 10000 100000 1000000
    python -m benchmarks.loop_scale --model M --map MAP --sizes 1000 100000 --quick
    python -m benchmarks.loop_scale --report benchmarks/results/loop_scale.json

HNSW graphs (M=16, ef_construction=100) and maps are cached under ``--work`` (built once;
``--parts graphs`` builds the graphs and, given ``--model`` and ``--map``, the grown maps, so that
they can be built under ``nice`` before the timing parts run); a cached graph is reused when the
map directory is rewritten. ``--scorers`` re-ranks with each named ``scorer[:fusion]`` side by
side (default: :class:`~sfrs_edge.rerank.RerankConfig`'s); every row records the 1-minute load
average before and after its part (``load_before`` / ``load_after``: the machine is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, data_root, log, plt_module, rss_bytes, savefig

REPO = Path(__file__).resolve().parents[1]
DIM = 512
FILTERS = ("none", "seq", "hmm")


# --- grown maps ---------------------------------------------------------------------------


def base(work: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Real 512-d base descriptors and traversal index arrays (cached in ``work``)."""
    from benchmarks import models, search

    path = work / "base_512.npz"
    if path.is_file():
        z = np.load(path)
        return z["base"], [z[f"seq{i}"] for i in range(int(z["n"]))]
    net = models.quick_offtheshelf()
    raw, seqs = search.base_descriptors(net, data_root(), (180, 320), cache=work)
    b = search.to_dim(raw, DIM, 0)
    np.savez(path, base=b, n=len(seqs), **{f"seq{i}": s for i, s in enumerate(seqs)})
    return b, seqs


def grown(work: Path, size: int, seed: int = 0) -> np.ndarray:
    from benchmarks import search

    b, seqs = base(work)
    return search.grow(b, seqs, size, np.random.default_rng(seed))


def local_pool(model: Path, map_dir: Path) -> dict[str, np.ndarray]:
    """Real local features: the map's (one per Gardens Point day image) and the night
    queries' (computed once with the model, cached beside the map)."""
    from sfrs_edge.maps import Map

    m = Map.open(map_dir)
    pool = {n: np.asarray(m.extra(n)) for n in ("local_features", "local_xy")}
    cache = map_dir.parent / f"{map_dir.name}.night_outputs.npz"
    if not cache.is_file():
        from sfrs_edge.engine import Engine
        from sfrs_edge.images import list_images, read_image

        eng = Engine.open(model, threads=1)
        outs = [
            eng.embed_frame_all(read_image(p))
            for p in list_images(data_root() / "gardens_point" / "night_right")
        ]
        np.savez(cache, **{k: np.stack([o[k] for o in outs]) for k in outs[0]})
    z = np.load(cache)
    return {**pool, **{f"query_{k}": z[k] for k in z.files}}


GRAPH_M, GRAPH_EFC = 16, 100


def _graph_config():
    from sfrs_edge.maps.index import IndexConfig

    return IndexConfig("hnsw", GRAPH_M, GRAPH_EFC, 128)


def graph(work: Path, size: int, desc: np.ndarray | None = None):
    """The HNSW graph over ``size`` grown places, built once and cached in ``work``."""
    from sfrs_edge.maps.index import HnswIndex

    path = work / f"graph_{size}.bin"
    if path.is_file():
        return HnswIndex.load(path, DIM, size, _graph_config())
    desc = grown(work, size) if desc is None else desc
    t0 = time.perf_counter()
    index = HnswIndex.build(desc, _graph_config())
    index.save(path)
    log(f"loop_scale: HNSW graph of {size} built in {time.perf_counter() - t0:.0f} s")
    return index


def build_grown_map(work: Path, size: int, pool: dict[str, np.ndarray], info) -> Path:
    """A 512-d HNSW map of ``size`` grown places with local features and xy positions."""
    from sfrs_edge.maps import writer
    from sfrs_edge.maps.index import HnswIndex
    from sfrs_edge.maps.manifest import new_manifest
    from sfrs_edge.maps.metadata import Place
    from sfrs_edge.maps.store import atomic_map_dir

    path = work / f"map_{size}"
    if (path / "manifest.json").is_file():
        return path
    desc = grown(work, size)
    config = _graph_config()
    index = graph(work, size, desc)
    src = pool["local_features"]
    which = np.arange(size) % len(src)
    extras = {}
    for name in ("local_features", "local_xy"):  # written chunk by chunk: 17 GB at 1M
        arr = np.lib.format.open_memmap(
            work / f"src_{name}_{size}.npy", "w+", pool[name].dtype, (size, *pool[name].shape[1:])
        )
        for a in range(0, size, 50_000):
            arr[a : a + 50_000] = pool[name][which[a : a + 50_000]]
        arr.flush()
        extras[name] = arr
    places = [
        Place(i, f"p{i:08d}", "grown", (float(i), 0.0), "xy") for i in range(size)
    ]  # positions along the route: one unit per row
    real_build = HnswIndex.build
    HnswIndex.build = classmethod(lambda cls, d, c: index)  # the cached graph
    try:
        with atomic_map_dir(path) as staging:
            man = new_manifest(
                dim=DIM,
                model=writer.model_section(_StandIn(info)),
                index=config.to_manifest(),
                count=size,
                positions={"kind": "xy", "source": "grown", "count": size},
            )
            writer.write_map(staging, man, writer.Rows(desc, places, extras), config, "float32")
    finally:
        HnswIndex.build = real_build
        for name in extras:
            (work / f"src_{name}_{size}.npy").unlink(missing_ok=True)
    return path


@dataclasses.dataclass
class _StandIn:
    info: object

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def dim(self) -> int:
        return self.info.descriptor_dim


def stand_in_info(model: Path):
    """The re-ranking model's info with a 512-d descriptor and a 16x16 input (the stand-in
    engine's: preprocessing a frame then costs nothing)."""
    from sfrs_edge.engine import Engine

    info = Engine.open(model, threads=1).info
    pre = dataclasses.replace(info.preprocessing, height=16, width=16)
    return dataclasses.replace(info, descriptor_dim=DIM, preprocessing=pre)


class OutputsBackend:
    """An engine backend that hands out precomputed outputs, one frame after another."""

    name = "precomputed"
    max_batch = None

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs
        self.i = 0

    def extra_outputs(self):
        return {k: (v.shape[1:], v.dtype) for k, v in self.outputs.items() if k != "descriptor"}

    def _next(self, bufs: dict[str, np.ndarray]) -> None:
        n = len(self.outputs["descriptor"])
        for k, buf in bufs.items():
            buf[0] = self.outputs[k][self.i % n]
        self.i += 1

    def bind(self, inp, out):
        return lambda: self._next({"descriptor": out})

    def bind_all(self, inp, outs):
        return lambda: self._next(outs)


# --- part: after inference ------------------------------------------------------------------


def rss_split() -> dict[str, float]:
    """Resident MiB of this process by kind (Linux ``/proc/self/status``): ``anon`` (heap, the
    process's own memory) and ``file`` (pages of memory-mapped files: the graph, the local
    features read so far, and their readahead; the kernel can reclaim these)."""
    out = {"anon": 0.0, "file": 0.0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                kind = "anon" if key == "RssAnon" else "file"
                out[kind] += int(val.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return {k: round(v, 1) for k, v in out.items()}


_AFTER = """
import json, sys, time
sys.path.insert(0, {repo!r})
from benchmarks.loop_scale import after_child
print(json.dumps(after_child({args!r})))
"""


def after_child(a: dict) -> list[dict]:
    """One map size in this (fresh) process: open, then every (filter, rerank) interleaved."""
    from benchmarks.common import rss_bytes
    from sfrs_edge.engine import Engine
    from sfrs_edge.localize import Localizer
    from sfrs_edge.maps import Map

    work, size = Path(a["work"]), a["size"]
    z = np.load(work / "queries.npz")
    q = {k: z[k] for k in z.files}
    import pickle

    info = pickle.loads(bytes.fromhex(a["info"]))
    if a["cold"]:  # the map's extras start outside the page cache (this map's files only)
        for f in (work / f"map_{size}").glob("*.x.*.npy"):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    the_map = Map.open(work / f"map_{size}")
    open_s = time.perf_counter() - t0
    rss_open = rss_split()
    rows = []
    streams = {}
    frame = np.zeros((16, 16, 3), np.uint8)
    settings = [(0, "")] + [(10, sc) for sc in a["scorers"]]
    configs = [(filt, rerank, sc) for rerank, sc in settings for filt in a["filters"]]
    local = {k: q[k] for k in ("local_features", "local_xy")}
    for j, (filt, rerank, scorer) in enumerate(configs):
        j = j if a["cold"] else 0  # cold: each configuration walks its own stretch of the map
        outputs = {"descriptor": q["descriptor"][j], **(local if rerank else {})}
        eng = Engine(Path("stand-in.onnx"), info, OutputsBackend(outputs))
        config = rerank_config(scorer) if rerank else None
        loc = Localizer(eng, the_map, k=5, rerank=config, threads=1)
        walk = q["walk"][j]  # the query route: frame i near map row walk[i]
        frames = (frame for _ in iter(int, 1))
        gen = loc.stream(frames, filter=filt, window=5, speed=float(walk[1] - walk[0]))
        streams[(filt, rerank, scorer)] = (gen, [], [])
    for _ in range(a["frames"]):
        for gen, times, cpus in streams.values():
            t, c = time.perf_counter(), time.thread_time()
            r = next(gen)
            wall, cpu = time.perf_counter() - t, time.thread_time() - c
            inner = r.timings.get("inference", 0.0) + r.timings.get("preprocess", 0.0)
            times.append(wall * 1000.0 - inner)
            cpus.append(cpu * 1000.0)  # the stand-in inference costs no measurable CPU
    rss = rss_bytes()
    rss_end = rss_split()
    for (filt, rerank, scorer), (_, times, cpus) in streams.items():
        t = np.array(times[10:])
        c = np.array(cpus[10:])
        rows.append(
            dict(
                part="after",
                places=size,
                rows_per_frame=int(walk[1] - walk[0]),
                cold=bool(a["cold"]),
                filter=filt,
                rerank=rerank,
                scorer=scorer_label(scorer) if rerank else "",
                p50_ms=round(float(np.percentile(t, 50)), 3),
                p99_ms=round(float(np.percentile(t, 99)), 3),
                cpu_p50_ms=round(float(np.percentile(c, 50)), 3),
                cpu_p99_ms=round(float(np.percentile(c, 99)), 3),
                load_avg=round(os.getloadavg()[0], 1),
                frames=len(t),
                rss_mib=round(rss / 2**20, 1),
                rss_before_open_mib=round(rss0 / 2**20, 1),
                rss_anon_after_open_mib=rss_open["anon"],
                rss_file_after_open_mib=rss_open["file"],
                rss_anon_mib=rss_end["anon"],
                rss_file_mib=rss_end["file"],
                open_s=round(open_s, 3),
            )
        )
    return rows


def run_after(args, info) -> list[dict]:
    import pickle

    work = args.work
    pool = local_pool(args.model, args.map)
    # queries: grown descriptors along a route through the map's rows, the night frames'
    # local features
    n_q = args.frames
    rows = []
    for size in args.sizes:
        path = build_grown_map(work, size, pool, info)
        from sfrs_edge.maps import Map

        m = Map.open(path)
        step = args.rows_per_frame or max(1, size // 100_000)  # denser map: more rows per frame
        n_walks = len(args.filters) * (1 + len(args.scorers)) if args.cold else 1
        if args.cold:  # one stretch of the route per configuration
            starts = [(j + 1) * size // (n_walks + 1) for j in range(n_walks)]
        else:
            starts = [size // 3]
        walk = np.stack([s0 + np.arange(n_q) * step for s0 in starts])
        q = m.vectors(walk.ravel() % size).reshape(len(starts), n_q, -1)
        rng = np.random.default_rng(1)
        q = q + 0.02 * rng.standard_normal(q.shape).astype(np.float32)
        q /= np.linalg.norm(q, axis=-1, keepdims=True)
        del m
        qn = len(pool["query_descriptor"])
        np.savez(
            work / "queries.npz",
            descriptor=q,
            walk=walk,
            local_features=pool["query_local_features"][np.arange(n_q) % qn],
            local_xy=pool["query_local_xy"][np.arange(n_q) % qn],
        )
        child = dict(
            work=str(work),
            size=size,
            filters=list(args.filters),
            scorers=list(args.scorers),
            cold=bool(args.cold),
            frames=n_q,
            info=pickle.dumps(info).hex(),
        )
        code = _AFTER.format(repo=str(REPO), args=child)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=_env(1)
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        got = json.loads(out.stdout.strip().splitlines()[-1])
        for r in got:
            log(
                f"loop_scale: {size} places {r['filter']} rerank {r['rerank']} {r['scorer']}: "
                f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms (CPU p50 {r['cpu_p50_ms']} ms) "
                f"RSS {r['rss_mib']} MiB open {r['open_s']} s"
            )
        rows += got
    return rows


def rerank_config(scorer: str):
    """RerankConfig(k=10) with ``scorer[:fusion]`` ('' or 'default': the config's defaults)."""
    from sfrs_edge.rerank import RerankConfig

    if scorer in ("", "default"):
        return RerankConfig(k=10)
    name, _, fusion = scorer.partition(":")
    return RerankConfig(k=10, scorer=name, **({"fusion": fusion} if fusion else {}))


def scorer_label(scorer: str) -> str:
    """``scorer:fusion`` as run (``(default)`` appended for RerankConfig's defaults)."""
    c = rerank_config(scorer)
    return f"{c.scorer}:{c.fusion}" + (" (default)" if scorer in ("", "default") else "")


def load_now() -> tuple[float, str]:
    """The 1-minute load average and ``uptime``'s line (logged: the machine is shared)."""
    out = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return round(os.getloadavg()[0], 2), out


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    return env


# --- part: float16 exact search ---------------------------------------------------------------


def run_fp16(args) -> list[dict]:
    from benchmarks import search
    from sfrs_edge.threads import hold_blas

    hold_blas(1)
    b, seqs = base(args.work)
    shapes = [(20_000, 4096), (5_000, 20480)] if not args.quick else [(5_000, 4096)]
    rows = []
    for n, dim in shapes:
        bd = search.to_dim(b, dim, 0)
        db = search.grow(bd, seqs, n, np.random.default_rng(0))
        q = search.grow(bd, seqs, 50, np.random.default_rng(1))
        rows.append(_fp16_row(db, q, 5 if args.quick else 15))
        log(f"loop_scale fp16: {rows[-1]}")
    return rows


def _fp16_row(db: np.ndarray, q: np.ndarray, reps: int) -> dict:
    from benchmarks.common import time_interleaved
    from sfrs_edge.maps.index import ExactIndex, similarities, top_k

    db16 = db.astype(np.float16)
    t0 = time.perf_counter()
    half = ExactIndex(db16)
    convert_s = time.perf_counter() - t0
    full = ExactIndex(db)
    it = iter(range(10**9))

    def one(index):
        return lambda: index.search(q[next(it) % len(q)][None], 10)

    def per_query():  # the rule before: float16 blocks converted on every query
        return top_k(similarities(q[next(it) % len(q)][None], db16), 10)

    stats = time_interleaved({"fp32": one(full), "fp16": one(half), "per_query": per_query}, reps)
    top1 = float(np.mean(half.search(q, 1)[0] == full.search(q, 1)[0]) * 100)
    return dict(
        part="fp16",
        places=len(db),
        dim=db.shape[1],
        fp32_p50_ms=round(stats["fp32"].p50, 2),
        fp16_p50_ms=round(stats["fp16"].p50, 2),
        fp16_per_query_p50_ms=round(stats["per_query"].p50, 2),
        ratio_fp16_fp32=round(stats["fp16"].p50 / stats["fp32"].p50, 3),
        top1_agreement_pct=top1,
        convert_at_open_s=round(convert_s, 3),
        load_avg=round(os.getloadavg()[0], 1),
    )


# --- part: the re-ranking stage alone -------------------------------------------------------


def run_rerank(args) -> list[dict]:
    """``RerankStage.apply`` alone: the 200 night frames' outputs against the ``--map``'s local
    features (top 32 by exact search), per scorer: wall and process CPU per frame, and the
    share of the functions cProfile finds most of the time in."""
    import cProfile
    import pstats

    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import Map
    from sfrs_edge.rerank import RerankStage
    from sfrs_edge.threads import hold_blas

    hold_blas(1)
    pool = local_pool(args.model, args.map)
    q = {k[len("query_") :]: v for k, v in pool.items() if k.startswith("query_")}
    the_map = Map.open(args.map)
    db = the_map.vectors(np.arange(len(the_map)))
    n = len(q["descriptor"])
    found = []
    for i in range(n):
        sims = db @ q["descriptor"][i].astype(np.float32)
        ids = np.argsort(-sims)[:32]
        found.append((ids, sims[ids]))
    outs = [{k: v[i] for k, v in q.items()} for i in range(n)]
    eng = Engine.open(args.model, threads=1)
    reps = 1 if args.quick else 3
    rows = []
    for scorer in args.scorers:
        stage = RerankStage.create(eng, the_map, rerank_config(scorer))

        def run(stage=stage):
            for o, (ids, sims) in zip(outs, found, strict=True):
                stage.apply(o, ids, sims)

        run()  # warm-up
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            run()
        wall = (time.perf_counter() - t) / (reps * n) * 1000
        cpu = (time.process_time() - c) / (reps * n) * 1000
        prof = cProfile.Profile()
        prof.enable()
        run()
        prof.disable()
        st = pstats.Stats(prof)
        total = sum(v[2] for v in st.stats.values()) or 1.0  # tottime over all functions
        top = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:3]
        row = dict(
            part="rerank",
            scorer=scorer_label(scorer),
            k=10,
            frames=n,
            wall_ms_per_frame=round(wall, 2),
            cpu_ms_per_frame=round(cpu, 2),
            profile_top=[f"{fn[2]} {100 * v[2] / total:.0f}%" for fn, v in top],
        )
        log(f"loop_scale rerank: {row}")
        rows.append(row)
    return rows


# --- part: camera loop --------------------------------------------------------------------


def night_video(work: Path) -> Path:
    """Gardens Point night_right as an MJPG video (the frames a camera would deliver)."""
    import cv2

    from sfrs_edge.images import list_images, read_image

    out = work / "night_right.avi"
    if out.is_file():
        return out
    files = list_images(data_root() / "gardens_point" / "night_right")
    first = read_image(files[0])
    h, w = first.shape[:2]
    vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for p in files:
        vw.write(read_image(p))
    vw.release()
    return out


def run_camera(args) -> list[dict]:
    from sfrs_edge.localize import Localizer
    from sfrs_edge.maps import Map
    from sfrs_edge.stream import FrameStream

    video = night_video(args.work)
    the_map = Map.open(args.map)
    configs = []
    for threads in (1, 2):
        for scorer in [None, *args.scorers]:
            config = None if scorer is None else rerank_config(scorer)
            loc = Localizer(args.model, the_map, threads=threads, rerank=config)
            for flight in (1, 2):
                configs.append(
                    dict(
                        threads=threads,
                        rerank=0 if config is None else config.k,
                        scorer="" if scorer is None else scorer_label(scorer),
                        in_flight=flight,
                        loc=loc,
                    )
                )
    chunk = 25 if args.quick else 50
    rounds = 1 if args.quick else 4
    acc = {id(c): dict(frames=0, wall=0.0, cpu=0.0, rerank_cpu=0.0, lat=[]) for c in configs}
    for _ in range(rounds):
        for c in configs:
            with FrameStream(video, drop=False, realtime=False) as frames:
                gen = c["loc"].stream(_first(frames, chunk), filter="seq", in_flight=c["in_flight"])
                t0, c0 = time.perf_counter(), time.process_time()
                n = 0
                for r in gen:
                    n += 1
                    acc[id(c)]["lat"].append(r.latency_ms)
                    acc[id(c)]["rerank_cpu"] += r.timings.get("rerank_cpu", 0.0)
                acc[id(c)]["wall"] += time.perf_counter() - t0
                acc[id(c)]["cpu"] += time.process_time() - c0
                acc[id(c)]["frames"] += n
    rows = []
    for c in configs:
        a = acc[id(c)]
        row = dict(
            part="camera",
            threads=c["threads"],
            rerank=c["rerank"],
            scorer=c["scorer"],
            in_flight=c["in_flight"],
            filter="seq",
            frames=a["frames"],
            fps=round(a["frames"] / a["wall"], 2),
            cpu_ms_per_frame=round(a["cpu"] / a["frames"] * 1000, 2),
            rerank_cpu_ms_per_frame=round(a["rerank_cpu"] / a["frames"], 2),
            latency_p50_ms=round(float(np.percentile(a["lat"], 50)), 2),
            latency_p99_ms=round(float(np.percentile(a["lat"], 99)), 2),
        )
        log(f"loop_scale camera: {row}")
        rows.append(row)
    return rows


def _first(frames, n: int):
    for i, f in enumerate(frames):
        if i >= n:
            return
        yield f


# --- report -------------------------------------------------------------------------------


def report(rows: list[dict], out: Path) -> Path | None:
    """Plot after-inference p50 against map size, one line per (filter, rerank)."""
    plt = plt_module()
    after = [r for r in rows if r.get("part") == "after"]
    if plt is None or not after:
        return None
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))

    def key(r: dict) -> tuple:
        return (r["filter"], r["rerank"], r.get("scorer", ""), bool(r.get("cold")))

    settings = sorted({(r["rerank"], r.get("scorer", "")) for r in after})
    colours = {st: f"C{i}" for i, st in enumerate(settings)}
    for filt, rerank, scorer, cold in sorted({key(r) for r in after}):
        if filt == "hmm":  # its cost follows rows per frame, not places (see the doc)
            continue
        sel = sorted(
            (r for r in after if key(r) == (filt, rerank, scorer, cold)), key=lambda r: r["places"]
        )
        x = [r["places"] for r in sel]
        label = f"{filt}, rerank {rerank or 'off'}" + (f" {scorer}" if rerank and scorer else "")
        label += " (cold)" if cold else ""
        style = ("s" if filt == "seq" else "o") + (":" if cold else "-" if filt == "seq" else "--")
        colour = colours[(rerank, scorer)]
        ax[0].plot(x, [r["p50_ms"] for r in sel], style, color=colour, label=label, ms=4)
    ax[0].set_yscale("log")
    sizes = sorted({r["places"] for r in after})
    warm = [r for r in after if not r.get("cold")] or after
    sizes = sorted({r["places"] for r in warm})
    first = [next(r for r in warm if r["places"] == s) for s in sizes]
    ax[1].plot(sizes, [r["rss_mib"] for r in first], "o-", label="total")
    if all("rss_anon_mib" in r for r in first):
        ax[1].plot(sizes, [r["rss_anon_mib"] for r in first], "s--", label="anonymous")
        ax[1].plot(sizes, [r["rss_file_mib"] for r in first], "^--", label="file-backed (mmap)")
        ax[1].legend(fontsize=7)
    for a, title in zip(
        ax,
        ("after inference, ms per frame (p50; filters none, seq)", "resident MiB after the run"),
        strict=True,
    ):
        a.set_xscale("log")
        a.set_xlabel("map places (512-d HNSW, local features)")
        a.set_title(title)
    ax[0].legend(fontsize=7)
    return savefig(fig, out)


def _key(row: dict) -> tuple:
    """What a new row replaces in an existing JSON: its part's rows (at its map size for
    ``after``, so that sizes can be measured in separate runs)."""
    if row.get("part") == "after":
        return (row.get("part"), row.get("places"), bool(row.get("cold")))
    return (row.get("part"),)


def tables(rows: list[dict]) -> str:
    """The JSON's rows as the markdown tables of ``docs/BENCHMARKS.md``."""
    out = []
    after = [r for r in rows if r.get("part") == "after"]
    if after:

        def rr(r: dict) -> str:
            return f"k={r['rerank']} {r.get('scorer', '')}".strip() if r["rerank"] else "off"

        kinds = sorted({rr(r) for r in after}, key=lambda k: (k != "off", k))
        out += [
            "| places | filter | "
            + " | ".join(f"rerank {k}: p50 / p99 ms" for k in kinds)
            + " | RSS MiB (anon + file) | open s | load before/after |",
            "|---|---|" + "---|" * (len(kinds) + 3),
        ]
        for size, cold in sorted({(r["places"], bool(r.get("cold"))) for r in after}):
            for filt in FILTERS:
                sel = {
                    rr(r): r
                    for r in after
                    if (r["places"], bool(r.get("cold")), r["filter"]) == (size, cold, filt)
                }
                if not sel:
                    continue
                r = next(iter(sel.values()))
                mem = f"{r['rss_mib']:.0f}"
                if "rss_anon_mib" in r:
                    mem += f" ({r['rss_anon_mib']:.0f} + {r['rss_file_mib']:.0f})"
                cells = [
                    f"{sel[k]['p50_ms']:.2f} / {sel[k]['p99_ms']:.2f}" if k in sel else "–"
                    for k in kinds
                ]
                where = f"{size:,}" + (" cold" if cold else "")
                out.append(
                    f"| {where} | {filt} | " + " | ".join(cells) + f" | {mem} | {r['open_s']:.2f} "
                    f"| {r.get('load_before', '–')} / {r.get('load_after', '–')} |"
                )
        out.append("")
    fp16 = [r for r in rows if r.get("part") == "fp16"]
    if fp16:
        out += [
            "| map | float32 ms | float16 (converted at open) ms | ratio | float16 converted per "
            "query ms | top-1 agreement | conversion at open s | load before/after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in fp16:
            out.append(
                f"| {r['places']:,} × {r['dim']} | {r['fp32_p50_ms']} | {r['fp16_p50_ms']} "
                f"| {r['ratio_fp16_fp32']:.2f} | {r['fp16_per_query_p50_ms']} "
                f"| {r['top1_agreement_pct']:.1f} % | {r['convert_at_open_s']} "
                f"| {r.get('load_before', '–')} / {r.get('load_after', '–')} |"
            )
        out.append("")
    rr_rows = [r for r in rows if r.get("part") == "rerank"]
    if rr_rows:
        out += [
            "| re-ranking (k=10) | wall ms/frame | CPU ms/frame | most time in (cProfile) "
            "| load before/after |",
            "|---|---|---|---|---|",
        ]
        for r in rr_rows:
            out.append(
                f"| {r['scorer']} | {r['wall_ms_per_frame']} | {r['cpu_ms_per_frame']} "
                f"| {', '.join(r['profile_top'])} "
                f"| {r.get('load_before', '–')} / {r.get('load_after', '–')} |"
            )
        out.append("")
    cam = [r for r in rows if r.get("part") == "camera"]
    if cam:
        out += [
            "| threads | in flight | rerank | frames/s | CPU ms/frame | re-ranking CPU ms/frame "
            "| latency p50 / p99 ms | load before/after |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sorted(cam, key=lambda r: (r["threads"], r["rerank"], r.get("scorer", ""))):
            rr = f"k={r['rerank']} {r.get('scorer', '')}".strip() if r["rerank"] else "off"
            out.append(
                f"| {r['threads']} | {r['in_flight']} | {rr} | {r['fps']:.1f} "
                f"| {r['cpu_ms_per_frame']:.1f} | {r['rerank_cpu_ms_per_frame']:.2f} "
                f"| {r['latency_p50_ms']:.0f} / {r['latency_p99_ms']:.0f} "
                f"| {r.get('load_before', '–')} / {r.get('load_after', '–')} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="re-ranking export (local features)")
    ap.add_argument("--map", type=Path, help="Gardens Point day_left map built by --model")
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10_000, 100_000, 1_000_000])
    ap.add_argument("--filters", nargs="+", default=list(FILTERS), choices=FILTERS)
    ap.add_argument(
        "--parts",
        nargs="+",
        default=["after", "fp16", "rerank", "camera"],
        choices=["graphs", "after", "fp16", "rerank", "camera"],
    )
    ap.add_argument(
        "--scorers",
        nargs="+",
        default=["default"],
        help="re-ranking scorer[:fusion] per configuration, side by side (default: "
        "RerankConfig's defaults)",
    )
    ap.add_argument(
        "--rows-per-frame",
        type=int,
        default=None,
        help="after part: map rows the query route advances per frame (default: 1 per 100k "
        "places, at least 1: a denser map along the same route)",
    )
    ap.add_argument(
        "--cold",
        action="store_true",
        help="after part: the map's local features start outside the page cache and every "
        "configuration walks its own stretch of the map (so each reads its rows first)",
    )
    ap.add_argument("--quick", action="store_true", help="fewer frames and repetitions")
    ap.add_argument("--frames", type=int, default=None, help="frames per configuration")
    ap.add_argument("--work", type=Path, default=Path("/tmp/i21/loop"))
    ap.add_argument("--out", type=Path, default=RESULTS / "loop_scale.json")
    ap.add_argument(
        "--report", type=Path, default=None, help="print the tables of an existing JSON and plot it"
    )
    args = ap.parse_args(argv)
    if args.report is not None:
        rows = json.loads(args.report.read_text())
        print(tables(rows))
        print(report(rows, REPO / "docs" / "img" / "loop_scale.png"))
        return
    args.frames = args.frames or (60 if args.quick else 200)
    args.work.mkdir(parents=True, exist_ok=True)
    if {"after", "rerank", "camera"} & set(args.parts) and (not args.model or not args.map):
        ap.error("--model and --map are needed for the after, rerank and camera parts")
    rows: list[dict] = []
    if "graphs" in args.parts:  # the cached HNSW graphs and maps (slow at 1M: run it early)
        for size in args.sizes:
            graph(args.work, size)
        if args.model and args.map:
            pool, info = local_pool(args.model, args.map), stand_in_info(args.model)
            for size in args.sizes:
                build_grown_map(args.work, size, pool, info)
    timed = {
        "after": lambda: run_after(args, stand_in_info(args.model)),
        "fp16": lambda: run_fp16(args),
        "rerank": lambda: run_rerank(args),
        "camera": lambda: run_camera(args),
    }
    for part, fn in timed.items():
        if part not in args.parts:
            continue
        before, line = load_now()
        log(f"loop_scale {part}: load before: {line}")
        got = fn()
        after, line = load_now()
        log(f"loop_scale {part}: load after: {line}")
        rows += [dict(r, load_before=before, load_after=after) for r in got]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        return
    if args.out.is_file():  # keep an earlier run's rows of other parts (and other map sizes)
        new = {_key(r) for r in rows}
        rows = [r for r in json.loads(args.out.read_text()) if _key(r) not in new] + rows
    args.out.write_text(json.dumps(rows, indent=1))
    log(f"loop_scale: wrote {args.out} (rss of this process {rss_bytes() / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
