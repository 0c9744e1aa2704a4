r"""Fully sharded data parallelism: parameters, gradients and optimizer state split over ranks.

With ``W`` data-parallel ranks, :func:`shard_model` applies PyTorch's FSDP2
(``torch.distributed.fsdp.fully_shard``) to the model: every parameter tensor becomes a
``DTensor`` sharded on its first axis (row block ``r`` of ``ceil(n_0 / W)`` rows on rank ``r``,
the last block padded), and so are its gradient and its AdamW moments. Per step and *unit*
(a group of modules whose parameters are gathered together)::

    forward   all-gather the unit's shards -> full parameters -> run -> free them
    backward  all-gather again -> gradients -> reduce-scatter (mean over ranks) -> free
    optimizer each rank updates its own rows (AdamW is elementwise: exact)

so the gradient every rank applies is the mean over ranks of their mini-batch gradients:
the same update as DDP and as one process on the ``W``-times larger batch. Memory per rank
for parameters + gradients + the two Adam moments: ``4 P / W`` numbers instead of ``4 P``,
plus the largest unit's full parameters while it runs.

Units (:func:`fsdp_units`): for a GINO each latent block (FNO/SFNO layer), the encoder GNO,
the decoder GNO, the local GNO, the lifting and the projection, then the root (its buffers).
The GNO's chunked recomputation (a custom autograd function that re-reads the edge MLP's
parameters in backward) runs inside its unit's backward, when FSDP has gathered them again.

With domain parallelism (``domain = D``, :mod:`geoop.distributed.grid`) the mesh is 2-D
``(domain, data)`` (HSDP): parameters are sharded over the ``W / D`` data ranks and
replicated over the ``D`` ranks of a domain group, which hold the same shard. FSDP then
*averages* gradients over the whole mesh; each rank of a domain group computes the whole
batch's loss ``L``, so its gradient is its part of ``∇(D L)`` and the mean over the group is
``∇L`` (no ``1 / D`` loss scaling and no separate gradient sum, unlike DDP + domain).

Checkpoints (:func:`full_state`, :func:`load_full_state`) are the same single file as without
FSDP: the full model and optimizer states are gathered on rank 0 (``torch.distributed.
checkpoint.state_dict`` with ``full_state_dict=True, cpu_offload=True``) and the optimizer's
parameter names are turned back into the integer ids of ``optimizer.state_dict()``, so a run
saved on ``W`` ranks resumes on any number of ranks, with or without FSDP.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..errors import CheckpointError, ConfigError

__all__ = ["fsdp_mesh", "fsdp_units", "shard_model", "full_state", "load_full_state", "optimizer_by_index",
           "optimizer_by_name", "local_bytes"]

#: GINO methods that DomainParallel calls in place of ``forward``
_DOMAIN_METHODS = ("encode_partial", "encode_finish", "decode")


def fsdp_mesh(world_size: int, domain: int = 1, device_type: str = "cpu"):
    """The device mesh FSDP shards over: 1-D over the ``world_size`` ranks, or with
    ``domain > 1`` the 2-D ``(domain, data)`` mesh whose ``domain`` axis holds the domain groups
    of :func:`geoop.distributed.process_grid` (ranks ``i * domain + j``, ``j`` varying) and whose
    ``data`` axis the data groups. A collective: every rank calls it.

    Raises
    ------
    ConfigError
        ``domain`` does not divide ``world_size`` (names ``parallel.domain`` and ``parallel.fsdp``).
    """
    from torch.distributed.device_mesh import DeviceMesh

    if domain < 1 or world_size % domain:
        raise ConfigError(f"parallel.fsdp = true with parallel.domain = {domain}: the domain size does not divide the "
                          f"world size {world_size} (FSDP shards over world_size / domain data ranks)")
    data = world_size // domain
    if domain == 1:
        return DeviceMesh(device_type, torch.arange(world_size), mesh_dim_names=("data",))
    grid = torch.arange(world_size).reshape(data, domain).T.contiguous()  # grid[j, i] = i * domain + j
    return DeviceMesh(device_type, grid, mesh_dim_names=("domain", "data"))


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded as units, innermost first (the root is not included): for a GINO
    (anything with ``blocks.blocks``, ``gno_in``...) every latent block, ``gno_in``,
    ``gno_out``, ``gno_local``, ``lifting`` and ``projection``; for another model every direct
    child that holds parameters."""
    units: list[nn.Module] = []
    blocks = getattr(getattr(model, "blocks", None), "blocks", None)
    if isinstance(blocks, nn.ModuleList) and hasattr(model, "gno_in"):
        units += list(blocks)
        for name in ("gno_in", "gno_out", "gno_local", "lifting", "projection"):
            m = getattr(model, name, None)
            if isinstance(m, nn.Module) and any(True for _ in m.parameters()):
                units.append(m)
        return units
    return [m for m in model.children() if any(True for _ in m.parameters())]


def shard_model(model: nn.Module, mesh, domain_methods: bool = False) -> nn.Module:
    """Apply ``fully_shard`` to every unit of :func:`fsdp_units` and then to ``model`` (in
    place; the model's class becomes an ``FSDPModule`` subclass). ``domain_methods``:
    also treat the GINO methods DomainParallel calls (``encode_partial``, ``encode_finish``,
    ``decode``) as forward passes of the root."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for unit in fsdp_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    if domain_methods:
        for name in _DOMAIN_METHODS:
            register_fsdp_forward_method(model, name)
    return model


def _names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def optimizer_by_index(model: nn.Module, osd: Mapping) -> dict:
    """An optimizer state keyed by parameter names (``get_optimizer_state_dict``) -> keyed by
    the integer ids of ``optimizer.state_dict()`` (position in ``model.parameters()``)."""
    index = {n: i for i, n in enumerate(_names(model))}
    try:
        state = {index[k]: v for k, v in osd["state"].items()}
        groups = [{**g, "params": [index[p] for p in g["params"]]} for g in osd["param_groups"]]
    except KeyError as e:
        raise CheckpointError(f"optimizer state names parameter {e} that the model does not have") from None
    return {"state": state, "param_groups": groups}


def optimizer_by_name(model: nn.Module, osd: Mapping) -> dict:
    """The inverse of :func:`optimizer_by_index`."""
    names = _names(model)
    try:
        state = {names[int(k)]: v for k, v in osd["state"].items()}
        groups = [{**g, "params": [names[int(p)] for p in g["params"]]} for g in osd["param_groups"]]
    except IndexError:
        raise CheckpointError(f"optimizer state has parameter ids beyond the model's {len(names)} parameters") from None
    return {"state": state, "param_groups": groups}


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """``(model_state, optimizer_state)`` of the whole sharded model, gathered on rank 0 in the
    layout of a plain ``model.state_dict()`` / ``optimizer.state_dict()`` (CPU tensors);
    other ranks get ``({}, {})``. A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts)
    if dist.get_rank() != 0:
        return {}, {}
    return dict(msd), optimizer_by_index(model, osd)


def load_full_state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer], model_state: Mapping,
                    optimizer_state: Optional[Mapping] = None) -> None:
    """Load a full (unsharded) model / optimizer state, as in a geoop checkpoint, into the
    sharded model: every rank passes the same full state and keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, dict(model_state), options=opts)
    if optimizer is not None and optimizer_state is not None:
        set_optimizer_state_dict(model, optimizer, optimizer_by_name(model, optimizer_state), options=opts)


def local_bytes(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> dict:
    """Bytes this rank holds for parameters, gradients and optimizer state (the local shard of
    a DTensor, the whole tensor otherwise): ``{"params": ., "grads": ., "optimizer": ., "total": .}``."""
    def nbytes(t: Any) -> int:
        if not isinstance(t, torch.Tensor):
            return 0
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()

    params = sum(nbytes(p) for p in model.parameters())
    grads = sum(nbytes(p.grad) for p in model.parameters() if p.grad is not None)
    opt = 0
    if optimizer is not None:
        opt = sum(nbytes(v) for s in optimizer.state.values() for v in s.values())
    return {"params": params, "grads": grads, "optimizer": opt, "total": params + grads + opt}
