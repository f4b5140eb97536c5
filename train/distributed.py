"""Data-parallel training over processes launched by ``torchrun`` (gloo on CPU, nccl on GPU).

Every rank mines the same tuples (same seed, same descriptors); each takes its share of the
tuples of every step, and DistributedDataParallel averages gradients, so a step equals one
process computing the mean loss over all of the step's tuples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from sfrs_edge.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the GPU index of this process on its machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (single process if absent):
    NCCL when training on GPUs (``device`` cuda, or auto with CUDA present), gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world <= 1:
        return DistInfo()
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if gpu:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def wrap(module: nn.Module, info: DistInfo, device: torch.device | None = None) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel when running on several processes
    (on a GPU: that process's device)."""
    if not info.enabled:
        return module
    ids = [device] if device is not None and device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def rank_share(items: list, info: DistInfo) -> list:
    """This rank's share of one step's items (round-robin).

    A trailing remainder that cannot be shared evenly is dropped, so every rank runs the same
    number of steps (tuples_per_step must be a multiple of the number of processes).
    """
    if info.enabled:
        items = items[: len(items) - len(items) % info.world_size]
    return items[info.rank :: info.world_size]


def check_step_size(tuples_per_step: int, info: DistInfo) -> None:
    if info.enabled and tuples_per_step % info.world_size:
        raise ConfigError(
            f"--tuples-per-step {tuples_per_step} must be a multiple of the number of processes "
            f"({info.world_size})"
        )


def average_gradients(params, info: DistInfo) -> None:
    """Mean of the gradients of ``params`` over the ranks (for parameters outside the DDP
    module); a parameter without a gradient on a rank counts as a zero gradient."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
