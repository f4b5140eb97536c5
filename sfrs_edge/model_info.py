"""The contract between an exported model file and the runtime.

Everything the runtime needs to use a model correctly travels inside the model file
(ONNX ``metadata_props`` key ``sfrs_edge``, a JSON object) as a :class:`ModelInfo`.
The graph itself takes ``uint8`` images in the layout/colour order recorded here and does
the float conversion and mean/std normalisation internally, so the runtime only decodes,
resizes and feeds bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ModelError

METADATA_KEY = "sfrs_edge"
MODEL_FORMAT_VERSION = 1
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
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True)
class ModelInfo:
    """Self-description of an exported SFRS model."""

    backbone: str
    preprocessing: Preprocessing
    descriptor_dim: int
    num_clusters: int
    local_dim: int
    pca_dim: int | None
    whitening: bool
    fingerprint: str
    precision: str = "fp32"
    package_version: str = ""
    format_version: int = MODEL_FORMAT_VERSION
    provenance: dict[str, Any] = field(default_factory=dict)
    # Re-ranking outputs (docs/RERANKING.md): selection settings, output names/shapes/dtypes
    # and a fingerprint of the local head; None for a plain descriptor-only model.
    local: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelInfo:
        try:
            raw = json.loads(text)
            version = int(raw.get("format_version", -1))
            if version != MODEL_FORMAT_VERSION:
                raise ModelError(
                    f"{source}: model format version {version} is not supported by this "
                    f"sfrs-edge (expects {MODEL_FORMAT_VERSION}); re-export it with this version"
                )
            pre = raw.pop("preprocessing")
            pre["mean"] = tuple(pre["mean"])
            pre["std"] = tuple(pre["std"])
            return cls(preprocessing=Preprocessing(**pre), **raw)
        except ModelError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{source}: sfrs_edge metadata is malformed ({exc})") from exc
