"""Loader for ``mini_car.pt``: three real car surfaces with CFD surface pressure.

The file (Shape-Net Car CFD data of Umetani & Bickel 2018, as published by the
neuraloperator project, MIT licence) is a list of dicts of tensors, one per car:

=========================== ================== ==========================================
key                         shape              meaning
=========================== ================== ==========================================
``vertices``                (N, 3)             surface vertices, scaled into [0, 1]^3
``vertex_normals``          (N, 3)             unit normals at the vertices
``press``                   (1, N)             pressure at the vertices (normalised)
``centroids``               (F, 3)             triangle centroids (same coordinates)
``triangle_normals``        (F, 3)             unit triangle normals (original coordinates)
``triangle_areas``          (F,)               triangle areas (original coordinates)
``query_points``            (G, G, G, 3)       regular grid over [0, 1]^3, ``ij`` indexing
``distance``                (G, G, G, 1)       unsigned distance grid point -> surface
``closest_points``          (G, G, G, 3)       nearest surface point of each grid point
=========================== ================== ==========================================

Loading
-------
The file holds only lists, dicts and tensors, so it is read with
``torch.load(path, weights_only=True)``: no pickled code is executed. (The data README
suggests ``weights_only=False``; it is not needed for this file, and a file that does need
it is rejected with a :class:`~geoop.errors.DatasetError`.) Every key, type, shape and
value is validated after loading.

Quadrature weights: reconstructing the triangles
------------------------------------------------
No connectivity is stored, but the triangle centroids are, in the same coordinates as the
vertices. A triangle's centroid is the mean of its three vertices, ``c = (a + b + d) / 3``,
so each triangle is recovered exactly: among the ``k`` vertices nearest to ``c`` (k = 8,
then 16, 32 for the few not found) take the triples whose mean equals ``c`` to rounding
(``|mean - c| <= 1e-6 * max|x|``) and, when several triples tie (regular patches), the one
with the smallest perimeter. On the three cars this recovers all F = 2N - 4 triangles and
a closed 2-manifold (every edge shared by exactly two triangles; checked, and a
:class:`DatasetError` otherwise when ``faces="require"``). The triangles are oriented so
that their normals agree in sign with ``triangle_normals`` (a positive diagonal rescaling
``S`` maps a normal ``n`` to a multiple of ``S^{-1} n``, and ``n . S^{-1} n > 0``, so the
sign survives the anisotropic scaling into [0, 1]^3).

The quadrature weights are then the lumped vertex areas of :class:`~geoop.Geometry`
(a third of the area of the adjacent triangles, in the scaled coordinates of ``vertices``),
which sum to the surface area. The stored ``triangle_areas`` are in the original
(unscaled, anisotropic) coordinates and are not used for the weights. With
``faces=False`` the geometry is a bare point cloud and its weights are uniform ``1 / N``.

Shapes
------
load_mini_car(path) -> list of 3 Geometry:
    points  : (N, 3) float32          normals : (N, 3) float32
    faces   : (F, 3) long             weights : (N,) float32, sum = surface area
    fields  : {"pressure": (N, 1) float32}
load_mini_car_samples(path, latent="sdf") -> list of 3 Sample with
    latent_features : (1, G, G, G) float32, signed distance to the surface (channel first)
    meta : {"name", "latent_points": (G, G, G, 3), "latent_bounds": ((3,), (3,)),
            "distance": (G, G, G, 1) as stored, "closest_points": (G, G, G, 3)}

The stored ``distance`` grid is not consistent with ``vertices`` (see
:func:`load_mini_car_samples`); the default latent feature is recomputed from the mesh.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import DatasetError

__all__ = [
    "MINI_CAR_KEYS",
    "default_mini_car_path",
    "load_mini_car_records",
    "load_mini_car",
    "load_mini_car_samples",
    "LATENT_FEATURES",
    "reconstruct_faces",
]

#: key -> expected shape, with symbolic sizes N (vertices), F (triangles), G (grid)
MINI_CAR_KEYS = {
    "vertices": ("N", 3),
    "vertex_normals": ("N", 3),
    "press": (1, "N"),
    "centroids": ("F", 3),
    "triangle_normals": ("F", 3),
    "triangle_areas": ("F",),
    "query_points": ("G", "G", "G", 3),
    "distance": ("G", "G", "G", 1),
}
_OPTIONAL_KEYS = {
    "closest_points": ("G", "G", "G", 3),
    "normalized_triangle_areas": ("F",),
}

_REPO_COPY = Path(__file__).resolve().parents[2] / "tests" / "data" / "mini_car.pt"
_SHARED_COPY = Path("/work/shared/data/mini_car.pt")
PathLike = Union[str, os.PathLike]


def default_mini_car_path() -> Path:
    """``$GEOOP_MINI_CAR`` if set, else the repository copy ``tests/data/mini_car.pt``,
    else ``/work/shared/data/mini_car.pt``."""
    env = os.environ.get("GEOOP_MINI_CAR")
    if env:
        return Path(env)
    for p in (_REPO_COPY, _SHARED_COPY):
        if p.is_file():
            return p
    raise DatasetError(
        f"mini_car.pt not found: looked for {_REPO_COPY} and {_SHARED_COPY}; pass path= or set "
        "GEOOP_MINI_CAR"
    )


def _check_shape(where: str, key: str, value: Tensor, pattern: tuple, sizes: dict) -> None:
    expected = tuple(sizes.get(s, s) if isinstance(s, str) else s for s in pattern)
    actual = tuple(value.shape)
    ok = len(actual) == len(pattern)
    if ok:
        for s, a in zip(pattern, actual):
            if isinstance(s, str):
                if s in sizes and sizes[s] != a:
                    ok = False
                sizes.setdefault(s, a)
            elif s != a:
                ok = False
    if not ok:
        exp = "(" + ", ".join(str(sizes.get(s, s)) if isinstance(s, str) else str(s) for s in pattern) + ")"
        raise DatasetError(f"{where}: key {key!r} has shape {actual}, expected {exp} (pattern {pattern}, got {expected})")


def load_mini_car_records(path: Optional[PathLike] = None) -> list[dict[str, Tensor]]:
    """Load and validate the raw records of ``mini_car.pt`` (see the module docstring).

    Returns a list of dicts of float32 tensors with the keys of :data:`MINI_CAR_KEYS`
    (plus the optional ones present). Raises :class:`DatasetError` naming the file, the car
    index, the key, and the expected and actual type/shape for a missing, unreadable or
    malformed file.
    """
    p = Path(path) if path is not None else default_mini_car_path()
    if not p.is_file():
        raise DatasetError(f"{p}: mini_car file not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled objects not allowed...
        raise DatasetError(
            f"{p}: cannot be read with torch.load(weights_only=True): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(data, (list, tuple)) or len(data) == 0:
        n = len(data) if isinstance(data, (list, tuple)) else "-"
        raise DatasetError(f"{p}: expected a non-empty list of dicts (one per car), got {type(data).__name__} (len {n})")
    records = []
    for i, rec in enumerate(data):
        where = f"{p} [car {i}]"
        if not isinstance(rec, dict):
            raise DatasetError(f"{where}: expected a dict of tensors, got {type(rec).__name__}")
        missing = [k for k in MINI_CAR_KEYS if k not in rec]
        if missing:
            raise DatasetError(f"{where}: missing key(s) {missing}; expected keys {list(MINI_CAR_KEYS)}")
        sizes: dict = {}
        out = {}
        for key, pattern in {**MINI_CAR_KEYS, **_OPTIONAL_KEYS}.items():
            if key not in rec:
                continue
            v = rec[key]
            if isinstance(v, np.ndarray):
                v = torch.from_numpy(v)
            if not isinstance(v, Tensor):
                raise DatasetError(f"{where}: key {key!r} must be a tensor, got {type(v).__name__}")
            if not torch.is_floating_point(v):
                raise DatasetError(f"{where}: key {key!r} must be floating point, got dtype {v.dtype}")
            _check_shape(where, key, v, pattern, sizes)
            v = v.detach().to(torch.float32)
            if not torch.isfinite(v).all():
                bad = int((~torch.isfinite(v)).sum())
                raise DatasetError(f"{where}: key {key!r} has {bad} non-finite value(s)")
            out[key] = v
        if sizes["N"] < 4 or sizes["F"] < 1:
            raise DatasetError(f"{where}: expected at least 4 vertices and 1 triangle, got N={sizes['N']}, F={sizes['F']}")
        records.append(out)
    return records


def reconstruct_faces(
    vertices: Tensor,
    centroids: Tensor,
    triangle_normals: Optional[Tensor] = None,
    ks: tuple = (8, 16, 32),
    rtol: float = 1e-6,
) -> Tensor:
    """Recover the triangles of a mesh from its vertices and triangle centroids.

    For each centroid ``c`` the triangle is the triple ``(a, b, d)`` of vertices with
    ``(x_a + x_b + x_d) / 3 = c`` (to ``rtol * max|x|``), searched among the ``k`` nearest
    vertices of ``c``; ties go to the smallest perimeter. If ``triangle_normals`` is given,
    each triangle is oriented so that ``(x_b - x_a) x (x_d - x_a)`` has a positive dot
    product with its normal.

    Shapes
    ------
    vertices : (N, 3) float;  centroids : (F, 3) float;  triangle_normals : (F, 3) or None
    returns  : (F, 3) long; a row is ``-1`` where no triple matched
    """
    from scipy.spatial import cKDTree

    V = vertices.detach().double().cpu().numpy()
    C = centroids.detach().double().cpu().numpy()
    tol = rtol * max(float(np.abs(V).max()), 1.0)
    tree = cKDTree(V)
    faces = np.full((len(C), 3), -1, dtype=np.int64)
    todo = np.arange(len(C))
    for k in ks:
        if len(todo) == 0:
            break
        k = min(k, len(V))
        _, idx = tree.query(C[todo], k=k)  # (T, k)
        pairs = np.array(list(itertools.combinations(range(k), 2)))  # (P, 2)
        a, b = idx[:, pairs[:, 0]], idx[:, pairs[:, 1]]  # (T, P)
        third = 3.0 * C[todo][:, None] - V[a] - V[b]  # the vertex that would close the triple
        dist, d = tree.query(third.reshape(-1, 3), k=1)
        dist, d = dist.reshape(a.shape), d.reshape(a.shape)
        valid = (dist <= 3.0 * tol) & (d != a) & (d != b)
        per = (
            np.linalg.norm(V[a] - V[b], axis=-1)
            + np.linalg.norm(V[b] - V[d], axis=-1)
            + np.linalg.norm(V[d] - V[a], axis=-1)
        )
        score = np.where(valid, per, np.inf)
        j = score.argmin(1)
        rows = np.arange(len(todo))
        found = np.isfinite(score[rows, j])
        tri = np.stack([a[rows, j], b[rows, j], d[rows, j]], 1)
        faces[todo[found]] = tri[found]
        todo = todo[~found]
    if triangle_normals is not None:
        ok = faces[:, 0] >= 0
        f = faces[ok]
        cr = np.cross(V[f[:, 1]] - V[f[:, 0]], V[f[:, 2]] - V[f[:, 0]])
        flip = (cr * triangle_normals.detach().double().cpu().numpy()[ok]).sum(1) < 0
        f[flip] = f[flip][:, [0, 2, 1]]
        faces[ok] = f
    return torch.from_numpy(faces)


def _closed_manifold_problems(faces: Tensor, n_vertices: int) -> str:
    """'' if every edge is shared by exactly two triangles and every vertex is used."""
    f = faces.numpy()
    if (f < 0).any():
        return f"{int((f < 0).any(1).sum())} triangle(s) not recovered"
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    if (counts != 2).any():
        return f"{int((counts != 2).sum())} edge(s) not shared by exactly two triangles"
    unused = n_vertices - len(np.unique(f))
    if unused:
        return f"{unused} vertex/vertices in no triangle"
    return ""


def _geometry(rec: dict, name: str, source: str, faces: Union[bool, str]):
    from ..geometry.geometry import Geometry

    tri = None
    if faces:
        tri = reconstruct_faces(rec["vertices"], rec["centroids"], rec["triangle_normals"])
        problem = _closed_manifold_problems(tri, rec["vertices"].shape[0])
        if problem:
            if faces == "require":
                raise DatasetError(f"{source} [{name}]: triangle reconstruction from centroids failed: {problem}")
            tri = None  # fall back to a point cloud with uniform weights
    return Geometry(
        rec["vertices"],
        tri,
        normals=rec["vertex_normals"],
        fields={"pressure": rec["press"].T.contiguous()},
        name=name,
        source=source,
    )


def load_mini_car(path: Optional[PathLike] = None, faces: Union[bool, str] = True) -> list:
    """The cars of ``mini_car.pt`` as :class:`~geoop.Geometry` objects.

    Parameters
    ----------
    path : file, default :func:`default_mini_car_path`
    faces : True (default) reconstructs the triangles from the centroids (falling back to
        a point cloud if that fails), ``"require"`` raises instead of falling back, False
        gives a bare point cloud with uniform weights.

    Returns
    -------
    list of Geometry, one per car, named ``car_0``, ``car_1``, ...; points (N, 3),
    normals (N, 3), faces (F, 3), weights (N,) (lumped vertex areas) and the field
    ``"pressure"`` (N, 1).
    """
    if faces not in (True, False, "require"):
        raise DatasetError(f"load_mini_car: faces must be True, False or 'require', got {faces!r}")
    p = Path(path) if path is not None else default_mini_car_path()
    recs = load_mini_car_records(p)
    return [_geometry(r, f"car_{i}", str(p), faces) for i, r in enumerate(recs)]


#: valid ``latent`` choices of :func:`load_mini_car_samples`
LATENT_FEATURES = ("sdf", "distance", "none")


def load_mini_car_samples(path: Optional[PathLike] = None, faces: Union[bool, str] = True,
                          latent: str = "sdf", sdf_backend: str = "auto") -> list:
    """The cars as :class:`~geoop.batch.Sample` objects with latent features on the grid.

    The latent grid is the stored ``query_points`` grid (16^3 nodes over [0, 1]^3, ``ij``
    order, axis 0 = x), which is exactly ``geoop.neighbors.grid.grid_points((16,)*3,
    [[0]*3, [1]*3])``, the box latent of a default :class:`~geoop.models.GINO`.

    ``latent`` selects ``latent_features`` (channel first, ``(1, G, G, G)``):

    * ``"sdf"`` (default): the signed distance from each node to the reconstructed
      triangle surface, computed with :func:`geoop.geometry.sdf.sdf` (negative inside; the
      unsigned distance to the nearest vertex for a point cloud, ``faces=False``).
    * ``"distance"``: the stored ``distance`` field, as published. Caution: it is NOT the
      distance from ``query_points`` to the surface in the frame of ``vertices`` (its
      correlation with the distance to the nearest vertex is 0.09, 0.1 and 0.64 on the
      three cars, and it exceeds it several-fold); it was presumably computed in the
      original, unscaled car coordinates. ``closest_points`` are in the vertices' frame.
    * ``"none"``: no latent features.

    ``meta``: ``name``, ``latent_points`` (G, G, G, 3), ``latent_bounds``, ``distance``
    (the stored field, (G, G, G, 1)) and ``closest_points`` when present.
    ``queries`` is None (the input points are the queries).
    """
    from ..batch import Sample

    if latent not in LATENT_FEATURES:
        raise DatasetError(f"load_mini_car_samples: unknown latent={latent!r}; valid choices: {list(LATENT_FEATURES)}")
    p = Path(path) if path is not None else default_mini_car_path()
    recs = load_mini_car_records(p)
    out = []
    for i, r in enumerate(recs):
        g = _geometry(r, f"car_{i}", str(p), faces)
        grid = r["query_points"]
        shape = tuple(grid.shape[:3])
        meta = {
            "name": f"car_{i}",
            "latent_points": grid,
            "latent_bounds": (grid.reshape(-1, 3).min(0).values, grid.reshape(-1, 3).max(0).values),
            "distance": r["distance"],
        }
        if "closest_points" in r:
            meta["closest_points"] = r["closest_points"]
        if latent == "sdf":
            from ..geometry.sdf import sdf

            lf = sdf(g, grid.reshape(-1, 3), backend=sdf_backend).to(torch.float32).reshape(1, *shape)
        elif latent == "distance":
            lf = r["distance"].permute(3, 0, 1, 2).contiguous()
        else:
            lf = None
        out.append(Sample(geometry=g, latent_features=lf, meta=meta))
    return out
