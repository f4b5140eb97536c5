"""Per-image metadata of a map in SQLite: one row per map image, ``id`` = descriptor row.

Writing a segment's database (:func:`write_metadata`) and reading the places of an opened map
(:class:`MetadataReader`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MapError

SCHEMA_VERSION = 1
POSITION_KINDS = ("xy", "xyz", "latlon")
_CHUNK = 500  # ids or names per SQL query (SQLite's limit on bound parameters is 999)

_SCHEMA = """
CREATE TABLE places (
    id INTEGER PRIMARY KEY,        -- row of descriptors.npy
    name TEXT NOT NULL UNIQUE,     -- image file name: the stable key users refer to
    path TEXT NOT NULL,            -- source path when the image was added
    position_kind TEXT CHECK (position_kind IN ('xy', 'xyz', 'latlon')),
    x REAL, y REAL, z REAL,        -- position_kind xy / xyz
    lat REAL, lon REAL,            -- position_kind latlon (degrees, WGS84)
    heading REAL,                  -- degrees, when known
    timestamp TEXT,                -- as given by the CSV or EXIF
    sequence TEXT,                 -- source video of a keyframe (maps built from video)
    frame INTEGER,                 -- frame number within the sequence
    keyframe INTEGER               -- 1 when selected as a keyframe
);
CREATE TABLE info (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True)
class Place:
    """One map image: what a search result points to."""

    id: int
    name: str
    path: str
    position: tuple[float, ...] | None = None
    position_kind: str | None = None  # "xy" | "xyz" | "latlon" | None
    heading: float | None = None
    timestamp: str | None = None
    sequence: str | None = None  # source video (maps built from video)
    frame: int | None = None  # frame number within that video


def _row(p: Place) -> tuple:
    pos = p.position
    xyz = (None, None, None)
    latlon = (None, None)
    if pos is not None:
        if p.position_kind == "latlon":
            latlon = (pos[0], pos[1])
        elif p.position_kind in ("xy", "xyz"):
            xyz = (pos[0], pos[1], pos[2] if len(pos) > 2 else None)
        else:
            raise MapError(f"{p.name}: unknown position kind {p.position_kind!r}")
    kind = p.position_kind if pos is not None else None
    keyframe = 1 if p.sequence is not None else None
    return (p.id, p.name, p.path, kind, *xyz, *latlon, p.heading, p.timestamp) + (
        p.sequence,
        p.frame,
        keyframe,
    )


def write_metadata(path: Path, places: list[Place]) -> None:
    """Write a fresh metadata database (``path`` must not exist)."""
    con = sqlite3.connect(path)
    try:
        con.executescript(_SCHEMA)
        con.execute("INSERT INTO info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        con.executemany(
            "INSERT INTO places (id, name, path, position_kind, x, y, z, lat, lon, heading, "
            "timestamp, sequence, frame, keyframe) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_row(p) for p in places],
        )
        con.commit()
    except sqlite3.IntegrityError as exc:
        raise MapError(f"map metadata: {exc} (image names must be unique)") from None
    finally:
        con.close()


_COLUMNS = "id, name, path, position_kind, x, y, z, lat, lon, heading, timestamp, sequence, frame"


def select_columns() -> str:
    """The columns :func:`place_from_row` expects, in order."""
    return _COLUMNS


def place_from_row(row: tuple) -> Place:
    pid, name, src, kind, x, y, z, lat, lon, heading, ts, seq, frame = row
    if kind == "latlon":
        pos = (lat, lon)
    elif kind == "xy":
        pos = (x, y)
    elif kind == "xyz":
        pos = (x, y, z)
    else:
        pos = None
    return Place(pid, name, src, pos, kind, heading, ts, seq, frame)


def sqlite_readonly(path: str) -> sqlite3.Connection:
    """Open an SQLite file read-only whatever characters its path holds (``%``, ``#``, ``?``):
    the path is percent-encoded into the URI, so it can never name another file or create one."""
    uri = "file:" + urllib.parse.quote(os.fspath(path), safe="/") + "?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def read_metadata(path: Path) -> list[Place]:
    """All places of a metadata file, ordered by id (MapError when unreadable)."""
    try:
        con = sqlite_readonly(str(path))
        rows = con.execute(f"SELECT {_COLUMNS} FROM places ORDER BY id").fetchall()
        con.close()
    except sqlite3.Error as exc:
        raise MapError(f"{path}: map metadata is corrupt ({exc}); rebuild the map") from None
    return [place_from_row(r) for r in rows]


class MetadataReader:
    """The places of an opened map: SQL over its segments' read-only connections, in row order
    (thread-safe: one lock serialises the connections)."""

    def __init__(self, connections: list[sqlite3.Connection | None], where: str) -> None:
        self.connections = connections
        self.where = where
        self._lock = threading.Lock()
        self._names: list[str] | None = None

    def query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        """Rows of ``sql`` from every segment, segment after segment (MapError when corrupt)."""
        args = list(args)
        out: list[tuple] = []
        with self._lock:
            for con in self.connections:
                if con is None:
                    raise MapError(f"{self.where}: this map has no metadata (in-memory map)")
                try:
                    out += con.execute(sql, args).fetchall()
                except sqlite3.Error as exc:
                    raise MapError(f"{self.where}: map metadata is corrupt ({exc})") from None
        return out

    def names(self) -> list[str]:
        """Every place's name, by id (read once)."""
        if self._names is None:
            self._names = [r[0] for r in self.query("SELECT name FROM places ORDER BY id")]
        return list(self._names)

    def all_places(self) -> list[Place]:
        return [place_from_row(r) for r in self.query(f"SELECT {_COLUMNS} FROM places")]

    def find_names(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` the map holds (an indexed lookup; cheap on large maps)."""
        names = list(names)
        found = []
        for a in range(0, len(names), _CHUNK):
            chunk = names[a : a + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found += [
                r[0] for r in self.query(f"SELECT name FROM places WHERE name IN ({marks})", chunk)
            ]
        return found

    def positions(self, kind: str | None, count: int) -> np.ndarray:
        """(count, d) float64 positions (d = 2 or 3), NaN rows where unknown; (count, 0) when
        the map has none (``kind`` None)."""
        d = 3 if kind == "xyz" else (2 if kind in ("xy", "latlon") else 0)
        out = np.full((count, d), np.nan)
        if d:
            cols = "lat, lon, NULL" if kind == "latlon" else "x, y, z"
            rows = self.query(f"SELECT id, {cols} FROM places WHERE position_kind IS NOT NULL")
            if rows:
                arr = np.array([[np.nan if v is None else v for v in r] for r in rows], np.float64)
                out[arr[:, 0].astype(np.int64)] = arr[:, 1 : 1 + d]
        return out

    def places(self, ids: np.ndarray) -> list[Place]:
        """The places with these (checked) ids, in the order given."""
        found: dict[int, Place] = {}
        for a in range(0, len(ids), _CHUNK):
            chunk = sorted({int(i) for i in ids[a : a + _CHUNK]})
            marks = ",".join("?" * len(chunk))
            rows = self.query(f"SELECT {_COLUMNS} FROM places WHERE id IN ({marks})", chunk)
            found.update((r[0], place_from_row(r)) for r in rows)
        try:
            return [found[int(i)] for i in ids]
        except KeyError as exc:
            raise MapError(f"{self.where}: metadata lacks place {exc}; rebuild the map") from None
