"""A built map, opened for search: descriptors, index and per-image metadata, all verified."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MapError
from .index import ExactIndex, HnswIndex, IndexConfig
from .manifest import DESCRIPTORS, INDEX, METADATA, read_manifest, verify_files
from .metadata import Place, read_metadata
from .store import resolve

log = logging.getLogger(__name__)


class Map:
    """An opened map. Create with :meth:`Map.open`; search with :meth:`search`.

    Ids are rows of the descriptor matrix: stable while the map is unchanged and across
    ``map add`` (new images get new ids at the end); ``map remove`` renumbers the rows after
    the removed ones. Image names are the stable keys across all updates.
    Searching is thread-safe.
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        descriptors: np.ndarray,
        places: list[Place],
        index: ExactIndex | HnswIndex,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.descriptors = descriptors
        self._places = places
        self.index = index

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        expect_fingerprint: str | None = None,
        verify: bool = True,
    ) -> Map:
        """Open and check a map directory.

        Refuses (``MapError``) a missing or corrupt map, one whose files fail their checksums
        (naming the file), an unsupported format version, a missing index file, and a map built
        by a model whose fingerprint differs from ``expect_fingerprint``.
        """
        requested = Path(path).expanduser()
        folder = resolve(requested)
        try:
            return cls._load(folder, requested, expect_fingerprint, verify)
        except FileNotFoundError:
            # an update swapped the map while we read it: read the new one
            return cls._load(resolve(requested), requested, expect_fingerprint, verify)

    @classmethod
    def _load(
        cls, folder: Path, requested: Path, expect_fingerprint: str | None, verify: bool
    ) -> Map:
        manifest = read_manifest(folder)
        model_fp = manifest["model"].get("fingerprint")
        if expect_fingerprint is not None and model_fp != expect_fingerprint:
            raise MapError(
                f"{requested}: map was built with model fingerprint {model_fp} "
                f"({manifest['model'].get('backbone')}, {manifest['dim']}-d) but the model in "
                f"use has fingerprint {expect_fingerprint}; rebuild the map with this model "
                "(`sfrs-edge map build`) or use the model that built it"
            )
        config = IndexConfig.from_manifest(manifest["index"])
        required = [DESCRIPTORS, METADATA] + ([INDEX] if config.type == "hnsw" else [])
        for name in required:
            if name not in manifest["files"]:
                raise MapError(f"{requested}: manifest does not list {name}; rebuild the map")
        if config.type == "hnsw" and not (folder / INDEX).is_file():
            raise MapError(f"{requested}: index file {INDEX} is missing; rebuild the map")
        if verify:
            verify_files(folder, manifest)
        count, dim = int(manifest["count"]), int(manifest["dim"])
        try:
            # HNSW keeps its own copy of the vectors: map the matrix instead of loading it
            mmap = "r" if config.type == "hnsw" else None
            desc = np.load(folder / DESCRIPTORS, mmap_mode=mmap, allow_pickle=False)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise MapError(f"{requested}: {DESCRIPTORS} is unreadable ({exc})") from None
        if desc.shape != (count, dim) or desc.dtype != np.float32:
            raise MapError(
                f"{requested}: {DESCRIPTORS} is {desc.dtype} {desc.shape}, the manifest says "
                f"float32 ({count}, {dim}); rebuild the map"
            )
        desc.setflags(write=False)
        places = read_metadata(folder / METADATA)
        if [p.id for p in places] != list(range(count)):
            raise MapError(
                f"{requested}: {METADATA} has {len(places)} rows that do not match the "
                f"{count} descriptors; rebuild the map"
            )
        if config.type == "hnsw":
            index = HnswIndex.load(folder / INDEX, dim, count, config)
        else:
            index = ExactIndex(desc)
        return cls(requested, manifest, desc, places, index)

    # --- facts --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._places)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["model"]["fingerprint"])

    @property
    def index_type(self) -> str:
        return self.index.type

    @property
    def position_kind(self) -> str | None:
        return self.manifest.get("positions", {}).get("kind")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._places]

    def all_places(self) -> list[Place]:
        return list(self._places)

    def positions(self) -> np.ndarray:
        """(N, d) float64 positions (d = 2 or 3), NaN rows where unknown; (N, 0) when none."""
        kind = self.position_kind
        d = 3 if kind == "xyz" else (2 if kind in ("xy", "latlon") else 0)
        out = np.full((len(self), d), np.nan)
        if d:
            for p in self._places:
                if p.position is not None:
                    out[p.id, : len(p.position)] = [np.nan if v is None else v for v in p.position]
        return out

    def __repr__(self) -> str:
        return (
            f"Map({self.path}, {len(self)} images, {self.dim}-d, {self.index_type}, "
            f"model {self.fingerprint})"
        )

    # --- queries ------------------------------------------------------------------------

    def places(self, ids: Iterable[int]) -> list[Place]:
        """The places with these ids (e.g. one row of :meth:`search`'s ids)."""
        out = []
        for i in np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids).ravel():
            if not 0 <= int(i) < len(self._places):
                raise MapError(f"place id {int(i)} is not in this map (0..{len(self) - 1})")
            out.append(self._places[int(i)])
        return out

    def search(
        self, queries: np.ndarray, k: int = 5, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k places per query by inner product: ids int64 (n, k), similarities float32.

        ``queries``: (n, dim) or (dim,) unit descriptors. ``k`` is capped at the map size.
        ``ef``: HNSW search breadth (default from the manifest; ignored by exact search).
        """
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
        if k < 1:
            raise MapError(f"k must be at least 1, got {k}")
        if ef is not None and ef < 1:
            raise MapError(f"ef must be at least 1, got {ef}")
        k = min(k, len(self))
        if len(q) == 0:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return self.index.search(np.ascontiguousarray(q), k, ef)
