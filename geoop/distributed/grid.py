"""The 2-D process grid ``data x domain`` for training with domain parallelism.

``W = data * domain`` ranks; global rank ``r = i * domain + j`` has data index ``i`` and
domain index ``j``. The ``domain`` consecutive ranks ``i * domain + (0..domain-1)`` share one
batch of whole samples, each holding a spatial shard of it (:class:`DomainParallel` over
their *domain group*); the ``data`` ranks ``(0..data-1) * domain + j`` see different samples
and average their gradients like DDP (their *data group*). Consecutive ranks form a domain
group because they share a machine under torchrun, where the domain group's per-layer
all-reduces are cheapest.

"Does not divide the work": ``W`` not a multiple of ``domain`` leaves a domain group short
of ranks; that is a :class:`ConfigError` (before any collective), never a silent regrouping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch.distributed as dist

from ..errors import ConfigError, DistributedError

__all__ = ["ProcessGrid", "grid_layout", "process_grid"]


@dataclass(frozen=True)
class ProcessGrid:
    """This rank's place in the grid and its two process groups (None when of size 1)."""

    rank: int
    world_size: int
    domain: int
    data: int
    domain_rank: int
    data_rank: int
    domain_group: Any = None
    data_group: Any = None


def grid_layout(world_size: int, domain: int, rank: int = 0) -> tuple[int, int, int]:
    """``(data, data_rank, domain_rank)`` of ``rank``; :class:`ConfigError` when ``domain``
    is not a positive int dividing ``world_size``."""
    if isinstance(domain, bool) or not isinstance(domain, int) or domain < 1:
        raise ConfigError(f"parallel.domain must be an integer >= 1, got {domain!r}")
    if world_size % domain:
        raise ConfigError(
            f"parallel.domain = {domain} does not divide the world size {world_size}: the {world_size} ranks "
            f"cannot form groups of {domain} (launch a multiple of {domain} processes, or change parallel.domain)"
        )
    return world_size // domain, rank // domain, rank % domain


def process_grid(domain: int, timeout=None) -> ProcessGrid:
    """Create the domain and data groups (a collective: every rank calls it, in the same
    order). One process (no process group) and ``domain == 1`` give the trivial grid."""
    if not (dist.is_available() and dist.is_initialized()):
        if domain != 1:
            raise DistributedError(
                f"parallel.domain = {domain} needs {domain} processes (launch with torchrun --nproc_per_node {domain}); "
                f"this is a single process without a process group"
            )
        return ProcessGrid(0, 1, 1, 1, 0, 0)
    world, rank = dist.get_world_size(), dist.get_rank()
    data, i, j = grid_layout(world, domain, rank)
    kw: dict = {} if timeout is None else {"timeout": timeout}
    dom_group: Optional[Any] = None
    data_group: Optional[Any] = None
    for k in range(data):  # every rank creates every group, in the same order
        g = dist.new_group(list(range(k * domain, (k + 1) * domain)), **kw)
        if k == i:
            dom_group = g
    for m in range(domain):
        g = dist.new_group(list(range(m, world, domain)), **kw)
        if m == j:
            data_group = g
    return ProcessGrid(rank, world, domain, data, j, i, dom_group, data_group)
