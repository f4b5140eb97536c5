"""Maps: a self-describing directory of descriptors, an index and per-image metadata.

Layout (docs/DESIGN.md §2.4, docs/MAPS.md)::

    map/
      manifest.json     format version, dim, metric, model fingerprint, index + params,
                        counts, positions, sha256 of every file, history
      descriptors.npy   float32 (N, dim), unit rows; row i = place id i
      metadata.sqlite   table ``places``: id, name, path, position, heading, timestamp, ...
      index.bin         hnswlib graph (HNSW maps only)
"""

from .build import add_to_map, build_map, collect_images, map_info, remove_from_map
from .index import AUTO_HNSW_THRESHOLD, IndexConfig
from .manifest import FORMAT_VERSION
from .map import Map
from .metadata import Place
from .poses import Pose, read_exif_gps, read_poses_csv

__all__ = [
    "AUTO_HNSW_THRESHOLD",
    "FORMAT_VERSION",
    "IndexConfig",
    "Map",
    "Place",
    "Pose",
    "add_to_map",
    "build_map",
    "collect_images",
    "map_info",
    "read_exif_gps",
    "read_poses_csv",
    "remove_from_map",
]
