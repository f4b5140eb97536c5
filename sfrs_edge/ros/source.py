"""The frames of a bag's image topic, as map building and the stream loop take them.

:class:`BagFrames` iterates a topic (``sensor_msgs/Image`` or ``CompressedImage``) and yields
:class:`~sfrs_edge.ros.frames.StampedFrame` s (``index`` = message number on the topic,
``timestamp`` = seconds since ``t0_ns``, the exact stamp, the map name the frame gets). Frames
are decoded one at a time: memory stays one decoded frame whatever the bag's length.

Frames whose stamps go back in time are refused (a temporal filter and keyframe selection need
time order; ``ros2 bag record`` writes in receive order, so this means a re-stamped or merged
bag). A frame that cannot be decoded stops the iteration with an error naming its message
number and stamp, or with ``skip_bad`` is skipped and counted in :attr:`BagFrames.corrupt`
(an unsupported encoding is never skipped: every frame of the topic has it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ..errors import ImageError
from .bag import Bag, BagError
from .frames import IMAGE_TYPES, StampedFrame, UnsupportedImage, stamp_text, stamped_frame

log = logging.getLogger(__name__)

ROLE = "--image-topic"


class BagFrames:
    """Iterate once for the :class:`StampedFrame` s of ``topic``; see module doc."""

    def __init__(
        self, bag: Bag, topic: str, skip_bad: bool = False, t0_ns: int | None = None
    ) -> None:
        """``t0_ns``: the stamp that is time 0 of ``timestamp`` (default: the first frame's)."""
        self.bag = bag
        self.topic = topic
        self.msgtype = bag.topic_type(topic, IMAGE_TYPES, ROLE)
        self.count = bag.message_count(topic)
        self.skip_bad = skip_bad
        self.corrupt = 0
        self.decoded = 0
        self.t0_ns = t0_ns

    def first_stamp(self) -> int:
        """The stamp of the topic's first message (reads one message)."""
        messages = self.bag.messages(self.topic, IMAGE_TYPES, ROLE)
        try:
            for m in messages:
                return m.stamp_ns
        finally:
            messages.close()
        raise BagError(f"{self.bag.path}: {ROLE} {self.topic} has no messages")

    def __iter__(self) -> Iterator[StampedFrame]:
        last = None
        for m in self.bag.messages(self.topic, IMAGE_TYPES, ROLE):
            if self.t0_ns is None:
                self.t0_ns = m.stamp_ns
            if last is not None and m.stamp_ns < last:
                raise BagError(
                    f"{self.bag.path}: {self.topic} message {m.index} is stamped "
                    f"{stamp_text(m.stamp_ns)}, before the previous one ({stamp_text(last)}); "
                    "frames must be in time order"
                )
            last = m.stamp_ns
            where = (
                f"{self.bag.path.name}: {self.topic} message {m.index} ({stamp_text(m.stamp_ns)})"
            )
            try:
                frame = stamped_frame(
                    m.msg, m.msgtype, m.index, m.stamp_ns, self.t0_ns, self.topic, where
                )
            except ImageError as exc:
                if not self.skip_bad or isinstance(exc, UnsupportedImage):
                    raise
                self.corrupt += 1
                log.warning("skipping %s", exc)
                continue
            self.decoded += 1
            yield frame
        if self.t0_ns is None:
            raise BagError(f"{self.bag.path}: {ROLE} {self.topic} has no messages")
