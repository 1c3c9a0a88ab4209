"""Checkpoints (resumable training state) and model artifacts (a trained network that can be rebuilt anywhere).

* A **checkpoint** (``latest.pt``, ``best.pt`` in a stage folder) holds the trainable state of the stage module,
  optimizer, scheduler, grad scaler, step/epoch, the running epoch sums, the metrics history, the RNG states and the
  config — everything :class:`mmh.train.Trainer` needs to continue a killed run exactly.
* An **artifact** (``model.pt``, also the stage cache's ``<kind>-<hash>/model.pt``) holds one network:
  ``{"config": model.config, "state_dict": ...}``, rebuilt by :func:`mmh.models.build_model` (or, for a network
  made of members — :func:`mmh.models.ensemble_members`, e.g. a :class:`mmh.models.LogitEnsemble` —,
  ``{"ensemble": {name: artifact}}``, member by member).

Both are ``torch.save`` zip archives holding only tensors and plain containers (dict, list, tuple, str, int, float,
bool, None): the RNG states are stored as tensors (:func:`encode_rng_state`), never as pickled numpy / Python
objects. They are read by :func:`safe_load` with ``torch.load(weights_only=True)`` and no extra allowed globals, so
a shared run folder or cache cannot run code: a file that asks to import anything (a planted ``__reduce__``
payload, a numpy array, any class) is refused with :class:`UnsafeFileError` naming the file, before anything of it
is built. Malformed files (truncated, another format, missing keys, weights of another model) raise ``ValueError``
naming the file and what is wrong.

Nothing non-finite is written or silently reused: :func:`save_model` and :func:`save_tensors` refuse a state holding
NaN or inf, and :func:`load_model` refuses such a network (:class:`mmh.train.NonFiniteError` naming the file), so a
poisoned ``model.pt`` in a run folder or the stage cache is an error, not a teacher.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models import LogitEnsemble, build_model, ensemble_members
from ..utils.io import atomic_torch_save
from ..utils.safe_io import UnsafeFileError, safe_load
from .finite import check_finite

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "save_model",
    "load_model",
    "model_payload",
    "model_from_payload",
    "save_tensors",
    "load_tensors",
    "safe_load",
    "UnsafeFileError",
    "encode_rng_state",
    "decode_rng_state",
    "CHECKPOINT_KEYS",
]

#: Keys every trainer checkpoint holds (checked by :func:`load_checkpoint`).
CHECKPOINT_KEYS: tuple[str, ...] = (
    "stage",
    "optimizer",
    "scheduler",
    "scaler",
    "step",
    "sums",
    "history",
    "best",
    "rng",
)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a checkpoint atomically (a kill during the write leaves the previous file intact)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a trainer checkpoint (``latest.pt`` / ``best.pt``) safely (:func:`safe_load`); FileNotFoundError,
    :class:`UnsafeFileError` or ValueError naming the file and what is wrong (not a dict, missing keys, a ``stage``
    entry that is not a ``{name: tensor}`` dict)."""
    p = Path(path)
    state = safe_load(p, "checkpoint")
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {p} holds a {type(state).__name__}, not a dict of training state")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint {p} lacks {missing} (has {sorted(map(str, state))}): not a trainer checkpoint")
    _check_tensor_dict(state["stage"], f"checkpoint {p}: 'stage'")
    if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise ValueError(f"checkpoint {p}: 'step' must be a non-negative int, got {state['step']!r}")
    for key, kind in (
        ("optimizer", dict),
        ("scheduler", dict),
        ("scaler", dict),
        ("sums", dict),
        ("best", dict),
        ("history", list),
        ("rng", dict),
    ):
        if not isinstance(state[key], kind):
            raise ValueError(f"checkpoint {p}: {key!r} must be a {kind.__name__}, got {type(state[key]).__name__}")
    return state


def _check_tensor_dict(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a dict of tensors, got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where} must map names to tensors; bad entries: {bad[:5]}")


# ---------------------------------------------------------------------------------------------------- RNG states
def encode_rng_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`mmh.utils.seed.get_rng_state` output as tensors and plain values (loadable with weights_only)."""
    out: dict[str, Any] = {}
    if "python" in state:
        version, internal, gauss = state["python"]
        out["python"] = {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss,
        }
    if "numpy" in state:
        kind, key, pos, has_gauss, cached = state["numpy"]
        out["numpy"] = {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    if "torch" in state:
        out["torch"] = state["torch"]
    if "cuda" in state:
        out["cuda"] = list(state["cuda"])
    return out


def decode_rng_state(enc: Mapping[str, Any], source: str = "<rng state>") -> dict[str, Any]:
    """Inverse of :func:`encode_rng_state` (ValueError naming ``source`` if an entry is malformed)."""
    out: dict[str, Any] = {}
    try:
        if "python" in enc:
            py = enc["python"]
            internal = tuple(int(v) for v in py["state"].tolist())
            gauss = py["gauss_next"]
            out["python"] = (int(py["version"]), internal, None if gauss is None else float(gauss))
            random.Random().setstate(out["python"])  # validate before touching the global generator
        if "numpy" in enc:
            nps = enc["numpy"]
            key = nps["key"]
            if not isinstance(key, torch.Tensor) or key.shape != (624,):
                raise ValueError(f"numpy key must be a tensor of 624 words, got {getattr(key, 'shape', key)!r}")
            out["numpy"] = (
                str(nps["kind"]),
                key.numpy().astype(np.uint32),
                int(nps["pos"]),
                int(nps["has_gauss"]),
                float(nps["cached_gaussian"]),
            )
            np.random.RandomState().set_state(out["numpy"])
        if "torch" in enc:
            t = enc["torch"]
            if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8:
                raise ValueError(f"torch state must be a uint8 tensor, got {type(t).__name__}")
            out["torch"] = t
        if "cuda" in enc:
            if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in enc["cuda"]):
                raise ValueError("cuda states must be uint8 tensors")
            out["cuda"] = list(enc["cuda"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{source}: malformed RNG state: {type(exc).__name__}: {exc}") from None
    return out


# ---------------------------------------------------------------------------------------------------- artifacts
def model_payload(model: nn.Module) -> dict[str, Any]:
    """``{"config", "state_dict"}`` of a network built by ``build_model`` (or ``{"ensemble": {name: payload}}`` of a
    network made of such members, see :func:`mmh.models.ensemble_members`)."""
    members = ensemble_members(model)
    if members is not None:
        return {"ensemble": {name: model_payload(m) for name, m in members.items()}}
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(
            f"cannot save {type(model).__name__} as an artifact: it has no build_model config "
            f"(build it with mmh.models.build_model)"
        )
    return {"config": dict(config), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def model_from_payload(payload: Any, source: str = "<payload>") -> nn.Module:
    """Inverse of :func:`model_payload`; ValueError naming ``source`` and what is wrong (not a dict, missing
    ``config`` / ``state_dict``, an unknown model or bad config, weights that do not fit the model)."""
    if not isinstance(payload, dict):
        raise ValueError(
            f"model artifact {source} holds a {type(payload).__name__}, not a dict {{'config', 'state_dict'}}"
        )
    if "ensemble" in payload:
        members = payload["ensemble"]
        if not isinstance(members, dict) or not members:
            raise ValueError(f"model artifact {source}: 'ensemble' must be a non-empty dict of member artifacts")
        return LogitEnsemble(
            {str(k): model_from_payload(v, f"{source} (ensemble member {k!r})") for k, v in members.items()}
        )
    missing = [k for k in ("config", "state_dict") if k not in payload]
    if missing:
        raise ValueError(f"model artifact {source} lacks {missing} (has {sorted(map(str, payload))})")
    cfg = payload["config"]
    if not isinstance(cfg, dict) or not isinstance(cfg.get("name"), str):
        raise ValueError(f"model artifact {source}: 'config' must be a dict with a model 'name', got {cfg!r:.200}")
    _check_tensor_dict(payload["state_dict"], f"model artifact {source}: 'state_dict'")
    cfg = dict(cfg)
    name = cfg.pop("name")
    try:
        model = build_model(name, **cfg)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"model artifact {source}: cannot build model {name!r} from its config: {exc}") from None
    _check_weights(payload["state_dict"], model.state_dict(), source, name)
    model.load_state_dict(payload["state_dict"])
    return model


def _check_weights(
    given: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str, name: str
) -> None:
    """ValueError naming ``source`` when ``given`` weights do not fit the model (missing, extra, wrong shapes)."""
    problems = []
    lost = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if lost:
        problems.append(f"missing weights {lost[:5]}{' ...' if len(lost) > 5 else ''} ({len(lost)} in all)")
    if extra:
        problems.append(f"unexpected weights {extra[:5]}{' ...' if len(extra) > 5 else ''} ({len(extra)} in all)")
    shapes = [
        f"{k}: {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"wrong shapes (file vs model) {shapes[:5]}{' ...' if len(shapes) > 5 else ''}")
    if problems:
        raise ValueError(
            f"model artifact {source}: its weights do not fit the model its config describes "
            f"({name}): {'; '.join(problems)}"
        )


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a model artifact atomically; :class:`mmh.train.NonFiniteError` (nothing written) when its weights or
    buffers hold NaN or inf."""
    payload = model_payload(model)
    check_finite(payload, f"model artifact {path}", "; it was not written")
    atomic_torch_save(payload, path)


def load_model(path: str | os.PathLike, *, check_finite_weights: bool = True) -> nn.Module:
    """Rebuild the network saved by :func:`save_model` without running code from the file (:func:`safe_load`);
    FileNotFoundError, :class:`UnsafeFileError` or ValueError naming the file and what is wrong, and
    :class:`mmh.train.NonFiniteError` naming the file when its weights hold NaN or inf (``check_finite_weights``)."""
    payload = safe_load(path, "model artifact")
    model = model_from_payload(payload, str(path))
    if check_finite_weights:
        check_finite(
            model.state_dict(),
            f"model artifact {path}",
            "; a non-finite network is never reused (delete the file, or the stage-cache folder holding "
            "it, and train the stage again)",
        )
    return model


def save_tensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a named-tensor artifact (``{name: tensor}``, e.g. a stage's extra network weights) atomically, on CPU;
    ValueError naming ``path`` when ``state`` is not a dict of tensors."""
    state = dict(state)
    _check_tensor_dict(state, f"tensor artifact {path}")
    check_finite(state, f"tensor artifact {path}", "; it was not written")
    atomic_torch_save({k: v.detach().cpu() for k, v in state.items()}, path)


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a :func:`save_tensors` file without running code from it (:func:`safe_load`); FileNotFoundError,
    :class:`UnsafeFileError` or ValueError naming the file, :class:`mmh.train.NonFiniteError` when it holds NaN or
    inf."""
    state = safe_load(path, "tensor artifact")
    _check_tensor_dict(state, f"tensor artifact {path}")
    check_finite(state, f"tensor artifact {path}", "; a non-finite artifact is never reused")
    return state
