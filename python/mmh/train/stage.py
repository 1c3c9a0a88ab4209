"""The stage protocol: what the trainer trains and a method's stage builds.

A :class:`StageModule` (like mdistiller's Distiller) maps a batch to ``(logits, {"loss_ce": ..., ...})`` with every
loss term already weighted (the trainer sums them), names its frozen sub-networks (eval mode, no gradients, not
checkpointed) and hands on :meth:`StageModule.deployable` — the network evaluated and given to later stages. The
trainer (:mod:`mmh.train.trainer`) runs any StageModule; the methods (:mod:`mmh.methods`) implement them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

__all__ = ["StageModule", "Batch", "LossDict"]

Batch = Mapping[str, Tensor]
LossDict = dict[str, Tensor]


class StageModule(nn.Module):
    """One stage's unit of training. Subclasses implement :meth:`forward` and set :attr:`frozen`.

    ``frozen``: names of sub-modules that are frozen (no gradients, always in eval mode even when the stage is in
    train mode, excluded from checkpoints since they come from an earlier stage).
    """

    frozen: tuple[str, ...] = ()
    #: A :class:`mmh.train.teacher_cache.TeacherCache` set by the trainer with ``train.teacher_cache`` (stages whose
    #: :meth:`cached_teacher` is not None read their teacher's outputs from it); None: the teacher runs every step.
    teacher_cache: Any = None

    def cached_teacher(self) -> tuple[nn.Module, list[str]] | None:
        """(frozen teacher, dotted paths of its hooked feature maps) when the stage can take its teacher's outputs
        from :attr:`teacher_cache`; None (the default): it cannot, and ``train.teacher_cache`` is refused."""
        return None

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:  # pragma: no cover - abstract
        """Training forward: (logits of the trained network, weighted loss terms)."""
        raise NotImplementedError

    def deployable(self) -> nn.Module:  # pragma: no cover - abstract
        """The network this stage produces (evaluated, and handed to later stages)."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float | Tensor]:
        """Numbers about the last training step that are not loss terms (e.g. RAD's region weights); the trainer
        averages them per epoch into ``metrics.csv``. Return 0-dim tensors (left on the device) rather than
        Python floats, which would read the device at every step. Default: none."""
        return {}

    def artifacts(self) -> dict[str, dict[str, Tensor]]:
        """Extra named artifacts the stage publishes besides :meth:`deployable` (e.g. ADMD's discriminator):
        ``{name: {key: tensor}}``, saved by the runner as ``<name>.pt`` beside ``model.pt`` (the stage's
        ``Stage.artifacts`` declares the names). Default: none."""
        return {}

    def predict(self, batch: Batch) -> Tensor:
        """Evaluation logits of :meth:`deployable`."""
        return self.deployable()(batch)

    def train(self, mode: bool = True) -> StageModule:
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (those with ``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the frozen sub-modules."""
        prefixes = tuple(f"{name}." for name in self.frozen)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(prefixes)}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Inverse of :meth:`trainable_state_dict` (RuntimeError naming any missing or unexpected key)."""
        prefixes = tuple(f"{name}." for name in self.frozen)
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(prefixes)]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"stage state mismatch: missing {missing}, unexpected {result.unexpected_keys}")
