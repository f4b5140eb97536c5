"""Keyframe selection for maps built from video: a time step, then a descriptor change.

A frame is a *candidate* when at least ``step`` seconds passed since the last candidate (so a
30 fps video is embedded at ``1 / step`` frames per second, not 30). A candidate becomes a
*keyframe* only when its descriptor differs enough from the last keyframe's:
``1 − cos(d, d_last) ≥ min_change``. A vehicle standing still keeps producing candidates
whose descriptors barely change, so it does not fill the map with copies of one place; when it
moves on, the scene changes and keyframes resume. The first frame is always a keyframe.
``step = 0`` and ``min_change = 0`` keep every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class KeyframeConfig:
    """``step``: seconds between candidates; ``min_change``: 1 − cosine to the last keyframe."""

    step: float = 0.5
    min_change: float = 0.05

    def __post_init__(self) -> None:
        if not (self.step >= 0 and np.isfinite(self.step)):
            raise ConfigError(f"keyframe step must be >= 0 seconds, got {self.step}")
        if not 0 <= self.min_change <= 2:
            raise ConfigError(f"keyframe min_change must be in [0, 2], got {self.min_change}")


class KeyframeSelector:
    """Stateful selector: call :meth:`due` per frame, :meth:`accept` per embedded candidate."""

    def __init__(self, config: KeyframeConfig | None = None) -> None:
        self.config = config or KeyframeConfig()
        self._last_candidate: float | None = None
        self._last_key: np.ndarray | None = None
        self.candidates = 0
        self.rejected = 0  # candidates too similar to the last keyframe

    def due(self, timestamp: float) -> bool:
        """Whether the frame at ``timestamp`` (seconds) is a candidate (time step reached)."""
        last = self._last_candidate
        # a small tolerance so frames at exactly k * step are not missed to rounding
        if last is not None and timestamp - last < self.config.step - 1e-6:
            return False
        self._last_candidate = timestamp
        self.candidates += 1
        return True

    def accept(self, descriptor: np.ndarray) -> bool:
        """Whether a candidate with this (unit) descriptor becomes a keyframe."""
        d = np.asarray(descriptor, np.float32).ravel()
        if self._last_key is not None and self.config.min_change > 0:
            change = 1.0 - float(np.dot(d, self._last_key))
            if change < self.config.min_change:
                self.rejected += 1
                return False
        self._last_key = d.copy()
        return True
