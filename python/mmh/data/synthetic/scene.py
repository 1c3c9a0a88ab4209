"""Shared scene pieces: textured back wall, background clutter, materials and the per-modality shading."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import render as R

__all__ = ["Materials", "Surfaces", "random_light", "shade", "texture", "wall_and_clutter"]

_F32 = np.float32


@dataclass
class Materials:
    """Per-surface material table (one row per surface, in z-buffer order)."""

    albedo: list[np.ndarray] = field(default_factory=list)
    freq: list[float] = field(default_factory=list)
    contrast: list[float] = field(default_factory=list)
    ir: list[float] = field(default_factory=list)

    def add(self, albedo, freq: float, contrast: float, ir: float) -> None:
        self.albedo.append(np.asarray(albedo, dtype=_F32))
        self.freq.append(freq)
        self.contrast.append(contrast)
        self.ir.append(ir)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-surface texture frequency, texture contrast and IR reflectance, each ``(S,)``."""
        return (
            np.asarray(self.freq, dtype=_F32),
            np.asarray(self.contrast, dtype=_F32),
            np.asarray(self.ir, dtype=_F32),
        )

    def albedo_at(self, idx: np.ndarray) -> np.ndarray:
        """RGB albedo ``(..., P, 3)`` of the visible surface; albedos are ``(3,)`` or per pixel ``(P, 3)``."""
        if all(a.ndim == 1 for a in self.albedo):
            return np.stack(self.albedo)[idx]
        # uniform albedos by a table look-up, then the per-pixel ones where their surface is visible
        rows = [a if a.ndim == 1 else np.zeros(3, dtype=a.dtype) for a in self.albedo]
        out = np.stack(rows)[idx]
        for k, a in enumerate(self.albedo):
            if a.ndim > 1:
                np.copyto(out, a, where=(idx == k)[..., None])
        return out


@dataclass
class Surfaces:
    """Hits and materials accumulated for one scene."""

    hits: list = field(default_factory=list)
    materials: Materials = field(default_factory=Materials)

    def add(self, hit, albedo, freq: float, contrast: float, ir: float) -> int:
        self.hits.append(hit)
        self.materials.add(albedo, freq, contrast, ir)
        return len(self.hits) - 1


def _period(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(2.0 * np.pi / rng.uniform(lo, hi))


def wall_and_clutter(
    rng: np.random.Generator, d: np.ndarray, num_clutter: int, z_range=(5.5, 7.0), clutter_z=(3.9, 5.2)
) -> Surfaces:
    """A slanted, textured back wall and ``num_clutter`` static spheres in front of it."""
    s = Surfaces()
    zw = rng.uniform(*z_range)
    normal = np.array([rng.uniform(-0.25, 0.25), rng.uniform(-0.25, 0.25), -1.0], dtype=_F32)
    grey = rng.uniform(0.35, 0.7) * (1 + rng.uniform(-0.15, 0.15, 3))
    s.add(
        R.plane(d, [0.0, 0.0, zw], normal), grey, _period(rng, 0.3, 0.8), rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.6)
    )
    if num_clutter > 0:
        z = rng.uniform(*clutter_z, num_clutter)
        xy = rng.uniform(-1.0, 1.0, (num_clutter, 2)) * z[:, None] * R.TAN_HALF_FOV
        centers = np.concatenate([xy, z[:, None]], axis=1)
        radii = rng.uniform(0.2, 0.5, num_clutter)
        t, n, q = R.sphere(*R.to_local(d, centers), radii)
        for k in range(num_clutter):
            s.add(
                (t[k], n[k], q[k]),
                rng.uniform(0.1, 0.9, 3),
                _period(rng, 0.1, 0.4),
                rng.uniform(0.1, 0.4),
                rng.uniform(0.2, 0.9),
            )
    return s


def random_light(rng: np.random.Generator, from_above: float = 0.7) -> np.ndarray:
    """Unit direction towards a distant light, in front of the scene; ``from_above`` = P(light above)."""
    y = rng.uniform(0.2, 1.0) * (-1.0 if rng.random() < from_above else 1.0)
    v = np.array([rng.uniform(-1.0, 1.0), y, -rng.uniform(0.6, 1.5)], dtype=_F32)
    return v / np.linalg.norm(v)


def shade(
    modality: str,
    idx: np.ndarray,
    t: np.ndarray,
    n: np.ndarray,
    q: np.ndarray,
    d: np.ndarray,
    materials: Materials,
    rng: np.random.Generator,
    *,
    light: np.ndarray | None = None,
    point_light: bool = False,
    ambient: float = 0.35,
    gain: np.ndarray | float = 1.0,
    noise: float = 0.02,
    depth_noise: float = 0.003,
    dropout: float = 0.02,
    depth_range: tuple[float, float] = (0.0, R.Z_FAR),
    ir_ref: float = 2.5,
    tex: np.ndarray | None = None,
) -> np.ndarray:
    """Render one modality channels-last: rgb (..., P, 3), depth/ir (..., P, 1).

    rgb: ``light`` is a direction, or a position when ``point_light`` (diffuse falls off with distance).
    ``tex``: the value of :func:`texture` for these inputs, to share it between modalities.
    """
    if modality == "depth":
        return R.kinect_depth(t, n, d, rng, depth_noise, dropout, *depth_range)[..., None]
    if tex is None:
        tex = texture(idx, q, materials)
    if modality == "rgb":
        if light is None:
            raise ValueError("shade: the rgb modality needs a light direction")
        g = np.asarray(gain, dtype=_F32).reshape(np.shape(gain) + (1,) * (idx.ndim - np.ndim(gain)))
        points = np.where(np.isfinite(t), t, 0.0)[..., None] * d if point_light else None
        img = R.lambert_rgb(materials.albedo_at(idx) * tex[..., None], n, light, ambient, g[..., None], points)
        img = img + rng.standard_normal(img.shape, dtype=_F32) * noise
        return np.clip(img, 0.0, 1.0).astype(_F32, copy=False)
    if modality == "ir":
        rho = np.asarray(materials.ir, dtype=_F32)
        img = R.active_ir(rho[idx] * (0.85 + 0.15 * tex), n, d, t, ref_dist=ir_ref)
        img = img + rng.standard_normal(img.shape, dtype=_F32) * noise
        return np.clip(img, 0.0, 1.0).astype(_F32, copy=False)[..., None]
    raise ValueError(f"shade: unknown modality {modality!r}")


def texture(idx: np.ndarray, q: np.ndarray, materials: Materials) -> np.ndarray:
    """Checker texture factor ``1 + contrast * checker`` of the visible surface, ``(..., P)``."""
    freq = np.asarray(materials.freq, dtype=_F32)
    contrast = np.asarray(materials.contrast, dtype=_F32)
    return 1.0 + contrast[idx] * R.checker(q, freq[idx])


def to_chw(img: np.ndarray, resolution: int) -> np.ndarray:
    """Channels-last ``(..., P, C)`` → ``(..., C, H, W)``."""
    lead = img.shape[:-2]
    out = img.reshape(lead + (resolution, resolution, img.shape[-1]))
    k = len(lead)
    return out.transpose(*range(k), k + 2, k, k + 1)  # = np.moveaxis(out, -1, -3)
