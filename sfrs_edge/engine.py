"""Engine: one exported model behind one small interface, whatever runs it.

``Engine.open("model.onnx")`` reads the model's embedded :class:`ModelInfo`, picks a backend
(onnxruntime with the best installed execution provider, or a native TensorRT ``.engine``)
and turns images into L2-normalised descriptors. Preprocessing (decode, resize rule, colour
order) is driven only by that metadata; normalisation happens inside the graph.

Two paths:

- :meth:`Engine.embed_files` / :meth:`Engine.embed`: batches (files go through the embedding
  pipeline, :mod:`sfrs_edge.embedding`).
- :meth:`Engine.embed_frame`: one camera frame, with the resize target, the network input and
  output preallocated and bound once, so a call allocates nothing it can avoid and never
  creates a session. Stage timings of the last call are in :attr:`Engine.last_timings`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .embedding import embed_images
from .errors import ConfigError, ImageError, ModelError, SfrsEdgeError
from .images import resize_for_model, to_bgr8
from .model_digest import check_model_file
from .model_info import METADATA_KEY, OUTPUT_NAME, ModelInfo

BACKENDS = ("auto", "cpu", "cuda", "tensorrt")


def _check_file(path: Path) -> None:  # pragma: no mutate block
    if not path.exists():
        raise ModelError(f"{path}: no such model file (make one with `sfrs-edge export`)")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, expected a .onnx or .engine model file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: model file is empty (0 bytes)")


def _check_output_dim(runner, info: ModelInfo, path: Path) -> None:
    session = getattr(runner, "session", None)
    if session is None:
        return
    for out in session.get_outputs():
        if out.name == OUTPUT_NAME:
            shape = list(out.shape)
            if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != info.descriptor_dim):
                raise ModelError(
                    f"{path}: graph output {OUTPUT_NAME!r} has shape {shape}, the metadata "
                    f"says (N, {info.descriptor_dim}); the model file is inconsistent"
                )


def _check_info(info: ModelInfo, path: Path) -> None:
    pre = info.preprocessing
    if pre.layout != "NHWC" or pre.dtype != "uint8":
        raise ModelError(
            f"{path}: model expects {pre.dtype} {pre.layout} input; this runtime feeds uint8 NHWC"
        )
    if info.descriptor_dim < 1 or pre.height < 1 or pre.width < 1:
        raise ModelError(f"{path}: model metadata has impossible sizes")


NORM_TOLERANCE = 1e-2  # |‖d‖ − 1|; fp16 exports stay within 1e-3


def check_finite(desc: np.ndarray, what: str = "descriptor") -> np.ndarray:
    """Raise when a descriptor holds NaN or inf (overflow in the model, corrupt weights)."""
    if not np.isfinite(desc).all():
        bad = int((~np.isfinite(desc).all(axis=-1)).sum()) if desc.ndim > 1 else 1
        raise ModelError(
            f"{what}: the model produced NaN/inf values ({bad} of {max(len(desc), 1)} "
            "descriptors); the model file is corrupt or overflows at this precision "
            "(re-export in fp32)"
        )
    return desc


def check_descriptors(desc: np.ndarray, dim: int, what: str, rows: int | None = None) -> np.ndarray:
    """Raise :class:`ModelError` unless ``desc`` is finite, unit-length rows of ``dim`` values
    (``rows`` of them when given: one per image of the batch).

    A model whose output breaks the contract would give similarities outside [-1, 1] and
    confident wrong answers, so this runs on every output (it costs one pass over the rows).
    """
    if rows is not None and desc.shape[:1] != (rows,):
        raise ModelError(f"{what}: the model returned {desc.shape} for a batch of {rows}")
    if desc.ndim != 2 or desc.shape[1] != dim:
        raise ModelError(
            f"{what}: the model produced descriptors of shape {desc.shape[1:]}, its metadata "
            f"says {dim} values; the model file is inconsistent (re-export it)"
        )
    check_finite(desc, what)
    norms = np.linalg.norm(desc.astype(np.float64), axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        raise ModelError(
            f"{what}: the model produced descriptors of length {norms[off][0]:.4g}, not unit "
            "length; it is not an L2-normalised sfrs-edge export (re-export it)"
        )
    return desc


def _run(what: str, fn: Callable, *args):  # pragma: no mutate block
    """Call the backend; its own exception types become ModelError naming the model."""
    try:
        return fn(*args)
    except SfrsEdgeError:
        raise
    except Exception as exc:  # onnxruntime/TensorRT raise their own types
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{what}: inference failed ({msg})") from exc


class _NoGate:
    """A lock that never blocks (backends that run calls concurrently)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None


class _FrameSlot:
    """One caller's preallocated network input and outputs, bound to the backend once."""

    def __init__(self, engine: Engine) -> None:  # pragma: no mutate block
        pre = engine.info.preprocessing
        self.inp = np.zeros((1, pre.height, pre.width, 3), np.uint8)
        self.out = np.zeros((1, engine.info.descriptor_dim), np.float32)
        self.run: Callable[[], None] = engine.backend.bind(self.inp, self.out)
        self.all: dict[str, np.ndarray] | None = None  # every output, bound at first use
        self.run_all: Callable[[], None] | None = None

    def bound_all(self, engine: Engine) -> Callable[[], None] | None:  # pragma: no mutate block
        """The runner over buffers for every output (None: the backend cannot bind them)."""
        bind = getattr(engine.backend, "bind_all", None)
        if bind is None:
            return None
        if self.run_all is None:
            bufs = {OUTPUT_NAME: np.zeros((1, engine.dim), np.float32)}
            for name, (shape, dtype) in engine.extra_outputs.items():
                bufs[name] = np.zeros((1, *shape), dtype)
            self.run_all = bind(self.inp, bufs)
            self.all = bufs
        return self.run_all


class Engine:
    """A loaded model. Create with :meth:`Engine.open`."""

    def __init__(
        self, path: Path, info: ModelInfo, backend, verified: bool = False
    ) -> None:  # pragma: no mutate block
        self.path = path
        self.info = info
        self.backend = backend
        self.verified = verified  # content digest checked at open
        self._first = _FrameSlot(self)
        self._free = [self._first]  # slots not in use; a single caller always gets the first
        self._free_lock = threading.Lock()
        # backends that run one call at a time (TensorRT contexts) get one caller at a time
        concurrent = bool(getattr(backend, "concurrent", False))
        self._gate = _NoGate() if concurrent else threading.Lock()
        self.last_timings: dict[str, float] = {}

    @property
    def _frame_in(self) -> np.ndarray:  # pragma: no mutate block
        return self._first.inp

    @property
    def _frame_out(self) -> np.ndarray:  # pragma: no mutate block
        return self._first.out

    @contextlib.contextmanager
    def _slot(self) -> Iterator[_FrameSlot]:  # pragma: no mutate block
        """A free frame slot (a new one when every slot is busy and the backend runs calls
        concurrently: frames in flight each run on their own bound buffers)."""
        with self._gate:
            with self._free_lock:
                slot = self._free.pop() if self._free else None
            slot = slot or _FrameSlot(self)
            try:
                yield slot
            finally:
                with self._free_lock:
                    self._free.append(slot)

    # --- construction -----------------------------------------------------------------

    @classmethod
    def open(
        cls,
        model_path: str | os.PathLike,
        backend: str = "auto",
        threads: int | None = None,
        spin: bool | None = None,
        allow_unverified: bool = False,
    ) -> Engine:  # pragma: no mutate block
        """Load an ``.onnx`` model (onnxruntime) or a TensorRT ``.engine`` (native TensorRT).

        ``backend``: ``auto`` (TensorRT > CUDA > CPU execution provider, whichever onnxruntime
        has), ``cpu``, ``cuda`` or ``tensorrt``. ``threads``: CPU threads for inference
        (None: the machine's physical cores, :func:`sfrs_edge.threads.physical_cores`).
        ``spin``: let idle inference threads spin-wait (None: off unless ``SFRS_EDGE_SPIN=1``).
        ``allow_unverified``: open an ONNX model that has no content digest (refused otherwise;
        also ``SFRS_EDGE_ALLOW_UNVERIFIED_MODEL=1``), with a warning; ``verified`` is False.
        """
        path = Path(model_path).expanduser()
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        _check_file(path)
        if path.suffix == ".engine":
            if backend not in ("auto", "tensorrt"):
                raise ConfigError(
                    f"{path}: a TensorRT engine runs only with --backend tensorrt; "
                    f"use the .onnx model for {backend!r}"
                )
            from .backends.tensorrt import TensorRTBackend, read_sidecar

            side = read_sidecar(path)
            info = cls._engine_info(path, side)
            if side.get("fingerprint") not in (None, info.fingerprint):
                raise ModelError(
                    f"{path}: engine was built from a model with fingerprint "
                    f"{side.get('fingerprint')}, but its model info says {info.fingerprint}; "
                    "rebuild it with `sfrs-edge export --engine`"
                )
            runner = TensorRTBackend(path, side)
            verified = False
        else:
            with open(path, "rb") as f:
                head = f.read(64)
            if head.lstrip().startswith((b"{", b"PK", b"\x80")):
                raise ModelError(
                    f"{path}: not an ONNX model (looks like JSON, zip or a torch pickle); "
                    "a checkpoint must be exported first with `sfrs-edge export`"
                )
            from .backends.onnx import OnnxBackend

            # one walk over the file (digest and metadata) before onnxruntime parses it
            checked = check_model_file(path, allow_unverified)
            verified = checked.verified
            runner = OnnxBackend(path, backend, threads, spin, checked.metadata)
            info = cls._parse_info(runner.metadata(), path)
            _check_output_dim(runner, info, path)
            shape = runner.input_shape()
            want = [info.preprocessing.height, info.preprocessing.width, 3]
            if len(shape) != 4 or [s if isinstance(s, int) else -1 for s in shape[1:]] != want:
                raise ModelError(
                    f"{path}: graph input shape {shape} does not match the metadata "
                    f"(N, {want[0]}, {want[1]}, 3)"
                )
        _check_info(info, path)
        return cls(path, info, runner, verified)

    @classmethod
    def _engine_info(cls, path: Path, side: dict) -> ModelInfo:  # pragma: no mutate block
        """ModelInfo of an engine: from its sidecar, else from the ONNX file it was built from
        (``model.engine`` ↔ ``model.onnx`` in the same folder)."""
        if side.get("model_info") is not None:
            return cls._parse_info(side["model_info"], path)
        onnx_path = path.with_suffix(".onnx")
        if not onnx_path.is_file():
            raise ModelError(
                f"{path}: the engine's sidecar has no model info and {onnx_path.name} (the ONNX "
                "it was built from) is not beside it; keep both files together"
            )
        from .onnx_proto import read_metadata_props

        return cls._parse_info(read_metadata_props(onnx_path).get(METADATA_KEY), onnx_path)

    @staticmethod
    def _parse_info(raw, path: Path) -> ModelInfo:  # pragma: no mutate block
        if raw is None:
            raise ModelError(
                f"{path}: no {METADATA_KEY!r} metadata in the model file; it was not exported by "
                "sfrs-edge (export it with `sfrs-edge export`)"
            )
        if isinstance(raw, dict):
            import json

            raw = json.dumps(raw)
        return ModelInfo.from_json(raw, str(path))

    # --- properties -------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.info.descriptor_dim

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def input_size(self) -> tuple[int, int]:  # pragma: no mutate block
        return self.info.preprocessing.size

    def __repr__(self) -> str:  # pragma: no mutate block
        h, w = self.input_size
        return (
            f"Engine({self.path.name}, {self.info.backbone}, {h}x{w} → {self.dim}-d, "
            f"{self.backend.name}, fingerprint {self.fingerprint})"
        )

    def close(self) -> None:  # pragma: no mutate block
        """Release the backend's resources now (TensorRT: stream, device and pinned memory;
        onnxruntime sessions are freed with the engine). Idempotent; use ``with Engine.open(...)``."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            with self._free_lock:
                close()

    def __enter__(self) -> Engine:  # pragma: no mutate block
        return self

    def __exit__(self, *exc) -> None:  # pragma: no mutate block
        self.close()

    # --- inference --------------------------------------------------------------------

    def embed(self, batch_uint8_nhwc: np.ndarray) -> np.ndarray:
        """Descriptors (N, dim) float32 of a uint8 (N, H, W, 3) batch already resized."""
        batch = np.asarray(batch_uint8_nhwc)
        h, w = self.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise ImageError(
                f"batch is {batch.dtype} {batch.shape}; the model takes uint8 (N, {h}, {w}, 3) "
                "(use embed_frame/embed_files for arbitrary images)"
            )
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        batch = np.ascontiguousarray(batch)
        step = self.backend.max_batch or len(batch)
        what = str(self.path)
        parts = [
            _run(what, self.backend.run, batch[i : i + step]) for i in range(0, len(batch), step)
        ]
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return check_descriptors(np.asarray(out, np.float32), self.dim, what, len(batch))

    @property
    def extra_outputs(
        self,
    ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:  # pragma: no mutate block
        """Outputs besides ``descriptor`` (e.g. re-ranking ``local_features``/``local_xy``):
        per-image shape and dtype; empty for a plain model (contract 1)."""
        get = getattr(self.backend, "extra_outputs", None)
        return get() if get is not None else {}

    def embed_all(self, batch_uint8_nhwc: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of a uint8 (N, H, W, 3) batch by name; always has ``"descriptor"``."""
        extras = self.extra_outputs
        if not extras:
            return {OUTPUT_NAME: self.embed(batch_uint8_nhwc)}
        batch = np.ascontiguousarray(batch_uint8_nhwc)
        h, w = self.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (h, w, 3):
            raise ImageError(
                f"batch is {batch.dtype} {batch.shape}; the model takes uint8 (N, {h}, {w}, 3)"
            )
        if len(batch) == 0:
            out = {name: np.zeros((0, *shape), dtype) for name, (shape, dtype) in extras.items()}
            return {OUTPUT_NAME: np.zeros((0, self.dim), np.float32), **out}
        what = str(self.path)
        out = _run(what, self.backend.run_all, batch)
        desc = np.asarray(out[OUTPUT_NAME], np.float32)
        out[OUTPUT_NAME] = check_descriptors(desc, self.dim, what, len(batch))
        return out

    def embed_frame_all(
        self, frame_bgr: np.ndarray, timings: dict[str, float] | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`embed_all` of one frame of any size: every output, first axis dropped."""
        if not self.extra_outputs:
            return {OUTPUT_NAME: self.embed_frame(frame_bgr, timings)}
        t0 = time.perf_counter()
        frame = to_bgr8(frame_bgr, "frame")
        with self._slot() as slot:
            resize_for_model(frame, self.info.preprocessing, out=slot.inp[0])
            t1 = time.perf_counter()
            run = slot.bound_all(self)
            if run is None:  # a backend without multi-output binding
                out = {name: value[0] for name, value in self.embed_all(slot.inp).items()}
            else:
                _run(str(self.path), run)
                out = {name: buf[0].copy() for name, buf in slot.all.items()}
                what = f"{self.path}: frame descriptor"
                check_descriptors(out[OUTPUT_NAME][None], self.dim, what)
            t2 = time.perf_counter()
        self.last_timings = {"preprocess": t1 - t0, "inference": t2 - t1}
        if timings is not None:
            timings.update(self.last_timings)
        return out

    def embed_frame(
        self, frame_bgr: np.ndarray, timings: dict[str, float] | None = None
    ) -> np.ndarray:
        """Descriptor (dim,) of one frame (any size; uint8 BGR, or gray/BGRA/16-bit converted).

        Reuses preallocated buffers; thread-safe: callers at the same time each run on their
        own bound buffers (one at a time on backends that cannot run calls concurrently). The
        returned array is a fresh copy. Stage times in seconds (``preprocess``, ``inference``)
        go to :attr:`last_timings` and, when given, into ``timings`` (safe with several
        callers).
        """
        t0 = time.perf_counter()
        frame = to_bgr8(frame_bgr, "frame")
        with self._slot() as slot:
            resize_for_model(frame, self.info.preprocessing, out=slot.inp[0])
            t1 = time.perf_counter()
            _run(str(self.path), slot.run)
            desc = slot.out[0].copy()
            t2 = time.perf_counter()
        self.last_timings = {"preprocess": t1 - t0, "inference": t2 - t1}
        if timings is not None:
            timings.update(self.last_timings)
        return check_descriptors(desc[None], self.dim, f"{self.path}: frame descriptor")[0]

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike],
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
        threads: int | None = None,
    ) -> np.ndarray:  # pragma: no mutate block
        """Descriptors (N, dim) of image files, in order. ``progress(done, total)`` per batch.

        The embedding pipeline (:func:`sfrs_edge.embedding.embed_images`: decode pool
        overlapped with batched inference); a file that cannot be read raises
        :class:`ImageError` naming it.
        """
        paths = list(paths)
        if not paths:
            if isinstance(batch_size, bool) or batch_size < 1:
                raise ConfigError(f"batch size must be at least 1, got {batch_size}")
            return np.zeros((0, self.dim), np.float32)
        pre = self.info.preprocessing
        got = embed_images(
            self.embed, paths, batch_size, threads, progress=progress, preprocessing=pre
        )
        return got.descriptors
