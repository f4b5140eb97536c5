"""Which onnxruntime is installed: the flavour is the user's explicit choice of extra.

onnxruntime ships as two wheels that install the same import package, ``onnxruntime`` (CPU)
and ``onnxruntime-gpu`` (CUDA and TensorRT providers). With both installed, whichever pip
wrote last wins, file by file, so the GPU wheel can end up without its CUDA provider. sfrs-edge
therefore depends on neither; the user picks one extra:

- ``pip install 'sfrs-edge[onnxruntime]'`` (alias ``[cpu]``): the CPU provider;
- ``pip install 'sfrs-edge[onnxruntime-gpu]'`` (alias ``[gpu]``): TensorRT → CUDA → CPU.

:func:`require_onnxruntime` turns a missing onnxruntime into one line naming both extras, and
warns once when the GPU wheel is installed but its CUDA provider is not there (the CPU wheel
shadows it).
"""

from __future__ import annotations

import importlib.metadata
import logging
from types import ModuleType

from ..errors import ConfigError

log = logging.getLogger(__name__)

CPU_EXTRA = "sfrs-edge[onnxruntime]"
GPU_EXTRA = "sfrs-edge[onnxruntime-gpu]"
INSTALL = (
    f"pip install '{CPU_EXTRA}' (CPU) or pip install '{GPU_EXTRA}' (NVIDIA GPU: CUDA and "
    "TensorRT providers); install one of the two, never both"
)
REINSTALL_GPU = f"pip uninstall -y onnxruntime onnxruntime-gpu && pip install '{GPU_EXTRA}'"
_warned = False


def installed(distribution: str) -> bool:
    """True when the pip distribution (not the import package) is installed."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def flavour_problem(available: list[str]) -> str | None:
    """What is wrong with the installed flavour given onnxruntime's ``available`` providers,
    or None. Only the GPU wheel makes a promise that can be broken."""
    if not installed("onnxruntime-gpu") or "CUDAExecutionProvider" in available:
        return None
    shadow = (
        " (the CPU wheel 'onnxruntime' is installed too and shadows it)"
        if installed("onnxruntime")
        else ""
    )
    return (
        "onnxruntime-gpu is installed but onnxruntime offers no CUDA provider (available: "
        f"{', '.join(available)}){shadow}; running on the CPU. Fix: {REINSTALL_GPU}"
    )


def require_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module; :class:`ConfigError` naming both extras when absent."""
    global _warned
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f"onnxruntime is not installed: {INSTALL}") from exc
    if not _warned:
        _warned = True
        problem = flavour_problem(list(ort.get_available_providers()))
        if problem:
            log.warning("%s", problem)
    return ort
