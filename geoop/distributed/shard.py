r"""Split one geometry (or every sample of a batch) into spatially coherent rank shards.

Method: orthogonal recursive bisection (ORB), the classic domain decomposition of particle
codes. The points of a sample are cut at a quantile of their longest bounding-box axis into
two parts holding ``floor(W/2)/W`` and the rest of the points, and each part is cut again
for its share of the ``W`` ranks, until every rank has one part. Why ORB rather than a
space-filling curve: it works for any ``W`` (not only powers of two), the counts per rank
differ by at most a few points (the encoder's work per rank is balanced), and every shard is
an axis-aligned box, so a shard's radius balls touch only the latent nodes within
``radius`` of its box (compact halos; a Morton-curve segment can be several disconnected
pieces). The cut is deterministic (stable sort), so every rank computes the same split from
the same points without communicating.

Queries are split the same way (their own ORB): the latent grid is replicated on every rank,
so any split of the queries is exact; a spatial one keeps each rank's decoder and local
features on a compact region.

Shards keep the whole geometry's quadrature weights (a ``"weighted"`` encoder's sum over
the shards is then the sum over the geometry), the replicated ``latent_features``, and the
precomputed neighbourhoods restricted to the shard (edges whose source point is in the shard
for ``neighbors_in``; the shard's query rows for ``neighbors_out``). Cells are dropped (a
shard is a point set; weights were computed from the cells before the split).

A shard may be empty (fewer points than ranks, or a sample without queries); the domain
parallel model handles empty shards.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch
from torch import Tensor

from ..batch import GeometryBatch, Sample
from ..errors import ShapeError
from ..geometry.geometry import Geometry
from ..neighbors.neighborhoods import Neighborhoods

__all__ = ["orb_split", "shard_index", "shard"]


def orb_split(points: Tensor, world_size: int) -> list[Tensor]:
    """ORB of one point set (N, d) into ``world_size`` parts: a list of ascending (n_r,) long
    index tensors, disjoint, covering ``range(N)``; ``n_r`` within 1 of ``N * share``."""
    n = int(points.shape[0])
    out: list[Tensor] = []

    def rec(idx: Tensor, w: int) -> None:
        if w == 1:
            out.append(torch.sort(idx).values)
            return
        w1 = w // 2
        n1 = (idx.numel() * w1) // w
        if idx.numel() > 1:
            p = points[idx]
            axis = int(torch.argmax(p.max(0).values - p.min(0).values))
            order = torch.argsort(p[:, axis], stable=True)
            idx = idx[order]
        rec(idx[:n1], w1)
        rec(idx[n1:], w - w1)

    rec(torch.arange(n, device=points.device), int(world_size))
    return out


def _check_world(rank: Optional[int], world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ShapeError(f"shard: world_size must be an int >= 1, got {world_size!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size):
        raise ShapeError(f"shard: rank must be an int in [0, {world_size - 1}], got {rank!r}")


def shard_index(points: Tensor, world_size: int, ptr: Optional[Tensor] = None) -> list[Tensor]:
    """Indices (ascending, into ``points``) of every rank's shard: each sample
    ``points[ptr[b]:ptr[b+1]]`` (one sample when ``ptr`` is None) is split by :func:`orb_split`
    into ``world_size`` parts, and rank ``r`` gets part ``r`` of every sample."""
    _check_world(None, world_size)
    if points.dim() != 2:
        raise ShapeError(f"shard_index: points must be (N, d), got {tuple(points.shape)}")
    bounds = [0, int(points.shape[0])] if ptr is None else [int(v) for v in ptr.tolist()]
    parts: list[list[Tensor]] = [[] for _ in range(world_size)]
    for b in range(len(bounds) - 1):
        p0, p1 = bounds[b], bounds[b + 1]
        for r, idx in enumerate(orb_split(points[p0:p1], world_size)):
            parts[r].append(idx + p0)
    empty = torch.zeros(0, dtype=torch.long, device=points.device)
    return [torch.cat(p) if p else empty for p in parts]


def _rows(nb: Neighborhoods, rows: Tensor) -> Neighborhoods:
    """The CSR rows ``rows`` (ascending) of ``nb``, same source indices."""
    counts = nb.counts()[rows]
    starts = nb.ptr[:-1][rows]
    ptr = torch.zeros(rows.numel() + 1, dtype=torch.long, device=nb.ptr.device)
    ptr[1:] = torch.cumsum(counts, 0)
    e = int(ptr[-1])
    pos = torch.repeat_interleave(starts - ptr[:-1], counts, output_size=e) + torch.arange(e, device=ptr.device)
    return Neighborhoods(nb.index[pos], ptr, nb.num_sources, nb.radius)


def _sources(nb: Neighborhoods, keep: Tensor, n_total: int) -> Neighborhoods:
    """``nb`` restricted to the edges whose source is in ``keep`` (ascending indices into
    ``n_total`` sources), re-indexed into ``keep``."""
    inside = torch.zeros(n_total, dtype=torch.bool, device=nb.index.device)
    inside[keep] = True
    newpos = torch.full((n_total,), -1, dtype=torch.long, device=nb.index.device)
    newpos[keep] = torch.arange(keep.numel(), device=nb.index.device)
    m = inside[nb.index]
    rows = nb.query_index()[m]
    counts = torch.bincount(rows, minlength=nb.num_queries)
    ptr = torch.zeros(nb.num_queries + 1, dtype=torch.long, device=nb.index.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return Neighborhoods(newpos[nb.index[m]], ptr, int(keep.numel()), nb.radius)


def _select(g: Geometry, idx: Tensor) -> Geometry:
    return g.select(idx)  # keeps g.weights (computed on the whole geometry)


def shard(obj: Union[Geometry, Sample, GeometryBatch], rank: int, world_size: int):
    """Rank ``rank``'s shard of ``obj`` (see the module docstring).

    * ``Geometry``: the selected points (whole-geometry weights, normals, fields).
    * ``Sample``: input points and queries split independently (queries None: the input
      shard is the query shard too), latent features kept, neighbourhoods restricted.
    * ``GeometryBatch``: every sample split, B unchanged (a rank may hold 0 points or 0
      queries of a sample).
    """
    _check_world(rank, world_size)
    if isinstance(obj, Geometry):
        return _select(obj, shard_index(obj.points, world_size)[rank])
    if isinstance(obj, Sample):
        pidx = shard_index(obj.geometry.points, world_size)[rank]
        g = _select(obj.geometry, pidx)
        q, qidx = None, pidx
        if obj.queries is not None:
            qidx = shard_index(obj.queries.points, world_size)[rank]
            q = _select(obj.queries, qidx)
        nin = None if obj.neighbors_in is None else _sources(obj.neighbors_in, pidx, obj.geometry.n_points)
        nout = None if obj.neighbors_out is None else _rows(obj.neighbors_out, qidx)
        meta = {**obj.meta, "shard": (rank, world_size)}
        return dataclasses.replace(obj, geometry=g, queries=q, neighbors_in=nin, neighbors_out=nout, meta=meta)
    if isinstance(obj, GeometryBatch):
        return _shard_batch(obj, rank, world_size)
    raise ShapeError(f"shard: expected a Geometry, Sample or GeometryBatch, got {type(obj).__name__}")


def _counts_ptr(batch_ids: Tensor, num_samples: int) -> Tensor:
    ptr = torch.zeros(num_samples + 1, dtype=torch.long, device=batch_ids.device)
    ptr[1:] = torch.cumsum(torch.bincount(batch_ids, minlength=num_samples), 0)
    return ptr


def _shard_batch(b: GeometryBatch, rank: int, world_size: int) -> GeometryBatch:
    pidx = shard_index(b.points, world_size, b.ptr)[rank]
    qidx = shard_index(b.queries, world_size, b.query_ptr)[rank]
    B = b.num_samples

    def pick(t: Optional[Tensor], idx: Tensor) -> Optional[Tensor]:
        return None if t is None else t[idx]

    nin = None if b.neighbors_in is None else _sources(b.neighbors_in, pidx, int(b.points.shape[0]))
    nout = None if b.neighbors_out is None else _rows(b.neighbors_out, qidx)
    meta = [{**m, "shard": (rank, world_size)} for m in b.meta]
    return GeometryBatch(
        b.points[pidx],
        _counts_ptr(b.batch[pidx], B),
        weights=b.weights[pidx],
        normals=pick(b.normals, pidx),
        fields={k: v[pidx] for k, v in b.fields.items()},
        queries=b.queries[qidx],
        query_ptr=_counts_ptr(b.query_batch[qidx], B),
        query_fields={k: v[qidx] for k, v in b.query_fields.items()},
        query_weights=pick(b.query_weights, qidx),
        query_normals=pick(b.query_normals, qidx),
        latent_features=b.latent_features,
        neighbors_in=nin,
        neighbors_out=nout,
        meta=meta,
    )

