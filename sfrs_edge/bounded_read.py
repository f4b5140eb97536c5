"""Read a user's input file safely: regular files only, size-capped, never blocking.

A path given as an image, CSV or GPX may be a FIFO (``open`` would wait for a writer forever),
a device (``/dev/zero`` reads forever) or a multi-gigabyte file; :func:`read_bounded` refuses
all of these with the caller's error type instead of hanging or exhausting memory.
"""

from __future__ import annotations

import os
import stat

from .errors import SfrsEdgeError


def display_name(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 shown as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_bounded(
    path: str | os.PathLike,
    max_bytes: int,
    what: str = "input",
    error: type[SfrsEdgeError] = SfrsEdgeError,
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, else ``error`` naming the file.

    Opened non-blocking and checked with ``fstat`` on the open descriptor (no race with a
    rename): FIFOs, sockets and devices are refused, and a file that grows while it is read
    stops at ``max_bytes + 1`` bytes.
    """
    name = display_name(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{name}: {what} file not found (no such file)") from None
    except IsADirectoryError:
        raise error(f"{name}: is a directory, not an {what} file") from None
    except OSError as exc:
        raise error(f"{name}: cannot read {what} file ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{name}: is a directory, not an {what} file")
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{name}: not a regular file (FIFO, socket or device); refused")
        if st.st_size > max_bytes:
            raise error(f"{name}: {what} file is {st.st_size} bytes, over the {max_bytes} limit")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(max_bytes + 1 - total, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"{name}: cannot read {what} file ({exc.strerror})") from None
    finally:
        os.close(fd)
    if total > max_bytes:
        raise error(f"{name}: {what} file grew over the {max_bytes} byte limit while read")
    return b"".join(chunks)
