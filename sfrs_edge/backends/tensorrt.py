"""Native TensorRT engine backend (``.engine`` files built by ``sfrs-edge export --engine``).

TensorRT engines are specific to the GPU model and the TensorRT version that built them, so
export writes a JSON sidecar beside the engine (GPU name, TensorRT version, model fingerprint
and the model's :class:`~sfrs_edge.model_info.ModelInfo`); a mismatch is refused with a message
that says how to rebuild instead of failing obscurely inside TensorRT. This module owns the
sidecar's name (:func:`sidecar_path`) and the "TensorRT is missing" error
(:func:`require_tensorrt`); export imports both.

Written against TensorRT >= 10's name-based Python API, checked in NVIDIA/TensorRT's
``python/src/infer/pyCore.cpp`` (10.16 and 11.1): ``num_io_tensors``, ``get_tensor_name``,
``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_profile_shape``, ``set_input_shape``
(returns False on a shape outside the profile), ``set_tensor_address`` and
``execute_async_v3(stream_handle)`` (returns False on failure). Device memory, pinned host
buffers and the stream come from cuda-python's runtime bindings, so neither torch nor pycuda
is needed.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelError
from ..model_info import INPUT_NAME, OUTPUT_NAME

REBUILD = "rebuild it on this machine with `sfrs-edge export --engine`"
SIDECAR_SUFFIX = ".json"
INSTALL = (
    "pip install 'sfrs-edge[tensorrt]' (on Jetson: TensorRT comes with JetPack; create the "
    "venv with --system-site-packages and pip install 'cuda-python>=12.2,<13')"
)


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` → ``model.engine.json`` (the one definition; export imports it)."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


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


def require_tensorrt():
    """The ``tensorrt`` module, or :class:`ConfigError` saying how to install it.

    ConfigError (not ModelError) in export and at run time alike: a missing package is an
    installation matter, like every other missing extra (``cli/extras.py``), not a bad file.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ConfigError(
            f"TensorRT is not installed: TensorRT engines need the 'tensorrt' Python package "
            f"(>= 10) and an NVIDIA GPU; {INSTALL}; or use the .onnx model with onnxruntime"
        ) from exc
    return trt


def import_cudart():
    """cuda-python's CUDA runtime module, wherever this cuda-python keeps it.

    cuda-python >= 12.6 (``cuda-bindings``) has ``cuda.bindings.runtime``; 13.x has only that.
    Older 12.x (e.g. what JetPack 6 users have) has ``cuda.cudart``. Same functions in both.
    """
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise ConfigError(
                f"TensorRT engines need cuda-python for device memory; {INSTALL}"
            ) from exc
    return cudart


def check_cuda(result: tuple) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result; ModelError naming the error."""
    err, *rest = result
    if int(getattr(err, "value", err)) != 0:
        raise ModelError(f"CUDA runtime error {getattr(err, 'name', err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_name(cudart) -> str:
    props = check_cuda(cudart.cudaGetDeviceProperties(0))
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


def check_io(trt, engine, path: Path) -> tuple[tuple[int, int], int, int]:
    """Check the engine's I/O tensors: ``image`` uint8 (N, H, W, 3) in, ``descriptor`` float32
    (N, D) out. Returns ((H, W), D, max batch of profile 0)."""
    names = {engine.get_tensor_name(i) for i in range(engine.num_io_tensors)}
    if names != {INPUT_NAME, OUTPUT_NAME}:
        raise ModelError(f"{path}: engine tensors {sorted(names)}, expected image/descriptor")
    if engine.get_tensor_mode(INPUT_NAME) != trt.TensorIOMode.INPUT:
        raise ModelError(f"{path}: engine tensor {INPUT_NAME!r} is not an input; {REBUILD}")
    for name, want in ((INPUT_NAME, trt.DataType.UINT8), (OUTPUT_NAME, trt.DataType.FLOAT)):
        got = engine.get_tensor_dtype(name)
        if got != want:
            raise ModelError(f"{path}: engine tensor {name!r} is {got}, expected {want}; {REBUILD}")
    shape = tuple(engine.get_tensor_shape(INPUT_NAME))
    out = tuple(engine.get_tensor_shape(OUTPUT_NAME))
    if len(shape) != 4 or shape[3] != 3 or min(shape[1:]) < 1 or len(out) != 2 or out[1] < 1:
        raise ModelError(
            f"{path}: engine shapes {shape} -> {out}, expected (N, H, W, 3) -> (N, D); {REBUILD}"
        )
    _, _, max_shape = engine.get_tensor_profile_shape(INPUT_NAME, 0)
    return (int(shape[1]), int(shape[2])), int(out[1]), int(max_shape[0])


class _Pinned:
    """Page-locked host memory (``cudaMallocHost``) seen as a numpy array: async copies from
    pageable memory are staged synchronously by the driver, from pinned memory they are not."""

    def __init__(self, cudart, shape: tuple[int, ...], dtype) -> None:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.ptr = int(check_cuda(cudart.cudaMallocHost(nbytes)))
        raw = (ctypes.c_byte * nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype).reshape(shape)


class TensorRTBackend:
    """Deserialised engine, one execution context, one CUDA stream, buffers for the largest
    batch allocated once (device + pinned host). Use as a context manager or call
    :meth:`close`; ``__del__`` frees what is left."""

    def __init__(self, path: Path, side: dict[str, Any]) -> None:
        trt, cudart = require_tensorrt(), import_cudart()
        self._trt, self._cudart = trt, cudart
        self._stream = None
        self._device: list[int] = []
        self._pinned: list[_Pinned] = []
        check_compatible(path, side, gpu_name(cudart), trt.__version__)
        self.path = path
        self.name = "tensorrt"
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{path}: TensorRT could not deserialise this engine; {REBUILD}")
        (h, w), dim, self.max_batch = check_io(trt, self.engine, path)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ModelError(f"{path}: TensorRT could not create an execution context")
        self._stream = check_cuda(cudart.cudaStreamCreate())
        self._in = self._pin((self.max_batch, h, w, 3), np.uint8)
        self._out = self._pin((self.max_batch, dim), np.float32)
        self._d_in = self._malloc(self._in.array.nbytes)
        self._d_out = self._malloc(self._out.array.nbytes)
        self.context.set_tensor_address(INPUT_NAME, self._d_in)
        self.context.set_tensor_address(OUTPUT_NAME, self._d_out)
        self._shape_n = 0

    def _pin(self, shape: tuple[int, ...], dtype) -> _Pinned:
        buf = _Pinned(self._cudart, shape, dtype)
        self._pinned.append(buf)
        return buf

    def _malloc(self, nbytes: int) -> int:
        ptr = int(check_cuda(self._cudart.cudaMalloc(nbytes)))
        self._device.append(ptr)
        return ptr

    def _execute(self, inp: np.ndarray, out: np.ndarray) -> None:
        cudart, n = self._cudart, inp.shape[0]
        if self._stream is None:
            raise ModelError(f"{self.path}: TensorRT backend is closed")
        if not 1 <= n <= self.max_batch:
            raise ConfigError(f"batch {n} outside the engine's profile 1..{self.max_batch}")
        if inp.shape[1:] != self._in.array.shape[1:] or inp.dtype != np.uint8:
            raise ConfigError(
                f"input {inp.dtype} {inp.shape[1:]}, engine expects uint8 "
                f"{self._in.array.shape[1:]}"
            )
        if n != self._shape_n:
            if not self.context.set_input_shape(INPUT_NAME, (n, *inp.shape[1:])):
                raise ModelError(f"{self.path}: TensorRT refused input shape {inp.shape}")
            self._shape_n = n
        host_in, host_out = self._in.array[:n], self._out.array[:n]
        np.copyto(host_in, inp)
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(
            cudart.cudaMemcpyAsync(self._d_in, self._in.ptr, host_in.nbytes, h2d, self._stream)
        )
        if not self.context.execute_async_v3(int(self._stream)):
            raise ModelError(f"{self.path}: TensorRT execution failed")
        check_cuda(
            cudart.cudaMemcpyAsync(self._out.ptr, self._d_out, host_out.nbytes, d2h, self._stream)
        )
        check_cuda(cudart.cudaStreamSynchronize(self._stream))
        np.copyto(out, host_out)

    def run(self, batch: np.ndarray) -> np.ndarray:
        out = np.empty((batch.shape[0], self._out.array.shape[1]), np.float32)
        self._execute(np.ascontiguousarray(batch), out)
        return out

    def bind(self, inp: np.ndarray, out: np.ndarray) -> Callable[[], None]:
        return lambda: self._execute(inp, out)

    def close(self) -> None:
        """Destroy the stream and free device and pinned memory (idempotent)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        if getattr(self, "_stream", None) is not None:
            cudart.cudaStreamSynchronize(self._stream)
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        for ptr in getattr(self, "_device", []):
            cudart.cudaFree(ptr)
        self._device = []
        for buf in getattr(self, "_pinned", []):
            cudart.cudaFreeHost(buf.ptr)
        self._pinned = []

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: CUDA may already be gone
            pass
