"""Small charts and image tiles drawn with OpenCV (no plotting library in the runtime).

Images are uint8 BGR arrays; :func:`png_bytes` / :func:`data_uri` encode them for files and
self-contained HTML.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConfigError

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (170, 170, 170)
GREEN, RED, BLUE, ORANGE = (60, 160, 40), (40, 40, 210), (200, 110, 30), (20, 140, 240)
PALETTE = [BLUE, ORANGE, GREEN, RED, (150, 80, 150)]


@dataclass(frozen=True)
class Series:
    """One line of a chart: ``xs``/``ys`` in data units, a legend label and a BGR colour."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: tuple[int, int, int] = BLUE
    markers: bool = False


def text(
    img: np.ndarray,
    s: str,
    org: tuple[int, int],
    scale: float = 0.45,
    color=BLACK,
    thickness: int = 1,
    bg: tuple[int, int, int] | None = None,
) -> None:
    """Draw ``s`` with its baseline-left at ``org`` (optionally on a filled box)."""
    if bg is not None:
        (w, h), base = cv2.getTextSize(s, FONT, scale, thickness)
        x, y = org
        cv2.rectangle(img, (x - 2, y - h - 3), (x + w + 2, y + base), bg, -1)
    cv2.putText(img, s, org, FONT, scale, color, thickness, cv2.LINE_AA)


def line_chart(
    series: Sequence[Series],
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float],
    ylim: tuple[float, float] = (0.0, 100.0),
    xticks: Sequence[float] | None = None,
    size: tuple[int, int] = (600, 400),
) -> np.ndarray:
    """A line chart (axes, grid, ticks, legend) as a BGR image of ``size`` (width, height).

    Top to bottom: the title, then the y-axis label on its own line above the plot (never
    over the title), the plot, the x ticks and the x-axis label."""
    w, h = size
    left, right, top, bottom = 58, 16, 62, 50
    img = np.full((h, w, 3), 255, np.uint8)
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    (xa, xb), (ya, yb) = xlim, ylim
    if xb <= xa or yb <= ya:
        raise ConfigError(f"chart limits must increase: x {xlim}, y {ylim}")

    def px(x: float, y: float) -> tuple[int, int]:
        return (
            int(round(x0 + (x - xa) / (xb - xa) * (x1 - x0))),
            int(round(y1 - (y - ya) / (yb - ya) * (y1 - y0))),
        )

    for t in np.linspace(ya, yb, 6):
        p = px(xa, t)
        cv2.line(img, (x0, p[1]), (x1, p[1]), (232, 232, 232), 1)
        text(img, f"{t:g}", (6, p[1] + 5), 0.45)
    for t in xticks if xticks is not None else np.linspace(xa, xb, 6):
        p = px(t, ya)
        cv2.line(img, (p[0], y0), (p[0], y1), (232, 232, 232), 1)
        text(img, f"{t:g}", (p[0] - 8, y1 + 18), 0.45)
    cv2.rectangle(img, (x0, y0), (x1, y1), GREY, 1)
    for s in series:
        pts = np.array([px(x, y) for x, y in zip(s.xs, s.ys, strict=True)], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, s.color, 2, cv2.LINE_AA)
        if s.markers or len(pts) == 1:
            for p in pts:
                cv2.circle(img, tuple(int(v) for v in p), 4, s.color, -1, cv2.LINE_AA)
    text(img, title, (x0, 24), 0.62, thickness=1)
    text(img, xlabel, ((x0 + x1) // 2 - 4 * len(xlabel), h - 12), 0.48)
    text(img, ylabel, (6, y0 - 12), 0.46, (90, 90, 90))
    for i, s in enumerate(series):  # legend, bottom right inside the plot
        y = y1 - 10 - 18 * (len(series) - 1 - i)
        cv2.line(img, (x1 - 190, y - 4), (x1 - 170, y - 4), s.color, 3)
        text(img, s.label[:26], (x1 - 165, y), 0.42, bg=WHITE)
    return img


def fit(img: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """``img`` resized to ``height`` (keeping aspect ratio), then padded/cropped to ``width``."""
    h, w = img.shape[:2]
    new_w = max(1, int(round(w * height / h)))
    out = cv2.resize(img, (new_w, height), interpolation=cv2.INTER_AREA)
    if width is None or width == new_w:
        return out
    if new_w > width:
        x = (new_w - width) // 2
        return np.ascontiguousarray(out[:, x : x + width])
    pad = np.full((height, width, 3), 255, np.uint8)
    pad[:, (width - new_w) // 2 : (width - new_w) // 2 + new_w] = out
    return pad


def tile(
    img: np.ndarray,
    lines: Sequence[str],
    border: tuple[int, int, int] | None,
    height: int = 150,
    width: int = 220,
) -> np.ndarray:
    """An image fitted to ``height`` x ``width`` with a coloured border and caption lines."""
    pic = fit(img, height, width)
    if border is not None:
        cv2.rectangle(pic, (0, 0), (width - 1, height - 1), border, 5)
    cap = np.full((16 * len(lines) + 6, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        text(cap, line[:34], (4, 16 * i + 15), 0.42)
    return np.vstack([pic, cap])


def hstack(tiles: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    """Tiles side by side on white, top-aligned."""
    h = max(t.shape[0] for t in tiles)
    parts = []
    for i, t in enumerate(tiles):
        col = np.full((h, t.shape[1], 3), 255, np.uint8)
        col[: t.shape[0]] = t
        parts.append(col)
        if i < len(tiles) - 1:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
    return np.hstack(parts)


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ConfigError("could not encode a PNG image")
    return buf.tobytes()


def data_uri(img: np.ndarray, fmt: str = "png") -> str:
    """``data:image/...;base64,...`` for embedding ``img`` in HTML (png, or jpeg for photos)."""
    if fmt == "png":
        data, mime = png_bytes(img), "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise ConfigError("could not encode a JPEG image")
        data, mime = buf.tobytes(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def write_png(img: np.ndarray, path) -> None:
    """Write ``img`` as a PNG atomically."""
    from ..atomic import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(img))


PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def check_picture_path(path) -> str:
    """The format a picture at ``path`` is written in, from its extension (``.png``, ``.jpg``,
    ``.jpeg``); anything else is refused before any work is done."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in PICTURE_FORMATS:
        raise ConfigError(
            f"{path}: cannot write a picture with extension {suffix or '(none)'!r}; "
            f"name it .png or .jpg"
        )
    return PICTURE_FORMATS[suffix]


def write_picture(img: np.ndarray, path) -> None:
    """Write ``img`` atomically in the format its extension names (PNG or JPEG, quality 92)."""
    from ..atomic import atomic_write_bytes

    if check_picture_path(path) == "PNG":
        atomic_write_bytes(path, png_bytes(img))
        return
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ConfigError("could not encode a JPEG image")
    atomic_write_bytes(path, buf.tobytes())


def colour_ramp(n: int) -> list[tuple[int, int, int]]:
    """``n`` BGR colours along a perceptual ramp (viridis), first to last."""
    ramp = cv2.applyColorMap(
        np.linspace(0, 255, max(n, 1)).astype(np.uint8)[:, None], cv2.COLORMAP_VIRIDIS
    )
    return [tuple(int(c) for c in ramp[i, 0]) for i in range(n)]
