"""Invariants of a map's stored numbers, which checksums cannot give.

Checksums prove that files are what the map's writer wrote; a file edited with its checksum
recomputed passes them. What every correct map also holds is cheap to check: its descriptors
are finite and unit length (the model's output is, within :data:`NORM_TOLERANCE`, and float16
storage adds at most 1e-3), and its extra arrays (local features, their coordinates) are
finite. A map whose descriptors were scaled would answer with similarities far above 1; NaN
rows would never be found; NaN local features would silently give re-ranking no evidence.

``map verify`` (``Map.open(verify="full")``) checks every row; every open checks the first and
last :data:`SAMPLE_ROWS` rows of each segment (a scaled or zeroed array is caught at once);
every search checks that the similarities it returns are finite and within [-1, 1].
"""

from __future__ import annotations

import numpy as np

from ..errors import MapError

NORM_TOLERANCE = 2e-2  # the model's 1e-2 (engine.NORM_TOLERANCE) plus float16 rounding
SAMPLE_ROWS = 32
CHUNK_ROWS = 16384
REBUILD = "the map is damaged or was edited; rebuild it (`sfrs-edge map build`)"


def check_vectors(vectors: np.ndarray, what: str, first_row: int = 0) -> None:
    """Raise :class:`MapError` unless every row of ``vectors`` (N, D) is finite and unit
    length; ``first_row`` numbers the rows in the message."""
    for start in range(0, len(vectors), CHUNK_ROWS):
        block = np.asarray(vectors[start : start + CHUNK_ROWS], np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = first_row + start + int(np.argmin(finite))
            raise MapError(f"{what}: row {row} holds NaN or infinite values; {REBUILD}")
        norms = np.linalg.norm(block, axis=1)
        off = np.abs(norms - 1.0) > NORM_TOLERANCE
        if off.any():
            i = int(np.argmax(off))
            raise MapError(
                f"{what}: row {first_row + start + i} has length {norms[i]:.4g}, not 1 (stored "
                f"descriptors are unit length); {REBUILD}"
            )


def check_sample(vectors: np.ndarray, what: str, first_row: int = 0) -> None:
    """:func:`check_vectors` of the first and last :data:`SAMPLE_ROWS` rows (cheap at open)."""
    n = len(vectors)
    check_vectors(vectors[:SAMPLE_ROWS], what, first_row)
    if n > SAMPLE_ROWS:
        tail = max(SAMPLE_ROWS, n - SAMPLE_ROWS)
        check_vectors(vectors[tail:], what, first_row + tail)


def check_finite(array: np.ndarray, what: str, first_row: int = 0) -> None:
    """Raise :class:`MapError` when a floating-point ``array`` (N, ...) holds NaN or inf."""
    if not np.issubdtype(array.dtype, np.floating):
        return
    for start in range(0, len(array), CHUNK_ROWS):
        block = np.asarray(array[start : start + CHUNK_ROWS])
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        if not finite.all():
            row = first_row + start + int(np.argmin(finite))
            raise MapError(f"{what}: row {row} holds NaN or infinite values; {REBUILD}")


def check_similarities(sims: np.ndarray, where: str) -> None:
    """Raise :class:`MapError` when a unit-length query met similarities no unit-length map
    can give (NaN, or beyond ±1): the stored descriptors are damaged."""
    sims = np.asarray(sims)
    if sims.size == 0:
        return
    bad = ~np.isfinite(sims) | (np.abs(sims) > 1.0 + NORM_TOLERANCE)
    if bad.any():
        value = float(sims[bad][0])
        raise MapError(
            f"{where}: search returned similarity {value:.4g}, impossible between unit-length "
            f"descriptors (stored descriptors are not unit length or not finite); {REBUILD}"
        )
