"""Reading and writing geometries: ``geoop.read(path)`` and ``geoop.write(geometry, path)``.

One reader per format, the best existing library for it; no hand-written parsers:

=========================  ===================  ==========================================
extension                  reader / writer      what is kept
=========================  ===================  ==========================================
.vtu .vtp .vtk             pyvista (VTK)        all cells (polyhedra too), point/cell data,
                                                "Normals"
.ply                       meshio               faces, every vertex property (fields)
.obj                       meshio               faces, ``vn`` normals
.stl                       trimesh              triangles (duplicate vertices merged)
.off                       trimesh              faces
.msh (gmsh)                meshio               all cells, point/cell data
.xyz .pts                  numpy.loadtxt        points (+ normals in columns 4-6)
.pcd                       open3d               points, normals, colors
.npz                       numpy (no pickle)    everything (points, cells, fields, ...)
folder/, .foam             VTK's OpenFOAM       an OpenFOAM case: internal mesh or patches,
                           reader               one time, cell/point fields
                                                (:mod:`geoop.geometry.openfoam`)
=========================  ===================  ==========================================

A geometry's symmetry plane (``Geometry.symmetry``) is kept by the VTK formats (field-data
array ``geoop_symmetry`` = ``[nx, ny, nz, c]``) and npz (array ``symmetry``).

Polyhedral cells (``VTK_POLYHEDRON``, what snappyHexMesh writes at refinement-level changes)
are kept as :attr:`Geometry.polyhedra` with exact volumes and centroids
(:mod:`geoop.geometry.polyhedra`); a polyhedron whose faces do not close or are oriented
inconsistently is a :class:`GeometryReadError` naming the cell and the edge.

Readers are not trusted with malformed files: the sizes a
header declares are checked against the file size first (:mod:`._validate_files`), every
failure of a reader (``SystemExit`` included) becomes a :class:`GeometryReadError` naming
the file, and what a reader returns is validated (non-empty, finite coordinates, cell
indices in range, field lengths) before it becomes a :class:`Geometry`.

Reading is strict: nothing in a file is silently trimmed, padded, dropped or guessed.
The libraries underneath do all of these on some files (VTK trims a data array longer
than the point count and keeps one of two arrays of one name, returns a partial mesh for
a legacy file cut short with only a warning; trimesh drops STL triangles with NaN
vertices; ``np.load`` keeps the last of two equal keys), so each format is checked
against its own declarations before and after the reader runs. Each of these is a
:class:`GeometryReadError` naming the file, the array and the expected vs found value:

* a point / cell data array whose length disagrees with the point / cell count;
* two arrays of one name (VTK, PLY properties, PCD fields, gmsh data, npz keys);
* cells of a type geoop does not know (``on_unknown_cells="drop"`` drops them with a
  warning instead);
* a file that ends before the data its header declares;
* NaN / Inf in coordinates, normals, weights or field values
  (``on_nonfinite="drop"`` drops the affected points, and every cell using one, with a
  warning instead: e.g. for scans with missing returns).

Cell data are kept as ``cell_fields`` and also averaged onto the points
(:meth:`Geometry.cell_data_to_point_data`), so a CFD export with only cell data still has
point fields (gmsh tags ``gmsh:*`` are kept as cell fields only).

Writing is atomic: a temporary file in the target folder, then :func:`os.replace`; nothing
is left behind on failure. 2-D geometries are padded with z = 0 for 3-D formats.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from .._atomic import atomic_path
from .._optional import require
from ..errors import (
    BackendUnavailableError,
    FieldError,
    GeometryReadError,
    GeometryWriteError,
    GeoopError,
    UnsupportedFormatError,
)
from ._validate_files import Declared, check_header
from .geometry import Geometry

__all__ = ["read", "write", "SUPPORTED_FORMATS", "resolve_format"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: extension -> description (reading and writing support the same set)
SUPPORTED_FORMATS = {
    ".vtu": "VTK XML unstructured grid (pyvista)",
    ".vtp": "VTK XML poly data (pyvista)",
    ".vtk": "legacy VTK (pyvista)",
    ".stl": "STL triangle surface (trimesh)",
    ".obj": "Wavefront OBJ (meshio)",
    ".ply": "PLY mesh or point cloud (meshio)",
    ".off": "OFF mesh (trimesh)",
    ".msh": "gmsh mesh (meshio)",
    ".xyz": "XYZ point cloud, columns x y z [nx ny nz] (numpy)",
    ".pts": "PTS point cloud, optional count line (numpy)",
    ".pcd": "PCL point cloud (open3d)",
    ".npz": "numpy archive of a Geometry (numpy, no pickle)",
}


def resolve_format(path: PathLike) -> str:
    """The lower-case extension of ``path`` if geoop supports it, else
    :class:`UnsupportedFormatError` listing the supported extensions."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in SUPPORTED_FORMATS:
        raise UnsupportedFormatError(
            f"{os.fspath(path)}: unsupported file extension {ext or '(none)'!r}; supported: "
            + ", ".join(sorted(SUPPORTED_FORMATS))
        )
    return ext


# ============================================================================ helpers
@contextlib.contextmanager
def _quiet_vtk():
    """Capture VTK errors (raised as RuntimeError at exit) and silence VTK's own logging."""
    import pyvista as pv
    from pyvista.core.utilities.observers import VtkErrorCatcher

    with pv.vtk_verbosity("off"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with VtkErrorCatcher(raise_errors=False) as catcher:
            yield catcher
    errors = [e for e in catcher.events if e.kind == "ERROR"]
    if errors:
        raise RuntimeError("VTK reported: " + "; ".join(e.alert for e in errors[:3]))


def _group_columns(data: dict) -> dict:
    """Merge scalar arrays ``name_0 .. name_{C-1}`` (how PLY stores vectors) into (N, C)."""
    out, used = {}, set()
    for k in data:
        m = re.fullmatch(r"(.+)_0", k)
        if m:
            base = m.group(1)
            cols = []
            while f"{base}_{len(cols)}" in data and np.ndim(data[f"{base}_{len(cols)}"]) == 1:
                cols.append(f"{base}_{len(cols)}")
            if len(cols) > 1 and base not in data:
                out[base] = np.stack([data[c] for c in cols], axis=1)
                used.update(cols)
    for k, v in data.items():
        if k not in used:
            out[k] = v
    return out


def _numeric(v) -> bool:
    return isinstance(v, np.ndarray) and v.dtype.kind in "biuf" and v.ndim >= 1


def _flat2(v: np.ndarray) -> np.ndarray:
    return v.reshape(v.shape[0], -1) if v.ndim > 2 else v


def _unknown_cells(path: str, types, on_unknown_cells: str) -> None:
    """Raise (default) or warn about cells of types geoop does not represent."""
    if not types:
        return
    if on_unknown_cells == "raise":
        raise GeometryReadError(f"{path}: cells of unsupported type(s) {sorted(map(str, types))}; geoop reads "
                                "vertex, line, triangle, quad, tetra, hexahedron, wedge, pyramid, and "
                                "polyhedra from VTK files (pass "
                                "on_unknown_cells='drop' to read the file without them)")
    warnings.warn(f"{path}: dropped cells of unsupported types {sorted(map(str, types))}", stacklevel=4)


def _from_meshio(mesh, path: str, on_unknown_cells: str = "raise") -> Geometry:
    """Geometry from a meshio Mesh: blocks of one type are grouped (cell data reordered the
    same way); ``Normals``/``normals``/``obj:vn`` or ``nx, ny, nz`` become normals."""
    from .geometry import CELL_DIM

    pts = np.array(mesh.points, dtype=np.float64)
    n = pts.shape[0]
    groups: dict[str, list[int]] = {}
    dropped = set()
    for i, block in enumerate(mesh.cells):
        if block.type in CELL_DIM and block.type != "polygon":
            groups.setdefault(block.type, []).append(i)
        elif len(block.data):
            dropped.add(block.type)
    _unknown_cells(path, dropped, on_unknown_cells)
    cells = {t: np.concatenate([np.array(mesh.cells[i].data, dtype=np.int64) for i in ids]) for t, ids in groups.items()}
    order = [i for ids in groups.values() for i in ids]
    cell_fields = {}
    for k, blocks in mesh.cell_data.items():
        try:
            arr = np.concatenate([np.asarray(blocks[i]) for i in order]) if order else None
        except (IndexError, ValueError):
            raise GeometryReadError(f"{path}: cell data array {k!r} does not match the cell blocks (expected one "
                                    f"block per cell type with one row per cell, found {len(blocks)} blocks)") from None
        if arr is not None and _numeric(arr) and not k.startswith("obj:"):
            cell_fields[k] = arr
    pdata = {k: np.array(v) for k, v in mesh.point_data.items() if _numeric(np.asarray(v))}
    n_cells = sum(len(mesh.cells[i].data) for i in order)
    for kind, arrays, want in (("point", pdata, n), ("cell", cell_fields, n_cells)):
        for k, v in arrays.items():
            if v.shape[0] != want:
                raise GeometryReadError(f"{path}: {kind} data array {k!r}: expected {want} rows (one per {kind}), "
                                        f"found {v.shape[0]}")
    normals = None
    for key in ("Normals", "normals", "obj:vn"):
        if key in pdata and pdata[key].shape == (n, 3):
            normals = pdata.pop(key)
            break
    if normals is None and all(c in pdata for c in ("nx", "ny", "nz")):
        normals = np.stack([pdata.pop("nx"), pdata.pop("ny"), pdata.pop("nz")], axis=1)
    pdata = {k: _flat2(v) for k, v in _group_columns(pdata).items() if not k.startswith("obj:")}
    cell_fields = {k: _flat2(v) for k, v in _group_columns(cell_fields).items()}
    return Geometry(pts, cells=cells, normals=normals, fields=pdata, cell_fields=cell_fields, source=path,
                    validate=False)


# ============================================================================ readers
def _read_pyvista(path: str, declared: Optional[Declared] = None, on_unknown_cells: str = "raise") -> Geometry:
    pv = require("pyvista", "reading VTK files")
    from .convert import from_pyvista

    with _quiet_vtk():
        mesh = pv.read(path)
    if declared is not None and isinstance(mesh, pv.DataSet):
        _check_declared(path, mesh, declared)
    return from_pyvista(mesh, source=path, on_unknown_cells=on_unknown_cells, validate=False)


def _check_declared(path: str, mesh, d: Declared) -> None:
    """What VTK returned must be what the file declares: VTK drops arrays and cells of a
    file cut short with only a warning."""
    if d.n_points is not None and mesh.n_points != d.n_points:
        raise GeometryReadError(f"{path}: the file declares {d.n_points} points, VTK read {mesh.n_points} "
                                "(truncated or corrupt file)")
    if d.n_cells is not None and mesh.n_cells != d.n_cells and d.n_cells > 0:
        raise GeometryReadError(f"{path}: the file declares {d.n_cells} cells, VTK read {mesh.n_cells} "
                                "(truncated or corrupt file)")
    for kind, arrays, data, n in (("point", d.point_arrays, mesh.point_data, mesh.n_points),
                                  ("cell", d.cell_arrays, mesh.cell_data, mesh.n_cells)):
        for name, ncomp in arrays.items():
            if name not in data.keys():
                raise GeometryReadError(f"{path}: {kind} data array {name!r} is declared in the file but VTK "
                                        "did not read it (truncated or corrupt file)")
            a = np.asarray(data[name])
            got = a.size // max(n, 1) if a.shape[0] == n else None
            if a.shape[0] != n or got != ncomp:
                raise GeometryReadError(f"{path}: {kind} data array {name!r}: expected ({n}, {ncomp}), VTK read "
                                        f"{tuple(a.shape)}")


@contextlib.contextmanager
def _captured_output():
    """meshio prints its errors and warnings (and then calls ``sys.exit(1)`` on a
    ``ReadError``); capture that text so it can go into our exception instead."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield buf


def _read_meshio(path: str, file_format: Optional[str] = None, on_unknown_cells: str = "raise") -> Geometry:
    import meshio

    with _captured_output() as buf:
        try:
            mesh = meshio.read(path, file_format=file_format)
        except SystemExit:
            said = " ".join(buf.getvalue().split())
            raise GeometryReadError(f"{path}: meshio could not read it as {file_format}: {said or 'no reason given'}") from None
    said = " ".join(buf.getvalue().split())
    if "not closed" in said:  # meshio read a section cut short and returned the rest
        raise GeometryReadError(f"{path}: truncated {file_format} file (meshio: {said})")
    return _from_meshio(mesh, path, on_unknown_cells)


def _read_trimesh(path: str, file_type: str) -> Geometry:
    import trimesh

    with open(path, "rb") as f:  # process=False: trimesh's processing drops triangles with NaN vertices
        mesh = trimesh.load(f, file_type=file_type, force="mesh", process=False)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise GeometryReadError(f"{path}: the {file_type.upper()} reader found no triangles (empty or broken file)")
    return Geometry(np.array(mesh.vertices), np.array(mesh.faces), source=path, validate=False)


def _first_appearance(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exactly equal rows of ``v`` (N, d) merged in the order of their first appearance:
    ``(keep (U,) the row kept for each merged row, new_id (N,) each row's merged index)``,
    so ``v[keep][new_id] == v``."""
    _, first, inv = np.unique(v, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return first[order], rank[inv.reshape(-1)]


def _merge_vertices(g: Geometry) -> Geometry:
    """Merge exactly equal vertices (STL repeats each vertex per triangle), in the order of
    first appearance: what trimesh's processing does, without its removal of faces."""
    v, f = g.points.numpy(), g.faces.numpy()
    if not np.isfinite(v).all():
        return g  # validation reports it
    keep, new_id = _first_appearance(v)
    return g.replace(points=v[keep], cells={"triangle": new_id[f]})


def _read_xyz(path: str) -> Geometry:
    skip = 0
    with open(path, "rb") as f:
        first = f.readline().split()
    if len(first) == 1 and first[0].isdigit():  # PTS count line
        skip = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "input contained no data": handled below
        data = np.loadtxt(path, ndmin=2, skiprows=skip, comments="#")
    if data.size == 0:
        raise GeometryReadError(f"{path}: point cloud file holds no points")
    c = data.shape[1]
    if c < 2:
        raise GeometryReadError(f"{path}: expected at least 2 columns (x y [z]), got {c}")
    if c == 2:
        return Geometry(data, source=path, validate=False)
    normals = data[:, 3:6] if c >= 6 else None
    rest = data[:, 6:] if c >= 6 else data[:, 3:]
    fields = {"values": rest} if rest.shape[1] else {}
    return Geometry(data[:, :3], normals=normals, fields=fields, source=path, validate=False)


def _read_pcd(path: str) -> Geometry:
    o3d = require("open3d", "reading PCD files")
    pc = o3d.io.read_point_cloud(path, format="pcd", remove_nan_points=False, remove_infinite_points=False)
    pts = np.asarray(pc.points)
    if pts.shape[0] == 0:
        raise GeometryReadError(f"{path}: the PCD reader returned no points (broken file)")
    normals = np.asarray(pc.normals) if pc.has_normals() else None
    fields = {"colors": np.asarray(pc.colors)} if pc.has_colors() else {}
    return Geometry(pts, normals=normals, fields=fields, source=path, validate=False)


def _read_npz(path: str) -> Geometry:
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        seen = set()
        for k in keys:  # a zip may hold one name twice; np.load would return only the last one
            if k in seen:
                raise GeometryReadError(f"{path}: the npz archive holds {keys.count(k)} arrays named {k!r}; "
                                        "expected unique names")
            seen.add(k)
        data = {k: z[k] for k in keys}
    if "points" not in data:
        raise GeometryReadError(f"{path}: npz archive has no 'points' array; keys: {sorted(data)}")
    pts = data.pop("points")
    n = pts.shape[0] if pts.ndim >= 1 else 0
    symmetry = None  # [n_1, ..., n_d, c] of Geometry.symmetry (written by geoop.write)
    if "symmetry" in data and data["symmetry"].shape in ((3,), (4,)) and data["symmetry"].shape[0] != n:
        symmetry = data.pop("symmetry")
    faces = data.pop("faces", None)
    normals = data.pop("normals", None)
    weights = data.pop("weights", None)
    cells, fields, cell_fields = {}, {}, {}
    poly = {k[10:]: data.pop(k) for k in list(data) if k.startswith("polyhedra/")}
    if poly:
        if sorted(poly) != sorted(_POLY_KEYS):
            raise GeometryReadError(f"{path}: npz polyhedra arrays {sorted(poly)}; expected all of "
                                    f"{['polyhedra/' + k for k in _POLY_KEYS]}")
        from .polyhedra import Polyhedra

        try:
            poly = Polyhedra(*(poly[k] for k in _POLY_KEYS))
        except GeoopError as e:
            raise GeometryReadError(f"{path}: {e}") from None
    for k, v in data.items():
        if k.startswith("cells/"):
            cells[k[6:]] = v
        elif k.startswith("cell_fields/"):
            cell_fields[k[12:]] = _flat2(v)
        elif k.startswith("fields/"):
            fields[k[7:]] = _flat2(v)
        elif _numeric(v) and v.shape[0] == n:
            if f"fields/{k}" in data:
                raise GeometryReadError(f"{path}: npz archive holds both {k!r} and 'fields/{k}'; expected one "
                                        "array per field name")
            fields[k] = _flat2(v)
        else:
            raise GeometryReadError(
                f"{path}: npz array {k!r} of shape {tuple(v.shape)} {v.dtype} is neither a cell array "
                f"('cells/TYPE'), nor a field with one row per point (expected ({n}, ...) numeric, as "
                f"'points' has {n} rows)")
    return Geometry(pts, faces, cells=cells, normals=normals, weights=weights, fields=fields,
                    cell_fields=cell_fields, polyhedra=poly or None, source=path, validate=False,
                    symmetry=None if symmetry is None else symmetry.reshape(-1).tolist())


_POLY_KEYS = ("face_points", "face_offsets", "cell_offsets")


#: extension -> reader(path, declared, on_unknown_cells) returning an unvalidated Geometry
_READERS: dict[str, Callable[[str, Optional[Declared], str], Geometry]] = {
    ".vtu": _read_pyvista,
    ".vtp": _read_pyvista,
    ".vtk": _read_pyvista,
    ".ply": lambda p, d, u: _read_meshio(p, "ply", u),
    ".obj": lambda p, d, u: _read_meshio(p, "obj", u),
    ".msh": lambda p, d, u: _read_meshio(p, "gmsh", u),
    ".stl": lambda p, d, u: _read_trimesh(p, "stl"),
    ".off": lambda p, d, u: _read_trimesh(p, "off"),
    ".xyz": lambda p, d, u: _read_xyz(p),
    ".pts": lambda p, d, u: _read_xyz(p),
    ".pcd": lambda p, d, u: _read_pcd(p),
    ".npz": lambda p, d, u: _read_npz(p),
}

_ON_NONFINITE = ("raise", "drop")
_ON_UNKNOWN_CELLS = ("raise", "drop")


def drop_nonfinite(g: Geometry, path: str) -> Geometry:
    """``g`` without the points whose coordinates, normals, weights or point-field values
    are NaN/Inf, without every cell that uses such a point or has a non-finite cell-field
    value; cell indices are renumbered. Warns with the counts when anything is dropped."""
    import torch

    keep = torch.isfinite(g.points).all(1)
    parts = [("normals", g.normals), ("weights", None if g._weights is None else g._weights[:, None])]
    for name, v in parts + [(f"field {k!r}", v) for k, v in g.fields.items()]:
        if v is not None:
            keep &= torch.isfinite(v).all(1)
    new_id = torch.full((g.n_points,), -1, dtype=torch.long)
    new_id[keep] = torch.arange(int(keep.sum()))
    cells, cell_keep, start = {}, [], 0
    for t, c in g.cells.items():
        ok = keep[c].all(1) if c.numel() else torch.ones(c.shape[0], dtype=torch.bool)
        for v in g.cell_fields.values():
            ok &= torch.isfinite(v[start:start + c.shape[0]]).all(1)
        cells[t] = new_id[c[ok]]
        cell_keep.append(ok)
        start += c.shape[0]
    poly = g.polyhedra
    if poly is not None:
        ok = torch.ones(poly.n_cells, dtype=torch.bool)
        ok[poly.point_cell()[~keep[poly.face_points]]] = False
        for v in g.cell_fields.values():
            ok &= torch.isfinite(v[start:start + poly.n_cells]).all(1)
        poly = poly.subset(ok).remap(new_id)
        cell_keep.append(ok)
    ck = torch.cat(cell_keep) if cell_keep else torch.zeros(0, dtype=torch.bool)
    n_drop, c_drop = int((~keep).sum()), int((~ck).sum())
    if n_drop or c_drop:
        warnings.warn(f"{path}: on_nonfinite='drop' dropped {n_drop} of {g.n_points} points and {c_drop} of "
                      f"{ck.numel()} cells with NaN/Inf values", stacklevel=3)
    return Geometry(g.points[keep], cells={t: c for t, c in cells.items() if c.shape[0]}, polyhedra=poly,
                    normals=None if g.normals is None else g.normals[keep],
                    weights=None if g._weights is None else g._weights[keep],
                    fields={k: v[keep] for k, v in g.fields.items()},
                    cell_fields={k: v[ck] for k, v in g.cell_fields.items()},
                    name=g.name, source=g.source, validate=False)


def read(path: PathLike, fields: Optional[Iterable[str]] = None, *, on_nonfinite: str = "raise",
         on_unknown_cells: str = "raise", **case_options) -> Geometry:
    """Read a mesh or point cloud file, or an OpenFOAM case, into a :class:`Geometry`.

    Parameters
    ----------
    path : file with one of the extensions in :data:`SUPPORTED_FORMATS`, or an OpenFOAM
        case: its folder, a ``.foam`` file in it, or either followed by ``::region``
        (``"case::wall*"``, the patches matching ``wall*``)
    fields : names of the point (or cell) fields to keep; ``None`` keeps all. A name that
        is not in the file raises :class:`FieldError` listing the available ones.
    on_nonfinite : ``"raise"`` (default): NaN/Inf in coordinates, normals, weights or any
        field value is a :class:`GeometryReadError`; ``"drop"``: drop those points and the
        cells using them (and cells with non-finite cell-field values), with a warning.
    on_unknown_cells : ``"raise"`` (default): cells of a type geoop does not represent
        (quadratic, polyhedra from meshio readers, polygons from meshio readers, unknown VTK
        ids) are an error;
        ``"drop"``: read the file without them, with a warning.
    region, time, decomposed, data : OpenFOAM cases only (:mod:`geoop.geometry.openfoam`):
        ``region="internalMesh"`` or patch names / glob patterns, ``time="latest"`` or a
        time value, ``decomposed=None`` (auto) / True / False, ``data="cell"`` or
        ``"point"``.

    Returns
    -------
    Geometry with ``source`` set to the path. Point coordinates keep the file's dtype
    converted to ``torch.get_default_dtype()``. Cell fields are also converted to point
    fields (point fields of the same name win).

    Raises
    ------
    GeometryReadError : missing, empty, truncated or corrupt file (never an empty geometry),
        an array whose length disagrees with the point/cell count, two arrays of one name,
        unknown cell types, non-finite values (see the module docstring)
    UnsupportedFormatError : unknown extension
    FieldError : a requested field is missing

    Shapes
    ------
    points : (N, d) ; cells[type] : (M, k) ; fields[name] : (N, C)

    Example
    -------
    >>> import os, tempfile, torch, geoop
    >>> tri = geoop.Geometry(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), faces=torch.tensor([[0, 1, 2]]),
    ...                      fields={"p": torch.tensor([1.0, 2.0, 3.0])})
    >>> path = os.path.join(tempfile.mkdtemp(), "tri.vtp")
    >>> _ = geoop.write(tri, path)
    >>> g = geoop.read(path)
    >>> g.n_points, g.faces.tolist(), g.fields["p"].flatten().tolist()
    (3, [[0, 1, 2]], [1.0, 2.0, 3.0])
    """
    from .openfoam import OPENFOAM_OPTIONS, read_openfoam, split_region

    p = os.fspath(path)
    for opt, val, valid in (("on_nonfinite", on_nonfinite, _ON_NONFINITE),
                            ("on_unknown_cells", on_unknown_cells, _ON_UNKNOWN_CELLS)):
        if val not in valid:
            raise ValueError(f"geoop.read: {opt} must be one of {list(valid)}, got {val!r}")
    bad = sorted(set(case_options) - set(OPENFOAM_OPTIONS))
    if bad:
        raise TypeError(f"geoop.read: unexpected keyword argument(s) {bad}")
    case_path = split_region(p)[0]
    if os.path.isdir(case_path) or case_path.lower().endswith(".foam"):
        fields = None if fields is None else list(fields)
        try:
            g = read_openfoam(p, fields, **case_options)
            if on_nonfinite == "drop":
                g = drop_nonfinite(g, p)
            g = g.replace(source=p, validate=True)
        except GeometryReadError:
            raise
        except GeoopError as e:
            raise GeometryReadError(f"{p}: geometry is invalid: {str(e).replace(f'{p}: ', '')}") from e
        return _finish(g, p, fields)
    if case_options:
        raise GeometryReadError(f"{p}: options {sorted(case_options)} apply to OpenFOAM cases only (a case folder "
                                "or a .foam file)")
    ext = resolve_format(p)
    if not os.path.isfile(p):
        raise GeometryReadError(f"{p}: no such file" if not os.path.exists(p) else f"{p}: not a regular file")
    if os.path.getsize(p) == 0:
        raise GeometryReadError(f"{p}: file is empty (0 bytes)")
    try:
        declared = check_header(p, ext)
        g = _READERS[ext](p, declared, on_unknown_cells)
        if declared is not None and declared.n_points is not None and g.n_points != declared.n_points:
            raise GeometryReadError(f"{p}: the header declares {declared.n_points} points but the reader returned "
                                    f"{g.n_points} (corrupt file)")
        if on_nonfinite == "drop":
            g = drop_nonfinite(g, p)
        if ext == ".stl":
            g = _merge_vertices(g)
        g = g.replace(source=p, validate=True)
    except (GeometryReadError, UnsupportedFormatError, BackendUnavailableError):
        raise
    except (Exception, SystemExit) as e:  # SystemExit: meshio exits on some corrupt files
        what = "geometry is invalid" if isinstance(e, GeoopError) else f"{SUPPORTED_FORMATS[ext]} reader failed"
        msg = str(e).replace(f"{p}: ", "")
        raise GeometryReadError(f"{p}: {what}: {type(e).__name__}: {msg}") from e
    return _finish(g, p, fields)


def _finish(g: Geometry, p: str, fields) -> Geometry:
    """Cell fields averaged onto the points, and the selection of ``fields``."""
    convertible = [k for k in g.cell_fields if not k.startswith("gmsh:")]
    if convertible and (g.cells or g.polyhedra is not None):
        g = g.cell_data_to_point_data(convertible)
    if fields is not None:
        fields = list(fields)
        avail = sorted(set(g.fields))
        missing = [f for f in fields if f not in g.fields]
        if missing:
            raise FieldError(f"{p}: no field(s) {missing} in the file; available: {avail or 'none'}")
        g = g.replace(
            fields={k: g.fields[k] for k in fields},
            cell_fields={k: v for k, v in g.cell_fields.items() if k in fields},
        )
    return g


# ============================================================================ writers
def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy()


def _pad3(a: np.ndarray) -> np.ndarray:
    return a if a.shape[1] == 3 else np.concatenate([a, np.zeros((a.shape[0], 3 - a.shape[1]), a.dtype)], 1)


#: from this many points on, VTK XML files are written without compression
LARGE_VTK_POINTS = 1 << 21


def _write_vtk(g: Geometry, path: str, ext: str) -> None:
    pv = require("pyvista", "writing VTK files")
    from .convert import to_pyvista

    mesh = to_pyvista(g)
    if ext == ".vtu" and isinstance(mesh, pv.PolyData):
        mesh = mesh.cast_to_unstructured_grid()
    if ext == ".vtp" and not isinstance(mesh, pv.PolyData):
        raise GeometryWriteError(f"{path}: VTP holds points, lines and surfaces only; this geometry has volume "
                                 f"cells {sorted(g.cells)}: write .vtu or .vtk instead")
    with _quiet_vtk():
        # zlib (~50 MB/s) would take longer than answering the queries of a streamed
        # prediction: meshes of millions of points are written as plain binary (any VTK
        # reader; about 2x larger files)
        compression = None if mesh.n_points >= LARGE_VTK_POINTS or ext == ".vtk" else "zlib"
        w = type(mesh)._WRITERS[ext](path, mesh)
        w._apply_kwargs_safely(data_format="binary", compression=compression)
        # VTK renders the file in memory and Python writes it: a write error (a full disk)
        # is an OSError here, where VTK's own file output can crash the process
        vw = w.writer
        vw.SetInputData(mesh)
        vw.WriteToOutputStringOn()
        if not vw.Write():
            raise GeometryWriteError(f"{path}: the VTK {ext} writer failed")
        data = vw.GetOutputStdString() if ext == ".vtk" else vw.GetOutputString()
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape"))
        f.flush()
        os.fsync(f.fileno())


def _split_columns(fields: dict, keep_widths: tuple = (1,)) -> dict:
    """(N, C) fields -> numpy arrays; widths not in ``keep_widths`` are split into scalar
    columns ``name_0 .. name_{C-1}`` (read back together by :func:`_group_columns`)."""
    out = {}
    for k, v in fields.items():
        v = _np(v)
        if v.shape[1] in keep_widths:
            out[k] = v[:, 0] if v.shape[1] == 1 else v
        else:
            for j in range(v.shape[1]):
                out[f"{k}_{j}"] = v[:, j]
    return out


def _to_meshio(g: Geometry, vector_point_data: bool, gmsh_tags: bool = False):
    import meshio

    cells = [(k, _np(v).astype(np.int32)) for k, v in g.cells.items()]
    if vector_point_data:  # gmsh: 1, 3 or 9 components per field
        pdata = _split_columns(g.fields, (1, 3, 9))
        if g.normals is not None:
            pdata["Normals"] = _pad3(_np(g.normals))
    else:
        pdata = _split_columns(g.fields)
        if g.normals is not None:
            nrm = _pad3(_np(g.normals))
            pdata.update(nx=nrm[:, 0], ny=nrm[:, 1], nz=nrm[:, 2])
    cdata = {}
    for k, arr in _split_columns(g.cell_fields, (1, 3, 9)).items():
        blocks, start = [], 0
        for _, c in cells:
            blocks.append(arr[start : start + len(c)])
            start += len(c)
        cdata[k] = blocks
    if gmsh_tags:  # gmsh needs physical/geometrical tags; one entity per cell type
        for tag in ("gmsh:physical", "gmsh:geometrical"):
            cdata.setdefault(tag, [np.full(len(c), i + 1, np.int32) for i, (_, c) in enumerate(cells)])
    return meshio.Mesh(_pad3(_np(g.points)), cells, point_data=pdata, cell_data=cdata)


def _write_meshio(g: Geometry, path: str, fmt: str) -> None:
    with _captured_output() as buf:
        _write_meshio_quiet(g, path, fmt)
    if buf.getvalue().strip():
        log.debug("meshio said while writing %s: %s", path, buf.getvalue().strip())


def _write_meshio_quiet(g: Geometry, path: str, fmt: str) -> None:
    import meshio

    if fmt == "obj":
        if g.faces is None:
            raise GeometryWriteError(f"{path}: OBJ needs faces; this geometry has cells {sorted(g.cells) or 'none'}")
        m = meshio.Mesh(_pad3(_np(g.points)), [("triangle", _np(g.faces))],
                        point_data={} if g.normals is None else {"obj:vn": _pad3(_np(g.normals))})
        meshio.write(path, m, file_format="obj")
        return
    if fmt == "ply":
        bad = sorted(set(g.cells) - {"triangle", "quad", "line", "vertex"})
        if bad:
            raise GeometryWriteError(f"{path}: PLY holds surfaces and point clouds; cannot write cells {bad}")
        m = _to_meshio(g.replace(cells={k: v for k, v in g.cells.items() if k != "vertex"},
                                 cell_fields={}), vector_point_data=False)
        meshio.write(path, m, file_format="ply", binary=True)
        return
    m = _to_meshio(g, vector_point_data=True, gmsh_tags=True)
    meshio.write(path, m, file_format="gmsh22", binary=True)  # ascii data is garbled by meshio 5.3 + numpy 2


def _write_trimesh(g: Geometry, path: str, fmt: str) -> None:
    from .convert import to_trimesh

    if g.faces is None:
        raise GeometryWriteError(f"{path}: {fmt.upper()} needs triangle/quad faces; this geometry has cells "
                                 f"{sorted(g.cells) or 'none'}")
    mesh = to_trimesh(g.replace(fields={}))
    mesh.export(path, file_type=fmt)


def _write_xyz(g: Geometry, path: str, ext: str) -> None:
    cols = [_np(g.points)]
    if g.normals is not None:
        cols.append(_np(g.normals))
    data = np.concatenate(cols, axis=1)
    header = str(len(data)) if ext == ".pts" else ""
    np.savetxt(path, data, fmt="%.9g", header=header, comments="")


def _write_pcd(g: Geometry, path: str) -> None:
    o3d = require("open3d", "writing PCD files")
    from .convert import to_open3d

    pc = to_open3d(g.replace(cells={}))
    col = g.fields.get("colors")
    if col is not None and col.shape[1] == 3:
        pc.colors = o3d.utility.Vector3dVector(_np(col).astype(np.float64))
    if not o3d.io.write_point_cloud(path, pc, write_ascii=False):
        raise GeometryWriteError(f"{path}: open3d failed to write the point cloud")


def _write_npz(g: Geometry, path: str) -> None:
    data = {"points": _np(g.points)}
    for k, v in g.cells.items():
        data[f"cells/{k}"] = _np(v)
    if g.polyhedra is not None:
        for k in _POLY_KEYS:
            data[f"polyhedra/{k}"] = _np(getattr(g.polyhedra, k))
    if g.normals is not None:
        data["normals"] = _np(g.normals)
    if g._weights is not None:
        data["weights"] = _np(g._weights)
    if g.symmetry is not None:
        data["symmetry"] = np.asarray(g.symmetry.to_list(), dtype=np.float64)
    for k, v in g.fields.items():
        data[f"fields/{k}"] = _np(v)
    for k, v in g.cell_fields.items():
        data[f"cell_fields/{k}"] = _np(v)
    with open(path, "wb") as f:
        np.savez_compressed(f, **data)


#: formats that keep polyhedra (point-cloud formats keep no cells at all)
_POLYHEDRA_FORMATS = {".vtu", ".vtk", ".npz", ".xyz", ".pts", ".pcd"}

_WRITERS: dict[str, Callable[[Geometry, str], None]] = {
    ".vtu": lambda g, p: _write_vtk(g, p, ".vtu"),
    ".vtp": lambda g, p: _write_vtk(g, p, ".vtp"),
    ".vtk": lambda g, p: _write_vtk(g, p, ".vtk"),
    ".ply": lambda g, p: _write_meshio(g, p, "ply"),
    ".obj": lambda g, p: _write_meshio(g, p, "obj"),
    ".msh": lambda g, p: _write_meshio(g, p, "gmsh"),
    ".stl": lambda g, p: _write_trimesh(g, p, "stl"),
    ".off": lambda g, p: _write_trimesh(g, p, "off"),
    ".xyz": lambda g, p: _write_xyz(g, p, ".xyz"),
    ".pts": lambda g, p: _write_xyz(g, p, ".pts"),
    ".pcd": _write_pcd,
    ".npz": _write_npz,
}


def write(geometry: Geometry, path: PathLike) -> Path:
    """Write ``geometry`` to ``path``; the format follows the extension.

    What each format keeps is listed in the module docstring (e.g. STL keeps only
    triangles, XYZ only points and normals). Writing is atomic: the data go to a temporary
    file in the same folder, renamed over ``path`` only when complete.

    Raises
    ------
    UnsupportedFormatError : unknown extension
    GeometryWriteError : the format cannot hold this geometry, or the write failed

    Returns the path written.
    """
    p = os.fspath(path)
    ext = resolve_format(p)
    if not isinstance(geometry, Geometry):
        raise GeometryWriteError(f"{p}: expected a geoop.Geometry, got {type(geometry).__name__}")
    if geometry.polyhedra is not None and ext not in _POLYHEDRA_FORMATS:
        raise GeometryWriteError(f"{p}: {ext} cannot hold the {geometry.polyhedra.n_cells} polyhedral cells of this "
                                 f"geometry; write one of {sorted(_POLYHEDRA_FORMATS)}")
    folder = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(folder):
        raise GeometryWriteError(f"{p}: folder {folder} does not exist")
    try:
        with atomic_path(p, suffix=ext) as tmp:
            _WRITERS[ext](geometry, tmp)
            if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
                raise GeometryWriteError(f"{p}: the {ext} writer produced no data")
    except (GeometryWriteError, BackendUnavailableError):
        raise
    except (Exception, SystemExit) as e:
        raise GeometryWriteError(f"{p}: writing {SUPPORTED_FORMATS[ext]} failed: {type(e).__name__}: {e}") from e
    return Path(p)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
