"""Where training runs: device choice, mixed precision, memory format, data loading.

None of this changes the method, so it is not part of :class:`~.config.TrainConfig` (a run
started on a GPU resumes on a CPU and vice versa); it is recorded in the checkpoints'
provenance. Mixed precision covers the backbone only: NetVLAD's assignment, aggregation and
normalisation and every loss run in float32 (docs/DESIGN.md §3.2: the sums of squares overflow
fp16 and ``eps`` underflows). bf16 needs no loss scaling; fp16 uses a ``GradScaler``.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch

from sfrs_edge.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DeviceConfig:
    """``device``: auto | cpu | cuda | cuda:N; ``precision``: auto (bf16 on a GPU that has it,
    else fp16; fp32 on a CPU) | fp32 | bf16 | fp16 (GPU only); ``channels_last``: None = on a
    GPU only (where the convolutions gain from it); ``workers``: image-decoding processes."""

    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"--device must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.workers < 0:
            raise ConfigError("--workers must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch device for ``name``; ``cuda`` without a usable GPU is a one-line error.

    Under torchrun each process takes GPU ``local_rank`` (unless ``cuda:N`` names one)."""
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"--device must be one of {DEVICES} (or cuda:N), got {name!r}")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
        name = kind
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this torch has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(f"--device {name}: {why}; use --device cpu (or auto)")
    if ":" in name:
        dev = torch.device(name)
    else:
        dev = torch.device("cuda", local_rank or 0)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {dev}: only {torch.cuda.device_count()} GPU(s) are visible; "
            "use fewer processes or another index"
        )
    return dev


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The backbone's compute dtype for ``precision`` on ``device`` (float32 = AMP off)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a GPU (on a CPU use bf16 or fp32)")
    return _DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the backbone (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 (None otherwise: bf16 and fp32 need none)."""
    if dtype != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def use_channels_last(device: torch.device, setting: bool | None) -> bool:
    """NHWC for the convolutions: by default only on a GPU (on a CPU it does not pay here)."""
    return device.type == "cuda" if setting is None else bool(setting)


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (nested dicts/lists/tuples): what a checkpoint
    stores, so that a GPU-trained run loads, resumes and exports on a machine without one."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
