"""Discrepancy-aware distillation (DAD): :func:`cosine_discrepancy` and :func:`dad_loss`, with the fake (meta)
implementations of their operators (``torch.ops.mmh_ext.cosine_discrepancy_*``, ``dad_*``: schemas, argument checks and
autograd in csrc/dad.cpp, kernels in csrc/cpu/dad.cpp and csrc/cuda/dad.cu)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from ._common import DAD_FORMS, acc_dtype, as_out_dtype, check_dad_form, fake_check_floats, raise_binding_error

__all__ = ["DAD_FORMS", "DEFAULT_EPS", "check_dad_form", "cosine_discrepancy", "dad_loss"]

_cosine = torch.ops.mmh_ext.cosine_discrepancy_forward.default
_dad = torch.ops.mmh_ext.dad_forward.default
DEFAULT_EPS = 1e-8
#: the op's argument names in a message, to be given the layer index of the Python API's lists
_FEAT_NAME = re.compile(r"\b(student|teacher)_feat\b")


def _fake_check_feat(f, name: str) -> None:
    """csrc/dad.cpp ``flat``'s checks."""
    torch._check_value(
        f.dim() >= 2,
        lambda: f"{name} must have a batch dimension and at least one feature dimension, got shape {list(f.shape)}",
    )
    torch._check_value(f.shape[0] > 0, lambda: f"{name} has an empty batch (B = 0)")
    torch._check_value(f.numel() > 0, lambda: f"{name} has no features: shape {list(f.shape)}")


def _fake_check_eps(eps) -> None:
    torch._check_value(eps > 0 and not math.isnan(eps), lambda: f"eps must be positive, got {eps}")


@torch.library.register_fake("mmh_ext::cosine_discrepancy_forward")
def _cos_fake(feat, eps):
    fake_check_floats([(feat, "feat")])
    _fake_check_eps(eps)
    _fake_check_feat(feat, "feat")
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

    Raises:
        ValueError: ``feat`` without a batch or feature dimension, ``eps <= 0``. TypeError: ``feat`` not a float
        tensor.
    """
    try:
        d = _cosine(feat, eps)[0]
    except RuntimeError as e:
        raise_binding_error(e)
        raise
    return as_out_dtype(d, feat)


@torch.library.register_fake("mmh_ext::dad_forward")
def _dad_fake(hs, ht, form, eps):
    fake_check_floats([(hs, "student_feat"), (ht, "teacher_feat")])
    _fake_check_eps(eps)
    torch._check_value(form in DAD_FORMS, lambda: f'form must be "paper" or "sp", got "{form}"')
    _fake_check_feat(hs, "student_feat")
    _fake_check_feat(ht, "teacher_feat")
    torch._check_value(
        hs.shape[0] == ht.shape[0],
        lambda: f"student_feat has batch size {hs.shape[0]} but teacher_feat has {ht.shape[0]}",
    )
    b, acc = hs.shape[0], acc_dtype(hs, ht)
    m = lambda: hs.new_empty((b, b), dtype=acc)  # noqa: E731
    return hs.new_empty((), dtype=acc), m(), m(), hs.new_empty((b,), dtype=acc), hs.new_empty((b,), dtype=acc)


@torch.library.register_fake("mmh_ext::dad_backward")
def _dad_backward_fake(grad, hs, ht, ms, mt, ns, nt, loss, form, eps, need_s, need_t):
    none = hs.new_empty((0,))
    return [
        torch.empty_like(hs, memory_format=torch.contiguous_format) if need_s else none,
        torch.empty_like(ht, memory_format=torch.contiguous_format) if need_t else none,
    ]


def _layer_error(err: Exception, i: int) -> Exception | None:
    """The op's error about one layer pair, naming the Python API's argument (``student_feats[i]``, ...) instead of
    the op's (``student_feat``); a binding error as the TypeError it is. None when ``err`` is neither."""
    msg = str(err)
    if isinstance(err, RuntimeError) and not isinstance(err, NotImplementedError):
        try:
            raise_binding_error(err)
        except TypeError as t:
            msg, err = str(t), t
        else:
            return None
    return type(err)(_FEAT_NAME.sub(lambda m: f"{m.group(1)}_feats[{i}]", msg))


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

    Raises:
        ValueError: batch sizes that differ, a layer without features, lists that do not pair up, a bad ``form`` or
        ``eps``, tensors on different devices. TypeError: a tensor and a list, or a tensor that is not float. Each
        message names the argument (``student_feats[i]`` for a layer of a list).
    """
    if isinstance(student_feats, torch.Tensor) and isinstance(teacher_feats, torch.Tensor):
        pairs: Sequence[tuple[torch.Tensor, torch.Tensor]] = ((student_feats, teacher_feats),)
    elif isinstance(student_feats, torch.Tensor) or isinstance(teacher_feats, torch.Tensor):
        raise TypeError("student_feats and teacher_feats must both be tensors or both be lists of tensors")
    else:
        student_feats, teacher_feats = list(student_feats), list(teacher_feats)
        if len(student_feats) != len(teacher_feats) or not student_feats:
            raise ValueError(
                f"student_feats and teacher_feats must pair up: got {len(student_feats)} student and "
                f"{len(teacher_feats)} teacher layers"
            )
        pairs = tuple(zip(student_feats, teacher_feats))
    total = None
    for i, (s, t) in enumerate(pairs):
        try:
            loss = _dad(s, t, form, eps)[0]
        except (RuntimeError, ValueError, TypeError) as e:
            named = _layer_error(e, i)
            if named is None:
                raise
            raise named from None
        total = loss if total is None else total + loss
    return as_out_dtype(total, *(p[0] for p in pairs), *(p[1] for p in pairs))
