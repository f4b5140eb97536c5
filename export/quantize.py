"""INT8 static quantization of an exported FP32 model (onnxruntime, QDQ, symmetric S8S8).

Only the backbone's convolutions are quantized: per-channel symmetric INT8 weights, symmetric
INT8 activations with ranges calibrated (min/max) on real images. Everything after the
backbone stays float: the NetVLAD soft-assignment conv and softmax (large logits, DESIGN.md
§3.3), the aggregation, all four L2 norms, the PCA layer; and so does the input adapter (uint8 →
float normalisation). Depthwise convs and the stem (first) conv are kept in float by default:
a probe that quantized every conv lost 8 night R@1 points on Lite0 and ran slower, and on the
Lite0 export here quantizing the stem alone took the mean cosine to FP32 from 0.97 to 0.71.
The QDQ file is also what TensorRT's explicit quantization consumes.

An INT8 model is refused unless it passes :func:`gate` against the FP32 model it came from:
cosine between FP32 and INT8 descriptors of the verification images, and recall@1 of INT8
queries against the FP32 descriptors of the same images.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sfrs_edge.backends.onnx import create_session
from sfrs_edge.errors import ConfigError, ModelError
from sfrs_edge.images import load_for_model
from sfrs_edge.model_info import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, ModelInfo

from .onnx_export import stamp_digest

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "/net/backbone/"  # node names of the traced backbone (ExportWrapper.net)
QUANTIZED_OPS = ("Conv",)
MIN_GATE_IMAGES = 32


@dataclass(frozen=True)
class Int8Config:
    """How to quantize: which convs stay float, calibration size, and the acceptance gate.

    Gate thresholds (INT8 vs the FP32 model, on the verification images): ``min_mean_cos``
    and ``min_cos`` bound the cosine per image; ``min_recall`` is the fraction of images whose
    INT8 descriptor finds its own FP32 descriptor first among all verification images'.
    """

    keep_depthwise_float: bool = True
    keep_stem_float: bool = True  # the first conv, reading the normalised image
    calibration_count: int = 32
    # percentile (99.999 %) ignores rare outliers: mean cosine 0.84 vs 0.71 with minmax on Lite0.
    # Every method keeps each calibration image's activations in memory until the end (Lite0
    # 360x640: ~25 MiB per image; VGG16 480x640: ~330 MiB): calibrate big models on fewer.
    calibration_method: str = "percentile"  # percentile | minmax | entropy
    keep_float: tuple[str, ...] = ()  # more conv node names to keep in float
    min_mean_cos: float = 0.95
    min_cos: float = 0.85
    min_recall: float = 0.95


@dataclass(frozen=True)
class Int8Gate:
    """INT8 vs FP32 on the verification images."""

    mean_cos: float
    min_cos: float
    recall_at_1: float
    num_images: int
    quantized_convs: int
    float_convs: int

    def line(self) -> str:
        return (
            f"int8 vs fp32: mean cosine {self.mean_cos:.4f}, min {self.min_cos:.4f}, "
            f"recall@1 {100 * self.recall_at_1:.1f} % on {self.num_images} images "
            f"({self.quantized_convs} convs int8, {self.float_convs} float)"
        )


def _is_depthwise(node: onnx.NodeProto) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return group > 1


def plan(model: onnx.ModelProto, config: Int8Config) -> tuple[list[str], list[str]]:
    """(node names to quantize, node names kept float) among the graph's Conv nodes."""
    quantize, keep = [], []
    convs = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    stem = next((n.name for n in convs if n.name.startswith(BACKBONE_PREFIX)), None)
    for node in convs:
        in_backbone = node.name.startswith(BACKBONE_PREFIX)
        dw = config.keep_depthwise_float and _is_depthwise(node)
        floats = config.keep_float + ((stem,) if config.keep_stem_float else ())
        if in_backbone and not dw and node.name not in floats:
            quantize.append(node.name)
        else:
            keep.append(node.name)
    if not quantize:
        raise ModelError(
            f"no backbone convolutions (nodes under {BACKBONE_PREFIX!r}) to quantize; "
            "is this an sfrs-edge export?"
        )
    return quantize, keep


class _Calibration:
    """onnxruntime CalibrationDataReader over real images, one at a time (bounded memory)."""

    def __init__(self, images: Sequence[Path], info: ModelInfo) -> None:
        self._images = list(images)
        self._pre = info.preprocessing
        self._it: Iterator[Path] = iter(self._images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        path = next(self._it, None)
        if path is None:
            return None
        return {INPUT_NAME: load_for_model(path, self._pre)[None]}

    def rewind(self) -> None:
        self._it = iter(self._images)


def read_info(model: onnx.ModelProto, source: str | os.PathLike) -> ModelInfo:
    raw = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    if raw is None:
        raise ModelError(f"{source}: no {METADATA_KEY!r} metadata; export it with sfrs-edge")
    return ModelInfo.from_json(raw, str(source))


def quantize_model(
    fp32_path: str | os.PathLike,
    output: str | os.PathLike,
    calibration: Sequence[str | os.PathLike],
    config: Int8Config = Int8Config(),
) -> tuple[ModelInfo, list[str], list[str]]:
    """Write the INT8 QDQ model of ``fp32_path`` to ``output`` (no gate: see :func:`gate`).

    Returns (its ModelInfo, quantized node names, float conv names).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    CALIBRATION = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if config.calibration_method not in CALIBRATION:
        raise ConfigError(f"calibration method must be one of {', '.join(CALIBRATION)}")
    fp32_path, output = Path(fp32_path), Path(output)
    images = [Path(p) for p in calibration]
    if not images:
        raise ConfigError("INT8 calibration needs real images: pass --calibration DIR")
    model = onnx.load(str(fp32_path))
    info = read_info(model, fp32_path)
    if info.precision != "fp32":
        raise ConfigError(
            f"{fp32_path}: INT8 starts from an fp32 model, this one is {info.precision}"
        )
    quantize, keep = plan(model, config)
    exclude = [n.name for n in model.graph.node if n.name not in set(quantize)]
    del model
    quantize_static(
        str(fp32_path),
        str(output),
        _Calibration(images, info),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        nodes_to_exclude=exclude,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CALIBRATION[config.calibration_method],
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "CalibTensorRangeSymmetric": True,
        },
        calibration_providers=["CPUExecutionProvider"],
    )
    out_model = onnx.load(str(output))
    provenance = dict(
        info.provenance,
        int8={
            "format": "QDQ",
            "scheme": "S8S8 symmetric, per-channel weights, min/max calibration",
            "calibration_images": len(images),
            "quantized_convs": len(quantize),
            "float_convs": len(keep),
            "depthwise_float": config.keep_depthwise_float,
        },
    )
    int8_info = dataclasses.replace(info, precision="int8", provenance=provenance)
    del out_model.metadata_props[:]
    entry = out_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, int8_info.to_json()
    out_model.producer_name = "sfrs-edge"
    onnx.save(out_model, str(output))
    stamp_digest(output)  # every export records its content digest
    return int8_info, quantize, keep


def _descriptors(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    sess = create_session(path)
    try:
        out = [sess.run([OUTPUT_NAME], {INPUT_NAME: b})[0] for b in batches]
    except Exception as exc:
        raise ModelError(f"{path}: onnxruntime failed to run the model ({exc})") from exc
    return np.concatenate(out).astype(np.float64)


def gate(
    fp32_path: str | os.PathLike,
    int8_path: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    quantized_convs: int = 0,
    float_convs: int = 0,
    batch_size: int = 4,
) -> Int8Gate:
    """Compare INT8 with FP32 descriptors of ``images`` (see :class:`Int8Config`)."""
    images = [Path(p) for p in images]
    if len(images) < 2:
        raise ConfigError("the INT8 gate needs at least 2 verification images")
    info = read_info(onnx.load(str(fp32_path), load_external_data=False), fp32_path)
    pre = info.preprocessing
    batches = [
        np.stack([load_for_model(p, pre) for p in images[i : i + batch_size]])
        for i in range(0, len(images), batch_size)
    ]
    ref = _descriptors(Path(fp32_path), batches)
    got = _descriptors(Path(int8_path), batches)
    ref /= np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-30)
    got /= np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-30)
    cos = np.where(np.isfinite(got).all(1), (ref * got).sum(1), -1.0)
    sims = np.nan_to_num(got @ ref.T, nan=-2.0)
    recall = float((sims.argmax(1) == np.arange(len(images))).mean())
    return Int8Gate(
        float(cos.mean()), float(cos.min()), recall, len(images), quantized_convs, float_convs
    )


def check(result: Int8Gate, config: Int8Config, source: str | os.PathLike) -> None:
    """Raise :class:`ModelError` when the INT8 model is not close enough to FP32."""
    fails = []
    if not result.mean_cos >= config.min_mean_cos:
        fails.append(f"mean cosine {result.mean_cos:.4f} < {config.min_mean_cos}")
    if not result.min_cos >= config.min_cos:
        fails.append(f"min cosine {result.min_cos:.4f} < {config.min_cos}")
    if not result.recall_at_1 >= config.min_recall:
        fails.append(f"recall@1 {100 * result.recall_at_1:.1f} % < {100 * config.min_recall:.0f} %")
    if fails:
        raise ModelError(
            f"{source}: INT8 model refused ({'; '.join(fails)}; {result.line()}); "
            "nothing was written. Use the FP32 model, or calibrate on images like the deployment's"
        )


@dataclass(frozen=True)
class Int8Report:
    """What ``export --int8`` wrote: the FP32 parity (vs torch) and the INT8 gate (vs FP32)."""

    path: Path
    info: ModelInfo
    fp32_parity: str
    gate: Int8Gate
    seconds: float

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def export_int8(
    net: Any,
    output: str | os.PathLike,
    *,
    calibration: Sequence[str | os.PathLike],
    verify_images: Sequence[str | os.PathLike],
    config: Int8Config = Int8Config(),
    **export_kwargs: Any,
) -> Int8Report:
    """Export ``net`` in FP32 (verified against torch), quantize it, gate INT8 against FP32,
    and only then write ``output``. ``export_kwargs``: those of :func:`export_model` (pca_dim,
    input_size, provenance). On any failure nothing is left at ``output``."""
    import tempfile
    import time

    from sfrs_edge.atomic import atomic_path

    from .pipeline import export_model

    t0 = time.time()
    output = Path(output)
    if output.is_dir():
        raise ConfigError(f"{output}: is a directory; give a file name such as model.onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".sfrs-int8-") as tmp:
        fp32 = export_model(
            net, Path(tmp) / "fp32.onnx", fp16=False, verify_images=verify_images, **export_kwargs
        )
        with atomic_path(output) as tmp_out:
            info, quantized, kept = quantize_model(fp32.path, tmp_out, calibration, config)
            result = gate(fp32.path, tmp_out, verify_images, len(quantized), len(kept))
            log.info("%s", result.line())
            check(result, config, output)
    return Int8Report(output, info, fp32.line(), result, round(time.time() - t0, 2))
