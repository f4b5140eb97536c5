"""A camera loop on a video file: decode in a thread, localize the newest frame, filter.

    python examples/camera_loop.py VIDEO --model model.onnx --map map/ [--camera-fps 30]

Swap ``FrameStream(video, ...)`` for ``FrameStream(0)`` to run on camera 0. Frames the model
is too slow for are dropped, not queued, so each answer is about the newest frame.
"""

from __future__ import annotations

import argparse

from sfrs_edge import Localizer
from sfrs_edge.stream import FrameStream


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", help="video file (or a camera number such as 0)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--camera-fps", type=float, default=None, help="play the file at this rate")
    ap.add_argument("--filter", default="seq", choices=["seq", "hmm", "none"])
    ap.add_argument("--window", type=int, default=5)
    args = ap.parse_args()

    loc = Localizer(args.model, args.map)
    source = int(args.video) if args.video.isdigit() else args.video
    with FrameStream(source, fps=args.camera_fps) as frames:
        for r in loc.stream(frames, filter=args.filter, window=args.window):
            own, best = r.result.best, r.best  # the frame's own answer, the filtered one
            print(
                f"frame {r.index:5d} t={r.timestamp:7.2f}s  frame says {own.name:<24} "
                f"filtered {best.name:<24} position {best.position}  "
                f"latency {r.latency_ms:6.1f} ms  dropped so far {r.dropped}"
            )
    print(
        f"{frames.delivered} frames localized, {frames.dropped} dropped, {frames.corrupt} corrupt"
    )


if __name__ == "__main__":
    main()
