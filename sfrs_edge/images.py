"""Image decoding and the resize rule, shared by training, export verification and runtime.

One place decides how a file becomes the uint8 array a model sees, so the torch model and the
exported model are always fed identical pixels.

**Bounded decoding.** Reading one image never takes more than about
``MAX_FILE_BYTES + MAX_DECODE_BYTES`` (256 MiB of file + 600 MB for decoding), plus the
model-sized resize output: only regular files are opened (non-blocking, so a FIFO cannot hang
the caller; devices such as ``/dev/zero`` are refused), the file size is capped before it is
read, and the dimensions in the header (:mod:`sfrs_edge.image_header`) are checked before any
pixel is decoded against what the decoder will need: OpenCV decodes into an image of its own
and returns a copy, so an 8-bit BGR decode peaks at 6 bytes per pixel (100 MP), a GIF at 12
(50 MP) and a float image at 24 (25 MP); measured with OpenCV 5.0, see docs/RELIABILITY.md.
Formats without a header parser are refused: their decoders' memory is not bounded by the
header check. Float images (PFM, Radiance HDR, float TIFF) are decoded as floats and refused
when they hold NaN or inf, before they become 8-bit. Every OpenCV error becomes an
:class:`ImageError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2  # OPENCV_IO_MAX_IMAGE_PIXELS is already set: sfrs_edge/__init__ runs first
import numpy as np

from ._opencv_limits import MAX_PIXELS
from .bounded_read import display_name, read_bounded
from .errors import ImageError
from .image_header import HeaderError, read_header
from .jpeg_damage import decode_watching_libjpeg
from .model_info import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MIN_SIDE = 16
MAX_FILE_BYTES = 256 * 2**20  # a 100 MP PNG of a real scene is well below this
# Peak bytes per pixel while OpenCV 5.0 decodes (its own image + the copy it returns), measured
# with ru_maxrss on 25-100 MP files (docs/RELIABILITY.md, "Memory bound"); 8-bit BGR otherwise.
DECODE_PEAK_BYTES = {"GIF": 12, "float": 24}
DEFAULT_DECODE_PEAK = 6
MAX_DECODE_BYTES = DEFAULT_DECODE_PEAK * MAX_PIXELS  # 600 MB: 100 MP of 8-bit BGR


def check_utf8_name(path: str | os.PathLike) -> None:
    """Refuse a file name that is not valid UTF-8: it could not be stored in a map's metadata
    (SQLite, JSON) or printed; renaming the file is the fix."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ImageError(
            f"{display_name(path)}: file name is not valid UTF-8; rename the file"
        ) from None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name. Raises if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def to_bgr8(image: np.ndarray, source: str = "image") -> np.ndarray:
    """Convert a decoded array to contiguous uint8 BGR HxWx3.

    Grayscale is replicated to 3 channels, alpha is dropped (composited on black is what the
    camera would see of a transparent pixel: nothing), 16-bit and float images are scaled
    (floats: 0..1 when the maximum is at most 1, else 0..255; NaN/inf refused).
    """
    return _to_bgr8(image, source, owned=False)


def _to_bgr8(image: np.ndarray, source: str, owned: bool) -> np.ndarray:
    """:func:`to_bgr8`; ``owned``: the array is ours to overwrite (a float decode is scaled in
    place, so converting it needs no float-sized temporary)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ImageError(
            f"{source}: expected an HxW or HxWxC array, got {getattr(image, 'shape', type(image))}"
        )
    if image.size == 0:
        raise ImageError(f"{source}: image is empty (shape {image.shape})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ImageError(f"{source}: image contains NaN or infinite values")
        scale = image.dtype.type(255.0 if image.max() <= 1.0 else 1.0)
        scaled = np.multiply(image, scale, out=image if owned else None)
        image = np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageError(f"{source}: {image.shape[2]} channels; expected 1, 3 or 4")
    _check_size(image.shape[1], image.shape[0], source)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _check_size(w: int, h: int, source: str, max_pixels: int | None = None, kind: str = "") -> None:
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{source}: image is {w}x{h}; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if h * w > max_pixels:
        raise ImageError(
            f"{source}: image is {w}x{h}, over the {max_pixels // 1_000_000} MP limit{kind}"
        )


@dataclass(frozen=True)
class Decoded:
    """A decoded image and, for a JPEG whose data libjpeg found damaged (and decoded anyway,
    filling what it could not read), libjpeg's warning."""

    image: np.ndarray
    damage: str | None = None


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to uint8 BGR HxWx3.

    The header's dimensions are checked before decoding against the decoder's peak memory
    (see the module docstring); 16-bit images are reduced to their high byte and alpha is
    dropped by the decoder itself; float images are decoded as floats, refused when they hold
    NaN or inf, and scaled like float frames (:func:`to_bgr8`). A JPEG with damaged data is
    refused (:func:`decode_image_tolerant` decodes it and says so).
    """
    decoded = decode_image_tolerant(data, source)
    if decoded.damage is not None:
        raise ImageError(
            f"{source}: damaged JPEG data (libjpeg: {decoded.damage}); the file is corrupt, "
            "copy it again"
        )
    return decoded.image


def decode_image_tolerant(data: bytes, source: str = "image") -> Decoded:
    """:func:`decode_image`, except that a JPEG with damaged data is decoded the way libjpeg
    can and returned with its warning in :attr:`Decoded.damage` (every other check holds)."""
    if len(data) == 0:
        raise ImageError(f"{source}: file is empty (0 bytes)")
    try:
        header = read_header(data)
    except HeaderError as exc:
        raise ImageError(f"{source}: not a readable image (corrupt header: {exc})") from None
    if header is None:
        raise ImageError(
            f"{source}: unrecognised image format (JPEG, PNG, BMP, WebP, TIFF, PNM, PFM, HDR, "
            "GIF or Sun raster expected)"
        )
    kind = "float" if header.float_samples else header.format
    peak = DECODE_PEAK_BYTES.get(kind, DEFAULT_DECODE_PEAK)
    note = f" for {kind} images" if peak != DEFAULT_DECODE_PEAK else ""
    _check_size(header.width, header.height, source, MAX_DECODE_BYTES // peak, note)
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    if header.float_samples:  # else OpenCV casts to 8-bit: NaN and 0..1 become 0
        # ANYCOLOR: OpenCV cannot expand a one-channel float TIFF to colour (to_bgr8 does)
        flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION
    buf = np.frombuffer(data, dtype=np.uint8)
    warnings: list[str] = []
    try:
        if header.format == "JPEG":
            image, warnings = decode_watching_libjpeg(lambda: cv2.imdecode(buf, flags))
        else:
            image = cv2.imdecode(buf, flags)
    except cv2.error as exc:
        raise ImageError(f"{source}: not a readable image ({opencv_message(exc)})") from None
    if image is None:
        raise ImageError(f"{source}: not a readable image (corrupt or unsupported format)")
    damage = "; ".join(dict.fromkeys(warnings))[:300] if warnings else None
    return Decoded(_to_bgr8(image, source, owned=True), damage)


def opencv_message(exc: Exception) -> str:
    """The last informative line of an OpenCV error (its text spans several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 BGR HxWx3, with a clear error naming the file (a JPEG with
    damaged data is refused)."""
    check_utf8_name(path)
    data = read_bounded(path, MAX_FILE_BYTES, "image", ImageError)
    return decode_image(data, str(Path(path)))


def read_image_tolerant(path: str | os.PathLike) -> Decoded:
    """:func:`read_image`, with damaged JPEG data decoded and reported (:class:`Decoded`)."""
    check_utf8_name(path)
    data = read_bounded(path, MAX_FILE_BYTES, "image", ImageError)
    return decode_image_tolerant(data, str(Path(path)))


def resize_for_model(
    image_bgr: np.ndarray, pre: Preprocessing, out: np.ndarray | None = None
) -> np.ndarray:
    """Apply the model's resize rule; returns uint8 HxWx3 in the model's colour order.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    ``out`` may be a preallocated (H, W, 3) uint8 array (camera loop: no allocation).
    """
    if pre.resize != "stretch":
        raise ImageError(f"unsupported resize rule {pre.resize!r} in model metadata")
    shape = getattr(image_bgr, "shape", None)
    if (
        not isinstance(image_bgr, np.ndarray)
        or len(shape) != 3
        or shape[2] != 3
        or not image_bgr.size
    ):
        raise ImageError(f"expected a non-empty uint8 HxWx3 image, got shape {shape}")
    h, w = image_bgr.shape[:2]
    shrink = h >= pre.height and w >= pre.width
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if pre.color_order not in ("RGB", "BGR"):
        raise ImageError(f"unsupported colour order {pre.color_order!r} in model metadata")
    try:
        if (h, w) == (pre.height, pre.width):
            resized = image_bgr if out is None else np.copyto(out, image_bgr) or out
        else:
            resized = cv2.resize(image_bgr, (pre.width, pre.height), dst=out, interpolation=interp)
        if pre.color_order == "RGB":
            resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=out)
    except cv2.error as exc:
        raise ImageError(f"image {w}x{h} cannot be resized ({opencv_message(exc)})") from None
    return resized


def load_for_model(path: str | os.PathLike, pre: Preprocessing) -> np.ndarray:
    """Read a file and apply the model's resize rule: what the network's ``image`` input takes."""
    return resize_for_model(read_image(path), pre)
