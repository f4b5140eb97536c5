"""Whether a training step may be applied and whether a trained model may be kept.

A step is applied only when its loss and every gradient are finite (on every DDP rank: the
flags are reduced, so all ranks skip together and the replicas stay equal). A model is kept as
the best only when its weights are finite, its recall figures are numbers and it has not
*collapsed*: its health figure (val R@5, or R@5 on the training places without a val split —
never a test figure) has not fallen below ``collapse_ratio`` × the off-the-shelf model's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist

from .distributed import DistInfo


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """True when no tensor holds a NaN or an infinity (None entries are ignored)."""
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def step_is_finite(
    loss: torch.Tensor,
    params: Iterable[torch.Tensor],
    info: DistInfo,
    device: torch.device | str = "cpu",
) -> bool:
    """The loss and the gradients of ``params`` are finite (on every rank; ``device``: where
    the process group's tensors live, CUDA for NCCL)."""
    ok = math.isfinite(float(loss.detach())) and all_finite(p.grad for p in params)
    if info.enabled:
        flag = torch.tensor([1.0 if ok else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        ok = bool(flag.item() > 0.5)
    return ok


def unhealthy_reason(
    state: Mapping[str, torch.Tensor],
    recall: Mapping[str, float],
    figure: float | None,
    reference: float | None,
    collapse_ratio: float,
) -> str | None:
    """Why a model must not be kept as the best (None when it may be)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not all_finite([v])]
    if bad:
        return f"{len(bad)} weight tensors are not finite (first: {bad[0]})"
    nan = [k for k, v in recall.items() if not math.isfinite(float(v))]
    if nan:
        return f"recall is not a number ({', '.join(nan)})"
    if figure is not None and reference is not None and figure < collapse_ratio * reference:
        return (
            f"collapsed: health R@5 {figure:.1f} < {collapse_ratio:g} × off-the-shelf "
            f"{reference:.1f}"
        )
    return None
