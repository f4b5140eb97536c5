"""onnxruntime backend: CPU, CUDA or TensorRT execution providers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .. import threads as threads_mod
from ..errors import ConfigError, ModelError
from ..model_info import INPUT_NAME, METADATA_KEY, OUTPUT_NAME
from .providers import CPU, CUDA, ORDER, TENSORRT, ordered, provider_options

PROVIDERS = {"tensorrt": TENSORRT, "cuda": CUDA, "cpu": CPU}
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


def choose_providers(backend: str) -> list[str]:
    """Providers for ``backend`` with their fallbacks: TensorRT → CUDA → CPU, as installed.

    ``auto`` starts at the best installed one; ``tensorrt`` falls back to CUDA then CPU for
    nodes TensorRT cannot take, ``cuda`` to CPU.
    """
    available = ort.get_available_providers()
    if backend == "auto":
        return [p for p in ORDER if p in available] or [CPU]
    if backend not in PROVIDERS:
        raise ConfigError(f"unknown backend {backend!r}; choose auto, {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[backend]
    if wanted not in available:
        hint = "pip install onnxruntime-gpu" if backend in ("cuda", "tensorrt") else ""
        raise ConfigError(
            f"backend {backend!r} needs onnxruntime's {wanted}, which this installation lacks "
            f"(available: {', '.join(available)}){'; ' + hint if hint else ''}"
        )
    return ordered([wanted], available)


# Idle pool threads spin (burn a core) before sleeping when this is on. Off by default: a robot
# shares its CPU with other processes, and on this machine spinning was not faster (see
# docs/BENCHMARKS.md, "CPU speed"). SFRS_EDGE_SPIN=1 or ``spin=True`` turns it on.
DEFAULT_SPIN = False


def default_spin() -> bool:
    env = os.environ.get("SFRS_EDGE_SPIN")
    return DEFAULT_SPIN if env is None else env.strip().lower() in ("1", "true", "yes", "on")


def session_options(threads: int | None = None, spin: bool | None = None) -> ort.SessionOptions:
    """onnxruntime options: ``threads`` intra-op threads (None: physical cores), one inter-op
    thread, spin-waiting per ``spin`` (None: :func:`default_spin`), errors-only logging."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = threads_mod.resolve(threads)
    spin = default_spin() if spin is None else bool(spin)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
    opts.log_severity_level = 3  # errors only: no provider-fallback chatter on stderr
    return opts


def create_session(
    path: str | os.PathLike,
    providers: list | None = None,
    threads: int | None = None,
    spin: bool | None = None,
) -> ort.InferenceSession:
    """The one place the package creates an onnxruntime session (engine, export verification,
    INT8 gate, benchmarks). ``providers`` default to the CPU provider. A file onnxruntime
    cannot load raises :class:`ModelError` naming it."""
    opts = session_options(threads, spin)
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own types for bad files
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({msg})") from exc


class OnnxBackend:
    """One onnxruntime session, created once and reused for every call."""

    max_batch = None

    def __init__(
        self,
        path: Path,
        backend: str = "auto",
        threads: int | None = None,
        spin: bool | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """``metadata``: the file's ``metadata_props`` when the caller has read them already
        (the TensorRT provider's options come from them; else read here)."""
        self.path = path
        self.threads = threads_mod.resolve(threads)
        providers = choose_providers(backend)
        cache = path.parent / ".trt_cache" if os.access(path.parent, os.W_OK) else None
        self.session = create_session(
            path,
            provider_options(providers, path, cache, ort.__version__, metadata),
            self.threads,
            spin,
        )
        active = self.session.get_providers()
        if backend != "auto" and PROVIDERS[backend] not in active:
            raise ConfigError(
                f"backend {backend!r} requested but onnxruntime could not start "
                f"{PROVIDERS[backend]} (active: {', '.join(active)}); is a GPU visible?"
            )
        self.name = f"onnxruntime:{active[0]}"
        self._check_io()

    def metadata(self) -> str | None:
        """The ``sfrs_edge`` metadata JSON, or None when the file has none."""
        return self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)

    def _check_io(self) -> None:
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in ins or OUTPUT_NAME not in outs:
            raise ModelError(
                f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"found inputs {sorted(ins)} and outputs {sorted(outs)}; "
                "export it with `sfrs-edge export`"
            )
        if ins[INPUT_NAME].type != "tensor(uint8)":
            raise ModelError(
                f"{self.path}: input {INPUT_NAME!r} is {ins[INPUT_NAME].type}, expected uint8"
            )

    def input_shape(self) -> list:
        return list(self.session.get_inputs()[0].shape)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def extra_outputs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Outputs besides the descriptor: per-image shape and dtype (contract 1)."""
        out = {}
        for o in self.session.get_outputs():
            if o.name != OUTPUT_NAME:
                dtype = ORT_DTYPES.get(o.type)
                if dtype is None or not all(isinstance(d, int) for d in o.shape[1:]):
                    raise ModelError(
                        f"{self.path}: output {o.name!r} is {o.type} {o.shape}; extra outputs "
                        "must have a static per-image shape and a float/int type"
                    )
                out[o.name] = (tuple(o.shape[1:]), np.dtype(dtype))
        return out

    def run_all(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name."""
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {INPUT_NAME: batch}), strict=True))

    def bind(self, inp: np.ndarray, out: np.ndarray) -> Callable[[], None]:
        """Zero-copy I/O binding over preallocated CPU buffers (OrtValues share their memory)."""
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(inp))
        binding.bind_ortvalue_output(OUTPUT_NAME, ort.OrtValue.ortvalue_from_numpy(out))
        session = self.session

        def runner() -> None:
            session.run_with_iobinding(binding)

        return runner
