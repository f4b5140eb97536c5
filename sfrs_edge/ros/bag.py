"""Reading rosbag2 recordings (a bag folder, or one ``.mcap`` / ``.db3`` file) with ``rosbags``.

``rosbags`` is pure Python (Apache-2.0, the ``[ros]`` extra): no ROS installation is needed. Both
storage formats of rosbag2 are read, MCAP and sqlite3. Message types come from the definitions
the bag carries; bags recorded before ROS 2 Iron carry none, and then the ROS 2 Humble type
definitions of ``rosbags`` are used (the standard messages read here did not change since).

::

    with Bag.open("drive/") as bag:
        for m in bag.messages("/camera/image_raw", IMAGE_TYPES):
            m.index, m.stamp_ns, m.msgtype, m.msg       # msg: a deserialized message object

Every failure is a :class:`BagError` with one line naming the bag and what is wrong: a missing
path, a folder that is not a bag, a file that is not one or is truncated, a topic that is not in
the bag (the message lists the topics that are), a topic of the wrong message type, a message
that cannot be deserialized.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SfrsEdgeError

log = logging.getLogger(__name__)

BAG_SUFFIXES = (".mcap", ".db3")
# Exceptions the rosbags readers raise on damaged files: their own error classes, plus the
# low-level ones a truncated or corrupt file surfaces with (struct/zstd/sqlite/YAML errors).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    AssertionError,
    UnicodeDecodeError,
)


class BagError(SfrsEdgeError):
    """A rosbag2 recording cannot be used (missing, corrupt, wrong topic or message type)."""


def require_rosbags(what: str = "reading rosbag2 files") -> None:
    """Raise :class:`BagError` naming the extra to install when ``rosbags`` is missing."""
    try:
        import rosbags.highlevel  # noqa: F401
    except ImportError:
        raise BagError(f"{what} needs the rosbags library: pip install 'sfrs-edge[ros]'") from None


def is_bag(path: str | os.PathLike) -> bool:
    """True for a ``.mcap``/``.db3`` file or a folder holding a rosbag2 ``metadata.yaml``."""
    p = Path(path)
    if p.is_dir():
        return (p / "metadata.yaml").is_file()
    return p.suffix.lower() in BAG_SUFFIXES


def _read_errors() -> tuple[type[BaseException], ...]:
    from rosbags.highlevel import AnyReaderError
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError
    from rosbags.typesys import TypesysError

    errors: list[type[BaseException]] = [AnyReaderError, ReaderError, SerdeError, TypesysError]
    try:
        import sqlite3

        errors.append(sqlite3.Error)
    except ImportError:  # pragma: no cover - sqlite3 is in every CPython build
        pass
    try:
        from ruamel.yaml.error import YAMLError

        errors.append(YAMLError)
    except ImportError:  # pragma: no cover - rosbags depends on ruamel.yaml
        pass
    return (*errors, *_READ_ERRORS)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


@dataclass(frozen=True)
class BagMessage:
    """One message of a topic: ``index`` counts the topic's messages from 0 in bag order;
    ``stamp_ns`` is the header stamp (ns since the epoch) when the message has a non-zero
    one, else the time the recorder logged it; ``log_ns`` that log time."""

    index: int
    stamp_ns: int
    log_ns: int
    topic: str
    msgtype: str
    msg: Any


def header_stamp_ns(msg: Any) -> int:
    """``header.stamp`` in nanoseconds (0 when the message has no header)."""
    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None)
    if stamp is None:
        return 0
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class Bag:
    """An open rosbag2 recording. Use :meth:`open` as a context manager."""

    def __init__(self, path: Path, reader: Any) -> None:
        self.path = path
        self._reader = reader
        self._errors = _read_errors()

    @classmethod
    def open(cls, path: str | os.PathLike) -> Bag:
        """Open a bag folder or a ``.mcap``/``.db3`` file (raises :class:`BagError`)."""
        require_rosbags()
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore

        p = Path(path).expanduser()
        if not p.exists():
            raise BagError(f"{p}: no such bag (a rosbag2 folder or a .mcap/.db3 file)")
        if p.is_dir():
            if not (p / "metadata.yaml").is_file():
                raise BagError(f"{p}: not a rosbag2 folder (no metadata.yaml)")
        elif not p.is_file():
            raise BagError(f"{p}: not a regular file")
        elif p.suffix.lower() not in BAG_SUFFIXES:
            raise BagError(
                f"{p}: not a rosbag2 file (expected a bag folder, .mcap or .db3; "
                "ROS 1 .bag files are not supported)"
            )
        elif p.stat().st_size == 0:
            raise BagError(f"{p}: bag file is empty (0 bytes)")
        errors = _read_errors()
        try:
            reader = AnyReader([p], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
            reader.open()
        except errors as exc:
            raise BagError(
                f"{p}: cannot be read as a rosbag2 ({_one_line(exc)}); truncated or corrupt?"
            ) from None
        return cls(p, reader)

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the bag (safe to call twice)."""
        if self._reader is not None:
            try:
                self._reader.close()
            except self._errors:  # closing a damaged file: nothing left to protect
                pass
            self._reader = None

    def __repr__(self) -> str:
        return f"Bag({self.path})"

    @property
    def topics(self) -> dict[str, str]:
        """{topic: message type} of every topic in the bag, sorted by topic."""
        return {
            name: info.msgtype or "(several types)"
            for name, info in sorted(self._reader.topics.items())
        }

    def message_count(self, topic: str) -> int:
        """Messages recorded on ``topic`` (0 when absent)."""
        info = self._reader.topics.get(topic)
        return int(info.msgcount) if info is not None else 0

    def topic_type(self, topic: str, accepted: Collection[str], role: str = "topic") -> str:
        """The message type of ``topic``, checked against ``accepted`` (ROS type names such as
        ``sensor_msgs/msg/Image``). ``role`` names the option in messages (``--image-topic``)."""
        topics = self.topics
        if topic not in topics:
            listing = ", ".join(f"{t} ({m})" for t, m in topics.items()) or "none"
            raise BagError(f"{self.path}: {role} {topic} is not in the bag; topics: {listing}")
        msgtype = topics[topic]
        if msgtype not in accepted:
            raise BagError(
                f"{self.path}: {role} {topic} holds {msgtype}; expected "
                + " or ".join(sorted(accepted))
            )
        return msgtype

    def messages(
        self, topic: str, accepted: Collection[str], role: str = "topic"
    ) -> Iterator[BagMessage]:
        """Deserialized messages of ``topic`` in recording order (see :class:`BagMessage`)."""
        msgtype = self.topic_type(topic, accepted, role)
        reader = self._reader
        conns = [c for c in reader.connections if c.topic == topic]
        index = 0
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                except self._errors as exc:
                    raise BagError(
                        f"{self.path}: {topic} message {index}: cannot be deserialized as "
                        f"{conn.msgtype} ({_one_line(exc)})"
                    ) from None
                stamp = header_stamp_ns(msg) or int(log_ns)
                yield BagMessage(index, stamp, int(log_ns), topic, msgtype, msg)
                index += 1
        except BagError:
            raise
        except self._errors as exc:
            raise BagError(
                f"{self.path}: reading {topic} failed after {index} messages "
                f"({_one_line(exc)}); the bag is truncated or corrupt"
            ) from None
