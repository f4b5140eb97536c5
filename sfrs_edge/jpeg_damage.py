"""Damaged JPEG data, as libjpeg itself reports it while OpenCV decodes.

libjpeg decodes a JPEG whose entropy-coded data is damaged (a flipped bit, a cut file) anyway:
it fills what it cannot read and only *warns* ("Corrupt JPEG data: premature end of data
segment", "... N extraneous bytes before marker 0xd9", "Premature end of JPEG file"). OpenCV
returns that image as if it were fine and offers no warning callback, and the warning cannot be
found without decoding: the damage sits inside Huffman-coded data, where a structural check of
the JPEG segments (markers, stuffed bytes, EOI) sees little (of 263 bit-flipped Gardens Point
files that libjpeg warned about, such a check caught 16; docs/RELIABILITY.md).

So the decode runs with file descriptor 2 pointed at a scratch file, where libjpeg's default
message handler writes (``fprintf(stderr)``); the lines that are libjpeg damage warnings are
returned, any other text (another thread's log line written in that moment) is written back
to stderr. File descriptor 2 belongs to the whole process, so these decodes hold one lock:
JPEG decoding is serialised (a 640x480 frame decodes in about 3 ms; inference takes far longer).
Where file descriptor 2 cannot be redirected (closed), the image is decoded unchecked and a
debug line says so.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# libjpeg(-turbo) warnings that mean the image data is damaged (jerror.h: JWRN_EXTRANEOUS_DATA,
# JWRN_HIT_MARKER, JWRN_HUFF_BAD_CODE, JWRN_MUST_RESYNC, JWRN_JPEG_EOF, JWRN_BOGUS_PROGRESSION,
# JWRN_NOT_SEQUENTIAL, JWRN_BOGUS_ICC); others (an unknown JFIF revision) are not damage.
DAMAGE_PREFIXES = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Inconsistent progression sequence",
    "Invalid SOS parameters",
)

_lock = threading.Lock()
_scratch = None


def _scratch_file():
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryFile()
    return _scratch


def decode_watching_libjpeg(decode: Callable[[], T]) -> tuple[T, list[str]]:
    """``decode()`` and the libjpeg damage warnings it printed (empty: none, or not watched)."""
    with _lock:
        try:
            sys.stderr.flush()
            scratch = _scratch_file()
            scratch.seek(0)
            scratch.truncate()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError) as exc:
            log.debug("JPEG damage not checked: stderr cannot be redirected (%s)", exc)
            return decode(), []
        try:
            os.dup2(scratch.fileno(), 2)
            try:
                result = decode()
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError, AttributeError):
                    pass
                os.dup2(saved, 2)
        finally:
            os.close(saved)
        scratch.seek(0)
        text = scratch.read().decode("utf-8", "replace")
    damage, other = [], []
    for line in text.splitlines(keepends=True):
        (damage if line.strip().startswith(DAMAGE_PREFIXES) else other).append(line)
    if other:
        try:
            os.write(2, "".join(other).encode("utf-8", "replace"))
        except OSError:
            pass
    return result, [line.strip() for line in damage]
