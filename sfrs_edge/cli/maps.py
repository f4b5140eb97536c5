"""Map commands: ``sfrs-edge map build | add | remove | info | verify | merge``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import paths
from .options import backend_option, model_option, threads_option

_batch_option = click.option("--batch-size", default=8, show_default=True, help="Images per batch.")
_poses_option = click.option(
    "--poses",
    type=click.Path(path_type=Path),
    default=None,
    help="CSV of positions: name, lat,lon or x,y[,z], optional heading, timestamp "
    "[default: EXIF GPS of JPEGs when present]. For a video SOURCE: a track CSV with a "
    "time column (t, seconds of the video or ISO date-times) and lat,lon or x,y[,z].",
)
_skip_option = click.option(
    "--skip-bad-images",
    is_flag=True,
    help="Skip unreadable/corrupt images with a warning instead of failing.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
_missing_option = click.option(
    "--allow-missing-poses",
    is_flag=True,
    help="Allow images without a row in --poses (they get no position).",
)


def _engine(model_path: Path | None, backend: str, threads: int | None = None):
    from ..engine import Engine
    from ..threads import limit_process

    threads = limit_process(threads)  # BLAS and OpenCV too, not only onnxruntime
    return Engine.open(model_path or paths.default_model(), backend=backend, threads=threads)


def _progress(label: str):
    """Progress of a long run: a bar on a terminal, a line per ~10 % otherwise (stderr)."""
    from ..progress import reporter

    return reporter(label, "images")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@click.group("map")
def map_group() -> None:
    """Build and maintain maps (descriptors + index + metadata) of places."""


@map_group.command("build")
@click.argument("source", type=click.Path(path_type=Path))
@_poses_option
@click.option(
    "--gpx",
    type=click.Path(path_type=Path),
    default=None,
    help="Video sources: GPX track; keyframes are positioned by timestamp.",
)
@click.option(
    "--keyframe-step",
    default=0.5,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Video sources: seconds between keyframe candidates.",
)
@click.option(
    "--min-change",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 2),
    help="Video sources: keep a candidate only if 1 - cosine to the last keyframe >= this.",
)
@click.option(
    "--track-offset",
    default=0.0,
    show_default=True,
    help="Video sources: seconds added to frame times to get track times.",
)
@click.option(
    "--max-gap",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Video sources: no position inside track gaps longer than this (seconds).",
)
@model_option
@backend_option
@click.option(
    "--index",
    "index_type",
    type=click.Choice(["auto", "exact", "hnsw"]),
    default="auto",
    show_default=True,
    help="Search index: exact (matrix product), hnsw, or auto (exact below 50k images).",
)
@click.option("--hnsw-m", default=16, show_default=True, help="HNSW graph degree M.")
@click.option("--ef-construction", default=200, show_default=True, help="HNSW build breadth.")
@click.option("--ef", default=128, show_default=True, help="Default HNSW search breadth.")
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16"]),
    default="float32",
    show_default=True,
    help="Storage of descriptor files (float16 halves them; HNSW graphs hold float32).",
)
@_skip_option
@_missing_option
@_batch_option
@threads_option
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Embed on a Ray cluster (Ray Data actor pool): ADDRESS such as auto or "
    "ray://host:10001, or none for a local instance. Needs the 'cluster' extra.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Map folder to write (replaced atomically) [default: $SFRS_EDGE_HOME/map].",
)
@_json_option
def build_command(
    source,
    poses,
    gpx,
    keyframe_step,
    min_change,
    track_offset,
    max_gap,
    model_path,
    backend,
    index_type,
    hnsw_m,
    ef_construction,
    ef,
    dtype,
    skip_bad_images,
    allow_missing_poses,
    batch_size,
    threads,
    ray_address,
    output,
    as_json=False,
):
    """Build a map from the images in SOURCE (a folder), or from the keyframes of a video file
    (with --poses TRACK.csv or --gpx TRACK.gpx for positions by timestamp)."""
    import time

    from ..maps import build_map
    from ..video import is_video

    engine = _engine(model_path, backend, threads)
    output = output or paths.default_map()
    output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if is_video(source):
        if ray_address:
            raise click.UsageError("--ray builds maps from image folders, not videos")
        from ..video.keyframes import KeyframeConfig
        from ..video.mapping import build_map_from_video

        if poses and gpx:
            raise click.UsageError("give either --poses (CSV track) or --gpx, not both")
        m = build_map_from_video(
            engine,
            source,
            output,
            track=poses or gpx,
            keyframes=KeyframeConfig(keyframe_step, min_change),
            max_gap=max_gap,
            track_offset=track_offset,
            allow_missing_poses=allow_missing_poses,
            index=index_type,
            hnsw_m=hnsw_m,
            ef_construction=ef_construction,
            ef=ef,
            dtype=dtype,
            batch_size=batch_size,
            threads=threads,
        )
        dt = time.perf_counter() - t0
        v = m.manifest["history"][-1]["video"]
        if v["corrupt_frames"]:
            click.echo(f"warning: skipped {v['corrupt_frames']} corrupt frames", err=True)
        if as_json:
            click.echo(json.dumps({**_summary(m, output, dt), "video": v}))
            return
        click.echo(
            f"wrote {output}: {len(m)} keyframes of {v['frames']} frames "
            f"({v['rejected_unchanged']} unchanged candidates skipped), {m.dim}-d, "
            f"{m.index_type} index, {m.manifest['positions'].get('count', 0)} with positions "
            f"({dt:.1f} s)"
        )
        return
    if gpx:
        raise click.UsageError("--gpx is for video sources; give image positions with --poses")
    if ray_address and engine.path.suffix != ".onnx":
        raise click.UsageError("--ray runs ONNX models (onnxruntime on each worker)")
    m = build_map(
        engine,
        source,
        output,
        poses=poses,
        index=index_type,
        hnsw_m=hnsw_m,
        ef_construction=ef_construction,
        ef=ef,
        skip_bad_images=skip_bad_images,
        allow_missing_poses=allow_missing_poses,
        batch_size=batch_size,
        progress=_progress("embedding"),
        threads=threads,
        ray=ray_address,
        dtype=dtype,
    )
    dt = time.perf_counter() - t0
    skipped = m.manifest["history"][-1].get("skipped", [])
    if skipped:
        click.echo(f"warning: skipped {len(skipped)} unreadable images", err=True)
    rate = m.manifest["history"][-1].get("images_per_s")
    if as_json:
        summary = {**_summary(m, output, dt), "images_per_s": rate, "skipped": skipped}
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"wrote {output}: {len(m)} images, {m.dim}-d, {m.index_type} index, "
        f"{m.manifest['positions'].get('count', 0)} with positions "
        f"({dt:.1f} s; embedding {rate} images/s)"
    )


def _summary(m, output: Path, seconds: float) -> dict:
    return {
        "map": str(output),
        "images": len(m),
        "dim": m.dim,
        "index": m.index_type,
        "with_positions": m.manifest["positions"].get("count", 0),
        "seconds": round(seconds, 2),
    }


@map_group.command("add")
@click.argument("map_path", metavar="MAP", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_poses_option
@model_option
@backend_option
@_skip_option
@_missing_option
@_batch_option
@threads_option
@_json_option
def add_command(
    map_path,
    images,
    poses,
    model_path,
    backend,
    skip_bad_images,
    allow_missing_poses,
    batch_size,
    threads,
    as_json=False,
):
    """Add IMAGES (files or folders) to MAP; existing descriptors are kept."""
    from ..maps import add_to_map

    engine = _engine(model_path, backend, threads)
    before = _count(map_path)
    m = add_to_map(
        engine,
        map_path,
        list(images),
        poses=poses,
        skip_bad_images=skip_bad_images,
        allow_missing_poses=allow_missing_poses,
        batch_size=batch_size,
        progress=_progress("embedding"),
        threads=threads,
    )
    if as_json:
        click.echo(json.dumps({"map": str(map_path), "added": len(m) - before, "images": len(m)}))
        return
    click.echo(f"added {len(m) - before} images to {map_path}: now {len(m)}")


def _count(map_path: Path) -> int:
    from ..maps import Map

    return len(Map.open(map_path, verify=False))


@map_group.command("remove")
@click.argument("map_path", metavar="MAP", type=click.Path(path_type=Path))
@click.argument("names", nargs=-1, required=True)
@_json_option
def remove_command(map_path, names, as_json=False):
    """Remove the images called NAMES from MAP (no model needed)."""
    from ..maps import remove_from_map

    before = _count(map_path)
    m = remove_from_map(map_path, list(names))
    if as_json:
        click.echo(json.dumps({"map": str(map_path), "removed": before - len(m), "images": len(m)}))
        return
    click.echo(f"removed {before - len(m)} images from {map_path}: now {len(m)}")


@map_group.command("info")
@click.argument("map_path", metavar="MAP", type=click.Path(path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-verify", is_flag=True, help="Skip checksums (sizes and headers only).")
def info_command(map_path, as_json, no_verify):
    """Describe MAP [default: $SFRS_EDGE_HOME/map]: counts, model, index, size on disk."""
    from ..maps import map_info

    info = map_info(map_path or paths.default_map(), verify=not no_verify)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    model, index, pos = info["model"], info["index"], info["positions"] or {}
    order = ["M", "ef_construction", "ef", "seed"]
    keys = [k for k in order if k in index] + [k for k in index if k not in order + ["type"]]
    params = ", ".join(f"{k}={index[k]}" for k in keys)
    lines = [
        f"map:         {info['path']}",
        f"images:      {info['count']}",
        f"descriptors: {info['dim']}-d {info['dtype']}, metric {info['metric']} (unit vectors)",
        f"model:       {model.get('backbone')}, fingerprint {model.get('fingerprint')}, "
        f"input {'x'.join(map(str, model.get('input_size', [])))}, pca {model.get('pca_dim')}",
        f"index:       {index['type']}" + (f" ({params})" if params else ""),
        f"positions:   {pos.get('count', 0)} of {info['count']}"
        + (f" ({pos['kind']}, from {pos.get('source')})" if pos.get("kind") else ""),
        f"storage:     {info['segments']} segment(s), {info['indexed']} rows in the index",
        f"size:        {_human(info['size_bytes'])} ({_human(info['bytes_per_image'])} per image)",
        "per place:   "
        + ", ".join(f"{k} {_human(v)}" for k, v in info["bytes_per_place"].items() if v),
        "files:       " + ", ".join(f"{n} {_human(b)}" for n, b in sorted(info["files"].items())),
        f"checksums:   {info['checksums']}",
        f"format:      version {info['format_version']}, sfrs-edge {info['sfrs_edge_version']}, "
        f"updated {info['updated']}",
    ]
    click.echo("\n".join(lines))


@map_group.command("verify")
@click.argument("map_path", metavar="MAP", type=click.Path(path_type=Path), required=False)
def verify_command(map_path):
    """Rehash every file of MAP against its manifest and load it (exit 1 on any mismatch)."""
    from ..maps import verify_map

    r = verify_map(map_path or paths.default_map())
    click.echo(
        f"ok: {r['path']}: {r['count']} places, {r['segments']} segment(s), {r['files']} files "
        f"({_human(r['bytes'])}) match their checksums"
    )


@map_group.command("merge")
@click.argument("maps", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="Map folder to write."
)
@click.option(
    "--duplicates",
    type=click.Choice(["error", "first", "rename"]),
    default="error",
    show_default=True,
    help="Image names in several maps: refuse, keep the first map's, or rename later ones "
    "to MAPFOLDER/NAME.",
)
@click.option(
    "--index",
    "index_type",
    type=click.Choice(["auto", "exact", "hnsw"]),
    default="auto",
    show_default=True,
    help="Index of the result (auto: HNSW when a source is HNSW or the result is large).",
)
def merge_command(maps, output, duplicates, index_type):
    """Merge MAPS (built with the same model) into one map at --output."""
    from ..maps import merge_maps

    m = merge_maps(list(maps), output, duplicates=duplicates, index=index_type)
    click.echo(f"wrote {output}: {len(m)} places from {len(maps)} maps, {m.index_type} index")


COMMANDS = [map_group]
