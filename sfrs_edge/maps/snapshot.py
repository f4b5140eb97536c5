"""One map generation, read through one directory handle.

An update never changes a map directory: it builds a new one and swaps it in (:mod:`.store`).
Opening every file relative to a handle on the directory (``dir_fd``) therefore reads one
generation, whatever is swapped in meanwhile; a file that disappears (the old generation was
deleted while we read it) raises ``FileNotFoundError`` and :meth:`Map.open` retries once with
the new generation. hnswlib, which wants a path, gets ``/proc/self/fd/N`` of the file we
opened (Linux: the kernel opens that very inode); SQLite canonicalises paths itself, so it opens
the file by name and the opener then checks that name still holds the inode we opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MapError
from . import checksums
from .manifest import MANIFEST, MAX_MANIFEST_BYTES, parse_manifest

_PROC_FD = Path("/proc/self/fd")
_HAS_DIR_FD = os.open in os.supports_dir_fd


class MissingFile(FileNotFoundError):
    """A file the manifest lists is absent (retryable: the generation may be being deleted)."""


class Snapshot:
    """Open files of the map directory ``folder`` (a context manager; close when done)."""

    def __init__(self, folder: Path, where: str | None = None) -> None:
        self.folder = folder
        self.where = where or str(folder)
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
        try:
            self.dir_fd = os.open(folder, flags) if _HAS_DIR_FD else None
        except FileNotFoundError:
            raise
        except NotADirectoryError:
            raise MapError(f"{self.where}: not a map directory") from None
        except OSError as exc:
            raise MapError(f"{self.where}: cannot open the map ({exc.strerror})") from None
        self._fds: list[int] = []

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def open(self, name: str) -> int:
        """fd of the regular file ``name`` of this generation (symlinks, FIFOs refused)."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            if self.dir_fd is not None:
                fd = os.open(name, flags, dir_fd=self.dir_fd)
            else:  # pragma: no cover - platforms without dir_fd
                fd = os.open(self.folder / name, flags)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise MapError(f"{self.where}: cannot read {name} ({exc.strerror})") from None
        self._fds.append(fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise MapError(f"{self.where}: {name} is not a regular file; rebuild the map")
        return fd

    def _alive(self) -> bool:
        """Whether the generation we hold is still the one at the map's path. An update swaps
        the path to a new directory and then deletes the old one file by file, so the old
        manifest can outlive a file it lists: compare directory identities, not just files."""
        try:
            if self.dir_fd is not None:
                held, current = os.fstat(self.dir_fd), os.stat(self.folder)
                if (held.st_dev, held.st_ino) != (current.st_dev, current.st_ino):
                    return False
                os.stat(MANIFEST, dir_fd=self.dir_fd)
            else:  # pragma: no cover
                os.stat(self.folder / MANIFEST)
            return True
        except OSError:
            return False

    def path(self, fd: int, name: str) -> str:
        """A path naming exactly the open file ``fd`` (for libraries that open by path)."""
        if _PROC_FD.is_dir():
            return str(_PROC_FD / str(fd))
        return str(self.folder / name)  # pragma: no cover - no /proc: path-based

    def manifest(self) -> dict[str, Any]:
        try:
            fd = self.open(MANIFEST)
        except FileNotFoundError:
            if not self.folder.is_dir():
                raise
            raise MapError(f"{self.where}: not an sfrs-edge map (no {MANIFEST})") from None
        data = os.pread(fd, MAX_MANIFEST_BYTES + 1, 0)
        return parse_manifest(data, self.where)

    def check_files(self, manifest: dict[str, Any], verify: bool | str) -> dict[str, int]:
        """Open every listed file; check sizes; checksums per ``verify`` (see Map.open).

        The files hashed now are in :attr:`hashed`; they are remembered as verified only by
        :meth:`record_hashed`, once the caller has also checked their contents."""
        fds, hashed = {}, {}
        for name, entry in manifest["files"].items():
            try:
                fd = self.open(name)
            except FileNotFoundError:
                if not self._alive():
                    raise  # the whole generation went away: the caller retries
                what = "index file" if name.startswith("index") else "file"
                # an update may be deleting this (old) generation file by file: the caller
                # retries and reports this message only if the file stays missing
                raise MissingFile(
                    f"{self.where}: {what} {name} is missing; the map is incomplete, rebuild it"
                ) from None
            st = os.fstat(fd)
            if st.st_size != entry["bytes"]:
                raise MapError(
                    f"{self.where}: {name} is {st.st_size} bytes, the manifest says "
                    f"{entry['bytes']} (truncated or modified); rebuild the map"
                )
            if verify and (verify == "full" or not checksums.is_verified(st, entry["sha256"])):
                if checksums.sha256_fd(fd) != entry["sha256"]:
                    raise MapError(
                        f"{self.where}: {name} fails its checksum (corrupted or modified after "
                        "the map was written); rebuild the map"
                    )
                hashed[name] = (st, entry["sha256"])
            fds[name] = fd
        self.hashed = hashed
        return fds

    def record_hashed(self) -> None:
        """Remember the files hashed by :meth:`check_files` as verified (verification cache)."""
        checksums.record(list(getattr(self, "hashed", {}).values()))


def read_npy(fd: int, name: str, where: str) -> np.ndarray:
    """Memory-map the ``.npy`` file open at ``fd`` (header checked; no pickles)."""
    with os.fdopen(os.dup(fd), "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"npy version {version}")
        except (ValueError, OSError, SyntaxError) as exc:
            raise MapError(f"{where}: {name} is unreadable ({exc}); rebuild the map") from None
        if fortran or dtype.hasobject or not dtype.isnative:
            raise MapError(f"{where}: {name} has an unsupported layout; rebuild the map")
        offset = fh.tell()
        need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if os.fstat(fd).st_size != need:
            raise MapError(f"{where}: {name} size does not match its header; rebuild the map")
        if 0 in shape:
            return np.zeros(shape, dtype)
        return np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=tuple(shape))
