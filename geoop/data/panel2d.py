"""2-D linear-strength vortex panel method (inviscid, incompressible, steady).

A closed body is approximated by ``N`` straight panels between ``N + 1`` nodes
``z_0, ..., z_N`` (complex numbers ``x + i y``; ``z_N == z_0`` is the trailing edge,
the nodes run clockwise: trailing edge -> lower surface -> leading edge -> upper surface
-> trailing edge). Each panel ``j`` carries a vortex sheet whose strength varies linearly
from ``gamma_j`` at its first node to ``gamma_{j+1}`` at its second one, so the sheet is
continuous around the body.

Induced velocity of one panel
-----------------------------
With ``e = (z_{j+1} - z_j) / L`` the unit tangent, ``Z = conj(e) (z - z_j)`` the local
coordinate of the field point ``z`` and ``gamma(t) = gamma_j (1 - t/L) + gamma_{j+1} t/L``
(counter-clockwise circulation positive), the complex velocity ``w = u - i v`` is

    w(z) = -i / (2 pi e) * int_0^L gamma(t) / (Z - t) dt
         = -i / (2 pi e) * [ gamma_j ((1 - Z/L) lg + 1) + gamma_{j+1} ((Z/L) lg - 1) ],
    lg   = log(Z) - log(Z - L),

exact for a straight panel (the branch cut of ``lg`` lies on the panel itself).

Linear system
-------------
Flow tangency at the ``N`` panel midpoints ``m_i`` (outward unit normal ``n_i = i e_i``
for clockwise nodes),

    n_i . (V_inf + sum_j v_j(m_i)) = 0,            i = 0..N-1,

plus one closing condition on the ``N + 1`` unknowns:

* ``kutta=True``: the Kutta condition ``gamma_0 + gamma_N = 0`` (the flow leaves the
  sharp trailing edge smoothly: equal speeds on both sides);
* ``kutta=False``: zero total circulation ``sum_j L_j (gamma_j + gamma_{j+1}) / 2 = 0``
  (bodies without a sharp edge, e.g. the circular cylinder).

The normal self-influence at a panel's own midpoint is ``(gamma_j - gamma_{j+1}) / (2 pi)``
whatever side the limit is taken from, so the matrix is well defined.

Surface speed
-------------
The interior of the body is at rest, so the tangential velocity just outside the sheet
equals the jump across it: the surface speed at node ``k`` is ``|gamma_k|`` and
``Cp_k = 1 - (gamma_k / V_inf)^2``.

Lift (Kutta-Joukowski): ``c_l = -2 Gamma / (V_inf c)``, ``Gamma = sum_j L_j (gamma_j +
gamma_{j+1}) / 2`` (counter-clockwise positive; a lifting airfoil has ``Gamma < 0``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError

__all__ = ["VortexPanelSolution", "solve_vortex_panels", "panel_influence"]


def _as_nodes(nodes: np.ndarray) -> np.ndarray:
    """(N+1, 2) real or (N+1,) complex -> (N+1,) complex, checked."""
    z = np.asarray(nodes)
    if not np.iscomplexobj(z):
        if z.ndim != 2 or z.shape[1] != 2:
            raise ShapeError(f"panel nodes: expected shape (N+1, 2) or complex (N+1,), got {z.shape}")
        z = z[:, 0].astype(np.float64) + 1j * z[:, 1].astype(np.float64)
    if z.ndim != 1 or z.shape[0] < 4:
        raise ShapeError(f"panel nodes: expected at least 4 nodes (3 panels), got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ShapeError("panel nodes contain NaN/Inf")
    if abs(z[-1] - z[0]) > 1e-12 * max(1.0, float(np.max(np.abs(z)))):
        raise ShapeError(f"panel nodes: the polyline must be closed (last node == first), got {z[0]} and {z[-1]}")
    lengths = np.abs(np.diff(z))
    if np.any(lengths <= 0):
        raise ShapeError(f"panel nodes: {int(np.sum(lengths <= 0))} panels have zero length")
    return z


def panel_influence(nodes: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complex velocity ``w = u - i v`` induced at ``points`` by unit node strengths.

    Returns ``(A, B)``: ``A[q, j]`` is the complex velocity at point ``q`` from panel ``j``
    per unit ``gamma_j`` (its first node), ``B[q, j]`` per unit ``gamma_{j+1}``.

    Shapes
    ------
    nodes : (N+1,) complex (closed)
    points : (Q,) complex
    A, B : (Q, N) complex
    """
    z1 = nodes[:-1]
    dz = np.diff(nodes)
    L = np.abs(dz)
    e = dz / L
    Z = np.conj(e)[None, :] * (points[:, None] - z1[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(Z) - np.log(Z - L[None, :])
    zl = Z / L[None, :]
    pref = (-0.5j / np.pi) / e[None, :]
    A = pref * ((1.0 - zl) * lg + 1.0)
    B = pref * (zl * lg - 1.0)
    return A, B


@dataclass(frozen=True)
class VortexPanelSolution:
    """Solution of :func:`solve_vortex_panels`.

    Attributes
    ----------
    nodes : (N+1,) complex, closed polyline (clockwise)
    gamma : (N+1,) float, vortex strength at the nodes (``V_inf = 1`` units times v_inf)
    v_inf : float, free-stream speed
    alpha : float, angle of attack in radians (free stream ``v_inf (cos a, sin a)``)
    """

    nodes: np.ndarray
    gamma: np.ndarray
    v_inf: float
    alpha: float

    @property
    def n_panels(self) -> int:
        return int(self.nodes.shape[0] - 1)

    @property
    def circulation(self) -> float:
        """Total circulation (counter-clockwise positive)."""
        L = np.abs(np.diff(self.nodes))
        return float(np.sum(L * 0.5 * (self.gamma[:-1] + self.gamma[1:])))

    def complex_velocity(self, points: np.ndarray, chunk_size: int = 4096, far_factor: float = 3.0) -> np.ndarray:
        """``u - i v`` at complex ``points`` (Q,), evaluated in chunks of ``chunk_size``
        points so memory stays ``O(chunk_size * N)``.

        Far from a panel (distance from its midpoint ``c`` above ``far_factor`` panel
        lengths) its velocity is the multipole series

            w = -i / (2 pi) sum_{n=0..3} M_n / (z - c)^(n+1),
            M_n = e^n int gamma(t) (t - L/2)^n dt
                = e^n * [g_m L, dg L^2 / 12, g_m L^3 / 12, dg L^4 / 80]_n,

        (``g_m = (g_0 + g_1) / 2``, ``dg = g_1 - g_0``) whose truncation error relative to
        the panel's contribution is below ``(L / d)^4 / 80`` (``2e-4`` at ``far_factor=3``).
        Near pairs use the exact formula ``w = pref [lg (g0 + (g1 - g0) Z / L) + (g0 - g1)]``,
        ``lg = ln(|Z| / |Z - L|) + i arg(Z conj(Z - L))``. ``far_factor=inf`` gives the
        exact sum everywhere.
        """
        pts = np.asarray(points, dtype=np.complex128).reshape(-1)
        out = np.empty(pts.shape[0], dtype=np.complex128)
        w_inf = self.v_inf * np.exp(-1j * self.alpha)
        z1 = self.nodes[:-1]
        dz = np.diff(self.nodes)
        L = np.abs(dz)
        e = dz / L
        c = z1 + 0.5 * dz
        g0, g1 = self.gamma[:-1], self.gamma[1:]
        gm, dg = 0.5 * (g0 + g1), g1 - g0
        k = -0.5j / np.pi
        # far field in single precision (differences taken in double): its rounding error,
        # ~1e-7 of each panel's contribution, is far below the truncation error
        M = [(m_).astype(np.complex64) for m_ in (k * gm * L, k * e * dg * L**2 / 12.0, k * e**2 * gm * L**3 / 12.0, k * e**3 * dg * L**4 / 80.0)]
        r_far2 = ((far_factor * L) ** 2 if np.isfinite(far_factor) else np.full_like(L, np.inf)).astype(np.float32)
        for s in range(0, pts.shape[0], chunk_size):
            q = pts[s : s + chunk_size]
            d = (q[:, None] - c[None, :]).astype(np.complex64)
            near = (d.real**2 + d.imag**2) < r_far2[None, :]
            d[near] = 1.0
            u = 1.0 / d
            far = u * (M[0] + u * (M[1] + u * (M[2] + u * M[3])))
            far[near] = 0.0
            acc = w_inf + far.sum(axis=1, dtype=np.complex128)
            qi, pj = np.nonzero(near)
            if qi.size:
                w = self._exact_pairs(q[qi], pj, z1, L, e)
                acc += np.bincount(qi, weights=w.real, minlength=q.shape[0])
                acc += 1j * np.bincount(qi, weights=w.imag, minlength=q.shape[0])
            out[s : s + chunk_size] = acc
        return out

    def _exact_pairs(self, q: np.ndarray, j: np.ndarray, z1, L, e) -> np.ndarray:
        """Exact complex velocity of panel ``j[k]`` at point ``q[k]`` (pairs, (P,))."""
        g0, g1 = self.gamma[:-1][j], self.gamma[1:][j]
        Lj, ej = L[j], e[j]
        dzq = np.conj(ej) * (q - z1[j])
        x, y = dzq.real, dzq.imag
        xm = x - Lj
        y2 = y * y
        with np.errstate(divide="ignore", invalid="ignore"):
            lr = 0.5 * np.log((x * x + y2) / (xm * xm + y2))
        li = np.arctan2(-y * Lj, x * xm + y2)
        lg = lr + 1j * li
        pref = (-0.5j / np.pi) / ej
        return pref * (lg * (g0 + (g1 - g0) * dzq / Lj) + (g0 - g1))


def solve_vortex_panels(nodes: np.ndarray, alpha: float, v_inf: float = 1.0, kutta: bool = True) -> VortexPanelSolution:
    """Solve the linear-strength vortex panel method (see module docstring).

    Parameters
    ----------
    nodes : (N+1, 2) float or (N+1,) complex, closed clockwise polyline
    alpha : angle of attack in radians
    v_inf : free-stream speed
    kutta : Kutta condition at node 0 (True) or zero total circulation (False)

    Shapes
    ------
    returned ``gamma`` : (N+1,) float
    """
    z = _as_nodes(nodes)
    n = z.shape[0] - 1
    mid = 0.5 * (z[:-1] + z[1:])
    e = np.diff(z) / np.abs(np.diff(z))
    normal = 1j * e  # outward for clockwise nodes
    A, B = panel_influence(z, mid)
    # self terms: the normal component is branch independent; set it exactly
    idx = np.arange(n)
    A[idx, idx] = (-0.5j / np.pi) / e * 1.0
    B[idx, idx] = (-0.5j / np.pi) / e * (-1.0)
    # normal component of velocity u + i v = conj(w): n . V = Re(conj(n) * conj(w)) = Re(conj(n w))
    An = np.real(normal[:, None] * A)
    Bn = np.real(normal[:, None] * B)
    M = np.zeros((n + 1, n + 1))
    M[:n, :n] += An
    M[:n, 1:] += Bn
    w_inf = v_inf * np.exp(-1j * alpha)
    rhs = np.zeros(n + 1)
    rhs[:n] = -np.real(normal * w_inf)
    if kutta:
        M[n, 0] = 1.0
        M[n, n] = 1.0
    else:
        L = np.abs(np.diff(z))
        M[n, :n] += 0.5 * L
        M[n, 1:] += 0.5 * L
    gamma = np.linalg.solve(M, rhs)
    return VortexPanelSolution(nodes=z, gamma=gamma, v_inf=float(v_inf), alpha=float(alpha))
