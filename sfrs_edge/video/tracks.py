"""Position tracks (CSV or GPX) and the position of a video frame by its timestamp.

**CSV track**: a header, then one row per fix. Columns (case-insensitive): a time column
(``t``, ``time`` or ``timestamp``) and either ``lat,lon`` or ``x,y`` with optional ``z``;
optional ``heading``. Times are seconds (numbers) or ISO 8601 date-times.
**GPX**: every ``<trkpt lat= lon=>`` with a ``<time>`` child (GPX 1.0 and 1.1), read with
``xml.etree``; positions are lat/lon.

**Time base.** Numeric times are seconds of the video (0 = the first frame). Date-times (and
all GPX times) count from the track's first fix, i.e. the track is assumed to start with the
video; ``offset`` (seconds, added to the video time) aligns them otherwise.

**Interpolation** (:meth:`Track.at`): linear between the two fixes around the frame's time
(heading along the shorter arc). Explicit refusals, each with a reason:

- ``outside``: the time is before the first or after the last fix (no extrapolation);
- ``gap``: the two fixes around it are more than ``max_gap`` seconds apart (GPS outage,
  tunnel): a straight line across the gap would be a guess.

Fixes are sorted by time; a fix at the same time as an earlier one is dropped (first kept).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..bounded_read import display_name, read_bounded
from ..errors import ConfigError
from ..maps.poses import (
    MAX_TABLE_BYTES,
    Pose,
    find_columns,
    parse_number,
    position_columns,
    read_csv_table,
)

DEFAULT_MAX_GAP = 5.0


def _parse_time(text: str, where: str) -> tuple[float, bool]:
    """(seconds, is_absolute): a number of seconds, or an ISO 8601 date-time (UTC if naive)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ConfigError(f"{where}: time {text!r} is not a finite number of seconds")
        return seconds, False
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp(), True
    except (ValueError, OverflowError):
        raise ConfigError(
            f"{where}: time {text[:80]!r} is neither seconds nor an ISO 8601 date-time"
        ) from None


def _check_latlon(lat: float, lon: float, where: str) -> None:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ConfigError(f"{where}: lat/lon {lat}, {lon} out of range")


@dataclass(frozen=True)
class TrackPosition:
    """Result of :meth:`Track.at`: a pose, or None with ``reason`` ``outside`` / ``gap``."""

    pose: Pose | None
    reason: str | None = None


class Track:
    """Timed positions. Build with :meth:`read` (CSV or GPX by suffix) or directly."""

    def __init__(
        self,
        times: np.ndarray,
        positions: np.ndarray,
        kind: str,
        headings: np.ndarray | None = None,
        source: str = "track",
    ) -> None:
        times = np.asarray(times, np.float64)
        positions = np.asarray(positions, np.float64).reshape(len(times), -1)
        if len(times) == 0:
            raise ConfigError(f"{source}: track has no fixes")
        if not (np.isfinite(times).all() and np.isfinite(positions).all()):
            raise ConfigError(f"{source}: track has non-finite times or positions")
        order = np.argsort(times, kind="stable")
        times, positions = times[order], positions[order]
        headings = None if headings is None else np.asarray(headings, np.float64)[order]
        keep = np.ones(len(times), bool)
        keep[1:] = np.diff(times) > 0  # duplicate times: the first fix wins
        self.times = times[keep]
        self.positions = positions[keep]
        self.headings = None if headings is None else headings[keep]
        self.kind = kind
        self.source = source

    def __len__(self) -> int:
        return len(self.times)

    def __repr__(self) -> str:
        return (
            f"Track({self.source}, {len(self)} fixes, {self.kind}, "
            f"{self.times[0]:.2f}..{self.times[-1]:.2f} s)"
        )

    # --- reading ----------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | os.PathLike) -> Track:
        """A ``.gpx`` file, else a CSV track."""
        path = Path(path)
        return cls.read_gpx(path) if path.suffix.lower() == ".gpx" else cls.read_csv(path)

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> Track:
        path = Path(path)
        header, rows = read_csv_table(path, "track")
        src = display_name(path)
        col = find_columns(header, src)
        if "timestamp" not in col:
            raise ConfigError(f"{src}: line 1: a track needs a time column (t, time, timestamp)")
        kind, keys = position_columns(col, src)
        times, pos, heads, absolute = [], [], [], set()
        for lineno, row in rows:
            where = f"{src}: line {lineno}"
            t, is_abs = _parse_time(row[col["timestamp"]], where)
            absolute.add(is_abs)
            pos.append([parse_number(row[col[k]], k, where) for k in keys])
            if kind == "latlon":
                _check_latlon(pos[-1][0], pos[-1][1], where)
            h = row[col["heading"]].strip() if "heading" in col else ""
            heads.append(parse_number(h, "heading", where) if h else math.nan)
            times.append(t)
        if not times:
            raise ConfigError(f"{src}: track has a header but no rows")
        if len(absolute) > 1:
            raise ConfigError(f"{src}: mixes numeric seconds and date-times in the time column")
        times_a = np.asarray(times)
        if absolute == {True}:
            times_a = times_a - times_a.min()
        headings = np.asarray(heads) if "heading" in col else None
        return cls(times_a, np.asarray(pos), kind, headings, source=src)

    @classmethod
    def read_gpx(cls, path: str | os.PathLike) -> Track:
        path = Path(path)
        src = display_name(path)
        data = read_bounded(path, MAX_TABLE_BYTES, "GPX", ConfigError)
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise ConfigError(f"{src}: not valid GPX/XML ({exc})") from None
        times, pos = [], []
        for n, pt in enumerate(e for e in root.iter() if str(e.tag).rsplit("}", 1)[-1] == "trkpt"):
            where = f"{src}: track point {n + 1}"
            t = next((c.text for c in pt if str(c.tag).rsplit("}", 1)[-1] == "time"), None)
            if not t:
                raise ConfigError(f"{where}: has no <time>; a track needs times to match frames")
            lat, lon = pt.attrib.get("lat"), pt.attrib.get("lon")
            if lat is None or lon is None:
                raise ConfigError(f"{where}: missing lat/lon attributes")
            ll = [parse_number(lat, "lat", where), parse_number(lon, "lon", where)]
            _check_latlon(ll[0], ll[1], where)
            pos.append(ll)
            times.append(_parse_time(t, where)[0])
        if not times:
            raise ConfigError(f"{src}: no <trkpt> points with times")
        times_a = np.asarray(times)
        return cls(times_a - times_a.min(), np.asarray(pos), "latlon", source=src)

    # --- interpolation ----------------------------------------------------------------

    def at(self, t: float, max_gap: float = DEFAULT_MAX_GAP, offset: float = 0.0) -> TrackPosition:
        """Pose at video time ``t`` (+ ``offset``), or None with the reason (see module doc)."""
        t = float(t) + offset
        times = self.times
        if t < times[0] or t > times[-1]:
            return TrackPosition(None, "outside")
        j = int(np.searchsorted(times, t, side="left"))
        if times[j] == t:
            return TrackPosition(self._pose(j, j, 0.0, t))
        i = j - 1
        if times[j] - times[i] > max_gap:
            return TrackPosition(None, "gap")
        w = (t - times[i]) / (times[j] - times[i])
        return TrackPosition(self._pose(i, j, w, t))

    def _pose(self, i: int, j: int, w: float, t: float) -> Pose:
        p = (1 - w) * self.positions[i] + w * self.positions[j]
        heading = None
        if self.headings is not None:
            a, b = self.headings[i], self.headings[j]
            if np.isfinite(a) and np.isfinite(b):
                heading = float((a + w * ((b - a + 180.0) % 360.0 - 180.0)) % 360.0)
            elif np.isfinite(a) or np.isfinite(b):
                heading = float(a if (w < 0.5 and np.isfinite(a)) or not np.isfinite(b) else b)
        return Pose(tuple(float(v) for v in p), self.kind, heading, f"{t:.3f}")
