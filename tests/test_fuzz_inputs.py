"""Property-based fuzzing of every input parser: only the package's own errors, or valid results.

Budgets are small (about a minute in total on a 2-core CI machine); the fuller campaign with
before/after counts is ``python -m benchmarks.fuzz_campaign`` (see docs/RELIABILITY.md).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfrs_edge import images
from sfrs_edge.errors import ConfigError, ImageError, SfrsEdgeError
from sfrs_edge.image_header import HeaderError, image_size
from sfrs_edge.images import decode_image, read_image
from sfrs_edge.maps.poses import match_poses, read_exif_gps, read_poses_csv
from sfrs_edge.video.tracks import Track

FAST = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _encode(ext: str, array: np.ndarray) -> bytes:
    return cv2.imencode(ext, array)[1].tobytes()


_RNG = np.random.default_rng(7)
_SEEDS = {
    ext: _encode(ext, _RNG.integers(0, 255, (40, 56, 3), np.uint8))
    for ext in (".jpg", ".png", ".bmp", ".webp", ".tif", ".ppm")
}


def _valid_image(out) -> None:
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert min(out.shape[:2]) >= images.MIN_SIDE
    assert out.shape[0] * out.shape[1] <= images.MAX_PIXELS


# --- images ----------------------------------------------------------------------------------


@FAST
@given(
    st.sampled_from(sorted(_SEEDS)),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=12),
    st.integers(0, 1 << 16),
)
def test_mutated_and_truncated_images(ext, flips, cut):
    data = bytearray(_SEEDS[ext])
    for pos, val in flips:
        data[pos % len(data)] = val
    data = bytes(data[: max(0, len(data) - cut % (len(data) + 1))])
    try:
        _valid_image(decode_image(data, "fuzz"))
    except ImageError as exc:
        assert "fuzz" in str(exc)


def _png(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    return (
        b"\x89PNG\r\n\x1a\n"
        + ihdr
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg_with_size(w: int, h: int) -> bytes:
    base = _SEEDS[".jpg"]
    i = base.find(b"\xff\xc0")
    return base[: i + 5] + struct.pack(">HH", h, w) + base[i + 9 :]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["png", "jpg", "bmp", "ppm"]), st.integers(0, 65535), st.integers(0, 65535))
def test_crafted_header_dimensions_checked_before_decoding(kind, w, h):
    """Any claimed size: refused from the header when over the limit, never decoded first."""
    data = {
        "png": lambda: _png(w, h),
        "jpg": lambda: _jpeg_with_size(w, h),
        "bmp": lambda: b"BM" + b"\0" * 12 + struct.pack("<Iii", 40, w, h) + b"\0" * 40,
        "ppm": lambda: f"P6 {w} {h} 255\n".encode() + b"\0" * 64,
    }[kind]()
    assert image_size(data) == (w, h)
    try:
        _valid_image(decode_image(data, "crafted"))
    except ImageError as exc:
        if w * h > images.MAX_PIXELS:
            assert "MP limit" in str(exc)


def test_huge_header_refused_without_allocating(monkeypatch):
    """The issue's 38 KB JPEG claiming 65535x65535: refused before cv2 sees it."""
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoder reached"))
    for data in (_jpeg_with_size(65535, 65535), _png(100_000, 100_000), _png(2**31 - 1, 1)):
        with pytest.raises(ImageError, match="over the 100 MP limit|at least 16x16"):
            decode_image(data, "huge")


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes_header_parser(data):
    try:
        size = image_size(data)
    except HeaderError:
        return
    assert size is None or (isinstance(size[0], int) and isinstance(size[1], int))


# --- EXIF ------------------------------------------------------------------------------------

_ENTRY = st.tuples(
    st.sampled_from([0x8825, 0x8769, 1, 2, 3, 4, 17, 0x9003, 0x1234]),
    st.sampled_from([1, 2, 3, 4, 5, 7, 9, 10, 11, 0]),
    st.integers(0, 2**32 - 1) | st.integers(0, 4),
    st.integers(0, 2**32 - 1) | st.integers(0, 64),
)


def _exif_jpeg(entries, endian: str, tail: bytes) -> bytes:
    body = struct.pack(endian + "H", len(entries))
    body += b"".join(struct.pack(endian + "HHII", *e) for e in entries) + b"\0\0\0\0"
    tiff = (b"II" if endian == "<" else b"MM") + struct.pack(endian + "HI", 42, 8) + body + tail
    app1 = b"Exif\0\0" + tiff
    return b"\xff\xd8\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xd9"


@FAST
@given(st.lists(_ENTRY, max_size=8), st.sampled_from("<>"), st.binary(max_size=128))
def test_exif_blobs_give_gps_or_none(tmp_path_factory, entries, endian, tail):
    path = tmp_path_factory.mktemp("exif") / "x.jpg"
    path.write_bytes(_exif_jpeg(entries, endian, tail))
    pose = read_exif_gps(path)
    if pose is not None:
        lat, lon = pose.position
        assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_gps_pointer_typed_as_text_means_no_gps(tmp_path):
    path = tmp_path / "text_pointer.jpg"
    path.write_bytes(_exif_jpeg([(0x8825, 2, 4, int.from_bytes(b"abc\0", "little"))], "<", b""))
    assert read_exif_gps(path) is None


# --- CSV and GPX -----------------------------------------------------------------------------

_CELL = st.sampled_from(
    ["1.5", "-3", "nan", "inf", "", "abc", "1e400", "91", "-181", "2024-01-01T00:00:00Z", "é", '"']
) | st.floats(-200, 200).map(str)
_NAME = st.sampled_from(["a.jpg", "b.jpg", "a/x.jpg", "b/x.png", "c.png", ""])


@FAST
@given(
    st.sampled_from([["name", "lat", "lon"], ["name", "x", "y", "z", "heading"], ["name", "x"]]),
    st.lists(st.tuples(_NAME, st.lists(_CELL, min_size=0, max_size=5)), max_size=6),
    st.booleans(),
)
def test_positions_csv(tmp_path_factory, header, rows, break_utf8):
    text = ",".join(header) + "\n"
    text += "".join(",".join([n, *cells]) + "\n" for n, cells in rows)
    data = text.encode()
    if break_utf8:
        data = data.replace(b"a", b"\xff", 1)
    path = tmp_path_factory.mktemp("pos") / "pos.csv"
    path.write_bytes(data)
    try:
        table = read_poses_csv(path)
    except ConfigError as exc:
        assert "pos.csv" in str(exc)
        return
    for pose in table.values():
        assert all(np.isfinite(pose.position))
    names = [Path(k).stem + ".tif" for k in table]
    try:
        match_poses(names, table, str(path), allow_missing=True)
    except ConfigError as exc:
        assert "matches rows" in str(exc)


@FAST
@given(
    st.sampled_from([["t", "lat", "lon"], ["time", "x", "y", "heading"], ["timestamp", "x"]]),
    st.lists(st.lists(_CELL, min_size=1, max_size=4), max_size=6),
)
def test_tracks_csv(tmp_path_factory, header, rows):
    path = tmp_path_factory.mktemp("trk") / "track.csv"
    path.write_text(",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows))
    try:
        track = Track.read(path)
    except ConfigError as exc:
        assert "track.csv" in str(exc)
        return
    assert np.isfinite(track.times).all() and np.isfinite(track.positions).all()
    track.at(float(track.times[0]))


_POINT = st.tuples(
    st.sampled_from(["1.5", "91", "nan", "x", "", "-33.9"]),
    st.sampled_from(["2.5", "-181", "inf", "151.2"]),
    st.sampled_from(["2024-01-01T00:00:01Z", "", "zzz", "12", "9999-12-31T23:59:59+14:00"]),
)


@FAST
@given(
    st.lists(_POINT, max_size=5),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
)
def test_gpx(tmp_path_factory, points, flips):
    body = "".join(f'<trkpt lat="{a}" lon="{o}"><time>{t}</time></trkpt>' for a, o, t in points)
    data = bytearray(
        f'<?xml version="1.0"?><gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        f"{body}</trkseg></trk></gpx>".encode()
    )
    for pos, val in flips:
        data[pos % len(data)] = val
    path = tmp_path_factory.mktemp("gpx") / "t.gpx"
    path.write_bytes(bytes(data))
    try:
        track = Track.read(path)
    except SfrsEdgeError as exc:
        assert "t.gpx" in str(exc)
        return
    assert (np.abs(track.positions[:, 0]) <= 90).all() and (
        np.abs(track.positions[:, 1]) <= 180
    ).all()


def test_real_images_still_decode(gardens_point):
    for path in sorted((gardens_point / "day_left").iterdir())[:3]:
        _valid_image(read_image(path))
