"""A digest of an ONNX file's content, stored inside the file at export and checked at open.

The digest is SHA-256 over every top-level field of the ``ModelProto`` (graph, weights
(initializers), opsets, the ``sfrs_edge`` metadata ...) except the metadata entry that holds
the digest itself. It is computed on the serialised bytes by :mod:`sfrs_edge.onnx_proto`, so
the runtime needs neither the ``onnx`` package nor a copy of a 500 MB file in memory (the file
is memory-mapped). Models with weights in external data files are not covered beyond the graph.

Hashing a 550 MB VGG16 takes about a second, so verified files are remembered by
:mod:`sfrs_edge.verify_cache` (by stat; files modified within 2 s of hashing are never
trusted; ``SFRS_EDGE_VERIFY=full`` rehashes on every open).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from . import verify_cache
from .errors import ModelError
from .onnx_proto import Malformed, map_file, metadata_of, scan

log = logging.getLogger(__name__)

DIGEST_KEY = "sfrs_edge.digest"


@dataclass(frozen=True)
class CheckedModel:
    """What one walk over a model file found: whether its digest was verified (False: it has
    none) and its ``metadata_props``."""

    verified: bool
    metadata: dict[str, str]


def _read(path: Path, fn):
    try:
        if path.stat().st_size == 0:
            raise ModelError(f"{path}: model file is empty (0 bytes)")
        return map_file(path, fn)
    except Malformed as exc:
        raise ModelError(f"{path}: not a loadable ONNX model (bad protobuf: {exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror})") from None


def file_digest(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """(digest, metadata) of a model file, memory-mapped (no copy of the file in memory)."""
    return _read(Path(path), lambda data: scan(data, DIGEST_KEY))


def check_model_file(path: str | os.PathLike) -> CheckedModel:
    """Check the digest recorded in an ONNX file against its content, in one walk over the
    file: the headers only when the verification cache already knows this file version, the
    whole content otherwise.

    ``verified`` is False (with a one-line warning) for a model exported before digests
    existed; raises :class:`ModelError` when the content does not match.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file ({exc.strerror})") from None
    known = verify_cache.known_digest(st)
    if known is not None:  # this file version was verified: read the headers only
        meta = _read(path, metadata_of)
        if meta.get(DIGEST_KEY) == known:
            return CheckedModel(True, meta)
    digest, meta = file_digest(path)
    recorded = meta.get(DIGEST_KEY)
    if recorded is None:
        log.warning(
            "%s: model has no content digest (exported before sfrs-edge recorded one); "
            "it is used unverified — re-export it to have it verified",
            path,
        )
        return CheckedModel(False, meta)
    if recorded != digest:
        raise ModelError(
            f"{path}: model content does not match the digest recorded at export (file "
            "corrupted or modified after export); re-export or copy the model again"
        )
    verify_cache.record([(st, digest)])
    return CheckedModel(True, meta)


def verify_model_file(path: str | os.PathLike) -> bool:
    """:func:`check_model_file`'s ``verified``: True when verified, False for a model without
    a digest; raises :class:`ModelError` when the content does not match."""
    return check_model_file(path).verified
