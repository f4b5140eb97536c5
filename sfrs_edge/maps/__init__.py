"""Maps: a self-describing directory of segments (descriptors, metadata, extras) and an index.

Layout (``docs/MAPS.md``)::

    map/
      manifest.json              format version, dim, dtype, metric, model section, index +
                                 params, segments, counts, positions, sha256 of every file
      seg-000000.desc.npy        float32/float16 (rows, dim) unit rows (not for rows held by
                                 the HNSW graph)
      seg-000000.meta.sqlite     table ``places``: id, name, path, position, heading, ...
      seg-000000.x.<name>.npy    per-place extra array (e.g. local features), row-aligned
      index.bin                  hnswlib graph (HNSW maps; holds the vectors of its rows)
"""

from .build import build_map
from .index import AUTO_HNSW_THRESHOLD, IndexConfig
from .info import map_info
from .manifest import FORMAT_VERSION
from .map import Map
from .merge import merge_maps, verify_map
from .metadata import Place
from .poses import Pose, read_exif_gps, read_poses_csv
from .sources import collect_images
from .update import add_to_map, append_to_map, remove_from_map
from .writer import Rows

__all__ = [
    "AUTO_HNSW_THRESHOLD",
    "FORMAT_VERSION",
    "IndexConfig",
    "Map",
    "Place",
    "Pose",
    "Rows",
    "add_to_map",
    "append_to_map",
    "merge_maps",
    "verify_map",
    "build_map",
    "collect_images",
    "map_info",
    "read_exif_gps",
    "read_poses_csv",
    "remove_from_map",
]
