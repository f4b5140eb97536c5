"""A picture of a map's places, optionally with one query's answer marked on it.

Layout follows what the map knows about where its places are:

- **2-D positions** (x/y, or lat/lon drawn north up): a plan view. Without a query the places
  are coloured by sequence (first → last); with the query's similarities they are coloured
  by similarity, with a colour scale.
- **positions on one line** (e.g. x = frame index, y constant): the places along that
  coordinate, labelled in its units; with similarities the height is the similarity, with a
  similarity axis.
- **no positions**: the same, along the row index.

Without a query, the height on a line is each place's similarity to the previous one (dips
are where the view along the route changes), so the route is not a flat row of dots.

With a result, the top-k are ringed and numbered by rank (labels moved apart so that close
ranks stay readable, with a leader line to their place) and the position estimate crossed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from . import plots

SCALE = 0.55  # text size of labels (Hershey simplex: about 12 px high)
SMALL = 0.48


def _drawing_xy(map_, pos: np.ndarray) -> np.ndarray:
    """Map positions (M, >=2) as drawing coordinates: x/y as they are; lat/lon as x = lon
    shrunk by cos(latitude of the map), y = lat (equirectangular, north up)."""
    xy = np.asarray(pos, np.float64)[:, :2]
    if map_.position_kind != "latlon":
        return xy
    lat0 = np.nanmean(map_.positions()[:, 0])
    return xy[:, ::-1] * np.array([np.cos(np.radians(lat0)), 1.0])


def layout(map_, n: int) -> tuple[str, np.ndarray, np.ndarray, int]:
    """("2d" | "1d" | "rows", (N, 2) drawing coordinates, known mask, axis drawn along)."""
    rows = ("rows", np.stack([np.arange(n, dtype=float), np.zeros(n)], 1), np.ones(n, bool), 0)
    pos = map_.positions()
    if pos.shape[1] == 0:
        return rows
    xy = _drawing_xy(map_, pos)
    known = ~np.isnan(xy).any(axis=1)
    if known.sum() < 2:
        return rows
    spread = np.ptp(xy[known], axis=0)
    if spread.min() > 1e-9 * max(spread.max(), 1e-12):
        return "2d", xy, known, 0
    axis = int(np.argmax(spread))  # every place on one line: draw along its coordinate
    return "1d", np.stack([xy[:, axis], np.zeros(n)], 1), known, axis


def neighbour_similarity(map_, n: int, limit: int = 200_000) -> np.ndarray | None:
    """Each place's descriptor similarity to the place before it (the first: to the second):
    where along the route the view changes. None when the map is too large or holds no
    descriptors to read."""
    desc = getattr(map_, "descriptors", None)
    if desc is None or n > limit:
        return None
    d = np.asarray(desc, np.float32)
    if len(d) != n:
        return None
    sims = np.einsum("ij,ij->i", d[1:], d[:-1]).astype(np.float64)
    return np.concatenate([sims[:1], sims])


def nice_ticks(lo: float, hi: float, count: int = 6) -> np.ndarray:
    """About ``count`` round tick values (1, 2 or 5 x 10^k apart) covering [lo, hi]."""
    span = max(hi - lo, 1e-12)
    raw = span / max(count - 1, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step) * step
    return np.arange(first, hi + step * 1e-9, step)


def _axis_name(map_, mode: str, axis_coord: int) -> str:
    if mode == "rows":
        return "row in the map (no positions)"
    kind = map_.position_kind
    if kind == "latlon":
        return "longitude (deg x cos lat)" if axis_coord == 0 else "latitude (deg)"
    return ("x", "y")[axis_coord] + " (map units)"


def place_labels(
    img: np.ndarray, anchors: list[tuple[int, int]], labels: list[str], bounds
) -> list[tuple[int, int, int, int]]:
    """Draw rank labels near their anchors, each moved up/down until it overlaps no earlier
    label (leader line back to a moved one). Returns the label boxes (x0, y0, x1, y1)."""
    x0, x1, y0, y1 = bounds
    taken: list[tuple[int, int, int, int]] = []
    for (ax, ay), label in zip(anchors, labels, strict=True):
        (tw, th), _ = cv2.getTextSize(label, plots.FONT, SCALE, 2)
        best = None
        for step in range(0, 40):
            dy = (step + 1) // 2 * (th + 6) * (1 if step % 2 else -1)
            lx, ly = ax + 10, ay - 10 + dy
            lx = min(max(lx, x0), x1 - tw - 2)
            ly = min(max(ly, y0 + th + 2), y1 + 30)
            box = (lx - 3, ly - th - 3, lx + tw + 3, ly + 4)
            if not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken
            ):
                best = (lx, ly, box)
                break
        if best is None:
            lx, ly = ax + 10, ay - 10
            best = (lx, ly, (lx - 3, ly - th - 3, lx + tw + 3, ly + 4))
        lx, ly, box = best
        taken.append(box)
        if abs(ly - (ay - 10)) > 2:  # moved: a leader line back to the place
            cv2.line(img, (ax, ay), (lx - 3, ly - th // 2), plots.RED, 1, cv2.LINE_AA)
        plots.text(img, label, (lx, ly), SCALE, plots.RED, 2, bg=plots.WHITE)
    return taken


def _colour_bar(img, x: int, y: int, w: int, colours, left: str, right: str, title: str):
    for j, c in enumerate(colours):
        xx = x + int(j * w / len(colours))
        cv2.line(img, (xx, y), (xx, y + 10), c, 2)
    plots.text(img, left, (x, y + 26), SMALL)
    (tw, _), _ = cv2.getTextSize(right, plots.FONT, SMALL, 1)
    plots.text(img, right, (x + w - tw, y + 26), SMALL)
    plots.text(img, title, (x, y - 6), SMALL)


def map_picture(
    map_,
    result=None,
    scores: np.ndarray | None = None,
    size: tuple[int, int] = (960, 600),
    truth: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """The map's places (see module doc); ``scores``: the query's similarity to every place;
    ``truth``: map rows known to be right for the query (green triangles).
    Returns (BGR picture, ids of the matches marked, in rank order)."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    places = map_.all_places()
    n = len(places)
    mode, xy, known, axis = layout(map_, n)
    prof = None
    neighbour = False  # height: similarity to the previous place (no query given)
    if scores is not None and len(scores) == n:
        prof = np.asarray(scores, np.float64)
    elif mode != "2d" and n >= 2:
        prof = neighbour_similarity(map_, n)
        neighbour = prof is not None
    left, right_m, top, bottom = (86 if mode != "2d" and prof is not None else 30), 30, 90, 70
    x0, x1, y0, y1 = left, w - right_m, top, h - bottom
    lo, hi = np.nanmin(xy[known], axis=0), np.nanmax(xy[known], axis=0)
    if mode == "2d":
        scale = min((x1 - x0) / max(hi[0] - lo[0], 1e-12), (y1 - y0) / max(hi[1] - lo[1], 1e-12))
        cx = x0 + ((x1 - x0) - (hi[0] - lo[0]) * scale) / 2
        cy = y1 - ((y1 - y0) - (hi[1] - lo[1]) * scale) / 2

        def to_px(p) -> tuple[int, int]:
            return (int(cx + (p[0] - lo[0]) * scale), int(cy - (p[1] - lo[1]) * scale))

    else:
        s_lo, s_hi = (float(prof.min()), float(prof.max())) if prof is not None else (0.0, 1.0)
        span = max(hi[0] - lo[0], 1e-12)

        def to_px(p) -> tuple[int, int]:
            x = int(x0 + (p[0] - lo[0]) / span * (x1 - x0))
            if prof is None:
                return (x, (y0 + y1) // 2)
            return (x, int(y1 - (p[1] - s_lo) / max(s_hi - s_lo, 1e-12) * (y1 - y0)))

        if prof is not None:
            xy = np.stack([xy[:, 0], prof], 1)

    def at(i: int) -> tuple[int, int]:
        return to_px(xy[i])

    rows = [i for i in range(n) if known[i]]
    # axes of the line layouts: the coordinate below, the similarity on the left
    if mode != "2d":
        cv2.line(img, (x0, y1 + 10), (x1, y1 + 10), plots.GREY, 1)
        for t in nice_ticks(lo[0], hi[0]):
            px = to_px((t, 0))[0]
            cv2.line(img, (px, y1 + 10), (px, y1 + 15), plots.GREY, 1)
            plots.text(img, f"{t:g}", (px - 12, y1 + 32), SMALL)
        plots.text(img, _axis_name(map_, mode, axis), ((x0 + x1) // 2 - 90, h - 12), SMALL)
        if prof is not None:
            for t in np.linspace(s_lo, s_hi, 5):
                py = to_px((lo[0], t))[1]
                cv2.line(img, (x0 - 6, py), (x1, py), (236, 236, 236), 1)
                plots.text(img, f"{t:.3f}", (8, py + 5), SMALL)
            axis_label = "similarity to previous place" if neighbour else "similarity"
            plots.text(img, axis_label, (8, y0 - 14), SMALL, plots.BLUE)
    if mode == "2d" and prof is not None:
        order = np.argsort(np.argsort(prof))  # colour by similarity rank → full ramp used
        ramp = plots.colour_ramp(n)
        colours = [ramp[int(order[i])] for i in range(n)]
    else:
        colours = plots.colour_ramp(n)
    if len(rows) > 1:
        pts = np.array([at(i) for i in rows], np.int32)
        cv2.polylines(img, [pts], False, (215, 215, 215), 1, cv2.LINE_AA)
    for i in rows:
        cv2.circle(img, at(i), 4, colours[i], -1, cv2.LINE_AA)
        if places[i].frame is not None:  # a keyframe of a video map
            cv2.circle(img, at(i), 7, plots.GREY, 1, cv2.LINE_AA)
    for i in truth or []:
        if 0 <= i < n and known[i]:
            x, y = at(i)
            tri = np.array([[x, y + 9], [x - 6, y + 19], [x + 6, y + 19]], np.int32)
            cv2.fillPoly(img, [tri], plots.GREEN, cv2.LINE_AA)
    marked: list[int] = []
    if result is not None and result.matches:
        shown = [(rank, m) for rank, m in enumerate(result.matches, 1) if 0 <= m.id < n]
        shown = [(rank, m) for rank, m in shown if known[m.id]]
        for _, m in shown:
            cv2.circle(img, at(m.id), 10, plots.RED, 2, cv2.LINE_AA)
        place_labels(
            img, [at(m.id) for _, m in shown], [str(r) for r, _ in shown], (x0, x1, y0, y1)
        )
        marked = [m.id for _, m in shown]
        est = _estimate_px(map_, mode, axis, result, to_px, xy)
        if est is not None:
            cv2.drawMarker(img, est, plots.BLACK, cv2.MARKER_CROSS, 26, 2, cv2.LINE_AA)
    _legend(img, map_, n, mode, prof, colours, result, truth, w, neighbour)
    return img, marked


def _estimate_px(map_, mode: str, axis: int, result, to_px, xy) -> tuple[int, int] | None:
    """Where the position estimate goes: its place in a plan view; on a line, its coordinate
    at the height of the answer; without positions, the answer itself."""
    best = result.matches[0].id
    pos = result.position
    if pos is None or mode == "rows":
        return to_px(xy[best]) if 0 <= best < len(xy) else None
    e = _drawing_xy(map_, np.asarray(pos[:2], np.float64)[None])[0]
    if mode == "2d":
        return to_px(e)
    return to_px((e[axis], xy[best][1]))


def _legend(img, map_, n, mode, prof, colours, result, truth, w, neighbour=False) -> None:
    name = Path(str(getattr(map_, "path", "") or "map")).name
    title = f"map '{name}': {n} places"
    if result is not None and result.source:
        title += f"  -  query {Path(str(result.source)).name}"
    plots.text(img, title, (20, 28), 0.65, thickness=1)
    if mode == "2d":
        kind = map_.position_kind
        note = "plan view: " + ("lat/lon, north up" if kind == "latlon" else "x/y map units")
    elif mode == "1d":
        note = "positions lie on one line: places drawn along it"
    else:
        note = "no positions: places drawn along their row order"
    if mode != "2d" and prof is not None:
        note += (
            "; height = similarity to the previous place (dips: the view changes)"
            if neighbour
            else "; height = similarity to the query"
        )
    plots.text(img, note, (20, 52), SMALL, plots.BLUE)
    if mode == "2d" and prof is not None:
        lo, hi = float(prof.min()), float(prof.max())
        ramp = plots.colour_ramp(60)
        _colour_bar(img, w - 250, 24, 220, ramp, f"{lo:.3f}", f"{hi:.3f}", "similarity (rank)")
    else:
        ramp = plots.colour_ramp(60)
        _colour_bar(img, w - 250, 24, 220, ramp, "first", "last", "colour: place order")
    keys = []
    if result is not None:
        keys.append(("o 1..k: top-k by rank   + estimate", plots.RED))
    if truth:
        keys.append(("triangles: right places", plots.GREEN))
    for j, (s, c) in enumerate(keys):
        plots.text(img, s, (w - 330 - 0 * j, 74 + 18 * j), SMALL, c)
