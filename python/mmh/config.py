"""Configuration: YAML files (with ``_base_`` inheritance) over code defaults, ``key=value`` overrides.

A config is a plain nested ``dict``. Resolution order (later wins)::

    defaults()  <-  _base_ files (recursively)  <-  the YAML file  <-  overrides

:func:`defaults` is the schema: :data:`DEFAULTS` (the framework's own keys) plus the ``loss.<section>`` defaults of
the methods (:func:`loss_defaults`). The config layer imports nothing of :mod:`mmh.methods` (the methods import it),
so the built-in methods' sections are data here, :data:`METHOD_DEFAULTS`, which the method modules take their
constants from (``mmh.methods.rad.RAD_DEFAULTS``): each default is written once, and a config loads in a fresh process
whatever was imported before, without importing anything for its side effects. A method registered elsewhere declares
its own sections (:func:`mmh.methods.register_method` with ``defaults=``, which calls :func:`declare_loss_defaults`):
data handed down to this layer, never a callback this layer makes upward. Callers need not pass any defaults in, so
:func:`load_config` works the same for the command line, the runner, the benchmarks and users' scripts.

A ``_base_`` entry (a string or a list) is a path relative to the including file or, when no such file exists, the
name of a shipped config (``_base_: synthetic_motion/rad``, ``.yaml`` optional; see :func:`config_dir`).

Overrides are ``dotted.key=value`` strings; the value is parsed as YAML (``3`` -> int, ``2e-3`` -> float,
``[4, 2, 1]`` -> list, ``null`` -> None, ``true`` -> bool) and coerced to the type of the value it replaces
(an int into a float field becomes a float; a string into an int field is a ValueError naming the key). Keys that
do not exist are an error (typo protection) unless written ``+new.key=value``.

Every YAML text is read by :func:`read_yaml` / :func:`parse_yaml` (configs, run folders, override values): YAML's
safe subset, at most :data:`MAX_YAML_BYTES` bytes, at most :data:`MAX_YAML_ALIASES` aliases (``*name``) and at most
:data:`MAX_YAML_NODES` nodes once aliases are expanded, so a shared file cannot make a reader build an exponential
structure ("billion laughs"): such a file is a ValueError naming it, found before anything is built.

A run folder's ``config.yaml`` is written once, when the run is created (:func:`save_config`, atomically), and read
back with :func:`load_run_config` (keys added with ``+key`` allowed; an empty or unreadable file is an error). A resumed
run takes only the overrides listed in :data:`RESUME_SAFE` (:func:`resume_changes`): they do not change the trained
result; any other change is a new run.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DEFAULTS",
    "defaults",
    "load_config",
    "apply_overrides",
    "parse_value",
    "merge",
    "get_path",
    "set_path",
    "save_config",
    "config_hash",
    "stage_train_config",
    "config_dir",
    "find_config",
    "AMP_VALUES",
    "amp_setting",
    "read_yaml",
    "parse_yaml",
    "load_run_config",
    "resume_changes",
    "RESUME_SAFE",
    "MAX_YAML_BYTES",
    "MAX_YAML_ALIASES",
    "MAX_YAML_NODES",
    "METHOD_DEFAULTS",
    "loss_defaults",
    "declare_loss_defaults",
    "check_loss_defaults",
]

#: The framework's defaults: every key a config may set appears here or in a method's ``loss.<section>`` defaults
#: (:func:`defaults`; ``+key=value`` adds others).
DEFAULTS: dict[str, Any] = {
    "method": "baseline",
    "seed": 0,
    "device": "auto",  # "cpu", "cuda", "cuda:1" or "auto" (cuda when available)
    "threads": 0,  # torch.set_num_threads when > 0
    "dataset": {
        "name": "synthetic_motion",
        "kwargs": {},  # passed to build_dataset for every split
        "split_kwargs": {},  # per split, merged over kwargs: {train: {size: 500}}
        "train_split": "train",
        "val_split": None,  # used to pick the "best" checkpoint; None: best = last
        "eval_split": "test",  # the split the final metrics are computed on
        "cache": True,  # materialise each split in memory once (procedural datasets are pure functions of i)
        "transforms": {"train": [], "eval": []},  # mmh.data.transforms entries: train split / val+test splits
    },
    "model": {"name": "small_joint", "kwargs": {}, "pretrained": None},  # pretrained: imagenet | kinetics400 | PATH
    "modalities": {"teacher": ["rgb", "depth"], "student": ["rgb"]},
    "train": {
        "optimizer": "adam",  # sgd | adam | adamw
        "lr": 2.0e-3,
        "momentum": 0.9,
        "nesterov": False,
        "betas": [0.9, 0.999],
        "weight_decay": 1.0e-4,
        "batch_size": 64,
        "steps": 400,  # total optimisation steps; if null, ``epochs`` decides
        "epochs": None,
        "schedule": "onecycle",  # constant | step | cosine | onecycle
        "warmup_steps": 0,  # linear warm-up (constant/step/cosine); onecycle has its own ramp (pct_start)
        "warmup_start_factor": 0.1,
        "milestones": [],  # step schedule: steps at which lr *= gamma
        "gamma": 0.1,
        "min_lr_factor": 0.0,  # cosine floor, as a fraction of lr
        "pct_start": 0.3,  # onecycle
        "grad_clip": None,  # max global grad norm
        "amp": "auto",  # auto | false | true | fp16 | bf16 (CUDA: auto/true/fp16 = float16 + GradScaler; CPU: bf16)
        "num_workers": 0,
        "drop_last": True,
        "eval_every": 0,  # epochs between validation passes (0: only at the end)
        "deploy": "last",  # last | best: the stage's network is its final state, or best.pt's (needs dataset.val_split)
        "checkpoint_every": 0,  # steps between "latest" checkpoints (0: at each epoch end; -1: none, see the trainer)
        "log_every": 10,  # steps between reads of the device's loss sums (progress bar, non-finite check); 0: epochs
        "tensorboard": False,
        "progress": True,
        "compile": False,  # torch.compile of the stage's forward + loss: false | true (inductor) | a backend name
        # frozen teacher's outputs computed once per sample (deterministic inputs only; mmh.train.teacher_cache)
        "teacher_cache": False,
        "teacher_cache_mb": 2048,  # past this size the cache is a memory-mapped file in the stage's folder
    },
    "stages": {},  # per-stage overrides of ``train`` (e.g. stages.teacher.steps=200), ``checkpoint`` / ``init_from``
    "loss": {"ce": 1.0},  # + one section per method family (loss.rad, loss.dad, ...): see loss_defaults()
    # clips: clips per video at evaluation, their logits averaged (thesis ch. 5: 10; mmh.evaluation.prediction)
    "eval": {"batch_size": 256, "metrics": ["accuracy"], "clips": 1},
    "output": {"root": "runs", "name": None, "cache": None},  # cache None: <root>/cache; "" disables it
}

#: The ``loss.<section>`` defaults of the built-in methods (the methods reading each one in the comment; what each key
#: means: the method's module). The method modules take their constants from here and declare them again where they
#: register, which :func:`check_loss_defaults` compares with these.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # kd (mmh.methods.kd.KD_DEFAULTS)
    "kd": {"weight": 1.0, "temperature": 4.0},
    # rad, rad_attention, rad_self, rad_noweight, rad_global, rad_dad (mmh.methods.rad.RAD_DEFAULTS)
    "rad": {"alpha": 0.4, "grid": 4, "levels": [4, 2, 1], "temperature": 2.0, "weighting": "none"},
    # dad, rad_dad (mmh.methods.dad.DAD_DEFAULTS)
    "dad": {"beta": 1.0, "form": "paper", "layers": None, "teacher_layers": None, "gather": True},
    # mars, mers (mmh.methods.feature_matching.MARS_DEFAULTS, MERS_DEFAULTS)
    "mars": {"weight": 1.0, "layers": None},
    "mers": {"finetune": "classifier"},
    # mcl_independent, smcl, cmcl, dmcl, mcl_random (mmh.methods.thesis.mcl.MCL_DEFAULTS)
    "mcl": {"lam": 0.5, "temperature": 2.0, "t_squared": False, "winner_ce": 1.0, "beta": 0.75},
    # multistream, hoffman, moddrop (mmh.methods.thesis.multistream.MULTISTREAM_DEFAULTS, HOFFMAN_DEFAULTS, ...)
    "multistream": {
        "alpha": 0.5,
        "lam": 0.5,
        "temperature": 10.0,
        "t_squared": False,
        "student_temperature": True,
        "hall_layers": ["layer4"],
        "hall_reduction": "sample_sum",
        "hall_scale": 1.0,
        "teacher": "depth_stream",
        "gd_on": "fused",
        "connections": True,
        "step3_connections": None,
        "direction": "depth_to_rgb",
        "step2_loss": "fused",
    },
    "hoffman": {"gamma": 1.0, "hall_layers": ["layer4"], "hall_reduction": "sample_sum"},
    "moddrop": {"p_drop": 0.5, "modality": "depth", "p_input": 0.1},
    # admd, admd_naive (mmh.methods.thesis.admd.ADMD_DEFAULTS)
    "admd": {
        "frame_conditioning": True,
        "hidden": [128, 64],
        "residual": [],  # hidden layers with a skip connection (thesis Fig. 4.3's object discriminator: [1, 2])
        "d_weight": 1.0,
        "h_weight": 1.0,
        "h_ce": 0.0,
        "naive": False,
    },
}

#: ``loss.<section>`` -> its defaults: :data:`METHOD_DEFAULTS` and the sections declared since
#: (:func:`declare_loss_defaults`).
_LOSS_DEFAULTS: dict[str, dict[str, Any]] = copy.deepcopy(METHOD_DEFAULTS)


def check_loss_defaults(section: Any, values: Any, owner: str = "a method") -> dict[str, Any]:
    """``values`` as the defaults of ``loss.<section>`` (a copy), checked against the schema: ``section`` a non-empty
    name without dots, not a key of ``DEFAULTS["loss"]``; ``values`` a mapping with string keys, the same as the
    section's defaults when it is already declared (one section, one set of defaults). ValueError/TypeError naming
    ``owner`` and the section otherwise; nothing is declared."""
    if not isinstance(section, str) or not section or "." in section:
        raise ValueError(
            f"{owner} declares defaults for loss.{section}: a section name must be a non-empty string without dots"
        )
    if section in DEFAULTS["loss"]:
        raise ValueError(f"{owner} declares defaults for loss.{section}, a key of the framework's DEFAULTS")
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise TypeError(f"{owner}: the defaults of loss.{section} must be a mapping with string keys, got {values!r}")
    values = copy.deepcopy(dict(values))
    if section in _LOSS_DEFAULTS and _LOSS_DEFAULTS[section] != values:
        raise ValueError(
            f"{owner} declares loss.{section} defaults {values} that differ from those already declared: "
            f"{_LOSS_DEFAULTS[section]}"
        )
    return values


def declare_loss_defaults(section: str, values: Mapping[str, Any], owner: str = "a method") -> None:
    """Add ``loss.<section>`` with the defaults ``values`` to the schema (:func:`check_loss_defaults`'s errors;
    declaring a section again with the same values changes nothing)."""
    _LOSS_DEFAULTS[section] = check_loss_defaults(section, values, owner)


def loss_defaults() -> dict[str, dict[str, Any]]:
    """``{section: defaults}`` of every ``loss.<section>`` of the schema (a copy): :data:`METHOD_DEFAULTS` and the
    sections declared with :func:`declare_loss_defaults`."""
    return copy.deepcopy(_LOSS_DEFAULTS)


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

#: Largest YAML file :func:`read_yaml` reads (a config is a few kB).
MAX_YAML_BYTES = 1 << 20
#: Most aliases (``*name``) one YAML document may use.
MAX_YAML_ALIASES = 100
#: Most nodes one YAML document may hold with its aliases expanded (each alias counted as the size of what it names).
MAX_YAML_NODES = 100_000


class _PastBounds(ValueError):
    """A YAML document past :data:`MAX_YAML_ALIASES` or :data:`MAX_YAML_NODES` (reworded by :func:`parse_yaml`)."""


class _BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader with a bound on aliases, counted while the document is composed (before anything is
    built); :func:`_check_nodes` bounds the expanded size afterwards."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _PastBounds(f"more than {MAX_YAML_ALIASES} aliases (*name)")
        return super().compose_node(parent, index)


def _check_nodes(root: yaml.Node) -> None:
    """ValueError when ``root`` with its aliases expanded has more than :data:`MAX_YAML_NODES` nodes, or an alias
    inside what it names (a recursive structure). Each distinct node is visited once (sizes are memoised)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: a deeply nested document does not exhaust the Python stack
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            kids = _children(node)
            size = 1 + sum(sizes[id(k)] for k in kids)
            if size > MAX_YAML_NODES:
                raise _PastBounds(f"more than {MAX_YAML_NODES} nodes with its aliases expanded")
            sizes[key] = size
            continue
        if key in sizes:
            if sizes[key] < 0:
                raise _PastBounds("an alias inside the node it names (a recursive structure)")
            continue
        sizes[key] = -1  # in progress
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """``text`` parsed as YAML's safe subset within the bounds on aliases and expanded size (see the module
    docstring); ValueError naming ``source`` for invalid YAML or a document past the bounds (None when empty)."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except _PastBounds as exc:
        raise ValueError(
            f"{source} is refused: {exc} (aliases are bounded so that a shared file cannot exhaust memory)"
        ) from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise ValueError(f"{source} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ValueError(f"{source} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """The YAML file ``path`` read with :func:`parse_yaml`: FileNotFoundError, or ValueError naming the file when
    it is larger than :data:`MAX_YAML_BYTES`, not UTF-8 text, invalid YAML or past the alias bounds."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{what} {p} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ValueError(f"{what} {p} is larger than {MAX_YAML_BYTES} bytes; a config is a few kB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {p} is not UTF-8 text: {exc}") from None
    return parse_yaml(text, f"{what} {p}")


def parse_value(text: str) -> Any:
    """Parse an override value as YAML, also accepting ``2e-3`` (which YAML 1.1 would keep as a string)."""
    if not isinstance(text, str):
        raise TypeError(f"override value must be a str, got {type(text).__name__}")
    if not text.strip():
        return ""
    return _fix_floats(parse_yaml(text, f"override value {text[:80]!r}"))


def _fix_floats(value: Any) -> Any:
    if isinstance(value, str) and _FLOAT_RE.match(value):
        return float(value)
    if isinstance(value, list):
        return [_fix_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: _fix_floats(v) for k, v in value.items()}
    return value


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge (``update`` wins; dicts merge, everything else is replaced). Inputs are not modified."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_path(cfg: Mapping[str, Any], dotted: str, default: Any = KeyError) -> Any:
    """``cfg["a"]["b"]`` for ``"a.b"``; KeyError naming the key (or ``default`` when given)."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is KeyError:
                raise KeyError(f"config has no key {dotted!r}")
            return default
        node = node[part]
    return node


def set_path(cfg: dict[str, Any], dotted: str, value: Any, *, create: bool = False) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``"a.b"``; unknown keys raise KeyError unless ``create``."""
    parts = dotted.split(".")
    if not all(parts):
        raise KeyError(f"malformed config key {dotted!r}")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        if part not in node or node[part] is None:
            if not create and part not in node:
                raise KeyError(_unknown(cfg, ".".join(parts[: i + 1])))
            node[part] = {}
        if not isinstance(node[part], dict):
            raise KeyError(
                f"config key {'.'.join(parts[: i + 1])!r} is a {type(node[part]).__name__}, "
                f"not a section, so {dotted!r} cannot be set"
            )
        node = node[part]
    if parts[-1] not in node and not create:
        raise KeyError(_unknown(cfg, dotted))
    node[parts[-1]] = value


def _unknown(cfg: Mapping[str, Any], dotted: str) -> str:
    keys = sorted(_flat_keys(cfg))
    head = dotted.rsplit(".", 1)[-1]
    near = [k for k in keys if k.endswith(head) or k.startswith(dotted.split(".")[0])][:8]
    return f"unknown config key {dotted!r} (use +{dotted}=VALUE to add a new key); similar keys: {near}"


def _flat_keys(cfg: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        yield key
        if isinstance(v, Mapping):
            yield from _flat_keys(v, key + ".")


def _coerce(key: str, old: Any, new: Any) -> Any:
    """Coerce an override to the type of the value it replaces (ValueError naming ``key`` if impossible)."""
    if old is None or new is None:
        return new
    if key.rsplit(".", 1)[-1] == "amp" and isinstance(new, (bool, str)):
        return new  # train.amp takes a bool or a string (checked by amp_setting)
    if key.rsplit(".", 1)[-1] == "compile" and isinstance(new, (bool, str)):
        return new  # train.compile takes a bool or a torch.compile backend name (checked by the trainer)
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise ValueError(f"config key {key!r} expects a bool (true/false), got {new!r}")
        return new
    if isinstance(old, (int, float)):
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            raise ValueError(f"config key {key!r} expects a number, got {new!r}")
        if isinstance(old, float):
            return float(new)
        if isinstance(new, float):
            if not new.is_integer():
                raise ValueError(f"config key {key!r} expects an int, got {new!r}")
            return int(new)
        return new
    if isinstance(old, str) and not isinstance(new, str):
        if isinstance(new, (int, float)) and not isinstance(new, bool):
            return str(new)
        raise ValueError(f"config key {key!r} expects a string, got {new!r}")
    if isinstance(old, list) and not isinstance(new, list):
        return [new]
    if isinstance(old, dict) and not isinstance(new, dict):
        raise ValueError(f"config key {key!r} is a section; give a mapping ({{a: 1}}) or set its sub-keys")
    return new


def apply_overrides(cfg: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``key=value`` overrides applied (see the module docstring)."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"override must look like key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        create = key.startswith("+")
        key = key.lstrip("+")
        if not key:
            raise ValueError(f"override {item!r} has an empty key")
        value = parse_value(text)
        exists = get_path(out, key, default=_MISSING) is not _MISSING
        if not (exists or create or _in_free_form(key)):
            raise KeyError(_unknown(out, key))
        old = get_path(out, key, default=None)
        set_path(out, key, _coerce(key, old, value), create=True)
    return out


_MISSING = object()

#: Sections whose sub-keys are not fixed by the defaults (dataset/model kwargs, per-stage overrides, modality roles).
_FREE_FORM = ("stages", "dataset.kwargs", "dataset.split_kwargs", "model.kwargs", "modalities")


def _in_free_form(dotted: str) -> bool:
    return any(dotted.startswith(p + ".") for p in _FREE_FORM)


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"config inheritance cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    data = read_yaml(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    data = _fix_floats(data)
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list):
        raise ValueError(f"_base_ in {path} must be a path or a list of paths")
    resolved: dict[str, Any] = {}
    for base in bases:
        resolved = merge(resolved, _load_yaml(_base_path(path, base), seen + (path,)))
    return merge(resolved, data)


def _base_path(including: Path, base: Any) -> Path:
    """A ``_base_`` entry of ``including``: a path relative to that file, else the name of a shipped config."""
    if not isinstance(base, str) or not base.strip():
        raise ValueError(f"_base_ in {including} must be a path or a shipped config name, got {base!r}")
    rel = including.parent / base
    if rel.is_file():
        return rel
    try:
        return find_config(base, files=False)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config file {including}: _base_ {base!r} not found: neither {rel} nor a shipped "
            f"config under {config_dir()}"
        ) from None


def defaults() -> dict[str, Any]:
    """The config schema with its default values (a fresh copy): :data:`DEFAULTS` and, under ``loss``, the methods'
    sections (:func:`loss_defaults`)."""
    cfg = copy.deepcopy(DEFAULTS)
    cfg["loss"].update(loss_defaults())
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Resolve a config: :func:`defaults` <- YAML file (with ``_base_``) <- ``overrides``.

    Keys in the file that are not in the defaults are an error naming the key and the file (typo protection);
    ``stages`` and ``*.kwargs`` sections are free-form.
    """
    cfg = defaults()
    if path is not None:
        data = _load_yaml(Path(path))
        _check_known(cfg, data, "", str(path))
        cfg = merge(cfg, data)
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def _check_known(defaults: Mapping[str, Any], data: Mapping[str, Any], prefix: str, source: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            raise KeyError(f"{source}: unknown config key {dotted!r}")
        if dotted in _FREE_FORM or any(dotted.startswith(p + ".") for p in _FREE_FORM):
            continue
        if isinstance(value, Mapping) and isinstance(defaults[key], Mapping):
            _check_known(defaults[key], value, dotted + ".", source)


def validate(cfg: Mapping[str, Any]) -> None:
    """Check the fields every run needs; ValueError/TypeError naming the key."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"config key 'seed' must be a non-negative int, got {seed!r}")
    if not isinstance(cfg.get("method"), str):
        raise TypeError(f"config key 'method' must be a string, got {cfg.get('method')!r}")
    tr = cfg["train"]
    for key in ("lr", "weight_decay"):
        if not isinstance(tr[key], (int, float)) or tr[key] < 0:
            raise ValueError(f"config key 'train.{key}' must be a non-negative number, got {tr[key]!r}")
    if not isinstance(tr["batch_size"], int) or tr["batch_size"] < 1:
        raise ValueError(f"config key 'train.batch_size' must be a positive int, got {tr['batch_size']!r}")
    clips = cfg["eval"].get("clips", 1)
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ValueError(f"config key 'eval.clips' must be a positive int (clips per video), got {clips!r}")
    amp_setting(tr["amp"])
    if isinstance(tr["log_every"], bool) or not isinstance(tr["log_every"], int) or tr["log_every"] < 0:
        raise ValueError(f"config key 'train.log_every' must be a non-negative int, got {tr['log_every']!r}")
    if tr["steps"] is None and tr["epochs"] is None:
        raise ValueError("config: set one of 'train.steps' or 'train.epochs'")
    _check_checkpoint_every(tr.get("checkpoint_every", 0), "train.checkpoint_every")
    for name, section in (cfg.get("stages") or {}).items():
        if isinstance(section, Mapping) and "checkpoint_every" in section:
            _check_checkpoint_every(section["checkpoint_every"], f"stages.{name}.checkpoint_every")
    for role, mods in cfg["modalities"].items():
        if not isinstance(mods, list) or not mods or not all(isinstance(m, str) for m in mods):
            raise ValueError(f"config key 'modalities.{role}' must be a non-empty list of names, got {mods!r}")
    pretrained = cfg["model"].get("pretrained")
    if pretrained is not None and (not isinstance(pretrained, str) or not pretrained):
        raise TypeError(
            f"config key 'model.pretrained' must be null, imagenet, kinetics400 or a file path, got {pretrained!r}"
        )


def _check_checkpoint_every(value: Any, key: str) -> None:
    """``checkpoint_every``: an int >= -1 (steps between resume checkpoints; 0: at each epoch end; -1: none); a
    ValueError naming ``key`` otherwise (a bool is refused, not read as 0 / 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError(
            f"config key {key!r} must be an int >= -1 (steps between resume checkpoints; 0: at each epoch end; "
            f"-1: none), got {value!r}"
        )


#: The values of ``train.amp`` (YAML's ``true``/``false`` arrive as bools). What each means on CUDA and on the CPU:
#: :class:`mmh.train.Trainer` and the README.
AMP_VALUES = ("auto", "false", "true", "fp16", "bf16")


def amp_setting(value: Any, key: str = "train.amp") -> str:
    """``value`` as one of :data:`AMP_VALUES` (a bool becomes ``"true"``/``"false"``); ValueError naming ``key``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in AMP_VALUES:
        return value.strip().lower()
    raise ValueError(
        f"config key {key!r} must be one of {', '.join(AMP_VALUES)} (a bool means true/false), got {value!r}"
    )


def stage_train_config(cfg: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The ``train`` section with ``stages.<stage>`` overrides merged in (``checkpoint`` and ``init_from``, which the
    runner reads, are removed)."""
    over = dict(cfg.get("stages", {}).get(stage) or {})
    over.pop("checkpoint", None)
    over.pop("init_from", None)
    unknown = [k for k in over if k not in cfg["train"]]
    if unknown:
        raise KeyError(f"config key 'stages.{stage}' has unknown training keys {unknown}")
    out = merge(cfg["train"], over)
    for key, value in over.items():
        out[key] = _coerce(f"stages.{stage}.{key}", cfg["train"][key], value)
    return out


def save_config(cfg: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (what the run actually used), atomically: a reader sees the old file or the
    whole new one, never a cut one."""
    from .utils.io import write_text

    write_text(yaml.safe_dump(dict(cfg), sort_keys=False), path)


def load_run_config(run_dir: str | os.PathLike, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The config a run folder was created with (its ``config.yaml``) over :func:`defaults`, then ``overrides``.

    The file is a resolved config: keys the run added with ``+key=value`` are read back as they are (no typo check)
    and ``_base_`` is not followed. FileNotFoundError when ``run_dir`` has no ``config.yaml``; ValueError naming the
    file when it is empty, unreadable or not a mapping (an empty file is not "all defaults": it is a damaged run)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    data = read_yaml(path, "run config")
    if not data:
        raise ValueError(
            f"run config {path} is empty; it is written once when the run is created, so the run folder "
            f"is damaged (start a new run)"
        )
    if not isinstance(data, dict):
        raise ValueError(f"run config {path} must hold a mapping at the top level, got {type(data).__name__}")
    if "_base_" in data:
        raise ValueError(f"run config {path} has a _base_ key; a run folder's config.yaml is a resolved config")
    cfg = apply_overrides(merge(defaults(), _fix_floats(data)), overrides)
    try:
        validate(cfg)
    except (ValueError, TypeError, KeyError) as exc:
        raise type(exc)(f"run config {path}: {exc}") from None
    return cfg


#: Settings a resumed run may change (``fnmatch`` patterns of dotted keys): they change how a run is executed or
#: reported, not the trained weights or the metrics. Any other change is a new run (a new ``--run-dir``).
RESUME_SAFE: tuple[str, ...] = (
    "device",
    "threads",
    "train.progress",
    "train.log_every",
    "train.tensorboard",
    "train.num_workers",
    "train.checkpoint_every",
    "train.teacher_cache",
    "train.teacher_cache_mb",
    "stages.*.progress",
    "stages.*.log_every",
    "stages.*.tensorboard",
    "stages.*.num_workers",
    "stages.*.checkpoint_every",
    "stages.*.teacher_cache",
    "stages.*.teacher_cache_mb",
    "eval.batch_size",
    "dataset.cache",
)


def _leaves(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: value}`` of every non-mapping value (an empty mapping has none: ``stages: {}`` and no
    ``stages`` section mean the same)."""
    if not isinstance(cfg, Mapping):
        return {prefix: cfg}
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        out.update(_leaves(v, f"{prefix}{k}" if not prefix else f"{prefix}.{k}"))
    return out


def resume_changes(
    saved: Mapping[str, Any], cfg: Mapping[str, Any], run_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The resume-safe settings in which ``cfg`` differs from a run's ``saved`` config (``{dotted key: new value}``);
    ValueError naming every other key that differs, and how to start a new run with them instead (from the run
    folder ``run_dir``'s config, when given)."""
    old, new = _leaves(saved), _leaves(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING))
    unsafe = [k for k in changed if not any(fnmatch.fnmatchcase(k, pat) for pat in RESUME_SAFE)]
    if unsafe:
        shown = ", ".join(f"{k} ({_show(old.get(k, _MISSING))} -> {_show(new.get(k, _MISSING))})" for k in unsafe[:8])
        more = f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else ""
        config = Path(run_dir) / "config.yaml" if run_dir is not None else "CONFIG"
        raise ValueError(
            f"cannot resume with changed settings {shown}{more}: a resumed run keeps the settings it was "
            f"created with (only {', '.join(RESUME_SAFE)} may change). To train with these settings, "
            f"start a new run: mmh train {config} KEY=VALUE ... --run-dir NEW_DIR"
        )
    return {k: new.get(k) for k in changed}


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else repr(value)


def config_hash(obj: Any, length: int = 12) -> str:
    """A short stable hash of a JSON-serialisable object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]


def config_dir() -> Path:
    """The folder of the shipped configs: ``$MMH_CONFIG_DIR`` when set; else ``mmh/configs`` inside the installed
    package (wheels and ``pip install .``: setup.py copies the repository's ``configs/`` there); else the
    checkout's ``configs/`` (editable installs)."""
    env = os.environ.get("MMH_CONFIG_DIR")
    if env:
        return Path(env)
    packaged = Path(str(resources.files("mmh") / "configs"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def find_config(name: str | os.PathLike, *, files: bool = True) -> Path:
    """A config path: an existing file (unless ``files=False``), or a shipped config ``<dataset>/<method>`` under
    :func:`config_dir` (``.yaml`` optional)."""
    p = Path(name)
    if files and p.is_file():
        return p
    root = config_dir()
    for cand in (root / p, root / f"{p}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"config {str(name)!r} not found (neither a file nor under {root})")
