"""Localize every frame of a bag's image topic, optionally writing the results as a new bag.

The frames go through :class:`~sfrs_edge.ros.core.LocalizationCore` — the same core, and so
the same ``Localizer.stream`` path (filter, re-ranking), as the ROS 2 node — offline: every
frame is processed, none dropped. With ``output``, the core's messages (pose or fix, matches,
optional debug image) are written to a new MCAP bag (:class:`~sfrs_edge.ros.bag_writer.ResultBag`,
atomic: nothing is left at ``output`` when the run fails or is interrupted).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..localize import Localizer
from ..stream.filtering import FilterConfig
from ..stream.sequence import StreamResult
from .bag import Bag
from .bag_writer import ResultBag
from .core import CoreConfig, LocalizationCore
from .messages import OutMessage
from .source import BagFrames


def localize_bag(
    loc: Localizer,
    bag_path: str | os.PathLike,
    image_topic: str,
    filter: FilterConfig | None = None,  # noqa: A002 - the name every entry point uses
    config: CoreConfig | None = None,
    output: str | os.PathLike | None = None,
    in_flight: int | None = None,
) -> Iterator[tuple[StreamResult, list[OutMessage]]]:
    """Yield (result, messages) per frame of ``image_topic``, in order; see the module doc.

    The output bag is complete when the iteration ends; closing the iterator early (or an
    error) discards it. ``in_flight``: frames localized at the same time (offline, more
    than one only reads ahead; results stay in frame order)."""
    core = LocalizationCore(loc, filter, config, in_flight)
    with Bag.open(bag_path) as bag:
        frames = BagFrames(bag, image_topic)
        if output is None:
            yield from core.run(frames)
            return
        with ResultBag(output) as out:
            for r, messages in core.run(frames):
                for m in messages:
                    out.write(m)
                yield r, messages
