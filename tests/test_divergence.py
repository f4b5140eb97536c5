"""Near-black frames must not make training diverge (non-finite gradients), and a non-finite
step or a collapsed model must never be applied or kept as the best."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train.losses import tuple_loss  # noqa: E402
from sfrs_edge.train.netvlad import NetVLAD  # noqa: E402
from sfrs_edge.train.norms import l2_normalize  # noqa: E402


def test_l2_normalize_gradient_at_zero_vector_is_finite():
    x = torch.zeros(2, 8, requires_grad=True)
    y = l2_normalize(x, dim=-1)
    assert torch.equal(y, torch.zeros(2, 8))
    (y * torch.arange(8.0)).sum().backward()
    assert torch.isfinite(x.grad).all()
    # zero is where the function is clamped: its gradient there is eps-scaled, not NaN
    assert float(x.grad.abs().max()) <= 1 / 1e-12 * 8


def test_l2_normalize_values_unchanged_above_eps():
    x = torch.tensor([[3.0, 4.0], [1e-13, 0.0]], dtype=torch.float64, requires_grad=True)
    y = l2_normalize(x, dim=-1)
    assert torch.allclose(y[0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert float(y[1, 0]) == pytest.approx(0.1)  # below eps: x / eps, as before
    y[0, 0].backward()
    # d(x0/|x|)/dx = (|x|² − x0²)/|x|³, −x0·x1/|x|³
    assert torch.allclose(
        x.grad[0], torch.tensor([16 / 125, -12 / 125], dtype=torch.float64), atol=1e-12
    )


def dark_frame_netvlad(alpha: float = 60.0) -> tuple[NetVLAD, torch.Tensor]:
    """A NetVLAD at the k-means α rule's scale and the feature map of a near-black frame.

    A near-uniform dark image gives (nearly) the same feature at every location; at α ≈ 60 the
    clusters far from it get soft assignments that underflow to exactly 0 in float32, so their
    residual sums — and those of the region (quarter) VLADs — are exactly zero vectors.
    """
    torch.manual_seed(0)
    d, k = 16, 6
    centroids = torch.nn.functional.normalize(torch.randn(k, d), dim=1)
    centroids[1] = -centroids[0]  # a cluster opposite the dark feature: logit gap 2α
    vlad = NetVLAD(num_clusters=k, dim=d)
    with torch.no_grad():
        vlad.conv.weight.copy_((alpha * centroids)[:, :, None, None])
        vlad.centroids.copy_(centroids)
    dark = centroids[0] + 1e-3 * torch.randn(4, 6, d)  # H=4, W=6 locations, all ≈ ĉ0
    feats = dark.permute(2, 0, 1).unsqueeze(0).repeat(3, 1, 1, 1) * 5.0  # 3 images
    return vlad, feats


def test_dark_frame_has_exactly_empty_clusters():
    vlad, feats = dark_frame_netvlad()
    v = vlad.region_vlads(feats)
    assert ((v * v).sum(-1) == 0).any()  # the premise of the divergence


@pytest.mark.parametrize("generation", [0, 1])
def test_dark_frame_tuple_gives_finite_gradients(generation):
    vlad, feats = dark_frame_netvlad()
    feats.requires_grad_(True)
    regions = vlad.regions(feats)  # [q, p*, n1] all dark
    teacher = regions.detach()[[0, 2]] if generation else None
    loss, _ = tuple_loss(regions, teacher, 1, generation, 0.07, 0.07, 0.5)
    loss.backward()
    assert math.isfinite(float(loss))
    assert torch.isfinite(feats.grad).all()
    for p in vlad.parameters():
        assert torch.isfinite(p.grad).all()


def test_dark_frame_aggregation_map_gradient_is_finite():
    """SAL trains through the contribution map: its cluster norms must be gradient-safe too."""
    from types import SimpleNamespace

    from sfrs_edge.train.region_losses import aggregation_map

    vlad, feats = dark_frame_netvlad()
    feats.requires_grad_(True)
    m = aggregation_map(SimpleNamespace(netvlad=vlad, pca=None), feats)
    (m * torch.arange(m.numel(), dtype=m.dtype).reshape(m.shape)).sum().backward()
    assert torch.isfinite(feats.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in vlad.parameters())
