"""Sample transforms on item dicts (``{"rgb": ..., "depth": ..., "label": ..., "frame_index": ...}``).

Spatial transforms apply the *same* random crop / flip / resize / rotation to every modality of a sample (images
``(C, H, W)`` or clips ``(T, C, H, W)``, one draw per clip, not per frame); flow fields are flipped, rescaled and
rotated as vector fields. Random transforms draw from ``generator`` when given, else from torch's global generator
(which :func:`mmh.data.make_loader` seeds per worker).

Configs name transforms through a registry (``dataset.transforms: {train: [...], eval: [...]}``, each entry
``{name: <transform>, <kwargs>...}`` or a bare name): :func:`register_transform`, :func:`build_transform`,
:func:`build_transforms`, :func:`list_transforms`; :class:`TransformedDataset` applies them to a dataset's items.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..utils.registry import check_name, register_unique

__all__ = [
    "NON_SPATIAL_KEYS",
    "Compose",
    "DepthToJet",
    "FrameSampler",
    "NORMALIZE_STATS",
    "Normalize",
    "PairedCenterCrop",
    "PairedColorJitter",
    "PairedRandomCrop",
    "PairedRandomHorizontalFlip",
    "PairedRandomResizedCrop",
    "PairedRandomRotation",
    "PairedResize",
    "SpeckleNoise",
    "TransformedDataset",
    "build_transform",
    "build_transforms",
    "jet",
    "list_transforms",
    "register_transform",
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
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"PairedRandomHorizontalFlip: p must be a number in [0, 1], got {p!r}")
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


def _pair(value: Any, name: str, *, symmetric: bool, low: float = -math.inf) -> tuple[float, float]:
    """A number ``v`` as ``(-v, v)`` (``symmetric``) or a ``(lo, hi)`` pair with ``low <= lo <= hi``."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and symmetric:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0 or a (low, high) pair, got {value!r}")
        return -float(value), float(value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        lo, hi = float(value[0]), float(value[1])
        if not low <= lo <= hi:
            raise ValueError(f"{name} must be a (low, high) pair with {low} <= low <= high, got {list(value)!r}")
        return lo, hi
    what = "a number >= 0 or a (low, high) pair" if symmetric else "a (low, high) pair of numbers"
    raise TypeError(f"{name} must be {what}, got {value!r}")


def _resample(
    x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], mode: str, fill: float = 0.0
) -> torch.Tensor:
    """``grid_sample`` of an image / clip ``(..., C, H, W)`` through the affine map ``theta`` (output -> input, in
    normalised coordinates, ``align_corners=False``) onto ``size``; points outside the input take ``fill``."""
    flat = x.reshape(-1, *x.shape[-3:])
    grid = F.affine_grid(
        theta.to(flat.dtype).expand(flat.shape[0], 2, 3), [flat.shape[0], flat.shape[1], *size], align_corners=False
    )
    shifted = flat - fill if fill else flat
    y = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=False)
    y = y + fill if fill else y
    return y.reshape(*x.shape[:-2], *size)


class PairedRandomResizedCrop:
    """torchvision's ``RandomResizedCrop``, paired: one window per sample (the same for every modality and every
    frame of a clip) covering a random fraction ``scale`` of the image area with a random aspect ratio ``ratio``
    (drawn log-uniformly), resized to ``size`` like :class:`PairedResize` (bilinear, nearest for depth keys, flow
    rescaled). The window is drawn exactly as ``torchvision.transforms.RandomResizedCrop.get_params`` draws it (ten
    tries, then the central crop), so the same generator state gives torchvision's window."""

    def __init__(
        self,
        size: int | Sequence[int],
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0),
        keys: Sequence[str] | None = None,
        depth_keys: Sequence[str] = ("depth",),
        flow_keys: Sequence[str] = ("flow",),
        generator: torch.Generator | None = None,
    ) -> None:
        name = "PairedRandomResizedCrop"
        self.size = _size_pair(size, name)
        self.scale = _pair(scale, f"{name}: scale", symmetric=False, low=0.0)
        self.ratio = _pair(ratio, f"{name}: ratio", symmetric=False, low=0.0)
        if self.scale[1] <= 0 or self.scale[1] > 1:
            raise ValueError(f"{name}: scale must lie in (0, 1] (fractions of the image area), got {list(scale)!r}")
        if self.ratio[0] <= 0:
            raise ValueError(f"{name}: ratio must be positive (width / height), got {list(ratio)!r}")
        self.keys, self.generator = keys, generator
        self._resize = PairedResize(self.size, keys, depth_keys, flow_keys)

    def window(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A random ``(top, left, h, w)`` window of an image of ``height`` x ``width`` (torchvision's draws)."""
        g, area = self.generator, height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=g).item()
            aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=g)).item()
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
                left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
                return top, left, h, w
        in_ratio = width / height  # fallback: the central crop with the ratio clamped to the range
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, sample: Sample) -> Sample:
        keys = _spatial_keys(sample, self.keys)
        top, left, h, w = self.window(*_common_hw(sample, keys))
        out = dict(sample)
        for k in keys:
            out[k] = sample[k][..., top : top + h, left : left + w]
        return self._resize(out)

    def __repr__(self) -> str:
        return f"PairedRandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class PairedRandomRotation:
    """Rotate every modality by the same random angle, uniform in ``degrees`` (a number ``d``: ``[-d, d]``; or a
    ``(low, high)`` pair), counter-clockwise for positive angles as torchvision's ``rotate``, about the image centre.

    - Resampling: bilinear for images, nearest for depth keys (missing zeros are not blended into valid depth).
      Points from outside the image take ``fill`` (flow keys: 0, no motion).
    - Flow keys are rotated as vector fields: after resampling, each displacement ``(u, v)`` (x right, y down) is
      rotated by the same angle, so that the flow still describes the motion of the rotated frames.
    - ``expand``: ``False`` keeps the size (corners cut, torchvision's default); ``True`` makes the canvas the
      rotated image's bounding box; a number ``s`` scales that bounding box by ``s`` — the CASIA-SURF reference code
      of the MMH paper rotates onto ``0.8`` x the bounding box before its random 112 x 112 crop. The canvas is
      ``int(s * (H |sin| + W |cos|))`` wide and ``int(s * (H |cos| + W |sin|))`` high, so its size varies with the
      angle: follow it with a crop or a resize.
    """

    def __init__(
        self,
        degrees: float | Sequence[float],
        expand: bool | float = False,
        fill: float = 0.0,
        keys: Sequence[str] | None = None,
        depth_keys: Sequence[str] = ("depth",),
        flow_keys: Sequence[str] = ("flow",),
        generator: torch.Generator | None = None,
    ) -> None:
        name = "PairedRandomRotation"
        self.degrees = _pair(degrees, f"{name}: degrees", symmetric=True)
        if isinstance(expand, bool):
            self.expand: float | None = 1.0 if expand else None
        elif isinstance(expand, numbers.Real) and math.isfinite(expand) and expand > 0:
            self.expand = float(expand)
        else:
            raise ValueError(f"{name}: expand must be true, false or a number > 0 (the canvas scale), got {expand!r}")
        if isinstance(fill, bool) or not isinstance(fill, numbers.Real) or not math.isfinite(fill):
            raise TypeError(f"{name}: fill must be a finite number, got {fill!r}")
        self.fill, self.keys, self.generator = float(fill), keys, generator
        self.depth_keys, self.flow_keys = tuple(depth_keys), tuple(flow_keys)

    def canvas(self, height: int, width: int, angle: float) -> tuple[int, int]:
        """The output ``(height, width)`` for an input of ``height`` x ``width`` rotated by ``angle`` degrees."""
        if self.expand is None:
            return height, width
        rad = math.radians(angle)
        c, s = abs(math.cos(rad)) * self.expand, abs(math.sin(rad)) * self.expand
        oh, ow = int(height * c + width * s + 1e-9), int(height * s + width * c + 1e-9)
        if oh < 1 or ow < 1:
            raise ValueError(f"PairedRandomRotation: expand={self.expand} leaves no pixel of a {height}x{width} image")
        return oh, ow

    def rotate(self, sample: Sample, angle: float) -> Sample:
        """``sample`` rotated by ``angle`` degrees (counter-clockwise), every spatial modality alike."""
        keys = _spatial_keys(sample, self.keys)
        H, W = _common_hw(sample, keys)
        oh, ow = self.canvas(H, W, angle)
        rad = math.radians(angle)
        c, s = math.cos(rad), math.sin(rad)
        # output pixel offset from the centre (X, Y), y down -> input offset (c X - s Y, s X + c Y); normalised
        theta = torch.tensor([[c * ow / W, -s * oh / W, 0.0], [s * ow / H, c * oh / H, 0.0]], dtype=torch.float64)
        out = dict(sample)
        for k in keys:
            x = sample[k]
            if not torch.is_floating_point(x):
                raise TypeError(f"PairedRandomRotation: modality {k!r} must be floating point, got {x.dtype}")
            mode = "nearest" if k in self.depth_keys else "bilinear"
            y = _resample(x, theta[None], (oh, ow), mode, 0.0 if k in self.flow_keys else self.fill)
            if k in self.flow_keys:
                if y.shape[-3] != 2:
                    raise ValueError(f"PairedRandomRotation: flow {k!r} must have 2 channels (u, v), got {y.shape}")
                u, v = y[..., 0, :, :], y[..., 1, :, :]
                y = torch.stack([c * u + s * v, c * v - s * u], dim=-3)
            out[k] = y
        return out

    def __call__(self, sample: Sample) -> Sample:
        angle = float(torch.empty(1).uniform_(self.degrees[0], self.degrees[1], generator=self.generator).item())
        return self.rotate(sample, angle)

    def __repr__(self) -> str:
        return f"PairedRandomRotation(degrees={self.degrees}, expand={self.expand}, fill={self.fill})"


class PairedColorJitter:
    """torchvision's ``ColorJitter`` on the ``keys`` modalities (default ``("rgb",)``), one draw per sample.

    Depth, IR and other maps are left alone by default: their values are measurements (distance, reflectance), and
    a colour distortion would change what they mean. Each factor is a number ``f`` (brightness / contrast /
    saturation: uniform in ``[max(0, 1 - f), 1 + f]``; hue: ``[-f, f]``, ``f <= 0.5``) or a ``(low, high)`` pair;
    0 turns it off. The draws (a random order of the four adjustments, then the factors) and the adjustments
    (``torchvision.transforms.v2.functional``) are torchvision's, so the same generator state gives its result.
    Images must hold values in ``[0, 1]`` (torchvision's convention for float images: it clips to that range),
    so apply it to data that is not normalised to zero mean.
    """

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        hue: float | Sequence[float] = 0.0,
        keys: Sequence[str] = ("rgb",),
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"PairedColorJitter: keys must be a list of modality names, got {keys!r}")
        self.brightness = self._factor(brightness, "brightness")
        self.contrast = self._factor(contrast, "contrast")
        self.saturation = self._factor(saturation, "saturation")
        self.hue = self._factor(hue, "hue", center=0.0, bound=0.5)
        self.keys, self.generator = tuple(keys), generator

    @staticmethod
    def _factor(value: Any, name: str, center: float = 1.0, bound: float = math.inf) -> tuple[float, float] | None:
        lo, hi = _pair(value, f"PairedColorJitter: {name}", symmetric=True)
        if isinstance(value, numbers.Real):
            lo, hi = center + lo, center + hi
            lo = max(lo, 0.0) if center == 1.0 else lo
        floor = 0.0 if center == 1.0 else center - bound  # factors are >= 0; hue shifts lie in [-0.5, 0.5]
        if not floor <= lo <= hi <= center + bound:
            raise ValueError(f"PairedColorJitter: {name} must lie in [{floor}, {center + bound}], got {value!r}")
        return None if lo == hi == center else (lo, hi)

    def params(self) -> tuple[list[int], float | None, float | None, float | None, float | None]:
        """One draw: the order of (brightness, contrast, saturation, hue) and their factors (None: off)."""
        g = self.generator
        order = torch.randperm(4, generator=g).tolist()
        b, c, s, h = (
            None if r is None else float(torch.empty(1).uniform_(r[0], r[1], generator=g))
            for r in (self.brightness, self.contrast, self.saturation, self.hue)
        )
        return order, b, c, s, h

    def __call__(self, sample: Sample) -> Sample:
        from torchvision.transforms.v2 import functional as TF

        keys = _spatial_keys(sample, self.keys)
        order, b, c, s, h = self.params()
        out = dict(sample)
        for k in keys:
            x = sample[k]
            if not torch.is_floating_point(x):
                raise TypeError(f"PairedColorJitter: modality {k!r} must be floating point, got {x.dtype}")
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(
                    f"PairedColorJitter: modality {k!r} holds values in [{lo:.3g}, {hi:.3g}], not [0, 1]; colour "
                    f"jitter needs unnormalised images (e.g. paired_folder with normalize: false)"
                )
            for i in order:
                if i == 0 and b is not None:
                    x = TF.adjust_brightness(x, b)
                elif i == 1 and c is not None:
                    x = TF.adjust_contrast(x, c)
                elif i == 2 and s is not None:
                    x = TF.adjust_saturation(x, s)
                elif i == 3 and h is not None:
                    x = TF.adjust_hue(x, h)
            out[k] = x
        return out

    def __repr__(self) -> str:
        return (
            f"PairedColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, keys={list(self.keys)})"
        )


def _torchvision_stats(weights: str) -> tuple[list[float], list[float]]:
    """``(mean, std)`` of the inputs a torchvision weight file was trained on, read from its enum's ``transforms()``."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.video import R2Plus1D_18_Weights

    enum = {"imagenet": ResNet50_Weights.IMAGENET1K_V1, "kinetics400": R2Plus1D_18_Weights.KINETICS400_V1}[weights]
    preset = enum.transforms()
    return [float(m) for m in preset.mean], [float(s) for s in preset.std]


#: The named statistics :class:`Normalize` accepts (``stats=<name>``), each read from torchvision when used: the
#: input statistics of torchvision's ImageNet ``IMAGENET1K_V1`` files (every ResNet shares them) and of its video
#: models' Kinetics-400 files (``R2Plus1D_18_Weights.KINETICS400_V1``). The I3D port's Kinetics-400 files are not
#: these: they take ``x * 2 - 1`` (``mean: [0.5], std: [0.5]``).
NORMALIZE_STATS = ("imagenet", "kinetics400")


class Normalize:
    """``(x - mean) / std`` per channel on the ``keys`` modalities (default ``("rgb",)``): the input statistics of
    the published weights a network starts from.

    Pixels are read in [0, 1]; weights trained on another range need this as the last transform (after colour
    jitter and ``depth_to_jet``, which expect [0, 1]). ``mean`` and ``std`` are lists with one value per channel, or
    one value for every channel; ``stats`` names torchvision's statistics instead (:data:`NORMALIZE_STATS`). Images
    ``(C, H, W)`` and clips ``(T, C, H, W)`` (channels at dim -3) alike. Modalities not in ``keys`` are left alone:
    flow, depth and IR are normalised only when named.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        keys: Sequence[str] = ("rgb",),
        stats: str | None = None,
    ) -> None:
        if isinstance(keys, str) or not isinstance(keys, Sequence) or not all(isinstance(k, str) for k in keys):
            raise TypeError(f"Normalize: keys must be a list of modality names, got {keys!r}")
        if not keys:
            raise ValueError("Normalize: keys is empty (name the modalities to normalise)")
        if stats is not None:
            if mean is not None or std is not None:
                raise ValueError(f"Normalize: give stats ({stats!r}) or mean and std, not both")
            if stats not in NORMALIZE_STATS:
                raise ValueError(f"Normalize: unknown stats {stats!r}; known: {list(NORMALIZE_STATS)}")
            mean, std = _torchvision_stats(stats)
        elif mean is None or std is None:
            raise TypeError("Normalize: needs mean and std (lists, one value per channel or one for all) or stats")
        self.mean, self.std = self._values(mean, "mean"), self._values(std, "std")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"Normalize: std must be > 0, got {list(std)!r}")
        if len(self.mean) > 1 and len(self.std) > 1 and len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean has {len(self.mean)} values and std {len(self.std)}; they must agree")
        self.keys, self.stats = tuple(keys), stats

    @staticmethod
    def _values(values: Any, name: str) -> tuple[float, ...]:
        if isinstance(values, numbers.Real) and not isinstance(values, bool):
            values = [values]
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise TypeError(f"Normalize: {name} must be a non-empty list of numbers, got {values!r}")
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ValueError(f"Normalize: {name} must hold finite numbers, got {list(values)!r}")
        return tuple(float(v) for v in values)

    def __call__(self, sample: Sample) -> Sample:
        if not isinstance(sample, dict):
            raise TypeError(f"{self!r}: transforms expect a dict sample, got {type(sample).__name__}")
        out = dict(sample)
        for k in self.keys:
            if k not in sample:
                raise KeyError(f"{self!r}: sample has no modality {k!r} (keys: {sorted(sample)})")
            x = sample[k]
            if not torch.is_tensor(x) or not torch.is_floating_point(x) or x.ndim < 3:
                what = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
                raise TypeError(f"{self!r}: modality {k!r} must be a floating-point (..., C, H, W) tensor, got {what}")
            c = x.shape[-3]
            for name, values in (("mean", self.mean), ("std", self.std)):
                if len(values) not in (1, c):
                    raise ValueError(
                        f"{self!r}: {name} has {len(values)} values but modality {k!r} has {c} channels "
                        f"(shape {tuple(x.shape)}); give {c} values or 1"
                    )
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            out[k] = (x - mean) / std
        return out

    def __repr__(self) -> str:
        source = f"stats={self.stats!r}" if self.stats else f"mean={list(self.mean)}, std={list(self.std)}"
        return f"Normalize(keys={list(self.keys)}, {source})"


# ------------------------------------------------------------------------------------------------------ registry
Transform = Callable[[Sample], Sample]
TransformSpec = str | Mapping[str, Any]
_TRANSFORMS: dict[str, Callable[..., Transform]] = {}
T = TypeVar("T", bound=Callable[..., Transform])


def register_transform(name: str) -> Callable[[T], T]:
    """Register a transform class or factory under ``name`` (a config names it in ``dataset.transforms``).

    The factory is called with the entry's other keys as keyword arguments and must return a callable on sample
    dicts. Registering another object under a taken name raises ``ValueError``.
    """
    check_name("transform", name)

    def decorator(factory: T) -> T:
        return register_unique(_TRANSFORMS, "transform", name, factory, factory)

    return decorator


def list_transforms() -> list[str]:
    """Names of all registered transforms, sorted."""
    return sorted(_TRANSFORMS)


def build_transform(spec: TransformSpec, where: str = "transform") -> Transform:
    """The transform an entry describes: a registered name, or a mapping ``{name: <name>, <kwargs>...}``.

    Errors name ``where`` (e.g. ``dataset.transforms.train[0]``): an unknown name is a ``ValueError`` listing the
    known ones; bad arguments are a ``TypeError`` / ``ValueError`` naming the transform.
    """
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"{where}: a transform entry needs a 'name' key, got {dict(spec)!r}")
        name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        if not all(isinstance(k, str) for k in kwargs):
            raise TypeError(f"{where}: argument names must be strings, got {sorted(map(repr, kwargs))}")
    else:
        raise TypeError(f"{where}: a transform is a name or a mapping {{name: ..., <kwargs>}}, got {spec!r}")
    if not isinstance(name, str) or name not in _TRANSFORMS:
        raise ValueError(f"{where}: unknown transform {name!r}; known: {list_transforms()}")
    if "generator" in kwargs:
        raise TypeError(f"{where} ({name}): 'generator' cannot be set from a config (draws use torch's generator)")
    for key in ("keys", "depth_keys", "flow_keys"):
        value = kwargs.get(key)
        if value is not None and (isinstance(value, str) or not isinstance(value, Sequence)):
            raise TypeError(f"{where} ({name}): {key} must be a list of modality names, got {value!r}")
    try:
        return _TRANSFORMS[name](**kwargs)
    except TypeError as exc:
        raise TypeError(f"{where} ({name}): {exc}") from None
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{where} ({name}): {exc}") from None


def build_transforms(specs: Sequence[TransformSpec] | None, where: str = "transforms") -> Compose:
    """:class:`Compose` of the entries of ``specs`` in order (None or [] gives the identity); entry ``i``'s errors
    name ``<where>[i]``."""
    if specs is None:
        specs = []
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Sequence):
        raise TypeError(f"{where} must be a list of transforms, got {specs!r}")
    return Compose([build_transform(s, f"{where}[{i}]") for i, s in enumerate(specs)])


register_transform("random_crop")(PairedRandomCrop)
register_transform("center_crop")(PairedCenterCrop)
register_transform("hflip")(PairedRandomHorizontalFlip)
register_transform("resize")(PairedResize)
register_transform("random_resized_crop")(PairedRandomResizedCrop)
register_transform("random_rotation")(PairedRandomRotation)
register_transform("color_jitter")(PairedColorJitter)
register_transform("depth_to_jet")(DepthToJet)
register_transform("speckle_noise")(SpeckleNoise)
register_transform("normalize")(Normalize)


class TransformedDataset(Dataset):
    """``dataset`` with ``transform`` applied to every item it returns (random transforms draw anew each read).

    ``spec`` is the list of config entries the transform was built from (recorded, e.g. for cache keys). The
    dataset's other attributes (``modalities``, ``num_classes``, ``class_names``, ``normalization``...) are the
    wrapped dataset's. Items are read one at a time, so each sample of a batch gets its own draw, also over a
    :class:`mmh.data.CachedDataset`.
    """

    def __init__(self, dataset: Dataset, transform: Transform, spec: Sequence[Any] = ()) -> None:
        if not callable(transform):
            raise TypeError(f"TransformedDataset: transform must be callable, got {transform!r}")
        self.dataset, self.transform, self.spec = dataset, transform, list(spec)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        return self.transform(dict(self.dataset[index]))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "transform", "spec"):
            raise AttributeError(name)  # unset yet (unpickling) or a dunder: never forwarded
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"TransformedDataset({type(self.dataset).__name__}, {self.transform!r})"
