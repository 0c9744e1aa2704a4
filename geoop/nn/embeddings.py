"""Positional embeddings of coordinates, resolved by name in :func:`resolve_pos_embed`.

* ``"nerf"`` (NeRF, Mildenhall et al. 2020): octave frequencies
  ``e(x) = [sin(2^k pi x_i), cos(2^k pi x_i)]_{i < d, k < L}``, width ``2 d L``.
* ``"sinusoidal"`` (transformer, Vaswani et al. 2017): geometric frequencies
  ``w_k = scale * max_positions^(-k / L)``,
  ``e(x) = [sin(w_k x_i), cos(w_k x_i)]_{i < d, k < L}``, width ``2 d L``; coordinates in
  [0, 1] multiplied by ``scale`` play the role of token positions.
* ``"none"`` / ``None``: the raw coordinates, width ``d``.

Every embedding has an ``out_dim`` attribute.

Shapes
------
x : (N, d) float -> (N, out_dim) float
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError

__all__ = ["NeRFEmbedding", "SinusoidalEmbedding", "IdentityEmbedding", "POS_EMBEDDINGS", "resolve_pos_embed"]


class _FrequencyEmbedding(nn.Module):
    freqs: Tensor

    def __init__(self, in_dim: int, freqs: Tensor):
        super().__init__()
        self.in_dim = int(in_dim)
        self.register_buffer("freqs", freqs, persistent=False)
        self.out_dim = 2 * self.in_dim * int(freqs.numel())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ShapeError(
                f"{type(self).__name__}: expected coordinates (..., {self.in_dim}), got {tuple(x.shape)}"
            )
        arg = x.unsqueeze(-1) * self.freqs.to(x.dtype)  # (..., d, L)
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1).flatten(-2)


class NeRFEmbedding(_FrequencyEmbedding):
    """NeRF octave embedding ``[sin(2^k pi x), cos(2^k pi x)]``, k = 0..n_freqs-1.

    Shapes: (..., in_dim) -> (..., 2 * in_dim * n_freqs)."""

    def __init__(self, in_dim: int, n_freqs: int = 8):
        super().__init__(in_dim, math.pi * 2.0 ** torch.arange(int(n_freqs), dtype=torch.float64))


class SinusoidalEmbedding(_FrequencyEmbedding):
    """Transformer embedding with frequencies ``scale * max_positions^(-k/n_freqs)``.

    Shapes: (..., in_dim) -> (..., 2 * in_dim * n_freqs)."""

    def __init__(self, in_dim: int, n_freqs: int = 8, max_positions: float = 10000.0, scale: float = 100.0):
        k = torch.arange(int(n_freqs), dtype=torch.float64)
        super().__init__(in_dim, scale * float(max_positions) ** (-k / max(int(n_freqs), 1)))


class IdentityEmbedding(nn.Module):
    """No embedding: the coordinates themselves. Shapes: (..., d) -> (..., d)."""

    def __init__(self, in_dim: int, **_: object):
        super().__init__()
        self.in_dim = self.out_dim = int(in_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x


#: name -> class; the one place embedding names are resolved
POS_EMBEDDINGS = {"nerf": NeRFEmbedding, "sinusoidal": SinusoidalEmbedding, "none": IdentityEmbedding}


def resolve_pos_embed(name: Optional[Union[str, nn.Module]], in_dim: int, n_freqs: int = 8) -> nn.Module:
    """Build the positional embedding called ``name`` for ``in_dim``-dimensional coordinates.

    ``name`` is one of :data:`POS_EMBEDDINGS` (``"nerf"``, ``"sinusoidal"``, ``"none"``),
    ``None`` (same as ``"none"``) or a module with an ``out_dim`` attribute (returned as is).

    Raises
    ------
    ConfigError
        for an unknown name, listing the valid choices.
    """
    if name is None:
        return IdentityEmbedding(in_dim)
    if isinstance(name, nn.Module):
        if not hasattr(name, "out_dim"):
            raise ConfigError("pos_embed: a custom embedding module needs an `out_dim` attribute")
        return name
    key = str(name).lower()
    if key not in POS_EMBEDDINGS:
        raise ConfigError(f"pos_embed: unknown embedding {name!r}; valid choices: {sorted(POS_EMBEDDINGS)} or None")
    cls = POS_EMBEDDINGS[key]
    if cls is IdentityEmbedding:
        return cls(in_dim)
    return cls(in_dim, n_freqs=n_freqs)
