"""One verified HTTP(S) downloader (stdlib ``urllib``) for weights and datasets.

What :func:`download` guarantees:

- **Atomic**: bytes go to ``.<name>.part`` beside the destination; the destination appears
  (fsynced rename) only after every check passed, so a crash or Ctrl-C never leaves a
  half file under the real name.
- **Resumable**: an interrupted transfer keeps its ``.part`` file; the next call asks the
  server for the rest (HTTP ``Range``). A server that ignores ``Range`` sends the whole file
  again and the part file is restarted. Transient failures (timeout, connection reset,
  short transfer) are retried a few times, resuming each time.
- **Verified**: the size against ``Content-Length`` and, when known, the expected size;
  the SHA-256 against a full digest or a published prefix (torchvision names its files
  ``<name>-<first 8 hex digits of sha256>.pth``). A file that fails is deleted.
- **Bounded**: a socket timeout on connect and on every read; ``max_bytes`` caps downloads
  whose size is not known in advance.

Every failure is a :class:`DownloadError` with one line naming the URL and, for network
failures, the path where a file fetched by hand should be put.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .atomic import fsync_dir
from .errors import SfrsEdgeError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
Progress = Callable[[int, "int | None"], None]


class DownloadError(SfrsEdgeError):
    """A file could not be downloaded or did not pass its checks."""


@dataclass(frozen=True)
class Remote:
    """A published file: where it is and what it must look like."""

    url: str
    filename: str
    what: str
    sha256: str | None = None  # full hex digest, when published
    sha256_prefix: str | None = None  # leading hex digits, when only those are published
    size: int | None = None  # bytes, when known


class _Retryable(Exception):
    """A transfer that stopped early; the part file may be resumed."""


def part_path(dest: Path) -> Path:
    """Where the unfinished bytes of ``dest`` are kept between attempts."""
    return dest.with_name(f".{dest.name}.part")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(remote: Remote, folder: str | os.PathLike, **kwargs) -> Path:
    """``remote`` in ``folder`` (downloaded and verified when not there yet)."""
    dest = Path(folder) / remote.filename
    if dest.is_file():
        return dest
    return download(
        remote.url,
        dest,
        what=remote.what,
        sha256=remote.sha256,
        sha256_prefix=remote.sha256_prefix,
        size=remote.size,
        **kwargs,
    )


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    what: str = "file",
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    size: int | None = None,
    max_bytes: int | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    progress: Progress | None = None,
    opener: Callable | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (resumable, verified, atomic); returns ``dest``.

    ``progress(bytes_done, bytes_total_or_None)`` is called as bytes arrive. ``opener``:
    default ``urllib.request.urlopen`` (looked up at call time, so tests can guard it).
    """
    opener = opener or urllib.request.urlopen
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    limit = size if size is not None else max_bytes
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, limit, timeout, progress, opener, what, dest)
            break
        except _Retryable as exc:
            if attempt == retries:
                raise DownloadError(
                    f"cannot download {what} from {url} ({exc}, {retries + 1} attempts); "
                    f"run again to resume, or download it by hand to {dest}"
                ) from None
            log.warning("%s: %s; retrying (resuming at %d bytes)", url, exc, _size(part))
            time.sleep(min(2.0**attempt, 10.0) * 0.1)
    _verify(part, url, what, sha256, sha256_prefix, size)
    with open(part, "rb") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    fsync_dir(dest.parent)
    return dest


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _transfer(url, part, limit, timeout, progress, opener, what, dest) -> None:
    have = _size(part)
    if limit is not None and have > limit:
        part.unlink()
        have = 0
    headers = {"User-Agent": "sfrs-edge"}
    if have and url.startswith(("http://", "https://")):
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = opener(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete (or bogus): restart
            part.unlink(missing_ok=True)
            raise _Retryable("server refused the resume range") from None
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(
            f"cannot download {what} from {url} (HTTP {exc.code} {exc.reason}); "
            f"download it by hand to {dest}"
        ) from None
    except TimeoutError as exc:
        raise _Retryable(f"timed out after {timeout:g} s") from exc
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(
            f"cannot download {what} from {url} ({reason}); download it by hand to {dest}"
        ) from None
    with resp:
        status = getattr(resp, "status", None) or 200
        length = _header_int(resp, "Content-Length")
        if status == 206 and have:
            start = _range_start(resp)
            if start != have:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, expected {have}")
            mode, done = "ab", have
        else:
            mode, done = "wb", 0
        total = done + length if length is not None else None
        if limit is not None and total is not None and total > limit:
            raise DownloadError(
                f"{url}: the server sends {total} bytes, more than the {limit} expected"
            )
        with open(part, mode) as f:
            try:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
                    done += len(chunk)
                    if limit is not None and done > limit:
                        raise DownloadError(f"{url}: more than the {limit} bytes expected")
                    if progress is not None:
                        progress(done, total)
            except TimeoutError:
                raise _Retryable(f"no data for {timeout:g} s") from None
            except (OSError, ValueError, http.client.HTTPException) as exc:  # short reads, resets
                raise _Retryable(f"transfer broke off ({type(exc).__name__})") from None
    if total is not None and done < total:
        raise _Retryable(f"got {done} of {total} bytes")
    if done == 0:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the download is empty")


def _header_int(resp, name: str) -> int | None:
    value = resp.headers.get(name) if getattr(resp, "headers", None) else None
    return int(value) if value and str(value).isdigit() else None


def _range_start(resp) -> int | None:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", "") or "")
    return int(m.group(1)) if m else None


def _verify(part: Path, url, what, sha256, sha256_prefix, size) -> None:
    actual_size = _size(part)
    if size is not None and actual_size != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: got {actual_size} bytes, expected {size}; deleted it")
    if sha256 or sha256_prefix:
        digest = sha256_of(part)
        want = (sha256 or sha256_prefix or "").lower()
        if not digest.startswith(want):
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{url}: SHA-256 {digest[: max(8, len(want))]}... does not match the published "
                f"{want}; deleted the download ({what})"
            )
