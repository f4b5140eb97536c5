"""Image dimensions read from the file header, before any pixel is decoded.

:func:`read_header` knows JPEG (the first SOF marker, found the way libjpeg walks markers),
PNG (IHDR), BMP, WebP (VP8, VP8L, VP8X), TIFF (first IFD, with its sample format), binary/ASCII
PNM, PFM, Radiance HDR, GIF and Sun raster. It returns ``None`` for any other format and raises
:class:`HeaderError` for a recognised format whose header is truncated or inconsistent.
``float_samples`` says the file holds floating-point pixels (PFM, HDR, a TIFF with
SampleFormat 3): they must be decoded as floats and checked for NaN/inf before they become
8-bit, which OpenCV would otherwise do silently.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNM = re.compile(rb"P[1-6](?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)")
_PFM = re.compile(rb"P[Ff]\s+(\d+)\s+(\d+)\s")
_HDR_SIZE = re.compile(rb"\n\n([-+])Y (\d+) ([-+])X (\d+)\n")
_SUN_RASTER = b"\x59\xa6\x6a\x95"


class HeaderError(ValueError):
    """A recognised image format whose header cannot be read."""


class ImageHeader(NamedTuple):
    """What the header says: format name, size and whether the samples are floats."""

    format: str
    width: int
    height: int
    float_samples: bool = False


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the header of an encoded image, or None when the format is
    not one of those listed in the module docstring."""
    header = read_header(data)
    return None if header is None else (header.width, header.height)


def read_header(data: bytes) -> ImageHeader | None:
    """The :class:`ImageHeader` of an encoded image, or None for an unknown format."""
    try:
        if data[:2] == b"\xff\xd8":
            return ImageHeader("JPEG", *_jpeg(data))
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            if data[12:16] != b"IHDR":
                raise HeaderError("PNG without IHDR")
            return ImageHeader("PNG", *struct.unpack(">II", data[16:24]))
        if data[:2] == b"BM":
            return ImageHeader("BMP", *_bmp(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return ImageHeader("WebP", *_webp(data))
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff(data)
        if data[:1] == b"P" and data[1:2] in b"123456":
            m = _PNM.match(data[:1024])
            if not m:
                raise HeaderError("PNM header")
            return ImageHeader("PNM", int(m.group(1)), int(m.group(2)))
        if data[:2] in (b"PF", b"Pf"):
            m = _PFM.match(data[:1024])
            if not m:
                raise HeaderError("PFM header")
            return ImageHeader("PFM", int(m.group(1)), int(m.group(2)), True)
        if data[:2] == b"#?":
            m = _HDR_SIZE.search(data[:4096])
            if not m:
                raise HeaderError("Radiance HDR header")
            return ImageHeader("HDR", int(m.group(4)), int(m.group(2)), True)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return ImageHeader("GIF", *struct.unpack("<HH", data[6:10]))
        if data[:4] == _SUN_RASTER:
            return ImageHeader("Sun raster", *struct.unpack(">II", data[4:12]))
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


def _tiff(data: bytes) -> ImageHeader:
    e = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(e + "I", data[4:8])
    (count,) = struct.unpack(e + "H", data[offset : offset + 2])
    size: dict[int, int] = {}
    for k in range(count):
        entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
        tag, typ, num = struct.unpack(e + "HHI", entry[:8])
        if tag in (256, 257, 339) and typ in (3, 4) and (num == 1 or tag == 339):
            fmt = e + ("H" if typ == 3 else "I")
            # SampleFormat (339) may list one value per channel; more than fit in the entry
            # are stored elsewhere: then the first is read from there
            where = entry[8:12] if num * struct.calcsize(fmt) <= 4 else _at(data, entry, e)
            size[tag] = struct.unpack(fmt, where[: struct.calcsize(fmt)])[0]
    if 256 not in size or 257 not in size:
        raise HeaderError("TIFF without width/height")
    return ImageHeader("TIFF", size[256], size[257], size.get(339) == 3)


def _at(data: bytes, entry: bytes, e: str) -> bytes:
    (offset,) = struct.unpack(e + "I", entry[8:12])
    return data[offset : offset + 4]
