"""What localizing a frame answers: the retrieved places and the estimate built from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Match:
    """One retrieved map place."""

    id: int
    name: str
    similarity: float
    position: tuple[float, ...] | None = None
    inliers: int | None = None  # verified local matches (re-ranked candidates only)


@dataclass(frozen=True)
class LocalizationResult:
    """Answer for one frame. ``timings`` are milliseconds per stage (and ``total``)."""

    matches: tuple[Match, ...]
    position: tuple[float, ...] | None
    position_kind: str | None
    confidence: float
    margin: float
    timings: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    reranked: bool = False  # True: order and confidence come from verified local evidence

    @property
    def best(self) -> Match:
        return self.matches[0]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matches"] = [asdict(m) for m in self.matches]
        return d
