r"""Radius search from scattered points to a regular latent grid, without a tree.

The latent grid of a GINO has nodes :math:`x_i = lo + i\,h` per axis
(:math:`h = (hi - lo) / (n - 1)`). The nodes within :math:`r` of a point :math:`p` have, on
every axis, indices in :math:`[\lceil (p - r - lo)/h \rceil, \lfloor (p + r - lo)/h \rfloor]`,
a small index box. We enumerate those boxes (widened by a few ulps against rounding), then
apply the same float64 test as :func:`geoop.radius_search`
(:func:`geoop.neighbors.search.exact_filter`: ``sum_k (node_k - p_k)^2 <= r^2``, axes
summed in order) to the node coordinates of :func:`grid_points`, so the result equals
``radius_search(points, grid_points(...))`` exactly, edge for edge.

Shapes
------
points      : (N, d) float, d in {1, 2, 3}
point_batch : (N,) long, sorted sample of each point, or None (one sample)
grid        : G = prod(grid_shape) nodes, flattened in C order (last axis fastest), i.e. the
              order of ``latent.flatten(2)`` for a ``(B, C, *grid_shape)`` tensor
returns     : Neighborhoods over B*G queries (sample-major: query ``b*G + g``), indices into
              ``points``
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ShapeError
from .neighborhoods import Neighborhoods
from .search import DEFAULT_MAX_EDGES, _as_batch, _as_points, _check_radius, _too_large

__all__ = ["grid_points", "radius_search_grid"]

#: candidate (node, point) pairs enumerated per block of points (bounds the temporary memory)
CANDIDATES_PER_BLOCK = 1 << 21


def _check_grid(grid_shape, bounds, d: Optional[int] = None, dtype=torch.float32):
    shape = tuple(int(n) for n in grid_shape)
    if not 1 <= len(shape) <= 3 or any(n < 1 for n in shape):
        raise ShapeError(f"grid: grid_shape must have 1 to 3 positive sizes, got {tuple(grid_shape)}")
    if d is not None and len(shape) != d:
        raise ShapeError(f"grid: grid_shape has {len(shape)} axes but the points have d={d}")
    b = torch.as_tensor(bounds, dtype=torch.float64).cpu()
    if b.shape == (2 * len(shape),):
        b = b.reshape(2, len(shape))
    if b.shape != (2, len(shape)):
        raise ShapeError(
            f"grid: bounds must be (lower, upper) corners of shape (2, {len(shape)}), got {tuple(b.shape)}"
        )
    if not bool(torch.isfinite(b).all()) or bool((b[1] < b[0]).any()):
        raise ShapeError(f"grid: bounds must be finite with lower <= upper, got {b.tolist()}")
    return shape, b


def grid_points(grid_shape: Sequence[int], bounds, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Nodes of a regular grid, ``linspace(lo_k, hi_k, n_k)`` on each axis (end points
    included), flattened in C order (``meshgrid(indexing="ij")``, last axis fastest).

    Parameters
    ----------
    grid_shape : (n_0, ..., n_{d-1}), d in {1, 2, 3}
    bounds : (lower (d,), upper (d,)) corners, e.g. ``Geometry.bounds`` or ``[[0]*3, [1]*3]``

    Returns
    -------
    (G, d) tensor, G = prod(grid_shape), row ``g`` is the node of multi-index
    ``np.unravel_index(g, grid_shape)``.
    """
    shape, b = _check_grid(grid_shape, bounds)
    axes = [torch.linspace(float(b[0, k]), float(b[1, k]), n, dtype=torch.float64) for k, n in enumerate(shape)]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, -1).reshape(-1, len(shape)).to(dtype=dtype, device=device)


def radius_search_grid(
    points,
    grid_shape: Sequence[int],
    bounds,
    radius: float,
    point_batch=None,
    num_batches: Optional[int] = None,
    max_neighbors: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    max_edges: int = DEFAULT_MAX_EDGES,
    chunk_points: int = 1 << 16,
    point_major: bool = False,
) -> Neighborhoods:
    """For every node of the latent grid of every sample, the points within ``radius``.

    ``point_major=True`` returns the transpose instead, the same pairs the other way round
    (what a decoder needs: for every point, the nodes of its own sample's grid within
    ``radius``): Neighborhoods over the N points with indices into the B*G nodes, sorted
    within each point. The pairs are produced point by point, so this needs no sort: O(E).

    Equal to ``radius_search(points, grid, radius, point_batch, grid_batch)`` where ``grid`` is
    ``grid_points(grid_shape, bounds, points.dtype)`` repeated for each of the B samples and
    ``grid_batch = [0]*G + [1]*G + ...``, but without a tree: cost O(N * box) where ``box`` is
    the number of nodes in the index box of a ball.

    Parameters
    ----------
    points : (N, d) float, the sources
    grid_shape, bounds : the latent grid (see :func:`grid_points`), same for every sample
    radius : finite, >= 0
    point_batch : (N,) sorted sample ids, or None (one sample)
    num_batches : B; default ``point_batch.max() + 1`` (give it when trailing samples have
        no points)
    max_neighbors, generator : optional random cap per node, as in :func:`geoop.radius_search`
    chunk_points : at most this many points per block; blocks are also sized to hold about
        :data:`CANDIDATES_PER_BLOCK` candidate pairs, which bounds the temporary memory

    Returns
    -------
    Neighborhoods over B*G queries (query ``b*G + g``), indices into ``points``, sorted
    within each query, on the points' device.
    """
    pts = _as_points(points, "points")
    device = pts.device
    N, d = pts.shape
    shape, b = _check_grid(grid_shape, bounds, d)
    r = _check_radius(radius)
    if point_batch is not None:
        pb = _as_batch(point_batch, N, "point_batch", device)
        B = int(pb.max()) + 1 if N else 1
    else:
        pb, B = None, 1
    if num_batches is not None:
        if int(num_batches) < B:
            raise ShapeError(f"radius_search_grid: num_batches={num_batches} but point_batch has samples up to {B - 1}")
        B = int(num_batches)
    G = math.prod(shape)
    # per-axis node coordinates, rounded to the points' dtype exactly as grid_points() rounds
    # them, then compared in float64 with the rule of exact_filter: (node - point)^2 summed
    axes = [
        torch.linspace(float(b[0, k]), float(b[1, k]), n, dtype=torch.float64).to(pts.dtype).double().numpy()
        for k, n in enumerate(shape)
    ]
    lo = b[0].numpy()
    # node spacing; an axis with one node, or zero extent, puts all its nodes at lo: its
    # index range is then simply all of them
    span = (b[1] - b[0]).numpy()
    flat = np.array([n == 1 or span[k] == 0 for k, n in enumerate(shape)])
    h = np.where(flat, 1.0, span / np.maximum(np.array(shape) - 1, 1))
    strides = np.array([math.prod(shape[k + 1 :]) for k in range(d)], dtype=np.int64)
    n_arr = np.array(shape, dtype=np.int64)

    p_np = pts.detach().to(torch.float64).cpu().numpy()
    pb_np = pb.cpu().numpy() if pb is not None else np.zeros(N, dtype=np.int64)
    # slack of the index box: rounding of the nodes to the points' dtype and of the division
    eps = torch.finfo(pts.dtype).eps
    extent = float(np.abs(b.numpy()).max()) + (float(np.abs(p_np).max()) if N else 0.0) + r
    delta = 64.0 * eps * extent
    r2 = r * r
    # points per block: at most chunk_points, and about 2M candidate (node, point) pairs
    box = float(np.prod(np.where(flat, n_arr, np.minimum(n_arr, 2 * (r + delta) / h + 2))))
    step = max(1, min(int(chunk_points), int(CANDIDATES_PER_BLOCK / max(box, 1.0))))
    keys, total = [], 0
    for a in range(0, N, step):
        p = p_np[a : a + step]
        i_lo = np.where(flat, 0, np.ceil((p - (r + delta) - lo) / h))
        i_hi = np.where(flat, n_arr - 1, np.floor((p + (r + delta) - lo) / h))
        i_lo = np.clip(i_lo, 0, n_arr).astype(np.int64)
        i_hi = np.clip(i_hi, -1, n_arr - 1).astype(np.int64)
        ext = np.maximum(i_hi - i_lo + 1, 0)
        size = ext.prod(1)
        total_c = int(size.sum())
        if total_c == 0:
            continue
        owner = np.repeat(np.arange(p.shape[0], dtype=np.int64), size)
        j = np.arange(total_c, dtype=np.int64) - np.repeat(np.cumsum(size) - size, size)  # slot in the box
        g = np.zeros(total_c, dtype=np.int64)
        sq = [None] * d
        for k in range(d - 1, -1, -1):  # unravel the slot, last axis fastest
            e_k = ext[owner, k]
            i_k = i_lo[owner, k] + j % e_k
            j //= e_k
            g += i_k * strides[k]
            diff = axes[k][i_k] - p[owner, k]
            sq[k] = diff * diff
        d2 = np.zeros(total_c, dtype=np.float64)
        for k in range(d):  # same summation order as exact_filter
            d2 += sq[k]
        keep = d2 <= r2
        ow = owner[keep]
        if point_major:  # owners ascending, nodes ascending within an owner (C-order slots)
            keys.append((pb_np[a + ow] * G + g[keep], ow + a))
            total += ow.size
        else:
            keys.append(((pb_np[a + ow] * G + g[keep]) * N) + (ow + a))
            total += keys[-1].size
        if total > max_edges and max_neighbors is None:
            raise _too_large("found at least", total, max_edges, f" (after {a + p.shape[0]} of {N} points)")
    if point_major:
        if max_neighbors is not None:
            raise ShapeError("radius_search_grid: max_neighbors is not supported with point_major=True")
        node = np.concatenate([k[0] for k in keys]) if keys else np.zeros(0, dtype=np.int64)
        owner_all = np.concatenate([k[1] for k in keys]) if keys else np.zeros(0, dtype=np.int64)
        counts = torch.from_numpy(np.bincount(owner_all, minlength=N)).to(device)
        ptr = torch.zeros(N + 1, dtype=torch.long, device=device)
        torch.cumsum(counts, 0, out=ptr[1:])
        return Neighborhoods(torch.from_numpy(node).to(device), ptr, num_sources=B * G, radius=r)
    key = np.sort(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.int64)
    q = key // max(N, 1)
    index = torch.from_numpy(key - q * N).to(device)
    counts = torch.from_numpy(np.bincount(q, minlength=B * G)).to(device)
    ptr = torch.zeros(B * G + 1, dtype=torch.long, device=device)
    torch.cumsum(counts, 0, out=ptr[1:])
    nb = Neighborhoods(index, ptr, num_sources=N, radius=r)
    if max_neighbors is not None:
        nb = nb.subsample(int(max_neighbors), generator)
        if nb.num_edges > max_edges:
            raise _too_large("found", nb.num_edges, max_edges)
    return nb
