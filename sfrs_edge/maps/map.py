"""A built map, opened for search: segments of descriptors + metadata (+ extras), and an index.

Layout and what opening checks: ``docs/MAPS.md``. Rows ``0 .. indexed-1`` of an HNSW map live
only in ``index.bin`` (vectors held once); later rows (added since the index was last folded)
are segment descriptor files searched exactly, and the two result lists are merged.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, MapError
from .index import ExactIndex, HnswIndex, IndexConfig, check_k, similarities, top_k
from .manifest import INDEX
from .metadata import Place, place_from_row, select_columns, sqlite_readonly
from .snapshot import MissingFile, Snapshot, check_hnsw_header, read_npy
from .store import resolve

log = logging.getLogger(__name__)
OPEN_ATTEMPTS = 4  # a generation swapped in while we read is read again, up to this often


@dataclass
class Segment:
    """Rows ``start .. start+rows-1`` of a map: their descriptors (None when held only by the
    HNSW index), metadata connection and extra arrays (memory-mapped)."""

    start: int
    rows: int
    descriptors: np.ndarray | None
    metadata: sqlite3.Connection | None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    entry: dict[str, Any] = field(default_factory=dict)

    @property
    def stop(self) -> int:
        return self.start + self.rows


class Map:
    """An opened map. Create with :meth:`Map.open`; search with :meth:`search`.

    Ids are rows: stable while the map is unchanged and across ``map add`` (new images get
    new ids at the end); ``map remove`` renumbers the rows after the removed ones. Image names
    are the stable keys across all updates. Searching is thread-safe.
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        segments: list[Segment],
        index: HnswIndex | None,
        folder: Path | None = None,
    ) -> None:
        self.path = path
        self.folder = folder or path  # the directory actually read (see store.resolve)
        self.manifest = manifest
        self.segments = segments
        self._hnsw = index
        self._count = sum(s.rows for s in segments)
        self._indexed = int(manifest.get("indexed", 0)) if index is not None else 0
        blocks = [s.descriptors for s in segments if s.stop > self._indexed]
        self._exact = ExactIndex(blocks) if blocks else None
        self._db_lock = threading.Lock()
        self._cache: dict[str, Any] = {}

    @classmethod
    def from_arrays(cls, descriptors: np.ndarray, index: HnswIndex | None = None) -> Map:
        """An in-memory map over ``descriptors`` (no metadata; benchmarks, tests)."""
        n, dim = descriptors.shape
        manifest = {"dim": dim, "count": n, "indexed": n if index is not None else 0}
        manifest["index"] = {"type": "hnsw" if index is not None else "exact"}
        manifest["model"] = {"fingerprint": None}
        seg = Segment(0, n, descriptors if index is None else None, None)
        return cls(Path("<in-memory>"), manifest, [seg], index)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        expect_fingerprint: str | None = None,
        verify: bool | str = True,
        load_index: bool = True,
    ) -> Map:
        """Open and check a map directory as one consistent generation.

        ``verify``: ``True`` checks every file's sha256 unless that exact file version was
        verified before (:mod:`.checksums`); ``"full"`` always rehashes; ``False`` checks sizes
        and headers only. Refuses (``MapError``) a missing, malformed or corrupt map (naming
        the file or manifest field), an unsupported format version, and a map built by a model
        whose fingerprint differs from ``expect_fingerprint``. ``load_index=False`` leaves
        the HNSW graph unloaded (writers that only append); such a map cannot search.
        """
        requested = Path(path).expanduser()
        missing = None
        for attempt in range(OPEN_ATTEMPTS):
            folder = resolve(requested)
            try:
                return cls._load(folder, requested, expect_fingerprint, verify, load_index)
            except FileNotFoundError as exc:
                if not resolve(requested).exists():
                    raise MapError(f"{requested}: no such map directory") from None
                missing = str(exc) if isinstance(exc, MissingFile) else None
                time.sleep(0.05 * attempt)  # swapped while we read it: read the new one
        if missing is not None:  # still missing after every retry: the map is incomplete
            raise MapError(missing)
        raise MapError(
            f"{requested}: the map was replaced {OPEN_ATTEMPTS} times while it was opened "
            "(is something rebuilding it in a loop?); try again"
        )

    @classmethod
    def _load(
        cls,
        folder: Path,
        requested: Path,
        expect_fingerprint: str | None,
        verify: bool | str,
        load_index: bool,
    ) -> Map:
        where = str(requested)
        if not folder.exists():
            raise FileNotFoundError(folder)
        with Snapshot(folder, where) as snap:
            manifest = snap.manifest()
            model_fp = manifest["model"].get("fingerprint")
            if expect_fingerprint is not None and model_fp != expect_fingerprint:
                raise MapError(
                    f"{where}: map was built with model fingerprint {model_fp} "
                    f"({manifest['model'].get('backbone')}, {manifest['dim']}-d) but the model "
                    f"in use has fingerprint {expect_fingerprint}; rebuild the map with this "
                    "model (`sfrs-edge map build`) or use the model that built it"
                )
            fds = snap.check_files(manifest, verify)
            dim, dtype = manifest["dim"], np.dtype(manifest.get("dtype", "float32"))
            specs = manifest.get("extras", {})
            segments, start = [], 0
            for entry in manifest["segments"]:
                rows = entry["rows"]
                desc = None
                if entry["descriptors"] is not None:
                    name = entry["descriptors"]
                    desc = read_npy(fds[name], name, where)
                    if desc.shape != (rows, dim) or desc.dtype != dtype:
                        raise MapError(
                            f"{where}: {name} is {desc.dtype} {desc.shape}, the manifest says "
                            f"{dtype} ({rows}, {dim}); rebuild the map"
                        )
                extras = {}
                for xname, fname in entry.get("extras", {}).items():
                    arr = read_npy(fds[fname], fname, where)
                    spec = specs[xname]
                    if arr.shape != (rows, *spec["shape"]) or arr.dtype != np.dtype(spec["dtype"]):
                        raise MapError(
                            f"{where}: {fname} is {arr.dtype} {arr.shape}, the manifest says "
                            f"{spec['dtype']} ({rows}, {', '.join(map(str, spec['shape']))}); "
                            "rebuild the map"
                        )
                    extras[xname] = arr
                meta = entry["metadata"]
                con = _open_metadata(folder, fds[meta], meta, where, start, rows)
                segments.append(Segment(start, rows, desc, con, extras, entry))
                start += rows
            index = None
            config = IndexConfig.from_manifest(manifest["index"])
            if config.type == "hnsw":
                indexed = manifest["indexed"]
                check_hnsw_header(fds[INDEX], dim, indexed, config.M, f"{where}: {INDEX}")
                if load_index:
                    index = HnswIndex.load(snap.path(fds[INDEX], INDEX), dim, indexed, config)
        return cls(requested, manifest, segments, index, folder)

    # --- facts --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def dtype(self) -> str:
        return str(self.manifest.get("dtype", "float32"))

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["model"]["fingerprint"])

    @property
    def index_type(self) -> str:
        return str(self.manifest["index"]["type"])

    @property
    def index(self) -> HnswIndex | ExactIndex | None:
        """The HNSW index (HNSW maps) or the exact index over all rows."""
        return self._hnsw if self.index_type == "hnsw" else self._exact

    @property
    def indexed(self) -> int:
        """Rows held in the HNSW index (0 for exact maps); later rows are searched exactly."""
        return int(self.manifest.get("indexed", 0))

    @property
    def position_kind(self) -> str | None:
        return (self.manifest.get("positions") or {}).get("kind")

    @property
    def extras(self) -> list[str]:
        """Names of the per-place extra arrays (e.g. re-ranking local features)."""
        return sorted(self.manifest.get("extras", {}))

    def extra(self, name: str) -> np.ndarray:
        """Extra array ``name``, shape (count, *per-place shape): memory-mapped when the map
        has one segment, else the segments concatenated (use :meth:`extra_rows` for a few)."""
        if name not in self.manifest.get("extras", {}):
            raise MapError(f"{self.path}: no extra array {name!r} (has {self.extras or 'none'})")
        parts = [s.extras[name] for s in self.segments]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def extra_rows(self, name: str, ids: Iterable[int]) -> np.ndarray:
        """Rows ``ids`` of extra array ``name`` (read from the memory maps)."""
        if name not in self.manifest.get("extras", {}):
            raise MapError(f"{self.path}: no extra array {name!r} (has {self.extras or 'none'})")
        ids = self._check_ids(ids)
        spec = self.manifest["extras"][name]
        out = np.empty((len(ids), *spec["shape"]), np.dtype(spec["dtype"]))
        for seg, sel, local in self._by_segment(ids):
            out[sel] = seg.extras[name][local]
        return out

    @property
    def names(self) -> list[str]:
        if "names" not in self._cache:
            rows = self._query("SELECT name FROM places ORDER BY id")
            self._cache["names"] = [r[0] for r in rows]
        return list(self._cache["names"])

    def all_places(self) -> list[Place]:
        return [place_from_row(r) for r in self._query(f"SELECT {select_columns()} FROM places")]

    def find_names(self, names: Iterable[str]) -> list[str]:
        """Which of ``names`` the map holds (an indexed lookup; cheap on large maps)."""
        names = list(names)
        found = []
        for a in range(0, len(names), 500):
            chunk = names[a : a + 500]
            marks = ",".join("?" * len(chunk))
            found += [
                r[0] for r in self._query(f"SELECT name FROM places WHERE name IN ({marks})", chunk)
            ]
        return found

    def positions(self) -> np.ndarray:
        """(N, d) float64 positions (d = 2 or 3), NaN rows where unknown; (N, 0) when none."""
        kind = self.position_kind
        d = 3 if kind == "xyz" else (2 if kind in ("xy", "latlon") else 0)
        out = np.full((len(self), d), np.nan)
        if d:
            cols = "lat, lon, NULL" if kind == "latlon" else "x, y, z"
            rows = self._query(f"SELECT id, {cols} FROM places WHERE position_kind IS NOT NULL")
            if rows:
                arr = np.array([[np.nan if v is None else v for v in r] for r in rows], np.float64)
                out[arr[:, 0].astype(np.int64)] = arr[:, 1 : 1 + d]
        return out

    def __repr__(self) -> str:
        return (
            f"Map({self.path}, {len(self)} images, {self.dim}-d, {self.index_type}, "
            f"model {self.fingerprint})"
        )

    # --- rows ---------------------------------------------------------------------------

    def _query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        args = list(args)
        out: list[tuple] = []
        with self._db_lock:
            for seg in self.segments:
                if seg.metadata is None:
                    raise MapError(f"{self.path}: this map has no metadata (in-memory map)")
                try:
                    out += seg.metadata.execute(sql, args).fetchall()
                except sqlite3.Error as exc:
                    raise MapError(f"{self.path}: map metadata is corrupt ({exc})") from None
        return out

    def _check_ids(self, ids: Iterable[int]) -> np.ndarray:
        arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).ravel()
        if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() >= len(self)):
            bad = [int(i) for i in arr if not 0 <= int(i) < len(self)][:1] or [arr[0]]
            raise MapError(f"place id {bad[0]} is not in this map (0..{len(self) - 1})")
        return arr.astype(np.int64)

    def _by_segment(self, ids: np.ndarray) -> Iterator[tuple[Segment, np.ndarray, np.ndarray]]:
        for seg in self.segments:
            sel = np.flatnonzero((ids >= seg.start) & (ids < seg.stop))
            if len(sel):
                yield seg, sel, ids[sel] - seg.start

    def places(self, ids: Iterable[int]) -> list[Place]:
        """The places with these ids (e.g. one row of :meth:`search`'s ids)."""
        arr = self._check_ids(ids)
        found: dict[int, Place] = {}
        for a in range(0, len(arr), 500):
            chunk = sorted({int(i) for i in arr[a : a + 500]})
            marks = ",".join("?" * len(chunk))
            rows = self._query(
                f"SELECT {select_columns()} FROM places WHERE id IN ({marks})", chunk
            )
            found.update((r[0], place_from_row(r)) for r in rows)
        try:
            return [found[int(i)] for i in arr]
        except KeyError as exc:
            raise MapError(f"{self.path}: metadata lacks place {exc}; rebuild the map") from None

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """float32 descriptors of rows ``ids`` (from the segments or the HNSW index)."""
        arr = self._check_ids(ids)
        out = np.empty((len(arr), self.dim), np.float32)
        for seg, sel, local in self._by_segment(arr):
            if seg.descriptors is not None:
                out[sel] = seg.descriptors[local]
            else:
                out[sel] = self._graph().vectors(arr[sel])
        return out

    @property
    def descriptors(self) -> np.ndarray:
        """All descriptors, float32 (N, dim). Whole-map copy for HNSW, float16 or multi-segment
        maps (memory!); searches never need it."""
        single = len(self.segments) == 1 and self.segments[0].descriptors is not None
        if single and self.segments[0].descriptors.dtype == np.float32:
            return self.segments[0].descriptors
        if "descriptors" not in self._cache:
            full = self.vectors(np.arange(len(self)))
            full.setflags(write=False)
            self._cache["descriptors"] = full
        return self._cache["descriptors"]

    def score(self, queries: np.ndarray, ids: Iterable[int]) -> np.ndarray:
        """Exact similarities (n, len(ids)) of unit ``queries`` to rows ``ids``."""
        q = self._queries(queries)
        return q @ self.vectors(ids).T

    # --- queries ------------------------------------------------------------------------

    def _graph(self) -> HnswIndex:
        if self._hnsw is None:
            raise MapError(f"{self.path}: opened without its index (load_index=False)")
        return self._hnsw

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise MapError(
                f"query descriptors have shape {np.shape(queries)}; this map holds "
                f"{self.dim}-d descriptors (was the query made by a different model?)"
            )
        if not np.isfinite(q).all():
            bad = np.flatnonzero(~np.isfinite(q).all(axis=1))
            raise MapError(
                f"query descriptor {bad[:5].tolist()} contains NaN or infinite values; "
                "the model output is invalid"
            )
        return np.ascontiguousarray(q)

    def search(
        self, queries: np.ndarray, k: int = 5, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k places per query by inner product: ids int64 (n, k), similarities float32.

        ``queries``: (n, dim) or (dim,) unit descriptors. ``k`` is capped at the map size.
        ``ef``: HNSW search breadth (default from the manifest; ignored by exact search).
        """
        q = self._queries(queries)
        check_k(k)
        if ef is not None and (isinstance(ef, bool) or ef < 1):
            raise ConfigError(f"ef must be at least 1, got {ef!r}")
        k = min(k, len(self))
        if len(q) == 0:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        parts_i, parts_s = [], []
        if self.index_type == "hnsw":
            ids, sims = self._graph().search(q, min(k, self._indexed), ef)
            parts_i.append(ids)
            parts_s.append(sims)
        if self._exact is not None:
            sims = self._exact.scores(q)
            ids, sims = top_k(sims, k)
            parts_i.append(ids + self._indexed)
            parts_s.append(sims)
        if len(parts_i) == 1:
            return parts_i[0], parts_s[0]
        all_i, all_s = np.concatenate(parts_i, 1), np.concatenate(parts_s, 1)
        order, sims = top_k(all_s, k)
        return np.take_along_axis(all_i, order, 1), sims

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(n, N) similarities to every row (exact maps; HNSW maps read every vector)."""
        q = self._queries(queries)
        if self.index_type == "exact":
            return self._exact.scores(q)
        return similarities(q, self.descriptors)


def _names_same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (False once a swap replaced it)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _open_metadata(
    folder: Path, fd: int, name: str, where: str, start: int, rows: int
) -> sqlite3.Connection:
    """Open a segment's metadata read-only and check it holds exactly ids start..start+rows-1.

    SQLite opens by path (and canonicalises even ``/proc/self/fd`` links), so after it has
    opened ``folder/name`` we check that path still names the file we opened through the
    directory handle (``fd``): if not, a swap happened meanwhile and the open is retried
    (FileNotFoundError). Files are shared between generations only when identical."""
    try:
        con = sqlite_readonly(str(folder / name))
        (n,) = con.execute("SELECT count(*) FROM places").fetchone()
        (lo,) = con.execute("SELECT min(id) FROM places").fetchone()
        (hi,) = con.execute("SELECT max(id) FROM places").fetchone()
    except sqlite3.Error as exc:
        if not _names_same_file(folder / name, fd):  # swapped meanwhile: Map.open retries
            raise FileNotFoundError(folder / name) from None
        raise MapError(
            f"{where}: {name} is not readable map metadata ({exc}); rebuild the map"
        ) from None
    if not _names_same_file(folder / name, fd):
        con.close()
        raise FileNotFoundError(folder / name)  # swapped while opening: Map.open retries
    if (n, lo, hi) != (rows, start, start + rows - 1):
        con.close()
        raise MapError(
            f"{where}: {name} has {n} rows (ids {lo}..{hi}) that do not match the manifest's "
            f"{rows} (ids {start}..{start + rows - 1}); rebuild the map"
        )
    return con


__all__ = ["Map", "Segment"]
