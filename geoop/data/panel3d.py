"""3-D constant-strength source panel method (Hess-Smith) on flat triangles.

A closed, outward-oriented triangulated body in a uniform stream ``V_inf`` carries a
source density ``sigma_j`` constant on each flat triangle ``S_j``. The perturbation
velocity of a unit density on ``S_j`` at a point ``P`` is

    K_j(P) = 1 / (4 pi) int_{S_j} (P - Q) / |P - Q|^3 dS_Q
           = 1 / (4 pi) [ n_j Omega_j(P) + sum_{edges k} m_k ln((r_k + r_{k+1} + l_k) / (r_k + r_{k+1} - l_k)) ],

where ``Omega_j`` is the solid angle of the triangle seen from ``P`` (positive on the side
the unit normal ``n_j`` points to, Van Oosterom & Strackee), ``m_k = t_k x n_j`` the
in-plane outward normal of edge ``k`` (unit tangent ``t_k``, length ``l_k``) and ``r_k``
the distance from ``P`` to vertex ``k`` (the in-plane part follows from the divergence
theorem in the plane: ``int grad_Q (1/|P-Q|) dS = sum_k m_k int_edge dl / |P - Q|``).
This is Newman's (1986) closed form written with vectors. Far from the panel
(``|P - c_j| > far_factor * h_j``, ``h_j`` its longest edge) it is replaced by a point
source at the centroid, ``K_j = A_j (P - c_j) / (4 pi |P - c_j|^3)`` (relative error
``O((h_j / d)^2)``).

Flow tangency at the centroids ``c_i`` (collocation) gives the dense system

    sum_j (n_i . K_j(c_i)) sigma_j = -n_i . V_inf,     n_i . K_i(c_i) = 1/2,

(the self term is the limit from outside: the solid angle of the own panel tends to
``2 pi``). The surface velocity is ``V_i = V_inf + sum_j K_j(c_i) sigma_j`` and the pressure
coefficient ``Cp_i = 1 - |V_i|^2 / |V_inf|^2``.

Shapes
------
vertices : (V, 3) float, faces : (F, 3) long (counter-clockwise seen from outside)
sigma : (F,) float, points : (Q, 3) float, velocities : (Q, 3) float
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ShapeError

__all__ = [
    "TrianglePanels",
    "SourcePanelSolution",
    "solve_source_panels",
    "source_influence",
    "solid_angle",
]

_FOUR_PI = 4.0 * np.pi


@dataclass(frozen=True)
class TrianglePanels:
    """Geometry of flat triangular panels.

    Attributes (shapes): ``tri`` (F, 3, 3) vertex coordinates, ``centroid`` (F, 3),
    ``normal`` (F, 3) unit, ``area`` (F,), ``size`` (F,) longest edge,
    ``edge_t`` (F, 3, 3) unit edge tangents (edge k: vertex k -> k+1), ``edge_len`` (F, 3),
    ``edge_m`` (F, 3, 3) in-plane outward edge normals.
    """

    tri: np.ndarray = field(repr=False)
    centroid: np.ndarray = field(repr=False)
    normal: np.ndarray = field(repr=False)
    area: np.ndarray = field(repr=False)
    size: np.ndarray = field(repr=False)
    edge_t: np.ndarray = field(repr=False)
    edge_len: np.ndarray = field(repr=False)
    edge_m: np.ndarray = field(repr=False)

    @classmethod
    def from_mesh(cls, vertices, faces) -> "TrianglePanels":
        v = np.asarray(vertices, dtype=np.float64)
        f = np.asarray(faces)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ShapeError(f"panel vertices: expected shape (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
            raise ShapeError(f"panel faces: expected integer shape (F, 3), got {f.shape} {f.dtype}")
        if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
            raise ShapeError(f"panel faces: indices must be in [0, {v.shape[0] - 1}], got [{f.min()}, {f.max()}]")
        if not np.all(np.isfinite(v)):
            raise ShapeError("panel vertices contain NaN/Inf")
        tri = v[f]
        e = np.roll(tri, -1, axis=1) - tri  # edge k: vertex k -> k+1
        cr = np.cross(e[:, 0], -e[:, 2])
        dbl = np.linalg.norm(cr, axis=1)
        if np.any(dbl <= 0):
            raise ShapeError(f"panel faces: {int(np.sum(dbl <= 0))} degenerate (zero-area) triangles")
        n = cr / dbl[:, None]
        ln = np.linalg.norm(e, axis=2)
        t = e / ln[..., None]
        m = np.cross(t, n[:, None, :])
        return cls(tri, tri.mean(axis=1), n, 0.5 * dbl, ln.max(axis=1), t, ln, m)

    @property
    def n_panels(self) -> int:
        return int(self.tri.shape[0])


def _omega(ax, ay, az, bx, by, bz, cx, cy, cz):
    """Signed solid angle from vertex-minus-point components (any equal shapes)."""
    ra = np.sqrt(ax * ax + ay * ay + az * az)
    rb = np.sqrt(bx * bx + by * by + bz * bz)
    rc = np.sqrt(cx * cx + cy * cy + cz * cz)
    num = ax * (by * cz - bz * cy) + ay * (bz * cx - bx * cz) + az * (bx * cy - by * cx)
    den = ra * rb * rc + (ax * bx + ay * by + az * bz) * rc + (ax * cx + ay * cy + az * cz) * rb + (bx * cx + by * cy + bz * cz) * ra
    return -2.0 * np.arctan2(num, den), (ra, rb, rc)


def solid_angle(tri: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed solid angle of triangles seen from points (Van Oosterom & Strackee 1983),
    positive on the side of the right-hand normal ``(b - a) x (c - a)``:

        tan(Omega / 2) = -R_a . (R_b x R_c) / (r_a r_b r_c + (R_a . R_b) r_c + (R_a . R_c) r_b + (R_b . R_c) r_a),

    ``R_k`` = vertex ``k`` minus the point. Summed over a closed outward mesh,
    ``-Omega / (4 pi)`` is the winding number (1 inside, 0 outside: from inside every
    panel is seen from its inner side).

    Shapes: ``tri`` (F, 3, 3), ``points`` (Q, 3) -> (Q, F) in [-2 pi, 2 pi].
    """
    p = np.asarray(points, dtype=np.float64)
    comps = [tri[None, :, k, i] - p[:, i : i + 1] for k in range(3) for i in range(3)]
    return _omega(*comps)[0]


def _exact_pairs(panels: TrianglePanels, points: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Exact unit-density velocity of panel ``j[k]`` at ``points[k]``: (P, 3) -> (P, 3)."""
    tri = panels.tri[j]  # (P, 3, 3)
    comps = [tri[:, k, i] - points[:, i] for k in range(3) for i in range(3)]
    omega, (ra, rb, rc) = _omega(*comps)
    r = np.stack([ra, rb, rc], axis=1)
    rs = r + np.roll(r, -1, axis=1)  # r_k + r_{k+1}
    lk = panels.edge_len[j]
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log((rs + lk) / (rs - lk))  # (P, 3)
    inplane = np.einsum("pk,pki->pi", lg, panels.edge_m[j])
    return (panels.normal[j] * omega[:, None] + inplane) / _FOUR_PI


def source_influence(panels: TrianglePanels, points: np.ndarray, far_factor: float = 4.0, self_index=None) -> np.ndarray:
    """Velocity induced at ``points`` by unit source density on each panel.

    Pairs with ``|P - c_j| <= far_factor * h_j`` use the exact formula, others the point
    source; ``far_factor=inf`` is exact everywhere. ``self_index`` (Q,) long, optional:
    point ``q`` is the centroid of panel ``self_index[q]``; its normal self term is set to
    the outer limit ``+1/2``.

    Shapes: ``points`` (Q, 3) -> (3, Q, F) (components first). Memory ``O(Q F)``: chunk
    the points.
    """
    pts = np.asarray(points, dtype=np.float64)
    c = panels.centroid
    dx = pts[:, 0:1] - c[None, :, 0]
    dy = pts[:, 1:2] - c[None, :, 1]
    dz = pts[:, 2:3] - c[None, :, 2]
    dist2 = dx * dx + dy * dy + dz * dz
    if np.isfinite(far_factor):
        near = dist2 <= (far_factor * panels.size[None, :]) ** 2
    else:
        near = np.ones(dist2.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = panels.area[None, :] / (_FOUR_PI * dist2 * np.sqrt(dist2))
    scale[near] = 0.0
    K = np.stack([dx * scale, dy * scale, dz * scale])
    qi, pj = np.nonzero(near)
    if qi.size:
        ex = _exact_pairs(panels, pts[qi], pj)
        for i in range(3):
            K[i, qi, pj] = ex[:, i]
    if self_index is not None:
        si = np.asarray(self_index)
        q = np.arange(si.shape[0])
        n = panels.normal[si]
        Ks = K[:, q, si].T  # (Q, 3)
        # replace the (branch-dependent) normal part by the outer limit 1/2
        Ks = Ks - np.einsum("qi,qi->q", Ks, n)[:, None] * n + 0.5 * n
        K[:, q, si] = Ks.T
    return K


@dataclass(frozen=True)
class SourcePanelSolution:
    """Solution of :func:`solve_source_panels`.

    Attributes (shapes): ``panels``, ``sigma`` (F,), ``v_inf`` (3,) free-stream vector,
    ``surface_velocity`` (F,) x 3 at centroids, ``cp`` (F,) at centroids.
    """

    panels: TrianglePanels = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    v_inf: np.ndarray
    surface_velocity: np.ndarray = field(repr=False)
    cp: np.ndarray = field(repr=False)
    far_factor: float = 4.0

    def velocity(self, points: np.ndarray, chunk_size: int = 512) -> np.ndarray:
        """Velocity at points outside the body, ``V_inf + sum_j sigma_j K_j(P)``.

        Shapes: ``points`` (Q, 3) -> (Q, 3).
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ShapeError(f"velocity points: expected shape (Q, 3), got {pts.shape}")
        out = np.empty_like(pts)
        for s in range(0, pts.shape[0], chunk_size):
            K = source_influence(self.panels, pts[s : s + chunk_size], self.far_factor)
            out[s : s + chunk_size] = self.v_inf + (K @ self.sigma).T
        return out

    def pressure(self, points: np.ndarray, chunk_size: int = 512) -> np.ndarray:
        """Pressure coefficient ``1 - |V|^2 / |V_inf|^2`` at points (Q, 3) -> (Q,)."""
        v = self.velocity(points, chunk_size)
        return 1.0 - np.sum(v**2, axis=1) / float(np.dot(self.v_inf, self.v_inf))


def solve_source_panels(vertices, faces, v_inf=(1.0, 0.0, 0.0), far_factor: float = 4.0, chunk_size: int = 256) -> SourcePanelSolution:
    """Solve the source panel method for a closed outward-oriented triangle mesh.

    Parameters
    ----------
    vertices : (V, 3) float
    faces : (F, 3) long, counter-clockwise seen from outside (outward normals)
    v_inf : (3,) free-stream velocity
    far_factor : near/far threshold in panel sizes (``inf``: exact everywhere)
    chunk_size : rows of the influence matrix computed at once (memory ``chunk * F * 3``)
    """
    panels = TrianglePanels.from_mesh(vertices, faces)
    vinf = np.asarray(v_inf, dtype=np.float64).reshape(3)
    F = panels.n_panels
    Kx = np.empty((F, F))
    Ky = np.empty((F, F))
    Kz = np.empty((F, F))
    for s in range(0, F, chunk_size):
        idx = np.arange(s, min(F, s + chunk_size))
        Kx[idx], Ky[idx], Kz[idx] = source_influence(panels, panels.centroid[idx], far_factor, self_index=idx)
    n = panels.normal
    A = n[:, 0:1] * Kx + n[:, 1:2] * Ky + n[:, 2:3] * Kz
    sigma = np.linalg.solve(A, -(n @ vinf))
    vel = vinf + np.stack([Kx @ sigma, Ky @ sigma, Kz @ sigma], axis=1)
    cp = 1.0 - np.sum(vel**2, axis=1) / float(vinf @ vinf)
    return SourcePanelSolution(panels, sigma, vinf, vel, cp, float(far_factor))
