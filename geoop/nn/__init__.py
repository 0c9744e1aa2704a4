"""Neural-operator layers: GNO (integral transform over radius balls), FNO blocks (box
grids), SFNO blocks (sphere grids), positional embeddings, MLPs and segment reductions.

``FNOBlocks`` and ``SFNOBlocks`` are imported lazily (SFNO needs torch-harmonics).
"""
from __future__ import annotations

import importlib

from .embeddings import (  # noqa: F401
    POS_EMBEDDINGS,
    IdentityEmbedding,
    NeRFEmbedding,
    SinusoidalEmbedding,
    resolve_pos_embed,
)
from .gno import GNO, GNO_KERNELS, GNO_REDUCTIONS  # noqa: F401
from .mlp import ACTIVATIONS, MLP, resolve_activation  # noqa: F401
from .segment import segment_mean_csr, segment_sum, segment_sum_csr  # noqa: F401

_LAZY = {"FNOBlocks": "geoop.nn.fno", "SpectralConv": "geoop.nn.fno", "SFNOBlocks": "geoop.nn.sfno"}

__all__ = [
    "GNO", "GNO_KERNELS", "GNO_REDUCTIONS", "FNOBlocks", "SFNOBlocks", "MLP", "ACTIVATIONS",
    "resolve_activation", "NeRFEmbedding", "SinusoidalEmbedding", "IdentityEmbedding",
    "POS_EMBEDDINGS", "resolve_pos_embed", "segment_sum", "segment_sum_csr", "segment_mean_csr",
]


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'geoop.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value
