"""Reading OpenFOAM cases as they are: ``geoop.read("case/")`` or ``geoop.read("case/case.foam")``.

The case is read by VTK's OpenFOAM reader (``vtkOpenFOAMReader``; ``vtkPOpenFOAMReader``
for decomposed ``processor*`` cases) with its polyhedron decomposition off (recent VTK has
none), so polyhedral cells arrive as ``VTK_POLYHEDRON`` and become :attr:`Geometry.polyhedra`
with exact volumes (:mod:`geoop.geometry.polyhedra`), never as made-up tetrahedra.

What is read (keyword arguments of :func:`read_openfoam` and :func:`geoop.read`):

* ``region="internalMesh"``: the volume mesh; or a patch name, a glob pattern over patch
  names (``"wall*"``) or a list of them: the boundary faces of those patches as one surface
  (points shared by two patches merged exactly). A name that matches no patch is an error
  listing the available ones.
* ``time="latest"``: the latest time folder (``0`` included), or a time value (a float, as
  written in the folder name), or ``"first"``.
* ``decomposed=None``: the reconstructed case when ``constant/polyMesh`` exists, else the
  decomposed one; ``True`` / ``False`` choose. A decomposed case is read processor after
  processor and the points that processors share are merged exactly (the same coordinates
  bit for bit, as ``decomposePar`` writes them): points and cells come in processor order,
  not in the reconstructed order.
* ``data="cell"``: the fields as OpenFOAM stores them, cell values (``cell_fields``;
  :func:`geoop.read` averages them onto the points as for any file); ``"point"`` also keeps
  VTK's point interpolation (boundary points take the patch values; reconstructed cases and
  single patches only, as processor or patch seams would get two different values).

A surface read from patches of a half-domain case gets its symmetry plane: when the case has
symmetry patches (type ``symmetryPlane``/``symmetry`` in ``constant/polyMesh/boundary``, else by
name, :func:`geoop.geometry.symmetry.is_symmetry_patch`) and the surface's open boundary lies on
their plane (:func:`~geoop.geometry.symmetry.check_touches`), ``Geometry.symmetry`` is that plane
(:func:`~geoop.geometry.symmetry.symmetry_from_patches`), so the SDF and the forces treat the
surface as the half of the full body. A surface off the plane keeps no symmetry.

Strict as the file readers: a case without ``constant/polyMesh`` (or ``processor*``), a
decomposed case with a missing ``processorN`` (a gap in the numbers, fewer than
``numberOfSubdomains`` of ``system/decomposeParDict``, or one without the chosen time), a
case with no time folder when fields are asked for, a time that is not there, or a patch
that is not there: each is a :class:`GeometryReadError` naming the case and what is missing.

VTK's reader returns float32 coordinates: points are exact to about 1e-7 relative.
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from .._optional import require
from ..errors import GeometryReadError, ShapeError
from .geometry import Geometry

__all__ = ["read_openfoam", "is_openfoam_case", "split_region", "case_files", "OPENFOAM_OPTIONS"]

#: keyword arguments of :func:`read_openfoam` that :func:`geoop.read` passes on
OPENFOAM_OPTIONS = ("region", "time", "decomposed", "data")
_PROC = re.compile(r"processor(\d+)$")
REGION_SEP = "::"


def _proc_dirs(case: Path) -> dict[int, Path]:
    out = {}
    if case.is_dir():
        for p in case.iterdir():
            m = _PROC.match(p.name)
            if m and p.is_dir():
                out[int(m.group(1))] = p
    return out


def is_openfoam_case(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is an OpenFOAM case folder (``constant/polyMesh`` or
    ``processor0/constant/polyMesh``) or a ``.foam`` file in one."""
    p = Path(split_region(path)[0])
    if p.suffix.lower() == ".foam":
        return True
    return p.is_dir() and ((p / "constant" / "polyMesh").is_dir() or (p / "processor0" / "constant" / "polyMesh").is_dir())


def split_region(path: Union[str, os.PathLike]) -> tuple[str, Optional[str]]:
    """``"case::wall*"`` -> ``("case", "wall*")``; a path without ``::`` (or one that exists
    as it is) -> ``(path, None)``. The suffix names the region (see the module docstring),
    so a file pattern of :class:`~geoop.data.MeshFolderDataset` can pick a patch."""
    s = os.fspath(path)
    if REGION_SEP in s and not os.path.exists(s):
        head, _, region = s.rpartition(REGION_SEP)
        return head, region or None
    return s, None


def case_files(path: Union[str, os.PathLike]) -> list[Path]:
    """The files the reader reads for the latest time (sorted): the mesh of the case and of
    its processors, and the latest time folder of each (for cache keys)."""
    case = Path(split_region(path)[0])
    if case.suffix.lower() == ".foam":
        case = case.parent
    out = []
    for root in [case, *(_proc_dirs(case).values())]:
        mesh = root / "constant" / "polyMesh"
        times = _time_dirs(root)
        for d in [mesh] + ([root / times[-1][1]] if times else []):
            if d.is_dir():
                out += [f for f in d.iterdir() if f.is_file()]
    return sorted(out)


def _time_dirs(case: Path) -> list[tuple[float, str]]:
    out = []
    if case.is_dir():
        for p in case.iterdir():
            if p.is_dir():
                try:
                    out.append((float(p.name), p.name))
                except ValueError:
                    continue
    return sorted(out)


def _subdomains(case: Path) -> Optional[int]:
    d = case / "system" / "decomposeParDict"
    if not d.is_file():
        return None
    m = re.search(r"^\s*numberOfSubdomains\s+(\d+)\s*;", d.read_text(errors="replace"), re.M)
    return int(m.group(1)) if m else None


def _check_processors(case: Path, where: str) -> list[Path]:
    procs = _proc_dirs(case)
    if not procs:
        raise GeometryReadError(f"{where}decomposed case requested but there is no processor* folder")
    n = max(procs) + 1
    want = _subdomains(case)
    if want is not None and want > n:
        n = want
    missing = [f"processor{i}" for i in range(n) if i not in procs]
    if missing:
        raise GeometryReadError(
            f"{where}decomposed case: missing {', '.join(missing)} (found {len(procs)} processor folders"
            + (f", system/decomposeParDict declares numberOfSubdomains {want}" if want is not None else "") + ")")
    if want is not None and want < len(procs):
        raise GeometryReadError(f"{where}decomposed case: {len(procs)} processor folders but system/decomposeParDict "
                                f"declares numberOfSubdomains {want}")
    for i, p in sorted(procs.items()):
        if not (p / "constant" / "polyMesh").is_dir():
            raise GeometryReadError(f"{where}decomposed case: processor{i} has no constant/polyMesh")
    return [procs[i] for i in sorted(procs)]


def _pick_time(times: Sequence[tuple[float, str]], time, where: str, fields_wanted: bool) -> Optional[tuple[float, str]]:
    if not times:
        if fields_wanted:
            raise GeometryReadError(f"{where}no time folder (e.g. 0/ or 100/) with fields; the case has only a mesh. "
                                    "Pass fields=[] to read the mesh alone")
        return None
    if time in (None, "latest"):
        return times[-1]
    if time == "first":
        return times[0]
    try:
        t = float(time)
    except (TypeError, ValueError):
        raise GeometryReadError(f"{where}time must be 'latest', 'first' or a number, got {time!r}") from None
    for v, name in times:
        if abs(v - t) <= 1e-9 * max(abs(t), 1.0):
            return v, name
    raise GeometryReadError(f"{where}no time folder {time!r}; available: {[n for _, n in times]}")


def _select_patches(names: list[str], region: Union[str, Sequence[str]], where: str) -> list[str]:
    patterns = [region] if isinstance(region, str) else list(region)
    patches = [n[len("patch/"):] for n in names if n.startswith("patch/")]
    out = []
    for pat in patterns:
        hit = [p for p in patches if fnmatch.fnmatchcase(p, pat)]
        if not hit:
            raise GeometryReadError(f"{where}no patch matches {pat!r}; available patches: {patches}")
        out += [p for p in hit if p not in out]
    return out


def _reader(case: Path, foam: Optional[Path], decomposed: bool):
    import vtk

    r = vtk.vtkPOpenFOAMReader() if decomposed else vtk.vtkOpenFOAMReader()
    if decomposed:
        r.SetCaseType(r.DECOMPOSED_CASE)
    # the reader takes the case folder from the file name; the file need not exist
    r.SetFileName(str(foam if foam is not None else case / f"{case.name or 'case'}.foam"))
    r.SkipZeroTimeOff()
    r.ReadZonesOff()
    if hasattr(r, "SetDecomposePolyhedra"):  # older VTK splits polyhedra into tets/pyramids by default
        r.SetDecomposePolyhedra(0)
    return r


def _exact_merge_points(g: Geometry, check_fields: bool, where: str, what: str) -> Geometry:
    """``g`` with exactly coinciding points merged (kept in order of first appearance),
    cells and polyhedra renumbered. With ``check_fields`` the point fields must agree at
    merged points."""
    from .io import _first_appearance

    keep, new_id = _first_appearance(g.points.cpu().numpy())
    if keep.size == g.n_points:
        return g
    keep, new_id = torch.as_tensor(keep), torch.as_tensor(new_id)
    fields = {}
    for k, v in g.fields.items():
        if check_fields and not torch.equal(v, v[keep][new_id]):
            raise GeometryReadError(f"{where}point field {k!r} has different values at the points {what} share; "
                                    "read with data='cell' (cell values, averaged onto the merged points)")
        fields[k] = v[keep]
    return g.replace(points=g.points[keep], cells={t: new_id[c] for t, c in g.cells.items()},
                     polyhedra=None if g.polyhedra is None else g.polyhedra.remap(new_id),
                     normals=None if g.normals is None else g.normals[keep],
                     weights=None, fields=fields)


def read_openfoam(path: Union[str, os.PathLike], fields: Optional[Iterable[str]] = None, *,
                  region: Union[str, Sequence[str], None] = None, time: Union[str, float, None] = "latest",
                  decomposed: Optional[bool] = None, data: str = "cell") -> Geometry:
    """Read an OpenFOAM case (folder or ``.foam`` file) into an unvalidated :class:`Geometry`
    (:func:`geoop.read` validates it and averages cell fields onto the points; use that).

    Parameters: see the module docstring. ``fields``: the fields to read (``None``: all;
    ``[]``: the mesh alone, a case without time folders included).

    Shapes
    ------
    internal mesh: points (N, 3), cells / polyhedra of the fluid cells, cell_fields (M, C)
    patches: points (N, 3), triangles / quads (polygons triangulated), cell_fields (F, C)
    """
    require("pyvista", "reading OpenFOAM cases")
    import pyvista as pv

    from .convert import from_pyvista
    from .io import _quiet_vtk

    p, suffix_region = split_region(path)
    if region is None:
        region = suffix_region or "internalMesh"
    foam = Path(p) if p.lower().endswith(".foam") else None
    case = foam.parent if foam is not None else Path(p)
    where = f"{p}: "
    if foam is not None and not case.is_dir():
        raise GeometryReadError(f"{where}the folder of the .foam file does not exist")
    if not case.is_dir():
        raise GeometryReadError(f"{where}no such OpenFOAM case folder")
    if data not in ("cell", "point"):
        raise ValueError(f"read_openfoam: data must be 'cell' or 'point', got {data!r}")
    recon = (case / "constant" / "polyMesh").is_dir()
    if decomposed is None:
        decomposed = not recon and bool(_proc_dirs(case))
    if not decomposed and not recon:
        raise GeometryReadError(f"{where}not an OpenFOAM case: no constant/polyMesh"
                                + (" (it has processor* folders: pass decomposed=True)" if _proc_dirs(case) else ""))
    procs = _check_processors(case, where) if decomposed else []
    fields = None if fields is None else list(fields)
    times = _time_dirs(procs[0] if decomposed else case)
    chosen = _pick_time(times, time, where, bool(fields))
    if decomposed and chosen is not None:
        for i, pd in enumerate(procs):
            if not (pd / chosen[1]).is_dir():
                raise GeometryReadError(f"{where}decomposed case: processor{i} has no time folder {chosen[1]!r}")
    volume = isinstance(region, str) and region == "internalMesh"
    if decomposed and data == "point" and volume:
        raise GeometryReadError(f"{where}data='point' needs a reconstructed case (processors interpolate onto their "
                                "shared points separately); use data='cell' or reconstructPar")

    r = _reader(case, foam, decomposed)
    try:
        with _quiet_vtk():
            r.UpdateInformation()
    except RuntimeError as e:
        raise GeometryReadError(f"{where}VTK's OpenFOAM reader failed: {e}") from None
    tv = r.GetTimeValues()
    vtk_times = [tv.GetValue(i) for i in range(tv.GetNumberOfTuples())] if tv is not None else []
    if chosen is not None and not any(abs(t - chosen[0]) <= 1e-9 * max(abs(t), 1.0) for t in vtk_times):
        # VTK would silently read the nearest time it knows instead
        raise GeometryReadError(f"{where}VTK's OpenFOAM reader does not list time {chosen[1]!r} (it lists "
                                f"{vtk_times}); is the folder empty?")
    names = [r.GetPatchArrayName(i) for i in range(r.GetNumberOfPatchArrays())]
    r.DisableAllPatchArrays()
    if volume:
        r.SetPatchArrayStatus("internalMesh", 1)
        patches = []
    else:
        if isinstance(region, str) and region.startswith("patch/"):
            region = region[len("patch/"):]
        patches = _select_patches(names, region, where)
        for pt in patches:
            r.SetPatchArrayStatus(f"patch/{pt}", 1)
    avail = sorted({r.GetCellArrayName(i) for i in range(r.GetNumberOfCellArrays())}
                   | {r.GetPointArrayName(i) for i in range(r.GetNumberOfPointArrays())})
    if fields is not None:
        missing = [f for f in fields if f not in avail]
        if missing:
            raise GeometryReadError(f"{where}no field(s) {missing} at time {chosen[1] if chosen else '(none)'}; "
                                    f"available: {avail or 'none'}")
        r.DisableAllCellArrays()
        r.DisableAllPointArrays()
        for f in fields:
            r.SetCellArrayStatus(f, 1)
            r.SetPointArrayStatus(f, 1)
    r.SetCreateCellToPoint(1 if data == "point" else 0)
    try:
        with _quiet_vtk():
            if chosen is not None:
                r.UpdateTimeStep(chosen[0])
            else:
                r.Update()
    except RuntimeError as e:
        raise GeometryReadError(f"{where}VTK's OpenFOAM reader failed: {e}") from None
    out = pv.wrap(r.GetOutput())
    blocks = _leaves(out)
    if volume:
        grids = [b for name, b in blocks if name.endswith("internalMesh") or isinstance(b, pv.UnstructuredGrid)]
        if not grids or sum(g.n_cells for g in grids) == 0:
            raise GeometryReadError(f"{where}the internal mesh has no cells")
        mesh = grids[0] if len(grids) == 1 else pv.MultiBlock(grids).combine(merge_points=False)
    else:
        mesh = [b for _, b in blocks if isinstance(b, pv.PolyData) and b.n_cells]
        if not mesh:
            raise GeometryReadError(f"{where}patches {patches} have no faces")
    try:
        if volume:
            g = from_pyvista(mesh, source=p, on_unknown_cells="raise", validate=False)
        else:  # each patch triangulated on its own, then side by side
            g = _concatenate([from_pyvista(b, source=p, on_unknown_cells="raise", validate=False) for b in mesh])
    except ShapeError as e:
        raise GeometryReadError(str(e)) from None
    if decomposed or len(patches) > 1:
        what = "processors" if decomposed else f"patches {patches}"
        g = _exact_merge_points(g, check_fields=True, where=where, what=what)
    if fields is not None:
        g = g.replace(fields={k: v for k, v in g.fields.items() if k in fields},
                      cell_fields={k: v for k, v in g.cell_fields.items() if k in fields})
    if not volume:
        g = _half_body_symmetry(g, case, foam, decomposed, names, patches, chosen, p)
    return g.replace(source=p)


def _patch_types(case: Path) -> dict:
    """Patch name -> type from ``constant/polyMesh/boundary`` (processor0's of a decomposed
    case); {} when there is no readable (uncompressed) boundary file."""
    for base in (case, case / "processor0"):
        f = base / "constant" / "polyMesh" / "boundary"
        if f.is_file():
            return dict(re.findall(r"([A-Za-z_][\w.:-]*)\s*\{[^{}]*?\btype\s+(\w+)\s*;", f.read_text(errors="replace")))
    return {}


def _half_body_symmetry(g: Geometry, case: Path, foam, decomposed: bool, names: list, patches: list, chosen,
                        where: str) -> Geometry:
    """``g`` with the plane of the case's symmetry patches when its open boundary lies on it
    (see the module docstring); ``g`` unchanged otherwise."""
    import pyvista as pv

    from ..errors import SymmetryError
    from .io import _quiet_vtk
    from .symmetry import check_touches, is_symmetry_patch, symmetry_from_patches

    types = _patch_types(case)
    sym = [n[len("patch/"):] for n in names if n.startswith("patch/") and n[len("patch/"):] not in patches
           and is_symmetry_patch(n[len("patch/"):], types.get(n[len("patch/"):]))]
    if not sym:
        return g
    r = _reader(case, foam, decomposed)
    with _quiet_vtk():
        r.UpdateInformation()
        r.DisableAllPatchArrays()
        for n in sym:
            r.SetPatchArrayStatus(f"patch/{n}", 1)
        r.DisableAllCellArrays()
        r.DisableAllPointArrays()
        r.UpdateTimeStep(chosen[0]) if chosen is not None else r.Update()
    pts = {name.rsplit("/", 1)[-1]: np.asarray(b.points, dtype=np.float64) for name, b in _leaves(pv.wrap(r.GetOutput()))}
    plane = symmetry_from_patches(pts, {n: types.get(n, "symmetryPlane") for n in pts}, where=where)
    if plane is None:
        return g
    try:
        check_touches(g, plane.with_dim(g.dim))
    except SymmetryError:
        return g  # the surface is not a half body on the plane (e.g. an inlet patch)
    return g.replace(symmetry=plane)


def _concatenate(parts: list) -> Geometry:
    """Geometries side by side (points stacked, cells grouped by type, cell-field rows
    following their cells); fields present in every part are kept."""
    if len(parts) == 1:
        return parts[0]
    offs = np.cumsum([0] + [g.n_points for g in parts])
    types = list(dict.fromkeys(t for g in parts for t in g.cells))
    cells, rows, starts = {}, [], []
    for g in parts:
        starts.append(dict(zip(g.cells, np.cumsum([0] + [c.shape[0] for c in g.cells.values()]))))
    for t in types:
        cells[t] = torch.cat([g.cells[t] + int(o) for g, o in zip(parts, offs) if t in g.cells])
        rows += [(j, starts[j][t], g.cells[t].shape[0]) for j, g in enumerate(parts) if t in g.cells]
    common = set.intersection(*(set(g.fields) for g in parts))
    ccommon = set.intersection(*(set(g.cell_fields) for g in parts))
    return Geometry(torch.cat([g.points for g in parts]), cells=cells,
                    fields={k: torch.cat([g.fields[k] for g in parts]) for k in parts[0].fields if k in common},
                    cell_fields={k: torch.cat([parts[j].cell_fields[k][s:s + n] for j, s, n in rows])
                                 for k in parts[0].cell_fields if k in ccommon},
                    source=parts[0].source, validate=False)


def _leaves(mb, prefix: str = "") -> list:
    """(name, dataset) of every non-empty leaf of a (nested) MultiBlock."""
    import pyvista as pv

    out = []
    for i in range(mb.n_blocks):
        b = mb[i]
        name = f"{prefix}/{mb.get_block_name(i)}"
        if isinstance(b, pv.MultiBlock):
            out += _leaves(b, name)
        elif b is not None and b.n_points:
            out.append((name, b))
    return out
