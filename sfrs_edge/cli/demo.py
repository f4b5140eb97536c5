"""``sfrs-edge demo``: the main job, end to end on real data (Gardens Point Walking), with the
pipeline the README recommends.

model (off-the-shelf Lite0 fitted on ``day_right``, with the local features re-ranking needs)
→ verified ONNX export → map of ``day_left`` (positions = frame index along the walk, local
features stored) → the ``night_right`` walk through the camera loop (``Localizer.stream``):
each frame re-ranked by verified local evidence, then the temporal filter over the last frames.
It reports recall@1 at each stage (global → re-ranked → filtered; right when |i − j| ≤ 2, the
VPR-Bench rule) and shows one frame's answer. That frame is ``--frame`` (default 100, the
middle of the walk), fixed before anything is computed: it is never picked by its result.

Arguments are checked before any work, and the demo never replaces files in
``$SFRS_EDGE_HOME`` it did not write (:mod:`.demo_home`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

from .. import paths
from ..errors import ConfigError
from ..progress import progress
from .extras import require_extra
from .options import PcaDim

TOLERANCE = 2
DEFAULT_FRAME = 100  # the middle of the 200-frame walk
MAP_TOP = 5  # matches ringed on the map picture
FRAME_CHOICE = "the default frame: the middle of the walk, fixed in advance (--frame N for another)"


def _frame_index(name: str) -> int:
    m = re.search(r"(\d+)", Path(name).stem)
    if not m:
        raise ConfigError(f"{name}: no frame number in the file name")
    return int(m.group(1))


def write_index_poses(images: list[Path], path: Path) -> Path:
    """A poses CSV giving each frame its index along the walk as a 1-D position (x = index)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{p.name},{_frame_index(p.name)},0" for p in images]
    path.write_text("name,x,y\n" + "\n".join(rows) + "\n")
    return path


def _right(name: str, frame: int) -> bool:
    return abs(_frame_index(name) - frame) <= TOLERANCE


def _verdict(name: str, frame: int) -> str:
    return "RIGHT" if _right(name, frame) else "WRONG"


def _check_arguments(frame: int, pca_dim: int | None) -> None:
    """Everything that can be judged before the dataset is read (click checks the ranges)."""
    from ..datasets import IMAGES_PER_TRAVERSAL

    if pca_dim is not None and pca_dim > IMAGES_PER_TRAVERSAL - 1:
        raise click.BadParameter(
            f"{pca_dim} whitened dims need more than the {IMAGES_PER_TRAVERSAL} day_right "
            f"images the model is fitted on (at most {IMAGES_PER_TRAVERSAL - 1}, or none)",
            param_hint="--pca-dim",
        )
    if not 0 <= frame < IMAGES_PER_TRAVERSAL:  # pragma: no cover - click's IntRange
        raise click.BadParameter(f"frames are 0..{IMAGES_PER_TRAVERSAL - 1}", param_hint="--frame")


@click.command("demo")
@click.option(
    "--frame",
    type=click.IntRange(0, 199),
    default=DEFAULT_FRAME,
    show_default=True,
    help="Frame (0..199) of the query walk whose answer is shown.",
)
@click.option(
    "--query-set",
    default="night_right",
    show_default=True,
    type=click.Choice(["night_right", "day_right"]),
    help="Walk sent through the camera loop (the other is evaluated too with --evaluate).",
)
@click.option(
    "--pca-dim",
    type=PcaDim(),
    default=None,
    help="Whitened dimensions for the model [default: none, the full 20480-d NetVLAD].",
)
@click.option(
    "--rerank",
    "rerank_k",
    type=click.IntRange(min=1),
    default=None,
    help="Candidates re-ranked by local evidence [default: the library's, see docs/RERANKING.md].",
)
@click.option(
    "--filter",
    "filter_method",
    type=click.Choice(["seq", "hmm"]),
    default="seq",
    show_default=True,
    help="Temporal filter of the camera loop (as `localize --video`).",
)
@click.option(
    "--window",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Frames in the temporal filter's window.",
)
@click.option("--fp16", is_flag=True, help="Export and localize with the FP16 model.")
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="Also run the other walk (day_right or night_right) and write HTML reports.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace checkpoint.pt, model.onnx and map/ in $SFRS_EDGE_HOME even when an earlier "
    "demo did not write them.",
)
@click.option("--no-download", is_flag=True, help="Fail instead of downloading Gardens Point.")
@click.option(
    "--json", "as_json", is_flag=True, help="Progress on stderr, a JSON summary on stdout."
)
def demo_command(
    frame,
    query_set,
    pca_dim,
    rerank_k,
    filter_method,
    window,
    fp16,
    evaluate,
    force,
    no_download,
    as_json,
):
    """Main job: model with local features → export → map of day_left → the night_right walk
    through the camera loop (re-ranking + temporal filter): recall at each stage, a picture of
    one frame's answer and of the map, and an HTML report per walk."""
    from ..stream.filtering import FilterConfig
    from . import demo_home

    _check_arguments(frame, pca_dim)
    filter_config = FilterConfig(method=filter_method, window=window)
    home = paths.home()
    replaced = demo_home.check_home(home, force)  # before any work: never a user's files
    require_extra("demo", "train", "torch", "onnx", "sklearn")  # the demo makes a model
    from ..rerank import RerankConfig

    rerank = RerankConfig() if rerank_k is None else RerankConfig(k=rerank_k)

    def say(msg: str) -> None:
        click.echo(msg, err=as_json)

    home.mkdir(parents=True, exist_ok=True)
    if replaced:
        say(f"replacing in {home}: {', '.join(replaced)} (written by an earlier demo or --force)")
    t_all = time.perf_counter()
    summary = _run(home, frame, query_set, pca_dim, fp16, evaluate, no_download, say)(
        rerank, filter_config
    )
    demo_home.record(home)
    if as_json:
        import json

        click.echo(json.dumps(summary))
    say(
        f"done in {time.perf_counter() - t_all:.0f} s; try: sfrs-edge localize --rerank "
        f"{rerank.k} {summary['query']}"
    )


def _run(home, frame, query_set, pca_dim, fp16, evaluate, no_download, say):
    """Steps 1-4 (data, model, export, map); returns the camera-loop step to call."""
    from dataclasses import asdict

    from sfrs_edge.export import export_checkpoint
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.config import InitConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    from ..datasets import gardens_point
    from ..engine import Engine
    from ..images import list_images
    from ..maps import build_map
    from .model import rerank_head_state

    with progress("downloading Gardens Point", unit="bytes") as report:
        root = gardens_point(download=not no_download, progress=report)
    say(f"[1/5] Gardens Point at {root}")

    ckpt = paths.default_checkpoint()
    t = time.perf_counter()
    fit_images = list_images(root / "day_right")
    with progress("      fitting the model", unit="images") as report:
        net, provenance = build_offtheshelf(
            fit_images, InitConfig(model=ModelConfig(pca_dim=pca_dim)), progress=report
        )
    local = rerank_head_state(net, fit_images)
    save_checkpoint(net, ckpt, provenance, extra={"local": local})
    say(
        f"[2/5] model: EfficientNet-Lite0 + NetVLAD, {net.config.descriptor_dim}-d, with local "
        f"features for re-ranking, fitted on day_right ({time.perf_counter() - t:.0f} s) -> {ckpt}"
    )

    model = paths.default_model()
    report = export_checkpoint(ckpt, model, fp16=fp16, verify_images=fit_images[::20], rerank=True)
    say(
        f"[3/5] exported {model} ({report.precision}, with local features); onnxruntime vs "
        f"torch cosine on {report.num_images} real images: min {report.min_cos:.6f}, mean "
        f"{report.mean_cos:.6f}"
    )

    db_images = list_images(root / "day_left")
    poses = write_index_poses(db_images, home / "day_left_poses.csv")
    t = time.perf_counter()
    engine = Engine.open(model)
    with progress("      map of day_left", unit="images") as report:
        the_map = build_map(
            engine, root / "day_left", paths.default_map(), poses=poses, progress=report
        )
    say(
        f"[4/5] map of day_left: {len(the_map)} images with local features, "
        f"{the_map.index_type} index ({time.perf_counter() - t:.0f} s) -> {paths.default_map()}"
    )

    def walks(rerank, filter_config) -> dict:
        sets = [query_set] + ([s for s in ("day_right", "night_right") if s != query_set]
                              if evaluate else [])  # fmt: skip
        summary: dict = {
            "gardens_point": str(root),
            "checkpoint": str(ckpt),
            "model": str(model),
            "map": str(paths.default_map()),
            "query": str(root / query_set / f"Image{frame:03d}.jpg"),
            "rerank": rerank.to_dict(),
            "filter": asdict(filter_config),
            "recall_at_1": {},
        }
        for i, qset in enumerate(sets):
            show = frame if i == 0 else None
            out = _walk(engine, the_map, root, qset, rerank, filter_config, home, say, show)
            summary["recall_at_1"][qset] = out["recall_at_1"]
            summary.setdefault("reports", {})[qset] = out["report"]
            if i == 0:
                summary.update(frame=out["frame"], pictures=out["pictures"])
        return summary

    return walks


def _walk(engine, the_map, root, qset, rerank, filter_config, home, say, show) -> dict:
    """One query walk: global answers (batched), then the camera loop with re-ranking and the
    filter; recall@1 of each stage, the HTML report of the re-ranked answers, and (``show``:
    the frame to show, or None) that frame's answers and pictures."""
    from dataclasses import replace

    from ..evaluation import GroundTruth, evaluate
    from ..images import list_images, read_image
    from ..localize import Localizer
    from ..report.html import write_report

    files = list_images(root / qset)
    truth = GroundTruth(window=TOLERANCE)
    plain = Localizer(engine, the_map, k=20)
    t = time.perf_counter()
    with progress(f"      {qset}: global answers", unit="images") as report:
        global_ev = evaluate(plain, files, truth, progress=report)
    loc = Localizer(engine, the_map, k=20, rerank=rerank)
    if loc.rerank is None:
        raise ConfigError("re-ranking did not switch on with the demo's own model and map")
    results, filtered = [], []
    with progress(f"      {qset}: camera loop", unit="frames") as report:
        frames = (read_image(f) for f in files)
        for i, step in enumerate(loc.stream(frames, filter=filter_config), 1):
            results.append(replace(step.result, source=str(files[i - 1])))
            filtered.append(step.best)
            report(i, len(files))
    ranked_ev = evaluate(loc, files, truth, results=results)
    positives = truth.positives(files, loc)
    filt_r1 = 100.0 * sum(m.id in set(p.tolist()) for m, p in zip(filtered, positives, strict=True))
    filt_r1 /= len(files)
    r1 = {
        "global": round(global_ev.recall[1], 1),
        "reranked": round(ranked_ev.recall[1], 1),
        "filtered": round(filt_r1, 1),
    }
    ranked_ev.setup["filter"] = (
        f"none in this report; the camera loop's {filter_config.method} filter (window "
        f"{filter_config.window}) over these answers: R@1 {r1['filtered']:.1f} %"
    )
    html = write_report(
        ranked_ev,
        home / "evaluation" / qset / "report.html",
        the_map,
        title=f"sfrs-edge demo: day_left <- {qset}, re-ranked",
    )
    say(
        f"[5/5] day_left <- {qset} ({len(files)} frames, {time.perf_counter() - t:.0f} s): "
        f"R@1 global {r1['global']:.1f} -> re-ranked (top {rerank.k}) {r1['reranked']:.1f} -> "
        f"filtered ({filter_config.method}, window {filter_config.window}) {r1['filtered']:.1f}"
        f"  report: {html}"
    )
    out: dict = {"recall_at_1": r1, "report": str(html)}
    if show is not None:
        out.update(_show_frame(loc, plain, files, results, filtered, qset, show, home, say))
    return out


def _show_frame(loc, plain, files, results, filtered, qset, frame, home, say) -> dict:
    """The chosen frame's global, re-ranked and filtered answers, and its two pictures."""
    from ..images import read_image

    query = files[frame]
    g = plain.localize_file(query)
    r = results[frame]
    f = filtered[frame]
    how = FRAME_CHOICE if frame == DEFAULT_FRAME else "chosen with --frame"
    say(f"      {qset}/{query.name} ({how}): right at day_left frames {frame} ±{TOLERANCE}")
    say(f"        global:    {g.best.name} (similarity {g.best.similarity:.3f}): "
        f"{_verdict(g.best.name, frame)}")  # fmt: skip
    say(
        f"        re-ranked: {r.best.name} (score {r.best.score:.3f}, similarity "
        f"{r.best.similarity:.3f}, "
        f"{r.best.inliers} inliers, confidence {r.confidence:.2f}): {_verdict(r.best.name, frame)}"
    )
    say(f"        filtered:  {f.name}: {_verdict(f.name, frame)}")
    pictures = _pictures(loc, read_image(query), r, frame, home)
    say(f"      picture of the re-ranked answer: {pictures['answer']}; of the map: "
        f"{pictures['map']}")  # fmt: skip
    return {
        "frame": {
            "index": frame,
            "global": {"best": g.best.name, "right": _right(g.best.name, frame)},
            "reranked": {"best": r.best.name, "right": _right(r.best.name, frame)},
            "filtered": {"best": f.name, "right": _right(f.name, frame)},
        },
        "pictures": pictures,
    }


def _pictures(loc, image, result, frame: int, home: Path) -> dict[str, str]:
    """The answer beside the query (its top 3, green/red borders by the ±TOLERANCE rule) and
    the map with the query's similarity along the route."""
    from dataclasses import replace

    from ..report.pictures import map_picture, match_sheet
    from ..report.plots import write_picture

    top = replace(result, matches=result.matches[:3])
    right = [_right(m.name, frame) for m in top.matches]
    sheet, _ = match_sheet(image, top, loc.map, right)
    answer = home / "demo_answer.png"
    write_picture(sheet, answer)
    scores = loc.map.similarities(loc.engine.embed_frame(image))[0]
    truth = [i for i, p in enumerate(loc.map.all_places()) if _right(p.name, frame)]
    shown = replace(result, matches=result.matches[:MAP_TOP])  # 20 rings would hide the route
    picture, _ = map_picture(loc.map, shown, scores, truth=truth)
    the_map = home / "demo_map.png"
    write_picture(picture, the_map)
    return {"answer": str(answer), "map": str(the_map)}


COMMANDS = [demo_command]
