"""``synthetic_shapes``: still RGB-D(-IR) images whose classes depth separates and RGB only weakly.

Tasks (``task=``):
- ``"shape_pairs"`` (default, 4 classes): sphere / disc / bump / dent. The disc is painted with a
  baked-in sphere-like shading (a photo of a sphere), and a bump lit from one side looks like a dent lit
  from the other (the light comes from above only with probability ``1 - 0.4 * difficulty``).
- ``"true_size"`` (2 classes): small / large sphere-like object, its apparent size drawn independently of
  its true size — only depth (distance) and the apparent scale of its world-unit texture tell them apart.
"""

from __future__ import annotations

import numpy as np

from ..registry import register_dataset
from . import render as R
from .base import SceneRNG, SyntheticDataset
from .scene import Surfaces, random_light, shade, to_chw, wall_and_clutter

__all__ = ["SyntheticShapes"]

_F32 = np.float32
_TASKS = {"shape_pairs": ["sphere", "disc", "bump", "dent"], "true_size": ["small", "large"]}


def _relief(wall_hit, center_xy, radius: float, height: float):
    """Carve a smooth bump (height > 0, towards the camera) or dent (height < 0) into a wall hit."""
    t, n, p = wall_hit
    dx, dy = p[:, 0] - center_xy[0], p[:, 1] - center_xy[1]
    u = np.clip(1.0 - (dx * dx + dy * dy) / (radius * radius), 0.0, None)
    dh = -4.0 * height * u / (radius * radius)  # dH/dx = dh * dx, H = height * u²
    n = n - np.stack([dh * dx, dh * dy, np.zeros_like(dx)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return (t - height * u * u).astype(_F32), n.astype(_F32), p


@register_dataset("synthetic_shapes")
class SyntheticShapes(SyntheticDataset):
    """Still images ``(C, H, W)``; modalities rgb / depth / ir (default rgb + depth)."""

    name = "synthetic_shapes"
    available_modalities = ("rgb", "depth", "ir")
    default_modalities = ("rgb", "depth")

    def __init__(self, split: str = "train", *, task: str = "shape_pairs", **kwargs) -> None:
        if task not in _TASKS:
            raise ValueError(f"synthetic_shapes: task must be one of {sorted(_TASKS)}, got {task!r}")
        self.task = task
        self.class_names = list(_TASKS[task])
        super().__init__(split, **kwargs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", task={self.task!r}"

    def generate(self, rng: SceneRNG, label: int, index: int) -> dict[str, np.ndarray]:
        g, hard, res = rng.scene, self.difficulty, self.resolution
        d = R.ray_grid(res)
        light = random_light(g, from_above=1.0 - 0.4 * hard)
        z_obj = g.uniform(2.5, 3.5)
        xy = g.uniform(-0.15, 0.15, 2) * z_obj * R.TAN_HALF_FOV * 2.0
        if self.task == "true_size":
            size = g.uniform(0.25, 0.35) if label == 0 else g.uniform(0.5, 0.7)
            apparent = g.uniform(0.12, 0.24)  # radius / distance, independent of the true size
            z_obj = size / apparent
            xy = xy * z_obj / 3.0
        else:
            size = g.uniform(0.45, 0.7)
        center = np.array([xy[0], xy[1], z_obj], dtype=_F32)
        relief = label in (2, 3) and self.task == "shape_pairs"
        scene = wall_and_clutter(
            g,
            d,
            round(1 + 3 * hard),
            z_range=(4.0, 5.0) if relief else (5.5, 7.0),
            clutter_z=(3.6, 4.5) if not relief else (3.0, 3.4),
        )
        if relief:
            z_wall = float(scene.hits[0][0][d.shape[0] // 2 + res // 2])  # wall depth at the image centre
            sign = 1.0 if label == 2 else -1.0
            height = sign * g.uniform(0.5, 0.8) * size
            scene.hits[0] = _relief(scene.hits[0], center[:2] * z_wall / z_obj, size, height)
        elif label == 1 and self.task == "shape_pairs":
            normal = np.array([g.uniform(-0.2, 0.2), g.uniform(-0.2, 0.2), -1.0], dtype=_F32)
            t, n, p = R.plane(d, center, normal, radius=size)
            fake = random_light(g, from_above=1.0 - 0.4 * hard)
            q = (p - center) / size  # baked shading of a unit sphere seen head-on
            zq = np.sqrt(np.clip(1.0 - q[:, 0] ** 2 - q[:, 1] ** 2, 0.0, 1.0))
            baked = np.clip(np.stack([q[:, 0], q[:, 1], -zq], -1) @ fake, 0.0, None)
            self._add_object(g, scene, (t, n, p - center), tint=0.45 + 0.8 * baked)
        else:
            t, n, q = R.sphere(*R.to_local(d, center), size)
            self._add_object(g, scene, (t, n, q))
        idx, t, n, q = R.composite(scene.hits, (d.shape[0],))
        ambient = g.uniform(0.25, 0.4)
        out = {}
        for m in self.modalities:
            img = shade(
                m,
                idx,
                t,
                n,
                q,
                d,
                scene.materials,
                rng.noise(m),
                light=light,
                ambient=ambient,
                gain=g.uniform(0.85, 1.1),
                noise=0.015 + 0.04 * hard,
                depth_noise=0.002 + 0.004 * hard,
                dropout=0.01 + 0.04 * hard,
            )
            out[m] = to_chw(img, res)
        return out

    @staticmethod
    def _add_object(g: np.random.Generator, scene: Surfaces, hit, tint=None) -> None:
        albedo = g.uniform(0.3, 0.9, 3)
        if tint is not None:  # per-pixel albedo: a painted surface
            albedo = np.clip(albedo * tint[:, None], 0.0, 1.0)
        scene.add(hit, albedo, 2.0 * np.pi / g.uniform(0.15, 0.3), g.uniform(0.1, 0.25), g.uniform(0.5, 1.0))
