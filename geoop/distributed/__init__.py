"""Scaling one geometry across processes: domain parallelism over ``torch.distributed``.

* :class:`DomainParallel` — a GINO whose input points and queries are split across the ranks
  of a process group; encoder sums all-reduced exactly, latent blocks replicated, each rank
  decodes its own queries (:mod:`geoop.distributed.domain`).
* :func:`shard` / :func:`shard_index` — spatially coherent rank shards of a Geometry, Sample
  or GeometryBatch (orthogonal recursive bisection, :mod:`geoop.distributed.shard`).
* :func:`process_grid` — the data x domain 2-D process grid (:mod:`geoop.distributed.grid`).

Layering: above ``geoop.models`` (it wraps a GINO), below ``geoop.train`` / ``geoop.cli``.
DDP helpers for splitting *cases* across ranks stay in :mod:`geoop.train.distributed`.
"""
from .domain import DomainParallel, all_gather_rows, all_reduce_sum, parameter_checksums
from .grid import ProcessGrid, grid_layout, process_grid
from .shard import orb_split, shard, shard_index
from .stream import stream_query

__all__ = ["DomainParallel", "ProcessGrid", "all_gather_rows", "all_reduce_sum", "grid_layout", "orb_split", "parameter_checksums",
           "process_grid", "shard", "shard_index", "stream_query"]
