"""A built map, opened for search: segments of descriptors + metadata (+ extras), and an index.

Layout and what opening checks: ``docs/MAPS.md``. Rows ``0 .. indexed-1`` of an HNSW map live
only in ``index.bin`` (vectors held once); later rows (added since the index was last folded)
are segment descriptor files searched exactly, and the two result lists are merged.

The class gathers three parts, each in its own module: reading a generation from disk
(:mod:`.reader`), the places' metadata (:class:`.metadata.MetadataReader`) and search
(:class:`.search.MapSearch`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MapError
from .index import ExactIndex, HnswIndex
from .metadata import MetadataReader, NameTable, Place
from .reader import Segment, read_generation
from .search import MapSearch


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
        self._count = sum(s.rows for s in segments)
        indexed = int(manifest.get("indexed", 0)) if index is not None else 0
        blocks = [s.descriptors for s in segments if s.stop > indexed]
        self._search = MapSearch(
            int(manifest["dim"]), self._count, index, indexed, blocks, str(path)
        )
        self._meta = MetadataReader([s.metadata for s in segments], str(path))
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
        gen = read_generation(requested, expect_fingerprint, verify, load_index)
        return cls(requested, gen.manifest, gen.segments, gen.index, gen.folder)

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
        return self._search.hnsw if self.index_type == "hnsw" else self._search.exact

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
    def names(self) -> list[str]:  # pragma: no mutate block
        return self._meta.names()

    def name_table(self) -> NameTable:  # pragma: no mutate block
        """Every place's name by id, held compactly (:class:`.metadata.NameTable`)."""
        return self._meta.name_table()

    def all_places(self) -> list[Place]:  # pragma: no mutate block
        return self._meta.all_places()

    def find_names(self, names: Iterable[str]) -> list[str]:  # pragma: no mutate block
        """Which of ``names`` the map holds (an indexed lookup; cheap on large maps)."""
        return self._meta.find_names(names)

    def positions(self) -> np.ndarray:
        """(N, d) float64 positions (d = 2 or 3), NaN rows where unknown; (N, 0) when none."""
        return self._meta.positions(self.position_kind, len(self))

    def __repr__(self) -> str:  # pragma: no mutate block
        return (
            f"Map({self.path}, {len(self)} images, {self.dim}-d, {self.index_type}, "
            f"model {self.fingerprint})"
        )

    # --- rows ---------------------------------------------------------------------------

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
        return self._meta.places(self._check_ids(ids))

    def vectors(self, ids: Iterable[int]) -> np.ndarray:
        """float32 descriptors of rows ``ids`` (from the segments or the HNSW index)."""
        arr = self._check_ids(ids)
        out = np.empty((len(arr), self.dim), np.float32)
        for seg, sel, local in self._by_segment(arr):
            if seg.descriptors is not None:
                out[sel] = seg.descriptors[local]
            else:
                out[sel] = self._search.graph().vectors(arr[sel])
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
        q = self._search.queries(queries)
        return q @ self.vectors(ids).T

    # --- queries ------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int = 5, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k places per query by inner product: ids int64 (n, k), similarities float32.

        ``queries``: (n, dim) or (dim,) unit descriptors. ``k`` is capped at the map size.
        ``ef``: HNSW search breadth (default from the manifest; ignored by exact search).
        """
        return self._search.search(queries, k, ef, hnsw=self.index_type == "hnsw")

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(n, N) similarities to every row (exact maps; HNSW maps read every vector)."""
        exact = self.index_type == "exact"
        return self._search.similarities(queries, exact, lambda: self.descriptors)


__all__ = ["Map", "Segment"]
