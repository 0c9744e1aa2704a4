"""Aerodynamic coefficients as differentiable linear functionals of surface point data, and
body regions for splitting them.

For point data the quadrature of :func:`geoop.physics.forces` is linear in the pressure and
the wall shear: with the vertex vector weight ``W_i = sum_{c ∋ i} A_c n_c / k`` (outward,
from :func:`~geoop.physics.forces.surface_vector_areas`) and the vertex area
``w_i = sum_{c ∋ i} |A_c| / k`` every coefficient is

.. math::

    c_k = \\sum_i P_{ik}\\,(p_i - p_\\infty) + \\sum_i \\mathbf S_{ik} \\cdot \\boldsymbol\\tau_i,

    P_{ik} = -\\frac{\\mathbf W_i \\cdot \\mathbf e_k}{f_k}, \\quad
    \\mathbf S_{ik} = \\frac{w_i\\,\\mathbf e_k}{f_k}
    \\quad\\text{(force coefficients)},

    P_{ik} = -\\frac{(\\mathbf r_i \\times \\mathbf W_i) \\cdot \\mathbf e_k}{m_k}, \\quad
    \\mathbf S_{ik} = \\frac{w_i\\,(\\mathbf e_k \\times \\mathbf r_i)}{m_k}
    \\quad\\text{(moment coefficients)},

with ``e_k`` the coefficient's direction (drag ``e_D``, lift ``e_L``, side ``e_S``, or an
axis), ``f_k = q * area`` (2-D: ``q * length``), ``m_k = q * area * length`` (2-D:
``q * length**2``) and ``r_i = x_i - x_0``. :func:`coefficient_weights` returns ``P`` and
``S`` once per surface; applying them (:meth:`CoefficientWeights.__call__`) is a matrix
product, differentiable with respect to ``p`` and ``tau`` (a training loss on the
coefficients of a predicted field), and equal to ``forces(...).coefficients`` to rounding.

:func:`body_regions` labels the surface nodes of a body (see its docstring) so a
coefficient splits exactly into per-region parts (``P`` and ``S`` restricted to a region's
rows).

Shapes
------
surface.points : (N, d)    P : (N, K)    S : (N, d, K)    offset : (K,)
p : (N,) / (N, 1) / (..., N)    tau : (N, d) / (..., N, d)    coefficients : (K,) / (..., K)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeError
from ..geometry.geometry import Geometry
from .forces import _coefficient_axes, _directions, _reference_scales, _surface_kind, _symmetry_plane, _where, shear_sign, surface_vector_areas

__all__ = ["CoefficientWeights", "coefficient_weights", "body_regions", "REGIONS", "COEFFICIENT_NAMES"]

#: coefficients :func:`coefficient_weights` knows, per surface kind (as in ``forces(...).coefficients``)
COEFFICIENT_NAMES = {
    "3d": ("cd", "cl", "cs", "cm", "cm_roll", "cm_yaw", "cfx", "cfy", "cfz", "cmx", "cmy", "cmz"),
    "2d": ("cd", "cl", "cm", "cfx", "cfy", "cmz"),
}

#: body regions of :func:`body_regions`, in label order
REGIONS = ("front", "roof", "slant_rear", "base", "underbody")


@dataclass
class CoefficientWeights:
    """The linear map (pressure, wall shear) point data -> coefficients of one surface.

    names : the K coefficients; ``pressure`` (N, K) = dc/dp; ``shear`` (N, d, K) = dc/dtau;
    ``offset`` (K,): the coefficients of p = 0, tau = 0 (the ``p_inf`` term).
    """

    names: list
    pressure: Tensor
    shear: Tensor
    offset: Tensor

    def __call__(self, p: Tensor, wall_shear: Optional[Tensor] = None) -> Tensor:
        """Coefficients (..., K) of pressure ``p`` (..., N) or (N, 1) and optional wall shear
        (..., N, d), in the dtype of ``p`` (differentiable)."""
        if p.dim() == 2 and p.shape[1] == 1 and p.shape[0] == self.pressure.shape[0]:
            p = p[:, 0]
        if p.shape[-1] != self.pressure.shape[0]:
            raise ShapeError(f"CoefficientWeights: pressure has {p.shape[-1]} points, the surface {self.pressure.shape[0]}")
        P = self.pressure.to(p)
        c = p @ P + self.offset.to(p)
        if wall_shear is not None:
            S = self.shear.to(wall_shear)
            if wall_shear.shape[-2:] != S.shape[:2]:
                raise ShapeError(f"CoefficientWeights: wall shear has shape {tuple(wall_shear.shape)}, expected (..., "
                                 f"{S.shape[0]}, {S.shape[1]})")
            c = c + torch.einsum("...nd,ndk->...k", wall_shear, S)
        return c

    def rows(self, index: Tensor) -> "CoefficientWeights":
        """The part of the coefficients from the nodes ``index`` (a region; (K,) long or (N,)
        bool), without the ``p_inf`` offset: the parts of a partition of the nodes add up to
        the whole less ``offset``."""
        idx = torch.as_tensor(index, device=self.pressure.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero()[:, 0]
        keep = torch.zeros(self.pressure.shape[0], dtype=torch.bool, device=idx.device)
        keep[idx] = True
        return CoefficientWeights(list(self.names), self.pressure * keep[:, None], self.shear * keep[:, None, None],
                                  torch.zeros_like(self.offset))


def _vertex_weights(surface: Geometry, orientation: str, plane=None) -> tuple[Tensor, Tensor, str]:
    """(W (N, 3) outward vertex vector weights, w (N,) vertex areas, kind) of a surface
    (``plane``: a half body's symmetry plane, for its outward side)."""
    kind = _surface_kind(surface)
    blocks, vas = surface_vector_areas(surface, orientation, plane)
    n = surface.n_points
    W = vas[0].new_zeros(n, 3)
    w = vas[0].new_zeros(n)
    for (_, c), va in zip(blocks, vas):
        k = c.shape[1]
        c = c.to(W.device)
        W.index_add_(0, c.reshape(-1), (va / k).repeat_interleave(k, 0))
        w.index_add_(0, c.reshape(-1), (va.norm(dim=1) / k).repeat_interleave(k, 0))
    return W, w, kind


def coefficient_weights(
    surface: Geometry,
    names: Sequence[str] = ("cd", "cl"),
    *,
    density: float = 1.0,
    speed: float = 1.0,
    dynamic_pressure: Optional[float] = None,
    length: float = 1.0,
    area: float = 1.0,
    freestream: Optional[Sequence[float]] = None,
    lift_direction: Optional[Sequence[float]] = None,
    moment_center: Optional[Sequence[float]] = None,
    p_inf: float = 0.0,
    orientation: str = "auto",
    symmetry="auto",
    wall_shear_acts_on: str = "wall",
) -> CoefficientWeights:
    """The coefficients ``names`` of ``surface`` as a linear map of point data (see the
    module docstring); the keywords are those of :func:`geoop.physics.forces`, with the
    same defaults and the same quadrature and outward normals.

    ``symmetry``: the plane ``n . x = c`` of a half body, as in ``forces`` (``"auto"``: the
    surface's ``Geometry.symmetry``; None: none; a plane spec such as ``("y", 0.0)``): the
    coefficients are the FULL body's, the half's loads plus their
    mirror image (reflection ``R v = v - 2 (n . v) n``): ``F_full = (I + R) F`` and
    ``M_full = (I - R) M - R (a x F)`` with ``a = x_0 - R x_0``, so a force coefficient of
    direction ``e`` uses ``(I + R) e`` and a moment coefficient ``(I - R) e`` on the moment
    plus ``-(R e) x a`` on the force."""
    plane = _symmetry_plane(surface, symmetry)
    W, w, kind = _vertex_weights(surface, orientation, plane)
    valid = COEFFICIENT_NAMES[kind]
    bad = [c for c in names if c not in valid]
    if bad or not names:
        raise ShapeError(f"coefficient_weights: {bad or list(names)} not defined for a {kind.upper()} surface "
                         f"({_where(surface)}); valid: {list(valid)}")
    _, fa, ma = _reference_scales(kind, density, speed, dynamic_pressure, length, area, "coefficient_weights")
    eD, eL, eS = _directions(kind, freestream, lift_direction)
    x = surface.points.double()
    x = torch.cat([x[:, :2], x.new_zeros(x.shape[0], 1)], 1) if (kind == "2d" or x.shape[1] == 2) else x
    x0 = x.new_zeros(3)
    if moment_center is not None:
        x0 = torch.as_tensor(np.asarray(moment_center, dtype=np.float64)).reshape(-1).to(x)
        need = (2, 3) if kind == "2d" else (3,)  # as geoop.physics.forces: a 3-D centre has 3 components
        if x0.shape[0] not in need:
            raise ShapeError(f"coefficient_weights: moment_center of a {kind.upper()} surface must have "
                             f"{' or '.join(map(str, need))} components, got {x0.shape[0]}")
        x0 = torch.cat([x0[:2], x0.new_zeros(1)]) if (kind == "2d" or x0.shape[0] == 2) else x0
    r = x - x0
    table = _coefficient_axes(kind, eD, eL, eS)
    rxW = torch.linalg.cross(r, W)

    def force_rows(d):  # d . F as (dF/dp (N,), dF/dtau (N, 3))
        return -(W @ d), w[:, None] * d[None, :]

    def moment_rows(d):  # d . M
        return -(rxW @ d), w[:, None] * torch.linalg.cross(d.expand_as(r), r)

    P, S = [], []
    for name in names:
        e, what = table[name]
        e = e.to(x)
        if plane is None:
            pr, sr = force_rows(e) if what == "f" else moment_rows(e)
        else:
            Re = plane.reflect_vectors(e)
            if what == "f":
                pr, sr = force_rows(e + Re)
            else:
                arm = 2.0 * plane.distance(x0) * x.new_tensor(plane.normal)  # x0 - R x0
                p1, s1 = moment_rows(e - Re)
                p2, s2 = force_rows(torch.linalg.cross(Re, arm))
                pr, sr = p1 - p2, s1 - s2
        P.append(pr / (fa if what == "f" else ma))
        S.append(sr / (fa if what == "f" else ma))
    Pm = torch.stack(P, 1)
    Sm = torch.stack(S, 2)
    if kind == "2d":
        Sm = Sm[:, :2]
    Sm = Sm * shear_sign(wall_shear_acts_on)  # the wall shear's convention, as in forces
    return CoefficientWeights(list(names), Pm, Sm, -float(p_inf) * Pm.sum(0))


def body_regions(surface: Geometry, freestream: Optional[Sequence[float]] = None,
                 lift_direction: Optional[Sequence[float]] = None, orientation: str = "auto") -> Tensor:
    """(N,) long labels of the surface nodes of a 3-D body, indices into :data:`REGIONS`.

    With ``s = x . e_D`` the streamwise coordinate (its range ``[s_0, s_0 + L]`` over the
    body), ``n`` the outward unit vertex normal (the forces quadrature's ``W_i / |W_i|``) and
    ``e_L`` the lift (up) direction, in this order of precedence:

    * ``underbody``: facing down, ``n . e_L <= -0.5``;
    * ``base``: facing downstream, ``n . e_D >= 0.7``, in the rear half ``s >= s_0 + L/2``;
    * ``front``: facing upstream, ``n . e_D <= -0.3``, in the front half (nose, bonnet,
      windscreen);
    * ``slant_rear``: facing somewhat downstream, ``n . e_D > 0.1``, in the rear half
      (the slant, rear pillars and the rear of the sides);
    * ``roof``: the rest: surfaces facing up or sideways (roof and sides).
    """
    W, _, kind = _vertex_weights(surface, orientation, _symmetry_plane(surface, "auto"))
    if kind != "3d":
        raise ShapeError(f"body_regions: {_where(surface)} is not a 3-D body surface")
    eD, eL, _ = _directions(kind, freestream, lift_direction)
    n = W / W.norm(dim=1, keepdim=True).clamp_min(1e-300)
    x = surface.points.double()
    s = x @ eD
    rear = s >= s.min() + 0.5 * (s.max() - s.min())
    nd, nl = n @ eD, n @ eL
    lab = torch.full((surface.n_points,), REGIONS.index("roof"), dtype=torch.long)
    lab[rear & (nd > 0.1)] = REGIONS.index("slant_rear")
    lab[~rear & (nd <= -0.3)] = REGIONS.index("front")
    lab[rear & (nd >= 0.7)] = REGIONS.index("base")
    lab[nl <= -0.5] = REGIONS.index("underbody")
    return lab
