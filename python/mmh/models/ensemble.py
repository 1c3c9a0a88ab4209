"""``LogitEnsemble``: the mean of named member networks' logits (the MMH "RAD+DAD" model).

Not built by :func:`mmh.models.build_model`: it is assembled from trained members. Its ``config`` is
``{"ensemble": {name: member.config}}``; :func:`ensemble_members` is the protocol by which the artifact code
(:mod:`mmh.train.checkpoint`: saved member by member) and the evaluation (each member's metrics and the oracle's)
recognise a network made of members, without naming this class.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["LogitEnsemble", "ensemble_members"]


class LogitEnsemble(nn.Module):
    """Mean of the members' logits; ``members`` named (``forward`` also works member by member via
    :meth:`member_logits`). ``config`` = ``{"ensemble": {name: member.config}}`` so it can be rebuilt."""

    def __init__(self, members: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("LogitEnsemble needs at least one member")
        self.members = nn.ModuleDict(dict(members))
        self.modalities = tuple(
            dict.fromkeys(m for net in self.members.values() for m in getattr(net, "modalities", ()))
        )
        self.config = {"ensemble": {k: getattr(v, "config", None) for k, v in self.members.items()}}

    def member_logits(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Logits of every member, by name."""
        return {name: net(batch) for name, net in self.members.items()}

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return torch.stack(list(self.member_logits(batch).values())).mean(0)


def ensemble_members(model: nn.Module) -> dict[str, nn.Module] | None:
    """The members of a logit ensemble by name (a network whose ``config`` is ``{"ensemble": ...}`` and which
    holds its networks in a ``members`` ModuleDict), or None for any other network."""
    config = getattr(model, "config", None)
    members = getattr(model, "members", None)
    if isinstance(config, dict) and "ensemble" in config and isinstance(members, nn.ModuleDict):
        return dict(members.items())
    return None
