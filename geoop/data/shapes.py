"""Closed triangulated bodies for the 3-D panel method: spheres, ellipsoids, car-like bodies.

All meshes are watertight, outward oriented (counter-clockwise seen from outside) and
returned as ``(vertices (V, 3) float64, faces (F, 3) int64)``.

* :func:`sphere_mesh`, :func:`ellipsoid_mesh`: trimesh icospheres (``F = 20 * 4^k``),
  scaled per axis for the ellipsoid.
* :func:`geodesic_sphere`: the class-I geodesic sphere of frequency ``nu``
  (``F = 20 nu^2``, any ``nu >= 1``): each icosahedron face split into ``nu^2`` triangles,
  vertices merged with trimesh and pushed onto the unit sphere. It gives panel counts
  between the icosphere levels.
* :func:`car_body`: a parametric car-like body, the geodesic sphere mapped radially onto
  the star-shaped surface ``F(x, y, z) = 1`` with

      F = |x / a|^q + |y / b|^p + |z / h(x, z)|^p,

  ``a = length/2``, ``b = width/2``, ``h = h_top(x)`` above the mid plane and ``h_bot``
  below, cross-section exponent ``p = 2 + 8 (1 - roundness)`` (2: elliptic, 10: boxy),
  longitudinal exponent ``q = 2 + 4 (1 - roundness)``. The roof line drops towards the
  nose and the tail: with ``s = (x + a) / (2 a)`` in [0, 1] (nose at ``x = -a``, facing
  the stream),

      h_top = H_top (1 - nose_slant * max(0, 1 - s / 0.4) - rear_slant * max(0, (s - 0.65) / 0.35)),

  (straight bonnet/windscreen and rear slopes),

  never below ``0.15 H_top``. ``h_top`` does not increase away from the origin, so every
  ray from the origin crosses the surface once and the radial map (root of ``F(r d) = 1``
  by bisection) is a homeomorphism of the sphere: the mesh stays watertight and outward.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

__all__ = ["sphere_mesh", "ellipsoid_mesh", "geodesic_sphere", "car_body", "check_closed_mesh", "CAR_DEFAULTS"]


def sphere_mesh(subdivisions: int = 2, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere (trimesh) with ``20 * 4**subdivisions`` faces."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=int(subdivisions), radius=float(radius))
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.faces, dtype=np.int64)


def ellipsoid_mesh(axes=(2.0, 1.0, 1.0), subdivisions: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Icosphere scaled by the semi-axes ``(a, b, c)`` along x, y, z."""
    v, f = sphere_mesh(subdivisions)
    ax = np.asarray(axes, dtype=np.float64).reshape(3)
    if np.any(ax <= 0):
        raise ConfigError(f"ellipsoid axes: expected three positive semi-axes, got {tuple(ax)}")
    return v * ax, f


def geodesic_sphere(nu: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit geodesic sphere with ``20 * nu**2`` faces (class I, frequency ``nu``)."""
    import trimesh

    nu = int(nu)
    if nu < 1:
        raise ConfigError(f"geodesic frequency nu: expected >= 1, got {nu}")
    ico = trimesh.creation.icosahedron()
    V0, F0 = np.asarray(ico.vertices), np.asarray(ico.faces)
    # barycentric lattice i + j <= nu on one face; local index of (i, j)
    ij = [(i, j) for i in range(nu + 1) for j in range(nu + 1 - i)]
    index = {p: k for k, p in enumerate(ij)}
    local = []
    for i in range(nu):
        for j in range(nu - i):
            local.append((index[(i, j)], index[(i + 1, j)], index[(i, j + 1)]))
            if i + j < nu - 1:
                local.append((index[(i + 1, j)], index[(i + 1, j + 1)], index[(i, j + 1)]))
    local = np.asarray(local, dtype=np.int64)
    w = np.asarray(ij, dtype=np.float64) / nu  # weights of vertices 1 and 2
    bary = np.stack([1.0 - w.sum(1), w[:, 0], w[:, 1]], axis=1)  # (P, 3)
    pts = np.einsum("pk,fkd->fpd", bary, V0[F0])  # (20, P, 3)
    faces = local[None, :, :] + (np.arange(F0.shape[0]) * len(ij))[:, None, None]
    mesh = trimesh.Trimesh(pts.reshape(-1, 3), faces.reshape(-1, 3), process=False)
    mesh.merge_vertices(digits_vertex=8)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v, np.asarray(mesh.faces, dtype=np.int64)


#: default car-like body parameters (lengths in body lengths)
CAR_DEFAULTS = {
    "length": 1.0,
    "width": 0.45,
    "height": 0.32,
    "nose_slant": 0.5,
    "rear_slant": 0.4,
    "roundness": 0.5,
}


def _car_F(x, y, z, a, b, h_top, h_bot, p, q, nose, rear):
    s = np.clip((x + a) / (2 * a), 0.0, 1.0)
    prof = 1.0 - nose * np.clip(1.0 - s / 0.4, 0.0, 1.0) - rear * np.clip((s - 0.65) / 0.35, 0.0, 1.0)
    ht = h_top * np.maximum(prof, 0.15)
    h = np.where(z > 0, ht, h_bot)
    return np.abs(x / a) ** q + np.abs(y / b) ** p + np.abs(z / h) ** p


def car_body(n_panels: int = 2000, **params) -> tuple[np.ndarray, np.ndarray]:
    """A car-like closed body with about ``n_panels`` faces (exactly ``20 nu^2``,
    ``nu = round(sqrt(n_panels / 20))``), centred at the origin, length along x (nose at
    ``-length/2``), width along y, height along z. Parameters (see :data:`CAR_DEFAULTS`):
    ``length, width, height`` (full extents), ``nose_slant, rear_slant`` in [0, 0.85]
    (fractional drop of the roof line at the nose and the tail), ``roundness`` in [0, 1].
    """
    unknown = set(params) - set(CAR_DEFAULTS)
    if unknown:
        raise ConfigError(f"car_body: unknown parameters {sorted(unknown)}; valid: {sorted(CAR_DEFAULTS)}")
    prm = {**CAR_DEFAULTS, **params}
    for k in ("length", "width", "height"):
        if not prm[k] > 0:
            raise ConfigError(f"car_body {k}: expected > 0, got {prm[k]}")
    for k in ("nose_slant", "rear_slant"):
        if not 0.0 <= prm[k] <= 0.85:
            raise ConfigError(f"car_body {k}: expected in [0, 0.85], got {prm[k]}")
    if not 0.0 <= prm["roundness"] <= 1.0:
        raise ConfigError(f"car_body roundness: expected in [0, 1], got {prm['roundness']}")
    if n_panels < 20:
        raise ConfigError(f"car_body n_panels: expected >= 20, got {n_panels}")
    nu = max(1, int(round(math.sqrt(n_panels / 20.0))))
    u, f = geodesic_sphere(nu)
    a, b = 0.5 * prm["length"], 0.5 * prm["width"]
    h_top, h_bot = 0.6 * prm["height"], 0.4 * prm["height"]
    # ray directions through an ellipsoid of the body's proportions (a bijection of the
    # sphere): spreads the panels evenly over the elongated body instead of by solid angle
    d = u * np.array([a, b, 0.5 * (h_top + h_bot)])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    p = 2.0 + 8.0 * (1.0 - prm["roundness"])
    q = 2.0 + 4.0 * (1.0 - prm["roundness"])
    args = (a, b, h_top, h_bot, p, q, prm["nose_slant"], prm["rear_slant"])
    lo = np.zeros(d.shape[0])
    hi = np.full(d.shape[0], 1.01 * max(a, b, h_top, h_bot))
    for _ in range(60):  # bisection on F(r d) = 1 (F increasing along each ray)
        mid = 0.5 * (lo + hi)
        outside = _car_F(mid * d[:, 0], mid * d[:, 1], mid * d[:, 2], *args) > 1.0
        hi = np.where(outside, mid, hi)
        lo = np.where(outside, lo, mid)
    r = 0.5 * (lo + hi)
    v = d * r[:, None]
    v[:, 2] += h_bot - 0.5 * prm["height"]  # centre the height range on z = 0
    return v, f


def check_closed_mesh(vertices, faces) -> dict:
    """Watertightness / orientation report from trimesh: ``{"watertight", "winding_consistent",
    "volume", "euler_number"}``; an outward mesh has a positive volume."""
    import trimesh

    m = trimesh.Trimesh(vertices, faces, process=False)
    return {
        "watertight": bool(m.is_watertight),
        "winding_consistent": bool(m.is_winding_consistent),
        "volume": float(m.volume),
        "euler_number": int(m.euler_number),
    }
