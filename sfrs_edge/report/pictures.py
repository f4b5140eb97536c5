"""Pictures of answers: a frame beside its matches, and a map's places with a query marked.

Both return the image and what they drew (match ids), so callers and tests can check that
the picture shows the answer that was returned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from ..images import read_image
from ..results import LocalizationResult, Match
from . import plots

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
    """The query frame beside its top matches, each with rank, similarity and position.

    ``right``: per match True/False (green/red border) when ground truth is known.
    Returns (BGR picture, ids of the matches drawn, in order).
    """
    kind = result.position_kind
    head = [
        title or (result.source or "query").split("/")[-1],
        f"estimate {_fmt_pos(result.position, kind)}",
        f"confidence {result.confidence:.2f}",
    ]
    tiles = [plots.tile(frame, head, plots.BLUE, TILE_H, TILE_W)]
    drawn = []
    for rank, m in enumerate(result.matches, 1):
        ok = None if right is None else right[rank - 1]
        border = None if ok is None else (plots.GREEN if ok else plots.RED)
        mark = "" if ok is None else (" RIGHT" if ok else " WRONG")
        lines = [f"{rank}. {m.name}", f"sim {m.similarity:.3f}{mark}", _fmt_pos(m.position, kind)]
        tiles.append(plots.tile(_place_image(map_, m), lines, border, TILE_H, TILE_W))
        drawn.append(m.id)
    return plots.hstack(tiles), drawn


def map_picture(
    map_,
    result: LocalizationResult | None = None,
    scores: np.ndarray | None = None,
    size: tuple[int, int] = (720, 480),
    truth: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The map's places coloured by sequence order (first → last: dark → yellow), keyframes of
    video maps ringed; with ``result``, the top matches numbered and the estimate crossed.

    Maps without positions (or with all positions on a line) are drawn along their row index;
    the picture says so. With ``scores`` (the query's similarity to every place), that case
    plots the similarity profile along the route. ``truth``: map rows known to be right for
    the query (green triangles). Returns (picture, match ids marked).
    """
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    places = map_.all_places()
    n = len(places)
    pos = map_.positions()
    known = ~np.isnan(pos).any(axis=1) if pos.shape[1] else np.zeros(n, bool)
    two_d = (
        pos.shape[1] >= 2
        and known.sum() >= 2
        and np.ptp(pos[known][:, 1]) > 0
        and (np.ptp(pos[known][:, 0]) > 0)
    )
    kind = map_.position_kind
    left, right_m, top, bottom = 50, 20, 40, 50
    x0, x1, y0, y1 = left, w - right_m, top, h - bottom
    if two_d:
        xy = pos[:, :2][:, ::-1] if kind == "latlon" else pos[:, :2]  # lon → x, lat → y
        if kind == "latlon":  # equirectangular: shrink longitude by cos(latitude)
            xy = xy * np.array([np.cos(np.radians(np.nanmean(pos[:, 0]))), 1.0])
        lo, hi = np.nanmin(xy[known], axis=0), np.nanmax(xy[known], axis=0)
        scale = min((x1 - x0) / max(hi[0] - lo[0], 1e-9), (y1 - y0) / max(hi[1] - lo[1], 1e-9))
        # centre the drawing in the free direction
        cx = x0 + ((x1 - x0) - (hi[0] - lo[0]) * scale) / 2
        cy = y1 - ((y1 - y0) - (hi[1] - lo[1]) * scale) / 2

        def to_px(p: np.ndarray) -> tuple[int, int]:
            return (int(cx + (p[0] - lo[0]) * scale), int(cy - (p[1] - lo[1]) * scale))

        def at(i: int) -> tuple[int, int]:
            return to_px(xy[i])

        note = "positions: " + ("lat/lon (north up)" if kind == "latlon" else "x/y map units")
        rows = [i for i in range(n) if known[i]]
    else:
        prof = None
        if scores is not None and len(scores) == n:
            prof = np.asarray(scores, np.float64)
            lo_s, hi_s = float(prof.min()), float(prof.max())

        def at(i: int) -> tuple[int, int]:
            x = int(x0 + i / max(n - 1, 1) * (x1 - x0))
            if prof is None:
                return (x, (y0 + y1) // 2)
            return (x, int(y1 - (prof[i] - lo_s) / max(hi_s - lo_s, 1e-9) * (y1 - y0)))

        note = "no 2-D positions: places along the route by row index" + (
            " (height: similarity to the query)" if prof is not None else ""
        )
        rows = list(range(n))
        cv2.line(img, (x0, y1 + 8), (x1, y1 + 8), plots.GREY, 1)
        for t in np.linspace(0, n - 1, 6):
            x = int(x0 + t / max(n - 1, 1) * (x1 - x0))
            plots.text(img, f"{int(t)}", (x - 8, y1 + 24), 0.4)
    colours = plots.colour_ramp(n)
    if len(rows) > 1:
        pts = np.array([at(i) for i in rows], np.int32)
        cv2.polylines(img, [pts], False, (225, 225, 225), 1, cv2.LINE_AA)
    for i in rows:
        cv2.circle(img, at(i), 3, colours[i], -1, cv2.LINE_AA)
        if places[i].frame is not None:  # a keyframe of a video map
            cv2.circle(img, at(i), 6, plots.GREY, 1, cv2.LINE_AA)
    for i in truth or []:
        if i in rows:
            x, y = at(i)
            tri = np.array([[x, y + 10], [x - 6, y + 20], [x + 6, y + 20]], np.int32)
            cv2.fillPoly(img, [tri], plots.GREEN, cv2.LINE_AA)
    marked: list[int] = []
    if result is not None:
        for rank, m in reversed(list(enumerate(result.matches, 1))):
            if m.id in rows:
                p = at(m.id)
                cv2.circle(img, p, 9, plots.RED, 2, cv2.LINE_AA)
                plots.text(img, str(rank), (p[0] + 8, p[1] - 8), 0.5, plots.RED, 1, bg=plots.WHITE)
        marked = [m.id for m in result.matches if m.id in rows]
        if two_d and result.position is not None:
            e = np.asarray(result.position[:2], np.float64)
            e = (
                e[::-1] * np.array([np.cos(np.radians(np.nanmean(pos[:, 0]))), 1.0])
                if (kind == "latlon")
                else e
            )
            p = to_px(e)
            cv2.drawMarker(img, p, plots.BLACK, cv2.MARKER_CROSS, 22, 2, cv2.LINE_AA)
        elif result.matches:
            p = at(result.best.id)
            cv2.drawMarker(img, p, plots.BLACK, cv2.MARKER_CROSS, 22, 2, cv2.LINE_AA)
    title = f"map {getattr(map_, 'path', '')}"[-60:] + f"  ({n} places)"
    plots.text(img, title, (x0, 22), 0.5)
    plots.text(img, note, (x0, h - 8), 0.42, plots.BLUE)
    # colour key: first → last place
    for j, c in enumerate(plots.colour_ramp(60)):
        cv2.line(img, (w - 150 + j, 14), (w - 150 + j, 24), c, 1)
    plots.text(img, "first", (w - 190, 24), 0.38)
    plots.text(img, "last", (w - 86, 24), 0.38)
    if result is not None:
        plots.text(img, "o top-k (rank)  + estimate", (w - 190, 38), 0.38, plots.RED)
    if truth:
        plots.text(img, "triangles: right places", (w - 190, 52), 0.38, plots.GREEN)
    return img, marked
