"""Nearest-neighbour search over unit descriptors by inner product: exact and HNSW.

Exact search is one matrix product plus ``argpartition`` and is the default below
:data:`AUTO_HNSW_THRESHOLD` images (docs/DESIGN.md §4). HNSW (hnswlib, space ``ip``) for larger
maps; ``ef`` can be changed per query.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, MapError

AUTO_HNSW_THRESHOLD = 50_000
INDEX_TYPES = ("auto", "exact", "hnsw")


@dataclass(frozen=True)
class IndexConfig:
    """Index type and HNSW parameters, recorded in the manifest."""

    type: str = "auto"
    M: int = 16
    ef_construction: int = 200
    ef: int = 128  # default query-time ef
    seed: int = 100

    def resolved(self, count: int) -> IndexConfig:
        """Pick exact or HNSW for ``auto`` by map size; validate parameters."""
        if self.type not in INDEX_TYPES:
            raise ConfigError(f"index type {self.type!r}: expected one of {', '.join(INDEX_TYPES)}")
        for name in ("M", "ef_construction", "ef"):
            if getattr(self, name) < 1:
                raise ConfigError(f"HNSW {name} must be positive, got {getattr(self, name)}")
        kind = self.type
        if kind == "auto":
            kind = "hnsw" if count >= AUTO_HNSW_THRESHOLD else "exact"
        return IndexConfig(kind, self.M, self.ef_construction, self.ef, self.seed)

    def to_manifest(self) -> dict:
        d = asdict(self)
        if self.type == "exact":
            return {"type": "exact"}
        return d

    @classmethod
    def from_manifest(cls, d: dict) -> IndexConfig:
        try:
            return cls(**d)
        except TypeError as exc:
            raise MapError(f"manifest index section is malformed ({exc})") from None


def check_k(k: int) -> None:
    """One rule for every ``k`` (search, ranking, localizing): at least 1, else ConfigError."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be at least 1, got {k!r}")


def top_k(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest entries per row, best first (k capped at the
    row length)."""
    check_k(k)
    n = sims.shape[1]
    k = min(k, n)
    if k < n:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n), sims.shape).copy()
    vals = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(
        vals, order, axis=1
    )


BLOCK_ROWS = 16384  # float16 rows converted to float32 at a time


def similarities(queries: np.ndarray, block: np.ndarray) -> np.ndarray:
    """``queries @ block.T``; both are float32 here (float16 rows were converted once, by
    :func:`search_copy`, and ``Map.descriptors`` is float32)."""
    return queries @ block.T


def search_copy(block: np.ndarray | None) -> np.ndarray | None:
    """The float32 array an exact search multiplies: ``block`` itself when float32 (a memory
    map stays one), else converted once.

    Converting float16 per query cost 15–22× the float32 product (docs/MAPS.md), so a float16
    map halves disk and download, not search memory."""
    if block is None or block.dtype == np.float32:  # None: rows only the HNSW graph holds
        return block
    out = np.empty(block.shape, np.float32)
    for a in range(0, len(block), BLOCK_ROWS):  # bounded temporaries from a memory map
        out[a : a + BLOCK_ROWS] = block[a : a + BLOCK_ROWS]
    out.setflags(write=False)
    return out


class ExactIndex:
    """Brute force over one or more row blocks (float32 or float16): ``queries @ rows.T``.

    ``blocks``: one (n, dim) array, or a list of them (segments, rows in order). float16
    blocks are converted to float32 once, here (:func:`search_copy`)."""

    type = "exact"

    def __init__(self, blocks: np.ndarray | list[np.ndarray]) -> None:
        blocks = [blocks] if isinstance(blocks, np.ndarray) else list(blocks)
        self.blocks = [search_copy(b) for b in blocks]

    @property
    def descriptors(self) -> np.ndarray:
        if len(self.blocks) == 1:
            return self.blocks[0]
        return np.concatenate(self.blocks)

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """(n, rows) similarities to every row."""
        if len(self.blocks) == 1:
            return similarities(queries, self.blocks[0])
        return np.concatenate([similarities(queries, b) for b in self.blocks], axis=1)

    def search(
        self, queries: np.ndarray, k: int, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.scores(queries), k)


class HnswIndex:
    """hnswlib graph over the descriptors (labels = descriptor rows)."""

    type = "hnsw"

    def __init__(self, index, config: IndexConfig, level0=None) -> None:
        self._index = index
        self.config = config
        self._lock = threading.Lock()
        self._index.set_ef(config.ef)
        self._level0 = level0  # (vectors, labels) memory maps of the file it was loaded from
        self._rows: tuple[np.ndarray, np.ndarray] | None = None  # (vectors view, row → slot)

    @classmethod
    def build(cls, descriptors: np.ndarray, config: IndexConfig) -> HnswIndex:
        import hnswlib

        n, dim = descriptors.shape
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(
            max_elements=max(n, 1),
            M=config.M,
            ef_construction=config.ef_construction,
            random_seed=config.seed,
        )
        if n:
            index.add_items(descriptors, np.arange(n))
        return cls(index, config)

    @classmethod
    def load(
        cls, path: Path | str, dim: int, count: int, config: IndexConfig, spare: int = 0
    ) -> HnswIndex:
        """Load an index file; ``spare``: room for that many more items (``add``)."""
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        try:
            index.load_index(str(path), max_elements=max(count + spare, 1))
        except (RuntimeError, OSError, ValueError) as exc:
            raise MapError(f"{path}: cannot load the HNSW index ({exc}); rebuild the map") from None
        if index.get_current_count() != count:
            raise MapError(
                f"{path}: HNSW index holds {index.get_current_count()} items, the map {count}; "
                "rebuild the map"
            )
        try:  # mapped now, while ``path`` (often /proc/self/fd/N) names the file read
            level0 = _level0_map(path, dim, count)
        except (OSError, ValueError, MapError):
            level0 = None  # not the layout known here: hnswlib's own reader
        return cls(index, config, level0)

    def add(self, descriptors: np.ndarray, first_id: int) -> None:
        """Append rows ``first_id ..`` (incremental ``map add``)."""
        self._level0, self._rows = None, None  # the file no longer holds every vector
        n = len(descriptors)
        self._index.resize_index(first_id + n)
        self._index.add_items(descriptors, np.arange(first_id, first_id + n))

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))

    def __len__(self) -> int:
        return self._index.get_current_count()

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored float32 vectors of rows ``ids`` (exact scoring of selected rows)."""
        ids = np.asarray(ids, np.int64).ravel()
        if len(ids) == 0:
            return np.zeros((0, self._index.dim), np.float32)
        rows = self._file_rows()
        if rows is not None:
            view, slot = rows
            return np.array(view[slot[ids]], np.float32)
        return np.asarray(self._index.get_items(ids), np.float32)

    def _file_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The index file's level-0 vectors as a memory map, and each row's slot in it (read
        once). ``get_items`` builds Python lists (≈ 50 µs per 512-d row here), too slow for the
        few hundred rows a temporal filter scores per frame; hnswlib stores each element as
        [links][vector][label] after the header (the layout ``check_hnsw_header`` checks)."""
        if self._rows is not None or self._level0 is None:
            return self._rows
        with self._lock:
            if self._rows is None and self._level0 is not None:
                view, labels = self._level0
                labels = np.asarray(labels).ravel().astype(np.int64)
                if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(view):
                    self._level0 = None  # labels are not rows: hnswlib's own reader
                    return None
                slot = np.empty(len(view), np.int64)
                slot[labels] = np.arange(len(view))
                self._rows = view, slot
        return self._rows

    def search(
        self, queries: np.ndarray, k: int, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        ef = max(int(ef or self.config.ef), k)
        with self._lock:  # ef is index-wide state in hnswlib
            if ef != self._index.ef:
                self._index.set_ef(ef)
            try:
                labels, dists = self._index.knn_query(queries, k=k)
            finally:
                if ef != self.config.ef:
                    self._index.set_ef(self.config.ef)
        return labels.astype(np.int64), (1.0 - dists).astype(np.float32)


def _level0_map(path: Path | str, dim: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Memory maps of an hnswlib file's vectors (count, dim) float32 and labels (count, 1)
    uint64, by internal slot. MapError when the layout is not hnswlib 0.8's."""
    from .hnsw_file import HEADER  # the one description of that header

    with open(path, "rb") as fh:
        head = fh.read(HEADER.size)
    if len(head) != HEADER.size:
        raise MapError(f"{path}: index file is truncated")
    _, _, cur, per_el, label_off, off_data = HEADER.unpack(head)[:6]
    if cur != count or label_off != off_data + 4 * dim or per_el != label_off + 8:
        raise MapError(f"{path}: index layout is not the one known here")
    raw = np.memmap(path, np.uint8, "r", offset=HEADER.size, shape=(count, per_el))
    return raw[:, off_data:label_off].view(np.float32), raw[:, label_off:per_el].view(np.uint64)
