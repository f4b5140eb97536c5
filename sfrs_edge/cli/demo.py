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
def demo_command(frame, query_set, pca_dim, fp16, evaluate, no_download):
    """Main job: model → export → map of day_left → localize a night_right frame."""
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

    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    root = gardens_point(download=not no_download)
    click.echo(f"[1/4] Gardens Point at {root}")

    ckpt = paths.default_checkpoint()
    t = time.perf_counter()
    net, provenance = build_offtheshelf(
        list_images(root / "day_right"), InitConfig(model=ModelConfig(pca_dim=pca_dim))
    )
    save_checkpoint(net, ckpt, provenance)
    click.echo(
        f"      model: EfficientNet-Lite0 + NetVLAD, {net.config.descriptor_dim}-d, "
        f"fitted on day_right ({time.perf_counter() - t:.0f} s) -> {ckpt}"
    )

    model = paths.default_model()
    report = export_checkpoint(
        ckpt, model, fp16=fp16, verify_images=list_images(root / "day_right")[::20]
    )
    click.echo(
        f"[2/4] exported {model} ({report.precision}); onnxruntime vs torch cosine on "
        f"{report.num_images} real images: min {report.min_cos:.6f}, mean {report.mean_cos:.6f}"
    )

    db_images = list_images(root / "day_left")
    poses = write_index_poses(db_images, home / "day_left_poses.csv")
    t = time.perf_counter()
    the_map = build_map(Engine.open(model), root / "day_left", paths.default_map(), poses=poses)
    click.echo(
        f"[3/4] map of day_left: {len(the_map)} images, {the_map.index_type} index "
        f"({time.perf_counter() - t:.0f} s) -> {paths.default_map()}"
    )

    loc = Localizer(model, paths.default_map(), k=5)
    query = root / query_set / f"Image{frame:03d}.jpg"
    result = loc.localize_file(query)
    best = result.best
    right = abs(_frame_index(best.name) - frame) <= TOLERANCE
    click.echo(
        f"[4/4] {query_set}/{query.name} was taken at day_left/{best.name} "
        f"(similarity {best.similarity:.3f}, position x={result.position[0]:.1f} "
        f"along the walk, confidence {result.confidence:.2f}): "
        f"{'RIGHT' if right else 'WRONG'} (true frame {frame}, tolerance ±{TOLERANCE})"
    )
    if evaluate:
        _evaluate(loc, root)
    click.echo(
        f"done in {time.perf_counter() - t_all:.0f} s; try: sfrs-edge localize "
        f"{root / 'night_right' / 'Image050.jpg'}"
    )


def _evaluate(loc, root: Path) -> None:
    import numpy as np

    from ..images import list_images
    from ..recall import index_window_positives, recall_at_n

    db_names = [p.name for p in list_images(root / "day_left")]
    row = {name: _frame_index(name) for name in db_names}
    for qset in ("day_right", "night_right"):
        files = list_images(root / qset)
        desc = loc.engine.embed_files(files)
        ids, _ = loc.map.search(desc, 10)
        ranked = np.array([[row[p.name] for p in loc.map.places(r)] for r in ids])
        rec = recall_at_n(ranked, index_window_positives(len(files), len(db_names), TOLERANCE))
        click.echo(
            f"      day_left <- {qset}: R@1 {rec[1]:.1f}  R@5 {rec[5]:.1f}  R@10 {rec[10]:.1f}"
        )


COMMANDS = [demo_command]
