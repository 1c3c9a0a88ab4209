"""Every distillation loss of the mmh methods, written from the equations of the papers.

Each function names the equation it implements; the methods call these functions and write no loss of their own.
Defaults are the equations; the forms of the reference code are named options. (``mmh_ext`` keeps an independent
reference of RAD's region KL, since the operator package imports nothing of the framework.)

=====================================  =====================================================================
function                               equation
=====================================  =====================================================================
:func:`kd_loss`                        Hinton et al.: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch mean
:func:`soft_cross_entropy`             ``ℓ(s, σ(f(x)))`` of thesis Eq. 3.5 / 5.3 with ``s = σ(f_t(x)/T)`` (Eq. 3.6)
:func:`generalized_distillation`       thesis Eq. 3.5 (= Eq. 5.3): ``(1−λ) ℓ(y, σ(f)) + λ ℓ(s, σ(f/T))``
:func:`hallucination_loss`             thesis Eq. 3.3: ``‖σ(A_d) − σ(A_h)‖²₂`` per sample, batch mean
:func:`modality_distillation_loss`     thesis Eq. 3.7: ``(1−α) L_GD + α L_hall``
:func:`mcl_loss`                       MCL family (thesis ch. 5): independent, SMCL, CMCL, DMCL (Eq. 5.3), random
:func:`kl_to_uniform`                  CMCL's confidence loss ``KL(U ‖ p)`` (Lee et al.)
:func:`admd_targets`                   thesis Eq. 4.1 (the extended C+1 label vector; naive: binary)
:func:`admd_discriminator_loss`        thesis Eq. 4.2, D's side: ``L(D(E_d(x)), ŷ) + L(D(H(x)), fake)``
:func:`admd_hallucination_loss`        thesis Eq. 4.2, H's side with label flipping: ``L(D(H(x)), y)``
:func:`feature_matching_loss`          MARS (Crasto et al.): ``Σ_layers MSE(student map, teacher map)``
=====================================  =====================================================================

Every function averages over the batch (the ``(1/n) Σ_i`` of thesis Eq. 3.4) unless its docstring says otherwise.
Teacher inputs (soft targets, teacher maps, the winner of DMCL) are detached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kd_loss",
    "soft_cross_entropy",
    "generalized_distillation",
    "hallucination_loss",
    "HALL_REDUCTIONS",
    "modality_distillation_loss",
    "kl_to_uniform",
    "mcl_loss",
    "MCL_MODES",
    "admd_targets",
    "admd_discriminator_loss",
    "admd_hallucination_loss",
    "feature_matching_loss",
]


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _check_lam(lam: float) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam (λ) must lie in [0, 1], got {lam}")


def _f32(logits: Tensor) -> Tensor:
    """Half-precision logits as float32 (others unchanged): the softmaxes of the losses are computed in float32 under
    any autocast — CUDA's autocast does so for float16, the CPU's bfloat16 autocast leaves softmax in bfloat16, whose
    8-bit mantissa makes a small KL negative."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


# ------------------------------------------------------------------------------------------------ logit distillation
def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al.'s knowledge distillation: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch
    (``batchmean``). The T² keeps the gradient's scale independent of T. The teacher is not detached here (the
    callers' teachers are frozen)."""
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    log_ps = F.log_softmax(_f32(student_logits) / temperature, dim=1)
    log_pt = F.log_softmax(_f32(teacher_logits) / temperature, dim=1)
    return temperature**2 * F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)


def _soft_ce_per_sample(
    student_logits: Tensor, target_logits: Tensor, temperature: float, student_temperature: bool
) -> Tensor:
    t_s = temperature if student_temperature else 1.0
    p_t = F.softmax(_f32(target_logits.detach()) / temperature, dim=-1)
    return -(p_t * F.log_softmax(_f32(student_logits) / t_s, dim=-1)).sum(-1)


def soft_cross_entropy(
    student_logits: Tensor, target_logits: Tensor, temperature: float, *, student_temperature: bool = True
) -> Tensor:
    """The soft term of thesis Eq. 3.5 / 5.3: ``ℓ(s, σ(f(x)/T'))`` with the soft targets ``s = σ(f_t(x)/T)``
    (Eq. 3.6 / 5.2) — ``−Σ_k s_k log softmax(f(x)/T')_k``, averaged over the batch.

    ``T' = T`` (``student_temperature=True``, the default: Algorithm 1 softens the student at T too, line 29) or 1.
    The target is detached (the teacher receives no gradient from this loss)."""
    _check_temperature(temperature)
    if student_logits.shape != target_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and target logits "
            f"{tuple(target_logits.shape)} must be equal (B, K) shapes"
        )
    return _soft_ce_per_sample(student_logits, target_logits, temperature, student_temperature).mean()


def generalized_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    lam: float = 0.5,
    temperature: float = 10.0,
    t_squared: bool = False,
    student_temperature: bool = True,
) -> dict[str, Tensor]:
    """Generalized distillation (Lopez-Paz et al.), thesis Eq. 3.5 (= Eq. 5.3):
    ``L_GD = (1−λ) ℓ(y, σ(f(x))) + λ [T²] ℓ(s, σ(f(x)/T'))`` with ``s = σ(f_t(x)/T)``.

    Returns the two weighted terms ``{"hard": (1−λ)·CE, "soft": λ·softCE}`` (batch means; their sum is L_GD).
    ``t_squared`` multiplies the soft term by T² (Hinton's gradient-scale correction; not in the equation);
    ``student_temperature`` softens the student at T (default) or leaves it at 1.
    """
    _check_lam(lam)
    soft = soft_cross_entropy(student_logits, teacher_logits, temperature, student_temperature=student_temperature)
    if t_squared:
        soft = soft * temperature**2
    return {"hard": (1.0 - lam) * F.cross_entropy(student_logits, labels), "soft": lam * soft}


# ------------------------------------------------------------------------------------------------ feature losses
#: Reductions of :func:`hallucination_loss` over (B, ...) squared differences.
HALL_REDUCTIONS = ("sample_sum", "mean", "sum")


def hallucination_loss(student_map: Tensor, teacher_map: Tensor, reduction: str = "sample_sum") -> Tensor:
    """The hallucination loss, thesis Eq. 3.3: ``‖σ(A_d) − σ(A_h)‖²₂`` between the teacher's (depth) and the
    student's (hallucination) activations of one layer, the teacher map detached.

    ``reduction``: ``"sample_sum"`` (default, the equation): the squared L2 norm of each sample's map, averaged over
    the batch; ``"mean"``: the mean over every element (divides the equation by C·H·W); ``"sum"``: the sum over
    the batch (the reference code, which then scaled it by 0.01 — ``hall_scale``). The layer weight λ_l of
    Eq. 3.3 is the caller's.
    """
    if student_map.shape != teacher_map.shape:
        raise ValueError(
            f"hallucination loss: student map {tuple(student_map.shape)} and teacher map "
            f"{tuple(teacher_map.shape)} differ in shape"
        )
    if reduction not in HALL_REDUCTIONS:
        raise ValueError(f"hall_reduction must be one of {HALL_REDUCTIONS}, got {reduction!r}")
    sq = (torch.sigmoid(student_map) - torch.sigmoid(teacher_map.detach())).pow(2)
    if reduction == "mean":
        return sq.mean()
    if reduction == "sum":
        return sq.sum()
    return sq.flatten(1).sum(1).mean()


def modality_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    student_maps: Sequence[Tensor],
    teacher_maps: Sequence[Tensor],
    *,
    alpha: float = 0.5,
    lam: float = 0.5,
    temperature: float = 10.0,
    t_squared: bool = False,
    student_temperature: bool = True,
    hall_reduction: str = "sample_sum",
    hall_scale: float = 1.0,
) -> dict[str, Tensor]:
    """The combined loss of thesis Eq. 3.7: ``L = (1−α) L_GD + α L_hall`` (L_GD: Eq. 3.5,
    :func:`generalized_distillation`; L_hall: Eq. 3.3, :func:`hallucination_loss` summed over the paired layers).

    Returns the weighted terms ``loss_gd_hard``, ``loss_gd_soft`` (absent when α = 1) and ``loss_hall`` (absent
    when α = 0); their sum is L. ``hall_scale`` multiplies L_hall (1 = the equation; the reference code's 0.01).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if len(student_maps) != len(teacher_maps):
        raise ValueError(f"{len(student_maps)} student maps and {len(teacher_maps)} teacher maps do not pair up")
    out: dict[str, Tensor] = {}
    if alpha < 1.0:
        gd = generalized_distillation(
            student_logits,
            teacher_logits,
            labels,
            lam=lam,
            temperature=temperature,
            t_squared=t_squared,
            student_temperature=student_temperature,
        )
        out["loss_gd_hard"] = (1.0 - alpha) * gd["hard"]
        out["loss_gd_soft"] = (1.0 - alpha) * gd["soft"]
    if alpha > 0.0:
        if not student_maps:
            raise ValueError("alpha > 0 asks for the hallucination loss but no maps were given")
        hall = sum(hallucination_loss(s, t, hall_reduction) for s, t in zip(student_maps, teacher_maps, strict=True))
        out["loss_hall"] = alpha * float(hall_scale) * hall
    return out


def feature_matching_loss(student_maps: Sequence[Tensor], teacher_maps: Sequence[Tensor]) -> Tensor:
    """MARS (Crasto et al.): ``Σ_layers MSE(student map, teacher map)`` (each MSE a mean over all elements)."""
    if len(student_maps) != len(teacher_maps) or not student_maps:
        raise ValueError(
            f"feature matching needs paired maps, got {len(student_maps)} student and {len(teacher_maps)} teacher maps"
        )
    total = student_maps[0].new_zeros(())
    for s, t in zip(student_maps, teacher_maps, strict=True):
        if s.shape != t.shape:
            raise ValueError(
                f"feature matching needs equal shapes: student {tuple(s.shape)} vs teacher {tuple(t.shape)}"
            )
        total = total + F.mse_loss(s, t)
    return total


# ------------------------------------------------------------------------------------------------ MCL family
MCL_MODES = ("independent", "smcl", "cmcl", "dmcl", "random")


def kl_to_uniform(logits: Tensor) -> Tensor:
    """CMCL's confidence loss ``KL(U ‖ softmax(logits))`` over the last dim: ``mean_k(−log p_k) − log K``."""
    k = logits.shape[-1]
    return -F.log_softmax(_f32(logits), dim=-1).mean(-1) - math.log(k)


def mcl_loss(
    logits: Tensor,
    labels: Tensor,
    mode: str,
    *,
    lam: float = 0.5,
    temperature: float = 2.0,
    t_squared: bool = False,
    beta: float = 0.75,
    winner_ce: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """The loss terms of an MCL method over M networks and the per-sample winners (B,) int64.

    ``logits``: (M, B, K), network m's logits for sample i; ``labels``: (B,) int64. With ``ce[m, i] = CE(y_i,
    z_m,i)`` and the winner ``w_i = argmin_m ce[m, i]`` (thesis Eq. 5.1 / Algorithm 1):

    * ``independent`` — every network its CE: ``loss_ce = (1/B) Σ_i Σ_m ce[m, i]``;
    * ``smcl`` — only the winner gets its CE (``loss_ce_winner``);
    * ``cmcl`` — Confident MCL (Lee et al.): winner by ``ce − β·KL(U‖p_m)``, the winner gets its CE, the losers
      ``β·KL(U‖p_m)`` (``loss_uniform``);
    * ``dmcl`` — thesis Eq. 5.3: the winner gets ``CE(y, z_w)`` (``loss_ce_winner``, at T = 1); each loser m gets
      ``(1−λ)·CE(y, z_m)`` (``loss_gd_hard``) ``+ λ·[T²]·CE(softmax(z_w/T), softmax(z_m/T))`` (``loss_gd_soft``)
      towards the *detached* winner; λ = 0.5, T = 2 by default (the thesis uses λ ∈ {1, 0.5}, T ∈ {2, 5}); no T²
      unless ``t_squared``;
    * ``random`` — DMCL with a uniformly random teacher per sample (``generator``, default torch's global RNG).

    Each term is ``(1/B) Σ_i Σ_m mask[m, i]·ℓ[m, i]`` (summed over networks, averaged over the batch);
    ``winner_ce`` weighs the winner's CE (and the independent CE).
    """
    m, b, _ = _check_mcl_inputs(logits, labels, mode, temperature, lam)
    ce = F.cross_entropy(logits.reshape(m * b, -1), labels.repeat(m), reduction="none").view(m, b)
    kl_u = kl_to_uniform(logits) if mode == "cmcl" else None
    winners = _mcl_winners(ce if kl_u is None else ce - beta * kl_u, mode, generator)
    win = F.one_hot(winners, m).T.to(logits.dtype)  # (M, B)
    lose = 1.0 - win
    if mode == "independent":
        return {"loss_ce": winner_ce * ce.sum(0).mean()}, winners
    out: dict[str, Tensor] = {"loss_ce_winner": winner_ce * _batch_term(win, ce)}
    if mode == "cmcl":
        out["loss_uniform"] = beta * _batch_term(lose, kl_u)
    elif mode in ("dmcl", "random"):
        if lam < 1.0:
            out["loss_gd_hard"] = (1.0 - lam) * _batch_term(lose, ce)
        teacher = logits.detach()[winners, torch.arange(b, device=logits.device)]  # (B, K)
        soft = _soft_ce_per_sample(logits, teacher.unsqueeze(0).expand_as(logits), temperature, True)  # (M, B)
        if t_squared:
            soft = soft * temperature**2
        out["loss_gd_soft"] = lam * _batch_term(lose, soft)
    return out, winners


def _check_mcl_inputs(
    logits: Tensor, labels: Tensor, mode: str, temperature: float, lam: float
) -> tuple[int, int, int]:
    """(M, B, K) of valid :func:`mcl_loss` inputs; ValueError naming the argument otherwise."""
    if mode not in MCL_MODES:
        raise ValueError(f"MCL mode must be one of {MCL_MODES}, got {mode!r}")
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        raise ValueError(f"logits must be (M, B, K), got {getattr(logits, 'shape', type(logits))}")
    m, b, k = logits.shape
    if m < 1 or b < 1:
        raise ValueError(f"logits (M, B, K) = {tuple(logits.shape)}: need at least one network and one sample")
    if labels.shape != (b,) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be an integer tensor of shape ({b},), got {tuple(labels.shape)} {labels.dtype}")
    _check_temperature(temperature)
    _check_lam(lam)
    return m, b, k


def _mcl_winners(crit: Tensor, mode: str, generator: torch.Generator | None) -> Tensor:
    """Per-sample winners (B,): the argmin over networks of ``crit`` (M, B), or uniformly random for ``random``
    (drawn on the CPU from ``generator``, so a seed gives the same winners on any device)."""
    m, b = crit.shape
    if mode == "random":
        return torch.randint(m, (b,), generator=generator, device="cpu").to(crit.device, non_blocking=True)
    return crit.detach().argmin(0)


def _batch_term(mask: Tensor, per: Tensor) -> Tensor:
    """``(1/B) Σ_i Σ_m mask[m, i]·per[m, i]``: summed over networks, averaged over the batch."""
    return (mask * per).sum(0).mean()


# ------------------------------------------------------------------------------------------------ ADMD
def admd_targets(labels: Tensor, num_classes: int, naive: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Targets of D's real samples, D's fake samples and H's samples (label flipping), thesis Eq. 4.1.

    Class-aware (ADMD): real depth features → their class y, hallucinated → the extra class C ("fake"), H wants
    y. Naive binary baseline: real → 0, fake → 1, H wants 0.
    """
    if naive:
        zeros = torch.zeros_like(labels)
        return zeros, torch.ones_like(labels), zeros
    return labels, torch.full_like(labels, num_classes), labels


def admd_discriminator_loss(
    d_real_logits: Tensor, d_fake_logits: Tensor, real_targets: Tensor, fake_targets: Tensor
) -> Tensor:
    """D's side of thesis Eq. 4.2: ``L(D(E_d(x)||y_t), ŷ) + L(D(H(x)||y_t), ŷ)`` — softmax cross-entropy of D's
    outputs on the real (depth) features and on the *detached* hallucinated features against the Eq. 4.1
    targets (each a mean over the frames of the batch)."""
    return F.cross_entropy(d_real_logits, real_targets) + F.cross_entropy(d_fake_logits, fake_targets)


def admd_hallucination_loss(d_fake_logits: Tensor, flipped_targets: Tensor) -> Tensor:
    """H's side of thesis Eq. 4.2 with the label-flipping trick: ``L(D(H(x)||y_t), y)`` — D (its parameters
    detached by the caller) should assign the hallucinated features to the true class (naive: to "real")."""
    return F.cross_entropy(d_fake_logits, flipped_targets)
