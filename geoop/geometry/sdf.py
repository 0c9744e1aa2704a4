"""Signed distance from query points to the boundary of a geometry.

``sdf(geometry, points)`` returns ``phi(q) = s(q) * min_{y in boundary} |q - y|`` with
``s = -1`` inside and ``+1`` outside when the boundary is closed, ``s = 1`` otherwise:

=================================  ==============================  =====================
geometry                           boundary                        signed when
=================================  ==============================  =====================
3-D triangle/quad surface          its triangles                   watertight (every edge
                                                                   shared by 2 faces)
3-D volume mesh (tetra, hex, ...)  its boundary triangles          always
2-D polyline (d=2, or z = 0)       its segments                    it has a closed loop
                                                                   (sign from the closed
                                                                   loops only)
2-D triangulated domain            its boundary edges (holes too)  always
3-D polyline                       its segments                    never
point cloud                        its points (scipy cKDTree)      never
=================================  ==============================  =====================

A surface or planar polyline with a declared symmetry plane (``Geometry(symmetry=...)``, a
half body) is measured as its mirrored closed body (:func:`geoop.geometry.symmetry.full_body`:
the half, its mirror image with reversed winding, the seam welded), so the sign is that of
the full body on both sides of the plane; a plane the body does not touch raises
:class:`~geoop.errors.SymmetryError`. Volume meshes and 2-D domains are closed already: their
SDF ignores the plane. An open surface (or a planar polyline without a closed
loop) and no symmetry gets an :class:`~geoop.errors.UnsignedSDFWarning`: its distance is
unsigned (positive inside the body too).

Backends for triangle surfaces: ``"open3d"`` (``RaycastingScene``: BVH closest point and
ray-parity inside test, float32), ``"trimesh"`` (``proximity.closest_point`` and
``contains``, float64), ``"kdtree"`` (distance to the nearest *vertex*, unsigned; also the
only method for point clouds). ``"auto"`` picks open3d when installed, else trimesh: its BVH
is many times faster at the same accuracy (``benchmarks/sdf.py``; numbers in
``docs/experiments.md``). Curves and 2-D domains use an exact chunked point-to-segment distance in torch
and an even-odd crossing test for the sign, whatever the backend.

Shapes
------
points : (Q, d) query points, d = geometry.dim (2-D queries are accepted for z = 0 meshes)
returns : (Q,) float
"""
from __future__ import annotations

import warnings
from typing import Union

import numpy as np
import torch
from torch import Tensor

from .._optional import available, require
from ..errors import ConfigError, ShapeError, UnsignedSDFWarning
from .geometry import CELL_DIM, Geometry

__all__ = ["sdf", "SDF_BACKENDS", "resolve_sdf_backend", "is_watertight", "drop_cancelling_faces", "segment_distance", "inside_polygon",
           "closed_loop_segments"]

#: valid ``backend`` strings
SDF_BACKENDS = ("auto", "open3d", "trimesh", "kdtree")


def resolve_sdf_backend(backend: str) -> str:
    """Turn ``backend`` into a concrete backend name for triangle surfaces.

    ``"auto"`` -> ``"open3d"`` when installed (and not disabled by
    ``GEOOP_DISABLE_BACKENDS``), else ``"trimesh"``. Unknown names raise
    :class:`ConfigError` listing :data:`SDF_BACKENDS`.
    """
    if backend not in SDF_BACKENDS:
        raise ConfigError(f"sdf: unknown backend {backend!r}; valid: {list(SDF_BACKENDS)}")
    if backend == "auto":
        return "open3d" if available("open3d") else "trimesh"
    if backend == "open3d":
        require("open3d", "the open3d SDF backend")
    return backend


# ----------------------------------------------------------------------------- topology
def _edges_count(simplices: Tensor) -> tuple[Tensor, Tensor]:
    """Unique undirected edges (E, 2) of triangles/segments and how often each occurs."""
    k = simplices.shape[1]
    if k == 2:
        e = simplices
    else:
        e = torch.cat([simplices[:, [i, (i + 1) % k]] for i in range(k)])
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0, return_counts=True)


def is_watertight(faces: Tensor) -> bool:
    """True when every undirected edge of the (F, 3) triangles is shared by exactly two."""
    if faces is None or faces.shape[0] == 0:
        return False
    _, counts = _edges_count(faces)
    return bool((counts == 2).all())


def drop_cancelling_faces(faces: Tensor) -> Tensor:
    """The (F', 3) triangles left after removing coincident pairs of opposite winding.

    Two triangles on the same three vertices with opposite orientation form a sheet of zero
    thickness (a mesher's sliver fin between two cells): it bounds no volume, its pressure
    loads cancel, and its edges are shared by four faces, which makes an otherwise closed
    body fail :func:`is_watertight`. Pairs are matched on the sorted vertex triple; the
    orientation is the parity of the permutation that sorts a face. Faces without an
    opposite partner are kept, so a plain duplicate (same winding) still fails the test."""
    if faces is None or faces.shape[0] < 2:
        return faces
    f = faces.cpu().numpy()
    key = np.sort(f, 1)
    order = np.argsort(f, 1)
    even = (order[:, 1] - order[:, 0]) % 3 == 1  # a rotation of (0, 1, 2): the sorted winding
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    drop = np.zeros(len(f), dtype=bool)
    for g in np.flatnonzero(counts > 1):  # few groups: only the coincident faces
        members = np.flatnonzero(inv == g)
        ev, od = members[even[members]], members[~even[members]]
        n = min(len(ev), len(od))
        drop[ev[:n]] = drop[od[:n]] = True
    if not drop.any():
        return faces
    return faces[torch.from_numpy(~drop).to(faces.device)]


def closed_loop_segments(lines: Tensor) -> Tensor:
    """(S,) bool: the segments of ``lines`` (S, 2) that lie on a closed loop, i.e. in a
    connected component whose every vertex is in exactly two segments. A 2-D body drawn as
    a closed outline plus open chains (a car with an open intake duct, a wing with a
    dangling wake line) takes its inside/outside from the closed loops only: an open chain
    has no inside, and counting its crossings would flip the sign beyond its ends."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if lines.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    e = lines.cpu().numpy()
    n = int(e.max()) + 1
    adj = coo_matrix((np.ones(e.shape[0]), (e[:, 0], e[:, 1])), shape=(n, n))
    _, comp = connected_components(adj, directed=False)
    deg = np.bincount(e.reshape(-1), minlength=n)
    bad = np.zeros(comp.max() + 1, dtype=bool)
    used = deg > 0
    np.logical_or.at(bad, comp[used], deg[used] != 2)
    return torch.from_numpy(~bad[comp[e[:, 0]]])


# ----------------------------------------------------------------------------- curves
def segment_distance(points: Tensor, a: Tensor, b: Tensor, chunk_elems: int = 1 << 22) -> Tensor:
    """Exact distance from each query to the nearest segment ``[a_j, b_j]``:
    ``min_j |q - (a_j + t (b_j - a_j))|`` with ``t = clamp((q-a).(b-a) / |b-a|^2, 0, 1)``.

    Shapes: points (Q, d), a (S, d), b (S, d) -> (Q,). Computed in chunks of queries so
    that at most ``chunk_elems`` query-segment pairs are held at once, one coordinate at a
    time on ``(q, S)`` planes (no reductions over a length-d axis, which are slow on
    a short axis; see ``docs/experiments.md``).
    """
    ab = b - a
    den = (ab * ab).sum(1).clamp_min(1e-300)
    out = points.new_empty(points.shape[0])
    step = max(1, chunk_elems // max(1, a.shape[0]))
    dim = points.shape[1]
    for s in range(0, points.shape[0], step):
        q = points[s : s + step]
        comps = [q[:, k : k + 1] - a[:, k] for k in range(dim)]  # (q, S) each: q - a
        dot = comps[0] * ab[:, 0]
        for k in range(1, dim):
            dot.addcmul_(comps[k], ab[:, k])
        t = dot.div_(den).clamp_(0, 1)
        d2 = None
        for k in range(dim):
            r = comps[k].sub_(t * ab[:, k])
            d2 = r.square_() if d2 is None else d2.add_(r.square_())
        out[s : s + step] = d2.min(dim=1).values.sqrt()
    return out


def inside_polygon(points: Tensor, a: Tensor, b: Tensor, chunk_elems: int = 1 << 22) -> Tensor:
    """Even-odd rule: a query is inside when a ray in +x crosses the closed segment set an
    odd number of times (holes and several loops are handled). Shapes: points (Q, 2),
    a/b (S, 2) -> (Q,) bool."""
    out = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    step = max(1, chunk_elems // max(1, a.shape[0]))
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    for s in range(0, points.shape[0], step):
        qx, qy = points[s : s + step, 0:1], points[s : s + step, 1:2]
        straddle = (ay > qy) != (by > qy)
        x_cross = ax + (qy - ay) * (bx - ax) / torch.where(by == ay, torch.ones_like(by), by - ay)
        hits = straddle & (qx < x_cross)
        out[s : s + step] = (hits.sum(1) % 2) == 1
    return out


# ----------------------------------------------------------------------------- triangles
def _surface_sdf(verts: np.ndarray, faces: np.ndarray, q: np.ndarray, signed: bool, backend: str) -> np.ndarray:
    if backend == "open3d":
        o3d = require("open3d", "the open3d SDF backend")
        scene = o3d.t.geometry.RaycastingScene()
        mesh = o3d.t.geometry.TriangleMesh(
            o3d.core.Tensor(verts.astype(np.float32)), o3d.core.Tensor(faces.astype(np.int32))
        )
        scene.add_triangles(mesh)
        qt = o3d.core.Tensor(q.astype(np.float32))
        d = scene.compute_signed_distance(qt) if signed else scene.compute_distance(qt)
        return d.numpy().astype(np.float64)
    import trimesh

    mesh = trimesh.Trimesh(verts.astype(np.float64), faces, process=False)
    # trimesh gathers, per query, every triangle whose box meets the query's search box (up to
    # all of them far from the surface): queries in chunks keep that gather under ~2^24 rows
    qq = q.astype(np.float64)
    step = max(1, (1 << 24) // max(1, len(faces)))
    dist = np.concatenate([trimesh.proximity.closest_point(mesh, qq[s:s + step])[1] for s in range(0, len(qq), step)])
    if signed:
        inside = mesh.contains(qq)
        dist = np.where(inside, -dist, dist)
    return np.asarray(dist, dtype=np.float64)


def _boundary_triangles(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Boundary surface of a volume mesh, triangulated (pyvista extract_surface)."""
    from .convert import to_pyvista

    vol = geometry.replace(cells={k: v for k, v in geometry.cells.items() if CELL_DIM[k] == 3},
                           fields={}, cell_fields={}, normals=None)
    grid = to_pyvista(vol)
    import inspect

    kw = {"algorithm": "dataset_surface"} if "algorithm" in inspect.signature(grid.extract_surface).parameters else {}
    surf = grid.extract_surface(**kw).triangulate()
    return np.asarray(surf.points, dtype=np.float64), np.asarray(surf.regular_faces)


# ----------------------------------------------------------------------------- entry point
def sdf(geometry: Geometry, points: Union[Tensor, np.ndarray], backend: str = "auto") -> Tensor:
    """Signed distance (negative inside) from ``points`` to the boundary of ``geometry``;
    unsigned where the boundary is not closed (see the module table).

    Parameters
    ----------
    geometry : the geometry
    points : (Q, d) query points
    backend : one of :data:`SDF_BACKENDS`; applies to 3-D triangle surfaces
        ("kdtree" gives the unsigned distance to the nearest vertex).

    Returns
    -------
    (Q,) tensor, dtype of ``points`` when it is a float tensor, else the default dtype.
    """
    name = resolve_sdf_backend(backend)
    where = geometry._where()
    q = points if isinstance(points, Tensor) else torch.as_tensor(np.asarray(points), dtype=torch.get_default_dtype())
    if not torch.is_floating_point(q):
        q = q.to(torch.get_default_dtype())
    if q.dim() != 2 or q.shape[1] not in (2, 3):
        raise ShapeError(f"{where}sdf: points must have shape (Q, 2) or (Q, 3), got {tuple(q.shape)}")
    if not torch.isfinite(q).all():
        raise ShapeError(f"{where}sdf: query points contain NaN/Inf")
    out_dtype = q.dtype
    pts = geometry.points.to(torch.float64).cpu()
    qd = q.detach().to(torch.float64).cpu()
    flat2d = geometry.dim == 2 or geometry.is_2d
    if qd.shape[1] != geometry.dim and not (flat2d and qd.shape[1] in (2, 3)):
        raise ShapeError(f"{where}sdf: points must have {geometry.dim} columns, got {qd.shape[1]}")
    from .symmetry import full_body, is_surface

    mirrored = geometry.symmetry is not None and is_surface(geometry)
    if mirrored:  # volumes and 2-D domains are closed already
        bare = geometry.replace(fields={}, cell_fields={}, normals=None, weights=None)
        geometry = full_body(bare, vector_fields=())  # the closed body; errors when the plane is off it
        pts = geometry.points.to(torch.float64).cpu()

    top = geometry.topological_dim
    faces = geometry.faces
    has_vol = top == 3
    lines = geometry.cells.get("line")

    if flat2d and (top == 2 or (lines is not None and lines.shape[0] > 0)) and not has_vol:
        p2, q2 = pts[:, :2], qd[:, :2]
        if top == 2:  # 2-D domain: its boundary edges, always closed
            edges, counts = _edges_count(faces)
            seg = edges[counts == 1]
            loop = torch.ones(seg.shape[0], dtype=torch.bool)
        else:
            seg = lines
            loop = closed_loop_segments(lines)
        a, b = p2[seg[:, 0]], p2[seg[:, 1]]
        d = segment_distance(q2, a, b)
        if bool(loop.any()):  # sign from the closed loops (see closed_loop_segments)
            inside = inside_polygon(q2, a[loop], b[loop])
            d = torch.where(inside, -d, d)
        else:
            _warn_unsigned(geometry, "the polyline has no closed loop", hint=not mirrored)
        result = d
    elif name == "kdtree" or (faces is None and not has_vol and lines is None):
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(pts.numpy()).query(_match_dim(qd, pts).numpy())
        result = torch.from_numpy(np.asarray(dist))
    elif has_vol:
        v, f = _boundary_triangles(geometry)
        result = torch.from_numpy(_surface_sdf(v, f, _match_dim(qd, pts).numpy(), True, name))
    elif faces is not None:
        v = pts if pts.shape[1] == 3 else torch.cat([pts, pts.new_zeros(pts.shape[0], 1)], 1)
        qq = qd if qd.shape[1] == 3 else torch.cat([qd, qd.new_zeros(qd.shape[0], 1)], 1)
        faces = drop_cancelling_faces(faces)  # zero-thickness fins bound no volume
        closed = is_watertight(faces)
        if not closed:
            _, cnt = _edges_count(faces)
            _warn_unsigned(geometry, f"the surface is not closed ({int((cnt == 1).sum())} edges with one face, "
                           f"{int((cnt > 2).sum())} with more than two)"
                           + (" even after closing it with its mirror image: it has holes, cracks or non-manifold "
                              "edges besides the symmetry plane" if mirrored else ""), hint=not mirrored)
        result = torch.from_numpy(_surface_sdf(v.numpy(), faces.cpu().numpy(), qq.numpy(), closed, name))
    else:  # 3-D polyline: unsigned distance to its segments
        a, b = pts[lines[:, 0]], pts[lines[:, 1]]
        result = segment_distance(qd, a, b)
    return result.to(device=q.device, dtype=out_dtype)


def _warn_unsigned(geometry: Geometry, why: str, hint: bool = True) -> None:
    """Warn that the distance is unsigned; ``hint``: suggest declaring a symmetry plane (not
    when one is declared already)."""
    tip = (" A half body on a symmetry plane: declare it, Geometry(symmetry=('y', 0.0)) or symmetry='auto'"
           if hint else " Repair the surface (e.g. close its holes) for a signed distance.")
    warnings.warn(f"{geometry._where() or 'geometry: '}the SDF is unsigned: {why}, so it has no inside (points inside the "
                  f"body get positive distances).{tip}", UnsignedSDFWarning, stacklevel=3)


def _match_dim(q: Tensor, pts: Tensor) -> Tensor:
    if q.shape[1] == pts.shape[1]:
        return q
    if q.shape[1] < pts.shape[1]:
        return torch.cat([q, q.new_zeros(q.shape[0], pts.shape[1] - q.shape[1])], 1)
    return q[:, : pts.shape[1]]
