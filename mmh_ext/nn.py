"""nn.Modules over the mmh_ext operators."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from . import dad, inject, rad
from ._common import autocast_on, check_dad_form

__all__ = ["CrossStreamInjection", "DiscrepancyAwareDistillation", "RegionAwareDistillation"]

_Classifier = nn.Linear | tuple[torch.Tensor, torch.Tensor]


def _no_autocast(device: torch.device):
    if autocast_on(device):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _fc(fc: _Classifier, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(fc, nn.Linear):
        if fc.bias is None:
            raise ValueError(f"{name} must have a bias (nn.Linear(..., bias=True))")
        return fc.weight, fc.bias
    if isinstance(fc, (tuple, list)) and len(fc) == 2:
        return fc[0], fc[1]
    raise TypeError(f"{name} must be an nn.Linear or a (weight, bias) pair, got {type(fc).__name__}")


class RegionAwareDistillation(nn.Module):
    """Region-aware distillation (MMH paper, sec. III-B) with its information-weighting layer.

    The N per-region losses (batch means, :func:`mmh_ext.rad_loss` with ``reduction="region"``) r are aggregated by

    * ``"attention"``: bias-free ``q, k`` in R^{N x N} (882 parameters for N = 21),
      ``A[i, j] = softmax_j((k r)_i * (q r)_j)``, loss ``= sum_ij A[i, j] r_j / N``;
    * ``"self"``: parameter-free ``A[i, j] = softmax_j(r_i * r_j)``, same sum;
    * ``"none"``: the mean of r.

    ``"attention"`` is the paper's information weighting; its q, k train jointly with the student (put this module's
    parameters in the student's optimizer). The default is ``"none"`` because that joint training is degenerate: the
    loss is ``w @ r`` with ``w`` a distribution the weighting layer controls, so minimising it moves ``w`` onto the
    smallest region loss — the easiest region — and switches most of the distillation off (on the main job: 57 % of
    the weight on one region, < 1 % on the global one, accuracy no better than without distillation; see the README).
    :meth:`region_weights` / :meth:`weight_stats` show the weights. Vanilla KD is ``grid=1, levels=(1,)``.

    Mixed precision: the features may be float16/bfloat16 (``torch.autocast``) with float32 classifiers (an
    ``nn.Linear`` or a (weight, bias) pair); the loss is float32 under autocast and the weighting runs in float32.
    """

    def __init__(
        self, grid: int = 4, levels: Sequence[int] = (4, 2, 1), temperature: float = 2.0, weighting: str = "none"
    ) -> None:
        super().__init__()
        if weighting not in ("attention", "self", "none"):
            raise ValueError(f"weighting must be 'attention', 'self' or 'none', got {weighting!r}")
        self.grid, self.levels, self.temperature, self.weighting = (
            int(grid),
            tuple(int(s) for s in levels),
            float(temperature),
            weighting,
        )
        n = rad.rad_num_regions(self.levels)
        if any(not 1 <= s <= self.grid for s in self.levels):
            raise ValueError(f"levels {self.levels} must lie between 1 and grid = {self.grid}")
        self.num_regions = n
        self.last_weights: torch.Tensor | None = None
        if weighting == "attention":
            self.q = nn.Linear(n, n, bias=False)
            self.k = nn.Linear(n, n, bias=False)

    def region_losses(
        self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, student_fc: _Classifier, teacher_fc: _Classifier
    ) -> torch.Tensor:
        """The (N,) batch-mean region losses r."""
        ws, bs = _fc(student_fc, "student_fc")
        wt, bt = _fc(teacher_fc, "teacher_fc")
        return rad.rad_loss(
            student_feat,
            teacher_feat,
            ws,
            bs,
            wt,
            bt,
            grid=self.grid,
            levels=self.levels,
            temperature=self.temperature,
            reduction="region",
        )

    def region_weights(self, r: torch.Tensor) -> torch.Tensor:
        """The (N,) weights w of the region losses r (N,): ``loss = w @ r``, ``w >= 0``, ``w.sum() == 1``.

        ``w_j = mean_i A[i, j]`` (the attention rows averaged); ``1 / N`` each for ``"none"``. Differentiable."""
        if r.dim() != 1 or r.numel() != self.num_regions:
            raise ValueError(f"r must be the ({self.num_regions},) region losses, got shape {tuple(r.shape)}")
        if self.weighting == "none":
            return torch.full_like(r, 1.0 / r.numel())
        # Under torch.autocast the weighting stays in r's dtype (float32): q and k are not recast to half precision.
        with _no_autocast(r.device):
            if self.weighting == "attention":
                scores = torch.outer(self.k(r), self.q(r))
            else:
                scores = torch.outer(r, r)
            return torch.softmax(scores, dim=1).mean(0)

    def weigh(self, r: torch.Tensor) -> torch.Tensor:
        """Aggregate the region losses r (N,) into the scalar loss ``region_weights(r) @ r``.

        Also keeps the detached weights of this call in :attr:`last_weights` (for logging: see
        :meth:`weight_stats`)."""
        w = self.region_weights(r)
        self.last_weights = w.detach()
        with _no_autocast(r.device):
            return w @ r

    def weight_stats(self) -> dict[str, float]:
        """Summary of :attr:`last_weights`: the largest weight, the weight of the last region (the global one with
        the default levels), and the effective number of regions ``exp(entropy)`` (N when uniform, 1 when all the
        weight sits on one region). Empty before the first call."""
        w = self.last_weights
        if w is None:
            return {}
        w = w.double()
        p = w / w.sum()
        ent = -(p * p.clamp_min(1e-300).log()).sum()
        eff = min(max(float(ent.exp()), 1.0), float(w.numel()))  # rounding of float32 weights
        return {"max": float(w.max()), "last": float(w[-1]), "effective_regions": eff}

    def forward(
        self, student_feat: torch.Tensor, teacher_feat: torch.Tensor, student_fc: _Classifier, teacher_fc: _Classifier
    ) -> torch.Tensor:
        return self.weigh(self.region_losses(student_feat, teacher_feat, student_fc, teacher_fc))

    def extra_repr(self) -> str:
        return (
            f"grid={self.grid}, levels={self.levels}, temperature={self.temperature}, "
            f"weighting={self.weighting!r}, num_regions={self.num_regions}"
        )


class DiscrepancyAwareDistillation(nn.Module):
    """Discrepancy-aware distillation (MMH paper, sec. III-C): :func:`mmh_ext.dad_loss` as a module."""

    def __init__(self, form: str = "paper", eps: float = dad.DEFAULT_EPS) -> None:
        super().__init__()
        check_dad_form(form)
        self.form, self.eps = form, float(eps)

    def forward(self, student_feats, teacher_feats) -> torch.Tensor:
        return dad.dad_loss(student_feats, teacher_feats, form=self.form, eps=self.eps)

    def extra_repr(self) -> str:
        return f"form={self.form!r}"


class CrossStreamInjection(nn.Module):
    """``x * relu(gate)``: the multiplicative cross-stream connection of multiple-stream networks."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return inject.cross_stream_inject(x, gate)
