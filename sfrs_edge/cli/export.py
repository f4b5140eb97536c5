"""``export`` (checkpoint → verified ONNX, optional TensorRT engine) and ``import`` (foreign
weights → checkpoint). Both need torch, imported inside the commands."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .. import paths
from ..errors import ConfigError
from .extras import require_extra
from .options import InputSize, threads_option

DEFAULT_VERIFY_COUNT = 8
LOCAL_FIT_COUNT = 100  # images a missing local-feature PCA is fitted on at export


def pick_verify_images(folder: Path, count: int) -> list[Path]:
    """Up to ``count`` images spread evenly over ``folder`` (sorted)."""
    from ..images import list_images

    images = list_images(folder)
    step = max(1, len(images) // max(count, 1))
    return images[::step][:count]


def _verify_folder(verify_images: Path | None, provenance: dict, checkpoint: Path) -> Path:
    if verify_images is not None:
        return verify_images
    recorded = provenance.get("images")
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    where = f" (recorded folder {recorded} is missing)" if recorded else ""
    raise ConfigError(
        f"{checkpoint}: no images to verify the export on{where}; pass --verify-images DIR "
        "with a few real images like those the model will see"
    )


def _existing_checkpoint(checkpoint: Path | None) -> Path:
    """The checkpoint to export, or a one-line error saying how to make one."""
    given = checkpoint is not None
    checkpoint = checkpoint or paths.default_checkpoint()
    if not Path(checkpoint).exists():
        where = "" if given else " (the default; no checkpoint has been made in this home)"
        raise ConfigError(
            f"{checkpoint}: no such checkpoint file{where}; make one with `sfrs-edge init "
            f"--backbone efficientnet_lite0 --images DIR -o {checkpoint}` (DIR: images like "
            "the map's), `sfrs-edge import --from openibl`, or `sfrs-edge demo`"
        )
    return Path(checkpoint)


@click.command("export")
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX file to write [default: $SFRS_EDGE_HOME/model.onnx; with --fp16 or --int8 "
    "model-fp16.onnx or model-int8.onnx, so the FP32 model is kept].",
)
@click.option("--fp16", is_flag=True, help="FP16 weights; norms and softmax stay FP32.")
@click.option(
    "--pca-dim",
    type=click.IntRange(min=1),
    default=None,
    help="Keep the first N whitened dimensions and re-normalise.",
)
@click.option("--input-size", type=InputSize(), default=None, help="Override the input HxW.")
@click.option(
    "--verify-images",
    type=click.Path(path_type=Path),
    default=None,
    help="Real images to verify on [default: the folder the checkpoint was fitted on].",
)
@click.option(
    "--verify-count",
    type=click.IntRange(min=1),
    default=DEFAULT_VERIFY_COUNT,
    show_default=True,
    help="How many of those images to verify on.",
)
@click.option(
    "--engine",
    type=click.Path(path_type=Path),
    default=None,
    help="Also build a TensorRT engine here (needs TensorRT and a GPU).",
)
@click.option(
    "--engine-batch",
    type=(click.IntRange(min=1), click.IntRange(min=1)),
    default=(1, 8),
    show_default=True,
    help="The engine's tuned (opt) and largest (max) batch; the smallest is 1.",
)
@click.option(
    "--rerank/--no-rerank",
    default=None,
    help="Also emit local features for re-ranking [default: when the checkpoint has a "
    "local-feature PCA; --rerank fits one on the verification folder when it has none].",
)
@click.option("--workspace-gb", type=float, default=4.0, show_default=True, hidden=True)
@click.option(
    "--int8",
    is_flag=True,
    help="INT8 model (onnxruntime static quantization, QDQ, symmetric S8S8) of the backbone's "
    "convs; refused unless it matches FP32 closely on the verification images.",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="--int8: folder of real images (like the deployment's) to calibrate ranges on.",
)
@click.option(
    "--calibration-count",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="--int8: how many of those images to calibrate on.",
)
@click.option(
    "--calibration-method",
    type=click.Choice(["percentile", "minmax", "entropy"]),
    default="percentile",
    show_default=True,
    help="--int8: activation ranges from the 99.999th percentile, min/max (least memory), "
    "or entropy.",
)
@click.option(
    "--int8-depthwise/--no-int8-depthwise",
    default=False,
    show_default=True,
    help="--int8: quantize depthwise convs too (less accurate, not faster on Lite0).",
)
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_command(
    checkpoint,
    output,
    fp16,
    pca_dim,
    input_size,
    verify_images,
    verify_count,
    engine,
    engine_batch,
    rerank,
    workspace_gb,
    int8,
    calibration,
    calibration_count,
    calibration_method,
    int8_depthwise,
    threads,
    as_json=False,
):
    """Export CHECKPOINT [default: $SFRS_EDGE_HOME/checkpoint.pt] to a verified ONNX model."""
    require_extra("export", "export", "torch", "onnx")
    from sfrs_edge.export import build_engine, export_model
    from sfrs_edge.export.pipeline import local_head
    from sfrs_edge.threads import limit_process
    from sfrs_edge.train.checkpoint import load_checkpoint, read_checkpoint

    t_start = time.perf_counter()
    limit_process(threads)
    checkpoint = _existing_checkpoint(checkpoint)
    output = output or paths.default_model("int8" if int8 else "fp16" if fp16 else "fp32")
    if int8:
        if fp16 or engine is not None:
            raise click.UsageError("--int8 cannot be combined with --fp16 or --engine")
        if calibration is None:
            raise click.UsageError("--int8 needs --calibration DIR (real images to calibrate on)")
    elif calibration is not None:
        raise click.UsageError("--calibration applies to --int8")
    if engine is not None:  # fail before a long export, not after
        from sfrs_edge.export.tensorrt_engine import BatchProfile, require_tensorrt

        require_tensorrt()
        profile = BatchProfile(min=1, opt=engine_batch[0], max=engine_batch[1])
    net, provenance = load_checkpoint(checkpoint)
    folder = _verify_folder(verify_images, provenance, checkpoint)
    images = pick_verify_images(folder, verify_count)
    provenance = {**provenance, "checkpoint": str(Path(checkpoint).resolve())}
    if int8:
        from sfrs_edge.export.quantize import Int8Config

        _export_int8(
            net,
            output,
            images,
            calibration,
            Int8Config(
                keep_depthwise_float=not int8_depthwise,
                calibration_count=calibration_count,
                calibration_method=calibration_method,
            ),
            verify_count,
            folder,
            dict(pca_dim=pca_dim, input_size=input_size, provenance=provenance),
            t_start,
        )
        return
    stored = bool(read_checkpoint(checkpoint).get("local"))
    if rerank is None:
        rerank = stored
    local = None
    if rerank:
        local = local_head(checkpoint, net, pick_verify_images(folder, LOCAL_FIT_COUNT))
        if not stored:
            kept = bool(read_checkpoint(checkpoint).get("local"))
            click.echo(
                f"fitted the local-feature PCA for re-ranking on {folder}; "
                + (
                    f"kept in {checkpoint} (later exports reuse it)"
                    if kept
                    else f"could not keep it in {checkpoint} (see the warning)"
                ),
                err=as_json,
            )
    click.echo(
        f"export: {checkpoint} -> {output} ({'fp16' if fp16 else 'fp32'}"
        f"{', with re-ranking local features' if local is not None else ''})",
        err=as_json,
    )
    report = export_model(
        net,
        output,
        fp16=fp16,
        pca_dim=pca_dim,
        input_size=input_size,
        verify_images=images,
        provenance=provenance,
        local=local,
    )
    click.echo(report.line(), err=as_json)
    info = report.info
    pre = info.preprocessing
    click.echo(
        err=as_json,
        message=f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, {info.descriptor_dim}-d, "
        f"input {pre.height}x{pre.width}, fingerprint {info.fingerprint}, "
        f"{time.perf_counter() - t_start:.1f} s)",
    )
    if output.name != "model.onnx" and output == paths.default_model(report.precision):
        click.echo(
            f"the FP32 {paths.default_model().name} is kept; use this model with --model "
            f"{output} and a map built with it",
            err=as_json,
        )
    built = None
    if engine is not None:
        built = build_engine(report.path, engine, profile=profile, workspace_gb=workspace_gb)
        click.echo(
            f"wrote TensorRT {report.precision} engine {built} (batch 1..{profile.max})",
            err=as_json,
        )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "model": str(report.path),
                    "size_bytes": report.size_bytes,
                    "precision": report.precision,
                    "descriptor_dim": info.descriptor_dim,
                    "input_size": [pre.height, pre.width],
                    "fingerprint": info.fingerprint,
                    "verify": {
                        "images": report.num_images,
                        "min_cos": report.min_cos,
                        "mean_cos": report.mean_cos,
                    },
                    "engine": str(built) if built else None,
                    "seconds": round(time.perf_counter() - t_start, 2),
                }
            )
        )


def _export_int8(
    net, output, images, calibration, config, verify_count, folder, kwargs, t_start
) -> None:
    from sfrs_edge.export.quantize import MIN_GATE_IMAGES, export_int8

    if len(images) < MIN_GATE_IMAGES:  # the gate's recall@1 needs more than a handful
        images = pick_verify_images(folder, max(verify_count, MIN_GATE_IMAGES))
    cal = pick_verify_images(calibration, config.calibration_count)
    if getattr(net.config, "backbone", "") == "efficientnet_lite0":
        click.echo(
            "note: INT8 Lite0 passed the accuracy gate but used 19 % more CPU per frame than the "
            "FP32 model on the x86 CPU measured (docs/BENCHMARKS.md); keep FP32 unless your "
            "CPU says otherwise",
            err=True,
        )
    click.echo(
        f"export: int8 -> {output} (calibrating on {len(cal)} images of {calibration}, "
        f"gate on {len(images)} images)"
    )
    report = export_int8(
        net, output, calibration=cal, verify_images=images, config=config, **kwargs
    )
    click.echo(report.fp32_parity)
    click.echo(report.gate.line())
    info = report.info
    click.echo(
        f"wrote {report.path} ({report.size_bytes / 2**20:.1f} MiB, int8, {info.descriptor_dim}-d, "
        f"fingerprint {info.fingerprint}, {time.perf_counter() - t_start:.1f} s)"
    )


@click.command("import")
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Choice(["openibl", "torchvision-vgg16"]),
    help="openibl: the SFRS authors' vgg16_netvlad.pth; torchvision-vgg16: ImageNet VGG16.",
)
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint to write [default: $SFRS_EDGE_HOME/checkpoint.pt] (openibl only).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_command(source, file, output, as_json):
    """Import weights published elsewhere as an sfrs-edge checkpoint. Without FILE, the
    published file is downloaded (verified) into $SFRS_EDGE_HOME/weights."""
    require_extra("import", "train", "torch")
    from .weights import checked_weights

    name = "openibl" if source == "openibl" else "vgg16"
    if source == "torchvision-vgg16":
        from sfrs_edge.train.backbones import VGG16

        with checked_weights(name, file) as path:
            VGG16().load_pretrained(path)
        hint = f"sfrs-edge init --backbone vgg16 --weights {path} --images DIR" + (
            f" -o {output}" if output else ""
        )
        if output is not None:
            raise ConfigError(
                f"{path}: valid torchvision VGG16 weights, but an ImageNet backbone alone is not "
                f"a place-recognition model (NetVLAD clusters come from images); run: {hint}"
            )
        if as_json:
            click.echo(json.dumps({"weights": str(path), "valid": True, "next": hint}))
        else:
            click.echo(f"{path}: valid torchvision VGG16 weights (conv1_1..conv5_3). Next: {hint}")
        return
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.importers import import_openibl_sfrs

    with checked_weights(name, file) as path:
        net = import_openibl_sfrs(path)
    output = output or paths.default_checkpoint()
    provenance = {"kind": "imported", "source": "openibl", "file": str(Path(path).resolve())}
    save_checkpoint(net, output, provenance)
    cfg = net.config
    if as_json:
        click.echo(
            json.dumps(
                {
                    "checkpoint": str(output),
                    "weights": str(path),
                    "backbone": "vgg16",
                    "clusters": cfg.num_clusters,
                    "descriptor_dim": cfg.descriptor_dim,
                    "input_size": [cfg.input_height, cfg.input_width],
                }
            )
        )
        return
    click.echo(
        f"wrote {output} (vgg16, {cfg.num_clusters} clusters, descriptor {cfg.descriptor_dim}-d, "
        f"input {cfg.input_height}x{cfg.input_width}); export needs --verify-images DIR"
    )


COMMANDS = [export_command, import_command]
