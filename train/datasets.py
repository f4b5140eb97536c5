"""Training datasets behind one interface: query images, database images, positions.

Adapters: a generic CSV, the NetVLAD ``dbStruct`` ``.mat`` files (docs/DESIGN.md §5.3), and
index-aligned traversals such as Gardens Point (frame index = 1-D position).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfrs_edge.errors import ConfigError
from sfrs_edge.images import list_images


@dataclass
class PlaceSet:
    """One split: query and database images with positions (N, d) in the dataset's units."""

    name: str
    query_paths: list[Path]
    query_pos: np.ndarray
    db_paths: list[Path]
    db_pos: np.ndarray

    def __post_init__(self) -> None:
        self.query_pos = _as_positions(
            self.query_pos, len(self.query_paths), f"{self.name} queries"
        )
        self.db_pos = _as_positions(self.db_pos, len(self.db_paths), f"{self.name} database")
        if not self.db_paths:
            raise ConfigError(f"dataset split {self.name!r} has no database images")
        if self.query_pos.shape[1] != self.db_pos.shape[1]:
            raise ConfigError(f"{self.name}: query and database positions differ in dimension")

    @property
    def num_queries(self) -> int:
        return len(self.query_paths)

    @property
    def num_db(self) -> int:
        return len(self.db_paths)

    def subset_queries(self, keep: np.ndarray) -> PlaceSet:
        keep = np.asarray(keep, dtype=int)
        return PlaceSet(
            self.name,
            [self.query_paths[i] for i in keep],
            self.query_pos[keep],
            self.db_paths,
            self.db_pos,
        )

    def summary(self) -> str:
        return f"{self.name}: {self.num_queries} queries, {self.num_db} database images"


def _as_positions(pos: np.ndarray, n: int, what: str) -> np.ndarray:
    pos = np.asarray(pos, dtype=np.float64)
    pos = pos.reshape(n, -1) if pos.size or n == 0 else pos.reshape(0, 1)
    if len(pos) != n:
        raise ConfigError(f"{what}: {len(pos)} positions for {n} images")
    return pos


# ------------------------------------------------------------------------------------------ CSV
def load_csv(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, PlaceSet]:
    """Generic CSV with columns ``path, role (query|db), split`` and either ``easting,northing``
    or ``position``. Relative paths are resolved against ``root`` (default: the CSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: dataset CSV not found")
    root = Path(root) if root else path.parent
    rows: dict[str, dict[str, list]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if "easting" in cols and "northing" in cols:
            pos_cols = ["easting", "northing"]
        elif "position" in cols:
            pos_cols = ["position"]
        else:
            raise ConfigError(f"{path}: needs columns easting,northing or position")
        missing = {"path", "role", "split"} - cols
        if missing:
            raise ConfigError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            role = row["role"].strip().lower()
            if role not in ("query", "db"):
                raise ConfigError(f"{path}:{line}: role must be 'query' or 'db', got {role!r}")
            try:
                pos = [float(row[c]) for c in pos_cols]
            except ValueError as exc:
                raise ConfigError(f"{path}:{line}: bad position ({exc})") from exc
            split = rows.setdefault(row["split"].strip(), {"qp": [], "qx": [], "dp": [], "dx": []})
            p = Path(row["path"])
            p = p if p.is_absolute() else root / p
            key = "q" if role == "query" else "d"
            split[key + "p"].append(p)
            split[key + "x"].append(pos)
    d = len(pos_cols)
    return {
        name: PlaceSet(
            name,
            s["qp"],
            np.array(s["qx"]).reshape(-1, d),
            s["dp"],
            np.array(s["dx"]).reshape(-1, d),
        )
        for name, s in rows.items()
    }


# --------------------------------------------------------------------------------- dbStruct .mat
# Field positions in the dbStruct tuple (docs/DESIGN.md §5.3).
MAT_LAYOUTS = {
    "pitts": {"db": 1, "utm_db": 2, "q": 3, "utm_q": 4},
    "tokyo247": {"db": 1, "utm_db": 2, "q": 3, "utm_q": 4},
    "tokyotm": {"db": 1, "utm_db": 2, "q": 4, "utm_q": 5},
}


def _strings(arr: np.ndarray) -> list[str]:
    out = []
    for item in np.asarray(arr, dtype=object).ravel():
        while isinstance(item, np.ndarray):
            item = item.ravel()[0] if item.size else ""
        out.append(str(item).strip())
    return out


def _utm(arr: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.shape == (2, n):
        return a.T
    if a.shape == (n, 2):
        return a
    raise ConfigError(f"dbStruct UTM array has shape {a.shape}, expected (2, {n})")


def load_dbstruct(
    path: str | os.PathLike,
    db_root: str | os.PathLike,
    query_root: str | os.PathLike,
    layout: str = "pitts",
    name: str | None = None,
) -> PlaceSet:
    """A NetVLAD ``dbStruct`` .mat (Pittsburgh/Tokyo) read with ``scipy.io.loadmat``."""
    from scipy.io import loadmat

    path = Path(path)
    if layout not in MAT_LAYOUTS:
        raise ConfigError(f"unknown .mat layout {layout!r}; choose one of {sorted(MAT_LAYOUTS)}")
    try:
        fields = loadmat(path)["dbStruct"].item()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: .mat file not found") from exc
    except (KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a NetVLAD dbStruct .mat ({exc})") from exc
    off = MAT_LAYOUTS[layout]
    db = _strings(fields[off["db"]])
    q = _strings(fields[off["q"]])
    if layout == "tokyo247":
        db = [p[:-4] + ".png" if p.endswith(".jpg") else p for p in db]
    return PlaceSet(
        name or path.stem,
        [Path(query_root) / p for p in q],
        _utm(fields[off["utm_q"]], len(q)),
        [Path(db_root) / p for p in db],
        _utm(fields[off["utm_db"]], len(db)),
    )


# ---------------------------------------------------------------------------- index-aligned traversals
def parse_range(spec: str) -> range:
    """``"0-99"`` → range(0, 100) (inclusive end)."""
    try:
        a, b = (int(v) for v in spec.split("-"))
    except ValueError as exc:
        raise ConfigError(f"place range {spec!r} is not START-END (for example 0-99)") from exc
    if b < a or a < 0:
        raise ConfigError(f"place range {spec!r} is empty or negative")
    return range(a, b + 1)


def load_traversals(
    root: str | os.PathLike,
    db: str,
    queries: list[str],
    places: range,
    name: str = "traversal",
) -> PlaceSet:
    """Index-aligned traversals (frame i = place i in every folder); position = frame index."""
    root = Path(root)
    folders = [db, *queries]
    listed = {}
    for folder in folders:
        imgs = list_images(root / folder)
        if places.stop > len(imgs):
            raise ConfigError(
                f"{root / folder}: has {len(imgs)} images, places up to {places.stop - 1} requested"
            )
        listed[folder] = imgs
    idx = np.array(list(places), dtype=np.float64)
    q_paths = [listed[f][i] for f in queries for i in places]
    q_pos = np.concatenate([idx for _ in queries]) if queries else np.zeros(0)
    return PlaceSet(name, q_paths, q_pos, [listed[db][i] for i in places], idx)
