"""Pieces shared by the thesis methods: method settings, stream surgery, distillation losses, per-stream CE.

* :func:`copy_stream` — initialise one stream of a multi-stream net from another's (the hallucination stream from
  the depth stream); a first convolution with a different number of input channels is *inflated*: the source
  kernel of each input plane is spread evenly over the corresponding target planes (time folded into channels
  keeps its frame order), so a constant input gives the same response.
* :func:`soft_cross_entropy`, :func:`generalized_distillation` (thesis Eq. 3.5/5.3), :func:`hallucination_loss`
  (thesis Eq. 3.3) — re-exported from :mod:`mmh.losses`, where every loss of the methods is written.
* :class:`StreamsCE` — every stream of a late-fusion net trained with its own CE (thesis ch. 3 step 1: the
  streams alone; with no cross-stream connection the sum of CEs gives each stream exactly its own gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...losses import HALL_REDUCTIONS, generalized_distillation, hallucination_loss, soft_cross_entropy
from ...train.stage import Batch, LossDict, StageModule
from ..base import cross_entropy_term

__all__ = [
    "copy_stream",
    "soft_cross_entropy",
    "generalized_distillation",
    "hallucination_loss",
    "StreamsCE",
    "stream_names",
    "freeze_parts",
    "HALL_REDUCTIONS",
]


def stream_names(model: nn.Module) -> list[str]:
    """Stream names of a late-fusion net (TypeError if ``model`` has no ``streams``)."""
    streams = getattr(model, "streams", None)
    if not isinstance(streams, nn.ModuleDict):
        raise TypeError(f"{type(model).__name__} is not a multi-stream network (no 'streams' ModuleDict)")
    return list(streams)


def _first_conv_inflate(src: Tensor, dst_shape: torch.Size) -> Tensor:
    """Spread a conv kernel over more input planes: (O, Cs, k, k) -> (O, Cd, k, k), Cd a multiple r of Cs; target
    plane j takes source plane ``j // r`` divided by r. With time folded into channels (plane t*C + c) this maps
    frame t of a 1-channel source onto the C planes of frame t of the target."""
    cs, cd = src.shape[1], dst_shape[1]
    if src.shape[0] != dst_shape[0] or src.shape[2:] != dst_shape[2:] or cd % cs:
        raise ValueError(f"cannot inflate a kernel of shape {tuple(src.shape)} to {tuple(dst_shape)}")
    r = cd // cs
    return src.repeat_interleave(r, dim=1) / r


@torch.no_grad()
def copy_stream(dst: nn.Module, dst_stream: str, src: nn.Module, src_stream: str, *, head: bool = True) -> None:
    """Copy stream ``src_stream`` of ``src`` (and its head if ``head``) into stream ``dst_stream`` of ``dst``.

    Tensors of equal shape are copied; a 4-D weight whose input-channel count differs by an integer factor (the
    first conv when the input modality changes, e.g. depth 1 channel -> RGB 3 channels, per frame) is inflated
    (see the module docstring). Anything else that differs is a ValueError naming the parameter.
    """
    pairs = [(dst.streams[dst_stream], src.streams[src_stream])]
    if head:
        pairs.append((dst.heads[dst_stream], src.heads[src_stream]))
    for d_mod, s_mod in pairs:
        s_state = s_mod.state_dict()
        d_state = d_mod.state_dict()
        if s_state.keys() != d_state.keys():
            raise ValueError(
                f"streams {src_stream!r} and {dst_stream!r} have different layers: "
                f"{sorted(set(s_state) ^ set(d_state))[:5]}"
            )
        new = {}
        for k, v in s_state.items():
            want = d_state[k].shape
            if v.shape == want:
                new[k] = v.clone()
            elif v.dim() == 4 and v.shape[0] == want[0] and v.shape[2:] == want[2:]:
                new[k] = _first_conv_inflate(v, want)
            else:
                raise ValueError(f"cannot copy {src_stream}.{k} {tuple(v.shape)} into {dst_stream}.{k} {tuple(want)}")
        d_mod.load_state_dict(new)


def freeze_parts(model: nn.Module, prefixes: tuple[str, ...]) -> list[nn.Module]:
    """Turn off gradients of the sub-modules of ``model`` named by ``prefixes`` (dotted paths); return them (the
    caller keeps them in eval mode). KeyError naming a path that does not exist."""
    mods = dict(model.named_modules())
    out = []
    for p in prefixes:
        if p not in mods:
            raise KeyError(f"{type(model).__name__} has no sub-module {p!r}")
        for prm in mods[p].parameters():
            prm.requires_grad_(False)
        out.append(mods[p])
    return out


class StreamsCE(StageModule):
    """Each stream of a late-fusion net trained with its own CE (``loss_ce/<stream>`` terms, weight ``ce``).

    ``fused`` > 0 adds that weight times the CE of the averaged logits. Deployable: the net.
    """

    def __init__(self, model: nn.Module, ce: float = 1.0, fused: float = 0.0) -> None:
        super().__init__()
        stream_names(model)
        self.model, self.ce, self.fused = model, float(ce), float(fused)

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        logits, per = self.model.forward_all(batch)
        losses = {f"loss_ce/{s}": cross_entropy_term(z, batch, self.ce) for s, z in per.items()}
        if self.fused:
            losses["loss_ce/fused"] = cross_entropy_term(logits, batch, self.fused)
        return logits, losses

    def deployable(self) -> nn.Module:
        return self.model
