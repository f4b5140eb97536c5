"""The ROS 2 node without ROS: its parameters and its camera loop, testable where rclpy is not.

:class:`NodeConfig` holds the node's parameters (names as in ``examples/ros2/params.yaml``)
and builds the :class:`~sfrs_edge.ros.core.LocalizationCore`. :class:`NodeLoop` is what runs
inside the node: the subscription callback hands each image message to :meth:`NodeLoop.on_image`
(cheap: no decoding), which puts it into a one-frame mailbox
(:class:`~sfrs_edge.stream.frames.LatestFrame`): a message still unread when the next one
arrives is dropped and counted, so the loop always works on the newest frame, as the
best-effort, depth-1 subscription does upstream. A worker thread decodes the newest message,
runs it through the core (``Localizer.stream``) and hands every output message to
``publish``. :meth:`NodeLoop.reset` (the node's ``reset`` service) ends the current stream
after the frames already in it and starts a new one, so the temporal filter forgets the past.
Frames are numbered by arrival, so frames dropped before the model still count as motion steps
for the filter.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, SfrsEdgeError
from ..stream.filtering import METHODS, FilterConfig
from ..stream.frames import LatestFrame
from .core import CoreConfig, LocalizationCore
from .frames import COMPRESSED, IMAGE, StampedFrame, stamped_frame
from .messages import OutMessage

log = logging.getLogger(__name__)

QOS_PROFILES = ("sensor_data", "reliable")
TRANSPORTS = {"raw": IMAGE, "compressed": COMPRESSED}


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameters (see docs/ROS.md for each). ``rerank`` 0 and ``threads`` 0 mean
    off / the machine's default."""

    model: str = ""
    map: str = ""
    k: int = 5
    rerank: int = 0
    filter: str = "seq"
    window: int = 5
    speed: float = 1.0
    far_radius: float = 25.0
    backend: str = "auto"
    threads: int = 0
    image_topic: str = "image"
    image_transport: str = "raw"
    qos: str = "sensor_data"
    qos_depth: int = 1
    frame_id: str = "map"
    child_frame_id: str = "base_link"
    debug_image: bool = False
    diagnostics_period: float = 1.0

    def __post_init__(self) -> None:
        if self.filter not in METHODS:
            raise ConfigError(f"parameter filter: {self.filter!r}; choose {', '.join(METHODS)}")
        if self.image_transport not in TRANSPORTS:
            raise ConfigError(
                f"parameter image_transport: {self.image_transport!r}; choose raw or compressed"
            )
        if self.qos not in QOS_PROFILES:
            raise ConfigError(f"parameter qos: {self.qos!r}; choose {', '.join(QOS_PROFILES)}")
        for name in ("k", "window", "qos_depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"parameter {name} must be at least 1")
        if self.rerank < 0 or self.threads < 0:
            raise ConfigError("parameters rerank and threads must be 0 (off/default) or more")
        if self.diagnostics_period <= 0 or self.far_radius <= 0 or self.speed <= 0:
            raise ConfigError("parameters diagnostics_period, far_radius, speed must be positive")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> NodeConfig:
        """From parameter values (unknown names are an error naming them)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown node parameter(s): {', '.join(unknown)}")
        return cls(**dict(values))

    @property
    def msgtype(self) -> str:
        """The subscribed message type."""
        return TRANSPORTS[self.image_transport]

    def build_core(self) -> LocalizationCore:
        """Open the model and the map (``paths`` defaults when empty) and make the core."""
        from ..localize import open_localizer

        loc = open_localizer(
            self.model or None,
            self.map or None,
            k=self.k,
            backend=self.backend,
            threads=self.threads or None,
            far_radius=self.far_radius,
            rerank=self.rerank or None,
        )
        filt = FilterConfig(method=self.filter, window=self.window, speed=self.speed)
        core = CoreConfig(self.frame_id, self.child_frame_id, self.debug_image)
        # one frame in flight: a live frame's result must not wait for the next frame
        return LocalizationCore(loc, filt, core, in_flight=1)


@dataclass(frozen=True)
class _Arrival:
    index: int
    stamp_ns: int
    msg: Any
    msgtype: str


class NodeLoop:
    """Mailbox + worker thread over a core; see the module doc."""

    def __init__(
        self,
        core: LocalizationCore,
        publish: Callable[[OutMessage], None],
        topic: str = "image",
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.core = core
        self.publish = publish
        self.topic = topic
        self.on_error = on_error or (lambda text: log.error("%s", text))
        self.received = 0
        self.resets = 0
        self._dropped_before = 0  # drops of the mailboxes of earlier streams
        self._slot = LatestFrame(drop=True)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t0: int | None = None
        self._thread = threading.Thread(target=self._run, name="sfrs-edge-node", daemon=True)

    @property
    def dropped(self) -> int:
        """Messages replaced in the mailbox before the worker took them."""
        return self._dropped_before + self._slot.dropped

    def start(self) -> NodeLoop:
        self._thread.start()
        return self

    def on_image(self, msg: Any, msgtype: str, now_ns: int | None = None) -> None:
        """The subscription callback: number the message and offer it to the worker."""
        from .bag import header_stamp_ns

        stamp = header_stamp_ns(msg) or int(now_ns if now_ns is not None else time.time_ns())
        with self._lock:
            index = self.received
            self.received += 1
            self.core.received = self.received
            slot = self._slot
        slot.put(_Arrival(index, stamp, msg, msgtype))

    def reset(self) -> str:
        """Start a new stream (the filter forgets); returns the service's message."""
        with self._lock:
            old, self._slot = self._slot, LatestFrame(drop=True)
            self._dropped_before += old.dropped
            self.resets += 1
        old.close()
        return (
            f"temporal filter reset ({self.core.filter.method}, window {self.core.filter.window})"
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._slot.close()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _frames(self, slot: LatestFrame) -> Iterator[StampedFrame]:
        while True:
            item = slot.get()
            if item is None:
                return
            if self._t0 is None:
                self._t0 = item.stamp_ns
            try:
                frame = stamped_frame(
                    item.msg,
                    item.msgtype,
                    item.index,
                    item.stamp_ns,
                    self._t0,
                    self.topic,
                    f"{self.topic} message {item.index}",
                )
            except SfrsEdgeError as exc:
                self.core.failed += 1
                self.core.last_error, self.core.last_failed = str(exc), True
                self.on_error(str(exc))
                continue
            self.core.last_failed = False
            yield frame

    def _run(self) -> None:
        while not self._stop.is_set():
            slot = self._slot
            try:
                for _result, messages in self.core.run(self._frames(slot)):
                    for m in messages:
                        self.publish(m)
            except Exception as exc:  # noqa: BLE001 - the node must keep running and report
                self.core.forget()
                self.core.last_error = f"{type(exc).__name__}: {exc}"
                self.on_error(f"localization failed: {self.core.last_error}")
                if slot is self._slot:  # not a reset: wait for the next message
                    time.sleep(0.05)
