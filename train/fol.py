"""FoL's training terms of one tuple (docs/TRAINING.md "FoL's training half"): SAL over the
tuple's images, CEL and pseudo-correspondence supervision between the query and its best
positive (the tuple's images 0 and 1)."""

from __future__ import annotations

import torch

from .correspondences import (
    LocalProjection,
    LocalSupervisionConfig,
    correspondence_loss,
    pseudo_correspondences,
)
from .netvlad import NetVLAD
from .region_losses import RegionLossConfig, cel_loss, map_distribution, region_mask, sal_loss


def fol_terms(
    vlad: NetVLAD,
    final: torch.Tensor,
    m_ext: torch.Tensor,
    m_agg: torch.Tensor,
    regions: RegionLossConfig,
    local: LocalSupervisionConfig,
    projection: LocalProjection | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(weighted sum of the enabled terms, their values) for one tuple.

    ``final`` (n, D, H, W) the tuple's final feature maps ([q, p*, …]); ``m_ext``/``m_agg``
    (n, H, W) its extraction and aggregation maps.
    """
    total = final.new_zeros((), dtype=torch.float32)
    parts: dict[str, float] = {}
    width = int(final.shape[-1])
    p_ext = map_distribution(m_ext, regions.clip_quantile)
    p_agg = map_distribution(m_agg, regions.clip_quantile)
    xn = vlad.local_features(final.detach()).float().flatten(2)  # n, D, L (detached)
    if regions.sal_weight > 0:
        sal = sal_loss(p_ext, p_agg)
        total = total + regions.sal_weight * sal
        parts["sal"] = float(sal.detach())
    if regions.cel_weight > 0:
        mask = region_mask(p_ext, p_agg)
        cel = cel_loss(xn[0], mask[0], xn[1], mask[1], regions.cel_fg, regions.cel_bg)
        total = total + regions.cel_weight * cel
        parts["cel"] = float(cel.detach())
    if local.enabled and projection is not None:
        with torch.no_grad():
            assign = vlad.assignments(xn[:2].reshape(2, -1, *final.shape[-2:])).flatten(2)
        in_region = p_agg[0].detach() > 1.0 / p_agg.shape[1]  # above uniform
        fa, fb = xn[0].t(), xn[1].t()
        matches = pseudo_correspondences(fa, fb, assign[0], assign[1], in_region, local)
        parts["matches"] = float(len(matches[0]))
        loss = correspondence_loss(projection, fa, fb, matches, width, local.margin)
        if loss is not None:
            total = total + local.weight * loss
            parts["local"] = float(loss.detach())
    return total, parts
