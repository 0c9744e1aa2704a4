"""Pointwise (per grid point) channel layers shared by the FNO and SFNO blocks.

A channel-mixing layer acts on the channel axis of a ``(B, C, *grid)`` tensor and is the
same at every grid point: ``y[b, :, p] = W x[b, :, p] + c``. It is resolution independent
by construction, which is why the FNO/SFNO skip paths and channel MLPs use it.

Norm and skip names are resolved here (activations in :mod:`geoop.nn.mlp`, re-exported);
an unknown name raises a :class:`~geoop.errors.ConfigError` listing the valid choices.

Shapes
------
x : (B, C_in, *grid) float  ->  (B, C_out, *grid) float
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from .mlp import ACTIVATIONS, resolve_activation  # the one place activation names are resolved

__all__ = [
    "ACTIVATIONS",
    "NORMS",
    "SKIPS",
    "resolve_activation",
    "resolve_norm",
    "resolve_skip",
    "ChannelLinear",
    "ChannelMLP",
    "SpectralBlock",
    "run_blocks",
]

#: norm name -> factory(channels). Both are dimension agnostic (GroupNorm over (C, *grid)).
NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": lambda c: nn.GroupNorm(c, c),  # one group per channel == instance norm
    "group": lambda c: nn.GroupNorm(1, c),  # one group == layer norm over (C, *grid)
}

#: skip path names
SKIPS = ("linear", "identity")


def resolve_norm(norm: Optional[str], channels: int) -> nn.Module:
    """Normalisation over ``(C, *grid)`` from a name (``"instance"``, ``"group"``) or
    ``None``/``"none"`` (identity)."""
    if norm is None or str(norm).lower() == "none":
        return nn.Identity()
    key = str(norm).lower()
    if key not in NORMS:
        raise ConfigError(f"norm: unknown normalisation {norm!r}; valid choices: {[None] + sorted(NORMS)}")
    return NORMS[key](channels)


def resolve_skip(skip: str, channels: int) -> nn.Module:
    """Skip path: ``"linear"`` (a learned :class:`ChannelLinear`, no bias) or
    ``"identity"``."""
    key = str(skip).lower()
    if key == "linear":
        return ChannelLinear(channels, channels, bias=False)
    if key == "identity":
        return nn.Identity()
    raise ConfigError(f"skip: unknown skip path {skip!r}; valid choices: {list(SKIPS)}")


class ChannelLinear(nn.Module):
    r"""Pointwise linear map on the channel axis, ``y[:, o, p] = \sum_i W_{oi} x[:, i, p] + c_o``
    (a 1x1 convolution in any number of grid dimensions).

    Implemented with ``F.linear`` on a channel-last view (no copy of the weights per
    dimension, works for 1-D, 2-D and 3-D grids alike).

    Shapes
    ------
    x : (B, C_in, *grid)  ->  (B, C_out, *grid)
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.linear = nn.Linear(self.in_channels, self.out_channels, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.in_channels:
            raise ShapeError(
                f"ChannelLinear input: expected (B, {self.in_channels}, *grid), got {tuple(x.shape)}"
            )
        return F.linear(x.movedim(1, -1), self.linear.weight, self.linear.bias).movedim(-1, 1)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


class ChannelMLP(nn.Module):
    r"""Two-layer pointwise MLP on the channel axis:
    ``y = W_2\,\sigma(W_1 x + b_1) + b_2`` at every grid point.

    Parameters
    ----------
    in_channels, out_channels : int
    hidden_channels : int
    act : activation name (see :func:`resolve_activation`)

    Shapes
    ------
    x : (B, C_in, *grid)  ->  (B, C_out, *grid)
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, act="gelu"):
        super().__init__()
        if hidden_channels < 1:
            raise ConfigError(f"ChannelMLP hidden_channels: expected >= 1, got {hidden_channels}")
        self.fc1 = ChannelLinear(in_channels, hidden_channels)
        self.act = resolve_activation(act)
        self.fc2 = ChannelLinear(hidden_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SpectralBlock(nn.Module):
    r"""The block structure shared by FNO and SFNO: ``x <- act(norm(K x + S x));
    x <- x + MLP(x)`` with ``K`` a spectral convolution (given), ``S`` the skip path.

    Parameters
    ----------
    spectral : nn.Module mapping (B, C, *grid) -> (B, C, *grid)
    channels : int
    mlp_expansion : float or None, hidden width of the channel MLP as a multiple of
        ``channels`` (None or 0: no MLP)
    act, skip, norm : names resolved by :func:`resolve_activation`, :func:`resolve_skip`,
        :func:`resolve_norm`

    Shapes
    ------
    x : (B, C, *grid)  ->  (B, C, *grid)
    """

    def __init__(self, spectral: nn.Module, channels: int, mlp_expansion: Optional[float] = 0.5, act="gelu",
                 skip: str = "linear", norm: Optional[str] = None):
        super().__init__()
        self.spectral = spectral
        self.skip = resolve_skip(skip, channels)
        self.norm = resolve_norm(norm, channels)
        self.act = resolve_activation(act)
        hidden = int(round(channels * mlp_expansion)) if mlp_expansion else 0
        self.mlp = ChannelMLP(channels, channels, hidden, act) if hidden > 0 else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm(self.spectral(x) + self.skip(x)))
        if self.mlp is not None:
            x = x + self.mlp(x)
        return x


def run_blocks(blocks: nn.ModuleList, x: Tensor, checkpoint: bool = False) -> Tensor:
    """Apply ``blocks`` in order. With ``checkpoint`` (and gradients needed) each block runs
    under ``torch.utils.checkpoint`` (non-reentrant): its activations are not kept for
    backward but recomputed there, one block at a time, so a training step holds the
    blocks' inputs ``(B, C, *grid)`` (one tensor per block) instead of every block's
    intermediates (the FFT spectra, the pre-activation, the channel MLP's hidden layer: about
    ten such tensors per block), for one more forward of the blocks in backward. The blocks
    draw no random numbers, so the RNG state is not saved."""
    if checkpoint and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint as ckpt

        for block in blocks:
            x = ckpt(block, x, use_reentrant=False, preserve_rng_state=False)
        return x
    for block in blocks:
        x = block(x)
    return x
