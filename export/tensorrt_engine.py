"""Build a TensorRT engine from an exported ONNX file (TensorRT 10 Python API).

Engines are specific to the GPU model and TensorRT version, so a JSON sidecar
(``<engine>.json``) records both, plus the ONNX file's hash and weight fingerprint; the runtime
compares them and rebuilds on mismatch instead of failing obscurely (docs/DESIGN.md §2.3).

Precision: an fp16 ONNX (``export --fp16``) already carries its fp32 islands (every L2 norm and
the softmax sit between Cast nodes), so it is parsed as a STRONGLY_TYPED network and TensorRT
keeps exactly those types. An fp32 ONNX with ``fp16=True`` uses ``BuilderFlag.FP16`` and pins
the norm/softmax layers (reductions, softmax, unary ops, elementwise ops) to fp32 with
OBEY_PRECISION_CONSTRAINTS (TensorRT 10 only: 11 removed weak typing).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from sfrs_edge.atomic import atomic_write_bytes
from sfrs_edge.errors import ModelError
from sfrs_edge.model_info import INPUT_NAME, METADATA_KEY, ModelInfo

SIDECAR_SUFFIX = ".json"
ENGINE_FORMAT_VERSION = 1


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def gpu_name() -> str:
    """Device 0's name as the runtime reads it (cuda-python ``cudart``), else ``nvidia-smi``."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        from sfrs_edge.backends.tensorrt import gpu_name as runtime_gpu_name

        return runtime_gpu_name(cudart)
    except Exception:  # no cuda-python, or no device: ask the driver tool
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "--id=0"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def require_tensorrt():
    """The tensorrt module, or a ModelError saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelError(
            "TensorRT is not installed: --engine needs the 'tensorrt' Python package (>= 10) "
            "and an NVIDIA GPU; install it on the target machine (pip install 'sfrs-edge[tensorrt]')"
            " or use the ONNX model with onnxruntime"
        ) from exc
    return trt


def _onnx_facts(onnx_path: Path) -> tuple[ModelInfo, bool, str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise ModelError(f"{onnx_path}: not an sfrs-edge model (no '{METADATA_KEY}' metadata)")
    info = ModelInfo.from_json(meta[METADATA_KEY], str(onnx_path))
    has_fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    return info, has_fp16, digest


def _pin_fp32(trt, network) -> int:
    """Pin norm/softmax-type layers of a weakly typed network to fp32; returns how many."""
    kinds = {
        trt.LayerType.REDUCE,
        trt.LayerType.SOFTMAX,
        trt.LayerType.UNARY,
        trt.LayerType.ELEMENTWISE,
    }
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    fp16: bool = True,
    workspace_gb: float = 4.0,
    max_batch: int = 8,
) -> Path:
    """Build ``engine_path`` (+ JSON sidecar) from an sfrs-edge ONNX file; returns the engine path."""
    trt = require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info, onnx_is_fp16, digest = _onnx_facts(onnx_path)
    t0 = time.time()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if onnx_is_fp16:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse the ONNX model ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and not onnx_is_fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise ModelError(
                f"{onnx_path}: this TensorRT has no weakly typed FP16 mode; export with --fp16 "
                "and build the engine from that ONNX file"
            )
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_fp32(trt, network)
    h, w = info.preprocessing.height, info.preprocessing.width
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, h, w, 3), (1, h, w, 3), (max_batch, h, w, 3))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    precision = "fp16" if (fp16 or onnx_is_fp16) else "fp32"
    sidecar = {
        "format_version": ENGINE_FORMAT_VERSION,
        "gpu_name": gpu_name(),
        "tensorrt_version": trt.__version__,
        "precision": precision,
        "strongly_typed": onnx_is_fp16,
        "onnx_sha256": digest,
        "fingerprint": info.fingerprint,
        "model_info": json.loads(info.to_json()),
        "max_batch": max_batch,
        "input_size": [h, w],
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_bytes(engine_path, bytes(serialized))
    atomic_write_bytes(sidecar_path(engine_path), json.dumps(sidecar, indent=2).encode())
    return engine_path
