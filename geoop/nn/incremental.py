r"""Incremental spectral learning: FNO/SFNO blocks that start with few modes and grow them.

An incremental block stack (:class:`~geoop.nn.fno.FNOBlocks` built with ``active_modes``,
:class:`~geoop.nn.sfno.SFNOBlocks` with ``active_lmax``) allocates its spectral weights at
the final modes ``m`` and uses the modes ``|k_j| < a_j`` only; growing ``a`` changes no
parameter shape, so the optimizer's moments of the kept modes stay as they are, and at
``a = m`` the model *is* the fixed-modes model with the same weights.

These functions act on every incremental stack of a model; the decision *when* to grow
(loss plateau, explained spectral energy) is :class:`geoop.train.incremental.IncrementalModes`.

Spectral energy
---------------
The modes of the active weight block ``W : (C_in, C_out, *K)`` are grouped in frequency
shells: for an FNO, mode ``k`` lies in shell ``s(k) = max_j n(k_j)`` with ``n(k) = k`` for
``k >= 0`` and ``-k - 1`` for ``k < 0`` (the mode's number from its corner: the layer keeps
``k = 0..a-1`` and ``k = -a..-1`` on every axis but the last, stored at the compact block's
indices ``i < a`` and ``2a - 1 - i`` for ``i >= a``), so ``s = 0..a-1``; for an SFNO,
shell = degree ``l``.  With ``e_s = \sum_{k: s(k)=s}
\sum_{i,o} |W_{i,o,k}|^2`` over the ``S`` active shells, the energy explained by all but the
outer ``b`` shells is

.. math::  r_b = \frac{\sum_{s < S - b} e_s}{\sum_{s < S} e_s}\quad(0 \text{ when } S \le b),

the "explained ratio" of George et al. (incremental spectral learning of FNOs): when
``r_b`` is below a threshold, the outermost modes carry energy the truncation would lose,
so more modes are wanted.

Shapes
------
shell_energy(layer) : (S,) float64, S = the largest active mode count
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .fno import FNOBlocks, SpectralConv
from .sfno import SFNOBlocks, SphericalConv

__all__ = ["incremental_blocks", "active_modes", "max_modes", "set_active_modes", "grow_modes", "shell_energy",
           "explained_energy"]


def incremental_blocks(model: nn.Module) -> list[nn.Module]:
    """The incremental FNO/SFNO block stacks of ``model`` (those built with active modes)."""
    return [m for m in model.modules() if isinstance(m, (FNOBlocks, SFNOBlocks)) and m.blocks[0].spectral.incremental]


def _one(model: nn.Module) -> list[nn.Module]:
    stacks = incremental_blocks(model)
    if not stacks:
        raise ConfigError(f"incremental modes: {type(model).__name__} has no incremental FNO/SFNO blocks "
                          "(set blocks.incremental, or build the blocks with active_modes)")
    return stacks


def active_modes(model: nn.Module) -> Optional[tuple[int, ...]]:
    """The modes in use by the model's incremental blocks (the first stack's), None without any."""
    stacks = incremental_blocks(model)
    return stacks[0].active_modes if stacks else None


def max_modes(model: nn.Module) -> tuple[int, ...]:
    """The final modes (the allocation) of the model's first incremental stack."""
    return tuple(_one(model)[0].n_modes)


def set_active_modes(model: nn.Module, modes: Union[int, Sequence[int]]) -> None:
    """Set the active modes of every incremental stack (ConfigError beyond the final modes)."""
    for s in _one(model):
        s.set_active_modes(modes)


def grow_modes(model: nn.Module, step: int = 1) -> tuple[int, ...]:
    """``a_j <- min(a_j + step, m_j)`` on every axis of every incremental stack; returns the
    new active modes (unchanged when already at the final modes)."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ConfigError(f"incremental step: expected an int >= 1, got {step!r}")
    for s in _one(model):
        s.set_active_modes(tuple(min(a + step, m) for a, m in zip(s.active_modes, s.n_modes)))
    return active_modes(model)


@torch.no_grad()
def shell_energy(layer: Union[SpectralConv, SphericalConv]) -> Tensor:
    """Energy ``e_s`` of the layer's active weights per frequency shell (module docstring)."""
    if isinstance(layer, SphericalConv):
        w = layer.weight([torch.arange(layer.active_lmax, device=next(layer.weight.parameters()).device)])
        return (w.abs() ** 2).double().sum(dim=(0, 1))
    if not isinstance(layer, SpectralConv):
        raise ConfigError(f"shell_energy: expected a SpectralConv or SphericalConv, got {type(layer).__name__}")
    dev = next(layer.weight.parameters()).device
    w = layer.weight(layer._weight_index(dev))  # (C_in, C_out, 2a_1, .., a_d)
    e = (w.abs() ** 2).double().sum(dim=(0, 1))
    act = layer.active_modes
    ks = []
    for j, a in enumerate(act):
        i = torch.arange(e.shape[j], device=e.device)
        ks.append(i if j == len(act) - 1 else torch.where(i < a, i, 2 * a - 1 - i))
    shell = torch.zeros((), dtype=torch.long, device=e.device)
    for j, k in enumerate(ks):  # s = max_j |k_j| over the block, broadcast axis by axis
        shape = [1] * len(act)
        shape[j] = -1
        shell = torch.maximum(shell, k.view(shape))
    return torch.zeros(max(act), dtype=torch.float64, device=e.device).index_add_(0, shell.reshape(-1), e.reshape(-1))


@torch.no_grad()
def explained_energy(model: nn.Module, buffer: int = 1) -> float:
    """The smallest explained ratio ``r_buffer`` over the spectral layers of the model's
    incremental stacks (module docstring): 1 = no energy in the outer ``buffer`` shells."""
    if isinstance(buffer, bool) or not isinstance(buffer, int) or buffer < 1:
        raise ConfigError(f"incremental buffer: expected an int >= 1, got {buffer!r}")
    ratios = []
    for s in _one(model):
        for blk in s.blocks:
            e = shell_energy(blk.spectral)
            total = float(e.sum())
            keep = float(e[: max(e.shape[0] - buffer, 0)].sum())
            ratios.append(keep / total if total > 0 else 1.0)
    return min(ratios)
