"""Vectorised numpy ray casting of analytic primitives for the synthetic RGB-D datasets.

Conventions: pinhole camera at the origin looking down +z, x to the right, y down (image rows).
Rays are ``d = (u, v, 1)`` so the ray parameter ``t`` *is* the z-buffer depth. Every primitive is
intersected in its own canonical frame (centred at the origin); callers pass the ray origin ``o``
and directions ``d`` already expressed in that frame. Shapes broadcast: ``o`` is ``(..., 1, 3)``,
``d`` is ``(..., P, 3)`` and the results are ``t (..., P)`` (``inf`` where missed), the local
normal ``n (..., P, 3)`` and the local hit point ``q (..., P, 3)`` used for world-unit textures.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = [
    "TAN_HALF_FOV",
    "Z_FAR",
    "active_ir",
    "box",
    "checker",
    "composite",
    "cylinder",
    "ellipsoid",
    "kinect_depth",
    "lambert_rgb",
    "plane",
    "project",
    "ray_grid",
    "rot_y",
    "sphere",
    "to_local",
]

TAN_HALF_FOV = 0.45  # ~48 degree field of view
Z_FAR = 8.0  # depth normalisation: stored depth = z / Z_FAR, 0 = missing
_F32 = np.float32


@lru_cache(maxsize=8)
def ray_grid(resolution: int) -> np.ndarray:
    """Ray directions ``(P, 3)`` (P = resolution², row-major) with unit z component. Read-only."""
    c = ((np.arange(resolution, dtype=np.float64) + 0.5) / resolution * 2.0 - 1.0) * TAN_HALF_FOV
    v, u = np.meshgrid(c, c, indexing="ij")
    d = np.stack([u.ravel(), v.ravel(), np.ones(resolution * resolution)], axis=-1).astype(_F32)
    d.setflags(write=False)
    return d


def project(p: np.ndarray, resolution: int) -> np.ndarray:
    """Pixel coordinates ``(..., 2)`` (column, row) of camera-frame points ``p (..., 3)``."""
    scale = resolution / (2.0 * TAN_HALF_FOV)
    z = np.maximum(p[..., 2:3], 1e-3)
    return p[..., :2] / z * scale + resolution / 2.0


def rot_y(angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` about the y axis."""
    angle = np.asarray(angle, dtype=_F32)
    c, s = np.cos(angle), np.sin(angle)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def to_local(d: np.ndarray, center: np.ndarray, rot: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Express camera rays (origin 0, directions ``d (P, 3)``) in an object frame.

    ``center (..., 3)`` and ``rot (..., 3, 3)`` (object-to-camera) give ``o (..., 1, 3)``, ``d (..., P, 3)``.
    """
    o = -np.asarray(center, dtype=_F32)[..., None, :]
    if rot is None:
        return o, np.broadcast_to(d, o.shape[:-2] + d.shape)
    return o @ rot, d @ rot  # row vectors: (R^T x)^T = x^T R


def _miss(t: np.ndarray, hit: np.ndarray) -> np.ndarray:
    return np.where(hit, t, np.inf).astype(_F32)


def sphere(o: np.ndarray, d: np.ndarray, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sphere of ``radius`` at the local origin."""
    r = np.asarray(radius, dtype=_F32)[..., None]
    a = np.einsum("...i,...i->...", d, d)
    b = np.einsum("...i,...i->...", d, o)
    c = np.einsum("...i,...i->...", o, o) - r * r
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    t = _miss(t, (disc > 0) & (t > 0))
    q = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
    n = q / r[..., None]
    return t, n, q


def ellipsoid(o: np.ndarray, d: np.ndarray, radii) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis-aligned ellipsoid with semi-axes ``radii (..., 3)`` at the local origin."""
    r = np.asarray(radii, dtype=_F32)[..., None, :]
    t, _, _ = sphere(o / r, d / r, np.ones(r.shape[:-2], dtype=_F32))
    q = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
    n = q / (r * r)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return t, n, q


def box(o: np.ndarray, d: np.ndarray, half) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cube with half side ``half`` at the local origin (slab method)."""
    h = np.asarray(half, dtype=_F32)[..., None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1, t2 = (-h - o) * inv, (h - o) * inv
    lo, hi = np.minimum(t1, t2), np.maximum(t1, t2)
    axis = np.argmax(lo, axis=-1)
    tmin = np.take_along_axis(lo, axis[..., None], -1)[..., 0]
    tmax = hi.min(-1)
    t = _miss(tmin, (tmax >= tmin) & (tmin > 0))
    sign = -np.sign(np.take_along_axis(d, axis[..., None], -1))
    n = (np.arange(3) == axis[..., None]) * sign
    q = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
    return t, n.astype(_F32), q


def cylinder(o: np.ndarray, d: np.ndarray, radius, half_height) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed cylinder around the local y axis."""
    r = np.asarray(radius, dtype=_F32)[..., None]
    h = np.asarray(half_height, dtype=_F32)[..., None]
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    a = dx * dx + dz * dz
    b = ox * dx + oz * dz
    c = ox * ox + oz * oz - r * r
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        side_ok = (disc > 0) & (ts > 0) & (np.abs(oy + ts * dy) <= h)
        tc = np.minimum((h - oy) / dy, (-h - oy) / dy)
    xc, zc = ox + tc * dx, oz + tc * dz
    cap_ok = (tc > 0) & (xc * xc + zc * zc <= r * r)
    t_side, t_cap = _miss(ts, side_ok), _miss(tc, cap_ok)
    on_cap = t_cap < t_side
    t = np.minimum(t_side, t_cap)
    q = o + np.where(np.isfinite(t), t, 0.0)[..., None] * d
    n_side = q * np.array([1.0, 0.0, 1.0], dtype=_F32) / r[..., None]
    n_cap = np.zeros_like(q)
    n_cap[..., 1] = np.sign(q[..., 1])
    n = np.where(on_cap[..., None], n_cap, n_side)
    return t, n, q


def plane(d: np.ndarray, point, normal, radius=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plane (or disc of ``radius`` around ``point``) with ``normal``, in camera coordinates.

    ``point``/``normal`` ``(..., 3)``; returns camera-frame hit points as ``q`` (textures in world units).
    """
    p0 = np.asarray(point, dtype=_F32)[..., None, :]
    nrm = np.asarray(normal, dtype=_F32)[..., None, :]
    nrm = nrm / np.linalg.norm(nrm, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.einsum("...i,...i->...", p0, nrm) / np.einsum("...i,...i->...", d, nrm)
    ok = t > 0
    q = np.where(ok, t, 0.0)[..., None] * d
    if radius is not None:
        rr = np.asarray(radius, dtype=_F32)[..., None]
        ok &= np.einsum("...i,...i->...", q - p0, q - p0) <= rr * rr
    n = np.broadcast_to(nrm, q.shape)
    n = np.where((np.einsum("...i,...i->...", n, d) > 0)[..., None], -n, n)  # face the camera
    return _miss(t, ok), n, q


def composite(hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]], shape: tuple[int, ...]):
    """Z-buffer a list of hits (each broadcastable to ``shape + (P,)``).

    Returns ``(index, t, n, q)``: the winning surface index per pixel and its depth/normal/local point.
    """
    if len(hits) == 1:
        t0, n0, q0 = hits[0]
        return (np.zeros(shape, dtype=np.intp), np.broadcast_to(t0, shape), np.broadcast_to(n0, (*shape, 3)),
                np.broadcast_to(q0, (*shape, 3)))
    t = np.stack([np.broadcast_to(h[0], shape) for h in hits])
    idx = np.argmin(t, axis=0)
    grid = tuple(np.indices(shape, sparse=True))
    tz = t[(idx, *grid)]
    n = np.stack([np.broadcast_to(h[1], (*shape, 3)) for h in hits])
    q = np.stack([np.broadcast_to(h[2], (*shape, 3)) for h in hits])
    return idx, tz, n[(idx, *grid)], q[(idx, *grid)]


def checker(q: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Solid 3-D checker texture (+1/-1) with spatial frequency ``freq`` (rad per metre)."""
    f = freq[..., None]
    s = np.sin(q * f)
    return np.sign(s[..., 0] * s[..., 1] * s[..., 2] + 1e-6).astype(_F32)


def lambert_rgb(albedo, n, light, ambient, gain, points=None, ref_dist: float = 3.0) -> np.ndarray:
    """``albedo (..., 3) * (ambient + diffuse) * gain`` — channels last.

    ``light`` is a direction ``(3,)`` (distant light), or with ``points (..., P, 3)`` (surface positions) a
    point-light position: then the diffuse term falls off as ``(ref_dist / distance)²``.
    """
    if points is None:
        diffuse = np.maximum(np.einsum("...i,i->...", n, light), 0.0)
    else:
        to_light = light - points
        dist = np.linalg.norm(to_light, axis=-1)
        cos = np.einsum("...i,...i->...", n, to_light) / np.maximum(dist, 1e-6)
        diffuse = np.maximum(cos, 0.0) * np.square(ref_dist / np.maximum(dist, 1e-3))
    return albedo * (ambient + (1.0 - ambient) * diffuse)[..., None] * gain


def active_ir(rho, n, d, z, ambient: float = 0.05, ref_dist: float = 2.5) -> np.ndarray:
    """Near-infrared with a light source at the camera: ``rho * cos / (z / ref_dist)² + ambient``."""
    dn = d / np.linalg.norm(d, axis=-1, keepdims=True)
    cos = np.maximum(-np.einsum("...i,...i->...", n, dn), 0.0)
    return rho * cos / np.square(z / ref_dist) + ambient


def kinect_depth(
    z, n, d, rng: np.random.Generator, noise: float, dropout: float, near: float = 0.0, far: float = Z_FAR
) -> np.ndarray:
    """Structured-light-like depth: noise ∝ z², dropped pixels (more at grazing angles).

    Stored as ``(z - near) / (far - near)`` clipped to [0, 1]; 0 also marks missing pixels.
    """
    dn = d / np.linalg.norm(d, axis=-1, keepdims=True)
    cos = np.abs(np.einsum("...i,...i->...", n, dn))
    zn = z + rng.standard_normal(z.shape, dtype=_F32) * (noise * z * z)
    drop = rng.random(z.shape, dtype=_F32) < dropout + 0.5 * (cos < 0.25)
    out = np.clip((zn - near) / (far - near), 0.0, 1.0)
    out[drop | ~np.isfinite(z)] = 0.0
    return out.astype(_F32)
