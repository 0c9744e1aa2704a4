"""The :class:`Geometry` type: points, optional cells, normals, quadrature weights, fields.

A geometry is immutable in spirit: every transform returns a new object and never modifies
its input (tensors may be shared between the input and the output when unchanged).

Shapes
------
points       : (N, d) float, d in {2, 3}
cells        : dict cell type (meshio names: "line", "triangle", "quad", "tetra",
               "hexahedron", "wedge", "pyramid", "vertex") -> (M_k, k) long
normals      : (N, d) float or None
weights      : (N,) float (quadrature; computed lazily when not given)
fields       : dict name -> (N, C) float (1-D inputs are promoted to (N, 1))
cell_fields  : dict name -> (M, C) float, M = total number of cells in ``cells`` order,
               then the polyhedra
polyhedra    : :class:`~geoop.geometry.polyhedra.Polyhedra` or None (ragged polyhedral
               cells, VTK_POLYHEDRON: face lists per cell)
symmetry     : :class:`~geoop.geometry.symmetry.SymmetryPlane` or None (a half body on it)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import FieldError, ShapeError

__all__ = ["Geometry", "NormalizeTransform", "CELL_DIM"]

log = logging.getLogger(__name__)

ArrayLike = Union[Tensor, np.ndarray, Sequence]

#: topological dimension of each supported cell type
CELL_DIM = {
    "vertex": 0,
    "line": 1,
    "triangle": 2,
    "quad": 2,
    "polygon": 2,
    "tetra": 3,
    "hexahedron": 3,
    "wedge": 3,
    "pyramid": 3,
}
_CELL_NODES = {"vertex": 1, "line": 2, "triangle": 3, "quad": 4, "tetra": 4, "hexahedron": 8, "wedge": 6, "pyramid": 5}


def _as_float_tensor(x: ArrayLike, what: str) -> Tensor:
    """Tensors keep their float dtype; numpy arrays / lists become the default dtype
    (float32 unless changed), so files read as float64 give float32 geometries."""
    if isinstance(x, Tensor):
        t = x
        if not torch.is_floating_point(t):
            t = t.to(torch.get_default_dtype())
    else:
        t = torch.as_tensor(np.asarray(x), dtype=torch.get_default_dtype())
    return t


def _as_long_tensor(x: ArrayLike, what: str) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if torch.is_floating_point(t) or t.is_complex():
        raise ShapeError(f"{what}: expected integer indices, got dtype {t.dtype}")
    return t.long()


@dataclass(frozen=True)
class NormalizeTransform:
    """Affine map ``x' = (x - shift) / scale`` (per coordinate) and its inverse.

    Shapes: ``shift`` and ``scale`` are (d,).
    """

    shift: Tensor
    scale: Tensor

    def apply(self, points: Tensor) -> Tensor:
        """(…, d) original coordinates -> (…, d) normalised coordinates."""
        return (points - self.shift.to(points)) / self.scale.to(points)

    def inverse(self, points: Tensor) -> Tensor:
        """(…, d) normalised coordinates -> (…, d) original coordinates."""
        return points * self.scale.to(points) + self.shift.to(points)

    def apply_geometry(self, geometry: "Geometry") -> "Geometry":
        """Map a geometry's points (normals are unchanged by isotropic scaling; with an
        anisotropic scale they are re-normalised). Weights are rescaled by the Jacobian."""
        return geometry._affine(self.shift, self.scale)

    def inverse_geometry(self, geometry: "Geometry") -> "Geometry":
        return geometry._affine(-self.shift / self.scale, 1.0 / self.scale)

    def state_dict(self) -> dict:
        return {"shift": self.shift.detach().cpu(), "scale": self.scale.detach().cpu()}

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "NormalizeTransform":
        return cls(torch.as_tensor(state["shift"]), torch.as_tensor(state["scale"]))



def weight_jacobian(scale: Tensor, dim: int, topological_dim: int, is_2d: bool) -> float:
    """The factor quadrature weights are divided by when points map as ``x' = (x - shift) / scale``:
    ``prod(scale)`` for cells of the points' dimension, ``scale_x scale_y`` for a planar mesh
    stored with z = 0, ``mean(scale)^td`` for lower-dimensional cells (exact for isotropic
    scales), 1 for a bare point cloud (``topological_dim`` 0)."""
    if topological_dim == dim:
        return float(torch.prod(scale[:dim]))
    if topological_dim == 2 and dim == 3 and is_2d:
        return float(scale[0] * scale[1])
    if topological_dim > 0:
        return float(scale.mean()) ** topological_dim
    return 1.0

class Geometry:
    """Points with optional cells, normals, quadrature weights and named point fields.

    Parameters
    ----------
    points : (N, d) array, d in {2, 3}
    faces : (F, k) integer array, optional. Shorthand for surface cells: k=2 lines,
        k=3 triangles, k=4 quads.
    cells : dict cell type -> (M, k) integer array, optional (meshio cell type names).
    normals : (N, d) array, optional
    weights : (N,) array, optional. Quadrature weights. When omitted they are computed from
        the cells on first access (see :meth:`compute_weights`).
    fields : dict name -> (N,) or (N, C) array, optional
    cell_fields : dict name -> (M,) or (M, C) array over all cells (the rows of ``cells``
        in dict order, then those of ``polyhedra``), optional
    polyhedra : :class:`~geoop.geometry.polyhedra.Polyhedra`, optional. Polyhedral cells
        (any number of faces and points) as ragged face lists; they count as 3-D cells for
        :attr:`n_cells`, weights, cell measures and cell-to-point averaging.
    name : str, optional, for messages
    symmetry : the symmetry plane of a half body: ``("y", 0.0)``, ``"y"``, ``(1, 0.0)``,
        ``{"normal": [...], "offset": c}``, a :class:`~geoop.geometry.symmetry.SymmetryPlane`,
        ``"auto"`` (the coordinate plane holding the open boundary of the surface, found by
        :func:`~geoop.geometry.symmetry.detect_symmetry` and logged; None when there is none)
        or None. The SDF and the forces then use the mirrored closed body
        (:func:`~geoop.geometry.symmetry.full_body`); kept by :meth:`replace`, :meth:`select`,
        :meth:`to`, mapped by the normalisation transforms, written to VTK/npz files.

    Float tensors keep their dtype; numpy arrays and lists become ``torch.get_default_dtype()``
    (float32). Fields, normals and weights are cast to the dtype of ``points``.
    source : str, optional, the file the geometry came from (for messages)
    """

    def __init__(
        self,
        points: ArrayLike,
        faces: Optional[ArrayLike] = None,
        *,
        cells: Optional[Mapping[str, ArrayLike]] = None,
        normals: Optional[ArrayLike] = None,
        weights: Optional[ArrayLike] = None,
        fields: Optional[Mapping[str, ArrayLike]] = None,
        cell_fields: Optional[Mapping[str, ArrayLike]] = None,
        polyhedra=None,
        name: Optional[str] = None,
        source: Optional[str] = None,
        validate: bool = True,
        symmetry=None,
    ):
        self.name = name
        self.source = source
        where = self._where()
        pts = _as_float_tensor(points, f"{where}points")
        if pts.dim() != 2 or pts.shape[1] not in (2, 3):
            raise ShapeError(f"{where}points: expected shape (N, 2) or (N, 3), got {tuple(pts.shape)}")
        self.points: Tensor = pts
        n = pts.shape[0]

        cell_dict: dict[str, Tensor] = {}
        if faces is not None:
            f = _as_long_tensor(faces, f"{where}faces")
            if f.dim() != 2 or f.shape[1] not in (2, 3, 4):
                raise ShapeError(f"{where}faces: expected shape (F, 2|3|4), got {tuple(f.shape)}")
            cell_dict[{2: "line", 3: "triangle", 4: "quad"}[f.shape[1]]] = f
        for ctype, c in (cells or {}).items():
            c = _as_long_tensor(c, f"{where}cells[{ctype!r}]")
            if ctype not in CELL_DIM:
                raise ShapeError(f"{where}cells: unsupported cell type {ctype!r}; valid: {sorted(CELL_DIM)}")
            k = _CELL_NODES.get(ctype)
            if c.dim() != 2 or (k is not None and c.shape[1] != k):
                raise ShapeError(
                    f"{where}cells[{ctype!r}]: expected shape (M, {k if k else 'k'}), got {tuple(c.shape)}"
                )
            if ctype in cell_dict:
                c = torch.cat([cell_dict[ctype], c])
            cell_dict[ctype] = c
        self.cells: dict[str, Tensor] = cell_dict
        if polyhedra is not None:
            from .polyhedra import Polyhedra

            if not isinstance(polyhedra, Polyhedra):
                raise ShapeError(f"{where}polyhedra: expected a geoop.geometry.polyhedra.Polyhedra, "
                                 f"got {type(polyhedra).__name__}")
            if polyhedra.n_cells == 0:
                polyhedra = None
        self.polyhedra = polyhedra

        self.normals: Optional[Tensor] = None
        if normals is not None:
            nrm = _as_float_tensor(normals, f"{where}normals").to(pts.dtype)
            if tuple(nrm.shape) != tuple(pts.shape):
                raise ShapeError(f"{where}normals: expected shape {tuple(pts.shape)}, got {tuple(nrm.shape)}")
            self.normals = nrm

        self._weights: Optional[Tensor] = None
        if weights is not None:
            w = _as_float_tensor(weights, f"{where}weights").to(pts.dtype)
            if w.dim() == 2 and w.shape[1] == 1:
                w = w[:, 0]
            if tuple(w.shape) != (n,):
                raise ShapeError(f"{where}weights: expected shape ({n},), got {tuple(w.shape)}")
            self._weights = w

        self.fields: dict[str, Tensor] = {}
        for k, v in (fields or {}).items():
            self.fields[k] = self._check_field(k, v, n, "point")
        m = self.n_cells
        self.cell_fields: dict[str, Tensor] = {}
        for k, v in (cell_fields or {}).items():
            self.cell_fields[k] = self._check_field(k, v, m, "cell")
        self.symmetry = self._resolve_symmetry(symmetry)
        if validate:
            self.validate()

    # ------------------------------------------------------------------ basics
    def _resolve_symmetry(self, spec):
        from .symmetry import detect_symmetry, resolve_symmetry

        if isinstance(spec, str) and spec == "auto":
            plane = detect_symmetry(self)
            log.info("%ssymmetry='auto': %s", self._where(),
                     f"the open boundary lies on the plane {plane.describe()}" if plane is not None else
                     "no coordinate plane holds the open boundary; no symmetry")
            return plane
        return resolve_symmetry(spec, self.dim)

    def _where(self) -> str:
        if self.source:
            return f"{self.source}: "
        if self.name:
            return f"{self.name}: "
        return ""

    def _check_field(self, name: str, value: ArrayLike, n: int, kind: str) -> Tensor:
        t = _as_float_tensor(value, name)
        if t.dtype != self.points.dtype and not t.is_complex():
            t = t.to(self.points.dtype)
        if t.dim() == 1:
            t = t[:, None]
        if t.dim() != 2 or t.shape[0] != n:
            raise FieldError(
                f"{self._where()}{kind} field {name!r}: expected shape ({n}, C) "
                f"(one row per {kind}), got {tuple(t.shape)}"
            )
        return t

    def validate(self) -> "Geometry":
        """Check finiteness and index ranges; raise :class:`ShapeError` naming the culprit."""
        where = self._where()
        n = self.n_points
        if n == 0:
            raise ShapeError(f"{where}geometry has no points")
        if not torch.isfinite(self.points).all():
            bad = (~torch.isfinite(self.points)).any(dim=1).nonzero()[:, 0]
            raise ShapeError(
                f"{where}points: {bad.numel()} of {n} points have NaN/Inf coordinates (first at row {int(bad[0])})"
            )
        for ctype, c in self.cells.items():
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= n):
                raise ShapeError(
                    f"{where}cells[{ctype!r}]: indices must be in [0, {n - 1}], got range "
                    f"[{int(c.min())}, {int(c.max())}]"
                )
        if self.polyhedra is not None:
            self.polyhedra.check(n, where)
        for kind, fd in (("point", self.fields), ("cell", self.cell_fields)):
            for k, v in fd.items():
                if not torch.isfinite(v).all():
                    raise ShapeError(f"{where}{kind} field {k!r} contains NaN/Inf values")
        if self.normals is not None and not torch.isfinite(self.normals).all():
            raise ShapeError(f"{where}normals contain NaN/Inf values")
        if self._weights is not None and (not torch.isfinite(self._weights).all() or (self._weights < 0).any()):
            raise ShapeError(f"{where}weights must be finite and non-negative")
        return self

    @property
    def n_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension d of the points."""
        return int(self.points.shape[1])

    @property
    def n_cells(self) -> int:
        """Number of cells, polyhedra included."""
        return int(sum(c.shape[0] for c in self.cells.values())) + (self.polyhedra.n_cells if self.polyhedra else 0)

    @property
    def topological_dim(self) -> int:
        """Highest cell dimension (0 for a bare point cloud)."""
        return 3 if self.polyhedra is not None else max((CELL_DIM[c] for c in self.cells), default=0)

    @property
    def device(self) -> torch.device:
        return self.points.device

    @property
    def dtype(self) -> torch.dtype:
        return self.points.dtype

    @property
    def faces(self) -> Optional[Tensor]:
        """Surface triangles (F, 3) (quads split in two), or None when there are none."""
        tris = []
        if "triangle" in self.cells:
            tris.append(self.cells["triangle"])
        if "quad" in self.cells:
            q = self.cells["quad"]
            tris += [q[:, [0, 1, 2]], q[:, [0, 2, 3]]]
        return torch.cat(tris) if tris else None

    @property
    def bounds(self) -> tuple[Tensor, Tensor]:
        """Lower and upper corners of the bounding box, each (d,)."""
        return self.points.min(dim=0).values, self.points.max(dim=0).values

    @property
    def is_2d(self) -> bool:
        """True for d=2, or for d=3 with a zero extent in z (2-D CFD exports)."""
        if self.dim == 2:
            return True
        lo, hi = self.bounds
        ext = hi - lo
        return bool(ext[2] <= 1e-12 * max(float(ext.max()), 1e-300))

    def __repr__(self) -> str:
        cells = ", ".join([f"{k}: {v.shape[0]}" for k, v in self.cells.items()]
                          + ([f"polyhedron: {self.polyhedra.n_cells}"] if self.polyhedra else [])) or "none"
        fields = ", ".join(f"{k}{tuple(v.shape[1:])}" for k, v in self.fields.items()) or "none"
        nm = f" {self.name!r}" if self.name else ""
        sym = f", symmetry={self.symmetry.describe()}" if self.symmetry is not None else ""
        return f"Geometry{nm}(points={self.n_points}x{self.dim}, cells=[{cells}], fields=[{fields}]{sym})"

    # ------------------------------------------------------------------ copies
    def replace(self, **changes) -> "Geometry":
        """A new geometry with some attributes replaced (``points``, ``cells``, ``normals``,
        ``weights``, ``fields``, ``cell_fields``, ``polyhedra``, ``name``, ``source``, ``symmetry``)."""
        kw = dict(
            points=self.points,
            cells=self.cells,
            polyhedra=self.polyhedra,
            normals=self.normals,
            weights=self._weights,
            fields=self.fields,
            cell_fields=self.cell_fields,
            name=self.name,
            source=self.source,
            symmetry=self.symmetry,
        )
        kw.update(changes)
        validate = kw.pop("validate", False)
        return Geometry(kw.pop("points"), validate=validate, **kw)

    def with_fields(self, **fields: ArrayLike) -> "Geometry":
        """A new geometry with the given point fields added or replaced."""
        return self.replace(fields={**self.fields, **fields})

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Geometry":
        """Move float tensors to ``device``/``dtype`` and index tensors to ``device``."""

        def f(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return self.replace(
            points=f(self.points),
            cells={k: v.to(device) for k, v in self.cells.items()},
            polyhedra=None if self.polyhedra is None else self.polyhedra.to(device),
            normals=f(self.normals),
            weights=f(self._weights),
            fields={k: f(v) for k, v in self.fields.items()},
            cell_fields={k: f(v) for k, v in self.cell_fields.items()},
        )

    def select(self, index: Tensor) -> "Geometry":
        """The point cloud of the selected points (cells are dropped), with their normals,
        weights and fields. ``index``: (K,) long or (N,) bool."""
        idx = torch.as_tensor(index, device=self.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero()[:, 0]
        return Geometry(
            self.points[idx],
            normals=None if self.normals is None else self.normals[idx],
            weights=self.weights[idx],
            fields={k: v[idx] for k, v in self.fields.items()},
            name=self.name,
            source=self.source,
            validate=False,
            symmetry=self.symmetry,
        )

    # ------------------------------------------------------------------ weights
    @property
    def weights(self) -> Tensor:
        """Quadrature weights (N,): given ones, else :meth:`compute_weights` (cached)."""
        if self._weights is None:
            self._weights = self.compute_weights()
        return self._weights

    def cell_measures(self) -> dict[str, Tensor]:
        """Length / area / volume of each cell, per cell type: dict type -> (M_k,);
        polyhedra under ``"polyhedron"`` (exact, see :mod:`geoop.geometry.polyhedra`)."""
        from .measures import cell_measures

        return cell_measures(self.points, self.cells, self.polyhedra)

    def cell_centroids(self) -> dict[str, Tensor]:
        """Centroid of each cell, per cell type: dict type -> (M_k, d). 3-D cells and
        polyhedra (``"polyhedron"``) by the divergence theorem over their faces (exact),
        other cells the mean of their vertices (exact for segments and triangles)."""
        from .measures import cell_centroids

        return cell_centroids(self.points, self.cells, self.polyhedra)

    def compute_weights(self) -> Tensor:
        """Quadrature weights from the highest-dimensional cells.

        * volume cells (tetra, hexahedron, wedge, pyramid, polyhedra), or triangles/quads of a 2-D
          domain: the dual cell volume (area), each cell's measure split equally among its
          vertices;
        * triangle/quad surfaces in 3-D: the vertex area, a third of the adjacent triangle
          areas (a quarter of the adjacent quad areas);
        * polylines: half of the adjacent segment lengths;
        * bare point clouds: uniform ``1 / N`` (the integral then becomes a mean).

        The weights sum to the total length / area / volume of the mesh.
        """
        from .measures import vertex_weights

        return vertex_weights(self.points, self.cells, self.polyhedra)

    # ------------------------------------------------------------------ normals
    def compute_normals(self) -> "Geometry":
        """A new geometry with area-weighted vertex normals (unit length) from the surface
        triangles (3-D) or polyline segments (2-D); keeps existing normals if present."""
        if self.normals is not None:
            return self
        from .measures import vertex_normals

        return self.replace(normals=vertex_normals(self.points, self.cells))

    # ------------------------------------------------------------------ fields
    def cell_data_to_point_data(self, names: Optional[Iterable[str]] = None) -> "Geometry":
        """Average cell fields onto vertices: the plain mean over the cells touching each
        vertex, as VTK's / ParaView's CellDataToPointData. Returns a new geometry whose point
        fields include the converted ones. Point data win over cell data of the same name: a
        cell field named like a point field (or ``Normals``/``normals`` when the geometry has
        normals, which come from point data) is converted under ``<name>_cell`` instead, so
        both stay available and neither is mistaken for the other."""
        from .measures import cell_to_point

        names = list(self.cell_fields) if names is None else list(names)
        conv = {}
        for k in names:
            if k not in self.cell_fields:
                raise FieldError(f"{self._where()}no cell field {k!r}; available: {sorted(self.cell_fields)}")
            taken = k in self.fields or (k in ("Normals", "normals") and self.normals is not None)
            conv[f"{k}_cell" if taken else k] = cell_to_point(self.cell_fields[k], self.cells, self.n_points,
                                                              self.polyhedra)
        return self.replace(fields={**conv, **self.fields})

    # ------------------------------------------------------------------ transforms
    def _affine(self, shift: Tensor, scale: Tensor) -> "Geometry":
        shift = shift.to(self.points)
        scale = scale.to(self.points)
        pts = (self.points - shift) / scale
        normals = self.normals
        if normals is not None and not torch.allclose(scale, scale[:1].expand_as(scale)):
            normals = normals * scale  # normals transform with the inverse transpose
            normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-30)
        weights = self._weights
        if weights is not None:
            weights = weights / weight_jacobian(scale, self.dim, self.topological_dim, self.is_2d)
        sym = None if self.symmetry is None else self.symmetry.transformed(shift, scale)
        return self.replace(points=pts, normals=normals, weights=weights, symmetry=sym)

    def normalization(self, isotropic: bool = True, margin: float = 0.0) -> NormalizeTransform:
        """The transform mapping this geometry into the unit box ``[0, 1]^d``.

        isotropic : one scale for all axes (the longest extent maps to 1, shapes are kept;
            the other axes are centred in [0, 1]). Otherwise each axis is scaled to [0, 1].
        margin : fraction of the box left empty on each side (e.g. 0.05).
        Axes with zero extent (2-D meshes stored with z = 0) get scale 1, never a division
        by zero.
        """
        lo, hi = self.bounds
        ext = hi - lo
        big = float(ext.max()) if ext.numel() else 0.0
        if big <= 0:
            big = 1.0
        tiny = 1e-12 * big
        if isotropic:
            s = torch.full_like(ext, big)
            center = (lo + hi) / 2
            shift = center - 0.5 * s
        else:
            s = torch.where(ext > tiny, ext, torch.ones_like(ext))
            shift = torch.where(ext > tiny, lo, lo - 0.5)
        if margin:
            s = s / (1 - 2 * margin)
            shift = shift - margin * s
        # flat axes: put the constant coordinate at 0 (2-D CFD exports keep z = 0 -> 0.0)
        flat = ext <= tiny
        shift = torch.where(flat, lo, shift)
        return NormalizeTransform(shift.detach().clone(), s.detach().clone())

    def normalized(self, isotropic: bool = True, margin: float = 0.0) -> tuple["Geometry", NormalizeTransform]:
        """Map into the unit box. Returns ``(new_geometry, transform)``; use
        ``transform.inverse(points)`` to map predictions / query points back."""
        t = self.normalization(isotropic=isotropic, margin=margin)
        return t.apply_geometry(self), t

    # ------------------------------------------------------------------ delegated
    def sample_surface(self, n: int, seed: Optional[int] = None) -> "Geometry":
        """Sample ``n`` points uniformly by area on the surface cells (triangles/quads in
        3-D, segments of a polyline); fields and normals are interpolated. Returns a point
        cloud geometry with uniform weights ``area / n``."""
        from .sampling import sample_surface

        return sample_surface(self, n, seed=seed)

    def sdf(self, points: ArrayLike, backend: str = "auto") -> Tensor:
        """Distance from ``points`` (Q, d) to the surface: signed (negative inside) when the
        surface is watertight or a half body with a declared ``symmetry`` (the distance to
        the mirrored closed body), unsigned otherwise (with an
        :class:`~geoop.errors.UnsignedSDFWarning`). Returns (Q,)."""
        from .sdf import sdf

        return sdf(self, points, backend=backend)

    def contains(self, points: ArrayLike, backend: str = "auto") -> Tensor:
        """(Q,) bool: the points strictly inside the body (``sdf < 0``): a closed surface,
        volume mesh, closed 2-D curve or domain, or a half body with a declared ``symmetry``
        (inside its mirrored closed body). An open surface has no inside: :class:`ShapeError`."""
        import warnings as _w

        from ..errors import UnsignedSDFWarning

        if self.topological_dim == 0 or backend == "kdtree":
            raise ShapeError(f"{self._where()}contains: a point cloud (or the 'kdtree' backend) has no inside")
        with _w.catch_warnings(record=True) as caught:
            _w.simplefilter("always", UnsignedSDFWarning)
            d = self.sdf(points, backend=backend)
        if any(issubclass(c.category, UnsignedSDFWarning) for c in caught):
            raise ShapeError(f"{self._where()}contains: the geometry is open, so it has no inside (declare the symmetry "
                             f"plane of a half body: Geometry(symmetry=('y', 0.0)))")
        return d < 0

    def full_body(self, vector_fields="auto") -> "Geometry":
        """The closed full body of a half body with ``symmetry``
        (:func:`geoop.geometry.symmetry.full_body`)."""
        from .symmetry import full_body

        return full_body(self, vector_fields=vector_fields)

    def mirror(self, plane=None, vector_fields="auto") -> "Geometry":
        """The mirror image across ``plane`` (default the ``symmetry`` plane;
        :func:`geoop.geometry.symmetry.mirror`)."""
        from .symmetry import mirror

        return mirror(self, plane, vector_fields)

    def to_pyvista(self):
        from .convert import to_pyvista

        return to_pyvista(self)

    def to_trimesh(self):
        from .convert import to_trimesh

        return to_trimesh(self)

    def to_open3d(self):
        from .convert import to_open3d

        return to_open3d(self)

    def to_pyg(self, x=None):
        """A ``torch_geometric.data.Data`` (see :func:`geoop.geometry.convert.to_pyg`)."""
        from .convert import to_pyg

        return to_pyg(self, x)

    @classmethod
    def from_pyg(cls, data, name=None) -> "Geometry":
        """From a ``torch_geometric.data.Data`` (see :func:`geoop.geometry.convert.from_pyg`)."""
        from .convert import from_pyg

        return from_pyg(data, name)

    @classmethod
    def from_pyvista(cls, mesh, **kw) -> "Geometry":
        from .convert import from_pyvista

        return from_pyvista(mesh, **kw)
