"""torch.distributed set-up for ``torchrun`` (DDP), and single-process fallback.

``torchrun --nproc_per_node N -m geoop train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
initialises the default process group with ``gloo`` on CPU and ``nccl`` on CUDA. Without
them (a plain ``geoop train``) it returns a single-process :class:`DistInfo` and starts nothing.

Conventions: ``batch_size`` in the config is per process; the DDP gradient is the mean over
ranks of each rank's mean loss, i.e. the gradient of the mean loss over the global batch of
``world_size * batch_size`` samples. Only rank 0 writes files; metrics are all-reduced.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.distributed as dist

from ..errors import ConfigError

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_reduce_sums", "barrier", "resolve_backend"]

_BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of the current run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None
    initialized_here: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """``None``/``"auto"`` -> ``nccl`` for CUDA, ``gloo`` otherwise; others must be valid."""
    if backend in (None, "auto"):
        return "nccl" if device.type == "cuda" else "gloo"
    if backend not in _BACKENDS:
        raise ConfigError(f"distributed backend {backend!r} is unknown; valid: {['auto', *_BACKENDS]}")
    return backend


def init_distributed(device: Optional[torch.device] = None, backend: Optional[str] = None, env: Optional[Mapping[str, str]] = None, timeout_s: float = 600.0) -> DistInfo:
    """Initialise the process group from torchrun's environment variables.

    Returns a single-process :class:`DistInfo` when ``WORLD_SIZE`` is absent or 1. When a
    process group already exists (e.g. created by the caller), it is reused.
    """
    env = os.environ if env is None else env
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(env.get("LOCAL_RANK", 0)), dist.get_backend())
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but the torchrun variables {missing} are not set")
    device = torch.device("cpu") if device is None else torch.device(device)
    be = resolve_backend(backend, device)
    rank = int(env["RANK"])
    local = int(env.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(be, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local, be, initialized_here=True)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.is_distributed and dist.is_initialized():
        dist.barrier()


def all_reduce_sums(values: Mapping[str, float], info: DistInfo, device=None) -> dict:
    """Sum float values over ranks (one all-reduce for the whole dict, sorted keys)."""
    keys = sorted(values)
    if not info.is_distributed or not keys:
        return {k: float(values[k]) for k in keys}
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) for k, v in zip(keys, t.tolist())}
