"""Functional API over the compiled operators, their fake (meta) implementations and their autograd formulas."""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch._prims_common import is_non_overlapping_and_dense_or_false as is_non_overlapping_and_dense

__all__ = ["cosine_discrepancy", "cpu_kernel_mode", "cross_stream_inject", "dad_loss", "rad_loss", "rad_num_regions"]

_ops = torch.ops.mmh_ext
DEFAULT_EPS = 1e-8


@contextlib.contextmanager
def cpu_kernel_mode(mode: str):
    """Select the CPU kernels inside the block: ``"fast"`` (default) or ``"device"``.

    ``"device"`` runs, over the same flat index space, the ``__host__ __device__`` per-item functions that are the
    whole bodies of the CUDA kernels — a CPU emulation of the CUDA launch, used by the tests to check the CUDA
    kernels' math without a GPU. Results are the same up to floating-point summation order. Process-wide.
    """
    previous = _ops._set_cpu_kernel_mode(mode)
    try:
        yield
    finally:
        _ops._set_cpu_kernel_mode(previous)


_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _acc(*tensors: torch.Tensor) -> torch.dtype:
    """The accumulation dtype: float64 when any input is float64, float32 otherwise."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _autocast_on(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda") and torch.is_autocast_enabled(device.type)


def _out_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """dtype of a loss/matrix output: the inputs' promoted dtype; the accumulation dtype (float32) under autocast."""
    if _autocast_on(tensors[0].device):
        return _acc(*tensors)
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_tensor(t, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be a float64, float32, float16 or bfloat16 tensor, got {t.dtype}")


def _check_devices(tensors: Sequence[tuple[torch.Tensor, str]]) -> None:
    """Each a float tensor (dtypes may differ: torch.autocast mixes them), all on the first one's device."""
    for t, name in tensors:
        _check_tensor(t, name)
    first, fname = tensors[0]
    for t, name in tensors[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {fname} is on {first.device}")


# ------------------------------------------------------------------------------------------------------------- RAD
def rad_num_regions(levels: Sequence[int]) -> int:
    """Number of pyramid regions N = sum of s^2 over the levels (21 for (4, 2, 1))."""
    return sum(int(s) ** 2 for s in levels)


def _check_rad(fs, ft, ws, bs, wt, bt, grid, levels, temperature) -> None:
    _check_devices([(fs, "student_feat"), (ft, "teacher_feat"), (ws, "student_fc_weight"), (bs, "student_fc_bias"),
                    (wt, "teacher_fc_weight"), (bt, "teacher_fc_bias")])
    for f, name in ((fs, "student_feat"), (ft, "teacher_feat")):
        if f.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(f.shape)}")
        if f.shape[0] == 0:
            raise ValueError(f"{name} has an empty batch (B = 0)")
        if min(f.shape[1:]) == 0:
            raise ValueError(f"{name} has an empty dimension: shape {tuple(f.shape)}")
    if fs.shape[0] != ft.shape[0]:
        raise ValueError(f"student_feat has batch size {fs.shape[0]} but teacher_feat has {ft.shape[0]}")
    for w, b, f, wn, bn, fn in ((ws, bs, fs, "student_fc_weight", "student_fc_bias", "student_feat"),
                                (wt, bt, ft, "teacher_fc_weight", "teacher_fc_bias", "teacher_feat")):
        if w.dim() != 2 or w.shape[1] != f.shape[1]:
            raise ValueError(f"{wn} must have shape (K, {f.shape[1]}) to match the channels of {fn}, "
                             f"got {tuple(w.shape)}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"{bn} must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    if ws.shape[0] != wt.shape[0]:
        raise ValueError(f"student_fc_weight has {ws.shape[0]} classes but teacher_fc_weight has {wt.shape[0]}")
    if ws.shape[0] < 2:
        raise ValueError(f"the classifiers need at least 2 classes, got {ws.shape[0]}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ValueError(f"grid must be a positive int, got {grid!r}")
    if len(levels) == 0 or len(levels) > 8:
        raise ValueError(f"levels must hold 1 to 8 pyramid sizes, got {list(levels)}")
    for i, s in enumerate(levels):
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= grid:
            raise ValueError(f"levels[{i}] = {s!r} must be an int between 1 and grid = {grid}")
    if not isinstance(temperature, (int, float)) or not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")


@torch.library.register_fake("mmh_ext::rad_forward")
def _rad_forward_fake(fs, ft, ws, bs, wt, bt, grid, levels, temperature):
    _check_rad(fs, ft, ws, bs, wt, bt, grid, list(levels), temperature)
    b, k, n, g2 = fs.shape[0], ws.shape[0], rad_num_regions(levels), grid * grid
    acc = _acc(fs, ft, ws, bs, wt, bt)
    return (fs.new_empty((b, n), dtype=acc), fs.new_empty((b, g2, fs.shape[1]), dtype=acc),
            fs.new_empty((b, g2, ft.shape[1]), dtype=acc), fs.new_empty((b, n, k), dtype=acc),
            fs.new_empty((b, n, k), dtype=acc))


@torch.library.register_fake("mmh_ext::rad_backward")
def _rad_backward_fake(grad, gs, gt, ls, lt, ws, wt, shw, thw, sdt, tdt, grid, levels, temperature, need_s,
                       need_t):
    b = gs.shape[0]
    none = gs.new_empty((0,))
    out = [none] * 6
    if need_s:
        out[0:3] = [gs.new_empty((b, gs.shape[2], *shw), dtype=sdt), ws.new_empty(ws.shape),
                    gs.new_empty((ws.shape[0],))]
    if need_t:
        out[3:6] = [gt.new_empty((b, gt.shape[2], *thw), dtype=tdt), wt.new_empty(wt.shape),
                    gt.new_empty((wt.shape[0],))]
    return out


# The autograd of rad_forward is registered in C++ (csrc/rad_autograd.cpp): one dispatcher call per pass.


def rad_loss(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    student_fc_weight: torch.Tensor,
    student_fc_bias: torch.Tensor,
    teacher_fc_weight: torch.Tensor,
    teacher_fc_bias: torch.Tensor,
    *,
    grid: int = 4,
    levels: Sequence[int] = (4, 2, 1),
    temperature: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Region-aware distillation loss (fused spatial-pyramid region logits + KL).

    For each network ``g = adaptive_avg_pool2d(feat, grid)``; for each ``s`` in ``levels``,
    ``adaptive_avg_pool2d(g, s)`` flattened row-major; levels concatenated in order give N regions; region logits are
    that network's classifier applied to each cell; the loss of (sample, region) is
    ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``.

    Args:
        student_feat, teacher_feat: (B, C_s, H_s, W_s) and (B, C_t, H_t, W_t) feature maps (channels and size may
            differ; any memory format).
        student_fc_weight, student_fc_bias, teacher_fc_weight, teacher_fc_bias: the two classifiers, (K, C) and (K,).
        grid: side of the normalising pooling (w). levels: pyramid sizes, each <= grid. temperature: T > 0.
        reduction: ``"none"`` → (B, N); ``"region"`` → (N,) batch means; ``"mean"`` → the mean of the N batch means.

    Gradients reach the student features and classifier, and the teacher's tensors when they require grad.

    dtypes: each tensor may be float64, float32, float16 or bfloat16, independently (e.g. bfloat16 features from
    ``torch.autocast`` with float32 classifiers). Half-precision feature maps are read as they are (no float32 copy)
    and everything accumulates in float32 — float64 when any input is float64. The loss has the inputs' promoted
    dtype (float32 for bfloat16 features with float32 classifiers); under ``torch.autocast`` on the inputs' device it
    is float32. Each gradient comes back in its own input's dtype.
    """
    levels = [int(s) for s in levels] if isinstance(levels, (list, tuple)) else levels
    if reduction not in ("none", "region", "mean"):
        raise ValueError(f"reduction must be 'none', 'region' or 'mean', got {reduction!r}")
    _check_rad(student_feat, teacher_feat, student_fc_weight, student_fc_bias, teacher_fc_weight, teacher_fc_bias,
               grid, levels, temperature)
    loss = _ops.rad_forward(student_feat, teacher_feat, student_fc_weight, student_fc_bias, teacher_fc_weight,
                            teacher_fc_bias, grid, levels, float(temperature))[0]
    if reduction == "region":
        loss = loss.mean(0)
    elif reduction == "mean":
        loss = loss.mean()
    return loss.to(_out_dtype(student_feat, teacher_feat, student_fc_weight, student_fc_bias, teacher_fc_weight,
                              teacher_fc_bias))


# ------------------------------------------------------------------------------------------------------------- DAD
def _check_feat2(f, name: str) -> None:
    _check_tensor(f, name)
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
    b, acc = feat.shape[0], _acc(feat)
    return feat.new_empty((b, b), dtype=acc), feat.new_empty((b,), dtype=acc)


@torch.library.register_fake("mmh_ext::cosine_discrepancy_backward")
def _cos_backward_fake(grad, feat, d, norm, eps):
    return torch.empty_like(feat, memory_format=torch.contiguous_format)


def _cos_setup(ctx, inputs, output):
    feat, eps = inputs
    d, norm = output
    ctx.mark_non_differentiable(norm)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(feat, d, norm)
    ctx.eps = eps


def _cos_backward(ctx, grad, _):
    feat, d, norm = ctx.saved_tensors
    if grad is None or not ctx.needs_input_grad[0]:
        return None, None
    return _ops.cosine_discrepancy_backward(grad, feat, d, norm, ctx.eps), None


torch.library.register_autograd("mmh_ext::cosine_discrepancy_forward", _cos_backward, setup_context=_cos_setup)


def cosine_discrepancy(feat: torch.Tensor, *, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """(B, B) cosine discrepancy ``1/2 - 1/2 cos(H_j, H_k)`` between the flattened samples of ``feat`` (B, ...).

    Row norms are clamped at ``eps``: an all-zero sample has cosine 0 with everything (discrepancy 1/2), no NaN.
    Computed from the Gram matrix (one GEMM); no normalised copy of the features is made. float16/bfloat16 features
    are computed in float32; the result has ``feat``'s dtype, float32 under ``torch.autocast``.
    """
    _check_feat2(feat, "feat")
    _check_eps(eps)
    return _ops.cosine_discrepancy_forward(feat, float(eps))[0].to(_out_dtype(feat))


@torch.library.register_fake("mmh_ext::dad_forward")
def _dad_fake(hs, ht, form, eps):
    _check_feat2(hs, "student_feat")
    _check_feat2(ht, "teacher_feat")
    _check_devices([(hs, "student_feat"), (ht, "teacher_feat")])
    b, acc = hs.shape[0], _acc(hs, ht)
    m = lambda: hs.new_empty((b, b), dtype=acc)  # noqa: E731
    return hs.new_empty((), dtype=acc), m(), m(), hs.new_empty((b,), dtype=acc), hs.new_empty((b,), dtype=acc)


@torch.library.register_fake("mmh_ext::dad_backward")
def _dad_backward_fake(grad, hs, ht, ms, mt, ns, nt, loss, form, eps, need_s, need_t):
    none = hs.new_empty((0,))
    return [torch.empty_like(hs, memory_format=torch.contiguous_format) if need_s else none,
            torch.empty_like(ht, memory_format=torch.contiguous_format) if need_t else none]


def _dad_setup(ctx, inputs, output):
    hs, ht, form, eps = inputs
    loss, ms, mt, ns, nt = output
    ctx.mark_non_differentiable(ms, mt, ns, nt)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(hs, ht, ms, mt, ns, nt, loss)
    ctx.args = (form, eps)


def _dad_backward(ctx, grad, *_):
    n = ctx.needs_input_grad
    if grad is None or not (n[0] or n[1]):
        return None, None, None, None
    dhs, dht = _ops.dad_backward(grad, *ctx.saved_tensors, *ctx.args, bool(n[0]), bool(n[1]))
    return (dhs if n[0] else None), (dht if n[1] else None), None, None


torch.library.register_autograd("mmh_ext::dad_forward", _dad_backward, setup_context=_dad_setup)


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
    All-zero samples are handled by clamping norms at ``eps``: no NaN, no Inf.

    dtypes: any of float64/float32/float16/bfloat16, and student and teacher may differ (a student under
    ``torch.autocast`` against a float32 teacher). Computed in float32 (float64 when an input is float64); the loss
    has the promoted dtype of all the features, float32 under ``torch.autocast``; each gradient has its input's dtype.
    """
    if form not in ("paper", "sp"):
        raise ValueError(f"form must be 'paper' or 'sp', got {form!r}")
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
    for i, (s, t) in enumerate(zip(student_feats, teacher_feats)):
        _check_feat2(s, f"student_feats[{i}]")
        _check_feat2(t, f"teacher_feats[{i}]")
        _check_devices([(s, f"student_feats[{i}]"), (t, f"teacher_feats[{i}]")])
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"student_feats[{i}] has batch size {s.shape[0]} but teacher_feats[{i}] has {t.shape[0]}")
        loss = _ops.dad_forward(s, t, form, float(eps))[0]
        total = loss if total is None else total + loss
    return total.to(_out_dtype(*student_feats, *teacher_feats))


# ------------------------------------------------------------------------------------------------------- injection
@torch.library.register_fake("mmh_ext::cross_stream_inject")
def _inject_fake(x, gate):
    _check_devices([(x, "x"), (gate, "gate")])
    if x.shape != gate.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but gate has shape {tuple(gate.shape)}")
    dtype = torch.promote_types(x.dtype, gate.dtype)
    if x.stride() == gate.stride() and is_non_overlapping_and_dense(x):
        return torch.empty_like(x, dtype=dtype)
    return torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format)


@torch.library.register_fake("mmh_ext::cross_stream_inject_backward")
def _inject_backward_fake(grad, x, gate):
    same = x.stride() == gate.stride() and is_non_overlapping_and_dense(x) and grad.stride() == x.stride()
    fmt = torch.preserve_format if same else torch.contiguous_format
    return torch.empty_like(x, memory_format=fmt), torch.empty_like(gate, memory_format=fmt)


def _inject_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _inject_backward(ctx, grad):
    x, gate = ctx.saved_tensors
    if grad is None:
        return None, None
    dx, dgate = _ops.cross_stream_inject_backward(grad, x, gate)
    n = ctx.needs_input_grad
    return (dx if n[0] else None), (dgate if n[1] else None)


torch.library.register_autograd("mmh_ext::cross_stream_inject", _inject_backward, setup_context=_inject_setup)


def cross_stream_inject(x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Cross-stream multiplicative injection ``x * relu(gate)`` (thesis ch. 3, after Feichtenhofer et al.).

    ``x`` and ``gate`` have the same shape (any rank: 4-D images, 5-D video) and device; channels_last and other
    dense layouts are kept. Gradients reach both inputs; the backward is one pass and saves only the inputs.

    dtypes: float64/float32/float16/bfloat16, and ``x`` and ``gate`` may differ. The output has their promoted dtype
    (``torch.promote_types(x.dtype, gate.dtype)``, what ``x * torch.relu(gate)`` gives in eager mode), with or without
    ``torch.autocast`` (autocast's "promote" policy: nothing is cast down). float16/bfloat16 are computed in float32 and
    rounded once. ``grad_x`` has ``x``'s dtype and ``grad_gate`` ``gate``'s.
    """
    _check_devices([(x, "x"), (gate, "gate")])
    if x.shape != gate.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but gate has shape {tuple(gate.shape)} (they must match)")
    return _ops.cross_stream_inject(x, gate)
