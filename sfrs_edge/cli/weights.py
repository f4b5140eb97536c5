"""Weights for ``import`` and ``init``: the user's file, or the published one downloaded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from ..download import DownloadError
from ..errors import SfrsEdgeError
from ..progress import progress


@contextlib.contextmanager
def checked_weights(name: str, file: Path | None) -> Iterator[Path]:
    """``file``, or the published weights ``name`` (downloaded with a progress bar).

    The block checks the file (the importer's key/shape checks). A file downloaded by this call
    that fails them is deleted from the cache so the next run downloads it again.
    """
    from .. import weights

    if file is not None:
        yield file
        return
    fresh = not weights.cached_path(name).is_file()
    path = published(name)
    try:
        yield path
    except SfrsEdgeError as exc:
        if not fresh:  # the user's own copy in the cache: keep it, say which file failed
            raise
        weights.forget(path)
        raise type(exc)(
            f"deleted the downloaded {path.name}, which failed its checks (run again to "
            f"download it anew): {exc}"
        ) from exc


def published(name: str, hint: str | None = None) -> Path:
    """The published weights ``name`` from the cache, downloaded (with progress) if missing."""
    from .. import weights

    cached = weights.cached_path(name)
    if not cached.is_file():
        click.echo(f"downloading {weights.PUBLISHED[name].url} -> {cached}", err=True)
    with progress(f"downloading {cached.name}", unit="bytes") as report:
        try:
            return weights.published_weights(name, progress=report)
        except DownloadError as exc:
            raise DownloadError(f"pass {hint}, or: {exc}" if hint else str(exc)) from None
