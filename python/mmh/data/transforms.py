"""Sample transforms on item dicts (``{"rgb": ..., "depth": ..., "label": ..., "frame_index": ...}``).

Spatial transforms apply the *same* random crop / flip / resize to every modality of a sample (images
``(C, H, W)`` or clips ``(T, C, H, W)``); flow fields are flipped and rescaled as vector fields.
Random transforms draw from ``generator`` when given, else from torch's global generator (which
:func:`mmh.data.make_loader` seeds per worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "NON_SPATIAL_KEYS",
    "Compose",
    "DepthToJet",
    "FrameSampler",
    "PairedCenterCrop",
    "PairedRandomCrop",
    "PairedRandomHorizontalFlip",
    "PairedResize",
    "SpeckleNoise",
    "jet",
    "sample_frame_indices",
]

NON_SPATIAL_KEYS = frozenset({"label", "frame_index"})
Sample = dict[str, torch.Tensor]


def _spatial_keys(sample: Sample, keys: Sequence[str] | None) -> list[str]:
    if not isinstance(sample, dict):
        raise TypeError(f"transforms expect a dict sample, got {type(sample).__name__}")
    if keys is None:
        return [k for k, v in sample.items() if k not in NON_SPATIAL_KEYS and torch.is_tensor(v) and v.ndim >= 3]
    missing = [k for k in keys if k not in sample]
    if missing:
        raise KeyError(f"transform: sample has no modality {missing[0]!r} (keys: {sorted(sample)})")
    return list(keys)


def _common_hw(sample: Sample, keys: Iterable[str]) -> tuple[int, int]:
    sizes = {k: tuple(sample[k].shape[-2:]) for k in keys}
    if not sizes:
        raise ValueError("transform: the sample has no image/clip tensors")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"transform: paired spatial transforms need equal H, W across modalities, got {sizes}")
    return next(iter(sizes.values()))  # type: ignore[return-value]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        for t in transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class SpeckleNoise:
    """Multiplicative speckle on one modality: ``I * n``, ``n ~ N(1, sigma2)``; ``sigma2="void"`` zeroes it.

    ``sigma2`` is the *variance* (the thesis' grid: 0, 1e-3, 1e-2, 1e-1, 1, 10, "void").
    """

    def __init__(self, modality: str, sigma2: float | str, generator: torch.Generator | None = None) -> None:
        if not isinstance(modality, str):
            raise TypeError(f"SpeckleNoise: modality must be a str, got {modality!r}")
        if sigma2 != "void" and (
            isinstance(sigma2, bool) or not isinstance(sigma2, (int, float)) or not math.isfinite(sigma2) or sigma2 < 0
        ):
            raise ValueError(f"SpeckleNoise: sigma2 must be a finite number >= 0 or 'void', got {sigma2!r}")
        self.modality, self.sigma2, self.generator = modality, sigma2, generator

    def __call__(self, sample: Sample) -> Sample:
        if self.modality not in sample:
            raise KeyError(f"SpeckleNoise: sample has no modality {self.modality!r} (keys: {sorted(sample)})")
        x = sample[self.modality]
        if not torch.is_floating_point(x):
            raise TypeError(f"SpeckleNoise: modality {self.modality!r} must be floating point, got {x.dtype}")
        out = dict(sample)
        if self.sigma2 == "void":
            out[self.modality] = torch.zeros_like(x)
        elif self.sigma2 > 0:
            n = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
            out[self.modality] = x * (1.0 + math.sqrt(float(self.sigma2)) * n)
        return out

    def __repr__(self) -> str:
        return f"SpeckleNoise({self.modality!r}, sigma2={self.sigma2!r})"


def _size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
        raise ValueError(f"{name}: size must be a positive int or (h, w), got {size!r}")
    return hw  # type: ignore[return-value]


class _PairedCrop:
    """Crop every modality with the same window; subclasses choose the window's top-left corner."""

    def __init__(self, size: int | Sequence[int], keys: Sequence[str] | None = None) -> None:
        self.size, self.keys = _size_pair(size, type(self).__name__), keys

    def _corner(self, free_h: int, free_w: int) -> tuple[int, int]:
        raise NotImplementedError

    def __call__(self, sample: Sample) -> Sample:
        keys = _spatial_keys(sample, self.keys)
        H, W = _common_hw(sample, keys)
        h, w = self.size
        if h > H or w > W:
            raise ValueError(f"{type(self).__name__}: crop {self.size} larger than the images ({H}, {W})")
        top, left = self._corner(H - h, W - w)
        out = dict(sample)
        for k in keys:
            out[k] = sample[k][..., top : top + h, left : left + w]
        return out


class PairedRandomCrop(_PairedCrop):
    """The same random ``size`` crop of every modality."""

    def __init__(
        self, size: int | Sequence[int], keys: Sequence[str] | None = None, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(size, keys)
        self.generator = generator

    def _corner(self, free_h: int, free_w: int) -> tuple[int, int]:
        top = int(torch.randint(0, free_h + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, free_w + 1, (1,), generator=self.generator))
        return top, left


class PairedCenterCrop(_PairedCrop):
    """The central ``size`` crop of every modality (evaluation counterpart of the random crop)."""

    def _corner(self, free_h: int, free_w: int) -> tuple[int, int]:
        return free_h // 2, free_w // 2


class PairedRandomHorizontalFlip:
    """Flip every modality left-right with probability ``p``; the x component (channel 0) of flow keys is negated."""

    def __init__(
        self,
        p: float = 0.5,
        keys: Sequence[str] | None = None,
        flow_keys: Sequence[str] = ("flow",),
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"PairedRandomHorizontalFlip: p must be in [0, 1], got {p!r}")
        self.p, self.keys, self.flow_keys, self.generator = p, keys, tuple(flow_keys), generator

    def __call__(self, sample: Sample) -> Sample:
        keys = _spatial_keys(sample, self.keys)
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return sample
        out = dict(sample)
        for k in keys:
            x = sample[k].flip(-1)
            if k in self.flow_keys:
                x = x.clone()
                x[..., 0, :, :] = -x[..., 0, :, :]
            out[k] = x
        return out


class PairedResize:
    """Resize every modality to ``size``: bilinear for images, nearest for depth keys (missing zeros are not
    blended into valid depth); flow keys are rescaled as pixel displacements."""

    def __init__(
        self,
        size: int | Sequence[int],
        keys: Sequence[str] | None = None,
        depth_keys: Sequence[str] = ("depth",),
        flow_keys: Sequence[str] = ("flow",),
    ) -> None:
        self.size, self.keys = _size_pair(size, "PairedResize"), keys
        self.depth_keys, self.flow_keys = tuple(depth_keys), tuple(flow_keys)

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        for k in _spatial_keys(sample, self.keys):
            x = sample[k]
            if not torch.is_floating_point(x):
                raise TypeError(f"PairedResize: modality {k!r} must be floating point, got {x.dtype}")
            H, W = x.shape[-2:]
            flat = x.reshape(-1, *x.shape[-3:])
            mode = "nearest" if k in self.depth_keys else "bilinear"
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            y = F.interpolate(flat, size=self.size, mode=mode, **kwargs)
            if k in self.flow_keys:
                scale = torch.tensor([self.size[1] / W, self.size[0] / H], dtype=y.dtype).view(1, 2, 1, 1)
                y = y * scale
            out[k] = y.reshape(*x.shape[:-2], *self.size)
        return out


def jet(x: torch.Tensor) -> torch.Tensor:
    """Matplotlib-style jet colormap of values in [0, 1]: ``(..., 1, H, W)`` → ``(..., 3, H, W)``."""
    if x.shape[-3] != 1:
        raise ValueError(f"jet: expected a single channel at dim -3, got shape {tuple(x.shape)}")
    v = x.clamp(0.0, 1.0)
    r = (1.5 - (4 * v - 3).abs()).clamp(0, 1)
    g = (1.5 - (4 * v - 2).abs()).clamp(0, 1)
    b = (1.5 - (4 * v - 1).abs()).clamp(0, 1)
    return torch.cat([r, g, b], dim=-3)


class DepthToJet:
    """Encode a 1-channel depth modality as a 3-channel jet image (the action-recognition convention).

    ``normalize="fixed"`` maps [vmin, vmax] to [0, 1]; ``"sample"`` stretches each sample's valid (non-zero)
    depth range. Missing depth (0) stays at the low end of the colormap.
    """

    def __init__(self, key: str = "depth", normalize: str = "fixed", vmin: float = 0.0, vmax: float = 1.0) -> None:
        if normalize not in ("fixed", "sample"):
            raise ValueError(f"DepthToJet: normalize must be 'fixed' or 'sample', got {normalize!r}")
        if not vmax > vmin:
            raise ValueError(f"DepthToJet: need vmax > vmin, got vmin={vmin!r}, vmax={vmax!r}")
        self.key, self.normalize, self.vmin, self.vmax = key, normalize, vmin, vmax

    def __call__(self, sample: Sample) -> Sample:
        if self.key not in sample:
            raise KeyError(f"DepthToJet: sample has no modality {self.key!r} (keys: {sorted(sample)})")
        x = sample[self.key]
        if x.ndim < 3 or x.shape[-3] != 1:
            raise ValueError(f"DepthToJet: {self.key!r} must have 1 channel at dim -3, got {tuple(x.shape)}")
        if self.normalize == "fixed":
            v = (x - self.vmin) / (self.vmax - self.vmin)
        else:
            valid = x > 0
            lo = x[valid].min() if valid.any() else x.new_tensor(0.0)
            hi = x[valid].max() if valid.any() else x.new_tensor(1.0)
            v = torch.where(valid, (x - lo) / (hi - lo).clamp_min(1e-6), torch.zeros_like(x))
        out = dict(sample)
        out[self.key] = jet(v)
        return out


def sample_frame_indices(
    num_total: int,
    num_frames: int,
    mode: str = "uniform",
    *,
    num_clips: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of frames to read from a video of ``num_total`` frames.

    - ``"uniform"``: ``num_frames`` evenly spaced frames (centres of equal segments) → ``(T,)``.
    - ``"segment"``: TSN-style, one random frame from each of ``num_frames`` equal segments → ``(T,)``.
    - ``"multi_clip"``: test-time, ``num_clips`` uniform clips with evenly shifted offsets → ``(num_clips, T)``.
    Videos shorter than ``num_frames`` repeat frames (indices stay sorted).
    """
    if not isinstance(num_total, int) or num_total < 1:
        raise ValueError(f"sample_frame_indices: num_total must be a positive int, got {num_total!r}")
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"sample_frame_indices: num_frames must be a positive int, got {num_frames!r}")
    seg = num_total / num_frames
    starts = torch.arange(num_frames, dtype=torch.float64) * seg
    if mode == "uniform":
        idx = starts + seg / 2
    elif mode == "segment":
        idx = starts + torch.rand(num_frames, generator=generator, dtype=torch.float64) * seg
    elif mode == "multi_clip":
        if not isinstance(num_clips, int) or num_clips < 1:
            raise ValueError(f"sample_frame_indices: num_clips must be a positive int, got {num_clips!r}")
        offsets = (torch.arange(num_clips, dtype=torch.float64) + 0.5) / num_clips * seg
        idx = starts[None, :] + offsets[:, None]
    else:
        raise ValueError(f"sample_frame_indices: mode must be 'uniform', 'segment' or 'multi_clip', got {mode!r}")
    return idx.floor().long().clamp_(0, num_total - 1)


class FrameSampler:
    """Pick frames from clip modalities ``(T0, C, H, W)`` (same indices for all) and update ``frame_index``.

    ``mode="multi_clip"`` returns ``(num_clips, T, C, H, W)`` tensors and a ``(num_clips, T)`` frame_index;
    fold the clips into the batch at evaluation and average the logits.
    """

    def __init__(
        self,
        num_frames: int,
        mode: str = "uniform",
        *,
        num_clips: int = 1,
        keys: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        sample_frame_indices(max(num_frames, 1), num_frames, mode, num_clips=num_clips)  # validates arguments
        self.num_frames, self.mode, self.num_clips = num_frames, mode, num_clips
        self.keys, self.generator = keys, generator

    def __call__(self, sample: Sample) -> Sample:
        keys = [k for k in _spatial_keys(sample, self.keys) if sample[k].ndim == 4]
        if not keys:
            raise ValueError("FrameSampler: the sample has no clip (T, C, H, W) modality")
        lengths = {k: sample[k].shape[0] for k in keys}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"FrameSampler: clip modalities have different lengths {lengths}")
        total = next(iter(lengths.values()))
        idx = sample_frame_indices(
            total, self.num_frames, self.mode, num_clips=self.num_clips, generator=self.generator
        )
        out = dict(sample)
        for k in keys:
            out[k] = sample[k][idx]
        base = sample.get("frame_index", torch.arange(total, dtype=torch.int64))
        out["frame_index"] = base[idx]
        return out
