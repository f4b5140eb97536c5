"""Gardens Point Walking: find it on disk, or download and verify the public zip.

Lookup order: ``paths.data_root()/gardens_point`` (see :func:`sfrs_edge.paths.data_root`),
then the download cache ``$SFRS_EDGE_HOME/datasets/gardens_point``. When
none holds it, :func:`gardens_point` downloads :data:`GARDENS_POINT_URL` and checks what it got
before anything appears in the cache:

- the file is a valid zip whose members all pass their CRC check;
- no member name escapes the extraction folder (absolute paths, ``..``, drive letters) and
  no member is a symbolic link;
- the three traversals ``day_left``, ``day_right``, ``night_right`` are present (folder names
  matched case-insensitively, at the zip root or under one wrapping folder), each with
  exactly 200 JPEG files that start with a JPEG header.

Extraction goes to a temporary folder beside the cache entry, which is renamed into place
only when complete, so an interrupted download never leaves a half dataset behind. A cache
entry that is a symbolic link (the data kept on another disk) is filled at the link's target;
the link stays. Member names longer than a file name may be (255 bytes) are refused before
anything is written, and any error writing the files is one :class:`DatasetError` line.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from . import paths
from .download import DownloadError, download
from .errors import SfrsEdgeError

GARDENS_POINT_URL = "https://www.tu-chemnitz.de/etit/proaut/datasets/GardensPoint_Walking.zip"
GARDENS_POINT = "gardens_point"
TRAVERSALS = ("day_left", "day_right", "night_right")
IMAGES_PER_TRAVERSAL = 200
MAX_UNCOMPRESSED = 2 << 30  # 2 GiB: the real archive is ~100 MB; refuse zip bombs
MAX_NAME_BYTES = 255  # NAME_MAX of ext4, NTFS, APFS
JPEG_MAGIC = b"\xff\xd8\xff"


class DatasetError(SfrsEdgeError):
    """A dataset cannot be found, downloaded or verified."""


def _jpeg_count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))


def _complete(folder: Path) -> bool:
    """True when ``folder`` holds the three traversals with their 200 images each."""
    return all(
        (folder / t).is_dir() and _jpeg_count(folder / t) >= IMAGES_PER_TRAVERSAL
        for t in TRAVERSALS
    )


def candidates() -> list[Path]:
    """Folders searched for Gardens Point, in order: :func:`paths.data_root`, the download
    cache."""
    return [paths.data_root() / GARDENS_POINT, cache_dir() / GARDENS_POINT]


def cache_dir() -> Path:
    """Where downloaded datasets are kept (``$SFRS_EDGE_HOME/datasets``)."""
    return paths.home() / "datasets"


def find_gardens_point() -> Path | None:
    """The first complete Gardens Point folder on disk, or None."""
    for folder in candidates():
        if _complete(folder):
            return folder
    return None


def gardens_point(
    download: bool = True,
    url: str = GARDENS_POINT_URL,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Gardens Point's folder (with ``day_left/``, ``day_right/``, ``night_right/``).

    Found on disk, or (``download=True``) fetched from ``url`` into :func:`cache_dir`.
    ``progress(bytes_done, bytes_total_or_None)`` is called while downloading.
    """
    found = find_gardens_point()
    if found is not None:
        return found
    if not download:
        looked = ", ".join(str(p) for p in candidates())
        raise DatasetError(
            f"Gardens Point not found (looked in {looked}); set SFRS_EDGE_DATA to the folder "
            "that holds gardens_point/, or allow the download"
        )
    return fetch_gardens_point(url, cache_dir() / GARDENS_POINT, progress=progress)


def fetch_gardens_point(
    url: str,
    dest: str | os.PathLike,
    progress: Callable[[int, int | None], None] | None = None,
    opener: Callable | None = None,
) -> Path:
    """Download the zip at ``url``, verify it and extract the traversals atomically to ``dest``.

    The transfer is :func:`sfrs_edge.download.download` (resumable, timeouts); ``opener`` is
    ``urllib.request.urlopen`` by default (tests pass their own). Returns ``dest``.
    """
    dest = Path(dest)
    if _complete(dest):
        return dest
    if dest.is_symlink():  # keep the link: the data goes where it points
        dest = dest.resolve()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the dataset folder {dest.parent} ({exc.strerror})"
        ) from None
    zip_path = dest.parent / f"{dest.name}.zip"
    try:
        download(
            url,
            zip_path,
            what="Gardens Point",
            max_bytes=MAX_UNCOMPRESSED,
            timeout=60.0,
            progress=progress,
            opener=opener,
        )
    except DownloadError as exc:
        raise DatasetError(
            f"{exc}; or set SFRS_EDGE_DATA to the folder that holds gardens_point/"
        ) from None
    try:
        _extract_verified(zip_path, dest, url)
    finally:
        zip_path.unlink(missing_ok=True)
    return dest


def _safe_parts(name: str, source: str) -> tuple[str, ...]:
    """Member name → path parts; refuses anything that could land outside the target."""
    if "\\" in name or "\x00" in name:
        raise DatasetError(f"{source}: unsafe member name {name!r} in the zip")
    p = PurePosixPath(name)
    parts = tuple(x for x in p.parts if x not in ("", "."))
    if p.is_absolute() or ".." in parts or (parts and ":" in parts[0]):
        raise DatasetError(f"{source}: unsafe member name {name!r} in the zip (path traversal)")
    long = [x for x in parts if len(x.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES]
    if long:
        raise DatasetError(
            f"{source}: zip member name {long[0][:40]!r}... is {len(long[0])} characters, "
            f"longer than a file name may be ({MAX_NAME_BYTES} bytes)"
        )
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _plan(zf: zipfile.ZipFile, source: str) -> dict[str, list[tuple[zipfile.ZipInfo, str]]]:
    """Traversal name → [(member, file name)] for its JPEGs, after all safety checks."""
    total = 0
    by_folder: dict[tuple[str, ...], list[tuple[zipfile.ZipInfo, str]]] = {}
    for info in zf.infolist():
        parts = _safe_parts(info.filename, source)
        if _is_symlink(info):
            raise DatasetError(f"{source}: zip member {info.filename!r} is a symbolic link")
        total += info.file_size
        if total > MAX_UNCOMPRESSED:
            raise DatasetError(f"{source}: zip expands beyond {MAX_UNCOMPRESSED >> 30} GiB")
        if info.is_dir() or len(parts) < 2 or parts[-1].startswith("."):
            continue
        if parts[-1].lower().endswith((".jpg", ".jpeg")):
            by_folder.setdefault(parts[:-1], []).append((info, parts[-1]))
    plan: dict[str, list[tuple[zipfile.ZipInfo, str]]] = {}
    for folder, members in by_folder.items():
        if len(folder) > 2 or "__macosx" in (f.lower() for f in folder):
            continue
        key = folder[-1].lower().replace(" ", "_").replace("-", "_")
        if key in TRAVERSALS:
            if key in plan:
                raise DatasetError(f"{source}: traversal {key!r} appears twice in the zip")
            plan[key] = members
    missing = [t for t in TRAVERSALS if t not in plan]
    if missing:
        raise DatasetError(
            f"{source}: not the Gardens Point Walking zip: missing folder(s) {', '.join(missing)}"
        )
    for t, members in plan.items():
        if len(members) != IMAGES_PER_TRAVERSAL:
            raise DatasetError(
                f"{source}: {t} has {len(members)} JPEG files, expected {IMAGES_PER_TRAVERSAL}"
            )
        names = [n.lower() for _, n in members]
        if len(set(names)) != len(names):
            raise DatasetError(f"{source}: {t} has duplicate file names")
    return plan


def _extract_verified(zip_path: Path, dest: Path, source: str) -> None:
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{source}: not a valid zip file ({exc})") from exc
    with zf:
        plan = _plan(zf, source)
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise DatasetError(f"{source}: the zip is corrupt ({exc})") from exc
        if bad is not None:
            raise DatasetError(f"{source}: the zip is corrupt (CRC error in {bad!r})")
        try:
            staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial."))
        except OSError as exc:
            raise DatasetError(f"cannot extract {source} into {dest.parent} ({exc})") from None
        try:
            for t, members in plan.items():
                (staging / t).mkdir()
                for info, name in members:
                    data = zf.read(info)
                    if not data.startswith(JPEG_MAGIC):
                        raise DatasetError(f"{source}: {info.filename} is not a JPEG image")
                    (staging / t / name).write_bytes(data)
            if dest.exists():
                # an incomplete earlier copy: replace it (a complete one returned earlier)
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetError(
                f"cannot extract {source} into {dest} ({exc.strerror or exc}); check the "
                "folder's permissions and free space"
            ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
