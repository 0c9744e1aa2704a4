"""2-D airfoil flow data: NACA 4-digit airfoils solved by a vortex panel method.

Each case is a NACA 4-digit airfoil (max camber ``m``, its chordwise position ``p``,
thickness ``t``, chord 1, leading edge at the origin) at angle of attack ``alpha`` in a
free stream of unit speed, solved by the linear-strength vortex panel method with the
Kutta condition (:mod:`geoop.data.panel2d`). Outputs, written like a CFD case:

* ``case_XXXX_surface.vtp``: the airfoil as a closed polyline (``line`` cells), point data
  ``Cp`` (pressure coefficient) and ``Normals`` (outward unit normals);
* ``case_XXXX_volume.vtu``: an unstructured triangle mesh of the fluid domain (z = 0)
  around the airfoil (out to ``far_radius`` chords), point data ``u``, ``v``, ``p``.

Normalisation: free-stream speed ``V_inf = 1`` and free-stream pressure 0; the pressure
written is normalised by the dynamic pressure (``q = 1``), i.e. it is the pressure
coefficient ``p = Cp = (P - P_inf) / q = 1 - |V|^2 / V_inf^2`` (Bernoulli).

The NACA 4-digit thickness is

    y_t = 5 t (0.2969 sqrt(x) - 0.1260 x - 0.3516 x^2 + 0.2843 x^3 - 0.1036 x^4)

(the closed-trailing-edge variant), the camber line ``y_c = m/p^2 (2 p x - x^2)`` for
``x < p`` and ``m/(1-p)^2 ((1 - 2p) + 2 p x - x^2)`` otherwise; the surfaces are offset
perpendicular to the camber line. Nodes are cosine spaced, ``x = (1 - cos beta) / 2``.

Volume mesh: :func:`scipy.spatial.Delaunay` on a graded point set (offset layers of the
airfoil whose distance grows geometrically near the body, then rings of growing spacing
out to ``far_radius``), minus the triangles inside the airfoil (point-in-polygon of their
centroids and edge midpoints with :class:`matplotlib.path.Path`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import ConfigError, ShapeError
from .panel2d import VortexPanelSolution, solve_vortex_panels

__all__ = [
    "NacaParams",
    "naca4_coordinates",
    "AirfoilSolution",
    "solve_airfoil",
    "airfoil_domain_points",
    "airfoil_volume_mesh",
    "make_case",
    "generate",
    "sample_params",
    "DEFAULT_RANGES",
]


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class NacaParams:
    """NACA 4-digit parameters as fractions of the chord: max camber ``m`` (0-0.095), its
    position ``p`` (0.1-0.9, ignored when ``m == 0``) and thickness ``t`` (0.01-0.4)."""

    m: float
    p: float
    t: float

    @classmethod
    def from_code(cls, code: str) -> "NacaParams":
        """``"2412"`` -> m=0.02, p=0.4, t=0.12."""
        s = str(code).strip().upper().removeprefix("NACA").strip()
        if len(s) != 4 or not s.isdigit():
            raise ConfigError(f"naca: expected a 4-digit code such as '2412', got {code!r}")
        return cls(int(s[0]) / 100.0, int(s[1]) / 10.0, int(s[2:]) / 100.0)

    @classmethod
    def coerce(cls, naca: Union[str, Mapping, "NacaParams", Sequence[float]]) -> "NacaParams":
        """Accept a code, a mapping with keys m, p, t, a NacaParams, or (m, p, t)."""
        if isinstance(naca, NacaParams):
            out = naca
        elif isinstance(naca, str):
            out = cls.from_code(naca)
        elif isinstance(naca, Mapping):
            missing = {"m", "p", "t"} - set(naca)
            extra = set(naca) - {"m", "p", "t"}
            if missing or extra:
                raise ConfigError(f"naca: expected keys ['m', 'p', 't'], got {sorted(naca)}")
            out = cls(float(naca["m"]), float(naca["p"]), float(naca["t"]))
        else:
            vals = tuple(float(v) for v in naca)
            if len(vals) != 3:
                raise ConfigError(f"naca: expected (m, p, t), got {naca!r}")
            out = cls(*vals)
        out.check()
        return out

    def check(self) -> None:
        if not (0.0 <= self.m < 0.1):
            raise ConfigError(f"naca m (max camber): expected in [0, 0.1), got {self.m}")
        if self.m > 0 and not (0.05 <= self.p <= 0.95):
            raise ConfigError(f"naca p (camber position): expected in [0.05, 0.95], got {self.p}")
        if not (0.005 <= self.t <= 0.4):
            raise ConfigError(f"naca t (thickness): expected in [0.005, 0.4], got {self.t}")

    @property
    def code(self) -> str:
        """The nearest 4-digit designation (informative only for non-integer params)."""
        return f"{round(self.m * 100):d}{round(self.p * 10) % 10:d}{round(self.t * 100):02d}"


def naca4_coordinates(naca, n_panels: int) -> np.ndarray:
    """Closed clockwise node polyline of a NACA 4-digit airfoil, cosine spaced.

    Starts at the trailing edge (1, 0), runs along the lower surface to the leading edge and
    back along the upper surface; the last node repeats the first.

    Shapes
    ------
    returns : (n_panels + 1, 2) float64, ``n_panels`` even
    """
    prm = NacaParams.coerce(naca)
    if int(n_panels) != n_panels or n_panels < 8 or n_panels % 2:
        raise ConfigError(f"n_panels: expected an even integer >= 8, got {n_panels}")
    n_side = int(n_panels) // 2
    beta = np.linspace(0.0, math.pi, n_side + 1)
    x = 0.5 * (1.0 - np.cos(beta))  # LE (0) -> TE (1)
    t, m, p = prm.t, prm.m, prm.p
    yt = 5.0 * t * (0.2969 * np.sqrt(x) - 0.1260 * x - 0.3516 * x**2 + 0.2843 * x**3 - 0.1036 * x**4)
    if m > 0:
        fore = x < p
        yc = np.where(fore, m / p**2 * (2 * p * x - x**2), m / (1 - p) ** 2 * ((1 - 2 * p) + 2 * p * x - x**2))
        dyc = np.where(fore, 2 * m / p**2 * (p - x), 2 * m / (1 - p) ** 2 * (p - x))
    else:
        yc = np.zeros_like(x)
        dyc = np.zeros_like(x)
    th = np.arctan(dyc)
    xu, yu = x - yt * np.sin(th), yc + yt * np.cos(th)
    xl, yl = x + yt * np.sin(th), yc - yt * np.cos(th)
    # lower TE -> LE, then upper LE(excluded, shared) -> TE
    xs = np.concatenate([xl[::-1], xu[1:]])
    ys = np.concatenate([yl[::-1], yu[1:]])
    xs[-1], ys[-1] = xs[0], ys[0]  # exact closure at the trailing edge
    return np.stack([xs, ys], axis=1)


# ---------------------------------------------------------------------------- solution
@dataclass(frozen=True)
class AirfoilSolution:
    """Panel solution of one airfoil.

    Attributes
    ----------
    params : NacaParams
    alpha_deg : float
    panels : VortexPanelSolution (nodes, gamma)
    surface_points : (N, 2) float, the N distinct nodes (node N == node 0 is dropped)
    cp_surface : (N,) float, pressure coefficient at the surface nodes
    normals : (N, 2) float, outward unit normals at the nodes (bisector of the panels)
    """

    params: NacaParams
    alpha_deg: float
    panels: VortexPanelSolution
    surface_points: np.ndarray = field(repr=False)
    cp_surface: np.ndarray = field(repr=False)
    normals: np.ndarray = field(repr=False)

    @property
    def cl(self) -> float:
        """Lift coefficient from Kutta-Joukowski, ``c_l = -2 Gamma / (V_inf c)`` (c = 1)."""
        return -2.0 * self.panels.circulation / self.panels.v_inf

    @property
    def surface_velocity(self) -> np.ndarray:
        """(N, 2) velocity at the surface nodes: speed ``|gamma|`` along the tangent."""
        g = self.panels.gamma[:-1]
        tangent = np.stack([self.normals[:, 1], -self.normals[:, 0]], axis=1)  # clockwise tangent
        return -g[:, None] * tangent

    def velocity(self, points: np.ndarray, chunk_size: int = 4096, far_factor: float = 3.0) -> np.ndarray:
        """Velocity ``(u, v)`` at arbitrary points of the plane (outside the airfoil);
        panels farther than ``far_factor`` panel lengths use the multipole far field
        (relative error < 2e-4 per panel at 3; ``inf``: exact sum), see
        :meth:`~geoop.data.panel2d.VortexPanelSolution.complex_velocity`.

        Shapes: ``points`` (Q, 2) or (Q, 3) (z ignored) -> (Q, 2).
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] not in (2, 3):
            raise ShapeError(f"velocity points: expected shape (Q, 2) or (Q, 3), got {pts.shape}")
        w = self.panels.complex_velocity(pts[:, 0] + 1j * pts[:, 1], chunk_size=chunk_size, far_factor=far_factor)
        return np.stack([w.real, -w.imag], axis=1)

    def pressure(self, points: np.ndarray, chunk_size: int = 4096) -> np.ndarray:
        """Pressure coefficient ``1 - |V|^2 / V_inf^2`` at points (Q, 2|3) -> (Q,)."""
        v = self.velocity(points, chunk_size)
        return 1.0 - np.sum(v**2, axis=1) / self.panels.v_inf**2


def _node_normals(z: np.ndarray) -> np.ndarray:
    """Outward unit normals at the distinct nodes of a closed clockwise polyline (N+1,)."""
    e = np.diff(z)
    e = e / np.abs(e)
    n_pan = 1j * e
    n_node = n_pan + np.roll(n_pan, 1)  # node k: panels k-1 and k
    n_node = n_node / np.abs(n_node)
    return np.stack([n_node.real, n_node.imag], axis=1)


def solve_airfoil(naca="2412", alpha_deg: float = 0.0, n_panels: int = 160) -> AirfoilSolution:
    """Solve the flow around a NACA 4-digit airfoil at ``alpha_deg`` (unit free stream).

    ``naca``: a code ``"2412"``, a mapping ``{"m", "p", "t"}``, a :class:`NacaParams` or
    ``(m, p, t)``. ``n_panels``: even number of cosine-spaced panels.
    """
    prm = NacaParams.coerce(naca)
    xy = naca4_coordinates(prm, n_panels)
    sol = solve_vortex_panels(xy, math.radians(float(alpha_deg)), v_inf=1.0, kutta=True)
    g = sol.gamma[:-1]
    return AirfoilSolution(
        params=prm,
        alpha_deg=float(alpha_deg),
        panels=sol,
        surface_points=xy[:-1].copy(),
        cp_surface=1.0 - (g / sol.v_inf) ** 2,
        normals=_node_normals(sol.nodes),
    )


# ---------------------------------------------------------------------------- domain mesh
def _resample_closed(xy: np.ndarray, spacing: float, min_points: int = 12) -> np.ndarray:
    """Points at (about) equal arc length ``spacing`` along a closed polyline (M, 2) given
    without repeating the first point."""
    closed = np.vstack([xy, xy[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    n = max(min_points, int(round(s[-1] / spacing)))
    t = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(t, s, closed[:, 0]), np.interp(t, s, closed[:, 1])], axis=1)


def airfoil_domain_points(
    surface: np.ndarray,
    normals: np.ndarray,
    n_target: int = 10000,
    far_radius: float = 5.0,
    growth: float = 1.15,
    near_extent: float = 0.3,
) -> np.ndarray:
    """Graded point set around an airfoil: its nodes, offset layers out to ``near_extent``
    chords (spacing growing geometrically by ``growth``, each shifted out by 0.7 of the
    local node spacing so the airfoil's edges are Delaunay edges), then rings around the mid-chord
    out to ``far_radius`` chords, with the spacing chosen so the set has about
    ``n_target`` points (the exact count depends on the airfoil).

    Shapes
    ------
    surface, normals : (N, 2) float (distinct nodes, outward normals)
    returns : (M, 2) float, the first N rows are ``surface``
    """
    surface = np.asarray(surface, dtype=np.float64)
    seg = np.linalg.norm(np.diff(np.vstack([surface, surface[:1]]), axis=0), axis=1)
    perim = float(np.sum(seg))
    # local node spacing: every layer is pushed out by 0.7 of it, so the surface edges are
    # Delaunay edges (no layer point inside the circle on a surface edge as diameter)
    local = 0.5 * (seg + np.roll(seg, 1))
    shift = 0.7 * local[:, None]

    def build(h0: float) -> np.ndarray:
        # h0: tangential spacing of the first offset layer; the layer distance grows too
        pts = [surface]
        d = 0.5 * h0
        layers_d = []
        while d < near_extent:
            layers_d.append(d)
            d = d * growth + 0.25 * h0
        for d in layers_d:
            layer = surface + (d + shift) * normals
            spacing = max(h0, 1.2 * d * (growth - 1.0) + h0)
            pts.append(_resample_closed(layer, spacing))
        d_near = (layers_d[-1] if layers_d else 0.0) + float(shift.max())
        # far field: rings around mid-chord, spacing grows with radius
        centre = np.array([0.5, 0.0])
        h_far = max(h0, 1.2 * d_near * (growth - 1.0) + h0)
        r = 0.5 + d_near + h_far
        rings = []
        while r <= far_radius:
            n = max(16, int(2 * math.pi * r / h_far))
            ang = np.linspace(0.0, 2 * math.pi, n, endpoint=False) + 0.5 * (len(rings) % 2) * 2 * math.pi / n
            rings.append(centre + r * np.stack([np.cos(ang), np.sin(ang)], axis=1))
            h_far = h_far * growth
            r = r + h_far
        if rings:
            ring = np.concatenate(rings)
            # keep ring points that are clearly outside the offset layers
            from scipy.spatial import cKDTree

            dist, _ = cKDTree(surface).query(ring)
            ring = ring[dist > d_near + 0.5 * (h0 + d_near * (growth - 1.0))]
            pts.append(ring)
        return np.concatenate(pts)

    # calibrate h0 by two trial builds (point count scales like 1/h0 in this grading)
    h0 = perim / max(len(surface), 1) * 1.5
    for _ in range(3):
        n_now = build(h0).shape[0]
        h0 = h0 * (n_now / n_target) ** 0.8
    return build(h0)


def airfoil_volume_mesh(surface: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Delaunay triangles of ``points`` outside the closed polygon ``surface``.

    A triangle is removed when its centroid or one of its edge midpoints (nudged 1 % towards
    the centroid) lies inside the airfoil (:meth:`matplotlib.path.Path.contains_points`).

    Shapes
    ------
    surface : (N, 2) float, points : (M, 2) float -> (T, 3) long triangles (counter-clockwise)
    """
    from matplotlib.path import Path
    from scipy.spatial import Delaunay

    tri = Delaunay(points).simplices
    poly = Path(np.vstack([surface, surface[:1]]), closed=True)
    lo, hi = surface.min(axis=0), surface.max(axis=0)
    # only triangles with a vertex in the airfoil's bounding box can be inside it
    in_box = np.all((points >= lo) & (points <= hi), axis=1)
    cand = np.nonzero(in_box[tri].any(axis=1))[0]
    p = points[tri[cand]]  # (T', 3, 2)
    cen = p.mean(axis=1)
    # edge midpoints nudged towards the centroid: a midpoint of an airfoil edge lies on the
    # polygon boundary, where the inside test is arbitrary
    probes = [cen] + [0.99 * 0.5 * (p[:, k] + p[:, (k + 1) % 3]) + 0.01 * cen for k in range(3)]
    inside = np.zeros(cand.shape[0], dtype=bool)
    for q in probes:
        inside |= poly.contains_points(q)
    keep = np.ones(tri.shape[0], dtype=bool)
    keep[cand[inside]] = False
    tri = tri[keep]
    # orient counter-clockwise
    a, b, c = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri[cross < 0] = tri[cross < 0][:, [0, 2, 1]]
    return tri.astype(np.int64)


# ---------------------------------------------------------------------------- cases
#: sampling ranges of :func:`generate` (uniform in [lo, hi]; integers for n_panels)
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "m": (0.0, 0.06),
    "p": (0.2, 0.6),
    "t": (0.06, 0.18),
    "alpha_deg": (-4.0, 10.0),
    "n_panels": (100, 200),
    "n_volume": (3000, 8000),
}


def _resolve_ranges(ranges: Mapping) -> dict:
    from ._case_io import resolve_ranges
    return resolve_ranges(ranges, DEFAULT_RANGES, "airfoil")


def sample_params(rng: np.random.Generator, ranges: Optional[Mapping] = None) -> dict:
    """Draw one case's parameters (m, p, t, alpha_deg, n_panels, n_volume)."""
    rg = _resolve_ranges(ranges or {})
    out = {k: float(rng.uniform(*rg[k])) for k in ("m", "p", "t", "alpha_deg")}
    out["n_panels"] = int(2 * round(rng.uniform(*rg["n_panels"]) / 2))
    out["n_volume"] = int(round(rng.uniform(*rg["n_volume"])))
    return out


_PARAM_KEYS = ("m", "p", "t", "alpha_deg", "n_panels", "n_volume", "far_radius")


def make_case(params: Mapping, seed: int = 0, return_solution: bool = False, te_stagnation: bool = False):
    """Build one airfoil case.

    ``params``: mapping with ``m, p, t`` (or ``naca``: a code), ``alpha_deg``, optional
    ``n_panels`` (default 160), ``n_volume`` (target number of volume points, default
    6000), ``far_radius`` (chords, default 5). ``seed`` jitters ``n_panels`` and
    ``n_volume`` slightly (+-10 %) when they are not given, so point counts differ per case.

    ``te_stagnation``: set the velocity at the trailing-edge node to 0 (``Cp = p = 1``) on the
    surface and in the volume. The NACA 4-digit trailing edge used here is closed with a
    finite angle, where potential flow with the Kutta condition has a stagnation point; the
    linear-vortex Kutta condition ``gamma_1 = -gamma_{N+1}`` fixes only the sign relation, and
    the node value ``1 - gamma_1^2`` it leaves is discretisation noise (measured between
    -1.3 and 1.0 over 8 random cases whose neighbouring nodes all had ``Cp ~ 0.3-0.65``).
    Default False: the raw panel values.

    Returns ``(surface, volume)``: two :class:`geoop.Geometry` with 3-D points (z = 0)
    (plus the :class:`AirfoilSolution` when ``return_solution``). Surface: ``line`` cells, point fields ``Cp``
    (N, 1), normals (N, 3). Volume: ``triangle`` cells, point fields ``u``, ``v``, ``p``.
    """
    from ..geometry.geometry import Geometry

    params = dict(params)
    unknown = set(params) - set(_PARAM_KEYS) - {"naca"}
    if unknown:
        raise ConfigError(f"airfoil params: unknown keys {sorted(unknown)}; valid: {sorted(_PARAM_KEYS + ('naca',))}")
    rng = np.random.default_rng(seed)
    if "naca" in params:
        prm = NacaParams.coerce(params["naca"])
    else:
        missing = [k for k in ("m", "p", "t") if k not in params]
        if missing:
            raise ConfigError(f"airfoil params: missing {missing}; give 'm', 'p', 't' or 'naca' (e.g. '2412')")
        prm = NacaParams.coerce({k: params[k] for k in ("m", "p", "t")})
    n_panels = params.get("n_panels")
    if n_panels is None:
        n_panels = int(2 * round(160 * rng.uniform(0.9, 1.1) / 2))
    n_volume = params.get("n_volume")
    if n_volume is None:
        n_volume = int(6000 * rng.uniform(0.9, 1.1))
    sol = solve_airfoil(prm, float(params.get("alpha_deg", 0.0)), int(n_panels))
    surf = sol.surface_points
    pts = airfoil_domain_points(surf, sol.normals, n_target=int(n_volume), far_radius=float(params.get("far_radius", 5.0)))
    tri = airfoil_volume_mesh(surf, pts)
    used = np.unique(tri)
    # drop points left without triangles (none expected), keep the surface nodes first
    remap = -np.ones(pts.shape[0], dtype=np.int64)
    remap[used] = np.arange(used.shape[0])
    pts, tri = pts[used], remap[tri]
    n_s = surf.shape[0]
    on_surface = used < n_s
    vel = np.empty((pts.shape[0], 2))
    vel[on_surface] = sol.surface_velocity[used[on_surface]]
    vel[~on_surface] = sol.velocity(pts[~on_surface])
    cp_surface = sol.cp_surface
    if te_stagnation:  # node 0 is the trailing edge (see naca4_coordinates)
        vel[used == 0] = 0.0
        cp_surface = cp_surface.copy()
        cp_surface[0] = 1.0
    p = 1.0 - np.sum(vel**2, axis=1)
    z0 = np.zeros((pts.shape[0], 1))
    n = surf.shape[0]
    lines = np.stack([np.arange(n), (np.arange(n) + 1) % n], axis=1)
    pad = lambda a: np.concatenate([a, np.zeros((a.shape[0], 1))], axis=1)  # noqa: E731
    surface = Geometry(
        pad(surf),
        cells={"line": lines},
        normals=pad(sol.normals),
        fields={"Cp": cp_surface},
        name=f"NACA{prm.code}",
    )
    volume = Geometry(
        np.concatenate([pts, z0], axis=1),
        cells={"triangle": tri},
        fields={"u": vel[:, 0], "v": vel[:, 1], "p": p},
        name=f"NACA{prm.code} domain",
    )
    return (surface, volume, sol) if return_solution else (surface, volume)


def _write(geometry, path: str) -> None:
    from ._case_io import write_geometry

    write_geometry(geometry, path)


def generate(out_dir: str, n: int, seed: int = 0, te_stagnation: bool = False, **ranges) -> list[dict]:
    """Write ``n`` airfoil cases to ``out_dir`` plus ``manifest.json``.

    Parameters are drawn uniformly from :data:`DEFAULT_RANGES`, overridden by ``ranges``
    (``m=(0, 0.04)``, ``alpha_deg=5.0``, ...). Deterministic for a given ``seed``: case ``i``
    uses ``numpy.random.default_rng([seed, i])``. ``te_stagnation``: see :func:`make_case`.

    Returns the manifest entries: ``{"case", "surface", "volume", "params", "cl",
    "n_surface", "n_volume"}`` per case.
    """
    from ._case_io import write_manifest

    if int(n) != n or n < 0:
        raise ConfigError(f"n: expected a non-negative integer, got {n!r}")
    rg = _resolve_ranges(ranges)
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for i in range(int(n)):
        rng = np.random.default_rng([int(seed), i])
        prm = sample_params(rng, rg)
        surface, volume, sol = make_case(prm, seed=int(rng.integers(2**31)), return_solution=True,
                                         te_stagnation=te_stagnation)
        sname, vname = f"case_{i:04d}_surface.vtp", f"case_{i:04d}_volume.vtu"
        _write(surface, os.path.join(out_dir, sname))
        _write(volume, os.path.join(out_dir, vname))
        entries.append(
            {
                "case": f"case_{i:04d}",
                "surface": sname,
                "volume": vname,
                "params": {**prm, "naca": sol.params.code},
                "cl": sol.cl,
                "n_surface": surface.n_points,
                "n_volume": volume.n_points,
            }
        )
    write_manifest(out_dir, {"generator": "geoop.data.airfoil", "seed": int(seed), "ranges": rg, "cases": entries})
    return entries
