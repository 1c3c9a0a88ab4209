"""Vectorised numpy ray casting of analytic primitives for the synthetic RGB-D datasets.

Conventions: pinhole camera at the origin looking down +z, x to the right, y down (image rows).
Rays are ``d = (u, v, 1)`` so the ray parameter ``t`` *is* the z-buffer depth. Every primitive is
intersected in its own canonical frame (centred at the origin); callers pass the ray origin ``o``
and directions ``d`` already expressed in that frame. Shapes broadcast: ``o`` is ``(..., 1, 3)``,
``d`` is ``(..., P, 3)`` and the results are ``t (..., P)`` (``inf`` where missed), the local
normal ``n (..., P, 3)`` and the local hit point ``q (..., P, 3)`` used for world-unit textures.
"""

from __future__ import annotations

import math
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
def _rays(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """``(d, d / |d|)`` for :func:`ray_grid` (pure functions of the resolution, cached, read-only)."""
    c = ((np.arange(resolution, dtype=np.float64) + 0.5) / resolution * 2.0 - 1.0) * TAN_HALF_FOV
    v, u = np.meshgrid(c, c, indexing="ij")
    d = np.stack([u.ravel(), v.ravel(), np.ones(resolution * resolution)], axis=-1).astype(_F32)
    dn = d / np.linalg.norm(d, axis=-1, keepdims=True)
    d.setflags(write=False)
    dn.setflags(write=False)
    return d, dn


def ray_grid(resolution: int) -> np.ndarray:
    """Ray directions ``(P, 3)`` (P = resolution², row-major) with unit z component. Read-only, cached."""
    return _rays(resolution)[0]


def _norm(x: np.ndarray) -> np.ndarray:
    """``np.linalg.norm(x, axis=-1, keepdims=True)`` for 3-vectors (same summation order, same values; faster)."""
    x0, x1, x2 = x[..., 0], x[..., 1], x[..., 2]
    return np.sqrt(x0 * x0 + x1 * x1 + x2 * x2)[..., None]


def _unit(d: np.ndarray) -> np.ndarray:
    """``d / |d|`` along the last axis; the cached copy when ``d`` is a :func:`ray_grid` (same values)."""
    if d.ndim == 2:
        res = math.isqrt(d.shape[0])
        if res * res == d.shape[0] and 16 <= res <= 512:
            grid, dn = _rays(res)
            if d is grid:
                return dn
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


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
        # no leading axes: d itself when it is read-only (as the broadcast view would be)
        if o.ndim == 2 and isinstance(d, np.ndarray) and d.ndim == 2 and not d.flags.writeable:
            return o, d
        return o, np.broadcast_to(d, o.shape[:-2] + d.shape)
    return o @ rot, d @ rot  # row vectors: (R^T x)^T = x^T R


def _miss(t: np.ndarray, hit: np.ndarray) -> np.ndarray:
    return np.where(hit, t, np.inf).astype(_F32, copy=False)


def _sphere_t(o: np.ndarray, d: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Ray parameter of the sphere hit (``inf`` where missed); ``r`` is ``(..., 1)``."""
    a = np.einsum("...i,...i->...", d, d)
    b = np.einsum("...i,...i->...", d, o)
    c = np.einsum("...i,...i->...", o, o) - r * r
    disc = b * b - a * c
    t = np.maximum(disc, 0.0)
    np.sqrt(t, out=t)
    t = (-b - t) / a
    return _miss(t, (disc > 0) & (t > 0))


def _hit_point(o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``o + t d`` (``t`` = 0 where missed)."""
    return o + np.where(t < np.inf, t, 0.0)[..., None] * d


def sphere(o: np.ndarray, d: np.ndarray, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sphere of ``radius`` at the local origin."""
    r = np.asarray(radius, dtype=_F32)[..., None]
    t = _sphere_t(o, d, r)
    q = _hit_point(o, d, t)
    n = q / r[..., None]
    return t, n, q


def ellipsoid(o: np.ndarray, d: np.ndarray, radii) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Axis-aligned ellipsoid with semi-axes ``radii (..., 3)`` at the local origin."""
    r = np.asarray(radii, dtype=_F32)[..., None, :]
    t = _sphere_t(o / r, d / r, np.ones(r.shape[:-2] + (1,), dtype=_F32))
    q = _hit_point(o, d, t)
    n = q / (r * r)
    n /= np.maximum(_norm(n), 1e-12)
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
    nrm = nrm / _norm(nrm)
    dn = np.einsum("...i,...i->...", d, nrm)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.einsum("...i,...i->...", p0, nrm) / dn
    ok = t > 0
    q = np.where(ok, t, 0.0)[..., None] * d
    if radius is not None:
        rr = np.asarray(radius, dtype=_F32)[..., None]
        ok &= np.einsum("...i,...i->...", q - p0, q - p0) <= rr * rr
    n = np.broadcast_to(nrm, q.shape)
    # face the camera; when every ray meets the plane's front clearly (d.n < 0 by a margin far above
    # rounding), no normal flips and the flip test can be skipped (the result is the same)
    if dn.size == 0 or not dn.max() < -1e-3:
        n = np.where((np.einsum("...i,...i->...", n, d) > 0)[..., None], -n, n)
    return _miss(t, ok), n, q


def composite(hits: list[tuple[np.ndarray, np.ndarray, np.ndarray]], shape: tuple[int, ...]):
    """Z-buffer a list of hits (each broadcastable to ``shape + (P,)``).

    Returns ``(index, t, n, q)``: the winning surface index per pixel and its depth/normal/local point.
    """
    if len(hits) == 1:
        t0, n0, q0 = hits[0]
        return (
            np.zeros(shape, dtype=np.intp),
            np.broadcast_to(t0, shape),
            np.broadcast_to(n0, (*shape, 3)),
            np.broadcast_to(q0, (*shape, 3)),
        )
    # running minimum with a strict "<": the first nearest surface wins, as np.argmin over the stack
    tz = np.empty(shape, dtype=np.result_type(*(h[0] for h in hits)))
    tz[...] = hits[0][0]
    idx = np.zeros(shape, dtype=np.intp)
    for k in range(1, len(hits)):
        tk = hits[k][0]
        nearer = tk < tz
        idx[nearer] = k
        np.copyto(tz, tk, where=nearer)
    if any(np.isnan(h[0]).any() for h in hits):  # NaN depths: defer to argmin's NaN rules
        t = np.stack([np.broadcast_to(h[0], shape) for h in hits])
        idx = np.argmin(t, axis=0)
        tz = np.take_along_axis(t, idx[None], 0)[0]
    # select the winners' normals / points surface by surface (same values as stacking and gathering)
    masks = [(idx == k)[..., None] for k in range(1, len(hits))]
    out = []
    for j in (1, 2):
        dtype = np.result_type(*(h[j] for h in hits))
        sel = np.empty((*shape, 3), dtype=dtype)
        sel[...] = hits[0][j]
        for k, mask in enumerate(masks, start=1):
            np.copyto(sel, hits[k][j], where=mask)
        out.append(sel)
    return idx, tz, out[0], out[1]


def checker(q: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """Solid 3-D checker texture (+1/-1) with spatial frequency ``freq`` (rad per metre)."""
    f = freq[..., None]
    s = np.sin(q * f)
    return np.sign(s[..., 0] * s[..., 1] * s[..., 2] + 1e-6).astype(_F32, copy=False)


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
    dn = _unit(d)
    cos = np.maximum(-np.einsum("...i,...i->...", n, dn), 0.0)
    return rho * cos / np.square(z / ref_dist) + ambient


def kinect_depth(
    z, n, d, rng: np.random.Generator, noise: float, dropout: float, near: float = 0.0, far: float = Z_FAR
) -> np.ndarray:
    """Structured-light-like depth: noise ∝ z², dropped pixels (more at grazing angles).

    Stored as ``(z - near) / (far - near)`` clipped to [0, 1]; 0 also marks missing pixels.
    """
    dn = _unit(d)
    cos = np.abs(np.einsum("...i,...i->...", n, dn))
    zn = z + rng.standard_normal(z.shape, dtype=_F32) * (noise * z * z)
    drop = rng.random(z.shape, dtype=_F32) < dropout + 0.5 * (cos < 0.25)
    out = np.clip((zn - near) / (far - near), 0.0, 1.0)
    out[drop | ~np.isfinite(z)] = 0.0
    return out.astype(_F32, copy=False)
