"""Recall on the user's own data: localize query images against a map and score the answers.

Ground truth, one of:

- **radius**: each query has a position (a poses CSV, same format as ``map build --poses``);
  a map place is right when it lies within ``radius`` of it — metres (great-circle) for
  lat/lon, map units for x/y[/z]. The VPR convention is 25 m.
- **window**: index-aligned traversals (Gardens Point, Corridor): query ``i`` (the i-th
  image in name order) is right at map row ``j`` when ``|i − j| ≤ N``.

Recall@N = percentage of queries with a right place among their first N matches; queries
with no right place in the map at all still count (as misses), and their number is reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError
from .geo import distances
from .localize import Localizer
from .recall import index_window_positives
from .results import LocalizationResult

RECALL_NS = (1, 5, 10, 20)


@dataclass(frozen=True)
class GroundTruth:
    """How a match is judged right: ``window`` rows, or ``radius`` around ``poses``."""

    window: int | None = None
    poses: str | None = None  # CSV of query positions
    radius: float = 25.0

    def __post_init__(self) -> None:
        if (self.window is None) == (self.poses is None):
            raise ConfigError(
                "ground truth: give query positions (--poses CSV, right within --radius) or "
                "--window N (index-aligned traversals), exactly one"
            )
        if self.window is not None and self.window < 0:
            raise ConfigError(f"--window must be 0 or more, got {self.window}")
        if self.radius <= 0:
            raise ConfigError(f"--radius must be positive, got {self.radius}")

    def describe(self, position_kind: str | None = None) -> str:  # pragma: no mutate block
        if self.window is not None:
            return f"|i - j| <= {self.window} (index-aligned)"
        unit = "m" if position_kind == "latlon" else "map units"
        return f"within {self.radius:g} {unit} of the query's position"

    def positives(self, files: Sequence[Path], loc: Localizer) -> list[np.ndarray]:
        """Right map rows for each query file."""
        if self.window is not None:
            return index_window_positives(len(files), len(loc.map), self.window)
        return _radius_positives(files, loc, self.poses, self.radius)


def _radius_positives(files, loc: Localizer, poses: str, radius: float) -> list[np.ndarray]:
    from .maps.poses import match_poses, read_poses_csv

    if loc.map.position_kind is None:
        raise ConfigError(
            f"{loc.map.path}: the map has no positions, so --poses cannot judge matches; "
            "use --window N for index-aligned traversals"
        )
    table = read_poses_csv(poses)
    qposes = match_poses([f.name for f in files], table, str(poses))
    return radius_positives(loc, qposes, radius, str(poses))


def radius_positives(
    loc: Localizer, qposes: Sequence[Any], radius: float, source: str
) -> list[np.ndarray]:
    """Map rows within ``radius`` of each query pose (:class:`~sfrs_edge.maps.poses.Pose`:
    metres for lat/lon, map units for x/y[/z]); ``source`` names where the poses came from."""
    kind = loc.map.position_kind
    if kind is None:
        raise ConfigError(f"{loc.map.path}: the map has no positions to judge matches by")
    kinds = {p.kind for p in qposes if p is not None}
    if kinds - {kind} and not (kinds <= {"xy", "xyz"} and kind in ("xy", "xyz")):
        raise ConfigError(
            f"{source}: query positions are {', '.join(sorted(kinds))} but the map's are {kind}"
        )
    db = loc.map.positions()
    out = []
    for p in qposes:
        q = np.asarray(p.position, np.float64)
        dist = distances(db, q, kind)
        out.append(np.flatnonzero(np.nan_to_num(dist, nan=np.inf) <= radius))
    return out


@dataclass(frozen=True)
class QueryOutcome:
    """One query: its answer, which map rows were right, and the first right rank (1-based)."""

    index: int
    result: LocalizationResult
    positives: np.ndarray
    first_right: int | None

    @property
    def right(self) -> bool:
        return self.first_right == 1

    def to_dict(self) -> dict[str, Any]:  # pragma: no mutate block
        r = self.result
        pos = set(self.positives.tolist())
        return {
            "index": self.index,
            "query": r.source,
            "right_at_1": self.right,
            "first_right_rank": self.first_right,
            "positives": len(pos),
            "confidence": r.confidence,
            "position": r.position,
            "matches": [
                {**m.__dict__, "position": m.position, "right": m.id in pos} for m in r.matches
            ],
        }


@dataclass
class Evaluation:
    """Recall and per-query outcomes of one evaluation run."""

    map_path: str
    queries: int
    ground_truth: str
    recall: dict[int, float]
    outcomes: list[QueryOutcome] = field(repr=False)
    without_positives: int = 0
    # what was evaluated: query set, model, re-ranking and filter settings (see run_setup)
    setup: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "map": self.map_path,
            "queries": self.queries,
            "ground_truth": self.ground_truth,
            "recall": {str(n): v for n, v in self.recall.items()},
            "queries_without_right_place": self.without_positives,
            "setup": self.setup,
        }

    def write_jsonl(self, path: str | os.PathLike) -> Path:  # pragma: no mutate block
        """One JSON object per query (atomically written)."""
        from .atomic import atomic_write_bytes

        text = "".join(json.dumps(o.to_dict()) + "\n" for o in self.outcomes)
        atomic_write_bytes(path, text.encode())
        return Path(path)

    def confident(self, threshold: float) -> tuple[float, float | None]:
        """(% of queries answered with confidence ≥ ``threshold``, % of those right at rank 1
        or None when there are none): how far the confidence can be trusted."""
        sure = [o for o in self.outcomes if o.result.confidence >= threshold]
        share = 100.0 * len(sure) / max(len(self.outcomes), 1)
        return share, (100.0 * sum(o.right for o in sure) / len(sure) if sure else None)

    def confidence_curve(
        self,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no mutate block
        """Precision and recall of "answer at rank 1 when confidence ≥ t" for every threshold.

        Returns (thresholds descending, precision %, recall % of all queries).
        """
        conf = np.array([o.result.confidence for o in self.outcomes], np.float64)
        right = np.array([o.right for o in self.outcomes], bool)
        order = np.argsort(-conf, kind="stable")
        tp = np.cumsum(right[order])
        kept = np.arange(1, len(order) + 1)
        return conf[order], 100.0 * tp / kept, 100.0 * tp / max(len(order), 1)


def query_set(files: Sequence[Path]) -> str:  # pragma: no mutate block
    """The query set in a few words: its folder (or folders) and how many images."""
    folders = sorted({str(Path(f).parent) for f in files})
    where = folders[0] if len(folders) == 1 else f"{len(folders)} folders ({folders[0]}, ...)"
    return f"{len(files)} images from {where}"


def run_setup(loc: Localizer, files: Sequence[Path]) -> dict[str, Any]:  # pragma: no mutate block
    """Everything a reader of the recall needs to know produced it: query set, model (path,
    backbone, dims, precision, fingerprint), re-ranking settings, temporal filter."""
    info = loc.engine.info
    rerank = getattr(loc, "rerank", None)
    return {
        "queries": query_set(files),
        "model": {
            "path": str(getattr(loc.engine, "path", "")),
            "backbone": info.backbone,
            "descriptor_dim": info.descriptor_dim,
            "precision": info.precision,
            "fingerprint": info.fingerprint,
        },
        "k": loc.k,
        "rerank": rerank.to_dict() if rerank is not None else None,
        "filter": None,  # every query is localized on its own (no temporal filter)
    }


def _first_right(result: LocalizationResult, positives: np.ndarray) -> int | None:
    pos = set(positives.tolist())
    for rank, m in enumerate(result.matches, 1):
        if m.id in pos:
            return rank
    return None


def localize_all(
    loc: Localizer, files: Sequence[Path], progress: Callable[[int, int], None] | None = None
) -> list[LocalizationResult]:
    """Answers for every query file. Descriptors come from the embedding pipeline
    (:meth:`Engine.embed_files`, batched); a localizer that re-ranks is asked frame by frame."""
    # re-ranking needs each frame's local features beside its descriptor, which only the
    # per-frame path hands to the re-ranker
    if getattr(loc, "rerank", None):
        out = []
        for i, f in enumerate(files, 1):
            out.append(loc.localize_file(f))
            if progress is not None:
                progress(i, len(files))
        return out
    desc = loc.engine.embed_files(files, progress=progress)
    return loc.localize_descriptors(desc, [str(f) for f in files])


def evaluate(
    loc: Localizer,
    files: Sequence[str | os.PathLike],
    truth: GroundTruth,
    progress: Callable[[int, int], None] | None = None,
    results: Sequence[LocalizationResult] | None = None,
) -> Evaluation:
    """Localize ``files`` against ``loc``'s map and score them by ``truth``.

    ``loc.k`` should be at least 20 for recall@20 (fewer matches cap the N reported).
    ``results``: answers already computed for ``files`` with ``loc`` (e.g. by a camera loop),
    scored instead of localizing again.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ConfigError("no query images to evaluate")
    positives = truth.positives(files, loc)
    if results is None:
        results = localize_all(loc, files, progress)
    elif len(results) != len(files):
        raise ConfigError(f"{len(results)} results for {len(files)} query files")
    ev = score(loc, results, positives, truth.describe(loc.map.position_kind))
    ev.setup = run_setup(loc, files)
    return ev


def score(
    loc: Localizer,
    results: Sequence[LocalizationResult],
    positives: Sequence[np.ndarray],
    ground_truth: str,
) -> Evaluation:
    """Recall@N and per-query outcomes of ``results`` judged by ``positives`` (right map rows
    per query); ``ground_truth`` describes the rule for the report."""
    outcomes = [
        QueryOutcome(i, r, p, _first_right(r, p))
        for i, (r, p) in enumerate(zip(results, positives, strict=True))
    ]
    k = min(len(r.matches) for r in results)
    ranks = np.array([o.first_right or 10**9 for o in outcomes])
    recall = {n: float(100.0 * (ranks <= n).mean()) for n in RECALL_NS if n <= k}
    return Evaluation(
        map_path=str(loc.map.path),
        queries=len(results),
        ground_truth=ground_truth,
        recall=recall,
        outcomes=outcomes,
        without_positives=sum(1 for p in positives if len(p) == 0),
        setup=run_setup(loc, [Path(r.source or "") for r in results]),
    )
