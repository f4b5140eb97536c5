"""Localizing a live stream: a decode thread that keeps only the newest frame (``frames``),
temporal filters over a window of frames (``filtering``) and the loop that joins them to a
:class:`~sfrs_edge.localize.Localizer` (``sequence``)."""

from .frames import FrameStream, LatestFrame

__all__ = ["FrameStream", "LatestFrame"]
