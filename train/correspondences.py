"""Weakly supervised local features: pseudo-correspondences between two images of one place
train the projection the exported local head applies (a PCA at ``init``; FoL §2).

FoL's rule, on NetVLAD: anchors are the query's locations *in the region* (aggregation
distribution above uniform, 1/L); each anchor takes its most-assigned NetVLAD cluster; its
candidates in the partner image are the locations assigned more than ``assign_min`` to that
cluster; the best candidate by cosine of the (detached, L2-normalised) backbone features is
accepted when that cosine exceeds ``min_similarity`` and is more than ``ratio`` × the second
best; at most ``max_matches`` per pair, the most similar first.

Loss on the projected descriptors d = normalize(W(f − μ)) of a match (a, b), weighted by the
match's backbone cosine s: s·(1 − ⟨d_a, d_b⟩) pulls the pair together, and a triplet term
max(0, margin + ⟨d_a, d_n⟩ − ⟨d_a, d_b⟩) against the partner's most similar location outside
b's 3 × 3 neighbourhood keeps the projection from collapsing (FoL adds a local triplet loss for
the same reason). The backbone features are detached: only the projection learns here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sfrs_edge.errors import ConfigError

from .local_features import LocalConfig
from .norms import l2_normalize

# FoL's losses train the projection of backbone cell features (320-d for Lite0), not of patch
# descriptors: the trained head is a cell-feature head whatever LocalConfig's default is.
CELLS = LocalConfig(descriptor="cells", whiten=False)


@dataclass
class LocalSupervisionConfig:
    """Pseudo-correspondence supervision of the local projection (``weight`` 0 = off)."""

    weight: float = 0.0
    assign_min: float = 0.1
    min_similarity: float = 0.8
    ratio: float = 2.0
    max_matches: int = 5
    margin: float = 0.1

    def __post_init__(self) -> None:
        if self.weight < 0 or self.margin < 0 or self.max_matches < 1 or self.ratio < 1:
            raise ConfigError(
                "local supervision: weight and margin >= 0, max-matches >= 1, ratio >= 1"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pseudo_correspondences(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    assign_a: torch.Tensor,
    assign_b: torch.Tensor,
    region_a: torch.Tensor,
    cfg: LocalSupervisionConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches (anchor index in a, index in b, cosine) between two images.

    ``feats_*`` (L, C) L2-normalised local features, ``assign_*`` (K, L) NetVLAD soft
    assignments, ``region_a`` (L,) bool: the anchors allowed.
    """
    with torch.no_grad():
        sims = feats_a.float() @ feats_b.float().t()  # La, Lb
        cluster = assign_a.argmax(0)  # La
        allowed = assign_b[cluster] > cfg.assign_min  # La, Lb: same-cluster candidates
        masked = torch.where(allowed, sims, torch.full_like(sims, -2.0))
        top = torch.topk(masked, min(2, masked.shape[1]), dim=1)
        best, idx = top.values[:, 0], top.indices[:, 0]
        second = top.values[:, 1] if top.values.shape[1] > 1 else torch.full_like(best, -2.0)
        second = torch.where(second > -2.0, second, torch.zeros_like(second))  # no 2nd: 0
        ok = region_a & (best > cfg.min_similarity) & (best > cfg.ratio * second.clamp_min(0))
        anchors = torch.nonzero(ok).flatten()
        order = torch.argsort(best[anchors], descending=True)[: cfg.max_matches]
        anchors = anchors[order]
        return anchors, idx[anchors], best[anchors]


class LocalProjection(nn.Module):
    """The local head's projection d = normalize(W(f − μ)) with W trainable (PCA-initialised)."""

    def __init__(self, mean: np.ndarray, components: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)).clone())
        self.weight = nn.Parameter(torch.as_tensor(np.asarray(components, np.float32)).clone())

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(…, C) L2-normalised local features → (…, dim) unit descriptors."""
        return l2_normalize((feats.float() - self.mean) @ self.weight.t(), dim=-1)


def _far_from(idx: torch.Tensor, width: int, length: int) -> torch.Tensor:
    """(M, L) bool: locations outside the 3 × 3 neighbourhood of each flat index (grid width)."""
    cells = torch.arange(length, device=idx.device)
    dy = (cells.unsqueeze(0) // width - (idx // width).unsqueeze(1)).abs()
    dx = (cells.unsqueeze(0) % width - (idx % width).unsqueeze(1)).abs()
    return (dy > 1) | (dx > 1)


def correspondence_loss(
    proj: LocalProjection,
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    matches: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    width: int,
    margin: float,
) -> torch.Tensor | None:
    """Mean over matches of s·(1 − ⟨d_a, d_b⟩) + triplet(margin) (None without a match).

    ``feats_*`` (L, C) detached L2-normalised local features on a grid ``width`` cells wide.
    """
    ia, ib, s = matches
    if len(ia) == 0:
        return None
    da = proj(feats_a.detach()[ia])  # M, d
    db_all = proj(feats_b.detach())  # Lb, d
    pos = (da * db_all[ib]).sum(-1)
    other = da @ db_all.t()  # M, Lb
    far = _far_from(ib, width, db_all.shape[0])
    hardest = torch.where(far, other, torch.full_like(other, -2.0)).amax(1)
    triplet = torch.relu(margin + hardest - pos) * (hardest > -2.0)
    return (s * (1 - pos) + triplet).mean()


def initial_projection(net: nn.Module, images, batch_size: int = 8) -> LocalProjection:
    """The projection's start: the cell features' PCA (what ``init --rerank`` fits for
    ``descriptor="cells"``), on ``images`` (the training images)."""
    from .local_features import fit_local_head

    head = fit_local_head(net, images, CELLS, batch_size)
    return LocalProjection(head.mean.numpy(), head.projection.detach().numpy())


def projection_head_state(proj: LocalProjection, net: nn.Module) -> dict[str, Any]:
    """The checkpoint's ``local`` entry for a trained projection: a cell-feature local head
    with the trained W in place of the PCA projection."""
    from dataclasses import replace

    from .local_features import LocalHead, head_state

    w = proj.weight.detach().cpu()
    head = LocalHead(
        replace(CELLS, dim=int(w.shape[0])), int(w.shape[1]), net.config.preprocessing().size
    )
    head.set_projection(proj.mean.detach().cpu().numpy(), w.numpy())
    return head_state(head)
