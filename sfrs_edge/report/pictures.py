"""Pictures of answers: a frame beside its matches (:func:`match_sheet`), and a map's places
with a query marked (:func:`~.map_picture.map_picture`, re-exported here).

Both return the image and what they drew (match ids), so callers and tests can check that
the picture shows the answer that was returned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..images import read_image
from ..results import LocalizationResult, Match
from . import plots
from .map_picture import map_picture

__all__ = ["map_picture", "match_sheet"]

log = logging.getLogger(__name__)
TILE_H, TILE_W = 150, 220


def _fmt_pos(pos: Sequence[float] | None, kind: str | None) -> str:
    if pos is None:
        return "no position"
    if kind == "latlon":
        return f"{pos[0]:.5f}, {pos[1]:.5f}"
    return "(" + ", ".join(f"{v:.1f}" for v in pos) + ")"


def _place_image(map_, m: Match) -> np.ndarray:
    """The map image of a match, or a grey placeholder naming it when the file is gone."""
    path = map_.places([m.id])[0].path
    try:
        return read_image(path)
    except Exception as exc:  # noqa: BLE001 - a picture must not fail on a moved map image
        log.warning("map image %s: %s", path, exc)
        img = np.full((TILE_H, TILE_W, 3), 200, np.uint8)
        plots.text(img, "image not found", (10, TILE_H // 2), 0.5)
        return img


def match_sheet(
    frame: np.ndarray,
    result: LocalizationResult,
    map_,
    right: Sequence[bool | None] | None = None,
    title: str | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The query frame beside its top matches, each with rank, similarity (and for a re-ranked
    answer the score the order follows, and its inliers) and position.

    ``right``: per match True/False (green/red border) when ground truth is known.
    Returns (BGR picture, ids of the matches drawn, in order).
    """
    kind = result.position_kind
    head = [
        title or (result.source or "query").split("/")[-1],
        f"estimate {_fmt_pos(result.position, kind)}",
        f"confidence {result.confidence:.2f}",
        "order: re-ranked (score)" if result.reranked else "order: global similarity",
    ]
    tiles = [plots.tile(frame, head, plots.BLUE, TILE_H, TILE_W)]
    drawn = []
    for rank, m in enumerate(result.matches, 1):
        ok = None if right is None else right[rank - 1]
        border = None if ok is None else (plots.GREEN if ok else plots.RED)
        mark = "" if ok is None else (" RIGHT" if ok else " WRONG")
        lines = [f"{rank}. {m.name}", f"sim {m.similarity:.3f}{mark}", _fmt_pos(m.position, kind)]
        if result.reranked:  # the score the order follows, then the global similarity
            inl = f", {m.inliers} inl" if m.inliers is not None else ""
            lines[1:2] = [f"score {m.score:.3f}{mark}", f"sim {m.similarity:.3f}{inl}"]
        tiles.append(plots.tile(_place_image(map_, m), lines, border, TILE_H, TILE_W))
        drawn.append(m.id)
    return plots.hstack(tiles), drawn
