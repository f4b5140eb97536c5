"""onnxruntime execution providers: which, in what order, with which options.

Order: TensorRT → CUDA → CPU. Nodes the TensorRT EP cannot take fall back to CUDA, not to the
CPU (and across PCIe). The TensorRT EP gets (onnxruntime docs, "TensorRT Execution Provider"):

- explicit profiles ``trt_profile_min/opt/max_shapes`` ("image:1xHxWx3" … "image:8xHxWx3"), so
  one engine covers batch 1..8 instead of being rebuilt whenever the batch grows;
- an engine cache (``trt_engine_cache_enable/path/prefix``) whose prefix names the model's
  weight fingerprint, precision, input size, descriptor size and the onnxruntime version: a
  cached engine of another model (or of the fp16 export of the same weights, which shares the
  fingerprint) can never be picked up, and an onnxruntime upgrade builds afresh.

The model's metadata comes from the walk :class:`~sfrs_edge.engine.Engine` already made over
the file (:mod:`sfrs_edge.onnx_proto`, no ``onnx`` package), or from one header-only walk here.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..model_info import INPUT_NAME, METADATA_KEY, ModelInfo
from ..onnx_proto import read_metadata_props

__all__ = [
    "info_from_props",
    "model_info_of",
    "provider_options",
    "read_metadata_props",
    "tensorrt_options",
]

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORDER = (TENSORRT, CUDA, CPU)
PROFILE_MAX_BATCH = 8  # Engine batches map building by up to this (see Engine.embed)


def ordered(providers: list[str], available: list[str]) -> list[str]:
    """``providers`` plus every slower installed fallback, fastest first (TensorRT → CUDA → CPU)."""
    first = min(ORDER.index(p) for p in providers)
    return [p for p in ORDER[first:] if p in available or p == CPU]


def info_from_props(props: dict[str, str], path: str | os.PathLike) -> ModelInfo | None:
    """The :class:`ModelInfo` in a model's ``metadata_props``, or None when it has none (Engine
    reports that later)."""
    try:
        text = props.get(METADATA_KEY)
        return ModelInfo.from_json(text, str(path)) if text else None
    except Exception:  # noqa: BLE001 - any oddity: no options derived; Engine.open checks it
        return None


def model_info_of(path: str | os.PathLike) -> ModelInfo | None:
    """The file's :class:`ModelInfo`, or None when it has none (Engine reports that later)."""
    return info_from_props(read_metadata_props(path), path)


def cache_prefix(info: ModelInfo, ort_version: str) -> str:
    """Engine-cache prefix: everything that makes a TensorRT engine differ, in a file name."""
    pre = info.preprocessing
    ver = ort_version.replace(".", "_")
    return (
        f"sfrs_{info.fingerprint}_{info.precision}_{pre.height}x{pre.width}"
        f"_d{info.descriptor_dim}_ort{ver}"
    )


def tensorrt_options(
    info: ModelInfo | None,
    cache_dir: Path | None,
    ort_version: str,
    opt_batch: int = 1,
    max_batch: int = PROFILE_MAX_BATCH,
) -> dict[str, str]:
    """TensorRT EP options: batch profiles and a model-keyed engine cache (when possible)."""
    if info is None:  # unknown model: no profile to give, and never share a cache
        return {}
    h, w = info.preprocessing.height, info.preprocessing.width

    def shape(n: int) -> str:
        return f"{INPUT_NAME}:{n}x{h}x{w}x3"

    opts = {
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(opt_batch),
        "trt_profile_max_shapes": shape(max_batch),
    }
    if cache_dir is not None:
        opts.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=str(cache_dir),
            trt_engine_cache_prefix=cache_prefix(info, ort_version),
            trt_timing_cache_enable="True",
            trt_timing_cache_path=str(cache_dir),
        )
    return opts


def provider_options(
    providers: list[str],
    model_path: Path,
    cache_dir: Path | None,
    ort_version: str,
    metadata: dict[str, str] | None = None,
) -> list:
    """``providers`` as onnxruntime's ``providers=`` argument, TensorRT with its options.
    ``metadata``: the model's ``metadata_props`` when already read (else read from the file)."""
    out: list = []
    for p in providers:
        if p == TENSORRT:
            if metadata is None:
                info = model_info_of(model_path)
            else:
                info = info_from_props(metadata, model_path)
            out.append((p, tensorrt_options(info, cache_dir, ort_version)))
        else:
            out.append(p)
    return out
