"""rosbag2 on the command line: the options and runs behind ``map build BAG``,
``localize --bag`` and ``evaluate --bag`` (thin: each calls one function of
:mod:`sfrs_edge.ros`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import ConfigError

image_topic_option = click.option(
    "--image-topic",
    default=None,
    metavar="TOPIC",
    help="Bags: the camera topic (sensor_msgs/Image or sensor_msgs/CompressedImage).",
)
gps_topic_option = click.option(
    "--gps-topic",
    default=None,
    metavar="TOPIC",
    help="Bags: positions from sensor_msgs/NavSatFix (lat/lon; fixes with status < 0 dropped).",
)
pose_topic_option = click.option(
    "--pose-topic",
    default=None,
    metavar="TOPIC",
    help="Bags: positions from geometry_msgs/PoseStamped, PoseWithCovarianceStamped or "
    "nav_msgs/Odometry (x, y, z, heading).",
)


def check_bag_options(bag_given: bool, image_topic, gps_topic=None, pose_topic=None) -> None:
    """Refuse bag options without a bag, a bag without --image-topic, or both position topics."""
    if not bag_given:
        given = [
            n
            for n, v in (
                ("--image-topic", image_topic),
                ("--gps-topic", gps_topic),
                ("--pose-topic", pose_topic),
            )
            if v
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to rosbag2 sources only")
        return
    if not image_topic:
        raise click.UsageError("a bag needs --image-topic TOPIC (the camera's topic)")
    if gps_topic and pose_topic:
        raise click.UsageError("give either --gps-topic or --pose-topic, not both")


def build_from_bag(engine, source: Path, output: Path, as_json: bool, **options) -> None:
    """``map build BAG``: write the map and print its summary."""
    from ..ros.mapping import build_map_from_bag

    t0 = time.perf_counter()
    m = build_map_from_bag(engine, source, output, **options)
    dt = time.perf_counter() - t0
    b = m.manifest["history"][-1]["bag"]
    if b["corrupt_frames"]:
        click.echo(f"warning: skipped {b['corrupt_frames']} undecodable frames", err=True)
    count = m.manifest["positions"].get("count", 0)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "map": str(output),
                    "images": len(m),
                    "dim": m.dim,
                    "index": m.index_type,
                    "with_positions": count,
                    "seconds": round(dt, 2),
                    "bag": b,
                }
            )
        )
        return
    click.echo(
        f"wrote {output}: {len(m)} keyframes of {b['frames']} frames on {b['image_topic']} "
        f"({b['rejected_unchanged']} unchanged candidates skipped), {m.dim}-d, "
        f"{m.index_type} index, {count} with positions ({dt:.1f} s)"
    )


def _line(r, messages, method: str) -> str:
    from .stream import _line as stream_line

    text = stream_line(r, method)
    topics = ", ".join(m.key for m in messages)
    return f"{text} | {topics}"


def run_bag(loc, bag: Path, image_topic: str, config, output, as_json: bool, timings: bool):
    """``localize --bag``: one line (or JSON object) per frame, a summary on stderr."""
    from ..ros.localize_bag import localize_bag

    if output is not None and Path(output).suffix.lower() != ".mcap" and Path(output).exists():
        raise ConfigError(f"{output}: exists; remove it or choose another output")
    n = 0
    t0 = time.perf_counter()
    for r, messages in localize_bag(loc, bag, image_topic, config, output=output):
        n += 1
        if as_json:
            d = r.to_dict()
            if not timings:
                d.pop("timings")
                d["result"].pop("timings")
            d["published"] = [m.key for m in messages]
            d["matches_message"] = next(
                json.loads(m.fields["data"]) for m in messages if m.key == "matches"
            )
            click.echo(json.dumps(d))
        else:
            click.echo(_line(r, messages, config.method))
    dt = time.perf_counter() - t0
    wrote = f", results in {output}" if output is not None else ""
    click.echo(
        f"{bag}: {n} frames of {image_topic} localized, {n / dt if dt > 0 else 0:.2f} "
        f"frames/s{wrote}",
        err=True,
    )
