"""Image messages → BGR frames: every supported encoding converts to the right pixels, the rest
is refused clearly, and compressed images go through the bounded decoder."""

from __future__ import annotations

import struct
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from sfrs_edge.errors import ImageError
from sfrs_edge.ros.frames import (
    COMPRESSED,
    IMAGE,
    UnsupportedImage,
    compressed_to_bgr,
    message_to_bgr,
    raw_to_bgr,
)

H, W = 48, 64


@pytest.fixture(scope="module")
def bgr() -> np.ndarray:
    """A smooth colour image (gradients in each channel: demosaicing can recover it)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    b = 40 + 150 * x / W
    g = 60 + 120 * y / H
    r = 200 - 120 * (x + y) / (W + H)
    return np.dstack([b, g, r]).round().astype(np.uint8)


def raw(pixels: np.ndarray, encoding: str, pad: int = 0, bigendian: int = 0):
    h, w = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(h, -1)
    step = rows.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    return SimpleNamespace(
        height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=step,
        data=data.reshape(-1),
    )  # fmt: skip


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """A Bayer mosaic: ``pattern`` names the colours of the top-left 2x2 block, row by row."""
    ch = {"r": 2, "g": 1, "b": 0}
    out = np.zeros(bgr.shape[:2], np.uint8)
    for k, c in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = bgr[dy::2, dx::2, ch[c]]
    return out


def test_colour_and_grey_encodings(bgr):
    assert np.array_equal(raw_to_bgr(raw(bgr, "bgr8")), bgr)
    assert np.array_equal(raw_to_bgr(raw(bgr[:, :, ::-1], "rgb8")), bgr)
    alpha = np.full((H, W, 1), 7, np.uint8)
    assert np.array_equal(raw_to_bgr(raw(np.dstack([bgr, alpha]), "bgra8")), bgr)
    assert np.array_equal(raw_to_bgr(raw(np.dstack([bgr[:, :, ::-1], alpha]), "rgba8")), bgr)
    assert np.array_equal(raw_to_bgr(raw(bgr, "bgr8", pad=13)), bgr)  # padded rows
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    out = raw_to_bgr(raw(grey, "mono8"))
    assert out.shape == (H, W, 3) and all(np.array_equal(out[:, :, c], grey) for c in range(3))
    wide = grey.astype(np.uint16) * 256 + 99  # the high byte is the grey value
    for order, big in (("<u2", 0), (">u2", 1)):
        out = raw_to_bgr(raw(wide.astype(order), "mono16", bigendian=big))
        assert np.array_equal(out[:, :, 0], grey), order
    uyvy = np.zeros((H, W, 2), np.uint8)
    uyvy[:, :, 0] = 128  # U and V alternate in channel 0: neutral chroma
    uyvy[:, :, 1] = grey
    video_range = np.clip((grey.astype(float) - 16) * 255 / 219, 0, 255)  # BT.601 luma
    for enc, planes in (("yuv422", uyvy), ("yuv422_yuy2", uyvy[:, :, ::-1])):
        out = raw_to_bgr(raw(np.ascontiguousarray(planes), enc))
        assert np.abs(out[:, :, 1] - video_range).max() <= 2, enc


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_patterns_demosaic_to_the_right_colours(bgr, pattern):
    out = raw_to_bgr(raw(mosaic(bgr, pattern), f"bayer_{pattern}8"))
    inner = (slice(2, -2), slice(2, -2))  # demosaicing borders are approximate
    err = np.abs(out[inner].astype(int) - bgr[inner]).mean(axis=(0, 1))
    assert err.max() < 4, err
    # read as if it were another pattern, red and blue are wrong: the mapping matters
    wrong = {"rggb": "bggr", "bggr": "rggb", "gbrg": "grbg", "grbg": "gbrg"}[pattern]
    bad = raw_to_bgr(raw(mosaic(bgr, pattern), f"bayer_{wrong}8"))
    assert np.abs(bad[inner].astype(int) - bgr[inner]).mean(axis=(0, 1)).max() > 20
    m16 = mosaic(bgr, pattern).astype("<u2") * 256
    out16 = raw_to_bgr(raw(m16, f"bayer_{pattern}16"))
    assert np.abs(out16[inner].astype(int) - bgr[inner]).mean() < 4


def test_bad_raw_images_are_refused(bgr):
    with pytest.raises(UnsupportedImage, match=r"unsupported image encoding '32FC1'.*bgr8"):
        raw_to_bgr(raw(np.zeros((H, W), np.float32), "32FC1"))
    msg = raw(bgr, "bgr8")
    msg.data = msg.data[:-1]
    with pytest.raises(ImageError, match="bytes of data for 48 rows"):
        raw_to_bgr(msg)
    msg = raw(bgr, "bgr8")
    msg.step = W * 3 - 1
    with pytest.raises(ImageError, match="step 191 is shorter"):
        raw_to_bgr(msg)
    huge = SimpleNamespace(height=20000, width=20000, encoding="mono8", is_bigendian=0,
                           step=20000, data=np.zeros(16, np.uint8))  # fmt: skip
    with pytest.raises(ImageError, match="over the 100 MP limit"):
        raw_to_bgr(huge)
    empty = SimpleNamespace(height=0, width=5, encoding="mono8", is_bigendian=0, step=5, data=b"")
    with pytest.raises(ImageError, match="5x0"):
        raw_to_bgr(empty)
    with pytest.raises(UnsupportedImage, match="not an image message"):
        message_to_bgr(msg, "sensor_msgs/msg/NavSatFix")


def _png_header_claiming(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def test_compressed_images(bgr):
    ok, jpg = cv2.imencode(".jpg", bgr)
    msg = SimpleNamespace(format="jpeg", data=jpg.tobytes())
    assert np.array_equal(compressed_to_bgr(msg), cv2.imdecode(jpg, cv2.IMREAD_COLOR))
    msg.format = "bgr8; jpeg compressed bgr8"  # image_transport's form
    assert np.array_equal(message_to_bgr(msg, COMPRESSED), cv2.imdecode(jpg, cv2.IMREAD_COLOR))
    ok, png = cv2.imencode(".png", bgr[:, :, ::-1])  # an encoder fed RGB, as the format says
    rgb_msg = SimpleNamespace(format="rgb8; png compressed rgb8", data=np.frombuffer(png, np.uint8))
    assert np.array_equal(compressed_to_bgr(rgb_msg), bgr)
    with pytest.raises(UnsupportedImage, match="compressedDepth"):
        compressed_to_bgr(SimpleNamespace(format="16UC1; compressedDepth png", data=png.tobytes()))
    with pytest.raises(UnsupportedImage, match="unsupported compressed format 'h264'"):
        compressed_to_bgr(SimpleNamespace(format="h264", data=png.tobytes()))
    # the header is checked before decoding: a claimed 20000x20000 PNG is refused unread
    with pytest.raises(ImageError, match="over the 100 MP limit"):
        compressed_to_bgr(SimpleNamespace(format="png", data=_png_header_claiming(20000, 20000)))
    with pytest.raises(ImageError, match="empty"):
        compressed_to_bgr(SimpleNamespace(format="jpeg", data=b""))
    with pytest.raises(ImageError, match="not a readable image"):
        compressed_to_bgr(SimpleNamespace(format="jpeg", data=jpg.tobytes()[:40]))
    assert message_to_bgr(raw(bgr, "bgr8"), IMAGE).shape == (H, W, 3)
