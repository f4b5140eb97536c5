"""The runtime on bad input images: clear ImageErrors or documented conversions, never a crash."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfrs_edge import images
from sfrs_edge.errors import ImageError
from sfrs_edge.images import decode_image, read_image, to_bgr8


def _encode(ext: str, array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, array)
    assert ok
    return buf.tobytes()


def _check_valid(out: np.ndarray) -> None:
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert min(out.shape[:2]) >= images.MIN_SIDE
    assert out.flags.c_contiguous


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_decode_or_image_error(data):
    try:
        out = decode_image(data, "fuzz")
    except ImageError as exc:
        assert "fuzz" in str(exc)
    else:
        _check_valid(out)


_PNG = _encode(".png", np.random.default_rng(1).integers(0, 255, (24, 40, 3), np.uint8))
_JPG = _encode(".jpg", np.random.default_rng(2).integers(0, 255, (24, 40, 3), np.uint8))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([_PNG, _JPG]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_real_images_decode_or_image_error(base, flips, cut):
    """Corrupted and truncated real PNG/JPEG files: random bytes rarely reach the decoders."""
    data = bytearray(base)
    for pos, val in flips:
        data[pos % len(data)] = val
    data = bytes(data[: max(1, len(data) - cut % len(data))])
    try:
        out = decode_image(data, "mutated")
    except ImageError:
        return
    _check_valid(out)


def test_zero_byte_and_missing_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: file is empty"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        read_image(tmp_path)


def test_grayscale_16bit_rgba_are_converted(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 255, (30, 50), np.uint8)
    out = decode_image(_encode(".png", gray))
    _check_valid(out)
    np.testing.assert_array_equal(out[:, :, 0], gray)
    np.testing.assert_array_equal(out[:, :, 2], gray)
    deep = (gray.astype(np.uint16) << 8) | 0x7F
    out16 = decode_image(_encode(".png", deep))
    np.testing.assert_array_equal(out16[:, :, 1], gray)
    bgra = np.dstack([rng.integers(0, 255, (30, 50, 3), np.uint8), np.full((30, 50), 9, np.uint8)])
    out4 = decode_image(_encode(".png", bgra))
    np.testing.assert_array_equal(out4, bgra[:, :, :3])
    floats = to_bgr8(np.full((20, 20, 3), 0.5, np.float32))
    assert floats.dtype == np.uint8 and int(floats[0, 0, 0]) == 127


def test_tiny_and_huge_images_rejected(monkeypatch):
    with pytest.raises(ImageError, match="at least 16x16"):
        decode_image(_encode(".png", np.zeros((8, 200, 3), np.uint8)), "tiny.png")
    huge_view = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (12_000, 9_000, 3))
    with pytest.raises(ImageError, match="MP limit"):
        to_bgr8(huge_view, "huge")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="over the"):
        decode_image(_encode(".png", np.zeros((40, 40, 3), np.uint8)), "big.png")


def test_bad_arrays_to_bgr8():
    with pytest.raises(ImageError, match="5 channels"):
        to_bgr8(np.zeros((20, 20, 5), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        to_bgr8(np.full((20, 20, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="unsupported pixel type"):
        to_bgr8(np.zeros((20, 20, 3), np.int64))
    with pytest.raises(ImageError, match="expected an HxW"):
        to_bgr8(np.zeros((2, 20, 20, 3), np.uint8))
