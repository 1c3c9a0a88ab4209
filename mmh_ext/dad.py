"""Discrepancy-aware distillation (DAD): :func:`cosine_discrepancy` and :func:`dad_loss`, with the fake (meta)
implementations of their operators (``torch.ops.mmh_ext.cosine_discrepancy_*``, ``dad_*``; kernels in csrc/cpu/dad.cpp
and csrc/cuda/dad.cu, autograd in csrc/dad_autograd.cpp)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ._common import DAD_FORMS, acc_dtype, check_dad_form, check_devices, check_tensor, out_dtype

__all__ = ["DAD_FORMS", "DEFAULT_EPS", "check_dad_form", "cosine_discrepancy", "dad_loss"]

_ops = torch.ops.mmh_ext
DEFAULT_EPS = 1e-8


def _check_feat2(f, name: str) -> None:
    check_tensor(f, name)
    if f.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension and at least one feature dimension, got shape "
                         f"{tuple(f.shape)}")
    if f.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (B = 0)")
    if f.numel() == 0:
        raise ValueError(f"{name} has no features: shape {tuple(f.shape)}")


def _check_eps(eps) -> None:
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")


@torch.library.register_fake("mmh_ext::cosine_discrepancy_forward")
def _cos_fake(feat, eps):
    _check_feat2(feat, "feat")
    b, acc = feat.shape[0], acc_dtype(feat)
    return feat.new_empty((b, b), dtype=acc), feat.new_empty((b,), dtype=acc)


@torch.library.register_fake("mmh_ext::cosine_discrepancy_backward")
def _cos_backward_fake(grad, feat, d, norm, eps):
    return torch.empty_like(feat, memory_format=torch.contiguous_format)


def cosine_discrepancy(feat: torch.Tensor, *, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """(B, B) cosine discrepancy ``1/2 - 1/2 cos(H_j, H_k)`` between the flattened samples of ``feat`` (B, ...).

    Row norms are clamped at ``eps``: an all-zero sample has cosine 0 with everything (discrepancy 1/2), no NaN.
    Computed from the Gram matrix (one GEMM); no normalised copy of the features is made. float16/bfloat16 features
    are computed in float32; the result has ``feat``'s dtype, float32 under ``torch.autocast``.
    """
    _check_feat2(feat, "feat")
    _check_eps(eps)
    d = _ops.cosine_discrepancy_forward.default(feat, float(eps))[0]
    dtype = out_dtype(feat)
    return d if d.dtype == dtype else d.to(dtype)


@torch.library.register_fake("mmh_ext::dad_forward")
def _dad_fake(hs, ht, form, eps):
    _check_feat2(hs, "student_feat")
    _check_feat2(ht, "teacher_feat")
    check_devices([(hs, "student_feat"), (ht, "teacher_feat")])
    b, acc = hs.shape[0], acc_dtype(hs, ht)
    m = lambda: hs.new_empty((b, b), dtype=acc)  # noqa: E731
    return hs.new_empty((), dtype=acc), m(), m(), hs.new_empty((b,), dtype=acc), hs.new_empty((b,), dtype=acc)


@torch.library.register_fake("mmh_ext::dad_backward")
def _dad_backward_fake(grad, hs, ht, ms, mt, ns, nt, loss, form, eps, need_s, need_t):
    none = hs.new_empty((0,))
    return [torch.empty_like(hs, memory_format=torch.contiguous_format) if need_s else none,
            torch.empty_like(ht, memory_format=torch.contiguous_format) if need_t else none]


def dad_loss(
    student_feats: torch.Tensor | Sequence[torch.Tensor],
    teacher_feats: torch.Tensor | Sequence[torch.Tensor],
    *,
    form: str = "paper",
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Discrepancy-aware distillation loss, summed over layer pairs.

    Each argument is a tensor (B, ...) or a list of them (one per layer; student and teacher lists pair up in order;
    the feature sizes of a pair may differ, the batch sizes may not).

    * ``form="paper"``: ``||D_student - D_teacher||_F`` with D the :func:`cosine_discrepancy` matrices (paper eq.).
      Its gradient at a zero difference is taken as 0 (the norm is not differentiable there).
    * ``form="sp"``: mean over the B x B entries of the squared difference of the row-L2-normalised Gram matrices
      ``H H^T`` — the similarity-preserving form the reference MMH code trained with.

    B = 1 is degenerate (a 1 x 1 matrix that is the same for both networks): the loss is 0 and so is the gradient.
    All-zero samples are handled by clamping norms at ``eps``: no NaN, no Inf. (Their gradient is of order ``1/eps``,
    as with ``torch.nn.functional.normalize``: finite in float32/bfloat16, beyond float16's range — a float16 gradient
    of an all-zero sample is inf, which a GradScaler step skips.)

    dtypes: any of float64/float32/float16/bfloat16, and student and teacher may differ (a student under
    ``torch.autocast`` against a float32 teacher). Computed in float32 (float64 when an input is float64); the loss
    has the promoted dtype of all the features, float32 under ``torch.autocast``; each gradient has its input's dtype.
    """
    check_dad_form(form)
    _check_eps(eps)
    if isinstance(student_feats, torch.Tensor) != isinstance(teacher_feats, torch.Tensor):
        raise TypeError("student_feats and teacher_feats must both be tensors or both be lists of tensors")
    if isinstance(student_feats, torch.Tensor):
        student_feats, teacher_feats = [student_feats], [teacher_feats]
    student_feats, teacher_feats = list(student_feats), list(teacher_feats)
    if len(student_feats) != len(teacher_feats) or not student_feats:
        raise ValueError(f"student_feats and teacher_feats must pair up: got {len(student_feats)} student and "
                         f"{len(teacher_feats)} teacher layers")
    total = None
    eps = float(eps)
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        sname, tname = f"student_feats[{i}]", f"teacher_feats[{i}]"
        _check_feat2(s, sname)
        _check_feat2(t, tname)
        if t.device != s.device:  # check_devices' message; the tensors themselves were checked just above
            raise ValueError(f"{tname} is on {t.device} but {sname} is on {s.device}")
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"{sname} has batch size {s.shape[0]} but {tname} has {t.shape[0]}")
        loss = _ops.dad_forward.default(s, t, form, eps)[0]
        total = loss if total is None else total + loss
    dtype = out_dtype(*student_feats, *teacher_feats)
    return total if total.dtype == dtype else total.to(dtype)
