"""Writing generated CFD-like cases: geometry files and ``manifest.json`` (atomic writes).

Used by the physics generators (:mod:`geoop.data.airfoil`, :mod:`geoop.data.body3d`).
Geometries go through :func:`geoop.write` when the I/O module is present; otherwise they
are written with pyvista (``.vtp``/``.vtu``), always to a temporary file in the target
folder first and then moved into place with :func:`os.replace`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile

import numpy as np

from ..errors import GeometryWriteError

__all__ = ["write_geometry", "write_manifest"]


def _has_geoop_io() -> bool:
    return importlib.util.find_spec("geoop.geometry.io") is not None


def _to_pyvista(geometry, ext: str):
    import pyvista as pv

    pts = geometry.points.detach().cpu().numpy().astype(np.float64)
    if pts.shape[1] == 2:
        pts = np.concatenate([pts, np.zeros((pts.shape[0], 1))], axis=1)
    cells = {k: v.cpu().numpy() for k, v in geometry.cells.items()}
    if ext == ".vtp":
        mesh = pv.PolyData(pts)
        if "line" in cells:
            c = cells["line"]
            mesh.lines = np.concatenate([np.full((c.shape[0], 1), 2), c], axis=1).ravel()
        if "triangle" in cells:
            c = cells["triangle"]
            mesh.faces = np.concatenate([np.full((c.shape[0], 1), 3), c], axis=1).ravel()
        if "vertex" in cells:
            c = cells["vertex"]
            mesh.verts = np.concatenate([np.full((c.shape[0], 1), 1), c], axis=1).ravel()
    else:
        vtk_type = {"vertex": 1, "line": 3, "triangle": 5, "tetra": 10}
        parts, types = [], []
        for k, c in cells.items():
            parts.append(np.concatenate([np.full((c.shape[0], 1), c.shape[1]), c], axis=1).ravel())
            types.append(np.full(c.shape[0], vtk_type[k], dtype=np.uint8))
        mesh = pv.UnstructuredGrid(np.concatenate(parts), np.concatenate(types), pts)
    for k, v in geometry.fields.items():
        a = v.detach().cpu().numpy()
        mesh.point_data[k] = a[:, 0] if a.shape[1] == 1 else a
    for k, v in geometry.cell_fields.items():
        a = v.detach().cpu().numpy()
        mesh.cell_data[k] = a[:, 0] if a.shape[1] == 1 else a
    if geometry.normals is not None:
        nrm = geometry.normals.detach().cpu().numpy()
        if nrm.shape[1] == 2:
            nrm = np.concatenate([nrm, np.zeros((nrm.shape[0], 1))], axis=1)
        mesh.point_data["Normals"] = nrm
    return mesh


def write_geometry(geometry, path: str) -> None:
    """Write ``geometry`` to ``path`` (``.vtp`` or ``.vtu``), atomically."""
    if _has_geoop_io():
        from ..geometry.io import write

        write(geometry, path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=ext, dir=folder)
    os.close(fd)
    try:
        _to_pyvista(geometry, ext.lower()).save(tmp, binary=True)
        os.replace(tmp, path)
    except Exception as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise GeometryWriteError(f"{path}: could not write geometry ({type(exc).__name__}: {exc})") from exc


def write_manifest(out_dir: str, manifest: dict) -> str:
    """Write ``manifest`` as ``out_dir/manifest.json`` atomically; returns the path."""
    path = os.path.join(out_dir, "manifest.json")
    fd, tmp = tempfile.mkstemp(prefix=".tmp_manifest_", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=False)
        os.replace(tmp, path)
    except Exception as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise GeometryWriteError(f"{path}: could not write manifest ({type(exc).__name__}: {exc})") from exc
    return path
