"""Model commands: ``init`` (off-the-shelf model), ``export`` and ``import`` (need torch)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .. import paths
from ..errors import ConfigError
from .extras import require_extra
from .options import InputSize, PcaDim, threads_option

# images the local head's projection is fitted on: 100 (10 windows per patch size each) is what
# the re-ranking benchmark fitted the measured default on; fitting patch descriptors costs one
# K x C residual map per image, so more images would slow `init --rerank` for no measured gain
LOCAL_FIT_IMAGES = 100


def rerank_head_state(net, images: list) -> dict:
    """The re-ranking head ``init --rerank`` fits (local-feature PCA on up to
    LOCAL_FIT_IMAGES of ``images``, spread evenly), as the checkpoint's ``local`` entry."""
    from sfrs_edge.train.local_features import LocalConfig, fit_local_head, head_state

    step = max(1, len(images) // LOCAL_FIT_IMAGES)
    return head_state(fit_local_head(net, images[::step][:LOCAL_FIT_IMAGES], LocalConfig()))


@click.command("init")
@click.option(
    "--backbone",
    default="efficientnet_lite0",
    show_default=True,
    help="Backbone name: efficientnet_lite0 or vgg16.",
)
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder of images to fit NetVLAD clusters and PCA whitening on.",
)
@click.option("--pca-dim", type=PcaDim(), default=None, help="Whitened dimensions, or 'none'.")
@click.option("--no-whiten", is_flag=True, help="Plain PCA projection instead of whitening.")
@click.option(
    "--input-size",
    type=InputSize(),
    default=None,
    help="Network input HxW (default: the backbone's, 360x640 Lite0, 480x640 VGG16).",
)
@click.option("--clusters", default=64, show_default=True, help="NetVLAD clusters.")
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Backbone ImageNet weights file (vgg16: torchvision state dict) [default for vgg16: "
    "torchvision's vgg16-397923af.pth, downloaded and verified into $SFRS_EDGE_HOME/weights].",
)
@click.option(
    "--rerank",
    is_flag=True,
    help="Also fit the local-feature PCA for re-ranking (exports then emit local features).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint to write [default: $SFRS_EDGE_HOME/checkpoint.pt].",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where the backbone runs: auto | cpu | cuda | cuda:N (k-means and PCA run on the CPU).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@threads_option
def init_command(
    backbone,
    images_dir,
    pca_dim,
    no_whiten,
    input_size,
    clusters,
    weights,
    rerank,
    output,
    device,
    as_json,
    threads,
):
    """Make an off-the-shelf model: pretrained backbone, k-means NetVLAD, PCA whitening."""
    require_extra("init", "train", "torch", "sklearn")
    from sfrs_edge.images import list_images
    from sfrs_edge.threads import limit_process
    from sfrs_edge.train.backbones import backbone_spec
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.config import InitConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    limit_process(threads)  # torch (imported above), BLAS, OpenCV
    from sfrs_edge.train.devices import resolve_device

    dev = resolve_device(device)

    backbone_spec(backbone)
    images = list_images(images_dir)
    if backbone == "vgg16" and weights is None:
        from .weights import published

        weights = published("vgg16", hint="--weights FILE")  # SHA-256 verified
    h, w = input_size or (0, 0)
    model = ModelConfig(backbone, clusters, h, w, pca_dim=pca_dim, whiten=not no_whiten)
    cfg = InitConfig(model=model, weights=str(weights) if weights else None)
    if clusters < 2:
        raise ConfigError(f"--clusters must be at least 2, got {clusters}")
    click.echo(f"init: {backbone}, {len(images)} images from {images_dir}", err=as_json)
    from ..progress import progress

    with progress("init: images read", unit="images") as report:
        net, provenance = build_offtheshelf(images, cfg, progress=report, device=dev)
    extra = None
    if rerank:
        extra = {"local": rerank_head_state(net, images)}
        click.echo(f"local features for re-ranking: {extra['local']['config']}", err=as_json)
    output = output or paths.default_checkpoint()
    save_checkpoint(net, output, provenance, extra=extra)
    if as_json:
        c = net.config
        click.echo(
            json.dumps(
                {
                    "checkpoint": str(output),
                    "backbone": backbone,
                    "descriptor_dim": c.descriptor_dim,
                    "input_size": [c.input_height, c.input_width],
                    "seconds": provenance["seconds"],
                }
            )
        )
        return
    click.echo(
        f"wrote {output} (descriptor {net.config.descriptor_dim}-d, "
        f"input {net.config.input_height}x{net.config.input_width}, {provenance['seconds']} s)"
    )


COMMANDS = [init_command]
