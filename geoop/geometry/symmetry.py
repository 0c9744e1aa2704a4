"""Symmetry planes: half bodies, their mirrored closed bodies, and mirroring.

A CFD case of a body symmetric about a plane is often computed on half the body (a car cut
at ``y = 0``, the plane a ``symmetryPlane`` patch). The half surface is open, so it has no
inside; the full body is the half and its mirror image, welded along the seam.

A plane is ``{x : n . x = c}`` with a unit normal ``n`` (:class:`SymmetryPlane`); the
reflection across it is

.. math::

    R(\\mathbf x) = \\mathbf x - 2\\,(\\mathbf n\\cdot\\mathbf x - c)\\,\\mathbf n,
    \\qquad R(\\mathbf v) = \\mathbf v - 2\\,(\\mathbf n\\cdot\\mathbf v)\\,\\mathbf n
    \\ \\text{(vectors: normals, velocities, wall shear)}.

* :func:`full_body` -- the half body plus its mirror image: points reflected, cells with
  their winding reversed (so outward stays outward), vector fields' normal component
  negated, the seam (the half's open-boundary vertices) shared by both halves, so the
  result is closed where the half's only open boundary lies on the plane. The SDF
  (:func:`geoop.geometry.sdf.sdf`) and the force integration
  (:func:`geoop.physics.forces`) of a geometry with ``symmetry`` use it.
* :func:`check_touches` -- the half's open boundary must lie on the plane (within
  :data:`SYMMETRY_TOLERANCE` times the body size) and the body on one side of it, else
  :class:`~geoop.errors.SymmetryError` naming the geometry and the distance.
* :func:`detect_symmetry` -- the coordinate plane holding all open-boundary vertices
  (``Geometry(symmetry="auto")``); :func:`plane_from_points` / :func:`is_symmetry_patch`
  -- the plane of a mesh patch (e.g. OpenFOAM's ``symmetryPlane`` patch) and whether a
  patch name or type denotes one; :func:`symmetry_from_patches` -- both over a case's patches.
* :func:`mirror` -- the mirror image alone (data augmentation of full-body cases).

Vector fields: a field whose components must be reflected. ``vector_fields="auto"``
takes every point and cell field with exactly ``d`` components (``d`` the point
dimension: ``U``, ``wallShearStress``, ``Normals``...); a list names them explicitly (each
must have ``d`` components); ``()`` reflects none. Scalars (``p``) are copied.

Shapes
------
points : (N, d)       normal : (d,)       fields : (N, C)       returns of full_body:
(N + N - K, d) points, K the seam vertices; cells of each type ``[half; mirror]``.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import FieldError, SymmetryError
from .sdf import _edges_count

if TYPE_CHECKING:  # pragma: no cover
    from .geometry import Geometry

__all__ = ["SymmetryPlane", "SYMMETRY_TOLERANCE", "SYMMETRY_PATCH_TYPES", "resolve_symmetry", "is_surface", "open_boundary_vertices",
           "check_touches", "detect_symmetry", "full_body", "mirror", "vector_field_names", "plane_from_points",
           "is_symmetry_patch", "symmetry_from_patches"]

log = logging.getLogger(__name__)

#: relative tolerance: open-boundary vertices within this fraction of the body size (its
#: largest bounding-box extent) of the plane are on it
SYMMETRY_TOLERANCE = 1e-4
#: OpenFOAM patch types of a symmetry plane
SYMMETRY_PATCH_TYPES = ("symmetryPlane", "symmetry")
_AXES = {"x": 0, "y": 1, "z": 2}
_PATCH_NAME = re.compile(r"^(sym|symmetry)([_\-]?plane)?([_\-]?\d+)?$", re.IGNORECASE)


@dataclass(frozen=True)
class SymmetryPlane:
    """The plane ``{x : normal . x = offset}``; ``normal`` is made unit length.

    Build one from a spec with :meth:`from_spec`: ``("y", 0.0)``, ``"y"`` (offset 0), an axis
    index ``(1, 0.0)``, ``{"normal": [0, 1, 0], "offset": 0.0}`` or ``{"normal": ...,
    "point": [...]}``, ``[nx, ny, nz, c]``, or a SymmetryPlane.
    """

    normal: tuple
    offset: float = 0.0

    def __post_init__(self):
        n = np.asarray(self.normal, dtype=np.float64).reshape(-1)
        c = float(self.offset)
        if n.shape[0] not in (2, 3) or not np.all(np.isfinite(n)) or not math.isfinite(c):
            raise SymmetryError(f"symmetry plane: the normal must be 2 or 3 finite numbers and the offset finite, got "
                                f"normal={list(self.normal)}, offset={self.offset!r}")
        norm = float(np.linalg.norm(n))
        if norm == 0:
            raise SymmetryError(f"symmetry plane: the normal must be non-zero, got {list(self.normal)}")
        object.__setattr__(self, "normal", tuple(float(v) for v in n / norm))
        object.__setattr__(self, "offset", c / norm)

    # ------------------------------------------------------------------ construction
    @classmethod
    def axis_plane(cls, axis: Union[int, str], offset: float = 0.0, dim: int = 3) -> "SymmetryPlane":
        """The plane ``x_axis = offset`` (axis ``"x"``/``"y"``/``"z"`` or 0/1/2)."""
        k = _axis_index(axis, dim)
        n = [0.0] * dim
        n[k] = 1.0
        return cls(tuple(n), float(offset))

    @classmethod
    def from_spec(cls, spec, dim: int = 3) -> "SymmetryPlane":
        """A plane from any accepted spec (see the class docstring), with a ``dim``-component
        normal (a 3-component normal with zero z fits a 2-D geometry)."""
        if isinstance(spec, SymmetryPlane):
            plane = spec
        elif isinstance(spec, (str, int)) and not isinstance(spec, bool):
            plane = cls.axis_plane(spec, 0.0, dim)
        elif isinstance(spec, Mapping):
            unknown = sorted(set(spec) - {"axis", "normal", "offset", "point"})
            if unknown or ("axis" in spec) == ("normal" in spec) or ("offset" in spec and "point" in spec):
                raise SymmetryError(f"symmetry plane: expected {{'axis': 'y', 'offset': c}}, {{'normal': [...], 'offset': c}} "
                                    f"or {{'normal': [...], 'point': [...]}}, got {dict(spec)!r}")
            if "axis" in spec:
                plane = cls.axis_plane(spec["axis"], float(spec.get("offset", 0.0)), dim)
            else:
                n = np.asarray(spec["normal"], dtype=np.float64)
                c = float(n @ np.asarray(spec["point"], dtype=np.float64)) if "point" in spec else float(spec.get("offset", 0.0))
                plane = cls(tuple(n), c)
        elif isinstance(spec, (list, tuple, np.ndarray, Tensor)):
            items = list(spec.tolist() if hasattr(spec, "tolist") else spec)
            if len(items) in (1, 2) and isinstance(items[0], (str, int)) and not isinstance(items[0], bool):
                plane = cls.axis_plane(items[0], float(items[1]) if len(items) == 2 else 0.0, dim)
            elif len(items) == 2 and isinstance(items[0], (list, tuple, np.ndarray, Tensor)):
                plane = cls(tuple(np.asarray(items[0], dtype=np.float64)), float(items[1]))
            elif len(items) in (3, 4) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
                plane = cls(tuple(items[:-1]), float(items[-1]))
            else:
                raise SymmetryError(f"symmetry plane: cannot read {spec!r}; give ('y', 0.0), an axis index and offset, "
                                    f"[nx, ny, nz, c] or {{'normal': [...], 'offset': c}}")
        else:
            raise SymmetryError(f"symmetry plane: expected ('y', 0.0), 'y', a dict or a SymmetryPlane, got "
                                f"{type(spec).__name__} {spec!r}")
        return plane.with_dim(dim)

    def with_dim(self, dim: int) -> "SymmetryPlane":
        """The same plane with a ``dim``-component normal (2-D: drop a zero z; 3-D: z = 0)."""
        if len(self.normal) == dim:
            return self
        if dim == 3:
            return SymmetryPlane(self.normal + (0.0,), self.offset)
        if abs(self.normal[2]) > 1e-12:
            raise SymmetryError(f"symmetry plane {self.describe()}: a 2-D geometry needs a plane normal in the x-y "
                                f"plane, got {list(self.normal)}")
        return SymmetryPlane(self.normal[:2], self.offset)

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return len(self.normal)

    @property
    def axis(self) -> Optional[int]:
        """The coordinate axis of the normal when the plane is a coordinate plane, else None."""
        nz = [k for k, v in enumerate(self.normal) if v != 0.0]
        return nz[0] if len(nz) == 1 else None

    def describe(self) -> str:
        """``"y = 0"`` for coordinate planes, else ``"n . x = c"``."""
        if self.axis is not None:
            return f"{'xyz'[self.axis]} = {self.offset * self.normal[self.axis]:.6g}"
        return f"{[round(v, 6) for v in self.normal]} . x = {self.offset:.6g}"

    def __repr__(self) -> str:
        return f"SymmetryPlane({self.describe()})"

    def to_list(self) -> list:
        """``[n_1, ..., n_d, c]`` (plain floats; files and checkpoints)."""
        return [*self.normal, self.offset]

    # ------------------------------------------------------------------ maps
    def _n(self, like: Tensor) -> Tensor:
        return torch.tensor(self.normal, dtype=like.dtype, device=like.device)

    def distance(self, points: Tensor) -> Tensor:
        """Signed distance ``n . x - c`` of (Q, d) points, (Q,)."""
        return points @ self._n(points) - self.offset

    def reflect(self, points: Tensor) -> Tensor:
        """Mirror images of (…, d) points."""
        return points - 2.0 * self.distance(points)[..., None] * self._n(points)

    def reflect_vectors(self, v: Tensor) -> Tensor:
        """Mirror images of (…, d) vectors (no offset)."""
        n = self._n(v)
        return v - 2.0 * (v @ n)[..., None] * n

    def reflect_plane(self, other: "SymmetryPlane") -> "SymmetryPlane":
        """The mirror image of the plane ``other``: ``m' = m - 2 (m.n) n``, ``c' = c_o - 2 c (m.n)``."""
        m, n = np.asarray(other.normal), np.asarray(self.normal)
        mn = float(m @ n)
        return SymmetryPlane(tuple(m - 2 * mn * n), other.offset - 2 * self.offset * mn)

    def transformed(self, shift: Tensor, scale: Tensor) -> "SymmetryPlane":
        """The plane in the coordinates ``x' = (x - shift) / scale``: ``(n * scale) . x' = c - n . shift``.

        A reflection commutes with the map only for a coordinate plane or an isotropic scale;
        an oblique plane under an anisotropic scale raises :class:`SymmetryError`."""
        sh = np.asarray(torch.as_tensor(shift, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)[: self.dim]
        sc = np.asarray(torch.as_tensor(scale, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)[: self.dim]
        if sh.shape[0] == 1:
            sh = np.repeat(sh, self.dim)
        if sc.shape[0] == 1:
            sc = np.repeat(sc, self.dim)
        n = np.asarray(self.normal)
        if self.axis is None and not np.allclose(sc, sc[0]):
            raise SymmetryError(f"symmetry plane {self.describe()}: an oblique plane is not a symmetry plane after the "
                                f"anisotropic scaling {sc.tolist()}; use isotropic normalisation or a coordinate plane")
        return SymmetryPlane(tuple(n * sc), self.offset - float(n @ sh))


def _axis_index(axis, dim: int) -> int:
    if isinstance(axis, str) and axis.lower() in _AXES:
        k = _AXES[axis.lower()]
    elif isinstance(axis, int) and not isinstance(axis, bool):
        k = axis
    else:
        raise SymmetryError(f"symmetry plane: unknown axis {axis!r}; valid: 'x', 'y', 'z' or 0, 1, 2")
    if not 0 <= k < dim:
        raise SymmetryError(f"symmetry plane: axis {axis!r} does not exist in {dim}-D")
    return k


def resolve_symmetry(spec, dim: int) -> Optional[SymmetryPlane]:
    """None/False -> None; anything else -> :meth:`SymmetryPlane.from_spec` (``"auto"`` is
    handled by :class:`~geoop.geometry.geometry.Geometry`)."""
    if spec is None or spec is False:
        return None
    return SymmetryPlane.from_spec(spec, dim)


# ----------------------------------------------------------------------------- topology
def is_surface(g: "Geometry") -> bool:
    """True for what a symmetry plane can close: a 3-D triangle/quad surface or a polyline in
    the plane (not a volume mesh, a 2-D domain, a 3-D curve or a point cloud)."""
    top = g.topological_dim
    if top == 3:
        return False
    if top == 2:
        return not (g.dim == 2 or g.is_2d)
    return top == 1 and (g.dim == 2 or g.is_2d)


def open_boundary_vertices(geometry: "Geometry") -> Tensor:
    """(K,) long, sorted: the vertices on the open boundary of a surface (on an edge of one
    triangle/quad only) or of a planar polyline (in one segment only); empty when closed."""
    g = geometry
    if g.topological_dim == 2:
        uniq, counts = _edges_count(g.faces)
        return torch.unique(uniq[counts == 1].reshape(-1))
    lines = g.cells.get("line")
    if lines is None or lines.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    deg = torch.bincount(lines.reshape(-1), minlength=g.n_points)
    return torch.nonzero(deg == 1).flatten()


def _size(g: "Geometry") -> float:
    lo, hi = g.bounds
    size = float((hi - lo).max())
    return size if size > 0 else 1.0


def _name(g: "Geometry") -> str:
    return g.source or g.name or "geometry"


def check_touches(geometry: "Geometry", plane: Optional[SymmetryPlane] = None, tol: float = SYMMETRY_TOLERANCE) -> Tensor:
    """Check that ``geometry`` is a half body on ``plane`` (default: its ``symmetry``) and
    return its open-boundary vertices (K,).

    Raises :class:`SymmetryError` naming the geometry when it is not a surface/planar curve,
    has no open boundary, when an open-boundary vertex is farther than ``tol * size`` from the
    plane (``size`` the largest bounding-box extent; the message gives the distance), or when
    points lie farther than that on both sides of the plane."""
    plane = plane if plane is not None else geometry.symmetry
    if plane is None:
        raise SymmetryError(f"{_name(geometry)}: no symmetry plane declared")
    if not is_surface(geometry):
        raise SymmetryError(f"{_name(geometry)}: a symmetry plane closes a 3-D surface (triangles/quads) or a planar "
                            f"polyline; this geometry has cells {sorted(geometry.cells) or 'none'}")
    plane = plane.with_dim(geometry.dim)
    b = open_boundary_vertices(geometry)
    size = _size(geometry)
    lim = tol * size
    if b.numel() == 0:
        raise SymmetryError(f"{_name(geometry)}: symmetry plane {plane.describe()} declared, but the surface has no open "
                            f"boundary (it is closed): it is not a half body cut by the plane")
    pts = geometry.points.double()
    d = plane.distance(pts[b]).abs()
    if float(d.max()) > lim:
        off = int((d > lim).sum())
        raise SymmetryError(f"{_name(geometry)}: the symmetry plane {plane.describe()} does not touch the body: {off} of "
                            f"{b.numel()} open-boundary vertices lie off it, up to {float(d.max()):.6g} away (tolerance "
                            f"{lim:.3g} = {tol:g} x body size {size:.6g}); the closest lies {float(d.min()):.6g} away (a plane off "
                            f"the body, or open boundaries elsewhere: holes, or cuts such as wheels meeting the ground)")
    sd = plane.distance(pts)
    if float(sd.min()) < -lim and float(sd.max()) > lim:
        raise SymmetryError(f"{_name(geometry)}: the body lies on both sides of the symmetry plane {plane.describe()} "
                            f"(signed distances from {float(sd.min()):.6g} to {float(sd.max()):.6g}): not a half body")
    return b


def detect_symmetry(geometry: "Geometry", tol: float = SYMMETRY_TOLERANCE) -> Optional[SymmetryPlane]:
    """The coordinate plane holding every open-boundary vertex of a surface (within ``tol``
    times the body size) with the body on one side of it, or None (closed surface, volume,
    point cloud, or an open boundary off every coordinate plane). An offset within the
    tolerance of 0 is taken as exactly 0."""
    if not is_surface(geometry):
        return None
    b = open_boundary_vertices(geometry)
    if b.numel() == 0:
        return None
    pts = geometry.points.double()
    lim = tol * _size(geometry)
    spread = pts[b].max(0).values - pts[b].min(0).values
    for k in torch.argsort(spread).tolist():
        if float(spread[k]) > lim:
            break
        c = float(pts[b, k].mean())
        c = 0.0 if abs(c) <= lim else c
        plane = SymmetryPlane.axis_plane(k, c, geometry.dim)
        sd = plane.distance(pts)
        if not (float(sd.min()) < -lim and float(sd.max()) > lim):
            return plane
    return None


def plane_from_points(points, name: str = "patch", tol: float = SYMMETRY_TOLERANCE) -> SymmetryPlane:
    """The plane of a flat patch (e.g. the points of OpenFOAM's ``symmetryPlane`` patch):
    a coordinate plane when the points' extent along an axis is within ``tol`` times their
    size, else the least-squares plane (SVD); :class:`SymmetryError` naming ``name`` when the
    points are not flat within that tolerance. Shapes: points (P, d)."""
    p = torch.as_tensor(np.asarray(points), dtype=torch.float64) if not isinstance(points, Tensor) else points.double()
    if p.dim() != 2 or p.shape[0] < 3 or p.shape[1] not in (2, 3):
        raise SymmetryError(f"{name}: a symmetry patch needs at least 3 points of 2 or 3 coordinates, got {tuple(p.shape)}")
    ext = p.max(0).values - p.min(0).values
    size = float(ext.max()) or 1.0
    lim = tol * size
    k = int(torch.argmin(ext))
    if float(ext[k]) <= lim:
        c = float(p[:, k].mean())
        return SymmetryPlane.axis_plane(k, 0.0 if abs(c) <= lim else c, p.shape[1])
    centre = p.mean(0)
    _, _, vh = torch.linalg.svd(p - centre, full_matrices=False)
    n = vh[-1]
    resid = float(((p - centre) @ n).abs().max())
    if resid > lim:
        raise SymmetryError(f"{name}: the patch is not flat: its points lie up to {resid:.6g} off their best plane "
                            f"(tolerance {lim:.3g}); it cannot be a symmetry plane")
    return SymmetryPlane(tuple(n.tolist()), float(n @ centre))


def is_symmetry_patch(name: str, patch_type: Optional[str] = None) -> bool:
    """True when an OpenFOAM patch is a symmetry plane: its type is one of
    :data:`SYMMETRY_PATCH_TYPES`, or (no type known) its name is ``symmetry``,
    ``symmetryPlane``, ``sym``, ``sym_plane``... (case-insensitive, an optional number)."""
    if patch_type is not None:
        return patch_type in SYMMETRY_PATCH_TYPES
    return bool(_PATCH_NAME.match(str(name)))


def symmetry_from_patches(patches: Mapping[str, object], patch_types: Optional[Mapping[str, str]] = None,
                          where: str = "case", tol: float = SYMMETRY_TOLERANCE) -> Optional[SymmetryPlane]:
    """The symmetry plane of a case from its boundary patches: ``patches`` maps patch names to
    their points (P, d) or geometries; the symmetry patches (:func:`is_symmetry_patch` on the
    name, or on the type from ``patch_types`` when given) are fitted with
    :func:`plane_from_points`. None when there is none; :class:`SymmetryError` naming ``where``
    and the patches when they are not one plane."""
    planes = {}
    for name, patch in patches.items():
        if is_symmetry_patch(name, None if patch_types is None else patch_types.get(name)):
            pts = getattr(patch, "points", patch)
            planes[name] = plane_from_points(pts, name=f"{where}: patch {name!r}", tol=tol)
    if not planes:
        return None
    names = list(planes)
    ref = planes[names[0]]
    for n in names[1:]:
        p = planes[n]
        same = np.allclose(p.normal, ref.normal, atol=tol) and abs(p.offset - ref.offset) <= tol * max(1.0, abs(ref.offset))
        flipped = np.allclose(p.normal, [-v for v in ref.normal], atol=tol) and abs(p.offset + ref.offset) <= tol * max(
            1.0, abs(ref.offset))
        if not (same or flipped):
            raise SymmetryError(f"{where}: the symmetry patches are not one plane: {names[0]!r} is {ref.describe()}, "
                                f"{n!r} is {p.describe()}")
    return ref


# ----------------------------------------------------------------------------- mirroring
def vector_field_names(geometry: "Geometry", vector_fields="auto") -> tuple[list[str], list[str]]:
    """(point fields, cell fields) reflected as vectors: ``"auto"`` every field with ``d``
    components; a list of names (each must exist with ``d`` components, else FieldError);
    ``()``/None none."""
    d = geometry.dim
    if vector_fields is None:
        return [], []
    if isinstance(vector_fields, str) and vector_fields == "auto":
        return ([k for k, v in geometry.fields.items() if v.shape[1] == d],
                [k for k, v in geometry.cell_fields.items() if v.shape[1] == d])
    names = [vector_fields] if isinstance(vector_fields, str) else list(vector_fields)
    pf, cf = [], []
    for n in names:
        v = geometry.fields.get(n, geometry.cell_fields.get(n))
        if v is None:
            raise FieldError(f"{_name(geometry)}: vector field {n!r} to mirror is missing; point fields: "
                             f"{sorted(geometry.fields)}, cell fields: {sorted(geometry.cell_fields)}")
        if v.shape[1] != d:
            raise FieldError(f"{_name(geometry)}: vector field {n!r} to mirror must have {d} components (one per "
                             f"coordinate), got {v.shape[1]}")
        (pf if n in geometry.fields else cf).append(n)
    return pf, cf


#: node orders that undo the orientation reversal of a reflection (VTK node conventions)
_FLIP = {"line": [1, 0], "triangle": [0, 2, 1], "quad": [0, 3, 2, 1], "tetra": [0, 2, 1, 3],
         "pyramid": [0, 3, 2, 1, 4], "wedge": [0, 2, 1, 3, 5, 4], "hexahedron": [0, 3, 2, 1, 4, 7, 6, 5]}


def _flip_cells(kind: str, c: Tensor) -> Tensor:
    """Reorder the nodes of reflected cells so they keep their orientation: surfaces keep
    outward normals, volume cells a positive (VTK) volume; vertices are unchanged."""
    return c[:, _FLIP[kind]] if kind in _FLIP else c


def _flip_polyhedra(poly):
    """Polyhedra with every face's point order reversed (outward faces stay outward after a
    reflection)."""
    from .polyhedra import Polyhedra

    sizes = poly.face_sizes()
    start = torch.repeat_interleave(poly.face_offsets[:-1], sizes)
    end = torch.repeat_interleave(poly.face_offsets[1:], sizes)
    idx = torch.arange(poly.face_points.numel(), device=poly.face_points.device)
    return Polyhedra(poly.face_points[start + end - 1 - idx], poly.face_offsets, poly.cell_offsets)


def _plane(geometry: "Geometry", plane) -> SymmetryPlane:
    if plane is None:
        if geometry.symmetry is None:
            raise SymmetryError(f"{_name(geometry)}: no symmetry plane declared; give plane= or Geometry(symmetry=...)")
        return geometry.symmetry
    return SymmetryPlane.from_spec(plane, geometry.dim)


def mirror(geometry: "Geometry", plane=None, vector_fields="auto") -> "Geometry":
    """The mirror image of ``geometry`` across ``plane`` (default its ``symmetry``): points and
    normals reflected, cells reordered to keep their orientation (surfaces: reversed winding;
    tetra/pyramid/wedge/hexahedron: base faces reversed; polyhedra: every face reversed), vector fields (see
    :func:`vector_field_names`) reflected, scalars and weights kept (a reflection keeps
    lengths, areas and volumes); the declared symmetry plane is reflected too."""
    from .geometry import Geometry

    plane = _plane(geometry, plane)
    pf, cf = vector_field_names(geometry, vector_fields)
    pts = plane.reflect(geometry.points)
    return Geometry(
        pts,
        cells={k: _flip_cells(k, c) for k, c in geometry.cells.items()},
        polyhedra=None if geometry.polyhedra is None else _flip_polyhedra(geometry.polyhedra),
        normals=None if geometry.normals is None else plane.reflect_vectors(geometry.normals),
        weights=geometry._weights,
        fields={k: plane.reflect_vectors(v) if k in pf else v for k, v in geometry.fields.items()},
        cell_fields={k: plane.reflect_vectors(v) if k in cf else v for k, v in geometry.cell_fields.items()},
        name=geometry.name,
        source=geometry.source,
        symmetry=None if geometry.symmetry is None else plane.reflect_plane(geometry.symmetry),
        validate=False,
    )


def _drop_in_plane_cells(geometry: "Geometry", plane: SymmetryPlane, tol: float) -> "Geometry":
    """``geometry`` without its faces (triangles, quads, polygons) whose vertices all lie
    within ``tol * size`` of ``plane`` (cell fields kept in step); unchanged when it has none."""
    faces = ("triangle", "quad", "polygon")
    if not any(k in geometry.cells for k in faces):
        return geometry
    lim = tol * _size(geometry)
    near = plane.distance(geometry.points.double()).abs() <= lim
    drop = {k: near[c].all(1) for k, c in geometry.cells.items() if k in faces and c.dim() == 2 and c.shape[0]}
    if not any(bool(m.any()) for m in drop.values()):
        return geometry
    cells, cell_fields, start = {}, {k: [] for k in geometry.cell_fields}, 0
    for k, c in geometry.cells.items():
        keep = ~drop[k] if k in drop else torch.ones(c.shape[0], dtype=torch.bool, device=c.device)
        cells[k] = c[keep]
        for name, v in geometry.cell_fields.items():
            cell_fields[name].append(v[start : start + c.shape[0]][keep.to(v.device)])
        start += c.shape[0]
    return geometry.replace(cells=cells, cell_fields={k: torch.cat(v) for k, v in cell_fields.items()})


def full_body(geometry: "Geometry", plane=None, vector_fields="auto", tol: float = SYMMETRY_TOLERANCE) -> "Geometry":
    """The closed full body of a half body: ``geometry`` plus its mirror image across
    ``plane`` (default its ``symmetry``), the seam welded.

    After :func:`check_touches` (errors when the body does not touch the plane), the
    open-boundary vertices (the seam) are shared: the mirror uses the half's own seam
    vertices, the other vertices are appended reflected. Cells of each type are
    ``[half cells; mirrored cells with reversed winding]`` (cell fields in the same order),
    point and cell vector fields reflected (:func:`vector_field_names`), normals reflected,
    weights recomputed from the cells; the result has no symmetry.

    Cells lying in the plane (every vertex within ``tol * size`` of it; a mesher snapping a
    body's tip onto a symmetry plane leaves such faces) are dropped first: such a face and its
    mirror image coincide with opposite orientations and bound no volume, and kept they would
    make every edge of theirs shared by four faces, so the body would not be closed.

    Shapes: N half points, K seam vertices -> (2N - K, d) points; M cells (P of them in the
    plane) -> 2 (M - P) cells.
    """
    from .geometry import Geometry

    plane = _plane(geometry, plane)
    geometry = _drop_in_plane_cells(geometry, plane.with_dim(geometry.dim), tol)
    seam = check_touches(geometry, plane, tol)
    n = geometry.n_points
    dev = geometry.points.device
    keep = torch.ones(n, dtype=torch.bool, device=dev)
    keep[seam.to(dev)] = False
    new_id = torch.arange(n, device=dev)
    new_id[keep] = n + torch.arange(int(keep.sum()), device=dev)
    pf, cf = vector_field_names(geometry, vector_fields)

    def both(v: Tensor, vec: bool) -> Tensor:
        m = v[keep]
        return torch.cat([v, plane.reflect_vectors(m) if vec else m])

    cells, cell_fields = {}, {k: [] for k in geometry.cell_fields}
    start = 0
    for k, c in geometry.cells.items():
        cells[k] = torch.cat([c, new_id[_flip_cells(k, c)]])
        for name, v in geometry.cell_fields.items():
            part = v[start : start + c.shape[0]]
            cell_fields[name] += [part, plane.reflect_vectors(part) if name in cf else part]
        start += c.shape[0]
    return Geometry(
        torch.cat([geometry.points, plane.reflect(geometry.points[keep])]),
        cells=cells,
        normals=None if geometry.normals is None else both(geometry.normals, True),
        fields={k: both(v, k in pf) for k, v in geometry.fields.items()},
        cell_fields={k: torch.cat(v) for k, v in cell_fields.items()},
        name=geometry.name,
        source=geometry.source,
        validate=False,
    )
