"""Polyhedral cells (``VTK_POLYHEDRON``, type 42) as ragged face lists, and exact cell
volumes and centroids of any 3-D cell by the divergence theorem over its faces.

Storage
-------
A :class:`Geometry` keeps its polyhedra apart from the fixed-size ``cells`` (a polyhedron has
no fixed node count), in ``Geometry.polyhedra``, a :class:`Polyhedra`:

* ``face_points`` (P,) long: the point ids of every face, face after face;
* ``face_offsets`` (F + 1,) long: face ``f`` is ``face_points[face_offsets[f]:face_offsets[f + 1]]``;
* ``cell_offsets`` (M + 1,) long: cell ``i`` has the faces ``cell_offsets[i]:cell_offsets[i + 1]``.

Each cell lists its own faces (a face between two polyhedra is stored once per cell, as VTK's
legacy face stream does), all oriented the same way about the cell (VTK: outward). Cell data
rows of the polyhedra come after those of all ``cells`` (the ``cell_fields`` order).

Measures
--------
Every face with vertices :math:`x_0 .. x_{n-1}` is triangulated about its vertex mean
:math:`c_f` (exact for planar faces; for a non-planar face it defines the surface). With a
reference point :math:`a` per cell (its vertex mean), the signed volume and first moment are

.. math:: V = \\sum_f \\sum_i v_{f,i},\\qquad v_{f,i} = \\tfrac16 (x_i - a)\\cdot\\big((x_{i+1} - a)\\times(c_f - a)\\big),

.. math:: \\bar x = \\frac1V \\sum_f \\sum_i v_{f,i}\\, \\frac{a + x_i + x_{i+1} + c_f}{4}

(the divergence theorem over the triangulated boundary: exact, also for non-convex cells).
The same formula serves hexahedra, wedges and pyramids through their VTK face lists, so a
face shared by a polyhedron and a hexahedron is triangulated the same way on both sides and the
cell volumes of a mesh add up to the volume its boundary encloses.

Shapes
------
points : (N, 3) ; volumes : (M,) ; centroids : (M, 3)
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeError

__all__ = ["Polyhedra", "CELL_FACES", "face_volumes", "cell_faces"]

#: outward faces of the fixed 3-D cell types in VTK node order
CELL_FACES = {
    "tetra": [[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]],
    "pyramid": [[0, 3, 2, 1], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]],
    "wedge": [[0, 1, 2], [3, 5, 4], [0, 3, 4, 1], [1, 4, 5, 2], [2, 5, 3, 0]],
    "hexahedron": [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]],
}


def _long(x) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if torch.is_floating_point(t):
        raise ShapeError(f"polyhedra: expected integer arrays, got {t.dtype}")
    return t.long().reshape(-1)


class Polyhedra:
    """Ragged polyhedral cells (see the module docstring for the layout).

    Parameters
    ----------
    face_points : (P,) point ids of all faces, face after face
    face_offsets : (F + 1,) start of each face in ``face_points`` (first 0, last P)
    cell_offsets : (M + 1,) start of each cell in the face list (first 0, last F)
    """

    def __init__(self, face_points, face_offsets, cell_offsets):
        self.face_points = _long(face_points)
        self.face_offsets = _long(face_offsets)
        self.cell_offsets = _long(cell_offsets)
        self._cell_points = None
        for name, off, total in (("face_offsets", self.face_offsets, self.face_points.numel()),
                                 ("cell_offsets", self.cell_offsets, None)):
            if off.numel() == 0 or int(off[0]) != 0 or (off.numel() > 1 and bool((off[1:] < off[:-1]).any())):
                raise ShapeError(f"polyhedra: {name} must start at 0 and never decrease")
            if total is not None and int(off[-1]) != total:
                raise ShapeError(f"polyhedra: face_offsets must end at the number of face points {total}, "
                                 f"got {int(off[-1])}")
        if int(self.cell_offsets[-1]) != self.n_faces:
            raise ShapeError(f"polyhedra: cell_offsets must end at the number of faces {self.n_faces}, "
                             f"got {int(self.cell_offsets[-1])}")

    # ------------------------------------------------------------------ basics
    @property
    def n_cells(self) -> int:
        return int(self.cell_offsets.numel() - 1)

    @property
    def n_faces(self) -> int:
        return int(self.face_offsets.numel() - 1)

    @property
    def device(self) -> torch.device:
        return self.face_points.device

    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return f"Polyhedra(cells={self.n_cells}, faces={self.n_faces}, face_points={self.face_points.numel()})"

    def to(self, device=None) -> "Polyhedra":
        return Polyhedra(self.face_points.to(device), self.face_offsets.to(device), self.cell_offsets.to(device))

    def face_sizes(self) -> Tensor:
        """(F,) number of points of each face."""
        return self.face_offsets[1:] - self.face_offsets[:-1]

    def cell_sizes(self) -> Tensor:
        """(M,) number of faces of each cell."""
        return self.cell_offsets[1:] - self.cell_offsets[:-1]

    def face_cell(self) -> Tensor:
        """(F,) the cell of each face."""
        return torch.repeat_interleave(torch.arange(self.n_cells, device=self.device), self.cell_sizes())

    def point_cell(self) -> Tensor:
        """(P,) the cell of each entry of ``face_points``."""
        return torch.repeat_interleave(self.face_cell(), self.face_sizes())

    def cell_points(self) -> tuple[Tensor, Tensor]:
        """The distinct points of each cell as ``(cell, point)`` pairs, each (K,), sorted by
        cell then point id (computed once per object)."""
        if self._cell_points is None:
            pc = self.point_cell()
            n = int(self.face_points.max()) + 1 if self.face_points.numel() else 1
            key = torch.unique(pc * n + self.face_points)
            self._cell_points = (key // n, key % n)
        return self._cell_points

    def cell_point_lists(self) -> list:
        """The distinct point ids of each cell, as a list of (k_i,) numpy arrays."""
        c, p = self.cell_points()
        c, p = c.cpu().numpy(), p.cpu().numpy()
        return np.split(p, np.searchsorted(c, np.arange(1, self.n_cells)))

    def remap(self, new_id: Tensor) -> "Polyhedra":
        """Point ids mapped through ``new_id`` (N,) (renumbering after points are dropped)."""
        return Polyhedra(new_id[self.face_points], self.face_offsets, self.cell_offsets)

    def subset(self, keep: Tensor) -> "Polyhedra":
        """The cells where ``keep`` (M,) bool is true."""
        keep = torch.as_tensor(keep, dtype=torch.bool, device=self.device)
        fkeep = keep[self.face_cell()]
        pkeep = torch.repeat_interleave(fkeep, self.face_sizes())
        nf = self.cell_sizes()[keep]
        fs = self.face_sizes()[fkeep]
        zero = torch.zeros(1, dtype=torch.long, device=self.device)
        return Polyhedra(self.face_points[pkeep], torch.cat([zero, fs.cumsum(0)]), torch.cat([zero, nf.cumsum(0)]))

    @staticmethod
    def concatenate(parts: list, point_offsets: list) -> "Polyhedra":
        """One :class:`Polyhedra` from several, the point ids of part ``j`` shifted by
        ``point_offsets[j]``."""
        fp, fo, co = [], [torch.zeros(1, dtype=torch.long)], [torch.zeros(1, dtype=torch.long)]
        nfp = nf = 0
        for p, off in zip(parts, point_offsets):
            fp.append(p.face_points.cpu() + int(off))
            fo.append(p.face_offsets[1:].cpu() + nfp)
            co.append(p.cell_offsets[1:].cpu() + nf)
            nfp += p.face_points.numel()
            nf += p.n_faces
        return Polyhedra(torch.cat(fp) if fp else torch.zeros(0, dtype=torch.long), torch.cat(fo), torch.cat(co))

    # ------------------------------------------------------------------ checks
    def check(self, n_points: int, where: str = "") -> None:
        """Raise :class:`ShapeError` naming the first bad cell unless every face has at
        least 3 points in ``[0, n_points)``, every cell at least 4 faces, and every cell's
        boundary is closed and consistently oriented: each edge used by the cell's faces is
        walked once in each direction."""
        fp = self.face_points
        if fp.numel() and (int(fp.min()) < 0 or int(fp.max()) >= n_points):
            bad = int(self.point_cell()[(fp < 0) | (fp >= n_points)][0])
            raise ShapeError(f"{where}polyhedron cell {bad}: point ids must be in [0, {n_points - 1}], got range "
                             f"[{int(fp.min())}, {int(fp.max())}]")
        fs = self.face_sizes()
        if bool((fs < 3).any()):
            f = int((fs < 3).nonzero()[0, 0])
            raise ShapeError(f"{where}polyhedron cell {int(self.face_cell()[f])}: face {f} has {int(fs[f])} points, "
                             "expected at least 3")
        nf = self.cell_sizes()
        if bool((nf < 4).any()):
            c = int((nf < 4).nonzero()[0, 0])
            raise ShapeError(f"{where}polyhedron cell {c}: {int(nf[c])} faces, expected at least 4 (a closed cell)")
        a, b, cell = self._edges()
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        fwd = (a < b).long()
        uniq, inv = torch.unique(torch.stack([cell, lo, hi], 1), dim=0, return_inverse=True)
        n_f = torch.zeros(uniq.shape[0], dtype=torch.long, device=fp.device).index_add_(0, inv, fwd)
        n_b = torch.zeros(uniq.shape[0], dtype=torch.long, device=fp.device).index_add_(0, inv, 1 - fwd)
        open_ = (n_f + n_b) == 1
        flipped = (n_f != n_b) & ~open_
        for bad, what in ((open_, "is open: edge ({}, {}) belongs to one face only"),
                          (flipped, "has inconsistently oriented faces: edge ({}, {}) is walked {} times "
                                    "one way and {} times the other (each edge must be walked once each way)")):
            if bool(bad.any()):
                i = int(bad.nonzero()[0, 0])
                c, p, q = (int(v) for v in uniq[i])
                raise ShapeError(f"{where}polyhedron cell {c} " + what.format(p, q, int(n_f[i]), int(n_b[i])))

    def _edges(self) -> tuple[Tensor, Tensor, Tensor]:
        """Directed face edges ``(a, b, cell)``, each (P,): face point i to point i + 1 (cyclic)."""
        fp = self.face_points
        return fp, fp[_next_in_face(self.face_offsets, fp.numel())], self.point_cell()

    # ------------------------------------------------------------------ measures
    def volumes_centroids(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Exact volumes (M,) and centroids (M, 3) (module docstring), computed in float64
        and returned in the dtype of ``points``. Volumes are the absolute values of the
        signed volume, so cells oriented all inward measure the same as outward ones."""
        return face_volumes(points, self.face_points, self.face_offsets, self.face_cell(), self.n_cells)


def _next_in_face(face_offsets: Tensor, n: int) -> Tensor:
    """(P,) the position of the next point of the same face (cyclic: the last point's next is
    the face's first) for each of the ``n`` entries of a ragged ``face_points``."""
    nxt = torch.arange(1, n + 1, device=face_offsets.device)
    nxt[face_offsets[1:] - 1] = face_offsets[:-1]
    return nxt


def face_volumes(points: Tensor, face_points: Tensor, face_offsets: Tensor, face_cell: Tensor,
                 n_cells: int) -> tuple[Tensor, Tensor]:
    """Volumes (M,) and centroids (M, 3) of cells given as ragged face lists (see the module
    docstring): ``face_points`` (P,), ``face_offsets`` (F + 1,), ``face_cell`` (F,)."""
    p = points.to(torch.float64)
    if p.shape[1] == 2:
        p = torch.cat([p, p.new_zeros(p.shape[0], 1)], 1)
    dev = p.device
    fp, fo, fc = face_points.to(dev), face_offsets.to(dev), face_cell.to(dev)
    sizes = fo[1:] - fo[:-1]
    pf = torch.repeat_interleave(torch.arange(sizes.numel(), device=dev), sizes)  # face of each face point
    x = p[fp]
    cf = torch.zeros(sizes.numel(), 3, dtype=p.dtype, device=dev).index_add_(0, pf, x) / sizes[:, None].clamp_min(1)
    pc = fc[pf]
    # cell reference point: mean of its face points (any point gives the same exact result)
    cnt = torch.zeros(n_cells, dtype=p.dtype, device=dev).index_add_(0, pc, torch.ones_like(pc, dtype=p.dtype))
    a = torch.zeros(n_cells, 3, dtype=p.dtype, device=dev).index_add_(0, pc, x) / cnt[:, None].clamp_min(1)
    ap = a[pc]
    xi, xj, c = x - ap, p[fp[_next_in_face(fo, fp.numel())]] - ap, cf[pf] - ap
    v = torch.einsum("ij,ij->i", xi, torch.linalg.cross(xj, c)) / 6.0
    vol = torch.zeros(n_cells, dtype=p.dtype, device=dev).index_add_(0, pc, v)
    mom = torch.zeros(n_cells, 3, dtype=p.dtype, device=dev).index_add_(0, pc, v[:, None] * (xi + xj + c) / 4.0)
    cen = a + mom / torch.where(vol == 0, torch.ones_like(vol), vol)[:, None]
    return vol.abs().to(points.dtype), cen.to(points.dtype)


def cell_faces(ctype: str, cells: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The faces of fixed-size 3-D cells (M, k) as ragged lists ``(face_points, face_offsets,
    face_cell)`` (:data:`CELL_FACES`), for :func:`face_volumes`."""
    faces = CELL_FACES[ctype]
    m = cells.shape[0]
    fp = torch.cat([cells[:, f] for f in faces], 1).reshape(-1)  # cell after cell
    sizes = torch.tensor([len(f) for f in faces], device=cells.device).repeat(m)
    zero = torch.zeros(1, dtype=torch.long, device=cells.device)
    fc = torch.arange(m, device=cells.device).repeat_interleave(len(faces))
    return fp, torch.cat([zero, sizes.cumsum(0)]), fc


def fixed_volumes_centroids(points: Tensor, ctype: str, cells: Tensor) -> tuple[Tensor, Tensor]:
    """Volumes (M,) and centroids (M, 3) of hexahedra, wedges, pyramids or tetrahedra by
    :func:`face_volumes` over their :data:`CELL_FACES`."""
    vols, cens = [], []
    for start in range(0, max(cells.shape[0], 1), _CHUNK):  # bounded memory on large meshes
        c = cells[start:start + _CHUNK]
        fp, fo, fc = cell_faces(ctype, c)
        v, x = face_volumes(points, fp, fo, fc, c.shape[0])
        vols.append(v)
        cens.append(x)
    return torch.cat(vols), torch.cat(cens)


_CHUNK = 1 << 17


def from_vtk_layout(face_conn: np.ndarray, face_offs: np.ndarray, loc_conn: np.ndarray, loc_offs: np.ndarray,
                    cells: Optional[np.ndarray] = None) -> Polyhedra:
    """A :class:`Polyhedra` from VTK's (>= 9.4) polyhedron layout: faces as a cell array
    (``face_conn``, ``face_offs``), each cell's face ids as another (``loc_conn``,
    ``loc_offs``); ``cells`` selects the rows of the polyhedral cells (default: all)."""
    loc_offs = np.asarray(loc_offs, np.int64)
    if cells is None:
        cells = np.arange(loc_offs.size - 1)
    starts, stops = loc_offs[cells], loc_offs[cells + 1]
    nf = stops - starts
    fids = np.asarray(loc_conn, np.int64)[np.repeat(starts, nf) + _ragged_arange(nf)]
    face_offs = np.asarray(face_offs, np.int64)
    fs = face_offs[fids + 1] - face_offs[fids]
    fp = np.asarray(face_conn, np.int64)[np.repeat(face_offs[fids], fs) + _ragged_arange(fs)]
    return Polyhedra(fp, np.concatenate([[0], np.cumsum(fs)]), np.concatenate([[0], np.cumsum(nf)]))


def _ragged_arange(sizes: np.ndarray) -> np.ndarray:
    """0..s_0-1, 0..s_1-1, ... concatenated."""
    sizes = np.asarray(sizes, np.int64)
    if sizes.size == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(sizes)
    return np.arange(ends[-1]) - np.repeat(ends - sizes, sizes)
