"""ROS image messages → the uint8 BGR frames a model takes (``sensor_msgs/Image`` and
``sensor_msgs/CompressedImage``), for bags and for the live node alike.

Messages are read by field name only (``encoding``, ``height``, ``width``, ``step``,
``is_bigendian``, ``data``, ``format``), so a message deserialized by ``rosbags`` and one handed
over by ``rclpy`` convert the same way.

**Raw images** (``sensor_msgs/Image``), by ``encoding`` (names of ROS ``image_encodings``):

- ``bgr8``, ``rgb8``, ``bgra8``, ``rgba8`` (alpha dropped), ``8UC3`` (taken as BGR, what
  ``cv_bridge`` assumes), ``mono8`` / ``8UC1`` (grey replicated), ``mono16`` / ``16UC1``
  (high byte: the package's rule for 16-bit images, :func:`sfrs_edge.images.to_bgr8`);
- ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8`` and their 16-bit forms:
  demosaiced by OpenCV (bilinear), the pattern naming the top-left 2x2 block as ROS defines it
  (OpenCV names the same patterns by the second row, hence ROS ``rggb`` = OpenCV ``BayerBG``);
- ``yuv422`` (UYVY) and ``yuv422_yuy2`` (YUYV);
- anything else (depth ``32FC1``/``16UC1`` aside, ``nv12``, ``bayer`` of other sizes, ...) is
  refused with a :class:`~sfrs_edge.errors.ImageError` naming the encoding and the ones read.

Rows may be padded (``step`` larger than the row); a ``data`` shorter than ``step × height``,
a ``step`` shorter than a row, zero or over-limit dimensions (``MAX_PIXELS``) are errors.
16-bit data honours ``is_bigendian``.

**Compressed images** (``sensor_msgs/CompressedImage``): ``format`` as ``image_transport``
writes it (``jpeg``, ``png``, or ``"<encoding>; jpeg compressed bgr8"``); the bytes go through
:func:`sfrs_edge.images.decode_image`, the package's bounded decoder (size and header checked
before any pixel is decoded). A target encoding of ``rgb8``/``rgba8`` means the encoder was fed
RGB, so the channels are swapped back. ``compressedDepth`` and other formats are refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import ImageError
from ..images import MAX_FILE_BYTES, MAX_PIXELS, decode_image, to_bgr8
from ..video.reader import Frame

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)

# encoding → (channels, bytes per channel)
_LAYOUT = {
    "bgr8": (3, 1),
    "rgb8": (3, 1),
    "bgra8": (4, 1),
    "rgba8": (4, 1),
    "8UC3": (3, 1),
    "8UC4": (4, 1),
    "mono8": (1, 1),
    "8UC1": (1, 1),
    "mono16": (1, 2),
    "16UC1": (1, 2),
    "yuv422": (2, 1),
    "yuv422_yuy2": (2, 1),
}
# ROS Bayer pattern (top-left 2x2 block) → OpenCV conversion code
_BAYER = {
    "rggb": cv2.COLOR_BayerBG2BGR,
    "bggr": cv2.COLOR_BayerRG2BGR,
    "gbrg": cv2.COLOR_BayerGR2BGR,
    "grbg": cv2.COLOR_BayerGB2BGR,
}
for _pattern in _BAYER:
    _LAYOUT[f"bayer_{_pattern}8"] = (1, 1)
    _LAYOUT[f"bayer_{_pattern}16"] = (1, 2)
ENCODINGS = tuple(_LAYOUT)


class UnsupportedImage(ImageError):
    """An image message in an encoding or format that is not read (the same for every frame
    of a topic, so skipping such frames would skip them all)."""


def _data(msg: Any) -> np.ndarray:
    data = msg.data
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data), np.uint8)  # rclpy: array.array('B') or bytes


def raw_to_bgr(msg: Any, source: str = "image") -> np.ndarray:
    """A ``sensor_msgs/Image`` as uint8 BGR HxWx3 (see module doc for the encodings)."""
    enc = str(msg.encoding)
    if enc not in _LAYOUT:
        raise UnsupportedImage(
            f"{source}: unsupported image encoding {enc!r}; supported: " + ", ".join(ENCODINGS)
        )
    channels, depth = _LAYOUT[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageError(f"{source}: image is {w}x{h}")
    if h * w > MAX_PIXELS:
        raise ImageError(f"{source}: image is {w}x{h}, over the {MAX_PIXELS // 1_000_000} MP limit")
    row = w * channels * depth
    if step < row:
        raise ImageError(f"{source}: step {step} is shorter than a {enc} row of {row} bytes")
    data = _data(msg)
    if len(data) < step * h:
        raise ImageError(
            f"{source}: {len(data)} bytes of data for {h} rows of {step} bytes ({enc} {w}x{h})"
        )
    rows = data[: step * h].reshape(h, step)[:, :row]
    if depth == 2:
        order = ">u2" if int(getattr(msg, "is_bigendian", 0)) else "<u2"
        pixels = np.ascontiguousarray(rows).view(order).astype(np.uint16)
    else:
        pixels = np.ascontiguousarray(rows)
    pixels = pixels.reshape(h, w, channels) if channels > 1 else pixels.reshape(h, w)
    if enc.startswith("bayer_"):
        code = _BAYER[enc[6:10]]
        bgr = cv2.cvtColor(pixels, code)
        return to_bgr8(bgr, source)
    if enc in ("rgb8", "rgba8"):
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGR)
    elif enc == "yuv422":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_YUV2BGR_UYVY)
    elif enc == "yuv422_yuy2":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_YUV2BGR_YUY2)
    return to_bgr8(pixels, source)


def compressed_to_bgr(msg: Any, source: str = "image") -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG or PNG) as uint8 BGR HxWx3."""
    fmt = str(getattr(msg, "format", "") or "").strip()
    low = fmt.lower()
    if "compresseddepth" in low:
        raise UnsupportedImage(
            f"{source}: compressedDepth images are depth maps, not camera frames; "
            "subscribe the colour image"
        )
    codec = low.split(";")[-1]
    if fmt and not any(name in codec for name in ("jpeg", "jpg", "png")):
        raise UnsupportedImage(
            f"{source}: unsupported compressed format {fmt!r}; expected jpeg or png"
        )
    data = _data(msg)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(
            f"{source}: compressed image of {len(data)} bytes, over the "
            f"{MAX_FILE_BYTES // 2**20} MiB limit"
        )
    image = decode_image(data.tobytes(), source)
    target = codec.split("compressed")[-1].strip() if "compressed" in codec else ""
    if target in ("rgb8", "rgba8", "rgb16", "rgba16"):
        image = np.ascontiguousarray(image[:, :, ::-1])
    return image


def message_to_bgr(msg: Any, msgtype: str, source: str = "image") -> np.ndarray:
    """Either image message type (``msgtype``: ``sensor_msgs/msg/Image`` or
    ``sensor_msgs/msg/CompressedImage``) as uint8 BGR HxWx3."""
    if msgtype == IMAGE:
        return raw_to_bgr(msg, source)
    if msgtype == COMPRESSED:
        return compressed_to_bgr(msg, source)
    raise UnsupportedImage(
        f"{source}: {msgtype} is not an image message; expected {' or '.join(IMAGE_TYPES)}"
    )


def stamp_text(stamp_ns: int) -> str:
    """A stamp as ``sec.nanosec`` (9 digits): exact, unlike a float of seconds since 1970."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def frame_name(topic: str, stamp_ns: int) -> str:
    """The name a frame gets in a map: ``<topic>@<sec>.<nanosec>`` (where it came from)."""
    return f"{topic}@{stamp_text(stamp_ns)}"


@dataclass(frozen=True)
class StampedFrame(Frame):
    """A decoded image message: a :class:`~sfrs_edge.video.Frame` (``index``: message number on
    the topic, ``timestamp``: seconds since time 0 of the sequence) plus the exact header stamp
    (``stamp_ns``, ns since the epoch) and the topic."""

    stamp_ns: int = 0
    topic: str = ""

    @property
    def name(self) -> str:
        return frame_name(self.topic, self.stamp_ns)


def stamped_frame(
    msg: Any, msgtype: str, index: int, stamp_ns: int, t0_ns: int, topic: str, source: str
) -> StampedFrame:
    """Decode an image message into a :class:`StampedFrame` (``captured`` = now)."""
    image = message_to_bgr(msg, msgtype, source)
    return StampedFrame(
        index=index,
        timestamp=(stamp_ns - t0_ns) / 1e9,
        image=image,
        captured=time.perf_counter(),
        stamp_ns=stamp_ns,
        topic=topic,
    )
