"""``map info``: what a map holds and what it costs on disk, as one dict."""

from __future__ import annotations

import os
from typing import Any

from .map import Map


def map_info(path: str | os.PathLike, verify: bool | str = True) -> dict[str, Any]:
    """Summary of a map: counts, dims, model, index, positions, size on disk and per place."""
    m = Map.open(path, verify=verify, load_index=False)
    man = m.manifest
    files = {n: e["bytes"] for n, e in man["files"].items()}
    manifest_bytes = (m.folder / "manifest.json").stat().st_size
    total = sum(files.values()) + manifest_bytes
    model = {k: v for k, v in man["model"].items() if k != "info"}
    n = max(len(m), 1)
    per_kind = {"descriptors": 0, "index": 0, "metadata": 0}
    per_extra = {x: 0 for x in m.extras}
    for seg in man["segments"]:
        if seg["descriptors"]:
            per_kind["descriptors"] += files[seg["descriptors"]]
        per_kind["metadata"] += files[seg["metadata"]]
        for x, f in seg.get("extras", {}).items():
            per_extra[x] += files[f]
    per_kind["index"] = files.get("index.bin", 0)
    return {
        "path": str(m.path),
        "format_version": man["format_version"],
        "count": len(m),
        "dim": m.dim,
        "dtype": m.dtype,
        "metric": man["metric"],
        "model": model,
        "index": man["index"],
        "indexed": m.indexed,
        "segments": len(man["segments"]),
        "extras": man.get("extras", {}),
        "positions": man.get("positions"),
        "created": man.get("created"),
        "updated": man.get("updated"),
        "sfrs_edge_version": man.get("sfrs_edge_version"),
        "files": dict(files, **{"manifest.json": manifest_bytes}),
        "size_bytes": total,
        "bytes_per_image": total / n,
        "bytes_per_place": {
            **{k: v / n for k, v in per_kind.items()},
            **{f"extra:{x}": v / n for x, v in per_extra.items()},
        },
        "checksums": {"full": "verified (full)", False: "not checked"}.get(verify, "ok"),
        "history": man.get("history", []),
    }
