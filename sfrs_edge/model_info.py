"""The contract between an exported model file and the runtime.

Everything the runtime needs to use a model correctly travels inside the model file
(ONNX ``metadata_props`` key ``sfrs_edge``, a JSON object) as a :class:`ModelInfo`.
The graph itself takes ``uint8`` images in the layout/colour order recorded here and does
the float conversion and mean/std normalisation internally, so the runtime only decodes,
resizes and feeds bytes.

**Identity.** :attr:`ModelInfo.fingerprint` is a hash of everything that changes a descriptor
(:func:`identity`): the weights (hash of the checkpoint's fp32 state dict, :attr:`ModelInfo.weights`),
backbone, input size, resize rule, colour order, normalisation, NetVLAD size, PCA dim,
whitening, descriptor dim and *precision class*. It is derived from those fields, never typed in,
so an info edited with ``dataclasses.replace`` (e.g. ``precision="int8"``) gets the right one.
Maps record the full info; :func:`check_map_model` compares property by property and names the
first that differs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import MapError, ModelError

METADATA_KEY = "sfrs_edge"
MODEL_FORMAT_VERSION = 2  # 2: ``weights`` field, fingerprint covers every descriptor property
SUPPORTED_FORMAT_VERSIONS = (MODEL_FORMAT_VERSION,)  # 1 was a pre-release: never read
INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"
LOCAL_FEATURES = "local_features"  # re-ranking outputs (docs/RERANKING.md)
LOCAL_XY = "local_xy"


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become network input.

    ``resize="stretch"``: resize to exactly (height, width), aspect ratio not kept (as the
    SFRS authors do). The graph input is uint8 ``layout`` in ``color_order``; inside the graph
    pixels are scaled by ``scale`` then normalised with ``mean``/``std`` (RGB order).
    """

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1.0
    resize: str = "stretch"
    color_order: str = "BGR"
    layout: str = "NHWC"
    dtype: str = "uint8"

    @property
    def size(self) -> tuple[int, int]:  # pragma: no mutate block
        return (self.height, self.width)


def precision_class(precision: str) -> str:
    """Which precisions give interchangeable descriptors.

    fp32 and fp16 (and bf16) exports of one checkpoint share the class ``float``: the fp16
    export matches fp32 at cosine >= 0.999 (checked at export), so a map built on a server in
    fp32 is searched correctly by an fp16 model on a robot. Quantised integer models (``int8``)
    are a class of their own: quantisation error moves descriptors by far more than fp16
    rounding (activations are clipped to calibrated ranges), so their neighbours in an fp32 map
    are not those of the float model; such a map must be built with the int8 model itself.
    """
    p = str(precision).lower()
    return "float" if p in ("fp32", "fp16", "bf16", "float32", "float16") else p


@dataclass(frozen=True)
class ModelInfo:
    """Self-description of an exported SFRS model.

    ``weights``: hash of the checkpoint's fp32 weights after PCA truncation. ``fingerprint`` is
    derived from :func:`identity` whenever ``weights`` is set (test doubles without weights
    give their fingerprint directly).
    """

    backbone: str
    preprocessing: Preprocessing
    descriptor_dim: int
    num_clusters: int
    local_dim: int
    pca_dim: int | None
    whitening: bool
    fingerprint: str = ""
    precision: str = "fp32"
    package_version: str = ""
    format_version: int = MODEL_FORMAT_VERSION
    provenance: dict[str, Any] = field(default_factory=dict)
    weights: str = ""
    # Re-ranking outputs (docs/RERANKING.md): selection settings, output names/shapes/dtypes
    # and a fingerprint of the local head; None for a plain descriptor-only model. Not part of
    # the identity: the global descriptor does not change, maps of the plain export still open.
    local: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.weights:
            object.__setattr__(self, "fingerprint", identity_fingerprint(self))

    def to_json(self) -> str:  # pragma: no mutate block
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Any, source: str = "model") -> ModelInfo:  # pragma: no mutate block
        """A ModelInfo from its JSON object, with every field's type checked.

        The stored fingerprint must equal the one derived from the fields (metadata edited by
        hand or by another tool is refused). Other format versions are refused.
        """
        try:
            if not isinstance(raw, dict):
                raise TypeError(f"expected a JSON object, got {type(raw).__name__}")
            raw = dict(raw)
            version = raw.get("format_version", -1)
            if version not in SUPPORTED_FORMAT_VERSIONS:
                raise ModelError(
                    f"{source}: model format version {version} is not supported by this "
                    f"sfrs-edge (expects {MODEL_FORMAT_VERSION}); re-export it with this version"
                )
            pre = dict(raw.pop("preprocessing"))
            for key in ("height", "width"):
                _expect(pre, key, int)
            for key in ("mean", "std"):
                values = pre.get(key)
                if not (isinstance(values, list | tuple) and len(values) == 3):
                    raise TypeError(f"preprocessing.{key} must be 3 numbers, got {values!r}")
                for v in values:
                    _number(v, f"preprocessing.{key}")
                pre[key] = tuple(float(v) for v in values)
            for key in ("scale",):
                if key in pre:
                    _number(pre[key], f"preprocessing.{key}")
            for key in ("resize", "color_order", "layout", "dtype"):
                if key in pre:
                    _expect(pre, key, str)
            for key in ("descriptor_dim", "num_clusters", "local_dim"):
                _expect(raw, key, int)
            if raw.get("pca_dim") is not None:
                _expect(raw, "pca_dim", int)
            _expect(raw, "whitening", bool)
            for key in ("fingerprint", "precision", "package_version", "weights", "backbone"):
                if key in raw:
                    _expect(raw, key, str)
            if not isinstance(raw.get("provenance", {}), dict):
                raise TypeError("provenance must be an object")
            if raw.get("local") is not None and not isinstance(raw["local"], dict):
                raise TypeError("local must be an object or null")
            stored = raw.get("fingerprint", "")
            info = cls(preprocessing=Preprocessing(**pre), **raw)
        except ModelError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{source}: sfrs_edge metadata is malformed ({exc})") from exc
        if info.weights and stored != info.fingerprint:
            raise ModelError(
                f"{source}: metadata fingerprint {stored} does not match the properties it "
                f"describes ({info.fingerprint}); the metadata was edited — re-export the model"
            )
        return info

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelInfo:  # pragma: no mutate block
        try:
            raw = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{source}: sfrs_edge metadata is malformed ({exc})") from exc
        return cls.from_dict(raw, source)


def _expect(raw: dict, key: str, kind: type) -> None:  # pragma: no mutate block
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key} must be {kind.__name__}, got {value!r}")


def _number(value: Any, what: str) -> None:  # pragma: no mutate block
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {value!r}")


def identity(info: ModelInfo) -> dict[str, Any]:
    """Every property that changes a descriptor, by its human name (used in messages)."""
    pre = info.preprocessing
    return {
        "weights": info.weights or info.fingerprint,
        "backbone": info.backbone,
        "input size": f"{pre.height}x{pre.width}",
        "resize rule": pre.resize,
        "colour order": pre.color_order,
        "normalisation": f"scale {pre.scale:g}, mean {list(pre.mean)}, std {list(pre.std)}",
        "NetVLAD size": f"{info.num_clusters} clusters x {info.local_dim}",
        "PCA dim": info.pca_dim,
        "whitening": info.whitening,
        "descriptor dim": info.descriptor_dim,
        "precision class": precision_class(info.precision),
    }


def identity_fingerprint(info: ModelInfo) -> str:
    """16 hex digits of SHA-256 over :func:`identity`."""
    text = json.dumps(identity(info), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_model(map_model: Any, map_name: str) -> ModelInfo:
    """The :class:`ModelInfo` a map's manifest records (its ``model.info``), consistent with the
    fingerprint recorded beside it; :class:`MapError` when it is missing, does not parse or
    disagrees. Every map writer records it, so comparing fingerprints alone is never enough."""
    recorded = map_model.get("info") if isinstance(map_model, dict) else None
    damaged = "the manifest is damaged or was edited; rebuild the map (`sfrs-edge map build`)"
    if not isinstance(recorded, dict):
        raise MapError(f"{map_name}: the manifest records no model description; {damaged}")
    try:
        built = ModelInfo.from_dict(recorded, "map")
    except ModelError as exc:
        raise MapError(
            f"{map_name}: the manifest's model description does not parse ({exc}); {damaged}"
        ) from None
    stored = map_model.get("fingerprint")
    if stored != built.fingerprint:
        raise MapError(
            f"{map_name}: the manifest is inconsistent: fingerprint {stored} does not match the "
            f"model description it records ({built.fingerprint}); {damaged}"
        )
    return built


def map_model_mismatch(built: ModelInfo, info: ModelInfo) -> str | None:
    """Why a map built by the model ``built`` (:func:`recorded_model`) cannot be searched with
    the model ``info``, property by property, or None when it can."""
    theirs, ours = identity(built), identity(info)
    for name, value in theirs.items():
        if ours[name] != value:
            if name == "weights":
                return f"its weights differ (map built by weights {value}, this model has {ours[name]})"
            return f"its {name} differs (map: {value}, this model: {ours[name]})"
    return None


def check_map_model(map_model: dict[str, Any], info: ModelInfo, map_name: str) -> None:
    """Raise :class:`MapError` naming the differing property when the map does not fit (or
    when its manifest's model record is missing, unreadable or inconsistent)."""
    why = map_model_mismatch(recorded_model(map_model, map_name), info)
    if why is not None:
        raise MapError(
            f"{map_name}: this map was built by a different model: {why}; rebuild the map with "
            "this model (`sfrs-edge map build`) or use the model that built it"
        )
