"""``synthetic_motion``: 8-frame clips of an object approaching, receding or moving laterally.

Depth sees the motion in depth directly. RGB only weakly: through the change of apparent size, of the
apparent scale of a texture fixed in world units, and of the shading from a lamp 2-3 m away (brightness
falls with distance) — confounded by the object's random true size, lateral drift, rotation of
non-spherical objects, clutter, lighting flicker and sensor noise. IR (an active illuminator at the camera)
falls off as 1/z², so it also tells distance; flow shows the expansion / contraction directly.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..registry import register_dataset
from . import render as R
from .base import SceneRNG, SyntheticDataset
from .scene import random_light, shade, to_chw, wall_and_clutter

__all__ = ["SyntheticMotion"]

_F32 = np.float32


def _main_object(d: np.ndarray, kind: int, size: float, centers: np.ndarray, rots: np.ndarray):
    """Sphere / cube / cylinder per frame; normals returned in camera coordinates, ``q`` in the object frame."""
    o, dl = R.to_local(d, centers, rots)
    k = np.full(len(centers), size, dtype=_F32)
    if kind == 0:
        t, n, q = R.sphere(o, dl, k)
    elif kind == 1:
        t, n, q = R.box(o, dl, 0.78 * k)
    else:
        t, n, q = R.cylinder(o, dl, 0.8 * k, 0.9 * k)
    return t, n @ np.swapaxes(rots, -1, -2), q


@register_dataset("synthetic_motion")
class SyntheticMotion(SyntheticDataset):
    """Clips ``(T, C, H, W)``; classes approach / recede / lateral (labels 0 / 1 / 2).

    Modalities: ``rgb`` (3 ch), ``depth`` (1 ch, z / 8 m, 0 = missing), ``ir`` (1 ch, active NIR, falls off
    as 1/z²), ``flow`` (2 ch, forward optical flow in pixels per frame, (dx, dy)). Default: rgb + depth.
    ``difficulty`` in [0, 1] shrinks the motion in depth and adds clutter, rotation, flicker and noise.
    With probability ``depth_failure`` (default ``0.05 + 0.1 * difficulty``) the depth sensor fails for the
    whole clip (all zeros, i.e. missing) — there only RGB can tell, so RGB+depth beats depth alone.
    """

    name = "synthetic_motion"
    class_names: ClassVar[list[str]] = ["approach", "recede", "lateral"]
    available_modalities = ("rgb", "depth", "ir", "flow")
    default_modalities = ("rgb", "depth")
    is_clip = True

    def __init__(
        self, split: str = "train", *, num_frames: int = 8, depth_failure: float | None = None, **kwargs
    ) -> None:
        super().__init__(split, **kwargs)
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 2:
            raise ValueError(f"{self.name}: num_frames must be an int >= 2, got {num_frames!r}")
        if depth_failure is None:
            depth_failure = 0.05 + 0.1 * self.difficulty
        if not isinstance(depth_failure, (int, float)) or not 0.0 <= depth_failure <= 1.0:
            raise ValueError(f"{self.name}: depth_failure must be a probability in [0, 1], got {depth_failure!r}")
        self.num_frames = num_frames
        self.depth_failure = float(depth_failure)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_frames={self.num_frames}"

    def generate(self, rng: SceneRNG, label: int, index: int) -> dict[str, np.ndarray]:
        g, hard, res, T = rng.scene, self.difficulty, self.resolution, self.num_frames
        d = R.ray_grid(res)
        s = np.linspace(-0.5, 0.5, T, dtype=_F32)
        s_next = s + np.float32(1.0 / (T - 1))
        # --- the moving object
        kind = int(g.integers(3))
        size = g.uniform(0.3, 0.55)
        zc = g.uniform(2.8, 3.8)
        dz = g.uniform(0.9, 1.8) * (1.0 - 0.4 * hard)
        vz = {0: -dz, 1: dz}.get(label, g.uniform(-0.08, 0.08))
        ang = g.uniform(0.0, 2.0 * np.pi)
        drift = g.uniform(0.0, 0.9) * np.array([np.cos(ang), np.sin(ang)])
        start = g.uniform(-0.22, 0.22, 2) * zc * R.TAN_HALF_FOV * 2.0
        theta0, omega = g.uniform(0.0, 2.0 * np.pi), g.uniform(-1.0, 1.0) * (0.4 + 1.6 * hard)

        def pose(ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            c = np.stack([start[0] + drift[0] * ss, start[1] + drift[1] * ss, zc + vz * ss], -1).astype(_F32)
            return c, R.rot_y(theta0 + omega * ss)

        centers, rots = pose(s)
        scene = wall_and_clutter(g, d, round(1 + 4 * hard))
        main = scene.add(
            _main_object(d, kind, size, centers, rots),
            g.uniform(0.15, 0.95, 3),
            2.0 * np.pi / g.uniform(0.12, 0.3),
            g.uniform(0.15, 0.35),
            g.uniform(0.5, 1.0),
        )
        idx, t, n, q = R.composite(scene.hits, (T, d.shape[0]))
        # a lamp ~2-3 m from the scene centre: shading weakly tells distance in RGB too
        light = random_light(g) * g.uniform(2.0, 3.0) + np.array([0.0, 0.0, zc], dtype=_F32)
        ambient = g.uniform(0.25, 0.45)
        gain = g.uniform(0.8, 1.1) * (1.0 + 0.06 * hard * g.standard_normal(T)).astype(_F32)
        depth_fails = g.random() < self.depth_failure
        out: dict[str, np.ndarray] = {}
        for m in self.modalities:
            if m == "flow":
                out[m] = to_chw(self._flow(idx == main, t, q, d, pose(s_next)), res)
                continue
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
                point_light=True,
                ambient=ambient,
                gain=gain,
                noise=0.015 + 0.05 * hard,
                depth_noise=0.002 + 0.004 * hard,
                dropout=0.01 + 0.04 * hard,
            )
            if m == "depth" and depth_fails:
                img[:] = 0.0
            out[m] = to_chw(img, res)
        return out

    def _flow(self, mask, t, q, d, next_pose) -> np.ndarray:
        """Forward flow of the moving object's surface points (pixels/frame); static background = 0."""
        c_next, r_next = next_pose
        p_now = np.where(np.isfinite(t), t, 0.0)[..., None] * d
        p_next = q @ np.swapaxes(r_next, -1, -2) + c_next[:, None, :]
        flow = R.project(p_next, self.resolution) - R.project(p_now, self.resolution)
        return np.where(mask[..., None], flow, 0.0).astype(_F32)
