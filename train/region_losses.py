"""FoL's region losses carried to NetVLAD: SAL (extraction–aggregation spatial alignment) and
CEL (foreground–background contrast), docs/TRAINING.md "FoL's training half".

Two per-location maps of the final backbone feature map x (N, D, H, W):

- aggregation map Mₐ: each location's *contribution* to the global descriptor,
  :func:`.local_features.weight_map` ``"contribution"`` — the map the re-ranker selects local
  features from (FoL: the mass its optimal transport does not send to the dustbin; NetVLAD has
  no dustbin, see docs/RERANKING.md §1);
- extraction map Mₑ: the backbone's own saliency, the activation norm ‖x‖ before NetVLAD's L2
  normalisation. FoL uses the CLS→patch attention of its ViT's last block: a learned query that
  sums over heads. A CNN has no CLS token; the activation norm is what the backbone itself
  emphasises, needs no new weights (nothing extra to export or to keep in step with the
  student), and is differentiable in the trainable blocks. Unlike attention it is not a
  distribution and has the scale of the features, so both maps are made distributions the same
  way (:func:`map_distribution`).

SAL = KL(sg Pₑ ‖ Pₐ) + KL(sg Pₐ ‖ Pₑ) (each direction trains one map towards the other), summed
over locations, mean over images. CEL, for two images of one place: f_fg = normalize(Σ F·M),
f_bg = normalize(Σ F·(1 − M)) on the detached L2-normalised local features F with the soft
region mask M = (Pₐ + Pₑ)/2 scaled to a maximum of 1; loss = w_fg·(1 − cos(f_fg, f_fg′)) +
w_bg·(1 − cos(f_bg, f_bg′)); the gradient reaches the mask only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from sfrs_edge.errors import ConfigError

from .local_features import weight_map
from .norms import l2_normalize


@dataclass
class RegionLossConfig:
    """Weights and shape of SAL/CEL (0 = off). FoL's coded weights: SAL 5e-3, CEL 1."""

    sal_weight: float = 0.0
    cel_weight: float = 0.0
    cel_fg: float = 0.7  # FoL's split between the foreground and background terms
    cel_bg: float = 0.3
    clip_quantile: float = 0.95  # FoL clips the top values to the value at the 5 % rank

    def __post_init__(self) -> None:
        if self.sal_weight < 0 or self.cel_weight < 0 or self.cel_fg < 0 or self.cel_bg < 0:
            raise ConfigError("region losses: weights must be >= 0")
        if not 0 < self.clip_quantile <= 1:
            raise ConfigError("region losses: clip quantile must be in (0, 1]")

    @property
    def enabled(self) -> bool:
        return self.sal_weight > 0 or self.cel_weight > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def extraction_map(final: torch.Tensor) -> torch.Tensor:
    """Mₑ (N, H, W): activation norm of the final feature map, in float32."""
    return torch.sqrt((final.float() ** 2).sum(1).clamp_min(1e-24))


def aggregation_map(net: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Mₐ (N, H, W): each location's contribution to the global NetVLAD descriptor."""
    return weight_map(net, final, "contribution")


def map_distribution(m: torch.Tensor, clip_quantile: float = 0.95) -> torch.Tensor:
    """(N, H, W) map → (N, H·W) distribution over locations: values above the per-image
    ``clip_quantile`` clipped to it (FoL: a few peaks must not take all the mass), standardised
    per image (the two maps have unrelated scales), softmax."""
    flat = m.to(torch.promote_types(m.dtype, torch.float32)).reshape(m.shape[0], -1)
    if clip_quantile < 1:
        top = torch.quantile(flat.detach(), clip_quantile, dim=1, keepdim=True)
        flat = torch.minimum(flat, top)
    z = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-6)
    return torch.softmax(z, dim=1)


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row of two (N, L) distributions."""
    return (p * (torch.log(p.clamp_min(1e-12)) - torch.log(q.clamp_min(1e-12)))).sum(1)


def sal_loss(p_ext: torch.Tensor, p_agg: torch.Tensor) -> torch.Tensor:
    """KL(sg Pₑ ‖ Pₐ) + KL(sg Pₐ ‖ Pₑ), mean over images, of (N, L) distributions."""
    return (_kl(p_ext.detach(), p_agg) + _kl(p_agg.detach(), p_ext)).mean()


def region_mask(p_ext: torch.Tensor, p_agg: torch.Tensor) -> torch.Tensor:
    """Soft region mask (N, L) in [0, 1]: the mean of the two distributions over its maximum."""
    m = 0.5 * (p_ext + p_agg)
    return m / m.amax(1, keepdim=True)


def cel_loss(
    feats_a: torch.Tensor,
    mask_a: torch.Tensor,
    feats_b: torch.Tensor,
    mask_b: torch.Tensor,
    w_fg: float = 0.7,
    w_bg: float = 0.3,
) -> torch.Tensor:
    """Foreground/background agreement of two images of one place.

    ``feats_*`` (D, L) local features (detached here), ``mask_*`` (L,) soft masks in [0, 1].
    """
    fa, fb = feats_a.detach(), feats_b.detach()
    fg_a, fg_b = l2_normalize(fa @ mask_a, 0), l2_normalize(fb @ mask_b, 0)
    bg_a, bg_b = l2_normalize(fa @ (1 - mask_a), 0), l2_normalize(fb @ (1 - mask_b), 0)
    return w_fg * (1 - fg_a @ fg_b) + w_bg * (1 - bg_a @ bg_b)
