"""The model registry: ``register_model``, ``build_model``, ``list_models``, ``derive_student``."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..utils.registry import check_name, register_unique
from .inputs import resolve_modalities
from .pretrained import load_pretrained

ModelBuilder = Callable[..., nn.Module]
StudentRule = Callable[[dict[str, Any], tuple[str, ...]], dict[str, Any]]

_MODELS: dict[str, ModelBuilder] = {}
_STUDENT_RULES: dict[str, StudentRule] = {}


def register_model(name: str, *, student_rule: StudentRule | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a model builder (a class or function) under ``name``.

    The builder is called as ``builder(modalities=tuple, num_classes=int, in_channels=dict|None, **kwargs)`` and
    must return an ``nn.Module`` with the attributes of the model contract (``modalities``, ``feature_paths``,
    ``classifier``); ``build_model`` adds ``config``. ``student_rule(config, kept_modalities) -> config`` may adapt
    the rest of the config when ``derive_student`` removes branches (e.g. turn off connections from a removed
    stream); by default only ``modalities``, ``in_channels`` and ``streams`` are filtered.
    """
    check_name("model", name)

    def deco(builder: ModelBuilder) -> ModelBuilder:
        register_unique(_MODELS, "model", name, builder, builder)
        if student_rule is not None:
            _STUDENT_RULES[name] = student_rule
        return builder

    return deco


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)


def build_model(
    name: str,
    *,
    modalities: Sequence[str],
    num_classes: int,
    in_channels: Mapping[str, int] | None = None,
    seed: int | None = None,
    pretrained: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the registered model ``name``.

    ``modalities``: the input keys the model reads; ``num_classes``: K of the (B, K) logits; ``in_channels``:
    channels (vector length for vector models) per modality, defaulting to rgb 3, depth 1, ir 1, flow 2.
    ``seed``: if given, the weights are drawn from ``torch.manual_seed(seed)`` without touching the global RNG
    (so the same seed gives the same weights); otherwise from the global RNG. ``pretrained``: None, "imagenet",
    "kinetics400" or a weight file path, applied after the fresh initialisation (:mod:`mmh.models.pretrained`;
    nothing is downloaded). Other kwargs go to the builder.
    The returned model carries ``config`` such that ``build_model(**model.config)`` rebuilds its architecture;
    ``config`` leaves ``pretrained`` out (a rebuild before loading a ``model.pt`` never needs the weight file), which
    ``model.pretrained_from`` and ``model.pretrained_report`` record instead.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {list_models()}")
    mods = resolve_modalities(modalities)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if in_channels is not None and not isinstance(in_channels, Mapping):
        raise TypeError(f"in_channels must be a mapping {{modality: channels}}, got {type(in_channels).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    builder = _MODELS[name]
    kw = copy.deepcopy(kwargs)
    if seed is None:
        model = builder(modalities=mods, num_classes=num_classes, in_channels=in_channels, **kw)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = builder(modalities=mods, num_classes=num_classes, in_channels=in_channels, **kw)
    for attr in ("modalities", "feature_paths", "classifier"):
        if not hasattr(model, attr):
            raise TypeError(
                f"model builder {name!r} returned a {type(model).__name__} without the contract attribute {attr!r}"
            )
    config: dict[str, Any] = {
        "name": name,
        "modalities": list(mods),
        "num_classes": num_classes,
        "in_channels": dict(in_channels) if in_channels is not None else None,
    }
    if seed is not None:
        config["seed"] = seed
    config.update(copy.deepcopy(kwargs))
    model.config = config
    if pretrained is not None:
        load_pretrained(model, pretrained)
    return model


def derive_student(
    teacher: nn.Module, modalities: Sequence[str], *, pretrained: str | os.PathLike | None = None
) -> nn.Module:
    """The teacher's architecture rebuilt from ``teacher.config`` with only ``modalities`` (a subset).

    The branches (stems / streams) of the missing modalities are removed; the weights are fresh (drawn like
    ``build_model`` draws them: from ``config["seed"]`` if the teacher was built with a seed, else the global RNG),
    then initialised from ``pretrained`` if given (not from the teacher's: ``teacher.config`` does not record it).
    """
    config = getattr(teacher, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError("teacher has no config dict (build it with mmh.models.build_model)")
    kept = resolve_modalities(modalities)
    have = tuple(config["modalities"])
    missing = [m for m in kept if m not in have]
    if missing:
        raise ValueError(f"student modalities {missing} are not among the teacher's modalities {list(have)}")
    cfg = copy.deepcopy(config)
    cfg["modalities"] = [m for m in have if m in kept]
    if cfg.get("in_channels") is not None:
        cfg["in_channels"] = {m: c for m, c in cfg["in_channels"].items() if m in kept}
    if cfg.get("streams") is not None:
        cfg["streams"] = {s: m for s, m in cfg["streams"].items() if m in kept}
    rule = _STUDENT_RULES.get(cfg["name"])
    if rule is not None:
        cfg = rule(cfg, tuple(cfg["modalities"]))
    name = cfg.pop("name")
    return build_model(name, pretrained=pretrained, **cfg)
