"""3-D body flow data: closed triangulated bodies in a uniform stream (source panel method).

Bodies (:mod:`geoop.data.shapes`): a parametric car-like family, spheres and ellipsoids.
The stream has unit speed and a yaw angle ``psi`` about the vertical axis,
``V_inf = (cos psi, sin psi, 0)``; the body is in free air (no ground plane). The flow is
solved by the constant-strength source panel method of :mod:`geoop.data.panel3d`.

Each case is written like a CFD case:

* ``case_XXXX_surface.vtp``: the triangles, ``Cp`` as cell data (at the panel centroids,
  where it is computed) and as point data (area-weighted average of the adjacent panels),
  outward unit vertex ``Normals``;
* ``case_XXXX_volume.vtu``: points around the body (``vertex`` cells) with point data
  ``velocity`` (3 components) and ``p``.

Normalisation: ``|V_inf| = 1``, free-stream pressure 0, pressure divided by the dynamic
pressure: ``p = Cp = 1 - |V|^2`` (Bernoulli).

Analytic references used by the tests: the sphere, ``Cp = 1 - 9/4 sin^2(theta)``; the
prolate spheroid (semi-axes ``a > b = c``, stream along its axis), surface speed
``|V| = U (2 / (2 - alpha_0)) sqrt(1 - n_x^2)`` with
``alpha_0 = 2 (1 - e^2) / e^3 (artanh(e) - e)``, ``e^2 = 1 - b^2 / a^2`` (Lamb, §114).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from ..errors import ConfigError
from .panel3d import SourcePanelSolution, solid_angle, solve_source_panels
from .shapes import CAR_DEFAULTS, car_body, ellipsoid_mesh, sphere_mesh

__all__ = [
    "BodySolution",
    "solve_body",
    "free_stream",
    "sphere_cp",
    "spheroid_surface_speed",
    "body_volume_points",
    "surface_geometry",
    "body_mesh",
    "make_case",
    "generate",
    "SHAPES",
    "DEFAULT_RANGES",
]

#: body families of :func:`make_case` / :func:`generate`
SHAPES = ("car", "sphere", "ellipsoid")


def _resolve_shape(shape: str) -> str:
    s = str(shape).lower()
    if s not in SHAPES:
        raise ConfigError(f"body shape: unknown {shape!r}; valid: {list(SHAPES)}")
    return s


def free_stream(yaw_deg: float = 0.0, speed: float = 1.0) -> np.ndarray:
    """``speed * (cos yaw, sin yaw, 0)``: (3,)."""
    y = math.radians(float(yaw_deg))
    return float(speed) * np.array([math.cos(y), math.sin(y), 0.0])


@dataclass(frozen=True)
class BodySolution:
    """Panel solution on a closed body.

    Attributes (shapes): ``vertices`` (V, 3), ``faces`` (F, 3), ``panels`` the
    :class:`~geoop.data.panel3d.SourcePanelSolution` (``sigma`` (F,), ``cp`` (F,),
    ``surface_velocity`` (F, 3)), ``yaw_deg``.
    """

    vertices: np.ndarray = field(repr=False)
    faces: np.ndarray = field(repr=False)
    panels: SourcePanelSolution = field(repr=False)
    yaw_deg: float = 0.0

    @property
    def cp(self) -> np.ndarray:
        """(F,) pressure coefficient at the panel centroids."""
        return self.panels.cp

    @property
    def cp_vertices(self) -> np.ndarray:
        """(V,) area-weighted average of the adjacent panels' Cp."""
        return self._to_vertices(self.panels.cp)

    @property
    def vertex_normals(self) -> np.ndarray:
        """(V, 3) outward unit normals, area-weighted average of the panel normals."""
        nrm = np.stack([self._to_vertices(self.panels.panels.normal[:, k], normalize=False) for k in range(3)], axis=1)
        return nrm / np.linalg.norm(nrm, axis=1, keepdims=True)

    def _to_vertices(self, values: np.ndarray, normalize: bool = True) -> np.ndarray:
        area = self.panels.panels.area
        nv = self.vertices.shape[0]
        idx = self.faces.reshape(-1)
        num = np.bincount(idx, weights=np.repeat(values * area, 3), minlength=nv)
        if not normalize:
            return num
        den = np.bincount(idx, weights=np.repeat(area, 3), minlength=nv)
        return num / den

    def velocity(self, points: np.ndarray, chunk_size: int = 512) -> np.ndarray:
        """Velocity at points outside the body: (Q, 3) -> (Q, 3)."""
        return self.panels.velocity(points, chunk_size)

    def pressure(self, points: np.ndarray, chunk_size: int = 512) -> np.ndarray:
        """``Cp = 1 - |V|^2 / |V_inf|^2`` at points outside the body: (Q, 3) -> (Q,)."""
        return self.panels.pressure(points, chunk_size)


def solve_body(vertices, faces, yaw_deg: float = 0.0, far_factor: float = 4.0) -> BodySolution:
    """Solve the unit-speed flow at yaw ``yaw_deg`` around a closed outward triangle mesh."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    sol = solve_source_panels(v, f, free_stream(yaw_deg), far_factor=far_factor)
    return BodySolution(v, f, sol, float(yaw_deg))


# ---------------------------------------------------------------------------- analytic
def sphere_cp(points: np.ndarray, v_inf=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Exact surface Cp of a sphere centred at the origin, ``1 - 9/4 sin^2(theta)``, theta
    the angle between the point's direction and the stream: (Q, 3) -> (Q,)."""
    p = np.asarray(points, dtype=np.float64)
    u = np.asarray(v_inf, dtype=np.float64)
    c = (p @ u) / (np.linalg.norm(p, axis=1) * np.linalg.norm(u))
    return 1.0 - 2.25 * (1.0 - c**2)


def spheroid_surface_speed(points: np.ndarray, a: float, b: float, speed: float = 1.0) -> np.ndarray:
    """Exact surface speed on the prolate spheroid ``x^2/a^2 + (y^2 + z^2)/b^2 = 1``
    (``a > b``) in a stream ``speed`` along x, at the surface points nearest (radially) to
    ``points``: (Q, 3) -> (Q,)."""
    if not a > b > 0:
        raise ConfigError(f"prolate spheroid: expected a > b > 0, got a={a}, b={b}")
    e = math.sqrt(1.0 - (b / a) ** 2)
    alpha0 = 2.0 * (1.0 - e**2) / e**3 * (math.atanh(e) - e)
    p = np.asarray(points, dtype=np.float64)
    s = 1.0 / np.sqrt((p[:, 0] / a) ** 2 + (p[:, 1] ** 2 + p[:, 2] ** 2) / b**2)
    q = p * s[:, None]  # radial projection onto the surface
    n = q / np.array([a * a, b * b, b * b])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return speed * 2.0 / (2.0 - alpha0) * np.sqrt(np.clip(1.0 - n[:, 0] ** 2, 0.0, None))


# ---------------------------------------------------------------------------- volume points
def body_volume_points(
    sol: BodySolution,
    n_points: int = 4000,
    seed: int = 0,
    margin: float = 1.0,
    near_fraction: float = 0.5,
    chunk_size: int = 256,
) -> np.ndarray:
    """Points around the body: about ``near_fraction`` of them on offset layers of the
    surface (vertices pushed along their normals by distances growing geometrically from
    half a panel size), the rest uniform in the bounding box grown by ``margin`` body
    lengths; points inside the body (generalised winding number ``-sum Omega / 4 pi > 0.5``,
    the solid angles being positive on the outer side of each panel)
    or closer than a third of the mean panel size to a centroid are dropped.

    Shapes: returns (M, 3), M <= n_points.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    v, nrm = sol.vertices, sol.vertex_normals
    panels = sol.panels.panels
    h = float(np.mean(panels.size))
    lo, hi = v.min(axis=0), v.max(axis=0)
    ext = float(np.max(hi - lo))
    n_near = int(n_points * near_fraction)
    n_layers = max(1, int(round(n_near / v.shape[0])))
    dists = 0.5 * h * 1.6 ** np.arange(n_layers)
    near = []
    for d in dists:
        jitter = rng.normal(scale=0.1 * d, size=v.shape)
        near.append(v + d * nrm + jitter)
    near = np.concatenate(near)
    if near.shape[0] > n_near:
        near = near[rng.choice(near.shape[0], n_near, replace=False)]
    far = rng.uniform(lo - margin * ext, hi + margin * ext, size=(n_points - near.shape[0], 3))
    pts = np.concatenate([near, far])
    dist, _ = cKDTree(panels.centroid).query(pts)
    pts = pts[dist > h / 3.0]
    # only points in the bounding box can be inside the body
    cand = np.nonzero(np.all((pts >= lo) & (pts <= hi), axis=1))[0]
    inside = np.zeros(pts.shape[0], dtype=bool)
    for s in range(0, cand.shape[0], chunk_size):
        idx = cand[s : s + chunk_size]
        inside[idx] = -solid_angle(panels.tri, pts[idx]).sum(axis=1) / (4 * np.pi) > 0.5
    return pts[~inside]


# ---------------------------------------------------------------------------- cases
#: sampling ranges of :func:`generate` (uniform in [lo, hi])
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "length": (1.0, 1.0),
    "width": (0.38, 0.5),
    "height": (0.26, 0.38),
    "nose_slant": (0.2, 0.7),
    "rear_slant": (0.1, 0.7),
    "roundness": (0.0, 1.0),
    "yaw_deg": (-10.0, 10.0),
    "n_panels": (800, 2000),
    "n_volume": (2000, 5000),
}

_MAKE_KEYS = set(DEFAULT_RANGES) | {"shape", "far_factor"}


def _resolve_ranges(ranges: Mapping) -> dict:
    from ._case_io import resolve_ranges
    return resolve_ranges(ranges, DEFAULT_RANGES, "body3d")


def body_mesh(params: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The closed mesh of a case: ``shape`` "car" (:func:`~geoop.data.shapes.car_body`),
    "sphere" (diameter ``length``) or "ellipsoid" (axes ``length, width, height``); the
    sphere and ellipsoid use the icosphere level whose face count is nearest ``n_panels``."""
    shape = _resolve_shape(params.get("shape", "car"))
    n_panels = int(params.get("n_panels", 2000))
    if shape == "car":
        return car_body(n_panels, **{k: float(params[k]) for k in CAR_DEFAULTS if k in params})
    level = int(np.argmin([abs(20 * 4**k - n_panels) for k in range(6)]))
    L = float(params.get("length", 1.0))
    if shape == "sphere":
        return sphere_mesh(level, 0.5 * L)
    return ellipsoid_mesh((0.5 * L, 0.5 * float(params.get("width", 0.45)), 0.5 * float(params.get("height", 0.32))), level)


def surface_geometry(sol: BodySolution, name: Optional[str] = None):
    """The body surface as a :class:`geoop.Geometry`: triangles, outward vertex normals,
    ``Cp`` as point field (V, 1) and cell field (F, 1)."""
    from ..geometry.geometry import Geometry

    return Geometry(
        sol.vertices,
        cells={"triangle": sol.faces},
        normals=sol.vertex_normals,
        fields={"Cp": sol.cp_vertices},
        cell_fields={"Cp": sol.cp},
        name=name,
    )


def make_case(params: Mapping, seed: int = 0, return_solution: bool = False):
    """Build one 3-D body case.

    ``params``: ``shape`` (one of :data:`SHAPES`, default "car"), body parameters
    (``length, width, height, nose_slant, rear_slant, roundness``), ``yaw_deg``,
    ``n_panels`` (default 2000), ``n_volume`` (default 3000; 0: no volume, returned as
    None), ``far_factor``.

    Returns ``(surface, volume)`` :class:`geoop.Geometry` (and the :class:`BodySolution`
    when ``return_solution``). Surface: triangles, point and cell field ``Cp``, normals.
    Volume: points with ``vertex`` cells, point fields ``velocity`` (Q, 3) and ``p``.
    """
    from ..geometry.geometry import Geometry

    unknown = set(params) - _MAKE_KEYS
    if unknown:
        raise ConfigError(f"body3d params: unknown keys {sorted(unknown)}; valid: {sorted(_MAKE_KEYS)}")
    v, f = body_mesh(params)
    sol = solve_body(v, f, float(params.get("yaw_deg", 0.0)), float(params.get("far_factor", 4.0)))
    surface = surface_geometry(sol, str(params.get("shape", "car")))
    if int(params.get("n_volume", 3000)) <= 0:
        return (surface, None, sol) if return_solution else (surface, None)
    q = body_volume_points(sol, int(params.get("n_volume", 3000)), seed=seed)
    vel = sol.velocity(q)
    volume = Geometry(
        q,
        cells={"vertex": np.arange(q.shape[0])[:, None]},
        fields={"velocity": vel, "p": 1.0 - np.sum(vel**2, axis=1)},
        name=f"{params.get('shape', 'car')} volume",
    )
    return (surface, volume, sol) if return_solution else (surface, volume)


def generate(out_dir: str, n: int, seed: int = 0, shape: str = "car", volume: bool = True, **ranges) -> list[dict]:
    """Write ``n`` body cases to ``out_dir`` plus ``manifest.json``.

    Parameters are drawn uniformly from :data:`DEFAULT_RANGES` overridden by ``ranges``;
    ``shape`` is one of :data:`SHAPES`; ``volume=False`` skips the volume files.
    Deterministic for a seed: case ``i`` uses ``numpy.random.default_rng([seed, i])``.
    Returns the manifest entries (``case, surface, volume, params, n_panels, n_volume``).
    """
    from ._case_io import write_geometry, write_manifest

    shape = _resolve_shape(shape)
    if int(n) != n or n < 0:
        raise ConfigError(f"n: expected a non-negative integer, got {n!r}")
    rg = _resolve_ranges(ranges)
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        prm = {k: float(rng.uniform(*rg[k])) for k in rg}
        prm["n_panels"] = int(round(prm["n_panels"]))
        prm["n_volume"] = int(round(prm["n_volume"])) if volume else 0
        prm["shape"] = shape
        case_seed = int(rng.integers(2**31))
        surf, vol = make_case(prm, seed=case_seed)
        sname = f"case_{i:04d}_surface.vtp"
        write_geometry(surf, os.path.join(out_dir, sname))
        entry = {"case": f"case_{i:04d}", "surface": sname, "params": prm, "n_panels": int(surf.n_cells)}
        if vol is not None:
            vname = f"case_{i:04d}_volume.vtu"
            write_geometry(vol, os.path.join(out_dir, vname))
            entry.update(volume=vname, n_volume=vol.n_points)
        entries.append(entry)
    write_manifest(out_dir, {"generator": "geoop.data.body3d", "seed": int(seed), "shape": shape, "ranges": rg, "cases": entries})
    return entries
