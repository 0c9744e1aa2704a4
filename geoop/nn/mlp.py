"""Activations (resolved by name in one place) and a plain MLP on the last dimension.

Shapes
------
x : (..., in_dim) float -> (..., out_dim) float
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["ACTIVATIONS", "resolve_activation", "MLP"]

#: name -> module factory; the one place activation names are resolved
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


def resolve_activation(act: Union[str, nn.Module, Callable[[], nn.Module], None]) -> nn.Module:
    """Return an activation module for ``act``.

    ``act`` is a name from :data:`ACTIVATIONS` (case-insensitive), ``None`` (identity), an
    ``nn.Module`` instance (returned as is) or a module class / factory.

    Raises
    ------
    ConfigError
        for an unknown name, listing the valid choices.
    """
    if act is None:
        return nn.Identity()
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, str):
        key = act.lower()
        if key not in ACTIVATIONS:
            raise ConfigError(f"activation: unknown name {act!r}; valid choices: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[key]()
    if callable(act):
        return act()
    raise ConfigError(f"activation: expected a name or a module, got {type(act).__name__}")


class MLP(nn.Module):
    """Fully connected network ``Linear -> act -> ... -> Linear`` on the last dimension.

    Parameters
    ----------
    in_dim, out_dim : input / output widths
    hidden : hidden widths, e.g. ``(64, 64)``; empty gives a single ``Linear``
    act : activation name (see :func:`resolve_activation`)

    Shapes
    ------
    x : (..., in_dim) -> (..., out_dim)
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (64,), act="gelu", bias: bool = True):
        super().__init__()
        dims = [int(in_dim), *[int(h) for h in hidden], int(out_dim)]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < len(dims) - 2:
                layers.append(resolve_activation(act))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = dims[0], dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
