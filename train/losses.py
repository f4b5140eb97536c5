"""SFRS losses (docs/DESIGN.md §5.4) on L2-normalised descriptors; similarities are dot products.

- hard loss: SARE-individual, independent 2-way softmaxes (p* vs each negative) at τ0;
- generations ≥ 1 pick each negative's hardest region (argmax on detached scores);
- soft loss: cross-entropy between the teacher's softmax over (P positives × 9 regions) at the
  generation's temperature and the student's log-softmax at τ0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sare_ind_loss(
    query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float
) -> torch.Tensor:
    """mean_j −log[e^{s⁺/τ} / (e^{s⁺/τ} + e^{s⁻_j/τ})] for query (D,), positive (D,), negatives (N, D)."""
    s_pos = query @ positive
    s_neg = negatives @ query
    return F.softplus((s_neg - s_pos) / tau).mean()


def hardest_regions(query: torch.Tensor, neg_regions: torch.Tensor) -> torch.Tensor:
    """Per negative, its region most similar to the query: (N, 9, D) → (N, D).

    The choice uses detached scores; gradients flow through the chosen region's descriptor.
    """
    with torch.no_grad():
        best = (neg_regions @ query).argmax(dim=1)  # N
    return neg_regions[torch.arange(len(neg_regions), device=neg_regions.device), best]


def region_scores(query: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Image-to-region similarities ⟨query global, region b of positive i⟩: (P, 9, D) → (9P,)."""
    return (regions @ query).reshape(-1)


def soft_targets(teacher_scores: torch.Tensor, tau_teacher: float) -> torch.Tensor:
    """The teacher's soft labels softmax(S/τ_g), detached (no gradient)."""
    return torch.softmax(teacher_scores.detach().float() / tau_teacher, dim=-1)


def soft_cross_entropy(
    student_scores: torch.Tensor, targets: torch.Tensor, tau_student: float
) -> torch.Tensor:
    """−Σ_k y_k log softmax(S_student/τ0)_k."""
    return -(targets * torch.log_softmax(student_scores.float() / tau_student, dim=-1)).sum(-1)


def tuple_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    num_neg: int,
    generation: int,
    tau_student: float,
    tau_teacher: float,
    soft_weight: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one tuple from region descriptors.

    ``student``: (2 + N + P, 9, D) regions of [q, p*, n1..nN, d1..dP]; ``teacher``: (1 + P, 9, D)
    regions of [q, d1..dP] or None (no soft term). Returns (total, parts).
    """
    q = student[0, 0]
    p = student[1, 0]
    neg = student[2 : 2 + num_neg]
    negs = hardest_regions(q, neg) if generation >= 1 else neg[:, 0]
    hard = sare_ind_loss(q, p, negs, tau_student)
    parts = {"hard": float(hard.detach())}
    total = hard
    if teacher is not None and len(student) > 2 + num_neg:
        y = soft_targets(region_scores(teacher[0, 0], teacher[1:]), tau_teacher)
        s = region_scores(q, student[2 + num_neg :])
        soft = soft_cross_entropy(s, y, tau_student)
        parts["soft"] = float(soft.detach())
        weight = soft_weight if generation >= 1 else 0.0
        total = total + weight * soft
    return total, parts
