"""FoL's training half on NetVLAD (SAL, CEL, pseudo-correspondences) against hand-computed
examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train.correspondences import (  # noqa: E402
    LocalProjection,
    LocalSupervisionConfig,
    correspondence_loss,
    pseudo_correspondences,
)
from sfrs_edge.train.region_losses import (  # noqa: E402
    RegionLossConfig,
    cel_loss,
    extraction_map,
    map_distribution,
    region_mask,
    sal_loss,
)

from sfrs_edge.errors import ConfigError  # noqa: E402

D = torch.float64


def test_extraction_map_is_activation_norm():
    x = torch.zeros(1, 2, 1, 2)
    x[0, :, 0, 0] = torch.tensor([3.0, 4.0])
    x[0, :, 0, 1] = torch.tensor([0.0, -2.0])
    assert torch.allclose(extraction_map(x), torch.tensor([[[5.0, 2.0]]]))


def test_map_distribution_standardises_then_softmax():
    m = torch.tensor([[[0.0, 1.0, 2.0]]], dtype=D)  # mean 1, s.d. 1 → z = −1, 0, 1
    p = map_distribution(m, clip_quantile=1.0)
    e = [math.exp(-1), 1.0, math.e]
    assert p.shape == (1, 3)
    assert torch.allclose(p, torch.tensor([[v / sum(e) for v in e]], dtype=D), atol=1e-6)
    # the same map at another scale and offset gives the same distribution
    assert torch.allclose(map_distribution(50 * m + 7, 1.0), p, atol=1e-6)


def test_map_distribution_clips_the_peaks():
    m = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]], dtype=D)
    p = map_distribution(m, clip_quantile=0.5)  # median 1.5: values 2 and 3 become 1.5
    clipped = [0.0, 1.0, 1.5, 1.5]
    sd = math.sqrt(sum((v - 1.0) ** 2 for v in clipped) / 3)
    e = [math.exp((v - 1.0) / sd) for v in clipped]
    assert torch.allclose(p, torch.tensor([[v / sum(e) for v in e]], dtype=D), atol=1e-5)
    assert float(p[0, 2]) == pytest.approx(float(p[0, 3]))


def test_sal_is_symmetric_kl_with_each_side_detached_once():
    p_ext = torch.tensor([[0.5, 0.5]], dtype=D, requires_grad=True)
    p_agg = torch.tensor([[0.25, 0.75]], dtype=D, requires_grad=True)
    loss = sal_loss(p_ext, p_agg)
    kl_ea = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_ae = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(loss) == pytest.approx(kl_ea + kl_ae, rel=1e-9)
    loss.backward()
    # ∂/∂q KL(sg p‖q) = −p/q: each map is pulled by the other's (detached) values only
    assert torch.allclose(p_agg.grad, -p_ext.detach() / p_agg.detach())
    assert torch.allclose(p_ext.grad, -p_agg.detach() / p_ext.detach())


def test_sal_is_zero_for_equal_maps():
    p = torch.tensor([[0.1, 0.2, 0.7]], dtype=D)
    assert float(sal_loss(p, p.clone())) == pytest.approx(0.0, abs=1e-12)


def test_region_mask_is_mean_over_max():
    m = region_mask(torch.tensor([[0.2, 0.8]], dtype=D), torch.tensor([[0.4, 0.6]], dtype=D))
    assert torch.allclose(m, torch.tensor([[3 / 7, 1.0]], dtype=D))


def test_cel_hand_example_and_gradient_reaches_the_mask_only():
    feats_a = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=D, requires_grad=True)  # D=2, L=2
    feats_b = feats_a.detach().clone()
    mask_a = torch.tensor([1.0, 0.0], dtype=D, requires_grad=True)  # fg (1,0), bg (0,1)
    mask_b = torch.tensor([0.5, 0.5], dtype=D)  # fg = bg = (1,1)/√2
    loss = cel_loss(feats_a, mask_a, feats_b, mask_b, 0.7, 0.3)
    assert float(loss) == pytest.approx(0.7 * (1 - 1 / math.sqrt(2)) + 0.3 * (1 - 1 / math.sqrt(2)))
    loss.backward()
    assert feats_a.grad is None
    assert mask_a.grad is not None and torch.isfinite(mask_a.grad).all()
    # same place, same masks: no loss
    same = cel_loss(feats_b, mask_b, feats_b, mask_b)
    assert float(same) == pytest.approx(0.0, abs=1e-12)


def test_region_config_validates():
    assert not RegionLossConfig().enabled
    assert RegionLossConfig(sal_weight=0.005).enabled
    with pytest.raises(ConfigError):
        RegionLossConfig(cel_weight=-1)
    with pytest.raises(ConfigError):
        LocalSupervisionConfig(max_matches=0)


def _unit(rows):
    x = torch.tensor(rows, dtype=D)
    return x / x.norm(dim=1, keepdim=True)


def test_pseudo_correspondences_follow_fols_rule():
    # image a: 4 anchors; image b: 4 cells. Two clusters.
    fa = _unit([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    fb = _unit([[1, 0.1, 0], [0, 1, 0.05], [0.9, 0, 0.5], [0, 0.3, 1]])
    assign_a = torch.tensor([[0.9, 0.8, 0.1, 0.9], [0.1, 0.2, 0.9, 0.1]], dtype=D)  # K=2, La
    assign_b = torch.tensor([[0.95, 0.05, 0.9, 0.02], [0.05, 0.95, 0.1, 0.98]], dtype=D)
    region = torch.tensor([True, True, True, False])  # anchor 3 is outside the region
    cfg = LocalSupervisionConfig(weight=1.0)
    ia, ib, s = pseudo_correspondences(fa, fb, assign_a, assign_b, region, cfg)
    # anchor 0 (cluster 0): candidates b0 (cos .995) and b2 (cos .874): ratio 1.14 < 2 → no
    # anchor 1 (cluster 0): candidates b0 (.0995), b2 (0): top-1 below 0.8 → no
    # anchor 2 (cluster 1): candidates b1 (cos .050), b3 (cos .958): accepted, b3
    # anchor 3: outside the region
    assert ia.tolist() == [2] and ib.tolist() == [3]
    assert float(s[0]) == pytest.approx(1 / math.sqrt(1 + 0.09), rel=1e-6)
    # without the cluster restriction anchor 1 would match b1 (cos .9988): the rule keeps it out
    loose = torch.ones_like(assign_b)
    ia2, ib2, _ = pseudo_correspondences(fa, fb, assign_a, loose, region, cfg)
    assert 1 not in ia2.tolist() or ib2[ia2.tolist().index(1)] == 1


def test_pseudo_correspondences_keep_at_most_max_matches_best_first():
    fa = _unit([[1, 0], [1, 0.05], [1, 0.2]])
    fb = _unit([[1, 0], [-1, 1]])
    a = torch.ones(1, 3, dtype=D)
    b = torch.ones(1, 2, dtype=D)
    cfg = LocalSupervisionConfig(weight=1.0, max_matches=2)
    ia, ib, s = pseudo_correspondences(fa, fb, a, b, torch.ones(3, dtype=torch.bool), cfg)
    assert ia.tolist() == [0, 1] and ib.tolist() == [0, 0]
    assert s[0] >= s[1]


def test_correspondence_loss_hand_example():
    proj = LocalProjection(np.zeros(2, np.float32), np.eye(2, dtype=np.float32))
    # b: a 1 × 4 grid; the match is cell 0, cell 3 is the only one outside its 3 × 3 block
    fa = _unit([[1, 0]]).float()
    fb = _unit([[0.8, 0.6], [1, 0], [0, 1], [0.6, 0.8]]).float()
    matches = (torch.tensor([0]), torch.tensor([0]), torch.tensor([0.9]))
    loss = correspondence_loss(proj, fa, fb, matches, width=4, margin=0.1)
    pos, neg = 0.8, 0.6  # ⟨a, b0⟩, ⟨a, b3⟩
    assert float(loss) == pytest.approx(0.9 * (1 - pos) + max(0.0, 0.1 + neg - pos), rel=1e-5)
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    none = (torch.tensor([], dtype=torch.long),) * 2 + (torch.tensor([]),)
    assert correspondence_loss(proj, fa, fb, none, 4, 0.1) is None


def test_projection_equals_the_exported_heads_description():
    """The trained projection is what the export's local head applies (PCA replaced by W)."""
    from sfrs_edge.train.local_features import LocalConfig, LocalHead

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, generator=g).numpy() * 0.1
    w = torch.randn(3, 6, generator=g).numpy()
    proj = LocalProjection(mean, w)
    head = LocalHead(LocalConfig(dim=3, num_features=4, nms_radius=0), 6, (32, 32))
    head.set_projection(mean, w)
    dense = torch.randn(1, 6, 2, 2, generator=g)
    idx = torch.tensor([[0, 1, 2, 3]])
    desc, _ = head.describe(dense, idx)
    feats = torch.nn.functional.normalize(dense, dim=1).flatten(2)[0].t()
    assert torch.allclose(desc[0].float(), proj(feats).detach(), atol=2e-3)
