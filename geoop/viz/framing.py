"""Where the body is in a flow-domain mesh, so pictures frame it instead of the far field.

A 2-D domain mesh (triangles/quads in the plane) around a body has boundary edges (edges of
exactly one cell) forming closed loops: the outer one is the far field, the others are the
bodies (the mesh has holes there). :func:`body_nodes` returns the nodes of the inner loops,
:func:`body_box` a box around them, and :func:`view_box` decides whether a picture should
be cropped to it (the domain much larger than the body).

Shapes: points (N, d); returned node indices (K,) long; boxes ``(xmin, xmax, ymin, ymax[,
zmin, zmax])``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..geometry.geometry import Geometry

__all__ = ["body_nodes", "body_box", "view_box", "in_box", "body_camera", "FRAME_RATIO", "FRAME_MARGIN"]

#: crop to the body when the domain's extent is at least this many times the body's
FRAME_RATIO = 3.0
#: margin around the body, as a fraction of its largest extent
FRAME_MARGIN = 0.3


def _boundary_loops(g: Geometry) -> list[np.ndarray]:
    """Node sets of the boundary loops of a planar cell mesh (each an array of node ids)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = []
    for ctype in ("triangle", "quad"):
        c = g.cells.get(ctype)
        if c is None or c.shape[0] == 0:
            continue
        cn = c.cpu().numpy()
        k = cn.shape[1]
        edges += [cn[:, [j, (j + 1) % k]] for j in range(k)]
    if not edges:
        return []
    e = np.sort(np.concatenate(edges), axis=1)
    uniq, count = np.unique(e, axis=0, return_counts=True)
    b = uniq[count == 1]
    if b.shape[0] == 0:
        return []
    n = g.n_points
    adj = coo_matrix((np.ones(b.shape[0]), (b[:, 0], b[:, 1])), shape=(n, n))
    _, label = connected_components(adj, directed=False)
    nodes = np.unique(b)
    return [nodes[label[nodes] == lab] for lab in np.unique(label[nodes])]


def body_nodes(g: Geometry) -> Optional[np.ndarray]:
    """Nodes on the body boundaries of a 2-D domain mesh (all boundary loops but the one
    with the largest extent); None for other geometries or a mesh without holes."""
    if not g.is_2d or g.topological_dim != 2:
        return None
    loops = _boundary_loops(g)
    if len(loops) < 2:
        return None
    pts = g.points.detach().cpu().double().numpy()[:, :2]
    size = [float(np.max(pts[lp].max(0) - pts[lp].min(0))) for lp in loops]
    outer = int(np.argmax(size))
    return np.concatenate([lp for i, lp in enumerate(loops) if i != outer])


def body_box(points: np.ndarray, margin: float = FRAME_MARGIN) -> list:
    """Bounding box of ``points`` (K, d) grown by ``margin`` times its largest extent."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(0), p.max(0)
    pad = margin * float(np.max(hi - lo))
    box = []
    for a in range(p.shape[1]):
        box += [float(lo[a] - pad), float(hi[a] + pad)]
    return box


def view_box(g: Geometry, body: Optional[Geometry] = None, ratio: float = FRAME_RATIO, margin: float = FRAME_MARGIN) -> Optional[list]:
    """The box a picture of ``g`` should show: around the body (``body``'s points, or the
    holes of a 2-D domain mesh) when the domain is at least ``ratio`` times larger than the
    body; None (everything) otherwise. 2-D geometries get a 4-number box."""
    if body is not None:
        bp = body.points.detach().cpu().double().numpy()
    else:
        idx = body_nodes(g)
        if idx is None:
            return None
        bp = g.points.detach().cpu().double().numpy()[idx]
    pts = g.points.detach().cpu().double().numpy()
    d = 2 if g.is_2d else pts.shape[1]
    bp, pts = bp[:, :d], pts[:, :d]
    dom = float(np.max(pts.max(0) - pts.min(0)))
    size = float(np.max(bp.max(0) - bp.min(0)))
    if size <= 0 or dom < ratio * size:
        return None
    return body_box(bp, margin)


def in_box(points: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """(N,) bool: points inside ``box`` (4 numbers: x and y only; 6: x, y, z)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.ones(p.shape[0], dtype=bool)
    for a in range(len(box) // 2):
        m &= (p[:, a] >= box[2 * a]) & (p[:, a] <= box[2 * a + 1])
    return m


def body_camera(points: np.ndarray, distance: float = 4.2) -> dict:
    """A plotly scene camera on a 3-D body (K, 3) (x streamwise, z up): a three-quarter view
    from upstream (-x), above (+z) and the side away from a symmetry plane y = const that
    the body touches (a half body on ``y >= y_min`` is seen from +y; a full body from -y).
    ``distance``: the eye's distance from the centre in plotly's normalised scene units
    (about 4 frames an elongated body)."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p.min(0), p.max(0)
    ext = float(np.max(hi - lo)) or 1.0
    side = 1.0 if abs(lo[1]) <= 1e-6 * ext and hi[1] > 0 else -1.0  # a half body on y >= 0 is seen from +y
    d = np.array([-1.3, side, 0.8])
    d = distance * d / np.linalg.norm(d)
    return dict(eye=dict(x=float(d[0]), y=float(d[1]), z=float(d[2])), up=dict(x=0, y=0, z=1), center=dict(x=0, y=0, z=0))
