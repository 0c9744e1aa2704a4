r"""CUDA-graph replay of a GINO's forward and backward for one fixed batch geometry.

On a GPU a car-sized GINO training step is bound by the host, not the GPU: about 400 small
kernels are launched per step, each costing more CPU time than GPU time (numbers in
``docs/experiments.md``). A CUDA graph records those launches once and
replays them with one call. :class:`GraphedGINO` does this with PyTorch's own
:func:`torch.cuda.make_graphed_callables`: the forward and the backward of the model on ONE
batch geometry (points, queries, neighbourhoods, quadrature weights, latent features) become
two graphs inside one autograd node, so the training loop around it (loss, ``backward``,
``zero_grad``, optimizer, LR schedule, gradient clipping) stays ordinary PyTorch.

What may change between calls is the input features ``x`` (copied into the graph's static
input); everything geometric is baked into the graph, which is exactly the case of training on
one mesh with varying fields or conditions (an airfoil mesh and its inflow angles, the globe's
grid and its weather states), and of the benchmark step. For a new geometry build a new
``GraphedGINO`` (capture costs a few eager steps).

Gradients follow ordinary PyTorch semantics (``.grad`` is a fresh tensor or accumulated
into; ``zero_grad`` with or without ``set_to_none``; accumulation over several backward
passes): the graphs are captured on proxy parameters, see :class:`_ProxyForward` for the
PyTorch pitfall this avoids.

Requirements (checked, with a :class:`~geoop.errors.ConfigError`): no local-geometry features
(``local_radius``/``local_nearest`` search neighbours inside ``forward``, on the host). The
batch's neighbourhoods are computed here when missing. The GINO step issues no host
synchronisation (``benchmarks/cuda_agreement.py`` counts them), which capture requires.
Parameters are updated in place by optimizers, which graphs see; do not replace them.

Off CUDA (or with ``enabled=False``) the same object runs the model eagerly, so code written
against it runs on any device.

Shapes
------
x      : (ΣN, in_channels) input features on ``batch.points`` (no argument when ``in_channels == 0``)
output : (ΣQ, out_channels), queries in the batch's order
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..batch import GeometryBatch
from ..errors import ConfigError, ShapeError
from .gino import GINO

__all__ = ["GraphedGINO"]


class _ProxyForward:
    """``(x, *proxies) -> model(batch, x)`` with the model's parameters replaced by proxies.

    ``torch.cuda.make_graphed_callables`` returns every parameter gradient in the same static
    buffer of its backward graph, and autograd installs that buffer itself as ``.grad`` of a
    parameter whose gradient was None: the next replay then overwrites ``.grad``, and zeroing
    in place or accumulating over several backward passes gives wrong gradients without an
    error (a known PyTorch bug, linked in ``docs/experiments.md``). So the graph is captured on proxies: leaf tensors that
    share the parameters' storage (optimizer updates reach them) but collect the gradients
    themselves; a post-accumulate hook moves each proxy gradient into the real parameter's
    ``.grad`` (a copy when it is None, an in-place add otherwise) and clears the proxy. The
    parameters then see ordinary PyTorch gradient semantics.

    Shapes: ``x`` (ΣN, in_channels) (absent when ``in_channels == 0``) -> (ΣQ, out_channels).
    """

    def __init__(self, model: GINO, batch: GeometryBatch):
        self.model, self.batch = model, batch
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.proxies = []
        for _, p in named:
            proxy = p.detach().requires_grad_(p.requires_grad)
            if p.requires_grad:
                proxy.register_post_accumulate_grad_hook(_grad_mover(p))
            self.proxies.append(proxy)
        self.n_x = 0 if model.in_channels == 0 else 1

    def inputs(self, x: Optional[Tensor]) -> tuple:
        """The callable's flat tensor arguments: (x, *proxies) or (*proxies,)."""
        return (() if self.n_x == 0 else (x,)) + tuple(self.proxies)

    def __call__(self, *args: Tensor) -> Tensor:
        x = args[0] if self.n_x else None
        params = dict(zip(self.names, args[self.n_x:]))
        return torch.func.functional_call(self.model, params, (self.batch, x))


def _grad_mover(param: Tensor):
    """Post-accumulate hook of a proxy: move its gradient into ``param.grad``."""

    def hook(proxy: Tensor) -> None:
        g = proxy.grad
        proxy.grad = None
        if g is None:
            return
        if param.grad is None:
            param.grad = g.clone()  # never alias the graph's static buffer
        else:
            param.grad.add_(g)

    return hook


class GraphedGINO(nn.Module):
    """A GINO bound to one batch geometry, replayed as CUDA graphs on a GPU.

    Parameters
    ----------
    model : the :class:`GINO` (its parameters are shared, not copied; keep optimising them)
    batch : the geometry, on the model's device; its neighbourhoods are computed if missing
    x : (ΣN, in_channels) example input features (values do not matter, shape and dtype do;
        None when ``in_channels == 0``)
    enabled : capture CUDA graphs (default: when the model is on a CUDA device); False runs
        eagerly through the same interface
    warmup : eager warm-up iterations before capture (on a side stream, as PyTorch requires)

    The graphs are captured in the model's current mode (``model.train()`` or ``eval()``);
    called in the other mode the model runs eagerly. Graphed calls give no gradient to ``x``
    and support first-order gradients only. A graphed call returns the graph's static output
    tensor, which the next call overwrites: ``clone()`` what you keep across calls. Gradients
    reach the parameters through ``backward()`` (``torch.autograd.grad`` with respect to the
    model's parameters does not see them: the graph holds proxies), so wrap the model in
    ``DistributedDataParallel`` only for eager use, not around a GraphedGINO.

    Shapes
    ------
    forward(x (ΣN, in_channels)) -> (ΣQ, out_channels)
    """

    def __init__(self, model: GINO, batch: GeometryBatch, x: Optional[Tensor] = None,
                 enabled: Optional[bool] = None, warmup: int = 3):
        super().__init__()
        if not isinstance(model, GINO):
            raise ConfigError(f"GraphedGINO: expected a geoop GINO, got {type(model).__name__}")
        if not isinstance(batch, GeometryBatch):
            raise ShapeError(f"GraphedGINO: expected a GeometryBatch, got {type(batch).__name__}")
        if model.gno_local is not None or model.local_nearest:
            raise ConfigError(
                "GraphedGINO: local-geometry features (local_radius > 0 or local_nearest=True) search "
                "neighbours on the host inside forward, which a CUDA graph cannot record; build the "
                "model without them, or run it eagerly"
            )
        device = model._latent_points.device
        if batch.points.device != device:
            raise ShapeError(f"GraphedGINO: batch is on {batch.points.device}, the model on {device}; move one of them")
        self._check_x(model, batch, x)
        batch = _with_neighborhoods(model, batch)
        use_graphs = device.type == "cuda" if enabled is None else bool(enabled)
        if use_graphs and device.type != "cuda":
            raise ConfigError(f"GraphedGINO: CUDA graphs need a CUDA device, the model is on {device}")
        self.x_dtype = None if x is None else x.dtype
        self.model = model  # a submodule: parameters() are the model's
        self.batch = batch
        self._fn = _ProxyForward(model, batch)
        self._graphed_fn = None
        self._captured_training = model.training
        if use_graphs:
            sample = self._fn.inputs(None if x is None else x.detach().clone())
            self._graphed_fn = torch.cuda.make_graphed_callables(
                self._fn, sample, num_warmup_iters=int(warmup), allow_unused_input=True
            )

    @property
    def graphed(self) -> bool:
        """Whether CUDA graphs were captured (else every call runs eagerly)."""
        return self._graphed_fn is not None

    @staticmethod
    def _check_x(model: GINO, batch: GeometryBatch, x: Optional[Tensor]) -> None:
        n = batch.points.shape[0]
        if model.in_channels == 0:
            if x is not None:
                raise ShapeError(f"GraphedGINO: in_channels=0 takes no input features, got x of shape {tuple(x.shape)}")
        elif x is None or tuple(x.shape) != (n, model.in_channels):
            got = None if x is None else tuple(x.shape)
            raise ShapeError(f"GraphedGINO: x must have shape ({n}, {model.in_channels}) (one row per batch "
                             f"point: the shape the graphs are captured for), got {got}")

    def forward(self, x: Optional[Tensor] = None) -> Tensor:
        """Run the model on the stored geometry with input features ``x`` (see class docstring)."""
        self._check_x(self.model, self.batch, x)
        if self.graphed and x is not None:
            if x.dtype != self.x_dtype or x.device != self.batch.points.device:
                raise ShapeError(f"GraphedGINO: x must be {self.x_dtype} on {self.batch.points.device} "
                                 f"(the captured dtype and device), got {x.dtype} on {x.device}")
            if x.requires_grad:
                raise ShapeError("GraphedGINO: graphed calls give no gradient to x; pass x without requires_grad "
                                 "(or use the model eagerly)")
        if self.graphed and self.model.training == self._captured_training:
            return self._graphed_fn(*self._fn.inputs(x))
        return self.model(self.batch, x)  # eager: the other train/eval mode, or graphs disabled


def _with_neighborhoods(model: GINO, batch: GeometryBatch) -> GeometryBatch:
    """``batch`` with ``neighbors_in``/``neighbors_out`` filled in when missing, and their host
    offsets cached (the GNO reads them on the host, never the GPU, during capture)."""
    import copy

    B = batch.num_samples
    if batch.neighbors_in is None or batch.neighbors_out is None:
        batch = copy.copy(batch)
        with torch.no_grad():
            if batch.neighbors_in is None:
                batch.neighbors_in = model.neighbors_in(batch.points, batch.batch, B)
            if batch.neighbors_out is None:
                batch.neighbors_out = model.neighbors_out(batch.queries, batch.query_batch, B)
    batch.neighbors_in.ptr_host()
    batch.neighbors_out.ptr_host()
    return batch
