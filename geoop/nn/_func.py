"""Detecting ``torch.func`` transforms, so that layers with hand-written autograd functions
(which functorch cannot batch) take their plain, differentiable path under ``vmap``
(:class:`geoop.models.Ensemble` evaluates its stacked members with ``torch.func.vmap``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["under_func_transform"]


def under_func_transform(*tensors: Optional[Tensor]) -> bool:
    """Whether any of ``tensors`` is wrapped by a ``torch.func`` transform (``vmap``,
    ``grad``, ...), i.e. the caller runs inside one. False while ``torch.compile`` traces: the
    functorch query is opaque to dynamo (a graph break per call), and compiled steps never run
    under a ``torch.func`` transform (an ensemble refuses ``compile``)."""
    if torch.compiler.is_compiling():
        return False
    is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(t is not None and is_wrapped(t) for t in tensors)
