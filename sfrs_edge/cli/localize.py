"""``sfrs-edge localize FRAME...``: where was each frame taken?

Bad frames do not stop the run: each unreadable frame is reported (``error: ...`` on stderr, or
a JSON line with an ``error`` key under ``--json``) and the others are still localized; the
exit code is 1 when any frame failed. A model or map that cannot be used stops at once
(exit 1) before any frame is read.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ImageError, SfrsEdgeError
from .bags import image_topic_option
from .options import backend_option, map_option, model_option, threads_option


def position_rule(loc) -> str:
    """How the printed position is made, with this localizer's radius (sfrs_edge/estimate.py)."""
    unit = "m" if loc.position_kind == "latlon" else "map units"
    return (
        f"the best match's, averaged with the matches within {loc.near_radius:g} {unit} of it, "
        "each weighted by its score minus the best score of another place"
    )


def _frames(args: tuple[Path, ...]) -> list[Path]:
    """Frame files; a folder stands for the images directly inside it."""
    from ..images import list_images

    out: list[Path] = []
    for a in args:
        out.extend(list_images(a) if a.is_dir() else [a])
    return out


def _fmt_pos(pos, kind: str | None) -> str:
    if pos is None:
        return "-"
    if kind == "latlon":
        return f"lat {pos[0]:.6f}, lon {pos[1]:.6f}"
    return "(" + ", ".join(f"{v:.2f}" for v in pos) + ")"


DAMAGED = " [damaged JPEG data: the answer may be wrong]"


def _print_human(result, show_timings: bool, rerank=None, rule: str | None = None) -> None:
    """The answer line, then the matches in the order they rank. Re-ranked answers print the
    score they are ordered by (fused, :meth:`RerankConfig.rule`) beside the similarity.
    ``rule``: how the position is estimated, printed after the matches (once per run)."""
    best = result.best
    where = _fmt_pos(result.position, result.position_kind)
    if result.reranked:
        how = f"re-ranked: top {rerank.k} by verified local evidence" if rerank else "re-ranked"
        fusion = rerank.rule() if rerank else "fused score"
        click.echo(
            f"{result.source}: {best.name} (score {best.score:.3f}, similarity "
            f"{best.similarity:.3f}, {best.inliers} inliers), position {where}, confidence "
            f"{result.confidence:.2f}  [{how}; {fusion}]" + DAMAGED * result.damaged
        )
    else:
        click.echo(
            f"{result.source}: {best.name} (similarity {best.similarity:.3f}), "
            f"position {where}, confidence {result.confidence:.2f}" + DAMAGED * result.damaged
        )
    for rank, m in enumerate(result.matches, 1):
        pos = _fmt_pos(m.position, result.position_kind) if m.position is not None else ""
        if result.reranked:
            inl = f"  {m.inliers} inliers" if m.inliers is not None else "  (not re-ranked)"
            line = (
                f"  {rank}. {m.name:<32} score {m.score:7.4f}  similarity {m.similarity:7.4f}{inl}"
            )
        else:
            line = f"  {rank}. {m.name:<32} {m.similarity:7.4f}"
        click.echo(f"{line}  {pos}".rstrip())
    if rule and result.position is not None:
        click.echo(f"  position: {rule}")
    if show_timings:
        t = result.timings
        stages = ", ".join(
            f"{k} {t[k]:.1f}"
            for k in ("decode", "preprocess", "inference", "search", "rerank")
            if k in t
        )
        click.echo(f"  timings (ms): {stages}, total {t['total']:.1f}")


@click.command("localize")
@click.argument("frames", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--video",
    type=click.Path(path_type=Path),
    default=None,
    help="Localize the frames of a video file as a camera stream.",
)
@click.option(
    "--camera",
    type=click.IntRange(min=0),  # VideoSource checks the upper end
    default=None,
    help="Localize a live camera (device number: 0 is the first camera).",
)
@click.option(
    "--bag",
    type=click.Path(path_type=Path),
    default=None,
    help="Localize every frame of --image-topic in a rosbag2 recording (folder, .mcap or .db3).",
)
@image_topic_option
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="--bag: write the results as a new bag (OUT.mcap: one MCAP file; else a rosbag2 "
    "folder): pose or NavSatFix and matches per frame, stamped as the input frame.",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Camera rate to request; for --video, the rate it is played at [default: the file's].",
)
@click.option(
    "--all-frames",
    is_flag=True,
    help="--video: process every frame as fast as possible (no real-time pacing, no drops).",
)
@click.option(
    "--filter",
    "filter_method",
    type=click.Choice(["seq", "hmm", "none"]),
    default="seq",
    show_default=True,
    help="Temporal filter over the last --window frames (video/camera).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Frames in the temporal filter's window.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Expected map rows per source frame, for the filter's motion model "
    "(about 1 / (keyframe step s x camera fps) for a map built from video).",
)
@click.option(
    "--in-flight",
    "in_flight",
    type=click.IntRange(min=1),
    default=None,
    help="Frames localized at the same time (video/camera), results still in frame order "
    "[default: sfrs_edge.stream.sequence.DEFAULT_IN_FLIGHT].",
)
@model_option
@map_option
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(min=1), help="Matches.")
@click.option(
    "--rerank",
    "rerank",
    type=click.IntRange(min=1),
    default=None,
    help="Re-rank the top K candidates by verified local features (model exported with "
    "--rerank, map built with it); without local features: one warning, global answer.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per frame (JSON lines).")
@click.option("--timings", is_flag=True, help="Print per-stage times (ms).")
@backend_option
@threads_option
@click.option("--ef", type=click.IntRange(min=1), default=None, help="HNSW search breadth.")
@click.option(
    "--show",
    type=click.Path(path_type=Path),
    default=None,
    help="Write a picture of the frame beside its top-k matches (one FRAME only); PNG or "
    "JPEG by the extension (.png, .jpg, .jpeg).",
)
def localize_command(
    frames,
    video,
    camera,
    bag,
    image_topic,
    output,
    fps,
    all_frames,
    filter_method,
    window,
    speed,
    in_flight,
    model_path,
    map_path,
    k,
    rerank,
    as_json,
    timings,
    backend,
    threads,
    ef,
    show,
):
    """Localize FRAME... (image files or folders) against a map: top-k places, position,
    confidence. Unreadable frames are reported and skipped; the exit code is then 1.

    With --video FILE or --camera N: a camera loop (decoding in a thread, stale frames
    dropped), one result per processed frame with the frame's own and the temporally
    filtered answer and the capture-to-result latency. With --bag BAG --image-topic T: every
    frame of the topic through the same loop (none dropped); -o OUT.mcap writes the results
    as a bag (docs/ROS.md)."""
    from ..localize import open_localizer
    from ..threads import limit_process

    sources = bool(frames) + (video is not None) + (camera is not None) + (bag is not None)
    if sources != 1:
        raise click.UsageError(
            "give FRAME... or --video FILE or --camera N or --bag BAG (exactly one)"
        )
    if show is not None:  # before the model loads: a wrong name fails at once
        from ..report.plots import check_picture_path

        if video is not None or camera is not None or bag is not None:
            raise click.UsageError("--show draws one FRAME, not a video, camera or bag")
        if len(_frames(frames)) != 1:
            raise click.UsageError(f"--show draws one frame; got {len(_frames(frames))}")
        check_picture_path(show)
    if video is None and camera is None and (fps or all_frames):
        raise click.UsageError("--fps and --all-frames apply to --video/--camera")
    if bag is None and (image_topic or output):
        raise click.UsageError("--image-topic and -o/--output apply to --bag")
    if bag is not None and not image_topic:
        raise click.UsageError("--bag needs --image-topic TOPIC (the camera's topic)")
    threads = limit_process(threads)  # BLAS (exact search) and OpenCV, not only onnxruntime
    if bag is not None:
        from ..stream.filtering import FilterConfig
        from .bags import run_bag

        config = FilterConfig(method=filter_method, window=window, speed=speed)
        loc = open_localizer(
            model_path, map_path, k=k, backend=backend, threads=threads, ef=ef, rerank=rerank
        )
        run_bag(loc, bag, image_topic, config, output, as_json, timings)
        return
    if video is not None or camera is not None:
        from ..stream.filtering import FilterConfig

        config = FilterConfig(
            method=filter_method, window=window, speed=speed
        )  # checked before loading
        loc = open_localizer(
            model_path, map_path, k=k, backend=backend, threads=threads, ef=ef, rerank=rerank
        )
        from .stream import run_stream

        source = str(video) if video is not None else camera
        run_stream(loc, source, fps, all_frames, config, as_json, timings, in_flight)
        return
    loc = open_localizer(
        model_path, map_path, k=k, backend=backend, threads=threads, ef=ef, rerank=rerank
    )
    if show is not None:
        return _show(loc, _frames(frames), show, as_json)
    failed = printed = 0
    for frame in _frames(frames):
        try:
            result = loc.localize_file(frame)
        except ImageError as exc:
            failed += 1
            if as_json:
                click.echo(json.dumps({"source": str(frame), "error": str(exc)}))
            else:
                click.echo(f"error: {exc}", err=True)
            continue
        if as_json:
            d = result.to_dict()
            if not timings:
                d.pop("timings")
            click.echo(json.dumps(d))
        else:
            _print_human(result, timings, loc.rerank, None if printed else position_rule(loc))
            printed += 1
    if failed:
        raise SfrsEdgeError(f"{failed} frame(s) could not be localized")


def _show(loc, frames: list[Path], out: Path, as_json: bool) -> None:
    """Localize one frame and draw it beside its matches into ``out`` (PNG or JPEG)."""
    from ..images import read_image_tolerant
    from ..report.pictures import match_sheet
    from ..report.plots import write_picture

    frame = read_image_tolerant(frames[0]).image
    result = loc.localize_file(frames[0])
    img, drawn = match_sheet(frame, result, loc.map)
    write_picture(img, out)
    if as_json:
        d = result.to_dict()
        d.pop("timings")
        click.echo(json.dumps({**d, "picture": str(out), "drawn_ids": drawn}))
    else:
        _print_human(result, False, loc.rerank, position_rule(loc))
        click.echo(f"picture: {out}")


COMMANDS = [localize_command]
