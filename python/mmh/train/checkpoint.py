"""Checkpoints (resumable training state) and model artifacts (a trained network that can be rebuilt anywhere).

* A **checkpoint** (``latest.pt``, ``best.pt`` in a stage folder) holds the trainable state of the stage module,
  optimizer, scheduler, grad scaler, step/epoch, the running epoch sums, the metrics history, the RNG states and the
  config — everything :class:`mmh.train.Trainer` needs to continue a killed run exactly.
* An **artifact** (``model.pt``) holds one network: ``{"config": model.config, "state_dict": ...}``, rebuilt by
  :func:`mmh.models.build_model` (or, for a :class:`mmh.methods.LogitEnsemble`, member by member).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..methods.ensemble import LogitEnsemble
from ..models import build_model
from ..utils.io import atomic_torch_save

__all__ = ["save_checkpoint", "load_checkpoint", "save_model", "load_model", "model_payload", "model_from_payload"]


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint atomically (a kill during the write leaves the previous file intact)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint on CPU; FileNotFoundError / ValueError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ValueError(f"corrupt or unreadable checkpoint {p}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {p} does not hold a dict")
    return state


def model_payload(model: nn.Module) -> dict[str, Any]:
    """``{"config", "state_dict"}`` of a network built by ``build_model`` (or a LogitEnsemble of such)."""
    if isinstance(model, LogitEnsemble):
        return {"ensemble": {name: model_payload(m) for name, m in model.members.items()}}
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"cannot save {type(model).__name__} as an artifact: it has no build_model config "
                         f"(build it with mmh.models.build_model)")
    return {"config": dict(config), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def model_from_payload(payload: dict[str, Any], source: str = "<payload>") -> nn.Module:
    """Inverse of :func:`model_payload`."""
    if "ensemble" in payload:
        return LogitEnsemble({k: model_from_payload(v, source) for k, v in payload["ensemble"].items()})
    if "config" not in payload or "state_dict" not in payload:
        raise ValueError(f"model artifact {source} lacks 'config' or 'state_dict'")
    cfg = dict(payload["config"])
    name = cfg.pop("name")
    model = build_model(name, **cfg)
    model.load_state_dict(payload["state_dict"])
    return model


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a model artifact atomically."""
    atomic_torch_save(model_payload(model), path)


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild the network saved by :func:`save_model` (FileNotFoundError / ValueError naming the file)."""
    return model_from_payload(load_checkpoint(path), str(path))
