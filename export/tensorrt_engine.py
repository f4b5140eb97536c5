"""Build a TensorRT engine from an exported ONNX file: one strongly typed path.

The network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: every tensor keeps
the type the ONNX file gives it. An ``export --fp16`` ONNX becomes an FP16 engine with exactly
the FP32 islands the export put there (L2 norms, softmax, NetVLAD conv/MatMul, docs/DESIGN.md §3.2);
an FP32 ONNX becomes an FP32 engine. ``BuilderFlag.TF32`` (on by default, NvInfer.h) is cleared
so FP32 matmuls/convs really are FP32 and match onnxruntime's CPU numbers.

No ``BuilderFlag.FP16`` + ``OBEY_PRECISION_CONSTRAINTS`` + per-layer pinning: weak typing is
deprecated since TensorRT 10.12 and removed in 11 (both flags are gone from 11.1's
``BuilderFlag``), and "setting layer precision and layer output types is not allowed" in a
strongly typed network (NvInfer.h, ``kSTRONGLY_TYPED``). STRONGLY_TYPED itself is kept by
TensorRT 11 for API compatibility ("always enabled"), so the same code builds on 10 and 11.

Engines are specific to the GPU model and TensorRT version, so a JSON sidecar
(``<engine>.json``) records both, plus the ONNX file's hash and weight fingerprint; the runtime
compares them and refuses a mismatch with a rebuild hint (docs/DESIGN.md §2.3).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sfrs_edge.atomic import atomic_write_bytes
from sfrs_edge.backends.tensorrt import gpu_name as runtime_gpu_name
from sfrs_edge.backends.tensorrt import import_cudart, require_tensorrt, sidecar_path
from sfrs_edge.errors import ConfigError, ModelError
from sfrs_edge.model_info import INPUT_NAME, METADATA_KEY, ModelInfo

from .trt_compat import check_tensorrt_compatible

log = logging.getLogger(__name__)
ENGINE_FORMAT_VERSION = 2  # 2: strongly typed, batch profile min/opt/max in the sidecar

__all__ = ["BatchProfile", "build_engine", "require_tensorrt", "sidecar_path"]


@dataclass(frozen=True)
class BatchProfile:
    """The engine's optimisation profile over the dynamic batch axis (H, W are static)."""

    min: int = 1
    opt: int = 1  # what kernels are tuned for: 1 for a camera stream
    max: int = 8  # map building batches up to this

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(
                f"engine batch profile needs 1 <= min <= opt <= max, got "
                f"{self.min}/{self.opt}/{self.max}"
            )


def gpu_name() -> str:
    """Device 0's name as the runtime reads it (cuda-python), else ``nvidia-smi``'s."""
    try:
        return runtime_gpu_name(import_cudart())
    except Exception:  # noqa: BLE001 - no cuda-python, no device, no driver: ask nvidia-smi
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


def _onnx_facts(onnx_path: Path) -> tuple[ModelInfo, str]:
    """The model's info (metadata) and file hash; refuses what TensorRT's parser would."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ModelError(f"{onnx_path}: not a readable ONNX file ({exc})") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in meta:
        raise ModelError(f"{onnx_path}: not an sfrs-edge model (no '{METADATA_KEY}' metadata)")
    info = ModelInfo.from_json(meta[METADATA_KEY], str(onnx_path))
    check_tensorrt_compatible(model, onnx_path)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    return info, digest


def network_flags(trt) -> int:
    """Creation flags: strongly typed, nothing else (explicit batch is implicit since 10.0)."""
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    *,
    profile: BatchProfile | None = None,
    workspace_gb: float = 4.0,
) -> Path:
    """Build ``engine_path`` (+ JSON sidecar) from an sfrs-edge ONNX file; returns its path.

    The engine's precision is the ONNX file's (``info.precision``): build from the ``--fp16``
    export for an FP16 engine. Nothing is written unless the build succeeds.
    """
    trt = require_tensorrt()
    profile = profile or BatchProfile()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info, digest = _onnx_facts(onnx_path)
    t0 = time.time()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT cannot parse the ONNX model ({errors})")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.clear_flag(trt.BuilderFlag.TF32)  # FP32 tensors compute in FP32, as onnxruntime does
    h, w = info.preprocessing.height, info.preprocessing.width
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(
        INPUT_NAME,
        (profile.min, h, w, 3),
        (profile.opt, h, w, 3),
        (profile.max, h, w, 3),
    )
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT failed to build an engine (see its log above)")
    sidecar = {
        "format_version": ENGINE_FORMAT_VERSION,
        "gpu_name": gpu_name(),
        "tensorrt_version": trt.__version__,
        "precision": info.precision,
        "strongly_typed": True,
        "tf32": False,
        "onnx_sha256": digest,
        "fingerprint": info.fingerprint,
        "model_info": json.loads(info.to_json()),
        "batch_profile": asdict(profile),
        "max_batch": profile.max,
        "input_size": [h, w],
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_bytes(engine_path, bytes(serialized))
    atomic_write_bytes(sidecar_path(engine_path), json.dumps(sidecar, indent=2).encode())
    log.info("built %s engine %s in %.0f s", info.precision, engine_path, sidecar["seconds"])
    return engine_path
