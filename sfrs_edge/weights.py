"""Published weights sfrs-edge can fetch by name, cached in ``$SFRS_EDGE_HOME/weights``.

- ``openibl``: the SFRS authors' VGG16 + NetVLAD + PCA model, from their OpenIBL release (the
  file their ``hubconf.py`` loads). They publish no checksum; the importer's key and shape
  checks (``sfrs_edge.train.importers.import_openibl_sfrs``) verify it after download.
- ``vgg16``: torchvision's ImageNet VGG16. torchvision names the file after the first 8 hex
  digits of its SHA-256; the full digest and size below match that prefix.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from . import paths
from .download import Progress, Remote, fetch

PUBLISHED: dict[str, Remote] = {
    "openibl": Remote(
        url="https://github.com/yxgeee/OpenIBL/releases/download/v0.1.0-beta/vgg16_netvlad.pth",
        filename="vgg16_netvlad.pth",
        what="the SFRS authors' OpenIBL VGG16-NetVLAD weights",
    ),
    "vgg16": Remote(
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        filename="vgg16-397923af.pth",
        what="torchvision's ImageNet VGG16 weights",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        sha256_prefix="397923af",
        size=553433881,
    ),
}


def cache_dir() -> Path:
    """``$SFRS_EDGE_HOME/weights``."""
    return paths.home() / "weights"


def cached_path(name: str) -> Path:
    """Where the weights called ``name`` live once downloaded."""
    return cache_dir() / PUBLISHED[name].filename


def published_weights(
    name: str,
    progress: Progress | None = None,
    url: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """The cached file of the weights called ``name``, downloaded and verified on first use.

    ``url`` overrides the published address (a mirror, or a test server); the checks stay.
    """
    remote = PUBLISHED[name]
    if url is not None:
        remote = replace(remote, url=url)
    return fetch(remote, cache_dir(), progress=progress, timeout=timeout)


def forget(path: str | os.PathLike) -> None:
    """Delete a cached file that failed the importer's checks (the next run downloads again)."""
    Path(path).unlink(missing_ok=True)
