"""Region-aware distillation (RAD): :func:`rad_loss`, its fake (meta) implementations, and the CPU kernel mode.

The operators ``torch.ops.mmh_ext.rad_forward`` / ``rad_backward`` and ``rad_loss`` (rad_forward's loss reduced, one
autograd node: what :func:`rad_loss` calls) are defined in csrc/rad.cpp (schemas, argument checks, autograd: one
dispatcher call per pass), with kernels in csrc/cpu/rad.cpp and csrc/cuda/rad.cu.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch

from . import BUILD_INFO
from ._common import acc_dtype, as_out_dtype, fake_check_floats, raise_binding_error

__all__ = ["cpu_kernel_mode", "rad_loss", "rad_num_regions"]

_loss = torch.ops.mmh_ext.rad_loss.default
_set_mode = torch.ops.mmh_ext_testing.set_cpu_kernel_mode.default
#: csrc/rad_math.h kMaxLevels, as the build reports it
_MAX_LEVELS = int(BUILD_INFO["rad_max_levels"])
_REDUCTIONS = ("none", "region", "mean")


@contextlib.contextmanager
def cpu_kernel_mode(mode: str):
    """Select RAD's CPU kernels inside the block: ``"fast"`` (default), ``"separate"`` or ``"device"``.

    ``"fast"``: the vectorised CPU kernels; where they apply (float32 computation, NCHW float32/float16/bfloat16 maps
    of at least 8 channels, a CPU with AVX2 and FMA, at least as many samples as threads) each pass runs as one
    parallel loop over chunks of samples, every stage of a chunk (pooling, cell-logit GEMMs, region math; backward:
    cell gradients, d pooled and its unpooling) run while its rows are in cache. ``"separate"``: the same kernels,
    each a pass over the whole batch — what ``"fast"`` runs where the chunked passes do not apply. ``"device"``: runs,
    over the same flat index space, the ``__host__ __device__`` per-item functions that are the whole bodies of the
    CUDA kernels (csrc/rad_math.h) — a CPU emulation of the CUDA launch, used by the tests to check the CUDA kernels'
    math without a GPU. All three agree up to floating-point summation order. Process-wide.
    Only :func:`rad_loss` has several CPU modes: the DAD and injection CPU kernels always run the per-row /
    per-element functions their CUDA kernels run (csrc/dad_math.h, csrc/inject_math.h), so the mode does not change
    them.
    """
    previous = _set_mode(mode)
    try:
        yield
    finally:
        _set_mode(previous)


def rad_num_regions(levels: Sequence[int]) -> int:
    """Number of pyramid regions N = sum of s^2 over the levels (21 for (4, 2, 1))."""
    return sum(int(s) ** 2 for s in levels)


def _rad_fake_checks(fs, ft, ws, bs, wt, bt, grid, levels, temperature) -> None:
    """csrc/rad.cpp's checks of rad_forward, for the fake implementation."""
    fake_check_floats(
        [
            (fs, "student_feat"),
            (ft, "teacher_feat"),
            (ws, "student_fc_weight"),
            (bs, "student_fc_bias"),
            (wt, "teacher_fc_weight"),
            (bt, "teacher_fc_bias"),
        ]
    )
    for f, name in ((fs, "student_feat"), (ft, "teacher_feat")):
        torch._check_value(f.dim() == 4, lambda: f"{name} must be 4-D (B, C, H, W), got shape {list(f.shape)}")
        torch._check_value(f.shape[0] > 0, lambda: f"{name} has an empty batch (B = 0)")
        torch._check_value(
            f.shape[1] > 0 and f.shape[2] > 0 and f.shape[3] > 0,
            lambda: f"{name} has an empty dimension: {list(f.shape)}",
        )
    torch._check_value(
        fs.shape[0] == ft.shape[0],
        lambda: f"student_feat has batch size {fs.shape[0]} but teacher_feat has {ft.shape[0]}",
    )
    for w, b, f, wn, bn, fn in (
        (ws, bs, fs, "student_fc_weight", "student_fc_bias", "student_feat"),
        (wt, bt, ft, "teacher_fc_weight", "teacher_fc_bias", "teacher_feat"),
    ):
        torch._check_value(w.dim() == 2, lambda: f"{wn} must be 2-D (K, C), got shape {list(w.shape)}")
        torch._check_value(
            w.shape[1] == f.shape[1], lambda: f"{wn} has {w.shape[1]} input features but {fn} has {f.shape[1]} channels"
        )
        torch._check_value(
            b.dim() == 1 and b.shape[0] == w.shape[0],
            lambda: f"{bn} must have shape ({w.shape[0]},), got {list(b.shape)}",
        )
    torch._check_value(
        ws.shape[0] == wt.shape[0],
        lambda: f"student_fc_weight has {ws.shape[0]} classes but teacher_fc_weight has {wt.shape[0]}",
    )
    torch._check_value(ws.shape[0] >= 2, lambda: f"the classifiers need at least 2 classes, got {ws.shape[0]}")
    torch._check_value(
        0 < temperature < math.inf, lambda: f"temperature must be a positive finite number, got {temperature}"
    )
    torch._check_value(grid >= 1, lambda: f"grid must be >= 1, got {grid}")
    torch._check_value(len(levels) > 0, lambda: "levels must not be empty")
    torch._check_value(
        len(levels) <= _MAX_LEVELS, lambda: f"levels: at most {_MAX_LEVELS} levels are supported, got {len(levels)}"
    )
    for i, s in enumerate(levels):
        torch._check_value(1 <= s <= grid, lambda: f"levels[{i}] = {s} must be between 1 and grid = {grid}")


@torch.library.register_fake("mmh_ext::rad_forward")
def _rad_forward_fake(fs, ft, ws, bs, wt, bt, grid, levels, temperature):
    _rad_fake_checks(fs, ft, ws, bs, wt, bt, grid, levels, temperature)
    b, k, n, g2 = fs.shape[0], ws.shape[0], rad_num_regions(levels), grid * grid
    acc = acc_dtype(fs, ft, ws, bs, wt, bt)
    return (
        fs.new_empty((b, n), dtype=acc),
        fs.new_empty((b, g2, fs.shape[1]), dtype=acc),
        fs.new_empty((b, g2, ft.shape[1]), dtype=acc),
        fs.new_empty((b, n, k), dtype=acc),
        fs.new_empty((b, n, k), dtype=acc),
    )


@torch.library.register_fake("mmh_ext::rad_loss")
def _rad_loss_fake(fs, ft, ws, bs, wt, bt, grid, levels, temperature, reduction):
    _rad_fake_checks(fs, ft, ws, bs, wt, bt, grid, levels, temperature)
    torch._check_value(
        reduction in _REDUCTIONS, lambda: f"reduction must be 'none', 'region' or 'mean', got '{reduction}'"
    )
    shape = {"none": (fs.shape[0], rad_num_regions(levels)), "region": (rad_num_regions(levels),), "mean": ()}
    return fs.new_empty(shape[reduction], dtype=acc_dtype(fs, ft, ws, bs, wt, bt))


@torch.library.register_fake("mmh_ext::rad_backward")
def _rad_backward_fake(grad, gs, gt, ls, lt, ws, wt, shw, thw, sdt, tdt, grid, levels, temperature, need_s, need_t):
    # pooled (gs / gt) is empty when its weight needs no gradient (not kept by the forward): d weight is empty then
    b = ls.shape[0]
    none = ls.new_empty((0,))
    out = [none] * 6
    for i, (need, pooled, w, hw, dt) in enumerate(((need_s, gs, ws, shw, sdt), (need_t, gt, wt, thw, tdt))):
        if need:
            dw = w.new_empty(w.shape) if pooled.numel() != 0 else none
            out[3 * i : 3 * i + 3] = [ls.new_empty((b, w.shape[1], *hw), dtype=dt), dw, ls.new_empty((w.shape[0],))]
    return out


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

    Raises:
        ValueError: shapes that do not fit together, a bad ``grid``, ``levels``, ``temperature`` or ``reduction``,
            tensors on different devices. TypeError: an argument of the wrong type (a tensor that is not float64,
            float32, float16 or bfloat16 included). Each message names the argument.
    """
    try:
        loss = _loss(
            student_feat,
            teacher_feat,
            student_fc_weight,
            student_fc_bias,
            teacher_fc_weight,
            teacher_fc_bias,
            grid,
            levels,
            temperature,
            reduction,
        )
    except RuntimeError as e:
        raise_binding_error(e)
        raise
    return as_out_dtype(
        loss, student_feat, teacher_feat, student_fc_weight, student_fc_bias, teacher_fc_weight, teacher_fc_bias
    )
