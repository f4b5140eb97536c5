"""Recall@1 of per-frame vs temporally filtered localization on Gardens Point sequences.

Each query traversal is played in order as a stream against a map of the reference traversal;
query i is right when the answer j has |i - j| <= tolerance. Every frame counts (the first
``window - 1`` frames of the stream see a shorter history, as a real stream would).

    python benchmarks/streaming_recall.py --model /tmp/maps_lite0.onnx --map /tmp/gp_map \
        --data /work/shared/datasets/gardens_point --queries day_right night_right

``--index exact hnsw`` plays every stream against both indexes of the same map: exact (every
similarity) and HNSW (32 candidates + the filter's focus rows + ``--sample`` rows scored
exactly, :func:`sfrs_edge.stream.filtering.partial_scores`: what ``Localizer.stream`` does).
``hnsw-candidates`` is the rule before: the 32 candidates, their lowest for every other row.
``--db day_left`` embeds that traversal as the map instead of opening ``--map``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sfrs_edge.engine import Engine
from sfrs_edge.images import list_images
from sfrs_edge.maps import Map
from sfrs_edge.maps.index import HnswIndex, IndexConfig
from sfrs_edge.stream.filtering import FilterConfig, TemporalFilter, partial_scores


def query_descriptors(engine: Engine, folder: Path, cache: Path | None) -> np.ndarray:
    path = cache / f"{engine.fingerprint}_{folder.name}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    desc = engine.embed_files(list_images(folder), batch_size=4)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, desc)
    return desc


def filtered_answers(sims: np.ndarray, config: FilterConfig) -> np.ndarray:
    """Answer (map row) per query frame, playing the rows of ``sims`` (Q, N) in order."""
    filt = TemporalFilter(config)
    return np.array([int(np.argmax(filt.update(s))) for s in sims])


def hnsw_filtered_answers(
    m: Map, q: np.ndarray, config: FilterConfig, sample: int, candidates_only: bool = False
) -> np.ndarray:
    """As :func:`filtered_answers` on an HNSW map: partial exact scores per frame.
    ``candidates_only``: the previous rule (32 candidates, their lowest for every other row)."""
    filt = TemporalFilter(config)
    out = []
    for x in q:
        ids, sims = m.search(x, min(32, len(m)))
        if candidates_only:
            scores = np.full(len(m), float(sims[0].min()), np.float32)
            scores[ids[0]] = sims[0]
            out.append(int(np.argmax(filt.update(scores))))
            continue
        scores, stats = partial_scores(m, x, ids[0], sims[0], filt.focus(), sample)
        out.append(int(np.argmax(filt.update(scores, stats=stats))))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--map", default=None)
    ap.add_argument("--db", default=None, help="traversal to embed as the map (instead of --map)")
    ap.add_argument(
        "--index", nargs="+", default=["exact"], choices=["exact", "hnsw", "hnsw-candidates"]
    )
    ap.add_argument("--sample", type=int, default=256, help="HNSW: rows scored for z statistics")
    ap.add_argument("--data", required=True, help="gardens_point folder")
    ap.add_argument("--queries", nargs="+", default=["day_right", "night_right"])
    ap.add_argument("--windows", nargs="+", type=int, default=[1, 5, 10])
    ap.add_argument("--methods", nargs="+", default=["seq", "hmm"])
    ap.add_argument("--tolerance", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="folder for query descriptors")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    engine = Engine.open(args.model, backend="cpu")
    if args.db:
        db = query_descriptors(engine, Path(args.data) / args.db, args.cache)
        name = args.db
    else:
        m = Map.open(args.map, expect_fingerprint=engine.fingerprint)
        db, name = np.asarray(m.descriptors), m.path.name
    maps = {"exact": Map.from_arrays(db)}
    if {"hnsw", "hnsw-candidates"} & set(args.index):
        maps["hnsw"] = Map.from_arrays(db, HnswIndex.build(db, IndexConfig("hnsw")))
    rows = []
    for split in args.queries:
        q = query_descriptors(engine, Path(args.data) / split, args.cache)
        sims = q @ db.T
        truth = np.arange(len(q))
        single = float(np.mean(np.abs(sims.argmax(1) - truth) <= args.tolerance) * 100)
        for method in args.methods:
            for w in args.windows:
                cfg = FilterConfig(method=method, window=w)
                for kind in args.index:
                    if kind == "exact":
                        ans = filtered_answers(sims, cfg)
                    else:
                        only = kind == "hnsw-candidates"
                        ans = hnsw_filtered_answers(maps["hnsw"], q, cfg, args.sample, only)
                    r1 = float(np.mean(np.abs(ans - truth) <= args.tolerance) * 100)
                    rows.append(
                        {
                            "query": split,
                            "index": kind,
                            "method": method,
                            "window": w,
                            "per_frame_r1": single,
                            "filtered_r1": r1,
                        }
                    )
                    print(
                        f"{name} <- {split:12s} {kind:15s} {method:4s} W={w:<3d} per-frame R@1 "
                        f"{single:5.1f}  filtered R@1 {r1:5.1f}",
                        flush=True,
                    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
