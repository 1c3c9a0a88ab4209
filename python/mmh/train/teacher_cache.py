"""``train.teacher_cache``: the frozen teacher's outputs computed once per training sample and read back.

A distillation stage runs its frozen teacher on every step, though the teacher's outputs for a sample never change
when the sample's inputs do not: the teacher is frozen (eval mode, no gradients) and, without random augmentation,
sample ``i`` is the same tensor in every epoch. With ``train.teacher_cache: true`` the stage asks the
:class:`TeacherCache` first: when every sample of the batch has been seen, the outputs the loss needs (the teacher's
logits and its hooked feature maps) come from the cache and the teacher does not run; otherwise the teacher runs on
the batch and its outputs are stored. From the second epoch on, no step runs the teacher.

Storage: host memory, or — when the outputs of all samples would exceed ``train.teacher_cache_mb`` — memory-mapped
files in ``<stage folder>/teacher_cache/<key>/``, which a later run with the same key reads back without running the
teacher at all. The key (:func:`teacher_cache_key`) hashes the teacher's weights and buffers, the hooked module
paths, and the data: the config's ``dataset`` section, the number of samples and the bytes of the first and last
samples.

Refused (ValueError naming the setting, :func:`check_cacheable`) when the teacher is not frozen or when the inputs
are not deterministic: ``dataset.transforms.train`` not empty (random crops, flips, :class:`SpeckleNoise`, ...), a
random clip sampling (``dataset.kwargs`` / ``split_kwargs.train`` ``sampling: random``), or a training set that
carries transforms of its own. The cached outputs are the values the teacher computed (under the run's autocast,
in its dtype), so the first step's loss equals the uncached run's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["TeacherCache", "teacher_cache_key", "check_cacheable"]

_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}


def _hash_tensors(h: Any, tensors: Mapping[str, Any]) -> None:
    for k in sorted(tensors):
        v = tensors[k]
        h.update(k.encode())
        if isinstance(v, Tensor):
            t = v.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(v).encode())


def teacher_cache_key(
    teacher: nn.Module, paths: Sequence[str], dataset: Dataset, dataset_cfg: Mapping[str, Any] | None = None
) -> str:
    """SHA-256 (hex, 24 characters) of the teacher's state, its hooked ``paths``, and the data (see the module
    docstring): any change of the teacher's weights or of the data gives another key."""
    h = hashlib.sha256()
    h.update(type(teacher).__name__.encode())
    h.update(json.dumps(list(paths)).encode())
    _hash_tensors(h, teacher.state_dict())
    h.update(json.dumps(dataset_cfg or {}, sort_keys=True, default=str).encode())
    n = len(dataset)  # type: ignore[arg-type]
    h.update(str(n).encode())
    for i in sorted({0, n - 1}):
        item = dataset[i]
        _hash_tensors(h, item if isinstance(item, Mapping) else {"item": item})
    return h.hexdigest()[:24]


def check_cacheable(frozen: Sequence[nn.Module], dataset: Dataset, config: Mapping[str, Any] | None) -> None:
    """ValueError naming the reason when a teacher cache would be wrong (see the module docstring)."""
    for net in frozen:
        if any(p.requires_grad for p in net.parameters()):
            raise ValueError("train.teacher_cache needs a frozen teacher; this stage's teacher has trainable weights")
    ds = (config or {}).get("dataset") or {}
    train_tf = (ds.get("transforms") or {}).get("train") or []
    if train_tf:
        names = [t.get("name", t) if isinstance(t, Mapping) else t for t in train_tf]
        raise ValueError(
            f"train.teacher_cache: the training inputs are randomly augmented (dataset.transforms.train = {names}), "
            f"so the teacher's outputs differ every epoch and a cache would be wrong; set train.teacher_cache=false "
            f"or dataset.transforms.train=[]"
        )
    for where, kw in (("dataset.kwargs", ds.get("kwargs")), ("dataset.split_kwargs.train", _train_split(ds))):
        for k, v in (kw or {}).items():
            if "sampling" in str(k) and "random" in str(v):
                raise ValueError(
                    f"train.teacher_cache: {where}.{k}={v!r} samples the inputs at random, so a cache of the "
                    f"teacher's outputs would be wrong; set train.teacher_cache=false"
                )
    for attr in ("transform", "transforms"):
        tf = getattr(dataset, attr, None)
        if tf is not None and (not hasattr(tf, "__len__") or len(tf)):
            raise ValueError(
                f"train.teacher_cache: the training set ({type(dataset).__name__}) applies transforms of its own "
                f"({attr}={tf!r}); the teacher's outputs may differ every epoch, so the cache is refused"
            )


def _train_split(ds: Mapping[str, Any]) -> Mapping[str, Any]:
    split = ds.get("train_split", "train")
    return ((ds.get("split_kwargs") or {}).get(split)) or {}


class TeacherCache:
    """The outputs of a frozen teacher for ``n`` samples (see the module docstring).

    ``limit_mb``: above it the storage is memory-mapped in ``folder`` (in memory when ``folder`` is None).
    :meth:`select` is given the indices of the step's samples (the trainer calls it before the forward);
    :meth:`lookup` then returns the cached outputs of all of them, or None; :meth:`store` saves a batch's outputs.
    """

    def __init__(self, n: int, key: str, *, limit_mb: float = 2048.0, folder: str | Path | None = None) -> None:
        if n < 1:
            raise ValueError(f"TeacherCache: n must be positive, got {n}")
        if limit_mb < 0:
            raise ValueError(f"train.teacher_cache_mb must be >= 0, got {limit_mb}")
        self.n, self.key, self.limit_mb = int(n), key, float(limit_mb)
        self.folder = Path(folder) / key if folder is not None else None
        self.filled = torch.zeros(self.n, dtype=torch.bool)
        self.store_: dict[str, Any] = {}
        self.on_disk = False
        self.index: Tensor | None = None
        self.hits = self.misses = 0
        self._reopen()

    # -------------------------------------------------------------------------------------------- storage
    def _meta_path(self) -> Path | None:
        return self.folder / "meta.json" if self.folder is not None else None

    def _reopen(self) -> None:
        """A complete cache of the same key left on disk by an earlier run is read back."""
        meta = self._meta_path()
        if meta is None or not meta.is_file():
            return
        info = json.loads(meta.read_text())
        if info.get("key") != self.key or info.get("n") != self.n or not info.get("complete"):
            return
        assert self.folder is not None
        for name, spec in info["outputs"].items():
            self.store_[name] = np.memmap(
                self.folder / f"{spec['file']}", dtype=spec["dtype"], mode="r", shape=tuple(spec["shape"])
            )
        self.on_disk = True
        self.filled[:] = True

    def _allocate(self, outputs: Mapping[str, Tensor]) -> None:
        total = sum(self.n * v[0].numel() * v.element_size() for v in outputs.values())
        self.on_disk = self.folder is not None and total > self.limit_mb * 2**20
        for i, (name, v) in enumerate(outputs.items()):
            shape = (self.n, *v.shape[1:])
            if self.on_disk:
                if v.dtype not in _NP:
                    raise TypeError(f"TeacherCache: output {name!r} has dtype {v.dtype}, not storable on disk")
                assert self.folder is not None
                self.folder.mkdir(parents=True, exist_ok=True)
                self.store_[name] = np.memmap(self.folder / f"out{i}.bin", dtype=_NP[v.dtype], mode="w+", shape=shape)
            else:
                self.store_[name] = torch.empty(shape, dtype=v.dtype)

    def _write_meta(self) -> None:
        meta = self._meta_path()
        if not self.on_disk or meta is None:
            return
        outputs = {}
        for i, (name, arr) in enumerate(self.store_.items()):
            arr.flush()
            outputs[name] = {"file": f"out{i}.bin", "dtype": str(arr.dtype), "shape": list(arr.shape)}
        meta.write_text(json.dumps({"key": self.key, "n": self.n, "complete": True, "outputs": outputs}))

    # -------------------------------------------------------------------------------------------- use
    def select(self, index: Sequence[int] | Tensor) -> None:
        """The dataset indices of the next step's samples."""
        self.index = torch.as_tensor(index, dtype=torch.long)

    def lookup(self, device: torch.device | str) -> dict[str, Tensor] | None:
        """The cached outputs of the selected samples on ``device`` (None: some are not cached yet, or nothing was
        selected)."""
        idx = self.index
        if idx is None or not self.store_ or not bool(self.filled[idx].all()):
            self.misses += 1
            return None
        self.hits += 1
        out = {}
        for name, arr in self.store_.items():
            rows = arr[idx] if isinstance(arr, Tensor) else torch.from_numpy(np.ascontiguousarray(arr[idx.numpy()]))
            out[name] = rows.to(device, non_blocking=True)
        return out

    def store(self, outputs: Mapping[str, Tensor]) -> None:
        """Save the selected samples' outputs (``{name: (B, ...)}``, the same names at every call)."""
        idx = self.index
        if idx is None:
            return
        if not self.store_:
            self._allocate(outputs)
        if set(outputs) != set(self.store_):
            raise KeyError(f"TeacherCache: outputs {sorted(outputs)} differ from the cached {sorted(self.store_)}")
        for name, v in outputs.items():
            v = v.detach().to("cpu")
            arr = self.store_[name]
            if isinstance(arr, Tensor):
                arr[idx] = v.to(arr.dtype)
            else:
                arr[idx.numpy()] = v.numpy()
        was_full = bool(self.filled.all())
        self.filled[idx] = True
        if not was_full and bool(self.filled.all()):
            self._write_meta()
