"""``sfrs-edge demo``: the main job, end to end on real data (Gardens Point Walking).

model (off-the-shelf Lite0 fitted on ``day_right``) → verified ONNX export → map of ``day_left``
(positions = frame index along the walk) → localize a ``night_right`` frame, printing the answer
and whether it is right (|i − j| ≤ 2, the VPR-Bench rule).
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


@click.command("demo")
@click.option("--frame", default=100, show_default=True, help="night_right frame to localize.")
@click.option(
    "--query-set",
    default="night_right",
    show_default=True,
    type=click.Choice(["night_right", "day_right"]),
    help="Traversal the frame comes from.",
)
@click.option(
    "--pca-dim",
    type=PcaDim(),
    default=None,
    help="Whitened dimensions for the model [default: none, the full 20480-d NetVLAD].",
)
@click.option("--fp16", is_flag=True, help="Export and localize with the FP16 model.")
@click.option(
    "--evaluate/--no-evaluate",
    default=True,
    show_default=True,
    help="Also localize every day_right and night_right frame and print R@1/5/10.",
)
@click.option("--no-download", is_flag=True, help="Fail instead of downloading Gardens Point.")
@click.option(
    "--json", "as_json", is_flag=True, help="Progress on stderr, a JSON summary on stdout."
)
def demo_command(frame, query_set, pca_dim, fp16, evaluate, no_download, as_json):
    """Main job: model → export → map of day_left → localize a night_right frame, then a
    picture of the answer and an HTML report of recall on all day_right/night_right frames."""
    from ..datasets import gardens_point
    from ..engine import Engine
    from ..images import list_images
    from ..localize import Localizer
    from ..maps import build_map

    require_extra("demo", "train", "torch", "onnx", "sklearn")  # the demo makes a model
    from sfrs_edge.export import export_checkpoint
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.config import InitConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    def say(msg: str) -> None:
        click.echo(msg, err=as_json)

    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    with progress("downloading Gardens Point", unit="bytes") as report:
        root = gardens_point(download=not no_download, progress=report)
    say(f"[1/4] Gardens Point at {root}")

    ckpt = paths.default_checkpoint()
    t = time.perf_counter()
    with progress("      fitting the model", unit="images") as report:
        net, provenance = build_offtheshelf(
            list_images(root / "day_right"),
            InitConfig(model=ModelConfig(pca_dim=pca_dim)),
            progress=report,
        )
    save_checkpoint(net, ckpt, provenance)
    say(
        f"      model: EfficientNet-Lite0 + NetVLAD, {net.config.descriptor_dim}-d, "
        f"fitted on day_right ({time.perf_counter() - t:.0f} s) -> {ckpt}"
    )

    model = paths.default_model()
    report = export_checkpoint(
        ckpt, model, fp16=fp16, verify_images=list_images(root / "day_right")[::20]
    )
    say(
        f"[2/4] exported {model} ({report.precision}); onnxruntime vs torch cosine on "
        f"{report.num_images} real images: min {report.min_cos:.6f}, mean {report.mean_cos:.6f}"
    )

    db_images = list_images(root / "day_left")
    poses = write_index_poses(db_images, home / "day_left_poses.csv")
    t = time.perf_counter()
    with progress("      map of day_left", unit="images") as report:
        the_map = build_map(
            Engine.open(model),
            root / "day_left",
            paths.default_map(),
            poses=poses,
            progress=report,
        )
    say(
        f"[3/4] map of day_left: {len(the_map)} images, {the_map.index_type} index "
        f"({time.perf_counter() - t:.0f} s) -> {paths.default_map()}"
    )

    loc = Localizer(model, paths.default_map(), k=5)
    summary: dict = {"gardens_point": str(root), "checkpoint": str(ckpt), "model": str(model)}
    query = root / query_set / f"Image{frame:03d}.jpg"
    result = loc.localize_file(query)
    best = result.best
    right = abs(_frame_index(best.name) - frame) <= TOLERANCE
    say(
        f"[4/4] {query_set}/{query.name} was taken at day_left/{best.name} "
        f"(similarity {best.similarity:.3f}, position x={result.position[0]:.1f} "
        f"along the walk, confidence {result.confidence:.2f}): "
        f"{'RIGHT' if right else 'WRONG'} (true frame {frame}, tolerance ±{TOLERANCE})"
    )
    pictures = _pictures(loc, query, result, frame, home)
    say(f"      picture of the answer: {pictures['answer']}; of the map: {pictures['map']}")
    summary.update(
        map=str(paths.default_map()),
        query=str(query),
        best=best.name,
        right=right,
        confidence=result.confidence,
        pictures=pictures,
    )
    if evaluate:
        summary["evaluation"] = _evaluate(loc, root, home / "evaluation", say)
    if as_json:
        import json

        click.echo(json.dumps(summary))
    say(
        f"done in {time.perf_counter() - t_all:.0f} s; try: sfrs-edge localize "
        f"{root / 'night_right' / 'Image050.jpg'}"
    )


def _pictures(loc, query: Path, result, frame: int, home: Path) -> dict[str, str]:
    """The answer beside the query (its top 3, green/red borders by the ±TOLERANCE rule) and
    the map with the query's similarity along the route."""
    from dataclasses import replace

    from ..images import read_image
    from ..report.pictures import map_picture, match_sheet
    from ..report.plots import write_png

    top = replace(result, matches=result.matches[:3])
    right = [abs(_frame_index(m.name) - frame) <= TOLERANCE for m in top.matches]
    sheet, _ = match_sheet(read_image(query), top, loc.map, right)
    answer = home / "demo_answer.png"
    write_png(sheet, answer)
    _, scores = loc.localize_scores(read_image(query))
    truth = [
        i
        for i, p in enumerate(loc.map.all_places())
        if abs(_frame_index(p.name) - frame) <= TOLERANCE
    ]
    picture, _ = map_picture(loc.map, result, scores, truth=truth)
    the_map = home / "demo_map.png"
    write_png(picture, the_map)
    return {"answer": str(answer), "map": str(the_map)}


def _evaluate(loc, root: Path, out: Path, say) -> dict:
    """Recall of every day_right and night_right frame against the day_left map, with the
    HTML report of each (the same code as ``sfrs-edge evaluate --window 2``)."""
    from ..evaluation import GroundTruth
    from ..images import list_images
    from ..localize import Localizer
    from .evaluate import run_evaluation

    wide = Localizer(loc.engine, loc.map, k=20)
    summary = {}
    for qset in ("day_right", "night_right"):
        ev, written = run_evaluation(
            wide, list_images(root / qset), GroundTruth(window=TOLERANCE), out / qset, False
        )
        rec = ev.recall
        say(
            f"      day_left <- {qset}: R@1 {rec[1]:.1f}  R@5 {rec[5]:.1f}  R@10 {rec[10]:.1f}"
            f"  report: {written['html']}"
        )
        summary[qset] = {**ev.summary(), "files": written}
    return summary


COMMANDS = [demo_command]
