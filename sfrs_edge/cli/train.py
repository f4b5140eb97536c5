"""``sfrs-edge train``: SFRS generational training (needs torch; ``train`` is imported lazily)."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path

import click

from ..errors import ConfigError
from .extras import require_extra
from .options import InputSize, PcaDim


def _floats(value: str, what: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"{what}: {value!r} is not a comma-separated list of numbers") from exc


def _load_splits(kind, data, o):
    """(train, val or None, {test name: PlaceSet}) from the dataset options."""
    from sfrs_edge.train.datasets import load_csv, load_dbstruct, load_traversals, parse_range

    if kind == "traversal":
        queries = [q.strip() for q in o["query_folders"].split(",") if q.strip()]
        if not queries:
            raise ConfigError("--query-folders: give at least one folder")

        def make(places, name, qs):
            return load_traversals(data, o["db_folder"], qs, parse_range(places), name)

        train = make(o["train_places"], "train", queries)
        val = make(o["val_places"], "val", queries) if o["val_places"] else None
        tests = {}
        if o["test_places"]:
            for q in queries:
                tests[f"test_{q}"] = make(o["test_places"], f"test_{q}", [q])
        return train, val, tests
    if kind == "csv":
        splits = load_csv(data)
        if "train" not in splits:
            raise ConfigError(f"{data}: no rows with split 'train' (found {sorted(splits)})")
        tests = {k: v for k, v in splits.items() if k.startswith("test")}
        return splits["train"], splits.get("val"), tests
    if kind == "mat":
        if not o["db_root"] or not o["query_root"]:
            raise ConfigError("--dataset mat needs --db-root and --query-root")
        args = (o["db_root"], o["query_root"], o["mat_layout"])
        train = load_dbstruct(data, *args, name="train")
        val = load_dbstruct(o["val_data"], *args, name="val") if o["val_data"] else None
        return train, val, {}
    raise ConfigError(f"unknown --dataset {kind!r}")


@click.command("train")
@click.option(
    "--dataset",
    "kind",
    type=click.Choice(["traversal", "csv", "mat"]),
    required=True,
    help="traversal: index-aligned folders (Gardens Point); csv: path,role,split,position(s); "
    "mat: NetVLAD dbStruct .mat.",
)
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Dataset root/file.")
@click.option("-o", "--output", "run_dir", type=click.Path(path_type=Path), required=True)
@click.option("--db-folder", default="day_left", show_default=True, help="traversal: database.")
@click.option(
    "--query-folders", default="day_right,night_right", show_default=True, help="traversal."
)
@click.option("--train-places", default="0-99", show_default=True, help="traversal: START-END.")
@click.option("--val-places", default=None, help="traversal: validation places START-END.")
@click.option("--test-places", default=None, help="traversal: test places (per query folder).")
@click.option("--val-data", type=click.Path(path_type=Path), default=None, help="mat: val .mat.")
@click.option("--db-root", type=click.Path(path_type=Path), default=None, help="mat: db images.")
@click.option("--query-root", type=click.Path(path_type=Path), default=None, help="mat: queries.")
@click.option("--mat-layout", type=click.Choice(["pitts", "tokyo247", "tokyotm"]), default="pitts")
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Off-the-shelf start.")
@click.option("--backbone", default="efficientnet_lite0", show_default=True)
@click.option("--input-size", type=InputSize(), default=None, help="HxW (default: backbone's).")
@click.option("--clusters", "num_clusters", default=64, show_default=True)
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="vgg16 weights.")
@click.option("--first-trainable", type=int, default=None, help="vgg16 module / lite0 block.")
@click.option("--generations", default=4, show_default=True)
@click.option("--epochs", default=5, show_default=True)
@click.option(
    "--gen0-one-epoch/--gen0-all-epochs",
    default=True,
    show_default=True,
    help="Generation 0 trains only its last epoch (the authors' quirk) or all of them.",
)
@click.option("--lr", default=0.001, show_default=True)
@click.option("--momentum", default=0.9, show_default=True)
@click.option("--weight-decay", default=0.001, show_default=True)
@click.option("--tuples-per-step", default=4, show_default=True)
@click.option("--temperatures", default="0.07,0.07,0.06,0.05", show_default=True)
@click.option("--soft-weight", default=0.5, show_default=True)
@click.option("--neg-num", default=10, show_default=True)
@click.option("--neg-pool", default=1000, show_default=True)
@click.option("--pos-num", default=10, show_default=True)
@click.option("--pos-pool", default=20, show_default=True)
@click.option("--cache-size", default=1000, show_default=True, help="Queries per mining chunk.")
@click.option("--pos-radius", default=10.0, show_default=True)
@click.option("--nonneg-radius", default=25.0, show_default=True)
@click.option("--eval-radius", default=25.0, show_default=True)
@click.option("--color-jitter", default="0.7,0.7,0.7,0.5", show_default=True, help="or 'none'.")
@click.option(
    "--cache-frozen/--no-cache-frozen",
    default=True,
    show_default=True,
    help="Cache frozen-layer outputs (without colour jitter) or recompute them every time.",
)
@click.option("--pca-dim", type=PcaDim(), default=4096, show_default=True)
@click.option("--pca-images", default=10000, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--seed", default=43, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in OUTPUT where it stopped.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def train_command(kind, data, run_dir, **o):
    """Train an SFRS model in generations (self-supervised image-to-region similarities)."""
    require_extra("train", "train", "torch", "sklearn")
    from sfrs_edge.train.config import TrainConfig
    from sfrs_edge.train.distributed import init_from_env
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.trainer import Trainer

    logging.getLogger("sfrs_edge.train").setLevel(logging.INFO)  # progress lines on stderr
    h, w = o.pop("input_size") or (0, 0)
    model_fields = {f.name for f in fields(ModelConfig)}
    model = ModelConfig(input_height=h, input_width=w, **{k: o[k] for k in model_fields if k in o})
    jitter = None
    if o["color_jitter"].lower() not in ("none", "off", "0"):
        jitter = tuple(_floats(o["color_jitter"], "--color-jitter"))
        if len(jitter) != 4:
            raise ConfigError("--color-jitter: give brightness,contrast,saturation,hue or 'none'")
    parsed = {
        "model": model,
        "color_jitter": jitter,
        "temperatures": _floats(o["temperatures"], "--temperatures"),
        "weights": str(o["weights"]) if o["weights"] else None,
    }
    # every other option is named as its TrainConfig field
    same = {f.name: o[f.name] for f in fields(TrainConfig) if f.name in o and f.name not in parsed}
    cfg = TrainConfig(**parsed, **same)
    train, val, tests = _load_splits(kind, data, o)
    dist = init_from_env()
    if dist.is_main:
        click.echo(train.summary())
    trainer = Trainer(
        cfg,
        train,
        run_dir,
        val=val,
        tests=tests,
        init=o["init"],
        dist=dist,
        progress=not o["no_progress"],
    )
    summary = trainer.run(resume=o["resume"])
    if dist.is_main:
        click.echo(f"wrote {summary['checkpoint']} (export it with `sfrs-edge export`)")


COMMANDS = [train_command]
