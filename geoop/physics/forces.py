"""Pressure and wall-shear forces, moments and aerodynamic coefficients on a surface.

``forces(surface, p, wall_shear=None, **reference)`` integrates the traction on a body's
surface :class:`~geoop.geometry.geometry.Geometry`:

.. math::

    \\mathbf F = \\oint_S \\big(-(p - p_\\infty)\\,\\mathbf n + \\boldsymbol\\tau\\big)\\,dS,
    \\qquad
    \\mathbf M = \\oint_S (\\mathbf x - \\mathbf x_0) \\times
                 \\big(-(p - p_\\infty)\\,\\mathbf n + \\boldsymbol\\tau\\big)\\,dS,

with ``n`` the OUTWARD unit normal (out of the body, into the fluid), ``tau`` the wall
shear stress exerted by the fluid on the wall (force per area) and ``x0`` the moment
reference point. Supported surfaces: 2-D closed or open polylines (``line`` cells, points
(N, 2) or (N, 3) with z = 0; forces are per unit span) and 3-D ``triangle``/``quad``
surfaces.

Quadrature (consistent with :attr:`Geometry.weights`): every cell ``c`` has a vector area
``A_c n_c`` (segment: its length times the unit normal; triangle: half the cross product of
two edges; quad: half the cross product of its diagonals, the exact vector area of a
non-planar quad), and each vertex gets the same share ``1/k`` of every adjacent cell
(``k`` vertices per cell) that :attr:`Geometry.weights` gives it. Point data:
``F_p = -sum_i p_i W_i`` with the vertex vector weight ``W_i = sum_{c ∋ i} A_c n_c / k``
(so ``|W_i| <= w_i``, with equality where the adjacent cells are coplanar) and
``F_tau = sum_i w_i tau_i``; moments use the same vertex weights at the vertex positions.
Cell data: ``F_p = -sum_c p_c A_c n_c`` with moments at the cell centroids (vertex mean).
For point data on flat cells the force is exact for pressures linear on each cell, and
for a constant pressure on a closed surface both the force and the moment are exactly zero
(the vector areas of a closed surface sum to zero).

Outward normals (``orientation``):

* ``"auto"`` (default): ``"normals"`` when the geometry carries point normals, else
  ``"closed"`` when the surface is closed and consistently wound, else an error;
* ``"normals"``: each cell's normal is flipped to agree with the sum of its vertices'
  given normals (CFD exports carry outward normals; inconsistent winding is repaired);
* ``"closed"``: every connected component must be closed and consistently wound (each
  directed edge has its reverse in the same component); it is then oriented so that its
  signed area (2-D shoelace) / volume (3-D, divergence theorem) is positive;
* ``"cells"``: the cells' own winding, right-hand rule (counter-clockwise polylines and
  triangles seen from outside give outward normals).

Half bodies (``symmetry``, default ``"auto"``: the surface's ``Geometry.symmetry``): a
surface that is one half of a body symmetric about the plane ``n . x = c`` (reflection
``R v = v - 2 (n . v) n``), with the other half's loads the mirror image of this half's,
reports the FULL body's loads:

.. math::

    \\mathbf F_{full} = \\mathbf F + R\\mathbf F = 2\\mathbf F - 2(\\mathbf n\\cdot\\mathbf F)\\mathbf n,
    \\qquad
    \\mathbf M_{full} = \\mathbf M - R\\big(\\mathbf M + (\\mathbf x_0 - R\\mathbf x_0)\\times\\mathbf F\\big),

i.e. the force component normal to the plane cancels and the in-plane components double;
for a moment centre on the plane (``x0 = R x0``) ``M_full = 2 (n . M) n``: only the moment
about the plane normal (the pitching moment for ``y = 0``) survives, doubled, and the moments
about the in-plane axes (roll, yaw) cancel. The pressure and shear parts are mapped alike.
Coefficients use the reference values as given: pass the FULL body's reference ``area``.
The half must touch the plane (:func:`geoop.geometry.symmetry.check_touches`, else
:class:`~geoop.errors.SymmetryError`); without point normals its outward side comes from the
mirrored closed body (``orientation="auto"``/``"closed"``). ``symmetry=None`` integrates the
half as it is; a plane spec (``("y", 0.0)``) overrides the geometry's.

Coefficients (``.coefficients``), with ``q = dynamic_pressure`` (default
``0.5 * density * speed**2``), unit drag direction ``e_D`` (the free stream), unit lift
direction ``e_L`` (given or default, made orthogonal to ``e_D``) and side / pitch axis
``e_S = e_L x e_D``:

* 3-D: ``cd = F.e_D / (q area)``, ``cl = F.e_L / (q area)``, ``cs = F.e_S / (q area)``,
  ``cm = M.e_S / (q area length)`` (pitch, nose-up positive for drag +x, lift +z),
  ``cm_roll = M.e_D / (...)``, ``cm_yaw = M.e_L / (...)``, and the axis components
  ``cfx, cfy, cfz, cmx, cmy, cmz``;
* 2-D (per unit span, reference length = chord): ``cd = F.e_D / (q length)``,
  ``cl = F.e_L / (q length)``, ``cm = M.e_S / (q length**2)`` where ``e_S = -z`` for the
  default lift direction (the usual airfoil c_m, nose-up positive), ``cfx, cfy, cmz``.

Shapes
------
surface.points : (N, d)     p : (N,) / (N, 1) point data or (M,) / (M, 1) cell data
wall_shear : (N, d) / (M, d)     force : (d,)     moment : (3,) (2-D: (0, 0, M_z))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import FieldError, ShapeError
from ..geometry.geometry import Geometry

__all__ = ["forces", "ForceResult", "surface_vector_areas", "ORIENTATIONS", "LOCATIONS"]

#: how outward normals are determined (see the module docstring)
ORIENTATIONS = ("auto", "normals", "closed", "cells")
#: where ``p`` / ``wall_shear`` live
LOCATIONS = ("point", "cell")

ArrayOrName = Union[Tensor, np.ndarray, Sequence, str]


@dataclass
class ForceResult:
    """Integrated loads on a surface.

    Attributes
    ----------
    force : (d,) float64 total force (pressure + shear); per unit span in 2-D
    moment : (3,) float64 total moment about ``reference["moment_center"]``
    pressure_force, shear_force : (d,) the two parts of ``force``
    pressure_moment, shear_moment : (3,) the two parts of ``moment``
    coefficients : dict of floats (see the module docstring)
    reference : the reference values used (plain Python types)
    """

    force: Tensor
    moment: Tensor
    pressure_force: Tensor
    shear_force: Tensor
    pressure_moment: Tensor
    shear_moment: Tensor
    coefficients: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        c = ", ".join(f"{k}={v:.4g}" for k, v in self.coefficients.items())
        return f"ForceResult(force={self.force.tolist()}, moment={self.moment.tolist()}, {c})"


# ---------------------------------------------------------------------------- helpers
def _resolve(value: str, valid: Sequence[str], what: str) -> str:
    if value not in valid:
        raise ShapeError(f"forces: unknown {what} {value!r}; valid: {list(valid)}")
    return value


def _where(g: Geometry) -> str:
    return g.source or g.name or "surface"


def _surface_kind(g: Geometry) -> str:
    """``"2d"`` (polyline in the plane) or ``"3d"`` (triangles/quads); errors otherwise."""
    kinds = {k for k, c in g.cells.items() if c.shape[0] > 0 and k != "vertex"}
    if not kinds:
        raise ShapeError(f"{_where(g)}: forces need surface cells (2-D: 'line', 3-D: 'triangle'/'quad'); the geometry has none "
                         f"(cells: {sorted(g.cells)})")
    if kinds == {"line"}:
        if not g.is_2d:
            raise ShapeError(f"{_where(g)}: 'line' cells are a surface only in the plane (2-D or z = 0); this polyline is 3-D")
        return "2d"
    if kinds <= {"triangle", "quad"}:
        if g.dim != 3 or g.is_2d:
            raise ShapeError(f"{_where(g)}: triangles/quads in the plane are a 2-D domain, not a body surface; give the body's "
                             f"boundary polyline ('line' cells) instead")
        return "3d"
    raise ShapeError(f"{_where(g)}: forces need only surface cells (2-D: 'line', 3-D: 'triangle'/'quad'), got {sorted(kinds)}")


def _cell_blocks(g: Geometry, kind: str) -> list[tuple[str, Tensor]]:
    """The surface cells in ``g.cells`` order (the order of cell data)."""
    keep = ("line",) if kind == "2d" else ("triangle", "quad")
    return [(k, c) for k, c in g.cells.items() if k in keep]


def _all_cell_offsets(g: Geometry) -> dict[str, int]:
    """Row offset of each cell type in the cell-data arrays (all cell types, ``cells`` order)."""
    out, s = {}, 0
    for k, c in g.cells.items():
        out[k] = s
        s += c.shape[0]
    return out


def _vector_areas(p3: Tensor, blocks: list[tuple[str, Tensor]], kind: str) -> list[Tensor]:
    """Per block: (M, 3) vector area of each cell by its own winding (right-hand rule;
    2-D segments: tangent rotated by -90 degrees, outward for counter-clockwise curves)."""
    out = []
    for ctype, c in blocks:
        if ctype == "line":
            t = p3[c[:, 1]] - p3[c[:, 0]]
            out.append(torch.stack([t[:, 1], -t[:, 0], torch.zeros_like(t[:, 0])], 1))
        elif ctype == "triangle":
            a, b, cc = p3[c[:, 0]], p3[c[:, 1]], p3[c[:, 2]]
            out.append(0.5 * torch.linalg.cross(b - a, cc - a))
        else:  # quad: half the cross product of the diagonals
            out.append(0.5 * torch.linalg.cross(p3[c[:, 2]] - p3[c[:, 0]], p3[c[:, 3]] - p3[c[:, 1]]))
    return out


def _components(n_points: int, blocks: list[tuple[str, Tensor]]) -> tuple[int, np.ndarray]:
    """Connected components of the cells (through shared vertices): (count, (N,) label)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rows, cols = [], []
    for _, c in blocks:
        cn = c.cpu().numpy()
        for j in range(1, cn.shape[1]):
            rows.append(cn[:, 0])
            cols.append(cn[:, j])
    r = np.concatenate(rows)
    cc = np.concatenate(cols)
    adj = coo_matrix((np.ones(r.shape[0]), (r, cc)), shape=(n_points, n_points))
    return connected_components(adj, directed=False)


def _directed_edges(blocks: list[tuple[str, Tensor]]) -> np.ndarray:
    """(E, 2) directed edges of all cells (each cell's boundary in its winding)."""
    es = []
    for ctype, c in blocks:
        cn = c.cpu().numpy()
        if ctype == "line":
            es.append(cn[:, [0, 1]])
        else:
            k = cn.shape[1]
            es += [cn[:, [j, (j + 1) % k]] for j in range(k)]
    return np.concatenate(es)


def _closed_signs(g: Geometry, p3: Tensor, blocks, kind: str) -> Optional[list[Tensor]]:
    """Per block, the (M,) +-1 orientation making every closed component outward; None when
    the surface is not closed and consistently wound."""
    e = _directed_edges(blocks).astype(np.int64)
    n = g.n_points
    fwd = np.sort(e[:, 0] * n + e[:, 1])
    if np.unique(fwd).shape[0] != fwd.shape[0]:
        return None  # a repeated directed edge: not a consistently wound manifold
    if kind == "2d":
        # closed, consistently wound polylines: every node starts as many segments as it ends
        if not np.array_equal(np.sort(e[:, 0]), np.sort(e[:, 1])):
            return None
    else:
        # closed, consistently wound surfaces: every directed edge has its reverse
        bwd = np.sort(e[:, 1] * n + e[:, 0])
        if not np.array_equal(fwd, bwd):
            return None
    _, label = _components(n, blocks)
    label_t = torch.from_numpy(label).to(p3.device)
    # signed area / volume per component: sum over cells of x_a . (vector area) / dim
    ncomp = int(label.max()) + 1
    vol = p3.new_zeros(ncomp)
    for (ctype, c), va in zip(blocks, _vector_areas(p3, blocks, kind)):
        centre = p3[c].mean(1)
        vol.index_add_(0, label_t[c[:, 0]], (centre * va).sum(1))
    if (vol == 0).any():
        raise ShapeError(f"{_where(g)}: a closed component of the surface encloses zero area/volume; cannot orient it")
    comp_sign = torch.sign(vol)
    return [comp_sign[label_t[c[:, 0]]] for _, c in blocks]


def _normal_signs(g: Geometry, p3: Tensor, blocks, vas: list[Tensor]) -> list[Tensor]:
    """Per block, the (M,) +-1 orientation agreeing with the sum of the vertex normals."""
    nrm = g.normals.to(p3)
    if nrm.shape[1] == 2:
        nrm = torch.cat([nrm, nrm.new_zeros(nrm.shape[0], 1)], 1)
    out = []
    for (ctype, c), va in zip(blocks, vas):
        dot = (nrm[c].sum(1) * va).sum(1)
        bad = dot == 0
        if bad.any():
            raise ShapeError(f"{_where(g)}: the point normals of {int(bad.sum())} {ctype} cells are zero or tangent to the "
                             f"cell (first: cell {int(bad.nonzero()[0, 0])}); cannot orient them (orientation='closed' or "
                             f"'cells' ignores the normals)")
        out.append(torch.sign(dot))
    return out


def _half_closed_signs(surface: Geometry, plane, kind: str) -> Optional[list[Tensor]]:
    """Closed-surface orientation of a half body: the signs of its cells in the mirrored
    closed body (:func:`geoop.geometry.symmetry.full_body`, cells ``[half; mirror]`` per type)."""
    from ..geometry.symmetry import full_body

    full = full_body(surface, plane, vector_fields=())
    p3 = full.points.double()
    p3 = torch.cat([p3[:, :2], p3.new_zeros(p3.shape[0], 1)], 1) if (kind == "2d" or p3.shape[1] == 2) else p3
    signs = _closed_signs(full, p3, _cell_blocks(full, kind), kind)
    if signs is None:
        return None
    return [s[: c.shape[0]] for s, (_, c) in zip(signs, _cell_blocks(surface, kind))]


def surface_vector_areas(surface: Geometry, orientation: str = "auto",
                         symmetry=None) -> tuple[list[tuple[str, Tensor]], list[Tensor]]:
    """Outward vector areas of the surface cells: ``(blocks, areas)`` with ``blocks`` the
    ``(cell type, (M, k) cells)`` pairs in ``surface.cells`` order and ``areas`` per block
    (M, 3) float64 ``A_c n_c`` (see the module docstring for ``orientation``). ``symmetry``:
    the :class:`~geoop.geometry.symmetry.SymmetryPlane` of a half body, whose closed
    orientation is then taken from the mirrored closed body."""
    _resolve(orientation, ORIENTATIONS, "orientation")
    kind = _surface_kind(surface)
    closed_signs = _closed_signs if symmetry is None else (lambda g, p3, b, k: _half_closed_signs(g, symmetry, k))
    p3 = surface.points.double()
    if p3.shape[1] == 2:
        p3 = torch.cat([p3, p3.new_zeros(p3.shape[0], 1)], 1)
    elif kind == "2d":
        p3 = torch.cat([p3[:, :2], p3.new_zeros(p3.shape[0], 1)], 1)
    blocks = _cell_blocks(surface, kind)
    vas = _vector_areas(p3, blocks, kind)
    mode = orientation
    if mode == "auto":
        mode = "normals" if surface.normals is not None else "closed"
        if mode == "closed":
            signs = closed_signs(surface, p3, blocks, kind)
            if signs is None:
                raise ShapeError(
                    f"{_where(surface)}: cannot tell the outward side: the surface has no point normals and is not closed "
                    f"and consistently wound; give normals (Geometry(normals=...)) or orientation='cells' (right-hand rule "
                    f"of the cell winding)")
            return blocks, [va * s[:, None] for va, s in zip(vas, signs)]
    if mode == "normals":
        if surface.normals is None:
            raise ShapeError(f"{_where(surface)}: orientation='normals' but the geometry has no point normals")
        signs = _normal_signs(surface, p3, blocks, vas)
    elif mode == "closed":
        signs = closed_signs(surface, p3, blocks, kind)
        if signs is None:
            raise ShapeError(f"{_where(surface)}: orientation='closed' but the surface is not closed and consistently wound "
                             f"(some directed edge has no reverse edge in it)")
    else:  # cells
        signs = [va.new_ones(va.shape[0]) for va in vas]
    return blocks, [va * s[:, None] for va, s in zip(vas, signs)]


def _values(surface: Geometry, value: ArrayOrName, what: str, location: Optional[str], width: Optional[int]) -> tuple[Tensor, str]:
    """``value`` (array or field name) -> ((R, C) float64 tensor, "point"|"cell")."""
    where = _where(surface)
    if isinstance(value, str):
        in_p, in_c = value in surface.fields, value in surface.cell_fields
        if location is None:
            location = "point" if in_p else "cell" if in_c else None
        src = surface.fields if location == "point" else surface.cell_fields
        if location is None or value not in src:
            raise FieldError(f"{where}: no {location + ' ' if location else ''}field {value!r} for the {what}; point fields: "
                             f"{sorted(surface.fields)}, cell fields: {sorted(surface.cell_fields)}")
        t = src[value]
    else:
        location = location or "point"
        t = value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
    _resolve(location, LOCATIONS, "location")
    t = t.to(device=surface.device, dtype=torch.float64)
    if t.dim() == 1:
        t = t[:, None]
    rows = surface.n_points if location == "point" else surface.n_cells
    if t.dim() != 2 or t.shape[0] != rows or (width is not None and t.shape[1] != width):
        exp = f"({rows}, {width if width is not None else 'C'})"
        raise ShapeError(f"{where}: {what} as {location} data: expected shape {exp} (one row per {location}), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ShapeError(f"{where}: {what} contains NaN/Inf values")
    return t, location


def _unit(v, d: int, what: str) -> Tensor:
    t = torch.as_tensor(np.asarray(v, dtype=np.float64)).reshape(-1)
    if t.shape[0] == 2 and d == 3:
        t = torch.cat([t, t.new_zeros(1)])
    if t.shape[0] != d:
        raise ShapeError(f"forces: {what} must have {d if d == 3 else '2 (or 3)'} components, got {t.shape[0]}")
    n = float(t.norm())
    if not math.isfinite(n) or n == 0:
        raise ShapeError(f"forces: {what} must be a finite non-zero vector, got {t.tolist()}")
    return t / n


def _directions(kind: str, freestream, lift_direction) -> tuple[Tensor, Tensor, Tensor]:
    """Unit drag, lift and side directions ``(e_D, e_L, e_S = e_L x e_D)``, each (3,) float64."""
    eD = _unit([1.0, 0.0, 0.0] if freestream is None else freestream, 3, "freestream")
    if kind == "2d" and abs(float(eD[2])) > 1e-12:
        raise ShapeError(f"forces: a 2-D free stream must lie in the plane, got {eD.tolist()}")
    if lift_direction is None:
        lift = torch.stack([-eD[1], eD[0], eD.new_zeros(())]) if kind == "2d" else eD.new_tensor([0.0, 0.0, 1.0])
    else:
        lift = _unit(lift_direction, 3, "lift_direction")
    lift = lift - (lift @ eD) * eD
    if float(lift.norm()) < 1e-9:
        raise ShapeError(f"forces: the lift direction {None if lift_direction is None else list(lift_direction)} is parallel "
                         f"to the free stream {eD.tolist()}; give lift_direction=")
    eL = lift / lift.norm()
    return eD, eL, torch.linalg.cross(eL, eD)


def _coefficient_axes(kind: str, eD: Tensor, eL: Tensor, eS: Tensor) -> dict[str, tuple[Tensor, str]]:
    """The coefficients of a ``kind`` surface (module docstring), in ``ForceResult.coefficients``
    order: name -> (unit direction (3,), ``"f"``: a force component, ``"m"``: a moment component)."""
    ax = torch.eye(3, dtype=eD.dtype)
    if kind == "2d":
        return {"cd": (eD, "f"), "cl": (eL, "f"), "cm": (eS, "m"), "cfx": (ax[0], "f"), "cfy": (ax[1], "f"),
                "cmz": (ax[2], "m")}
    return {"cd": (eD, "f"), "cl": (eL, "f"), "cs": (eS, "f"), "cm": (eS, "m"), "cm_roll": (eD, "m"),
            "cm_yaw": (eL, "m"), "cfx": (ax[0], "f"), "cfy": (ax[1], "f"), "cfz": (ax[2], "f"),
            "cmx": (ax[0], "m"), "cmy": (ax[1], "m"), "cmz": (ax[2], "m")}


def _reference_scales(kind: str, density, speed, dynamic_pressure, length, area, who: str) -> tuple[float, float, float]:
    """``(q, f, m)``: the dynamic pressure and the force and moment coefficient denominators
    (3-D: ``q area``, ``q area length``; 2-D: ``q length``, ``q length**2``), checked > 0."""
    q = 0.5 * float(density) * float(speed) ** 2 if dynamic_pressure is None else float(dynamic_pressure)
    if not q > 0:
        raise ShapeError(f"{who}: the dynamic pressure must be > 0, got {q} (density={density}, speed={speed})")
    if not (float(length) > 0 and float(area) > 0):
        raise ShapeError(f"{who}: reference length and area must be > 0, got length={length}, area={area}")
    if kind == "2d":
        return q, q * float(length), q * float(length) ** 2
    return q, q * float(area), q * float(area) * float(length)


def _symmetry_plane(surface: Geometry, symmetry):
    """The plane of a half body (checked to touch it, as 3 components), or None."""
    from ..geometry.symmetry import check_touches, resolve_symmetry

    if isinstance(symmetry, str) and symmetry == "auto":
        plane = surface.symmetry
    else:
        plane = resolve_symmetry(symmetry, surface.dim)
    if plane is None:
        return None
    plane = plane.with_dim(surface.dim)
    check_touches(surface, plane)
    return plane.with_dim(3)


def _full_body_loads(F: Tensor, M: Tensor, x0: Tensor, plane) -> tuple[Tensor, Tensor]:
    """(F + R F, M - R (M + (x0 - R x0) x F)): the half's loads plus its mirror image's
    (module docstring). Shapes: F, M, x0 (3,)."""
    R = plane.reflect_vectors
    arm = 2.0 * plane.distance(x0) * F.new_tensor(plane.normal)  # x0 - R x0
    return F + R(F), M - R(M + torch.linalg.cross(arm, F))


#: values of ``wall_shear_acts_on``: the body the given wall shear stress acts on
WALL_SHEAR_ACTS_ON = ("wall", "fluid")


def shear_sign(acts_on: str) -> float:
    """+1 for a wall shear stress given as acting on the wall (skin friction), -1 for one
    acting on the fluid (OpenFOAM's ``wallShearStress``); anything else is a ShapeError."""
    if acts_on not in WALL_SHEAR_ACTS_ON:
        raise ShapeError(f"wall_shear_acts_on must be one of {list(WALL_SHEAR_ACTS_ON)}, got {acts_on!r} ('wall': the "
                         "fluid's stress on the wall, the skin friction; 'fluid': the wall's stress on the fluid, "
                         "as OpenFOAM's wallShearStress)")
    return 1.0 if acts_on == "wall" else -1.0


# ---------------------------------------------------------------------------- main
def forces(
    surface: Geometry,
    p: ArrayOrName,
    wall_shear: Optional[ArrayOrName] = None,
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
    location: Optional[str] = None,
    orientation: str = "auto",
    symmetry="auto",
    wall_shear_acts_on: str = "wall",
) -> ForceResult:
    """Force, moment and coefficients of pressure ``p`` (and wall shear) on ``surface``.

    Parameters
    ----------
    surface : a body surface (2-D ``line`` polyline or 3-D ``triangle``/``quad`` cells)
    p : pressure, point data (N,)/(N, 1) or cell data (M,)/(M, 1), or the name of a
        point/cell field of ``surface``
    wall_shear : optional wall shear stress exerted by the fluid on the wall, (N, d) / (M, d)
        or a field name (in 2-D the z component is ignored)
    density, speed : free-stream density and speed; ``dynamic_pressure`` overrides
        ``0.5 density speed^2`` (pass 1 when ``p`` is already a pressure coefficient)
    length : reference length (2-D: the chord; 3-D: the moment arm of ``cm``)
    area : reference area (3-D only; 2-D coefficients are per unit span over ``length``)
    freestream : free-stream (drag) direction, default +x
    lift_direction : default: the free stream turned by +90 degrees (2-D), +z made
        orthogonal to the free stream (3-D); always made orthogonal to the free stream
    moment_center : moment reference point (d,), default the origin
    p_inf : free-stream pressure subtracted from ``p`` (it integrates to zero on a closed
        body; it matters on open surfaces)
    location : ``"point"`` or ``"cell"`` for arrays (default point; a field name picks its
        own location, point fields first)
    orientation : how outward normals are found, one of :data:`ORIENTATIONS`
    symmetry : ``"auto"`` (the surface's ``symmetry``), None (none), or a plane spec: the
        surface is half of a body symmetric about it and the FULL body's loads are reported
        (see the module docstring; ``area`` is then the full body's reference area)
    wall_shear_acts_on : ``"wall"`` (default): ``wall_shear`` is the stress of the fluid on
        the wall (the skin friction, along the flow); ``"fluid"``: the stress of the wall on
        the fluid, its negative, which is what OpenFOAM's ``wallShearStress`` writes

    Returns a :class:`ForceResult`.
    """
    _resolve(orientation, ORIENTATIONS, "orientation")
    if location is not None:
        _resolve(location, LOCATIONS, "location")
    kind = _surface_kind(surface)
    plane = _symmetry_plane(surface, symmetry)
    blocks, vas = surface_vector_areas(surface, orientation, plane)
    d_out = surface.dim
    d_phys = 2 if kind == "2d" else 3
    pv, ploc = _values(surface, p, "pressure", location, 1)
    pv = pv[:, 0] - float(p_inf)
    tau = None
    if wall_shear is not None:
        tau, tloc = _values(surface, wall_shear, "wall shear", location, None)
        if tau.shape[1] not in (2, 3) or (kind == "3d" and tau.shape[1] != 3):
            raise ShapeError(f"{_where(surface)}: wall shear must have {d_phys} components, got {tau.shape[1]}")
        tau = torch.cat([tau[:, :2], tau.new_zeros(tau.shape[0], 1)], 1) if kind == "2d" else tau
        tau = tau * shear_sign(wall_shear_acts_on)
    x = surface.points.double()
    x = torch.cat([x[:, :2], x.new_zeros(x.shape[0], 1)], 1) if (kind == "2d" or x.shape[1] == 2) else x
    if moment_center is None:
        x0 = x.new_zeros(3)
    else:
        x0 = torch.as_tensor(np.asarray(moment_center, dtype=np.float64)).reshape(-1)
        if x0.shape[0] not in (d_out, d_phys) or x0.shape[0] not in (2, 3):
            raise ShapeError(f"forces: moment_center must have {d_out} components, got {x0.shape[0]}")
        x0 = torch.cat([x0[:2], x0.new_zeros(1)]) if kind == "2d" else x0
        x0 = x0.to(x)
    r = x - x0

    def integrate(values: Tensor, loc: str, vector: bool) -> tuple[Tensor, Tensor]:
        """sum of values * (vector area if not vector else |area|) and its moment."""
        F = x.new_zeros(3)
        M = x.new_zeros(3)
        offs = _all_cell_offsets(surface)
        for (ctype, c), va in zip(blocks, vas):
            k = c.shape[1]
            if loc == "cell":
                v = values[offs[ctype]: offs[ctype] + c.shape[0]]
                dF = v * va.norm(dim=1, keepdim=True) if vector else v * va  # (M, 3)
                rc = r[c].mean(1)
                F = F + dF.sum(0)
                M = M + torch.linalg.cross(rc, dF).sum(0)
            else:
                # vertex shares: each of the k vertices gets 1/k of the cell's (vector) area
                w = (va.norm(dim=1, keepdim=True) if vector else va) / k  # (M, 1|3)
                v = values[c]  # (M, k, C)
                dF = v * w[:, None, :] if not vector else v * w[:, None, :]
                F = F + dF.sum((0, 1))
                M = M + torch.linalg.cross(r[c], dF, dim=2).sum((0, 1))
        return F, M

    Fp, Mp = integrate(-pv[:, None], ploc, vector=False)
    if tau is not None:
        Fs, Ms = integrate(tau, tloc, vector=True)
    else:
        Fs, Ms = x.new_zeros(3), x.new_zeros(3)
    if plane is not None:  # loads of the half and of its mirror image
        Fp, Mp = _full_body_loads(Fp, Mp, x0, plane)
        Fs, Ms = _full_body_loads(Fs, Ms, x0, plane)
    F, M = Fp + Fs, Mp + Ms

    # coefficients
    q, fa, ma = _reference_scales(kind, density, speed, dynamic_pressure, length, area, "forces")
    eD, eL, eS = _directions(kind, freestream, lift_direction)
    Fd, Md = F.detach(), M.detach()
    coeffs = {name: float((Fd if what == "f" else Md) @ e) / (fa if what == "f" else ma)
              for name, (e, what) in _coefficient_axes(kind, eD, eL, eS).items()}
    ref = {"density": float(density), "speed": float(speed), "dynamic_pressure": q, "length": float(length),
           "area": float(area) if kind == "3d" else float(length), "freestream": eD.tolist(), "lift_direction": eL.tolist(),
           "moment_center": x0.tolist(), "p_inf": float(p_inf), "location": ploc, "orientation": orientation,
           "dim": d_phys, "symmetry": None if plane is None else plane.to_list()}

    def out(v: Tensor) -> Tensor:
        return v[:2] if d_out == 2 else v

    return ForceResult(out(F), M, out(Fp), out(Fs), Mp, Ms, coeffs, ref)
