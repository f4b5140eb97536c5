"""Maps from recorded video: reading frames (``reader``), choosing keyframes (``keyframes``),
positioning them from a GPS/odometry track (``tracks``) and writing the map (``mapping``)."""

from .reader import VIDEO_SUFFIXES, Frame, VideoError, VideoSource, is_video

__all__ = ["VIDEO_SUFFIXES", "Frame", "VideoError", "VideoSource", "is_video"]
