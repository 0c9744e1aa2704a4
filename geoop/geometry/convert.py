"""Conversions between :class:`~geoop.Geometry` and PyVista, trimesh and Open3D objects.

PyVista is the hub for the VTK file family: :func:`from_pyvista` turns any VTK dataset
(PolyData, UnstructuredGrid, structured grids) into a Geometry, :func:`to_pyvista` goes back.

Cell types follow meshio's names; VTK ids map as
``VERTEX->vertex, LINE->line, TRIANGLE->triangle, QUAD/PIXEL->quad, TETRA->tetra,
HEXAHEDRON/VOXEL->hexahedron, WEDGE->wedge, PYRAMID->pyramid`` (pixels and voxels are
re-ordered to quad/hexahedron node order), ``POLYHEDRON (42)->Geometry.polyhedra`` (ragged
face lists, :mod:`geoop.geometry.polyhedra`). Polygons, triangle strips and poly-lines are
split into triangles and segments by VTK's triangle filter first; other cell types (e.g.
quadratic ones) are dropped with a warning.

Shapes
------
points : (N, 3) float in every VTK object (2-D geometries are padded with z = 0)
point fields : (N,) for one component, (N, C) otherwise
"""
from __future__ import annotations

import warnings
from typing import Iterable, Optional

import numpy as np
import torch

from .._optional import require
from ..errors import FieldError, ShapeError
from .geometry import CELL_DIM, Geometry

__all__ = ["to_pyvista", "from_pyvista", "to_trimesh", "to_open3d", "to_pyg", "from_pyg", "VTK_TO_CELL", "CELL_TO_VTK",
           "SYMMETRY_FIELD"]

#: VTK cell type id -> (geoop cell type, node permutation or None)
VTK_TO_CELL = {
    1: ("vertex", None),
    3: ("line", None),
    5: ("triangle", None),
    8: ("quad", [0, 1, 3, 2]),  # VTK_PIXEL
    9: ("quad", None),
    10: ("tetra", None),
    11: ("hexahedron", [0, 1, 3, 2, 4, 5, 7, 6]),  # VTK_VOXEL
    12: ("hexahedron", None),
    13: ("wedge", None),
    14: ("pyramid", None),
}
#: geoop cell type -> VTK cell type id
CELL_TO_VTK = {"vertex": 1, "line": 3, "triangle": 5, "quad": 9, "tetra": 10, "hexahedron": 12, "wedge": 13, "pyramid": 14}
_NEEDS_TRIANGULATION = {2, 4, 6, 7}  # poly-vertex, poly-line, triangle strip, polygon
#: VTK field-data array holding a geometry's symmetry plane ``[nx, ny, nz, c]``
SYMMETRY_FIELD = "geoop_symmetry"
_NODES = {1: 1, 3: 2, 5: 3, 8: 4, 9: 4, 10: 4, 11: 8, 12: 8, 13: 6, 14: 5}
VTK_POLYHEDRON = 42


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _pad3(points: np.ndarray) -> np.ndarray:
    if points.shape[1] == 3:
        return points
    return np.concatenate([points, np.zeros((points.shape[0], 3 - points.shape[1]), points.dtype)], axis=1)


def _column(v: np.ndarray) -> np.ndarray:
    return v[:, 0] if v.ndim == 2 and v.shape[1] == 1 else v


# ----------------------------------------------------------------------------- to PyVista
def to_pyvista(geometry: Geometry):
    """A :class:`pyvista.PolyData` (point clouds, lines, triangle/quad surfaces) or a
    :class:`pyvista.UnstructuredGrid` (any volume cell), with point fields as ``point_data``,
    normals as ``point_data["Normals"]`` and cell fields as ``cell_data``.

    2-D geometries (d = 2) are padded with z = 0.
    """
    pv = require("pyvista", "VTK conversion")
    g = geometry
    pts = _pad3(_np(g.points))
    cells = {k: _np(v).astype(np.int64) for k, v in g.cells.items() if v.shape[0] > 0}
    order = list(g.cells)  # the order of rows in cell_fields
    starts, s = {}, 0
    for k, v in g.cells.items():
        starts[k] = (s, s + v.shape[0])
        s += v.shape[0]

    if g.polyhedra is not None:
        unsupported = [k for k in cells if k not in CELL_TO_VTK]
        if unsupported:
            raise ShapeError(f"{g._where()}cannot convert cell types {unsupported} to VTK; valid: {sorted(CELL_TO_VTK)}")
        mesh = _polyhedral_grid(pts, [(k, cells[k]) for k in order if k in cells], g.polyhedra)
        pv_order = [k for k in order if k in cells] + ["polyhedron"]
        starts["polyhedron"] = (s, s + g.polyhedra.n_cells)
    elif g.topological_dim <= 2 and "polygon" not in cells:
        pv_order = []
        if not cells:
            mesh = pv.PolyData(pts)  # point cloud: one vertex cell per point (renders as points)
        else:
            mesh = pv.PolyData()
            mesh.points = pts

            def flat(types):
                parts = [np.hstack([np.full((cells[t].shape[0], 1), cells[t].shape[1]), cells[t]]).ravel()
                         for t in types if t in cells]
                return np.concatenate(parts)

            if "vertex" in cells:
                mesh.verts = flat(["vertex"])
            if "line" in cells:
                mesh.lines = flat(["line"])
            surf = [t for t in order if t in ("triangle", "quad") and t in cells]
            if surf:
                mesh.faces = flat(surf)
            pv_order = [t for t in ("vertex", "line") if t in cells] + surf
    else:
        unsupported = [k for k in cells if k not in CELL_TO_VTK]
        if unsupported:
            raise ShapeError(f"{g._where()}cannot convert cell types {unsupported} to VTK; valid: {sorted(CELL_TO_VTK)}")
        mesh = pv.UnstructuredGrid({CELL_TO_VTK[k]: cells[k] for k in order if k in cells}, pts)
        pv_order = [k for k in order if k in cells]
    if g.cell_fields and pv_order:
        perm = np.concatenate([np.arange(*starts[t]) for t in pv_order])
        for k, v in g.cell_fields.items():
            mesh.cell_data[k] = _column(_np(v)[perm])
    for k, v in g.fields.items():
        mesh.point_data[k] = _column(_np(v))
    if g.normals is not None:
        mesh.point_data["Normals"] = _pad3(_np(g.normals))
    if g.symmetry is not None:
        mesh.field_data[SYMMETRY_FIELD] = np.asarray(g.symmetry.with_dim(3).to_list(), dtype=np.float64)
    return mesh


def _cell_array(offsets: np.ndarray, conn: np.ndarray):
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkCellArray

    ca = vtkCellArray()
    ca.SetData(numpy_to_vtk(np.ascontiguousarray(offsets, np.int64), deep=True),
               numpy_to_vtk(np.ascontiguousarray(conn, np.int64), deep=True))
    return ca


def _polyhedral_grid(pts: np.ndarray, blocks: list, poly):
    """A pyvista UnstructuredGrid of fixed-size cell blocks followed by polyhedra, built
    with VTK's polyhedron layout (``SetPolyhedralCells``: one cell array of faces, one of
    each cell's face ids)."""
    import pyvista as pv
    from vtkmodules.util.numpy_support import numpy_to_vtk

    types = [np.full(c.shape[0], CELL_TO_VTK[k], np.uint8) for k, c in blocks]
    conn = [c.reshape(-1) for _, c in blocks]
    sizes = [np.full(c.shape[0], c.shape[1], np.int64) for _, c in blocks]
    cid, pid = (_np(t) for t in poly.cell_points())  # sorted by cell
    types.append(np.full(poly.n_cells, VTK_POLYHEDRON, np.uint8))
    conn.append(pid)
    sizes.append(np.bincount(cid, minlength=poly.n_cells).astype(np.int64))
    n_fixed = sum(c.shape[0] for _, c in blocks)
    sz = np.concatenate(sizes)
    cells = _cell_array(np.concatenate([[0], np.cumsum(sz)]), np.concatenate(conn).astype(np.int64))
    nf = np.concatenate([np.zeros(n_fixed, np.int64), _np(poly.cell_sizes())])
    loc = _cell_array(np.concatenate([[0], np.cumsum(nf)]), np.arange(poly.n_faces, dtype=np.int64))
    faces = _cell_array(_np(poly.face_offsets), _np(poly.face_points))
    ug = pv.UnstructuredGrid()
    ug.points = pts
    ug.SetPolyhedralCells(numpy_to_vtk(np.concatenate(types), deep=True), cells, loc, faces)
    return ug


# ----------------------------------------------------------------------------- from PyVista
def _array_ok(name: str, arr: np.ndarray, n: int) -> bool:
    return (
        arr.shape[0] == n
        and arr.dtype.kind in "biuf"
        and not name.startswith("vtkOriginal")
        and not name.startswith("vtkGhost")
    )


def _flat2(arr: np.ndarray) -> np.ndarray:
    return arr.reshape(arr.shape[0], -1) if arr.ndim != 1 else arr


def from_pyvista(mesh, fields: Optional[Iterable[str]] = None, source: Optional[str] = None, name: Optional[str] = None,
                 on_unknown_cells: str = "warn", validate: bool = True) -> Geometry:
    """A :class:`Geometry` from any PyVista / VTK dataset.

    Point data become ``fields`` (the active normals array, else a 3-component ``"Normals"``
    array, becomes ``normals``),
    cell data become ``cell_fields`` (reordered to match the grouped ``cells``). Numeric
    arrays only; VTK bookkeeping arrays (``vtkOriginal*``, ``vtkGhost*``) are skipped.
    ``fields`` keeps only the named point/cell arrays (:class:`FieldError` lists the
    available ones when one is missing). A mesh with only vertex cells and no cell data
    becomes a bare point cloud. Polyhedra (VTK type 42) become ``Geometry.polyhedra``
    (their faces are checked when the geometry is validated). Cells of other VTK types
    (quadratic, unknown ids) are dropped with a warning (``on_unknown_cells="warn"``, or ``"drop"``), or raise
    :class:`ShapeError` (``"raise"``, what :func:`geoop.read` does by default).
    """
    pv = require("pyvista", "VTK conversion")
    where = f"{source}: " if source else ""
    if isinstance(mesh, pv.MultiBlock):
        mesh = mesh.combine()
    if not isinstance(mesh, pv.DataSet):
        raise ShapeError(f"{where}expected a pyvista DataSet, got {type(mesh).__name__}")
    if mesh.n_points == 0:
        raise ShapeError(f"{where}mesh has no points")
    if isinstance(mesh, pv.PolyData):
        for kind, ca in (("verts", mesh.GetVerts()), ("lines", mesh.GetLines()), ("polys", mesh.GetPolys()),
                         ("strips", mesh.GetStrips())):
            _check_cell_array(ca, mesh.n_points, f"{where}{kind}: ")  # before VTK walks them
        ug = mesh.cast_to_unstructured_grid()
        _check_connectivity(ug, where)  # before any VTK filter touches bad indices
        if ug.n_cells and np.isin(np.asarray(ug.celltypes), list(_NEEDS_TRIANGULATION)).any():
            ug = mesh.triangulate().cast_to_unstructured_grid()  # polygons, strips, poly-lines
    elif isinstance(mesh, pv.UnstructuredGrid):
        ug = mesh
        _check_cell_array(mesh.GetCells(), mesh.n_points, where)
        _check_connectivity(ug, where)
        if ug.n_cells and np.isin(np.asarray(ug.celltypes), list(_NEEDS_TRIANGULATION)).any():
            warnings.warn(f"{where}polygons/strips/poly-lines in an unstructured grid are triangulated", stacklevel=2)
            ug = mesh.triangulate()
    else:
        ug = mesh.cast_to_unstructured_grid()

    n = ug.n_points
    pts = np.array(ug.points)
    ctypes = np.asarray(ug.celltypes)
    conn = np.asarray(ug.cell_connectivity)
    offs = np.asarray(ug.cell_offsets)
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    dropped = []
    poly, poly_rows = None, np.zeros(0, np.int64)
    for t in dict.fromkeys(ctypes.tolist()):
        idx = np.nonzero(ctypes == t)[0]
        if t == VTK_POLYHEDRON:
            poly, poly_rows = _read_polyhedra(ug, idx, where), idx
            continue
        if t not in VTK_TO_CELL:
            dropped.append(t)
            continue
        k = _NODES[t]
        if not np.all(offs[idx + 1] - offs[idx] == k):
            dropped.append(t)
            continue
        c = conn[offs[idx][:, None] + np.arange(k)]
        gname, perm = VTK_TO_CELL[t]
        if perm is not None:
            c = c[:, perm]
        groups.setdefault(gname, []).append((idx, c))
    if dropped and on_unknown_cells == "raise":
        raise ShapeError(f"{where}cells of unsupported VTK cell type id(s) {dropped}; geoop reads VTK types "
                         f"{sorted(VTK_TO_CELL)} (pass on_unknown_cells='drop' to read the file without them)")
    if dropped:
        warnings.warn(f"{where}dropped cells of unsupported VTK types {dropped}", stacklevel=2)
    cells = {k: np.concatenate([c for _, c in v]) for k, v in groups.items()}
    rows = np.concatenate([i for v in groups.values() for i, _ in v] + [poly_rows])

    point_fields, cell_fields, normals = {}, {}, None
    normals_name = getattr(mesh.point_data, "active_normals_name", None) or "Normals"
    for k in ug.point_data.keys():
        arr = np.array(ug.point_data[k])
        if not _array_ok(k, arr, n):
            continue
        if k == normals_name and arr.ndim == 2 and arr.shape[1] == 3 and normals is None:
            normals = arr
            continue
        point_fields[k] = _flat2(arr)
    for k in ug.cell_data.keys():
        arr = np.asarray(ug.cell_data[k])
        if not _array_ok(k, arr, ug.n_cells):
            continue
        cell_fields[k] = _flat2(arr)[rows]
    if set(cells) == {"vertex"} and not cell_fields:
        cells = {}
    if fields is not None:
        fields = list(fields)
        avail = sorted(set(point_fields) | set(cell_fields))
        missing = [f for f in fields if f not in avail]
        if missing:
            raise FieldError(f"{where}no field(s) {missing}; available: {avail}")
        point_fields = {k: v for k, v in point_fields.items() if k in fields}
        cell_fields = {k: v for k, v in cell_fields.items() if k in fields}
    symmetry = None
    if SYMMETRY_FIELD in mesh.field_data.keys():
        symmetry = np.asarray(mesh.field_data[SYMMETRY_FIELD], dtype=np.float64).reshape(-1).tolist()
    return Geometry(pts, cells=cells, normals=normals, fields=point_fields, cell_fields=cell_fields,
                    polyhedra=poly, source=source, name=name, validate=validate, symmetry=symmetry)


def _read_polyhedra(ug, idx: np.ndarray, where: str):
    """The polyhedral cells ``idx`` of a VTK unstructured grid as a :class:`Polyhedra`, from
    VTK's polyhedron layout; every face id and point id is checked before use."""
    from .polyhedra import from_vtk_layout

    arrays = [ug.polyhedron_face_connectivity, ug.polyhedron_face_offsets,
              ug.polyhedron_face_location_connectivity, ug.polyhedron_face_location_offsets]
    if any(a is None for a in arrays):
        raise ShapeError(f"{where}{idx.size} polyhedron cells (VTK type 42) but no polyhedron faces in the file "
                         "(expected 'faces'/'faceoffsets' arrays or a polyhedron face stream)")
    fconn, foffs, lconn, loffs = (np.asarray(a, np.int64) for a in arrays)
    for name, offs, conn, n_max in (("face", foffs, fconn, ug.n_points), ("face location", loffs, lconn, foffs.size - 1)):
        if offs.size == 0 or offs[0] != 0 or offs[-1] != conn.size or (np.diff(offs) < 0).any():
            raise ShapeError(f"{where}polyhedron {name} offsets must start at 0, never decrease and end at "
                             f"{conn.size}; found {offs.size} offsets")
        if conn.size and (conn.min() < 0 or conn.max() >= n_max):
            raise ShapeError(f"{where}polyhedron {name} ids must be in [0, {n_max - 1}], got range "
                             f"[{int(conn.min())}, {int(conn.max())}]")
    if idx.size and idx.max() + 1 >= loffs.size:
        raise ShapeError(f"{where}{ug.n_cells} cells but polyhedron face locations for {loffs.size - 1}")
    return from_vtk_layout(fconn, foffs, lconn, loffs, idx)


def _check_cell_array(ca, n_points: int, where: str) -> None:
    """A vtkCellArray must have offsets starting at 0, never decreasing, ending at the
    connectivity length, and indices in range: VTK's filters read out of bounds (and crash
    the process) on corrupt ones."""
    if ca is None:
        return
    from vtkmodules.util.numpy_support import vtk_to_numpy

    oa, connarr = ca.GetOffsetsArray(), ca.GetConnectivityArray()
    if oa is None or connarr is None:
        return
    offs = vtk_to_numpy(oa)
    conn = vtk_to_numpy(connarr)
    if offs.size == 0:
        return
    if int(offs[0]) != 0 or int(offs[-1]) != conn.size or (np.diff(offs) < 0).any():
        raise ShapeError(f"{where}cell offsets must start at 0, never decrease and end at the connectivity length "
                         f"{conn.size}; found first {int(offs[0])}, last {int(offs[-1])}, "
                         f"{int((np.diff(offs) < 0).sum())} decreasing")
    if conn.size and (int(conn.min()) < 0 or int(conn.max()) >= n_points):
        raise ShapeError(f"{where}cell connectivity must index [0, {n_points - 1}], got range "
                         f"[{int(conn.min())}, {int(conn.max())}]")


def _check_connectivity(ug, where: str) -> None:
    conn = np.asarray(ug.cell_connectivity)
    if conn.size and (int(conn.min()) < 0 or int(conn.max()) >= ug.n_points):
        raise ShapeError(f"{where}cell connectivity must index [0, {ug.n_points - 1}], got range "
                         f"[{int(conn.min())}, {int(conn.max())}]")


# ----------------------------------------------------------------------------- trimesh / open3d
def to_trimesh(geometry: Geometry):
    """A :class:`trimesh.Trimesh` (triangles; quads are split) with vertex normals and the
    point fields as ``vertex_attributes``, or a :class:`trimesh.PointCloud` when the geometry
    has no surface faces. 2-D geometries are padded with z = 0."""
    import trimesh

    pts = _pad3(_np(geometry.points)).astype(np.float64)
    faces = geometry.faces
    if faces is None:
        return trimesh.PointCloud(pts)
    kw = {}
    if geometry.normals is not None:
        kw["vertex_normals"] = _pad3(_np(geometry.normals)).astype(np.float64)
    mesh = trimesh.Trimesh(pts, _np(faces), process=False, **kw)
    for k, v in geometry.fields.items():
        mesh.vertex_attributes[k] = _column(_np(v))
    return mesh


def to_open3d(geometry: Geometry):
    """An ``open3d.geometry.TriangleMesh`` (when the geometry has surface faces) or
    ``open3d.geometry.PointCloud``, with normals when present. Fields are not carried
    (Open3D has no named per-point arrays in its legacy geometry)."""
    o3d = require("open3d", "Open3D conversion")
    pts = _pad3(_np(geometry.points)).astype(np.float64)
    faces = geometry.faces
    if faces is None:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        if geometry.normals is not None:
            pc.normals = o3d.utility.Vector3dVector(_pad3(_np(geometry.normals)).astype(np.float64))
        return pc
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(pts),
                                  o3d.utility.Vector3iVector(_np(faces).astype(np.int32)))
    if geometry.normals is not None:
        m.vertex_normals = o3d.utility.Vector3dVector(_pad3(_np(geometry.normals)).astype(np.float64))
    return m


# ----------------------------------------------------------------------------- torch-geometric
#: Data attributes with a fixed meaning (everything else node-sized becomes a point field)
_PYG_RESERVED = ("pos", "norm", "face", "weight", "edge_index", "edge_attr", "batch", "ptr", "y", "name", "source")


def to_pyg(geometry: Geometry, x: Optional[Iterable[str]] = None):
    """A ``torch_geometric.data.Data`` with PyG's conventions: ``pos`` (N, d) points,
    ``norm`` (N, d) normals (as ``GenerateMeshNormals`` writes them), ``face`` (3, F)
    triangles, other cells as ``<type>_index`` (k, M) (PyG offsets every ``*_index`` by the
    node count when batching, so ``Batch`` keeps them valid), ``weight`` (N,) quadrature
    weights, every point field under its own name (N, C), and ``x`` the fields ``x`` side by
    side (PyG's node features; default: none). Round-trips through :func:`from_pyg`."""
    pyg = require("torch_geometric", "PyG conversion")
    data = pyg.data.Data(pos=geometry.points)
    if geometry.normals is not None:
        data.norm = geometry.normals
    for kind, cells in geometry.cells.items():
        if kind == "triangle":
            data.face = cells.t().contiguous()
        else:
            data[f"{kind}_index"] = cells.t().contiguous()
    if geometry._weights is not None:
        data.weight = geometry._weights
    for name, v in geometry.fields.items():
        if name in _PYG_RESERVED or name == "x" or name.endswith("_index"):
            raise FieldError(f"{geometry._where()}to_pyg: point field {name!r} clashes with a PyG attribute "
                             f"({list(_PYG_RESERVED)}, 'x', '*_index'); rename it")
        data[name] = v
    if x is not None:
        names = list(x)
        missing = [n for n in names if n not in geometry.fields]
        if missing:
            raise FieldError(f"{geometry._where()}to_pyg: x fields {missing} are missing; point fields: {sorted(geometry.fields)}")
        data.x = torch.cat([geometry.fields[n] for n in names], 1) if names else None
    return data


def from_pyg(data, name: Optional[str] = None) -> Geometry:
    """A Geometry from a ``torch_geometric.data.Data``: ``pos`` -> points, ``norm`` ->
    normals, ``face`` (3, F) -> triangles, ``<type>_index`` (k, M) -> cells of a known type
    (``line_index``, ``tetra_index``, ...), ``weight`` -> quadrature weights, and every other
    tensor with one row per node (``x`` included) -> a point field of that name.
    ``edge_index`` (graph edges, not cells) is not carried."""
    if getattr(data, "pos", None) is None:
        raise ShapeError(f"from_pyg: the Data object has no 'pos' (node coordinates); attributes: {sorted(data.keys())}")
    pos = data.pos
    n = pos.shape[0]
    cells, fields = {}, {}
    if getattr(data, "face", None) is not None:
        cells["triangle"] = data.face.t()
    for key in data.keys():
        v = data[key]
        if key in _PYG_RESERVED or not isinstance(v, torch.Tensor):
            continue
        if key.endswith("_index"):
            kind = key[: -len("_index")]
            if kind in CELL_DIM:
                cells[kind] = v.t()
            continue
        if v.dim() >= 1 and v.shape[0] == n:
            fields[key] = v
    return Geometry(pos, cells=cells, normals=getattr(data, "norm", None), weights=getattr(data, "weight", None),
                    fields=fields, name=name)
