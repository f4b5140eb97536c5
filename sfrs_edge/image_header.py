"""Image dimensions read from the file header, before any pixel is decoded.

:func:`image_size` knows JPEG (the first SOF marker, found the way libjpeg walks markers),
PNG (IHDR), BMP, WebP (VP8, VP8L, VP8X), TIFF (first IFD) and binary/ASCII PNM. It returns
``None`` for any other format and raises :class:`HeaderError` for a recognised format whose
header is truncated or inconsistent.
"""

from __future__ import annotations

import re
import struct

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNM = re.compile(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)")


class HeaderError(ValueError):
    """A recognised image format whose header cannot be read."""


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of an encoded image, or None when the format is
    not one of those listed in the module docstring."""
    try:
        if data[:2] == b"\xff\xd8":
            return _jpeg(data)
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            if data[12:16] != b"IHDR":
                raise HeaderError("PNG without IHDR")
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM":
            return _bmp(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
        if data[:1] == b"P" and data[1:2] in b"123456":
            m = _PNM.match(data[:1024])
            if not m:
                raise HeaderError("PNM header")
            return int(m.group(1)), int(m.group(2))
    except struct.error:
        raise HeaderError("truncated header") from None
    return None


def _jpeg(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:  # libjpeg skips stray bytes to the next marker
            i = data.find(b"\xff", i)
            if i < 0:
                break
            continue
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            continue  # markers without a length
        if marker in (0xD9, 0xDA):
            raise HeaderError("JPEG has no frame header before its image data")
        (length,) = struct.unpack(">H", data[i : i + 2])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return width, height
        if length < 2:
            raise HeaderError("JPEG marker length")
        i += length
    raise HeaderError("JPEG has no frame header")


def _bmp(data: bytes) -> tuple[int, int]:
    (dib,) = struct.unpack("<I", data[14:18])
    if dib == 12:
        return struct.unpack("<HH", data[18:22])
    w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)


def _webp(data: bytes) -> tuple[int, int]:
    kind = data[12:16]
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        (b,) = struct.unpack("<I", data[21:25])
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        if len(data) < 30:
            raise HeaderError("truncated WebP header")
        return w, h
    raise HeaderError("unknown WebP chunk")


def _tiff(data: bytes) -> tuple[int, int]:
    e = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(e + "I", data[4:8])
    (count,) = struct.unpack(e + "H", data[offset : offset + 2])
    size: dict[int, int] = {}
    for k in range(count):
        entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
        tag, typ, num = struct.unpack(e + "HHI", entry[:8])
        if tag in (256, 257) and num == 1 and typ in (3, 4):
            fmt = e + ("H" if typ == 3 else "I")
            size[tag] = struct.unpack(fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    if 256 not in size or 257 not in size:
        raise HeaderError("TIFF without width/height")
    return size[256], size[257]
