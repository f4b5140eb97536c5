"""Weights for ``import`` and ``init``: the user's file, or the published one downloaded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import SfrsEdgeError
from .progress import progress


@contextlib.contextmanager
def checked_weights(name: str, file: Path | None) -> Iterator[Path]:
    """``file``, or the published weights ``name`` (downloaded with a progress bar).

    The block checks the file (the importer's key/shape checks). A downloaded file that fails
    them is deleted from the cache so the next run downloads it again.
    """
    from .. import weights

    if file is not None:
        yield file
        return
    path = published(name)
    try:
        yield path
    except SfrsEdgeError as exc:
        weights.forget(path)
        raise type(exc)(f"{exc} (deleted the downloaded {path}; run again to download it)") from exc


def published(name: str) -> Path:
    """The published weights ``name`` from the cache, downloaded (with progress) if missing."""
    from .. import weights

    cached = weights.cached_path(name)
    if not cached.is_file():
        click.echo(f"downloading {weights.PUBLISHED[name].url} -> {cached}", err=True)
    with progress(f"downloading {cached.name}", unit="bytes") as report:
        return weights.published_weights(name, progress=report)
