"""Model commands: ``init`` (off-the-shelf model), ``export`` and ``import`` (need torch)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import paths
from ..errors import ConfigError
from .options import InputSize, PcaDim

LOCAL_FIT_IMAGES = 200  # images the local-feature PCA is fitted on


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
    help="Backbone ImageNet weights file (vgg16: torchvision state dict).",
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
def init_command(
    backbone, images_dir, pca_dim, no_whiten, input_size, clusters, weights, rerank, output
):
    """Make an off-the-shelf model: pretrained backbone, k-means NetVLAD, PCA whitening."""
    from sfrs_edge.images import list_images
    from sfrs_edge.train.backbones import backbone_spec
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.offtheshelf import InitConfig, build_offtheshelf

    backbone_spec(backbone)
    images = list_images(images_dir)
    h, w = input_size or (0, 0)
    cfg = InitConfig(
        backbone=backbone,
        num_clusters=clusters,
        input_height=h,
        input_width=w,
        pca_dim=pca_dim,
        whiten=not no_whiten,
        weights=str(weights) if weights else None,
    )
    if clusters < 2:
        raise ConfigError(f"--clusters must be at least 2, got {clusters}")
    click.echo(f"init: {backbone}, {len(images)} images from {images_dir}")
    net, provenance = build_offtheshelf(images, cfg)
    extra = None
    if rerank:
        from sfrs_edge.train.local_features import LocalConfig, fit_local_head, head_state

        step = max(1, len(images) // LOCAL_FIT_IMAGES)
        head = fit_local_head(net, images[::step][:LOCAL_FIT_IMAGES], LocalConfig())
        extra = {"local": head_state(head)}
        click.echo(f"local features for re-ranking: {head.config.to_dict()}")
    output = output or paths.default_checkpoint()
    save_checkpoint(net, output, provenance, extra=extra)
    click.echo(
        f"wrote {output} (descriptor {net.config.descriptor_dim}-d, "
        f"input {net.config.input_height}x{net.config.input_width}, {provenance['seconds']} s)"
    )


COMMANDS = [init_command]
