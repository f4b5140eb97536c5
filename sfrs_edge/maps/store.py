"""Atomic map directory writes: stage a complete new map beside the target, fsync, swap.

A writer fills a staging directory ``.<name>.new-XXXX`` next to the target, fsyncs every file
and the directory, then swaps it in with two renames: target -> ``.<name>.old``, staging ->
target, and deletes the old copy. A crash between the two renames leaves ``.<name>.old``
and no target; :func:`resolve` (readers) and :func:`recover` (writers) treat that as the old
map. So at every instant the path names either the old map or the new one, never a half-written
one. Writers hold an advisory lock (``.<name>.lock``, deleted when the update ends) so two
updates never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..atomic import fsync_dir
from ..errors import MapError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _old(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.new-"


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def resolve(target: str | os.PathLike) -> Path:
    """The directory that holds the map at ``target`` right now (reader side, no changes).

    Normally ``target`` itself; after a crash between the two renames of a swap, the old copy.
    """
    target = Path(target)
    if not target.exists() and _old(target).is_dir():
        return _old(target)
    return target


def recover(target: Path) -> None:
    """Finish or undo an interrupted swap and drop stale staging directories (writer side)."""
    old = _old(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)  # swap completed; only the cleanup was lost
        else:
            os.rename(old, target)  # crashed between the renames: roll back to the old map
            fsync_dir(target.parent)
            log.warning("%s: restored the previous map after an interrupted update", target)
    for stale in target.parent.glob(_staging_prefix(target) + "*"):
        shutil.rmtree(stale, ignore_errors=True)


def is_map_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


@contextlib.contextmanager
def _lock(target: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` for one update, then delete it (no file left).

    The file is deleted while still locked, so a writer that opened it just before may lock a
    deleted file: after locking, each writer checks that the path still names the file it holds
    and otherwise starts over (the usual lock-file protocol)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, single writer assumed
        yield
        return
    lock_path = target.parent / f".{target.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MapError(f"{target}: another sfrs-edge process is updating this map") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us deleted it: lock the current file instead
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)  # closing releases the lock


def check_target(target: Path) -> None:
    """Refuse to replace something that is not a map (a file, or a folder with other content)."""
    if target.exists() and not target.is_dir():
        raise MapError(f"{target}: exists and is not a directory; choose another output path")
    if target.is_dir() and not is_map_dir(target) and any(target.iterdir()):
        raise MapError(
            f"{target}: folder exists, is not empty and is not an sfrs-edge map; "
            "choose another output path or empty it"
        )


@contextlib.contextmanager
def atomic_map_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory; on normal exit it atomically replaces ``target``.

    On an exception (including KeyboardInterrupt) the staging directory is removed and
    ``target`` is untouched. A symlinked ``target`` updates the map the link points to (the
    link stays); a dangling link is refused.
    """
    target = real_target(target)
    if not target.parent.is_dir():
        raise MapError(f"{target.parent}: output folder does not exist")
    with _lock(target):
        recover(target)
        check_target(target)
        # not mkdtemp: its 0700 mode would stick to the map; mkdir honours the umask
        staging = target.parent / (_staging_prefix(target) + secrets.token_hex(6))
        os.mkdir(staging)
        try:
            yield staging
            for f in staging.iterdir():
                fsync_file(f)
            fsync_dir(staging)
            swap_in(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def real_target(target: str | os.PathLike) -> Path:
    """The directory an update must replace: ``target`` with symlinks resolved."""
    target = Path(target).expanduser().absolute()
    if target.is_symlink():
        real = Path(os.path.realpath(target))
        if not real.is_dir() and not _old(real).is_dir():
            raise MapError(f"{target}: is a symlink to {real}, which is not a map; fix the link")
        return real
    return target


def link_or_copy(src_folder: Path, name: str, staging: Path) -> None:
    """Put file ``name`` of the map being updated (writers hold the lock: it cannot change)
    into ``staging`` without copying its bytes: a hard link, O(1); else a copy."""
    try:
        os.link(src_folder / name, staging / name, follow_symlinks=False)
    except FileNotFoundError:
        raise
    except OSError:
        shutil.copyfile(src_folder / name, staging / name)


def swap_in(staging: Path, target: Path) -> None:
    """Replace ``target`` by ``staging`` with renames (see module docstring)."""
    old = _old(target)
    if target.exists():
        os.rename(target, old)
        fsync_dir(target.parent)
    try:
        os.rename(staging, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.rename(old, target)  # an error (not a crash) between the renames: put it back
        raise
    fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
