"""Searching a map's rows: the HNSW graph for rows ``0 .. indexed-1``, an exact scan of the rest.

Rows added since the graph was last built (``map add``) live in segment descriptor files and are
searched exactly; the two top-k lists are merged by similarity. Exact maps scan every row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ConfigError, MapError
from .index import ExactIndex, HnswIndex, check_k, similarities, top_k


class MapSearch:
    """Top-k by inner product over ``count`` rows of ``dim`` values (thread-safe).

    ``hnsw``: the graph holding rows ``0 .. indexed-1`` (None for exact maps, or an HNSW map
    opened without it: then only the exact rows can be searched). ``blocks``: descriptor arrays
    of the rows after ``indexed``, in row order.
    """

    def __init__(
        self,
        dim: int,
        count: int,
        hnsw: HnswIndex | None,
        indexed: int,
        blocks: list[np.ndarray],
        where: str,
    ) -> None:
        self.dim = dim
        self.count = count
        self.hnsw = hnsw
        self.indexed = indexed if hnsw is not None else 0
        self.exact = ExactIndex(blocks) if blocks else None
        self.where = where

    def graph(self) -> HnswIndex:
        if self.hnsw is None:
            raise MapError(f"{self.where}: opened without its index (load_index=False)")
        return self.hnsw

    def queries(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` as a contiguous float32 (n, dim) array; MapError when unusable."""
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
        self, queries: np.ndarray, k: int, ef: int | None, hnsw: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ids int64 (n, k) and similarities float32 (see :meth:`Map.search`);
        ``hnsw``: the map's rows before ``indexed`` are in the graph."""
        q = self.queries(queries)
        check_k(k)
        if ef is not None and (isinstance(ef, bool) or ef < 1):
            raise ConfigError(f"ef must be at least 1, got {ef!r}")
        k = min(k, self.count)
        if len(q) == 0:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        parts_i, parts_s = [], []
        if hnsw:
            ids, sims = self.graph().search(q, min(k, self.indexed), ef)
            parts_i.append(ids)
            parts_s.append(sims)
        if self.exact is not None:
            sims = self.exact.scores(q)
            ids, sims = top_k(sims, k)
            parts_i.append(ids + self.indexed)
            parts_s.append(sims)
        if len(parts_i) == 1:
            return parts_i[0], parts_s[0]
        all_i, all_s = np.concatenate(parts_i, 1), np.concatenate(parts_s, 1)
        order, sims = top_k(all_s, k)
        return np.take_along_axis(all_i, order, 1), sims

    def similarities(
        self, queries: np.ndarray, exact_only: bool, all_rows: Callable[[], np.ndarray]
    ) -> np.ndarray:
        """(n, N) similarities to every row: the exact scan when it holds every row
        (``exact_only``), else against ``all_rows()`` (every vector, read once)."""
        q = self.queries(queries)
        if exact_only:
            return self.exact.scores(q)
        return similarities(q, all_rows())
