"""Image decoding and the resize rule, shared by training, export verification and runtime.

One place decides how a file becomes the uint8 array a model sees, so the torch model and the
exported model are always fed identical pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError
from .model_info import Preprocessing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MIN_SIDE = 16
MAX_PIXELS = 100_000_000  # 100 MP: far above any camera frame, below cv2's own limit


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
    camera would see of a transparent pixel: nothing), 16-bit and float images are scaled.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise ImageError(
            f"{source}: expected an HxW or HxWxC array, got {getattr(image, 'shape', type(image))}"
        )
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ImageError(f"{source}: image contains NaN or infinite values")
        hi = 255.0 if image.max() > 1.0 else 1.0
        image = np.clip(image * (255.0 / hi), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"{source}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.shape[2] != 3:
        raise ImageError(f"{source}: {image.shape[2]} channels; expected 1, 3 or 4")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{source}: image is {w}x{h}; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if h * w > MAX_PIXELS:
        raise ImageError(f"{source}: image is {w}x{h}, over the {MAX_PIXELS // 1_000_000} MP limit")
    return np.ascontiguousarray(image)


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) to uint8 BGR HxWx3."""
    if len(data) == 0:
        raise ImageError(f"{source}: file is empty (0 bytes)")
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ImageError(f"{source}: not a readable image (corrupt or unsupported format)")
    return to_bgr8(image, source)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 BGR HxWx3, with a clear error naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path))


def resize_for_model(
    image_bgr: np.ndarray, pre: Preprocessing, out: np.ndarray | None = None
) -> np.ndarray:
    """Apply the model's resize rule; returns uint8 HxWx3 in the model's colour order.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    ``out`` may be a preallocated (H, W, 3) uint8 array (camera loop: no allocation).
    """
    if pre.resize != "stretch":
        raise ImageError(f"unsupported resize rule {pre.resize!r} in model metadata")
    h, w = image_bgr.shape[:2]
    shrink = h >= pre.height and w >= pre.width
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    if (h, w) == (pre.height, pre.width):
        resized = image_bgr if out is None else np.copyto(out, image_bgr) or out
    else:
        resized = cv2.resize(image_bgr, (pre.width, pre.height), dst=out, interpolation=interp)
    if pre.color_order == "RGB":
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB, dst=out)
    elif pre.color_order != "BGR":
        raise ImageError(f"unsupported colour order {pre.color_order!r} in model metadata")
    return resized


def load_for_model(path: str | os.PathLike, pre: Preprocessing) -> np.ndarray:
    """Read a file and apply the model's resize rule: what the network's ``image`` input takes."""
    return resize_for_model(read_image(path), pre)
