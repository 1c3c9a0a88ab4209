"""What a method is: a recipe of :class:`Stage` s, each building a :class:`StageModule` that one trainer trains.

* :class:`StageModule` (like mdistiller's Distiller): ``forward(batch) -> (logits, {"loss_ce": ..., ...})`` with every
  loss term already weighted (the trainer sums them), ``deployable()`` — the network handed to the next stage and
  evaluated — and frozen sub-networks (kept in eval mode, no gradients, not checkpointed).
* :class:`Stage`: name, kind, which earlier stages' networks it receives, which ``stages.<section>`` of the config
  holds its training overrides, which config entries its result depends on (for caching), and its builder.
* :class:`StageContext`: what a builder gets — the config, the dataset facts (classes, channels, frames) and the
  trained networks of its input stages.

Methods know nothing of the trainer: they build modules and compute losses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import loss_defaults
from ..models import build_model, derive_student
from ..models.pretrained import load_pretrained
from ..train.stage import Batch, LossDict, StageModule

__all__ = [
    "Supervised",
    "Distiller",
    "Stage",
    "StageContext",
    "freeze",
    "cross_entropy_term",
]


def freeze(module: nn.Module) -> nn.Module:
    """Turn off gradients of every parameter of ``module`` and put it in eval mode (returns it)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def channels_last_(module: nn.Module) -> nn.Module:
    """Put the 4-D (2-D convolution) weights of ``module`` in channels_last and the 5-D ones in channels_last_3d, in
    place (the layouts cuDNN's convolutions prefer; the values are unchanged). Returns ``module``."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    for t in [*module.parameters(), *module.buffers()]:
        if t.dim() in formats:
            t.data = t.data.contiguous(memory_format=formats[t.dim()])
    return module


def cross_entropy_term(logits: Tensor, batch: Batch, weight: float) -> Tensor:
    """``weight * CE(logits, batch["label"])``; KeyError/ValueError naming the problem."""
    if "label" not in batch:
        raise KeyError("batch has no 'label' key (needed by the cross-entropy loss)")
    labels = batch["label"]
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"batch['label'] must be (B,) with B = {logits.shape[0]}, got {tuple(labels.shape)}")
    return float(weight) * F.cross_entropy(logits, labels)


class Supervised(StageModule):
    """Cross-entropy training of one network (the multimodal teacher, the single-modality baseline, fine-tuning).

    ``train_only``: if given, only parameters whose names start with one of these prefixes are trained (e.g.
    ``("classifier",)`` to fine-tune the classifier alone); sub-modules without trainable parameters stay in eval
    mode, so their batch-norm statistics remain those of the received network.
    """

    def __init__(self, model: nn.Module, ce_weight: float = 1.0, train_only: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.ce_weight = float(ce_weight)
        self.train_only = tuple(train_only) if train_only else None
        if self.train_only:
            names = [n for n, _ in model.named_parameters()]
            if not any(n.startswith(self.train_only) for n in names):
                raise ValueError(f"train_only prefixes {self.train_only} match no parameter of the model")
            for n, p in model.named_parameters():
                p.requires_grad_(n.startswith(self.train_only))

    def train(self, mode: bool = True) -> Supervised:
        super().train(mode)
        if self.train_only and mode:
            for module in self.model.modules():
                if not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        logits = self.model(batch)
        return logits, {"loss_ce": cross_entropy_term(logits, batch, self.ce_weight)}

    def deployable(self) -> nn.Module:
        return self.model


class Distiller(StageModule):
    """A student trained with a frozen teacher: the student's CE plus :meth:`distill_losses`.

    The teacher runs under ``torch.no_grad`` in eval mode; subclasses set ``s_paths`` / ``t_paths`` (dotted module
    paths of student and teacher whose outputs the loss needs, paired in order), taken with
    :class:`mmh.models.FeatureExtractor`.
    """

    frozen = ("teacher",)

    def __init__(self, student: nn.Module, teacher: nn.Module, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher)
        self.ce_weight = float(ce_weight)
        self.s_paths: list[str] = []
        self.t_paths: list[str] = []

    def distill_losses(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        student_feats: Mapping[str, Tensor],
        teacher_feats: Mapping[str, Tensor],
        batch: Batch,
    ) -> LossDict:  # pragma: no cover
        """The weighted distillation terms."""
        raise NotImplementedError

    def cached_teacher(self) -> tuple[nn.Module, list[str]]:
        return self.teacher, list(dict.fromkeys(self.t_paths))

    def teacher_outputs(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The frozen teacher's logits and hooked maps (``t_paths``), from :attr:`teacher_cache` when it holds the
        batch's samples (``train.teacher_cache``), else computed (and stored in the cache, if any).

        On CUDA the teacher runs under ``torch.inference_mode`` (no autograd bookkeeping; its outputs are cloned
        into normal tensors for the loss) with channels_last weights (the layout cuDNN's convolutions prefer), under
        the trainer's autocast dtype like the rest of the step."""
        from ..models import FeatureExtractor  # local: keeps the import graph of this module light

        cache = self.teacher_cache
        paths = list(dict.fromkeys(self.t_paths))
        if cache is not None:
            device = next((v.device for v in batch.values() if isinstance(v, Tensor)), torch.device("cpu"))
            hit = cache.lookup(device)
            if hit is not None:
                return hit["logits"], {p: hit[f"feat:{p}"] for p in paths}
        cuda = any(isinstance(v, Tensor) and v.is_cuda for v in batch.values())
        if cuda and not getattr(self, "_channels_last", False):
            channels_last_(self.teacher)
            self._channels_last = True
        grad_off = torch.inference_mode() if cuda else torch.no_grad()
        with grad_off, FeatureExtractor(self.teacher, paths, detach=True) as extractor:
            t_logits = self.teacher(batch)
        feats = {p: extractor[p] for p in paths}
        if cuda:  # inference tensors cannot be saved for the student's backward
            t_logits, feats = t_logits.clone(), {p: f.clone() for p, f in feats.items()}
        if cache is not None:
            cache.store({"logits": t_logits, **{f"feat:{p}": f for p, f in feats.items()}})
        return t_logits, feats

    def forward(self, batch: Batch) -> tuple[Tensor, LossDict]:
        from ..models import FeatureExtractor  # local: keeps the import graph of this module light

        t_logits, t_feats = self.teacher_outputs(batch)
        with FeatureExtractor(self.student, self.s_paths) as s_feats:
            s_logits = self.student(batch)
        losses = {"loss_ce": cross_entropy_term(s_logits, batch, self.ce_weight)} if self.ce_weight else {}
        losses.update(self.distill_losses(s_logits, t_logits, s_feats, t_feats, batch))
        return s_logits, losses

    def deployable(self) -> nn.Module:
        return self.student


@dataclass
class StageContext:
    """What a stage builder receives.

    ``cfg``: the resolved config; ``num_classes``; ``in_channels`` per modality; ``model_kwargs``: data-derived
    model kwargs (e.g. ``num_frames`` for clips) merged under ``cfg["model"]["kwargs"]``; ``inputs``: the trained
    networks of the stage's input stages, by stage name (the builder may modify them: they are copies).
    """

    cfg: dict[str, Any]
    num_classes: int
    in_channels: dict[str, int]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, nn.Module] = field(default_factory=dict)

    def modalities(self, role: str) -> list[str]:
        """The modality list of ``role`` ("teacher", "student", ...) from ``cfg["modalities"]``."""
        mods = self.cfg["modalities"].get(role)
        if not mods:
            raise KeyError(f"config has no modalities for role {role!r} (set modalities.{role})")
        return list(mods)

    def build_model(self, role: str, **overrides: Any) -> nn.Module:
        """A fresh ``cfg.model`` network reading the modalities of ``role``, weights drawn from ``cfg.seed``, then
        initialised from ``cfg.model.pretrained`` if set; ``overrides`` replace model kwargs (e.g. ``streams``,
        ``connections``)."""
        return self._pretrained(self._template(role, **overrides))

    def _template(self, role: str, **overrides: Any) -> nn.Module:
        mods = self.modalities(role)
        kwargs = {**self.model_kwargs, **self.cfg["model"].get("kwargs", {}), **overrides}
        return build_model(
            self.cfg["model"]["name"],
            modalities=mods,
            num_classes=self.num_classes,
            in_channels={m: self.in_channels[m] for m in mods if m in self.in_channels} or None,
            seed=int(self.cfg["seed"]),
            **kwargs,
        )

    def _pretrained(self, model: nn.Module) -> nn.Module:
        """``model`` initialised from ``cfg.model.pretrained`` (errors name that key); unchanged when it is unset."""
        spec = self.cfg["model"].get("pretrained")
        if spec is not None:
            load_pretrained(model, spec, what="model.pretrained")
        return model

    def build_student(self, teacher_role: str = "teacher", student_role: str = "student") -> nn.Module:
        """The student architecture: the ``teacher_role`` network without the missing modalities' branches,
        initialised from ``cfg.model.pretrained`` if set.

        Built from a template (not from a trained teacher), so a baseline and a distilled student of the same seed
        start from the same weights.
        """
        return self._pretrained(derive_student(self._template(teacher_role), self.modalities(student_role)))

    def input(self, name: str) -> nn.Module:
        """The trained network of input stage ``name`` (KeyError naming it if the recipe did not declare it)."""
        if name not in self.inputs:
            raise KeyError(f"stage input {name!r} is not available (have {sorted(self.inputs)})")
        return self.inputs[name]

    def loss_cfg(self, name: str) -> dict[str, Any]:
        """``cfg["loss"][name]`` over the defaults its method declared (a copy): a config resolved by
        :func:`mmh.config.load_config` already holds them all; a hand-built one may give a partial section (unknown
        keys are a KeyError naming them). KeyError when neither the config nor a registered method has the section
        (the declared defaults: :func:`mmh.config.loss_defaults`)."""
        declared = loss_defaults().get(name)
        section = (self.cfg.get("loss") or {}).get(name)
        if section is not None and not isinstance(section, Mapping):
            raise KeyError(f"config section loss.{name} must be a mapping, got {type(section).__name__}")
        if declared is None:
            if section is None:
                raise KeyError(f"config has no section loss.{name} and no registered method declares it")
            return copy.deepcopy(dict(section))
        unknown = sorted(set(section or {}) - set(declared))
        if unknown:
            raise KeyError(f"loss.{name}: unknown keys {unknown}; known: {sorted(declared)}")
        return {**copy.deepcopy(declared), **copy.deepcopy(dict(section or {}))}


StageBuilder = Callable[[StageContext], StageModule]


@dataclass(frozen=True)
class Stage:
    """One step of a method's recipe.

    ``name``: unique in the recipe; later stages refer to it in ``inputs``. ``kind``: what the stage computes (e.g.
    ``"teacher"``, ``"student/rad"``); together with ``depends_on`` (dotted config keys its result depends on beyond
    the common ones: seed, dataset, model, modalities, its training settings) and its inputs' keys it forms the cache
    key, so a trained teacher is reused by every method. ``section``: the ``stages.<section>`` entry of the config
    with its training overrides (and an optional ``checkpoint`` path to load instead of training). ``trains``:
    False for stages that only assemble their inputs (ensembles). ``artifacts``: names of the extra artifacts its
    module publishes (:meth:`mmh.train.StageModule.artifacts`), saved and cached beside ``model.pt``.
    """

    name: str
    kind: str
    build: StageBuilder
    inputs: tuple[str, ...] = ()
    section: str = "student"
    depends_on: tuple[str, ...] = ()
    trains: bool = True
    artifacts: tuple[str, ...] = ()
