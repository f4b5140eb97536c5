"""onnxruntime execution providers: which, in what order, with which options.

Order: TensorRT → CUDA → CPU. Nodes the TensorRT EP cannot take fall back to CUDA, not to the
CPU (and across PCIe). The TensorRT EP gets (onnxruntime docs, "TensorRT Execution Provider"):

- explicit profiles ``trt_profile_min/opt/max_shapes`` ("image:1xHxWx3" … "image:8xHxWx3"), so
  one engine covers batch 1..8 instead of being rebuilt whenever the batch grows;
- an engine cache (``trt_engine_cache_enable/path/prefix``) whose prefix names the model's
  weight fingerprint, precision, input size, descriptor size and the onnxruntime version: a
  cached engine of another model (or of the fp16 export of the same weights, which shares the
  fingerprint) can never be picked up, and an onnxruntime upgrade builds afresh.

The model's metadata is read from the file without onnx (the runtime does not depend on it):
:func:`read_metadata_props` walks the top-level protobuf fields and skips the graph.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..model_info import INPUT_NAME, METADATA_KEY, ModelInfo

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORDER = (TENSORRT, CUDA, CPU)
PROFILE_MAX_BATCH = 8  # Engine batches map building by up to this (see Engine.embed)
_METADATA_FIELD = 14  # ModelProto.metadata_props (onnx.proto)


def ordered(providers: list[str], available: list[str]) -> list[str]:
    """``providers`` plus every slower installed fallback, fastest first (TensorRT → CUDA → CPU)."""
    first = min(ORDER.index(p) for p in providers)
    return [p for p in ORDER[first:] if p in available or p == CPU]


def _varint(f) -> int | None:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7


def _entry(data: bytes) -> tuple[str, str]:
    """Decode a StringStringEntryProto (key = 1, value = 2)."""
    fields, i = {}, 0
    while i < len(data):
        tag, i = _decode(data, i)
        length, i = _decode(data, i)
        fields[tag >> 3] = data[i : i + length].decode("utf-8", "replace")
        i += length
    return fields.get(1, ""), fields.get(2, "")


def _decode(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def read_metadata_props(path: str | os.PathLike) -> dict[str, str]:
    """ONNX ``metadata_props`` of a model file, reading only the top-level field headers
    (the graph and its weights are skipped by seeking). Empty dict when the file is odd."""
    props: dict[str, str] = {}
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        while f.tell() < size:
            tag = _varint(f)
            if tag is None:
                break
            wire = tag & 7
            if wire == 0:
                if _varint(f) is None:
                    break
            elif wire == 2:
                length = _varint(f)
                if length is None or f.tell() + length > size:
                    return {}
                if tag >> 3 == _METADATA_FIELD:
                    key, value = _entry(f.read(length))
                    props[key] = value
                else:
                    f.seek(length, os.SEEK_CUR)
            elif wire == 5:
                f.seek(4, os.SEEK_CUR)
            elif wire == 1:
                f.seek(8, os.SEEK_CUR)
            else:
                return {}
    return props


def model_info_of(path: str | os.PathLike) -> ModelInfo | None:
    """The file's :class:`ModelInfo`, or None when it has none (Engine reports that later)."""
    try:
        text = read_metadata_props(path).get(METADATA_KEY)
        return ModelInfo.from_json(text, str(path)) if text else None
    except Exception:  # noqa: BLE001 - any oddity: no options derived; Engine.open checks it
        return None


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
    providers: list[str], model_path: Path, cache_dir: Path | None, ort_version: str
) -> list:
    """``providers`` as onnxruntime's ``providers=`` argument, TensorRT with its options."""
    out: list = []
    for p in providers:
        if p == TENSORRT:
            info = model_info_of(model_path)
            out.append((p, tensorrt_options(info, cache_dir, ort_version)))
        else:
            out.append(p)
    return out
