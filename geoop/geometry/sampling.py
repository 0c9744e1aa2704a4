"""Uniform random sampling of points on the surface (or boundary curve) of a geometry.

A point is drawn by first choosing a cell with probability proportional to its measure
(triangle area, segment length), then a uniform point inside it:

* triangle ``(a, b, c)``: with ``r1, r2 ~ U(0, 1)``, ``s = sqrt(r1)``, the barycentric
  coordinates ``(1 - s, s (1 - r2), s r2)`` are uniform over the triangle (Osada et al.,
  "Shape distributions", 2002);
* segment ``(a, b)``: ``(1 - t, t)`` with ``t ~ U(0, 1)``.

Fields and normals are interpolated with the same barycentric coordinates (normals are
re-normalised; without vertex normals the cell normal is used for 3-D triangles and
2-D segments, outward for counter-clockwise curves). Every sample
gets the quadrature weight ``total measure / n``, so ``sum(w * f)`` estimates the integral
of ``f`` over the surface.

Shapes
------
geometry.points : (N, d) ; returned points : (n, d) ; fields : (n, C) ; weights : (n,)
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..errors import ShapeError
from .geometry import Geometry

__all__ = ["sample_surface"]


def _pad3(p: Tensor) -> Tensor:
    return p if p.shape[1] == 3 else torch.cat([p, p.new_zeros(p.shape[0], 3 - p.shape[1])], 1)


def sample_surface(geometry: Geometry, n: int, seed: Optional[int] = None) -> Geometry:
    """Draw ``n`` points uniformly by area on the triangles/quads of ``geometry`` (by length
    on its line segments when it has no surface cells, e.g. a 2-D airfoil curve).

    Parameters
    ----------
    geometry : a Geometry with triangle/quad or line cells
    n : number of samples (> 0)
    seed : seed of a private ``torch.Generator`` (the global RNG is left alone);
        ``None`` draws a fresh seed.

    Returns
    -------
    A point-cloud Geometry (no cells) with interpolated ``fields`` and ``normals`` and
    uniform ``weights = total area (length) / n``.

    Raises
    ------
    ShapeError : ``n < 1``, or the geometry has neither surface nor line cells.
    """
    if not isinstance(n, int) or n < 1:
        raise ShapeError(f"sample_surface: n must be a positive integer, got {n!r}")
    where = geometry._where()
    pts = geometry.points
    faces = geometry.faces
    if faces is not None and faces.shape[0] > 0:
        simplices = faces
    elif "line" in geometry.cells and geometry.cells["line"].shape[0] > 0:
        simplices = geometry.cells["line"]
    else:
        raise ShapeError(f"{where}sample_surface needs triangle, quad or line cells; the geometry has "
                         f"{sorted(geometry.cells) or 'no cells (a point cloud)'}")
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))

    p3 = _pad3(pts)
    verts = p3[simplices]  # (F, k, 3)
    if simplices.shape[1] == 3:
        measure = 0.5 * torch.linalg.cross(verts[:, 1] - verts[:, 0], verts[:, 2] - verts[:, 0]).norm(dim=1)
    else:
        measure = (verts[:, 1] - verts[:, 0]).norm(dim=1)
    total = measure.sum()
    if not total > 0:
        raise ShapeError(f"{where}sample_surface: the cells have zero total measure")
    probs = (measure / total).to(torch.float64).cpu()
    cell = torch.multinomial(probs, n, replacement=True, generator=gen).to(pts.device)
    if simplices.shape[1] == 3:
        r1 = torch.rand(n, generator=gen, dtype=torch.float64)
        r2 = torch.rand(n, generator=gen, dtype=torch.float64)
        s = r1.sqrt()
        bary = torch.stack([1 - s, s * (1 - r2), s * r2], dim=1)
    else:
        t = torch.rand(n, generator=gen, dtype=torch.float64)
        bary = torch.stack([1 - t, t], dim=1)
    bary = bary.to(device=pts.device, dtype=pts.dtype)
    idx = simplices[cell]  # (n, k)

    def interp(values: Tensor) -> Tensor:
        return torch.einsum("nk,nkc->nc", bary.to(values.dtype), values[idx])

    new_pts = interp(pts)
    normals = None
    if geometry.normals is not None:
        normals = interp(geometry.normals)
    elif simplices.shape[1] == 3 and pts.shape[1] == 3:
        tri = verts[cell]
        normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    elif simplices.shape[1] == 2 and pts.shape[1] == 2:  # segment normal: tangent rotated by -90 deg
        tan = pts[idx[:, 1]] - pts[idx[:, 0]]
        normals = torch.stack([tan[:, 1], -tan[:, 0]], dim=1)
    if normals is not None:
        normals = normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-30)
    fields = {k: interp(v) for k, v in geometry.fields.items() if not v.is_complex()}
    weights = torch.full((n,), float(total) / n, dtype=pts.dtype, device=pts.device)
    return Geometry(new_pts, normals=normals, weights=weights, fields=fields,
                    name=geometry.name, source=geometry.source, validate=False)
