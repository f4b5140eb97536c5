"""Sustained throughput and capture-to-result latency of the stream path, and frames dropped.

Assembles a video from a Gardens Point traversal (MJPG .avi in a temporary folder, deleted
afterwards), then plays it through ``FrameStream`` + ``Localizer.stream``:

- ``--fps all``: every frame, as fast as possible (no pacing, no drops): throughput;
- ``--fps F``: played as a camera at F frames/s; stale frames are dropped.

R@1 over the processed frames (per-frame and filtered answer) assumes frame i of the video
shows map row i (Gardens Point traversals against a map of another traversal), |i - j| <= 2.

    python benchmarks/streaming_throughput.py --model /tmp/maps_lite0.onnx --map /tmp/gp_map \
        --frames /work/shared/datasets/gardens_point/day_right --fps all 5 10 30 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from sfrs_edge.images import list_images
from sfrs_edge.localize import Localizer
from sfrs_edge.stream import FrameStream


def make_video(frames: list[Path], path: Path, fps: float) -> tuple[int, int]:
    first = cv2.imread(str(frames[0]))
    h, w = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        img = cv2.imread(str(f))
        writer.write(img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h)))
    writer.release()
    return w, h


def run(loc: Localizer, video: Path, fps: str, method: str, window: int) -> dict:
    all_frames = fps == "all"
    latencies, infer, right, right_f = [], [], [], []
    t0 = time.perf_counter()
    with FrameStream(video, fps=None if all_frames else float(fps), drop=not all_frames) as fs:
        for r in loc.stream(fs, filter=method, window=window):
            latencies.append(r.latency_ms)
            infer.append(r.result.timings["total"])
            right.append(abs(r.result.best.id - r.index) <= 2)
            right_f.append(abs(r.best.id - r.index) <= 2)
        dt = time.perf_counter() - t0
        decoded, dropped = fs.decoded, fs.dropped
    lat = np.array(latencies)
    return {
        "camera_fps": fps,
        "filter": f"{method}/{window}",
        "decoded": decoded,
        "processed": len(lat),
        "dropped": dropped,
        "dropped_pct": round(100.0 * dropped / max(decoded, 1), 1),
        "processed_fps": round(len(lat) / dt, 2),
        "localize_ms_median": round(float(np.median(infer)), 1),
        "latency_ms_median": round(float(np.median(lat)), 1),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "latency_ms_max": round(float(lat.max()), 1),
        "r1_per_frame": round(100.0 * float(np.mean(right)), 1),
        "r1_filtered": round(100.0 * float(np.mean(right_f)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--frames", required=True, help="folder of a traversal's images")
    ap.add_argument("--fps", nargs="+", default=["all", "5", "10", "30"])
    ap.add_argument("--filter", default="seq")
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    loc = Localizer(args.model, args.map, backend="cpu", threads=args.threads)
    frames = list_images(args.frames)[: args.limit]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "walk.avi"
        w, h = make_video(frames, video, 10.0)
        print(
            f"{loc.engine!r}; map {len(loc.map)} places; video {len(frames)} frames {w}x{h}; "
            f"threads {args.threads}; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        loc.localize(cv2.imread(str(frames[0])))  # warm-up
        for fps in args.fps:
            row = run(loc, video, fps, args.filter, args.window)
            row["load"] = round(os.getloadavg()[0], 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
