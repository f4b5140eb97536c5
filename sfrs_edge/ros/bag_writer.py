"""Writing result bags atomically: the messages of :mod:`sfrs_edge.ros.core` into a new rosbag2.

``OUT`` ending in ``.mcap`` is written as one MCAP file (the rosbag2 storage file, with its
metadata inside: ``rosbags``, Foxglove and ``ros2 bag play`` open it); any other ``OUT`` as a
rosbag2 folder (``metadata.yaml`` + ``<name>.mcap``), as ``ros2 bag record -s mcap`` makes.

The bag is written into a hidden staging folder beside ``OUT`` and renamed into place only
when complete: an error, Ctrl-C or a crash leaves no half-written bag (a ``.mcap`` file is
replaced atomically; an existing folder is refused, as ``ros2 bag record`` does).
Each message's log time is its stamp (the input frame's), so the results line up with the
input bag when both are played.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..atomic import fsync_dir
from .bag import BagError, require_rosbags
from .messages import OutMessage, to_rosbags

# topic of each core output (the node publishes the same names, relative to its namespace)
TOPICS = {
    "pose": "/visual_localization/pose",
    "fix": "/visual_localization/fix",
    "matches": "/visual_localization/matches",
    "debug_image": "/visual_localization/debug_image",
    "diagnostics": "/diagnostics",
}


class ResultBag:
    """A result bag being written; use as a context manager, :meth:`write` per message."""

    def __init__(self, path: str | os.PathLike, topics: dict[str, str] | None = None) -> None:
        require_rosbags("writing result bags")
        self.path = Path(path).expanduser()
        self.single_file = self.path.suffix.lower() == ".mcap"
        if not self.single_file and self.path.exists():
            raise BagError(f"{self.path}: exists; remove it or choose another output")
        if self.single_file and self.path.is_dir():
            raise BagError(f"{self.path}: is a folder; choose a .mcap file name")
        self.topics = dict(TOPICS, **(topics or {}))
        self.counts: dict[str, int] = {}
        self._writer: Any = None
        self._staging: Path | None = None
        self._connections: dict[tuple[str, str], Any] = {}

    def __enter__(self) -> ResultBag:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        parent = self.path.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=parent))
        inner = self._staging / (self.path.stem if self.single_file else self.path.name)
        self._writer = Writer(inner, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        return self

    def write(self, message: OutMessage) -> None:
        """Add one message on its key's topic, logged at its stamp."""
        topic = self.topics[message.key]
        key = (topic, message.msgtype)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._writer.add_connection(topic, message.msgtype, typestore=self.typestore)
            self._connections[key] = conn
        obj = to_rosbags(self.typestore, message.msgtype, message.fields)
        data = self.typestore.serialize_cdr(obj, message.msgtype)
        self._writer.write(conn, int(message.stamp_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def __exit__(self, exc_type, exc, tb) -> None:
        staging, self._staging = self._staging, None
        try:
            if exc_type is not None:
                self._writer.abort()
                return
            self._writer.close()
            inner = self._writer.path
            if self.single_file:
                produced = inner / f"{inner.name}.mcap"
                _fsync(produced)
                os.replace(produced, self.path)
            else:
                for f in inner.iterdir():
                    _fsync(f)
                fsync_dir(inner)
                if self.path.exists():
                    raise BagError(f"{self.path}: appeared while writing; not replaced")
                os.rename(inner, self.path)
            fsync_dir(self.path.parent)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
