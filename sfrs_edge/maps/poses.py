"""Positions of map images: a CSV file, or EXIF GPS tags in JPEG files.

CSV: a header row, then one row per image. Columns (case-insensitive):
``name`` (image file name, or its stem), then either ``lat,lon`` (degrees) or ``x,y`` with
optional ``z``, and optionally ``heading`` (degrees) and ``timestamp`` (kept as text).
Any malformed row raises :class:`ConfigError` naming the file and line.

EXIF: a small standard-library reader of the JPEG APP1 ``Exif`` segment (GPS IFD latitude,
longitude, image direction, and DateTimeOriginal). No Pillow at run time: it would be a
dependency only for these few tags.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from ..bounded_read import display_name, read_bounded
from ..errors import ConfigError

log = logging.getLogger(__name__)

_ALIASES = {
    "name": ("name", "image", "filename", "file"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "x": ("x",),
    "y": ("y",),
    "z": ("z",),
    "heading": ("heading", "yaw", "bearing"),
    "timestamp": ("timestamp", "time", "t"),
}


@dataclass(frozen=True)
class Pose:
    """Where one image was taken."""

    position: tuple[float, ...]
    kind: str  # "xy" | "xyz" | "latlon"
    heading: float | None = None
    timestamp: str | None = None


def find_columns(header: list[str], source: str) -> dict[str, int]:
    """Column index of every known field in a CSV header (aliases, case-insensitive)."""
    norm = [h.strip().lower() for h in header]
    cols: dict[str, int] = {}
    for key, names in _ALIASES.items():
        hits = [i for i, h in enumerate(norm) if h in names]
        if len(hits) > 1:
            raise ConfigError(f"{source}: line 1: more than one column for {key!r}")
        if hits:
            cols[key] = hits[0]
    return cols


def position_columns(cols: dict[str, int], source: str) -> tuple[str, tuple[str, ...]]:
    """(kind, keys) of the position columns: ``latlon`` (lat, lon) or ``xy``/``xyz``."""
    has_ll = "lat" in cols or "lon" in cols
    has_xy = "x" in cols or "y" in cols
    if has_ll and has_xy:
        raise ConfigError(f"{source}: line 1: give either lat,lon or x,y[,z] columns, not both")
    if has_ll and not ("lat" in cols and "lon" in cols):
        raise ConfigError(f"{source}: line 1: needs both 'lat' and 'lon' columns")
    if has_xy and not ("x" in cols and "y" in cols):
        raise ConfigError(f"{source}: line 1: needs both 'x' and 'y' columns")
    if not (has_ll or has_xy):
        raise ConfigError(f"{source}: line 1: no position columns (lat,lon or x,y[,z])")
    if "z" in cols and not has_xy:
        raise ConfigError(f"{source}: line 1: 'z' needs 'x' and 'y'")
    if has_ll:
        return "latlon", ("lat", "lon")
    return ("xyz", ("x", "y", "z")) if "z" in cols else ("xy", ("x", "y"))


def parse_number(text: str, what: str, where: str) -> float:
    """A finite float from a CSV cell, or a ConfigError naming the place and the field."""
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: {what} is {text.strip()!r}; expected a finite number")
    return value


MAX_TABLE_BYTES = 512 * 2**20  # a CSV of millions of rows; far beyond any real track


def read_csv_table(path: Path, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, row)]) of a CSV file; blank lines skipped, field counts checked.

    Only a regular UTF-8 file of at most :data:`MAX_TABLE_BYTES` is read; fields over the
    ``csv`` module's limit (128 KiB), NUL bytes and bad quoting raise :class:`ConfigError`
    naming the file and line.
    """
    data = read_bounded(path, MAX_TABLE_BYTES, what, ConfigError)
    name = display_name(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{name}: line {line}: {what} file is not UTF-8 text (byte {data[exc.start]:#04x})"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header:
            raise ConfigError(f"{name}: {what} file is empty (expected a header row)")
        rows = []
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ConfigError(
                    f"{name}: line {lineno}: {len(row)} fields, the header has {len(header)}"
                )
            rows.append((lineno, row))
    except csv.Error as exc:
        raise ConfigError(f"{name}: line {reader.line_num}: not valid CSV ({exc})") from None
    return header, rows


def read_poses_csv(path: str | os.PathLike) -> dict[str, Pose]:
    """Read a positions CSV into ``{name: Pose}``. Blank lines are ignored."""
    path = Path(path)
    header, rows = read_csv_table(path, "positions")
    src = display_name(path)
    cols = find_columns(header, src)
    if "name" not in cols:
        raise ConfigError(f"{src}: line 1: header needs a 'name' column (got {header})")
    kind, keys = position_columns(cols, src)
    out: dict[str, Pose] = {}
    for lineno, row in rows:
        where = f"{src}: line {lineno}"
        name = row[cols["name"]].strip()
        if not name:
            raise ConfigError(f"{where}: empty image name")
        if name in out:
            raise ConfigError(f"{where}: image {name!r} listed twice")
        pos = []
        for key in keys:
            cell = row[cols[key]]
            if not cell.strip():
                raise ConfigError(f"{where}: missing {key} for {name!r}")
            pos.append(parse_number(cell, key, where))
        if kind == "latlon" and not (-90 <= pos[0] <= 90 and -180 <= pos[1] <= 180):
            raise ConfigError(f"{where}: lat/lon {pos[0]}, {pos[1]} out of range")
        heading = None
        if "heading" in cols and row[cols["heading"]].strip():
            heading = parse_number(row[cols["heading"]], "heading", where)
        ts = (row[cols["timestamp"]].strip() or None) if "timestamp" in cols else None
        out[name] = Pose(tuple(pos), kind, heading, ts)
    if not out:
        raise ConfigError(f"{src}: positions file has a header but no rows")
    return out


def match_poses(
    names: list[str], poses: dict[str, Pose], source: str, allow_missing: bool = False
) -> list[Pose | None]:
    """Pose of each image name (matched by file name, then by stem).

    Images without a row are an error listing them, unless ``allow_missing`` (then None).
    """
    stems: dict[str, list[str]] = {}
    for key in poses:
        stems.setdefault(Path(key).stem, []).append(key)
    out: list[Pose | None] = []
    missing = []
    for name in names:
        key = name if name in poses else None
        if key is None:
            hits = stems.get(Path(name).stem, [])
            if len(hits) > 1:
                raise ConfigError(
                    f"{source}: image {name!r} matches rows {hits[0]!r} and {hits[1]!r} by its "
                    "stem; name the file exactly in one row (no silent choice)"
                )
            key = hits[0] if hits else None
        if key is None:
            missing.append(name)
        out.append(poses.get(key) if key is not None else None)
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise ConfigError(
            f"{source}: no position for {len(missing)} of {len(names)} images ({shown}); "
            "add rows for them or pass --allow-missing-poses"
        )
    return out


# --- EXIF GPS -----------------------------------------------------------------------------

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}
_TAG_EXIF_IFD, _TAG_GPS_IFD, _TAG_DATETIME_ORIGINAL = 0x8769, 0x8825, 0x9003


def _exif_segment(fh) -> bytes | None:
    """The TIFF payload of the first APP1 ``Exif`` segment of a JPEG, or None."""
    if fh.read(2) != b"\xff\xd8":
        return None
    while True:
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        code = marker[1]
        if code in (0xD9, 0xDA):  # end of image / start of scan: no more metadata
            return None
        if code == 0x01 or 0xD0 <= code <= 0xD7:
            continue
        size_bytes = fh.read(2)
        if len(size_bytes) < 2:
            return None
        size = struct.unpack(">H", size_bytes)[0] - 2
        if size < 0:
            return None
        data = fh.read(size)
        if code == 0xE1 and data.startswith(b"Exif\x00\x00"):
            return data[6:]


def _ifd(tiff: bytes, offset: int, endian: str) -> dict[int, object]:
    """Tags of one IFD: {tag: value}; rationals as floats, ASCII as str, else tuples."""
    out: dict[int, object] = {}
    if offset + 2 > len(tiff):
        return out
    (count,) = struct.unpack_from(endian + "H", tiff, offset)
    for i in range(count):
        entry = offset + 2 + 12 * i
        if entry + 12 > len(tiff):
            break
        tag, typ, n = struct.unpack_from(endian + "HHI", tiff, entry)
        size = _TYPE_SIZES.get(typ)
        if size is None:
            continue
        nbytes = size * n
        if nbytes <= 4:
            start = entry + 8
        else:
            (start,) = struct.unpack_from(endian + "I", tiff, entry + 8)
        if start + nbytes > len(tiff):
            continue
        raw = tiff[start : start + nbytes]
        if typ == 2:
            out[tag] = raw.split(b"\x00", 1)[0].decode("ascii", "replace")
        elif typ in (5, 10):
            fmt = endian + ("II" if typ == 5 else "ii") * n
            vals = struct.unpack(fmt, raw)
            out[tag] = tuple(
                a / b if b else math.nan for a, b in zip(vals[::2], vals[1::2], strict=True)
            )
        else:
            fmt = {1: "B", 7: "B", 3: "H", 4: "I", 9: "i"}[typ]
            out[tag] = struct.unpack(endian + fmt * n, raw)
    return out


def _dms(value: object) -> float | None:
    """Degrees from an EXIF (degrees, minutes, seconds) rational triple; None if malformed."""
    if not isinstance(value, tuple) or not 1 <= len(value) <= 3:
        return None
    if not all(isinstance(v, float) for v in value):
        return None  # not RATIONAL-typed: a tag written wrongly
    parts = list(value) + [0.0] * (3 - len(value))
    deg = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    return deg if math.isfinite(deg) else None


def _offset(value: object) -> int | None:
    """An IFD pointer: one LONG/SHORT value, else None (e.g. a pointer typed as text)."""
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], int):
        return value[0]
    return None


def _ref(value: object, default: str) -> str:
    return value.strip().upper()[:1] if isinstance(value, str) and value.strip() else default


def read_exif_gps(path: str | os.PathLike) -> Pose | None:
    """Latitude/longitude (and image direction, DateTimeOriginal) from a JPEG's EXIF, or None.

    Never raises for odd, mistyped or truncated metadata: an image without usable GPS gives
    None (logged at debug level with the reason).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            tiff = _exif_segment(fh)
    except OSError:
        return None
    if not tiff or len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    endian = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd0_offset,) = struct.unpack_from(endian + "I", tiff, 4)
        ifd0 = _ifd(tiff, ifd0_offset, endian)
        gps_offset = _offset(ifd0.get(_TAG_GPS_IFD))
        if gps_offset is None:
            if _TAG_GPS_IFD in ifd0:
                log.debug("%s: EXIF GPS pointer has a wrong type; no GPS", display_name(path))
            return None
        gps = _ifd(tiff, gps_offset, endian)
        lat, lon = _dms(gps.get(2)), _dms(gps.get(4))
        if lat is None or lon is None:
            return None
        if _ref(gps.get(1), "N") == "S":
            lat = -lat
        if _ref(gps.get(3), "E") == "W":
            lon = -lon
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return None
        heading = gps.get(17)
        heading = (
            heading[0]
            if isinstance(heading, tuple)
            and len(heading) == 1
            and isinstance(heading[0], float)
            and math.isfinite(heading[0])
            else None
        )
        ts = None
        exif_offset = _offset(ifd0.get(_TAG_EXIF_IFD))
        if exif_offset is not None:
            ts = _ifd(tiff, exif_offset, endian).get(_TAG_DATETIME_ORIGINAL)
    except struct.error:
        return None
    return Pose((lat, lon), "latlon", heading, ts if isinstance(ts, str) and ts else None)
