"""``sfrs-edge localize --video FILE | --camera N``: the camera loop on the command line.

One line (or JSON object) per processed frame with the frame's own answer, the filtered
answer and the latency from capture to result; a summary on stderr at the end (frames
processed, dropped because the model was busy, corrupt, throughput).
"""

from __future__ import annotations

import json
import time

import click


def _line(r, method: str) -> str:
    best = r.result.best
    text = f"frame {r.index}"
    if r.timestamp is not None:
        text += f" t={r.timestamp:.2f}s"
    scored = f"score {best.score:.3f}, " if r.result.reranked else ""
    text += f": {best.name} ({scored}{best.similarity:.3f}, confidence {r.result.confidence:.2f})"
    if r.filtered is not None:
        text += f" | {method} {r.filtered.name}"
    pos = r.best.position
    if pos is not None:
        text += " at (" + ", ".join(f"{v:.6g}" for v in pos) + ")"
    return text + f" | latency {r.latency_ms:.1f} ms"


def run_stream(
    loc,
    source: str | int,
    fps: float | None,
    all_frames: bool,
    config,
    as_json: bool,
    timings: bool,
    in_flight: int | None = None,
) -> None:
    """Localize every frame the stream hands out; print results and a summary."""
    from ..stream import FrameStream

    processed = 0
    latencies = []
    t0 = time.perf_counter()
    with FrameStream(source, fps=fps, drop=not all_frames) as frames:
        for r in loc.stream(frames, config, in_flight=in_flight):
            processed += 1
            latencies.append(r.latency_ms)
            if as_json:
                d = r.to_dict()
                if not timings:
                    d.pop("timings")
                    d["result"].pop("timings")
                click.echo(json.dumps(d))
            else:
                click.echo(_line(r, config.method))
                if timings:
                    click.echo(
                        "  timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in r.timings.items())
                    )
        dt = time.perf_counter() - t0
        summary = {
            "source": frames.video.name,
            "processed": processed,
            "decoded": frames.decoded,
            "dropped": frames.dropped,
            "corrupt": frames.corrupt,
            "seconds": round(dt, 3),
            "fps": round(processed / dt, 2) if dt > 0 else None,
        }
    click.echo(
        f"{summary['source']}: {processed} frames localized of {summary['decoded']} decoded "
        f"({summary['dropped']} dropped while busy, {summary['corrupt']} corrupt), "
        f"{summary['fps']} frames/s, latency median {_median(latencies)} ms",
        err=True,
    )


def _median(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"{v[len(v) // 2]:.1f}"
