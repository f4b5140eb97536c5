"""Gardens Point through rosbag2: the same recall from bags as from image folders.

Writes two MCAP bags of ``CompressedImage`` (the dataset's own JPEG bytes, 10 Hz stamps) with a
synthetic NavSatFix track (frame i at ``i × 1e-5`` degrees north of a fixed point: 1.11 m per
frame, so ``--radius 2.5`` judges like ``--window 2``), then through the command line:

1. ``map build BAG`` of the reference traversal vs ``map build FOLDER --poses``: descriptor
   difference;
2. ``evaluate --bag`` of the query traversal (ground truth: the bag's GPS) vs ``evaluate
   FOLDER --window 2``: recall@N;
3. ``localize --bag -o OUT.mcap`` (``--filter none`` and ``seq``): messages written, R@1 from
   the written matches messages, frames per second.

    python -m benchmarks.bag_recall --model model.onnx --data /work/shared/datasets/gardens_point

Results: ``benchmarks/results/bag_recall.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

T0 = 1_700_000_000_000_000_000
DT = 100_000_000
LAT0, LON0, STEP = -27.4775, 153.0280, 1e-5


def write_bag(path: Path, images: list[Path]) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    t = ts.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cam = w.add_connection("/cam", "sensor_msgs/msg/CompressedImage", typestore=ts)
        fix = w.add_connection("/fix", "sensor_msgs/msg/NavSatFix", typestore=ts)
        for i, f in enumerate(images):
            stamp = T0 + i * DT
            hdr = t["std_msgs/msg/Header"](
                stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                frame_id="camera",
            )
            g = t["sensor_msgs/msg/NavSatFix"](
                header=hdr,
                status=t["sensor_msgs/msg/NavSatStatus"](status=0, service=1),
                latitude=LAT0 + i * STEP,
                longitude=LON0,
                altitude=0.0,
                position_covariance=np.zeros(9),
                position_covariance_type=0,
            )
            w.write(fix, stamp, ts.serialize_cdr(g, "sensor_msgs/msg/NavSatFix"))
            msg = t["sensor_msgs/msg/CompressedImage"](
                header=hdr, format="jpeg", data=np.frombuffer(f.read_bytes(), np.uint8)
            )
            w.write(cam, stamp, ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))


def cli(*args: str) -> tuple[str, float]:
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", "from sfrs_edge.cli import main; main()", *args],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"sfrs-edge {' '.join(args)} failed: {r.stderr.strip()[-500:]}")
    return r.stdout, time.perf_counter() - t


def haversine(a, b) -> float:
    la1, lo1, la2, lo2 = map(math.radians, (*a, *b))
    h = math.sin((la2 - la1) / 2) ** 2
    h += math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--db", default="day_left")
    ap.add_argument("--query", default="night_right")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bag_recall"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/bag_recall.json"))
    args = ap.parse_args()
    from sfrs_edge.images import list_images
    from sfrs_edge.maps import Map

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    db_imgs, q_imgs = list_images(args.data / args.db), list_images(args.data / args.query)
    for name, imgs in ((args.db, db_imgs), (args.query, q_imgs)):
        if not (work / name).exists():
            write_bag(work / name, imgs)
    csv = work / "db_poses.csv"
    csv.write_text(
        "name,lat,lon\n"
        + "".join(f"{f.name},{LAT0 + i * STEP!r},{LON0!r}\n" for i, f in enumerate(db_imgs))
    )
    model = ["--model", args.model]
    res: dict = {"model": args.model, "db": args.db, "query": args.query}
    _, res["map_build_bag_s"] = cli(
        "map", "build", str(work / args.db), "--image-topic", "/cam", "--gps-topic", "/fix",
        "--keyframe-step", "0", "--min-change", "0", "--index", "exact", "-o", str(work / "map_bag"), *model,
    )  # fmt: skip
    _, res["map_build_folder_s"] = cli(
        "map", "build", str(args.data / args.db), "--poses", str(csv), "--index", "exact",
        "-o", str(work / "map_folder"), *model,
    )  # fmt: skip
    a, b = Map.open(work / "map_bag"), Map.open(work / "map_folder")
    res["descriptor_max_abs_diff"] = float(np.abs(a.descriptors - b.descriptors).max())
    res["position_max_abs_diff_deg"] = float(np.abs(a.positions() - b.positions()).max())
    base = [*model, "--map", str(work / "map_bag")]
    out, _ = cli(
        "evaluate", "--bag", str(work / args.query), "--image-topic", "/cam", "--gps-topic",
        "/fix", "--radius", "2.5", "-o", str(work / "ev_bag"), "--json", *base,
    )  # fmt: skip
    res["evaluate_bag_recall"] = json.loads(out.strip().splitlines()[-1])["recall"]
    out, _ = cli(
        "evaluate", str(args.data / args.query), "--window", "2", "-o", str(work / "ev_folder"),
        "--json", *model, "--map", str(work / "map_folder"),
    )  # fmt: skip
    res["evaluate_folder_window2_recall"] = json.loads(out.strip().splitlines()[-1])["recall"]
    from rosbags.highlevel import AnyReader

    for method in ("none", "seq"):
        target = work / f"out_{method}.mcap"
        target.unlink(missing_ok=True)
        _, dt = cli(
            "localize", "--bag", str(work / args.query), "--image-topic", "/cam", "--filter",
            method, "-o", str(target), *base,
        )  # fmt: skip
        counts: dict[str, int] = {}
        right_best = right_answer = 0
        with AnyReader([target]) as r:
            for conn, _t, raw in r.messages():
                counts[conn.topic] = counts.get(conn.topic, 0) + 1
                if conn.topic.endswith("matches"):
                    m = json.loads(r.deserialize(raw, conn.msgtype).data)
                    truth = (LAT0 + m["frame"] * STEP, LON0)
                    right_best += haversine(m["matches"][0]["position"], truth) <= 2.5
                    right_answer += haversine(m["answer"]["position"], truth) <= 2.5
        n = counts.get("/visual_localization/matches", 0)
        res[f"localize_{method}"] = {
            "messages": counts,
            "r1_per_frame_from_messages": 100.0 * right_best / n,
            "r1_answer_from_messages": 100.0 * right_answer / n,
            "seconds_incl_startup": round(dt, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
