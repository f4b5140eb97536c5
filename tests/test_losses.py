"""SFRS losses against formulas written out here, on small hand-built tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train.losses import (  # noqa: E402
    hardest_regions,
    region_scores,
    sare_ind_loss,
    soft_cross_entropy,
    soft_targets,
    tuple_loss,
)
from sfrs_edge.train.netvlad import NetVLAD  # noqa: E402


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


def test_sare_ind_matches_formula():
    q = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    p = torch.tensor([0.8, 0.6, 0.0], dtype=torch.float64)
    n = torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    tau = 0.07
    sp, sn = 0.8, [0.6, 0.0, -1.0]
    expected = sum(
        -math.log(math.exp(sp / tau) / (math.exp(sp / tau) + math.exp(s / tau))) for s in sn
    ) / len(sn)
    assert float(sare_ind_loss(q, p, n, tau)) == pytest.approx(expected, rel=1e-9)


def test_hardest_region_choice_and_gradient():
    q = unit(8, seed=1)
    regions = unit(3, 9, 8, seed=2).requires_grad_(True)
    chosen = hardest_regions(q, regions)
    scores = torch.einsum("nrd,d->nr", regions.detach(), q)
    best = scores.argmax(1)
    for j in range(3):
        assert torch.equal(chosen[j].detach(), regions[j, best[j]].detach())
    chosen.sum().backward()
    grad_rows = regions.grad.abs().sum(-1) > 0  # only the chosen region gets gradient
    expected = torch.zeros(3, 9, dtype=torch.bool)
    expected[torch.arange(3), best] = True
    assert torch.equal(grad_rows, expected)


def test_soft_target_has_9p_entries_and_no_grad():
    q = unit(8, seed=3).requires_grad_(True)
    pos = unit(4, 9, 8, seed=4).requires_grad_(True)
    s = region_scores(q, pos)
    assert s.shape == (9 * 4,)
    assert torch.allclose(s.reshape(4, 9), torch.einsum("prd,d->pr", pos, q))
    y = soft_targets(s, 0.06)
    assert y.shape == (36,) and not y.requires_grad and y.grad_fn is None
    assert float(y.sum()) == pytest.approx(1.0, abs=1e-6)


def test_soft_cross_entropy_matches_formula():
    t = torch.tensor([0.5, 0.2, -0.1, 0.3], dtype=torch.float64)
    s = torch.tensor([0.1, 0.4, 0.0, -0.2], dtype=torch.float64)
    tau_t, tau_s = 0.05, 0.07
    et = [math.exp(v / tau_t) for v in t.tolist()]
    y = [v / sum(et) for v in et]
    es = [math.exp(v / tau_s) for v in s.tolist()]
    logp = [math.log(v / sum(es)) for v in es]
    expected = -sum(a * b for a, b in zip(y, logp, strict=True))
    got = soft_cross_entropy(s, soft_targets(t, tau_t).double(), tau_s)
    assert float(got) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("generation", [0, 1])
def test_tuple_loss_combines_hard_and_soft(generation):
    n_neg, n_pos = 3, 2
    student = unit(2 + n_neg + n_pos, 9, 8, seed=5)
    teacher = unit(1 + n_pos, 9, 8, seed=6)
    total, parts = tuple_loss(student, teacher, n_neg, generation, 0.07, 0.06, 0.5)
    q, p = student[0, 0], student[1, 0]
    negs = student[2 : 2 + n_neg]
    if generation == 0:
        neg = negs[:, 0]
    else:
        neg = negs[torch.arange(n_neg), torch.einsum("nrd,d->nr", negs, q).argmax(1)]
    hard = sare_ind_loss(q, p, neg, 0.07)
    y = torch.softmax(torch.einsum("prd,d->pr", teacher[1:], teacher[0, 0]).reshape(-1) / 0.06, 0)
    logp = torch.log_softmax(
        torch.einsum("prd,d->pr", student[2 + n_neg :], q).reshape(-1) / 0.07, 0
    )
    soft = -(y * logp).sum()
    assert parts["hard"] == pytest.approx(float(hard), rel=1e-6)
    assert parts["soft"] == pytest.approx(float(soft), rel=1e-5)
    weight = 0.5 if generation else 0.0
    assert float(total) == pytest.approx(float(hard + weight * soft), rel=1e-5)


def test_region_additivity():
    torch.manual_seed(0)
    vlad = NetVLAD(num_clusters=4, dim=6)
    x = torch.randn(2, 6, 7, 9, dtype=torch.float32)  # odd sizes: quarters still partition
    q = vlad.quarter_vlads(x)
    r = vlad.region_vlads(x)
    whole = vlad.aggregate(x)
    assert torch.allclose(q.sum(1), whole, atol=1e-5)
    assert torch.allclose(r[:, 0], whole, atol=1e-5)
    tl, tr, bl, br = q.unbind(1)
    for i, expected in enumerate([tl + tr, bl + br, tl + bl, tr + br, tl, tr, bl, br], start=1):
        assert torch.allclose(r[:, i], expected, atol=1e-6)
    regions = vlad.regions(x)
    assert regions.shape == (2, 9, 24)
    assert torch.allclose(regions[:, 0], vlad(x), atol=1e-6)
    assert torch.allclose(regions.norm(dim=-1), torch.ones(2, 9), atol=1e-5)
