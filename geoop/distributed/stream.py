"""Streaming inference: a trained GINO at millions of query points with bounded memory,
in one process or across the ranks of a :class:`DomainParallel` group.

:func:`stream_query` encodes the geometry once (each rank its ORB shard of the input points;
the encoder sums are all-reduced), then answers the queries ``chunk_size`` at a time and
hands every answered chunk to ``write(q0, q1, values)`` (values ``(q1 - q0, out)``) on the
writing rank (group rank 0): nothing holds all the outputs but the caller's own output
arrays, which it fills in place (``geoop predict`` decodes each chunk to physical units
straight into one preallocated array per field, written to disk once).

Across ranks the queries are split into contiguous ranges (rank ``r`` answers
``[r Q / W, (r + 1) Q / W)``; the latent grid is replicated, so any split is exact and
contiguous ranges keep the writes sequential). In round ``k`` every rank answers its
``k``-th chunk and the chunks are gathered to group rank 0 (padded to ``chunk_size`` rows:
one ``gather`` per round), which writes them; ranks with fewer chunks send empty ones.
Memory per rank: the model, the latent, one chunk's decoder edges, and on rank 0
``W * chunk_size * out`` numbers of gathered chunks.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ShapeError
from ..geometry.geometry import Geometry
from ..models.gino import points_and_weights
from ..models.nested import NestedGINO
from .domain import DomainParallel
from .shard import shard_index

__all__ = ["stream_query"]


def stream_query(
    model,
    geometry: Union[Geometry, Tensor],
    points: Tensor,
    x: Optional[Tensor] = None,
    *,
    chunk_size: int = 65536,
    latent_features: Optional[Tensor] = None,
    write: Optional[Callable[[int, int, Tensor], None]] = None,
    progress: Optional[bool] = None,
    desc: str = "query",
) -> Optional[Tensor]:
    """Answer ``model`` (a GINO or a NestedGINO, or a :class:`DomainParallel` wrapping a GINO)
    at ``points``.

    Parameters
    ----------
    geometry : the WHOLE input geometry (every rank passes the same one; a DomainParallel
        model encodes this rank's ORB shard of it) or its (N, d) points (uniform weights 1/N)
    points : (Q, d) all query points (every rank passes the same ones)
    x : (N, in_channels) input features of the whole geometry, or None
    latent_features : (latent_channels, *grid) or None
    write : called on group rank 0 with ``(q0, q1, values (q1 - q0, out))`` for every chunk
        (in order of the rounds; ranges of different ranks interleave). Default: fill and
        return one preallocated (Q, out) tensor.
    progress : a tqdm bar over the queries on group rank 0 (None: when stderr is a TTY)

    Returns
    -------
    The (Q, out) tensor on the writing rank when ``write`` is None, else None (and None on
    the other ranks). Runs without gradients.
    """
    dp = model if isinstance(model, DomainParallel) else None
    m = dp.module if dp is not None else model
    q_all = torch.as_tensor(points)
    if q_all.dim() != 2 or q_all.shape[1] != m.coord_dim:
        raise ShapeError(f"stream_query: points must have shape (Q, {m.coord_dim}), got {tuple(q_all.shape)}")
    gpts, w = points_and_weights(geometry)
    rank, world = (dp.rank, dp.world_size) if dp is not None else (0, 1)
    Q, cs = int(q_all.shape[0]), max(1, int(chunk_size))
    result = None
    if write is None and rank == 0:
        result = torch.empty((Q, m.out_channels), dtype=next(m.parameters()).dtype)

        def write(q0: int, q1: int, v: Tensor) -> None:
            result[q0:q1] = v

    show = progress if progress is not None else sys.stderr.isatty()
    from tqdm.auto import tqdm

    bar = tqdm(total=Q, desc=desc, unit="pt", unit_scale=True, disable=not (show and rank == 0), leave=False)
    with torch.no_grad():
        if dp is not None:
            idx = shard_index(gpts, world)[rank]
            part = Geometry(gpts[idx], weights=w[idx], validate=False)
            latent, lp, lx = dp.encode_geometry(part, None if x is None else x[idx], latent_features)
        elif isinstance(m, NestedGINO):  # every level encoded once
            latents, boxes = m.encode_geometry(geometry, x, latent_features)
            lp, lx = gpts, x
        else:
            lf = None if latent_features is None else latent_features.unsqueeze(0)
            latent = m.encode(gpts, x, w, None, 1, None, lf)
            lp, lx = gpts, x
        lo, hi = rank * Q // world, (rank + 1) * Q // world
        rounds = -(-((Q + world - 1) // world) // cs)  # chunks of the largest range
        dst = (dist.get_global_rank(dp.group, 0) if dp.group is not None else 0) if dp is not None else 0
        C = m.out_channels
        try:
            for k in range(rounds):
                a, b = min(lo + k * cs, hi), min(lo + (k + 1) * cs, hi)
                if b <= a:
                    y = lp.new_zeros((0, C))
                elif isinstance(m, NestedGINO):
                    y = m.decode(latents, boxes, q_all[a:b].to(device=lp.device, dtype=latents[0].dtype), points=lp, x=lx)
                else:
                    y = m.decode(latent, q_all[a:b].to(device=lp.device, dtype=latent.dtype), points=lp, x=lx)
                if dp is None:
                    write(a, b, y)
                    bar.update(b - a)
                    continue
                # one gather per round, padded to cs rows; rank 0 knows every rank's range
                buf = latent.new_zeros((cs, C))
                buf[: b - a] = y
                bufs = [torch.empty_like(buf) for _ in range(world)] if rank == 0 else None
                dist.gather(buf, bufs, dst=dst, group=dp.group)
                if rank == 0:
                    for r in range(world):
                        r_lo, r_hi = r * Q // world, (r + 1) * Q // world
                        qa, qb = min(r_lo + k * cs, r_hi), min(r_lo + (k + 1) * cs, r_hi)
                        if qb > qa:
                            write(qa, qb, bufs[r][: qb - qa])
                            bar.update(qb - qa)
        finally:
            bar.close()
    return result
