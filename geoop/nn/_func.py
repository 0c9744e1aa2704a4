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
    ``grad``, ...), i.e. the caller runs inside one."""
    is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(t is not None and is_wrapped(t) for t in tensors)
