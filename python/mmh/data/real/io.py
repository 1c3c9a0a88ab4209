"""Readers for image / depth / flow files. Every failure names the offending file."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["IMAGE_EXTS", "read_depth", "read_flow", "read_gray", "read_hha", "read_image", "verify_file"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _open(path: str):
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file: {path}")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise OSError(f"unreadable image file {path}: {exc}") from exc
    return img


def load_npy(path: str, what: str = ".npy file") -> np.ndarray:
    """A ``.npy`` array, never unpickled (``allow_pickle=False``); errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing file: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise OSError(f"unreadable {what} {path}: {exc}") from exc


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = a[None]
    else:
        a = np.moveaxis(a, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def read_image(path: str) -> torch.Tensor:
    """RGB image as float32 ``(3, H, W)`` in [0, 1]."""
    return _to_tensor(np.asarray(_open(path).convert("RGB"), dtype=np.float32) / 255.0)


def read_gray(path: str) -> torch.Tensor:
    """Single-channel 8-bit image (e.g. an IR frame) as float32 ``(1, H, W)`` in [0, 1]."""
    return _to_tensor(np.asarray(_open(path).convert("L"), dtype=np.float32) / 255.0)


def read_hha(path: str) -> torch.Tensor:
    """HHA-encoded depth (3-channel 8-bit PNG) as float32 ``(3, H, W)`` in [0, 1]."""
    return read_image(path)


def read_depth(path: str, max_value: float = 10000.0) -> torch.Tensor:
    """Depth map as float32 ``(1, H, W)``; 0 = missing.

    - 8-bit images (already normalised, e.g. CASIA-SURF crops): value / 255.
    - 16-bit images (Kinect millimetres, e.g. NTU / NW-UCLA): value / ``max_value``, clipped to [0, 1].
    - ``.npy`` arrays ``(H, W)`` or ``(1, H, W)``: value / ``max_value`` when ``max_value`` is given and
      the array is not already in [0, 1].
    """
    if path.endswith(".npy"):
        a = load_npy(path, "depth file")
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"depth file {path}: expected a numeric (H, W) array, got {a.dtype} {a.shape}")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"depth file {path} contains NaN or inf")
        if a.max(initial=0.0) > 1.0:
            a = np.clip(a / max_value, 0.0, 1.0)
        return _to_tensor(a)
    img = _open(path)
    a = np.asarray(img)
    if a.ndim == 3:  # an RGB-saved 8-bit depth: take one channel
        a = a[..., 0]
    if a.dtype == np.uint8:
        return _to_tensor(a.astype(np.float32) / 255.0)
    return _to_tensor(np.clip(a.astype(np.float32) / max_value, 0.0, 1.0))


def read_flow(paths: Sequence[str], bound: float = 20.0) -> torch.Tensor:
    """Optical flow from an ``(x, y)`` pair of 8-bit images (denseflow / TV-L1 convention: 128 = 0,
    ``[0, 255]`` ↔ ``[-bound, bound]`` pixels) as float32 ``(2, H, W)`` in pixels."""
    if len(paths) != 2:
        raise ValueError(f"read_flow: expected an (x, y) pair of files, got {paths!r}")
    x, y = (read_gray(p) for p in paths)
    if x.shape != y.shape:
        raise ValueError(
            f"read_flow: {paths[0]} and {paths[1]} have different sizes {tuple(x.shape)} / {tuple(y.shape)}"
        )
    return torch.cat([x, y], 0) * (2.0 * bound) - bound


def verify_file(path: str) -> None:
    """Raise ``FileNotFoundError``/``OSError`` naming ``path`` if it is missing or cannot be decoded."""
    if path.endswith(".npy"):
        read_depth(path)
    else:
        _open(path)
