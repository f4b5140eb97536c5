"""Transport-free messages: what the localization core publishes, as plain field dictionaries.

The core (:mod:`sfrs_edge.ros.core`) says *what* to publish as an :class:`OutMessage`: a key
(``pose``, ``fix``, ``matches``, ``diagnostics``, ``debug_image``), a ROS type name and its
fields as nested dicts and lists, exactly as the ``.msg`` definitions name them (fields left out
take the type's default: zero, empty). Each shell turns that into its own message objects:

- bags: :func:`to_rosbags` builds the ``rosbags`` dataclass from the typestore's field
  definitions, then ``typestore.serialize_cdr``;
- the rclpy node: ``rosidl_runtime_py.set_message.set_message_fields`` on a new message.

So the content of every message is decided, and tested, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

POSE = "geometry_msgs/msg/PoseWithCovarianceStamped"
NAVSATFIX = "sensor_msgs/msg/NavSatFix"
STRING = "std_msgs/msg/String"
DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
IMAGE = "sensor_msgs/msg/Image"


@dataclass(frozen=True)
class OutMessage:
    """One message to publish: ``key`` names the output (and its topic), ``msgtype`` the ROS
    type, ``fields`` the content, ``stamp_ns`` the stamp it carries (the input frame's)."""

    key: str
    msgtype: str
    fields: dict[str, Any]
    stamp_ns: int


def time_fields(stamp_ns: int) -> dict[str, int]:
    """``builtin_interfaces/Time`` fields of a stamp in nanoseconds."""
    return {"sec": int(stamp_ns // 1_000_000_000), "nanosec": int(stamp_ns % 1_000_000_000)}


def header(stamp_ns: int, frame_id: str) -> dict[str, Any]:
    return {"stamp": time_fields(stamp_ns), "frame_id": frame_id}


_BASE_DEFAULTS = {"string": "", "bool": False, "float32": 0.0, "float64": 0.0}
_NUMPY = {
    "bool": np.bool_,
    "byte": np.uint8,
    "char": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


def _base(kind: str, value: Any) -> Any:
    if value is None:
        return _BASE_DEFAULTS.get(kind, 0)
    if kind == "string":
        return str(value)
    if isinstance(value, (bytes, bytearray)):  # ``byte`` fields: rclpy takes bytes of length 1
        return int(value[0])
    if kind == "bool":
        return bool(value)
    if kind.startswith("float"):
        return float(value)
    return int(value)


def _value(typestore: Any, node: tuple, value: Any) -> Any:
    from rosbags.interfaces import Nodetype

    ntype, detail = node
    if ntype == Nodetype.BASE:
        return _base(detail[0], value)
    if ntype == Nodetype.NAME:
        return to_rosbags(typestore, detail, value or {})
    sub, length = detail  # ARRAY (fixed length) or SEQUENCE (length 0 = unbounded)
    items = [] if value is None else value
    if ntype == Nodetype.ARRAY and value is None:
        items = [None] * length
    if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
        dtype = _NUMPY[sub[1][0]]
        if isinstance(items, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(items), dtype).copy()
        return np.asarray([_base(sub[1][0], v) for v in items], dtype)
    return [_value(typestore, sub, v) for v in items]


def to_rosbags(typestore: Any, msgtype: str, fields: dict[str, Any]) -> Any:
    """A ``rosbags`` message object of ``msgtype`` from a field dict (missing fields: default)."""
    _consts, defs = typestore.fielddefs[msgtype]
    unknown = set(fields) - {name for name, _ in defs}
    if unknown:
        raise KeyError(f"{msgtype} has no field(s) {', '.join(sorted(unknown))}")
    cls = typestore.types[msgtype]
    return cls(**{name: _value(typestore, node, fields.get(name)) for name, node in defs})
