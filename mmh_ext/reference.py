"""Pure-PyTorch reference implementations of the mmh_ext operators.

They follow the definitions literally (N separate poolings for RAD, normalised copies for DAD) and are differentiable
by autograd. Tests compare the fused operators with them, benchmarks time them as the eager / torch.compile baseline,
and users may call them where the compiled library is not available. Signatures match :mod:`mmh_ext`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._common import check_dad_form

__all__ = ["cosine_discrepancy", "cross_stream_inject", "dad_loss", "rad_loss", "rad_region_losses", "rad_weighting"]


def rad_region_losses(
    student_feat,
    teacher_feat,
    student_fc_weight,
    student_fc_bias,
    teacher_fc_weight,
    teacher_fc_bias,
    *,
    grid: int = 4,
    levels: Sequence[int] = (4, 2, 1),
    temperature: float = 2.0,
) -> torch.Tensor:
    """(B, N) per-sample, per-region ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``."""

    def region_logits(feat, weight, bias):
        g = F.adaptive_avg_pool2d(feat, grid)
        cells = [F.adaptive_avg_pool2d(g, s).flatten(2).transpose(1, 2) for s in levels]  # (B, s*s, C) row-major
        return F.linear(torch.cat(cells, dim=1), weight, bias)  # (B, N, K)

    zs = region_logits(student_feat, student_fc_weight, student_fc_bias) / temperature
    zt = region_logits(teacher_feat, teacher_fc_weight, teacher_fc_bias) / temperature
    log_ps, log_pt = F.log_softmax(zs, dim=-1), F.log_softmax(zt, dim=-1)
    return temperature**2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1)


def rad_loss(
    student_feat,
    teacher_feat,
    student_fc_weight,
    student_fc_bias,
    teacher_fc_weight,
    teacher_fc_bias,
    *,
    grid=4,
    levels=(4, 2, 1),
    temperature=2.0,
    reduction="mean",
) -> torch.Tensor:
    """Reference of :func:`mmh_ext.rad_loss`."""
    g = rad_region_losses(
        student_feat,
        teacher_feat,
        student_fc_weight,
        student_fc_bias,
        teacher_fc_weight,
        teacher_fc_bias,
        grid=grid,
        levels=levels,
        temperature=temperature,
    )
    if reduction == "none":
        return g
    if reduction == "region":
        return g.mean(0)
    if reduction == "mean":
        return g.mean(0).mean()
    raise ValueError(f"reduction must be 'none', 'region' or 'mean', got {reduction!r}")


def rad_weighting(
    region_losses: torch.Tensor, mode: str, q: torch.Tensor | None = None, k: torch.Tensor | None = None
) -> torch.Tensor:
    """Information weighting over the N batch-mean region losses r (see :class:`mmh_ext.nn.RegionAwareDistillation`)."""
    r = region_losses
    n = r.numel()
    if mode == "none":
        return r.mean()
    if mode == "attention":
        scores = torch.outer(k @ r, q @ r)  # A[i, j] = softmax_j((k r)_i (q r)_j)
    elif mode == "self":
        scores = torch.outer(r, r)
    else:
        raise ValueError(f"weighting must be 'attention', 'self' or 'none', got {mode!r}")
    return (torch.softmax(scores, dim=1) @ r).sum() / n


def cosine_discrepancy(feat: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """(B, B) matrix ``1/2 - 1/2 cos(H_j, H_k)`` of the flattened samples; norms clamped at ``eps``."""
    h = feat.flatten(1)
    hn = h / h.norm(dim=1, keepdim=True).clamp_min(eps)
    return 0.5 - 0.5 * hn @ hn.t()


def _sp_matrix(feat: torch.Tensor, eps: float) -> torch.Tensor:
    h = feat.flatten(1)
    g = h @ h.t()
    return g / g.norm(dim=1, keepdim=True).clamp_min(eps)


def dad_loss(student_feats, teacher_feats, *, form: str = "paper", eps: float = 1e-8) -> torch.Tensor:
    """Reference of :func:`mmh_ext.dad_loss` (a tensor or a list of layer tensors on each side, summed over pairs)."""
    check_dad_form(form)
    if isinstance(student_feats, torch.Tensor):
        student_feats, teacher_feats = [student_feats], [teacher_feats]
    total = 0.0
    for s, t in zip(student_feats, teacher_feats):
        if form == "paper":
            d = cosine_discrepancy(s, eps=eps) - cosine_discrepancy(t, eps=eps)
            total = total + torch.linalg.matrix_norm(d)
        else:
            total = total + (_sp_matrix(s, eps) - _sp_matrix(t, eps)).pow(2).mean()
    return total


def cross_stream_inject(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x * relu(gate)``."""
    return x * torch.relu(gate)
