"""Cell measures, vertex quadrature weights, vertex normals and cell-to-point averaging.

All functions are pure torch and work in 2-D and 3-D (2-D points are padded with z = 0).

Shapes
------
points : (N, d) float
cells  : dict type -> (M_k, k) long
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

__all__ = ["cell_measures", "cell_centroids", "vertex_weights", "vertex_normals", "cell_to_point", "TET_SPLITS"]

# Decomposition of volume cells (VTK / meshio node order) into tetrahedra.
TET_SPLITS = {
    "tetra": [[0, 1, 2, 3]],
    "pyramid": [[0, 1, 2, 4], [0, 2, 3, 4]],
    "wedge": [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]],
    "hexahedron": [[0, 1, 3, 4], [1, 2, 3, 6], [1, 4, 5, 6], [3, 4, 6, 7], [1, 3, 4, 6]],
}


def _pad3(points: Tensor) -> Tensor:
    if points.shape[1] == 3:
        return points
    return torch.cat([points, points.new_zeros(points.shape[0], 3 - points.shape[1])], dim=1)


def _tri_area(p: Tensor, tri: Tensor) -> Tensor:
    a, b, c = p[tri[:, 0]], p[tri[:, 1]], p[tri[:, 2]]
    return 0.5 * torch.linalg.cross(b - a, c - a).norm(dim=1)


def cell_measures(points: Tensor, cells: Mapping[str, Tensor], polyhedra=None) -> dict[str, Tensor]:
    """Length (lines), area (triangles, quads) or volume (3-D cells) per cell.

    Returns dict type -> (M_k,), with the volumes of ``polyhedra`` (a
    :class:`~geoop.geometry.polyhedra.Polyhedra`) under ``"polyhedron"``. Vertex cells have
    measure 0. Quads are split along the 0-2 diagonal (exact for planar quads).
    Hexahedra, wedges and pyramids are measured by the divergence theorem over their faces,
    each face triangulated about its vertex mean (exact for planar faces, and consistent with
    polyhedra sharing a warped face: see :mod:`geoop.geometry.polyhedra`).
    """
    from .polyhedra import fixed_volumes_centroids

    p = _pad3(points)
    out: dict[str, Tensor] = {}
    for ctype, c in cells.items():
        if ctype == "vertex" or c.shape[0] == 0:
            out[ctype] = p.new_zeros(c.shape[0])
        elif ctype == "line":
            out[ctype] = (p[c[:, 1]] - p[c[:, 0]]).norm(dim=1)
        elif ctype == "triangle":
            out[ctype] = _tri_area(p, c)
        elif ctype == "quad":
            out[ctype] = _tri_area(p, c[:, [0, 1, 2]]) + _tri_area(p, c[:, [0, 2, 3]])
        elif ctype == "tetra":
            a, b, cc, d = (p[c[:, i]] for i in range(4))
            out[ctype] = torch.einsum("ij,ij->i", torch.linalg.cross(b - a, cc - a), d - a).abs() / 6
        elif ctype in TET_SPLITS:
            out[ctype] = fixed_volumes_centroids(p, ctype, c)[0]
        else:  # polygon or unknown: no measure
            out[ctype] = p.new_zeros(c.shape[0])
    if polyhedra is not None:
        out["polyhedron"] = polyhedra.volumes_centroids(p)[0]
    return out


def cell_centroids(points: Tensor, cells: Mapping[str, Tensor], polyhedra=None) -> dict[str, Tensor]:
    """Centroid of each cell: dict type -> (M_k, d), polyhedra under ``"polyhedron"``.
    3-D cells by the divergence theorem over their faces (:mod:`geoop.geometry.polyhedra`),
    other cells the mean of their vertices (the centroid for vertices, segments, triangles
    and parallelograms)."""
    from .polyhedra import fixed_volumes_centroids

    d = points.shape[1]
    p = _pad3(points)
    out: dict[str, Tensor] = {}
    for ctype, c in cells.items():
        if ctype in TET_SPLITS and c.shape[0]:
            out[ctype] = fixed_volumes_centroids(p, ctype, c)[1][:, :d]
        else:
            out[ctype] = points[c].mean(1) if c.shape[0] else points.new_zeros(0, d)
    if polyhedra is not None:
        out["polyhedron"] = polyhedra.volumes_centroids(p)[1][:, :d]
    return out


def vertex_weights(points: Tensor, cells: Mapping[str, Tensor], polyhedra=None) -> Tensor:
    """Quadrature weight of each vertex: measure of the highest-dimensional cells split
    equally among their vertices (vertex area / dual volume; a polyhedron's volume is split
    among its distinct points). Uniform ``1/N`` when there are no cells of positive
    dimension. Returns (N,), summing to the total measure."""
    n = points.shape[0]
    from .geometry import CELL_DIM

    dims = [CELL_DIM[c] for c in cells if CELL_DIM[c] > 0 and cells[c].shape[0] > 0]
    if polyhedra is not None and polyhedra.n_cells:
        dims.append(3)
    if not dims:
        return points.new_full((n,), 1.0 / max(n, 1))
    top = max(dims)
    meas = cell_measures(points, {k: v for k, v in cells.items() if CELL_DIM[k] == top},
                         polyhedra if top == 3 else None)
    w = points.new_zeros(n)
    for ctype, m in meas.items():
        if ctype == "polyhedron":
            cid, pid = polyhedra.cell_points()
            k = torch.bincount(cid, minlength=polyhedra.n_cells).to(m.dtype)
            w.index_add_(0, pid.to(w.device), (m / k)[cid])
            continue
        c = cells[ctype]
        k = c.shape[1]
        w.index_add_(0, c.reshape(-1), (m / k).repeat_interleave(k))
    return w


def vertex_normals(points: Tensor, cells: Mapping[str, Tensor]) -> Tensor:
    """Area-weighted unit vertex normals from triangles/quads (3-D) or, for 2-D polylines,
    the rotated segment direction (outward for counter-clockwise closed curves).
    Returns (N, d); vertices touching no cell get a zero normal."""
    n, d = points.shape
    p = _pad3(points)
    acc = p.new_zeros(n, 3)
    tris = []
    if "triangle" in cells:
        tris.append(cells["triangle"])
    if "quad" in cells:
        q = cells["quad"]
        tris += [q[:, [0, 1, 2]], q[:, [0, 2, 3]]]
    if tris:
        t = torch.cat(tris)
        fn = torch.linalg.cross(p[t[:, 1]] - p[t[:, 0]], p[t[:, 2]] - p[t[:, 0]])  # 2 * area * n
        for j in range(3):
            acc.index_add_(0, t[:, j], fn)
    elif "line" in cells:
        seg = cells["line"]
        tvec = p[seg[:, 1]] - p[seg[:, 0]]
        nvec = torch.stack([tvec[:, 1], -tvec[:, 0], torch.zeros_like(tvec[:, 0])], dim=1)
        acc.index_add_(0, seg[:, 0], nvec)
        acc.index_add_(0, seg[:, 1], nvec)
    nrm = acc.norm(dim=1, keepdim=True)
    acc = torch.where(nrm > 0, acc / nrm.clamp_min(1e-300), acc)
    return acc[:, :d].contiguous()


def cell_to_point(values: Tensor, cells: Mapping[str, Tensor], n_points: int, polyhedra=None) -> Tensor:
    """Average per-cell values onto the vertices of each cell (plain mean over the cells
    touching a vertex, as VTK's CellDataToPointData). ``values``: (M, C) over all cells in
    ``cells`` order, then the ``polyhedra`` (each counted once at each of its distinct
    points). Returns (N, C); vertices touching no cell get 0."""
    c_out = values.shape[1]
    acc = values.new_zeros(n_points, c_out)
    cnt = values.new_zeros(n_points)
    start = 0
    for ctype, c in cells.items():
        m, k = c.shape
        v = values[start : start + m]
        start += m
        acc.index_add_(0, c.reshape(-1), v.repeat_interleave(k, dim=0))
        cnt.index_add_(0, c.reshape(-1), values.new_ones(m * k))
    if polyhedra is not None and polyhedra.n_cells:
        cid, pid = polyhedra.cell_points()
        cid, pid = cid.to(values.device), pid.to(values.device)
        acc.index_add_(0, pid, values[start + cid])
        cnt.index_add_(0, pid, values.new_ones(pid.numel()))
    return acc / cnt.clamp_min(1)[:, None]
