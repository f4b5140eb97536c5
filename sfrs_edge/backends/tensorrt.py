"""Native TensorRT engine backend (``.engine`` files built by ``sfrs-edge export --engine``).

TensorRT engines are specific to the GPU model and the TensorRT version that built them, so
export writes a JSON sidecar beside the engine (GPU name, TensorRT version, model fingerprint
and the model's :class:`~sfrs_edge.model_info.ModelInfo`); a mismatch is refused with a message
that says how to rebuild instead of failing obscurely inside TensorRT.

Written against TensorRT ≥ 10's name-based Python API (``num_io_tensors``,
``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) and cuda-python's ``cudart``
for device memory, so this module needs neither torch nor pycuda.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..model_info import INPUT_NAME, OUTPUT_NAME

REBUILD = "rebuild it on this machine with `sfrs-edge export --engine`"


def sidecar_path(engine_path: Path) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: Path) -> dict[str, Any]:
    """The JSON written beside an engine; ModelError when missing or malformed."""
    side = sidecar_path(engine_path)
    try:
        data = json.loads(side.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"{engine_path}: no sidecar {side.name} (GPU, TensorRT version, model info); {REBUILD}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{side}: unreadable engine sidecar ({exc}); {REBUILD}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{side}: engine sidecar is not a JSON object; {REBUILD}")
    return data


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ConfigError(
            "TensorRT engines need the `tensorrt` Python package (pip install sfrs-edge[tensorrt]); "
            "or use the .onnx model with --backend cpu/cuda"
        ) from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise ConfigError(
                "TensorRT engines need cuda-python for device memory (pip install cuda-python)"
            ) from exc
    return trt, cudart


def _check(result: tuple) -> Any:
    err, *rest = result
    if int(err) != 0:
        raise ModelError(f"CUDA runtime error {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_name(cudart) -> str:
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name
    return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)


def check_compatible(engine_path: Path, side: dict[str, Any], gpu: str, trt_version: str) -> None:
    """Refuse an engine built for another GPU or TensorRT version (pure: testable without GPU)."""
    built_gpu = side.get("gpu_name", side.get("gpu"))
    built_trt = side.get("tensorrt_version")
    if str(built_gpu or "").strip() != gpu.strip():
        raise ModelError(
            f"{engine_path}: built for GPU {built_gpu!r}, this machine has {gpu!r}; {REBUILD}"
        )
    if built_trt != trt_version:
        raise ModelError(
            f"{engine_path}: built with TensorRT {built_trt}, this machine has {trt_version}; "
            f"{REBUILD}"
        )


class TensorRTBackend:
    """Deserialised engine, one execution context, one CUDA stream, device buffers reused."""

    def __init__(self, path: Path, side: dict[str, Any]) -> None:
        trt, cudart = _import_trt()
        self._trt, self._cudart = trt, cudart
        check_compatible(path, side, gpu_name(cudart), trt.__version__)
        self.path = path
        self.name = "tensorrt"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{path}: TensorRT could not deserialise this engine; {REBUILD}")
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {INPUT_NAME, OUTPUT_NAME}:
            raise ModelError(f"{path}: engine tensors {sorted(names)}, expected image/descriptor")
        _, _, max_shape = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.max_batch = int(max_shape[0])
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self._in_ptr = self._out_ptr = None
        self._capacity = 0

    def _ensure(self, n: int, in_bytes: int, out_bytes: int) -> None:
        if n <= self._capacity:
            return
        cudart = self._cudart
        for ptr in (self._in_ptr, self._out_ptr):
            if ptr is not None:
                _check(cudart.cudaFree(ptr))
        self._in_ptr = _check(cudart.cudaMalloc(in_bytes))
        self._out_ptr = _check(cudart.cudaMalloc(out_bytes))
        self._capacity = n
        self.context.set_tensor_address(INPUT_NAME, int(self._in_ptr))
        self.context.set_tensor_address(OUTPUT_NAME, int(self._out_ptr))

    def _execute(self, inp: np.ndarray, out: np.ndarray) -> None:
        cudart = self._cudart
        n = inp.shape[0]
        if n > self.max_batch:
            raise ConfigError(f"batch {n} exceeds the engine's maximum batch {self.max_batch}")
        per_in, per_out = inp.nbytes // n, out.nbytes // n
        self._ensure(n, per_in * max(n, 1), per_out * max(n, 1))
        self.context.set_input_shape(INPUT_NAME, tuple(inp.shape))
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._in_ptr, inp.ctypes.data, inp.nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise ModelError(f"{self.path}: TensorRT execution failed")
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._out_ptr, out.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        dim = int(self.engine.get_tensor_shape(OUTPUT_NAME)[-1])
        out = np.empty((batch.shape[0], dim), np.float32)
        self._execute(batch, out)
        return out

    def bind(self, inp: np.ndarray, out: np.ndarray) -> Callable[[], None]:
        return lambda: self._execute(inp, out)

    def __del__(self) -> None:
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for ptr in (getattr(self, "_in_ptr", None), getattr(self, "_out_ptr", None)):
            if ptr is not None:
                cudart.cudaFree(ptr)
