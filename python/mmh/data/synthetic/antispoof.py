"""``synthetic_antispoof``: live faces vs presentation attacks (flat print, screen replay), RGB / depth / IR.

Label 1 = live (bona fide), 0 = spoof (attack). A live face is a lit 3-D head (ellipsoid + nose, painted
eyes/mouth). An attack shows a *photo of another live face* on a flat sheet: depth is a plane and IR is flat
(paper) or dark (screens emit no near-infrared), while RGB keeps only weak traces — desaturation and blur
for prints, moiré and a colour cast for replays — whose strength falls with ``difficulty``.
``attack_type(i)`` gives "live", "print" or "replay" per sample (for per-attack APCER).
Depth is stored as ``(z - 0.3 m) / 1.0 m`` clipped to [0, 1] (face-range normalisation, as CASIA-SURF crops).
"""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np

from ..registry import register_dataset
from . import render as R
from .base import SceneRNG, SyntheticDataset
from .scene import Surfaces, random_light, shade, texture, to_chw

__all__ = ["SyntheticAntiSpoof"]

_F32 = np.float32
_DEPTH_RANGE = (0.3, 1.3)
ATTACKS = ("print", "replay")
_SKIN = np.array([1.0, 0.78, 0.62])


def _mean_rgb(img: np.ndarray) -> np.ndarray:
    """``img.mean(-1, keepdims=True)``: the same sum and division as numpy's mean, without its overhead."""
    s = np.add.reduce(img, axis=-1, keepdims=True)
    return np.true_divide(s, np.intp(img.shape[-1]), out=s, casting="unsafe")


def _blur5(img: np.ndarray) -> np.ndarray:
    """Sum of ``img`` and its 4 wrapped neighbours (``np.roll`` by ±1 on axes 0, 1, added in that order)."""
    acc = np.empty_like(img)
    np.add(img[1:], img[:-1], out=acc[1:])  # + roll(img, 1, 0)
    np.add(img[:1], img[-1:], out=acc[:1])
    acc[:-1] += img[1:]  # + roll(img, -1, 0)
    acc[-1:] += img[:1]
    acc[:, 1:] += img[:, :-1]  # + roll(img, 1, 1)
    acc[:, :1] += img[:, -1:]
    acc[:, :-1] += img[:, 1:]  # + roll(img, -1, 1)
    acc[:, -1:] += img[:, :1]
    return acc


@lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates ``(H, W)`` as float32 (a pure function of the size; cached, read-only)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(_F32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _face(g: np.random.Generator, d: np.ndarray, z: float) -> Surfaces:
    """A head in front of a wall; the head's albedo carries painted eyes, brows and mouth."""
    s = Surfaces()
    wall_z = g.uniform(1.5, 2.5)
    s.add(
        R.plane(d, [0.0, 0.0, wall_z], [g.uniform(-0.2, 0.2), g.uniform(-0.2, 0.2), -1.0]),
        g.uniform(0.2, 0.8, 3),
        2.0 * np.pi / g.uniform(0.1, 0.3),
        g.uniform(0.05, 0.25),
        g.uniform(0.2, 0.6),
    )
    center = np.array([g.uniform(-0.03, 0.03), g.uniform(-0.02, 0.02), z], dtype=_F32)
    radii = np.array([0.075, 0.1, 0.08], dtype=_F32) * g.uniform(0.9, 1.1, 3).astype(_F32)
    t, n, q = R.ellipsoid(*R.to_local(d, center), radii)
    x, y = q[:, 0] / radii[0], q[:, 1] / radii[1]
    dark = (np.abs(x) - 0.4) ** 2 / 0.03 + (y + 0.25) ** 2 / 0.012 < 1.0  # eyes
    dark |= (x / 0.35) ** 2 + ((y - 0.45) / 0.08) ** 2 < 1.0  # mouth
    skin = g.uniform(0.35, 0.95) * _SKIN * g.uniform(0.9, 1.1, 3)
    albedo = np.where(dark[:, None], (skin * 0.3).astype(_F32), skin.astype(_F32))  # = where(...).astype(f32)
    s.add((t, n, q), albedo, 2.0 * np.pi / 0.02, 0.03, 0.75)
    nose = center + np.array([0.0, 0.1 * radii[1], -0.95 * radii[2]], dtype=_F32)
    s.add(R.sphere(*R.to_local(d, nose), 0.2 * radii[0]), skin, 2.0 * np.pi / 0.02, 0.03, 0.75)
    return s


@register_dataset("synthetic_antispoof")
class SyntheticAntiSpoof(SyntheticDataset):
    """Still images; modalities rgb / depth / ir (default all three); classes ["spoof", "live"]."""

    name = "synthetic_antispoof"
    class_names: ClassVar[list[str]] = ["spoof", "live"]
    available_modalities = ("rgb", "depth", "ir")
    default_modalities = ("rgb", "depth", "ir")

    def attack_type(self, index: int) -> str:
        """ "live", or the attack of a spoof sample ("print" / "replay", alternating)."""
        if self.label_of(index) == 1:
            return "live"
        return ATTACKS[(index // 2) % len(ATTACKS)]

    def generate(self, rng: SceneRNG, label: int, index: int) -> dict[str, np.ndarray]:
        g, hard, res = rng.scene, self.difficulty, self.resolution
        d = R.ray_grid(res)
        z = g.uniform(0.45, 0.6)
        light = random_light(g)
        ambient = g.uniform(0.25, 0.45)
        common = {
            "noise": 0.01 + 0.03 * hard,
            "depth_noise": 0.004 + 0.004 * hard,
            "dropout": 0.01 + 0.03 * hard,
            "depth_range": _DEPTH_RANGE,
            "ir_ref": 0.45,
        }
        scene = _face(g, d, z)
        idx, t, n, q = R.composite(scene.hits, (d.shape[0],))
        # a spoof shows a photo of this (other) live face, so its RGB is rendered whatever was requested
        needed = self.modalities if label == 1 else ("rgb",)
        tex = texture(idx, q, scene.materials) if "rgb" in needed or "ir" in needed else None  # shared
        live = {
            m: shade(m, idx, t, n, q, d, scene.materials, rng.noise(m), light=light, ambient=ambient, tex=tex, **common)
            for m in needed
        }
        if label == 1:
            return {m: to_chw(live[m], res) for m in self.modalities}
        return self._attack(g, rng, d, live["rgb"], self.attack_type(index), common)

    def _attack(self, g, rng: SceneRNG, d, photo, kind: str, common) -> dict[str, np.ndarray]:
        res = self.resolution
        z = g.uniform(0.4, 0.6)
        sheet = R.plane(d, [0.0, 0.0, z], [g.uniform(-0.3, 0.3), g.uniform(-0.3, 0.3), -1.0])
        s = Surfaces()
        s.add(sheet, np.zeros(3), 1.0, 0.0, g.uniform(0.4, 0.8) if kind == "print" else 0.0)
        idx, t, n, q = R.composite(s.hits, (d.shape[0],))
        # the sheet is untextured (contrast 0): its texture factor is exactly 1 wherever the hit is finite
        tex = np.ones(t.shape, dtype=_F32) if np.isfinite(t).all() else None
        out: dict[str, np.ndarray] = {}
        for m in self.modalities:
            if m == "rgb":
                out[m] = self._attack_rgb(photo.reshape(res, res, 3), kind, rng.noise(m))
                continue
            img = shade(m, idx, t, n, q, d, s.materials, rng.noise(m), tex=tex, **common)
            if m == "ir" and kind == "print":  # ink absorbs a little NIR: a faint trace of the photo
                img = np.clip(img * (0.85 + 0.15 * _mean_rgb(photo)), 0, 1).astype(_F32, copy=False)
            out[m] = to_chw(img, res)
        return out

    def _attack_rgb(self, img: np.ndarray, kind: str, g: np.random.Generator) -> np.ndarray:
        """The photo as the camera sees it on paper (desaturated, blurred) or on a screen (moiré, colour cast)."""
        cue = 0.35 * (1.0 - 0.75 * self.difficulty)  # strength of the RGB artefacts
        if kind == "print":
            img = (1 - cue) * img + cue * _mean_rgb(img)
            blur = _blur5(img) / 5
            img = ((1 - cue) * img + cue * blur) * g.uniform(0.85, 1.0)
        else:
            yy, xx = _pixel_grid(img.shape[0], img.shape[1])
            ang, freq, phase = g.uniform(0, np.pi), g.uniform(0.8, 1.4), g.uniform(0, 2 * np.pi)
            moire = np.sin(freq * (xx * np.cos(ang) + yy * np.sin(ang)) + phase)
            img = img * (1 + 0.4 * cue * moire[..., None]) + cue * np.array([-0.05, 0.0, 0.1], dtype=_F32)
        img = img + g.standard_normal(img.shape, dtype=_F32) * 0.01
        return np.clip(img, 0.0, 1.0).astype(_F32, copy=False).transpose(2, 0, 1)  # channels first
