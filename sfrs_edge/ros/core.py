"""The localization core of the bag path and the ROS 2 node: image messages in, messages out.

No transport here: the bag path (:mod:`sfrs_edge.ros.localize_bag`) feeds it frames read from a
bag and writes what it returns into a new bag; the rclpy node (:mod:`sfrs_edge.ros2`) feeds it
frames from a subscription and publishes what it returns. Frames go through
:meth:`sfrs_edge.localize.Localizer.stream`, the one streaming path (temporal filter,
re-ranking, frames in flight) that ``localize --video`` uses too.

**Per frame** (:meth:`LocalizationCore.outputs`), stamped with the input frame's header stamp:

- ``pose``: ``geometry_msgs/PoseWithCovarianceStamped`` in ``frame_id`` (x/y[/z] maps);
- ``fix``: ``sensor_msgs/NavSatFix`` (lat/lon maps), ``header.frame_id`` = ``child_frame_id``
  (the frame of the camera/robot, as a GNSS driver names its antenna's frame);
- ``matches``: ``std_msgs/String`` holding one JSON object (:func:`matches_json`);
- ``debug_image`` (when enabled): ``sensor_msgs/Image`` bgr8, the frame with the answer written
  on it.

A map without positions gives ``matches`` only.

**The answer.** Without a temporal filter, the frame's own estimate (the similarity-weighted
position of its near matches, which refines the best place). With one, the filtered place: at
the frame's own estimate when the filter picks the frame's own best place, else at the filtered
place's position.

**Covariance rule** (:class:`CovarianceRule`). ``σ = clip(r / c, r, D)`` in position units
(metres for lat/lon maps), variance ``σ²`` on x and y: ``c`` is the frame's confidence
(:mod:`sfrs_edge.localize`), ``r`` the localizer's ``near_radius`` (default ``far_radius / 5`` =
5 m: an answer is averaged from map places within ``r``, so a certain answer is as good as
that), ``D`` the extent of the map's positions (the diagonal of their bounding box, at least
``far_radius``): zero confidence means "anywhere on the map". When the filter answers a place
far from the frame's own best (beyond ``far_radius``, or ``far_frames`` rows without
positions), ``c = 0``: the frame's confidence is about another place.
z (and altitude) have no estimate: z is the place's z for x/y/z maps with variance ``σ²``,
else 0 with variance :data:`UNKNOWN_VARIANCE`. Orientation: the yaw of the answer place's
heading (degrees CCW from +x, as bag poses give it) with standard deviation
``45° / max(c, 0.25)``; without a heading, identity with variance :data:`UNKNOWN_VARIANCE`.
Roll and pitch are never estimated (variance :data:`UNKNOWN_VARIANCE`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..geo import haversine_m
from ..localize import Localizer
from ..results import Match
from ..stream.filtering import FilterConfig
from ..stream.sequence import StreamResult
from .frames import StampedFrame, stamp_text
from .messages import DIAGNOSTICS, IMAGE, NAVSATFIX, POSE, STRING, OutMessage, header

UNKNOWN_VARIANCE = 1e6  # "no information" for axes the place recognition does not estimate
HEADING_SIGMA_DEG = 45.0
DIAGNOSTIC_NAME = "sfrs_edge: visual localization"


@dataclass(frozen=True)
class CoreConfig:
    """Frame ids of the published messages and the optional debug image.

    ``frame_id``: the map frame (``header.frame_id`` of the pose); ``child_frame_id``: the
    robot/camera frame whose position is estimated (the NavSatFix header, and named in the
    matches JSON). No ``odom`` transform is published: a pose fuser such as robot_localization
    (``world_frame: map``) takes the pose with its covariance and publishes map → odom.
    """

    frame_id: str = "map"
    child_frame_id: str = "base_link"
    debug_image: bool = False
    debug_width: int = 640


@dataclass(frozen=True)
class CovarianceRule:
    """``σ(c) = clip(min_sigma / c, min_sigma, max_sigma)``; see the module doc."""

    min_sigma: float
    max_sigma: float

    def sigma(self, confidence: float) -> float:
        c = float(confidence)
        if not c > 0:
            return self.max_sigma
        return float(min(max(self.min_sigma / c, self.min_sigma), self.max_sigma))

    @classmethod
    def for_localizer(cls, loc: Localizer) -> CovarianceRule:
        """``min_sigma`` = ``loc.near_radius``; ``max_sigma`` = the map's extent."""
        extent = map_extent(loc.map.positions(), loc.position_kind)
        r = float(loc.near_radius)
        return cls(r, max(extent, float(loc.far_radius), r))


def map_extent(positions: np.ndarray, kind: str | None) -> float:
    """Diagonal of the bounding box of the known positions (metres for lat/lon), 0 if none."""
    if positions.size == 0:
        return 0.0
    known = positions[~np.isnan(positions).any(axis=1)]
    if len(known) == 0:
        return 0.0
    lo, hi = known.min(axis=0), known.max(axis=0)
    if kind == "latlon":
        return float(haversine_m(lo[None, :2], hi[:2])[0])
    return float(np.linalg.norm(hi[:2] - lo[:2]))


def _quaternion(heading_deg: float) -> dict[str, float]:
    yaw = math.radians(heading_deg)
    return {"x": 0.0, "y": 0.0, "z": math.sin(yaw / 2), "w": math.cos(yaw / 2)}


def _match_dict(m: Match) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "similarity": m.similarity,
        "position": list(m.position) if m.position is not None else None,
        "inliers": m.inliers,
    }


@dataclass(frozen=True)
class Answer:
    """What one frame's messages say: position (or None), confidence used for the covariance,
    σ, the heading of the answer place, and the place."""

    position: tuple[float, ...] | None
    confidence: float
    sigma: float
    heading: float | None
    place: Match


class LocalizationCore:
    """Localizer + filter + message rules. See the module doc."""

    def __init__(
        self,
        localizer: Localizer,
        filter: FilterConfig | None = None,  # noqa: A002 - the name every entry point uses
        config: CoreConfig | None = None,
        in_flight: int | None = None,
    ) -> None:
        """``in_flight``: frames localized at the same time by ``Localizer.stream`` (None: its
        default). More than 1 reads frames ahead of the results: fine offline (bags), not
        for a live node, where a frame's result would wait for the next frame."""
        self.loc = localizer
        self.in_flight = in_flight
        self.filter = filter or FilterConfig()
        self.config = config or CoreConfig()
        self.rule = CovarianceRule.for_localizer(localizer)
        self._pending: dict[int, tuple[int, np.ndarray | None]] = {}
        self.received = 0  # frames that reached the shell (the node counts them)
        self.localized = 0
        self.failed = 0  # frames that could not be decoded (the node counts them)
        self.last_error: str | None = None
        self.last_failed = False
        self.last: StreamResult | None = None
        self.last_answer: Answer | None = None
        self.last_stamp_ns = 0

    # --- the loop ---------------------------------------------------------------------

    def run(
        self, frames: Iterable[StampedFrame]
    ) -> Iterator[tuple[StreamResult, list[OutMessage]]]:
        """Localize ``frames`` (in order) through ``Localizer.stream``; per frame, its result
        and the messages to publish."""

        def feed() -> Iterator[StampedFrame]:
            for f in frames:
                keep = f.image if self.config.debug_image else None
                self._pending[f.index] = (f.stamp_ns, keep)
                yield f

        for r in self.loc.stream(feed(), self.filter, in_flight=self.in_flight):
            stamp, image = self._pending.pop(r.index)
            yield r, self.outputs(r, stamp, image)

    # --- output -----------------------------------------------------------------------

    def answer(self, r: StreamResult) -> Answer:
        """The answer of one frame (see the module doc: the filtered place, refined by the
        frame's own estimate when both are the same place)."""
        own = r.result
        best = own.best
        if r.filtered is None or r.filtered.id == best.id:
            place, position, conf = best, own.position, float(own.confidence)
        else:
            near = self.loc.estimator.near(
                np.array([r.filtered.id]), best.id, self.loc.far_radius, self.loc.far_frames
            )
            conf = float(own.confidence) if bool(near[0]) else 0.0
            place, position = r.filtered, r.filtered.position
        heading = self.loc.map.places([place.id])[0].heading
        return Answer(position, conf, self.rule.sigma(conf), heading, place)

    def outputs(
        self, r: StreamResult, stamp_ns: int, image: np.ndarray | None = None
    ) -> list[OutMessage]:
        """The messages of one localized frame (see the module doc)."""
        a = self.answer(r)
        self.localized += 1
        self.last, self.last_answer, self.last_stamp_ns = r, a, stamp_ns
        out = []
        kind = self.loc.position_kind
        if a.position is not None and kind == "latlon":
            out.append(OutMessage("fix", NAVSATFIX, self._fix(a, stamp_ns), stamp_ns))
        elif a.position is not None:
            out.append(OutMessage("pose", POSE, self._pose(a, stamp_ns), stamp_ns))
        text = json.dumps(self.matches_json(r, a, stamp_ns))
        out.append(OutMessage("matches", STRING, {"data": text}, stamp_ns))
        if image is not None:
            out.append(OutMessage("debug_image", IMAGE, self._debug(image, a, stamp_ns), stamp_ns))
        return out

    def _pose(self, a: Answer, stamp_ns: int) -> dict[str, Any]:
        p = a.position
        var = a.sigma**2
        z, var_z = (p[2], var) if len(p) > 2 else (0.0, UNKNOWN_VARIANCE)
        cov = np.zeros((6, 6))
        cov[0, 0] = cov[1, 1] = var
        cov[2, 2] = var_z
        cov[3, 3] = cov[4, 4] = UNKNOWN_VARIANCE
        if a.heading is not None:
            orientation = _quaternion(a.heading)
            sd = math.radians(HEADING_SIGMA_DEG / max(a.confidence, 0.25))
            cov[5, 5] = sd**2
        else:
            orientation = {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}
            cov[5, 5] = UNKNOWN_VARIANCE
        return {
            "header": header(stamp_ns, self.config.frame_id),
            "pose": {
                "pose": {
                    "position": {"x": float(p[0]), "y": float(p[1]), "z": float(z)},
                    "orientation": orientation,
                },
                "covariance": cov.ravel().tolist(),
            },
        }

    def _fix(self, a: Answer, stamp_ns: int) -> dict[str, Any]:
        var = a.sigma**2
        return {
            "header": header(stamp_ns, self.config.child_frame_id),
            "status": {"status": 0, "service": 0},  # STATUS_FIX; no satellite service
            "latitude": float(a.position[0]),
            "longitude": float(a.position[1]),
            "altitude": math.nan,  # not estimated (ROS: NaN when there is no altitude)
            "position_covariance": [var, 0.0, 0.0, 0.0, var, 0.0, 0.0, 0.0, UNKNOWN_VARIANCE],
            "position_covariance_type": 1,  # COVARIANCE_TYPE_APPROXIMATED
        }

    def matches_json(self, r: StreamResult, a: Answer, stamp_ns: int) -> dict[str, Any]:
        """The matches message's JSON object (keys documented in docs/ROS.md)."""
        own = r.result
        return {
            "stamp": stamp_text(stamp_ns),
            "frame": r.index,
            "frame_id": self.config.frame_id,
            "child_frame_id": self.config.child_frame_id,
            "position": list(a.position) if a.position is not None else None,
            "position_kind": own.position_kind,
            "sigma": round(a.sigma, 4),
            "confidence": own.confidence,
            "answer": _match_dict(a.place),
            "filtered": None
            if r.filtered is None
            else {**_match_dict(r.filtered), "score": r.filtered_score},
            "matches": [_match_dict(m) for m in own.matches],
            "reranked": own.reranked,
            "latency_ms": r.latency_ms,
        }

    def _debug(self, image: np.ndarray, a: Answer, stamp_ns: int) -> dict[str, Any]:
        h, w = image.shape[:2]
        width = min(self.config.debug_width, w)
        small = cv2.resize(
            image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA
        )
        text = f"{a.place.name}  c={a.confidence:.2f}  sigma={a.sigma:.1f}"
        cv2.putText(small, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
        cv2.putText(small, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        small = np.ascontiguousarray(small)
        return {
            "header": header(stamp_ns, self.config.child_frame_id),
            "height": small.shape[0],
            "width": small.shape[1],
            "encoding": "bgr8",
            "is_bigendian": 0,
            "step": small.shape[1] * 3,
            "data": small.tobytes(),
        }

    def diagnostics(self, now_ns: int, dropped: int = 0) -> OutMessage:
        """A ``diagnostic_msgs/DiagnosticArray`` of the loop's state: OK while frames are
        localized, WARN before the first frame, ERROR when the last frame could not be read."""
        if self.last_failed:
            level, text = 2, f"frames cannot be read: {self.last_error}"
        elif self.localized == 0:
            level, text = 1, "no frame localized yet"
        else:
            level, text = 0, "localizing"
        values = {
            "frames_received": self.received,
            "frames_localized": self.localized,
            "frames_failed": self.failed,
            "frames_dropped": dropped,
            "map": str(getattr(self.loc.map, "path", "")),
            "places": len(self.loc.map),
            "filter": f"{self.filter.method} window {self.filter.window}",
        }
        if self.last is not None and self.last_answer is not None:
            values.update(
                last_stamp=stamp_text(self.last_stamp_ns),
                last_place=self.last_answer.place.name,
                last_confidence=self.last.result.confidence,
                last_latency_ms=self.last.latency_ms,
            )
        if self.last_error is not None:
            values["last_error"] = self.last_error
        status = {
            "level": bytes([level]),
            "name": DIAGNOSTIC_NAME,
            "message": text,
            "hardware_id": str(getattr(self.loc.engine, "fingerprint", "")),
            "values": [{"key": k, "value": str(v)} for k, v in values.items()],
        }
        fields = {"header": header(now_ns, ""), "status": [status]}
        return OutMessage("diagnostics", DIAGNOSTICS, fields, now_ns)

    def forget(self) -> None:
        """Drop the stamps of frames an interrupted :meth:`run` left in flight."""
        self._pending.clear()
