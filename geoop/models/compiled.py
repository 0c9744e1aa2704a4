r"""A GINO step without host reads: ``torch.compile`` with dynamic sizes, and CUDA-graph
replay of ragged batches padded to capacity buckets.

Why
---
A car-sized GINO step on a GPU is bound by kernel launches, not by the GPU. Two remedies,
both for folders of *different* geometries (where one fixed graph does not apply):

* :func:`compile_gino` / :class:`CompiledGINO`: ``torch.compile`` (Inductor) of the forward
  (and, through AOT autograd, the backward) with the point, query and edge counts marked
  dynamic, so geometries of other sizes reuse the compiled code instead of recompiling.
* :class:`RaggedGraphedGINO`: the batch is padded up to a capacity bucket (a few sizes per
  axis, growing geometrically), one CUDA graph per bucket is captured
  (``torch.cuda.make_graphed_callables``) and any batch that fits is replayed.

Both run the same step function (:func:`gino_step`) on :class:`StepInputs`: tensors only,
with neighbourhoods as :class:`~geoop.neighbors.neighborhoods.EdgeList` s (one piece,
nothing read on the host: a :class:`~geoop.neighbors.Neighborhoods` is cut into chunks
on the host, which would break a compiled graph and cannot be captured for new
geometries). Neighbour searches (including the local-geometry ones) stay outside, in
:func:`step_inputs`: they are data.

Padding (:func:`pad_step_inputs`) contributes exactly nothing:

* padded points: coordinates, features and quadrature weights 0; no real edge refers to them;
* padded edges: ``query = Q`` (one past the last query), so their values are summed into a
  spare row that :meth:`GNO._edge_list` drops; ``counts`` (the mean's divisor) holds the
  real edges only;
* padded queries: no edges, so the decoder gives them 0; the caller keeps rows ``[:Q]``, so
  their gradient is 0.

Real rows are therefore the unpadded sums, up to the summation order of the matrix products
whose reduction runs over the (padded) edge axis (the kernel-MLP weight gradients), i.e.
floating-point rounding; tested on the CPU in float64.

Shapes
------
StepInputs.points : (N, d), x : (N, C_in) | None, weights : (N,) | None,
latent_features : (B, C_lat, *grid) | None, edges_in : EdgeList over the B*G latent nodes
(indices into points), queries : (Q, d), edges_out : EdgeList over the Q queries (indices
into the B*G latent nodes), local_edges : EdgeList over the queries (indices into points) |
None, nearest_index / nearest_has : (Q,) | None.
output : (Q, out_channels)
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..batch import GeometryBatch
from ..errors import ConfigError, ShapeError
from ..neighbors.neighborhoods import EdgeList
from .gino import GINO

__all__ = ["StepInputs", "step_inputs", "gino_step", "pad_step_inputs", "bucket_capacity",
           "CompiledGINO", "compile_gino", "RaggedGraphedGINO"]


class StepInputs(NamedTuple):
    """Everything one GINO step reads, as tensors (see the module docstring for shapes)."""

    points: Tensor
    x: Optional[Tensor]
    weights: Optional[Tensor]
    latent_features: Optional[Tensor]
    edges_in: EdgeList
    queries: Tensor
    edges_out: EdgeList
    local_edges: Optional[EdgeList]
    nearest_index: Optional[Tensor]
    nearest_has: Optional[Tensor]


def _has_local(model: GINO) -> bool:
    return model.gno_local is not None or model.local_nearest


def step_inputs(model: GINO, batch: GeometryBatch, x: Optional[Tensor] = None) -> StepInputs:
    """The :class:`StepInputs` of ``model(batch, x)``: the batch's neighbourhoods as edge
    lists (searched here, without gradient, when the batch has none; so are the local-geometry
    searches), the quadrature weights only when a weighted reduction reads them."""
    if not isinstance(model, GINO):
        raise ConfigError(f"step_inputs: expected a geoop GINO, got {type(model).__name__}")
    if not isinstance(batch, GeometryBatch):
        raise ShapeError(f"step_inputs: expected a GeometryBatch, got {type(batch).__name__}")
    B = batch.num_samples
    if x is None and model.point_inputs:  # as GINO.forward: the inputs named by the model's encoder
        x = model.point_features(batch)
    latent_features = model._batch_latent_features(batch)
    with torch.no_grad():
        nin = batch.neighbors_in if batch.neighbors_in is not None else model.neighbors_in(batch.points, batch.batch, B)
        nout = (batch.neighbors_out if batch.neighbors_out is not None
                else model.neighbors_out(batch.queries, batch.query_batch, B))
        local_nb, nearest = (None, None)
        if _has_local(model):
            local_nb, nearest = model.local_neighbors(batch.queries, batch.points, batch.query_batch, batch.batch, B)
    weights = batch.weights if model.gno_in.reduction == "weighted" else None
    return StepInputs(
        batch.points, x, weights, latent_features, nin.edge_list(), batch.queries, nout.edge_list(),
        None if local_nb is None else local_nb.edge_list(),
        None if nearest is None else nearest[0], None if nearest is None else nearest[1],
    )


def gino_step(model: GINO, inp: StepInputs, num_samples: int) -> Tensor:
    """``model(batch, x)`` from :class:`StepInputs` (the GINO's own ``encode`` / ``decode``),
    reading nothing on the host: what :class:`CompiledGINO` compiles and
    :class:`RaggedGraphedGINO` captures. Returns (Q, out_channels)."""
    latent = model.encode(inp.points, inp.x, inp.weights, None, num_samples, inp.edges_in, inp.latent_features)
    local = (inp.local_edges, (inp.nearest_index, inp.nearest_has)) if _has_local(model) else None
    return model.decode(latent, inp.queries, None, inp.edges_out, inp.points, inp.x, None, local=local)


# ----------------------------------------------------------------------------- padding
def bucket_capacity(n: int, growth: float = 1.25, quantum: int = 64) -> int:
    """The smallest capacity ``>= n`` of the ladder ``quantum * ceil(growth^k)`` (k = 0, 1,
    ...), rounded up to a multiple of ``quantum``: a few sizes per decade, so different
    geometries share capacities while padding wastes at most a factor ``growth``."""
    if growth <= 1.0 or quantum < 1:
        raise ConfigError(f"bucket_capacity: need growth > 1 and quantum >= 1, got {growth}, {quantum}")
    cap = quantum
    while cap < n:
        cap = quantum * math.ceil(cap * growth / quantum)
    return cap


def _pad_rows(t: Optional[Tensor], rows: int, value: float = 0) -> Optional[Tensor]:
    if t is None or t.shape[0] == rows:
        return t
    if t.shape[0] > rows:
        raise ShapeError(f"pad_step_inputs: {t.shape[0]} rows do not fit a capacity of {rows}")
    pad = t.new_full((rows - t.shape[0],) + tuple(t.shape[1:]), value)
    return torch.cat([t, pad])


def _pad_edges(e: Optional[EdgeList], edges: int, queries: int) -> Optional[EdgeList]:
    """Edges padded to ``edges`` (source 0, query ``queries``: the dropped spare row) over
    ``queries`` queries (padded queries have no edges)."""
    if e is None:
        return None
    q0 = e.counts.shape[0]
    query = e.query
    if q0 != queries:  # real padding edges of the input also move to the new spare row
        query = torch.where(query == q0, torch.full_like(query, queries), query)
    return EdgeList(_pad_rows(e.index, edges, 0), _pad_rows(query, edges, queries), _pad_rows(e.counts, queries, 0))


def pad_step_inputs(inp: StepInputs, points: int, queries: int, edges_in: int, edges_out: int,
                    edges_local: int = 0) -> StepInputs:
    """``inp`` padded to the given capacities (each >= the actual size) so that padding
    contributes nothing (module docstring); the output rows ``[:Q]`` are the unpadded step's."""
    return StepInputs(
        _pad_rows(inp.points, points), _pad_rows(inp.x, points), _pad_rows(inp.weights, points), inp.latent_features,
        _pad_edges(inp.edges_in, edges_in, inp.edges_in.counts.shape[0]),
        _pad_rows(inp.queries, queries), _pad_edges(inp.edges_out, edges_out, queries),
        _pad_edges(inp.local_edges, edges_local, queries),
        _pad_rows(inp.nearest_index, queries), _pad_rows(inp.nearest_has, queries),
    )


def _capacities(inp: StepInputs, growth: float, quantum: int) -> tuple:
    cap = lambda n: bucket_capacity(n, growth, quantum)  # noqa: E731
    local = 0 if inp.local_edges is None else cap(inp.local_edges.num_edges)
    return (cap(inp.points.shape[0]), cap(inp.queries.shape[0]), cap(inp.edges_in.num_edges),
            cap(inp.edges_out.num_edges), local)


# ----------------------------------------------------------------------------- torch.compile
def _mark_dynamic(inp: StepInputs) -> None:
    """Mark the point, query and edge axes dynamic (the latent axis B*G and the batch size
    stay static): geometries of other sizes then reuse the compiled graph."""
    mark = torch._dynamo.maybe_mark_dynamic
    for t in (inp.points, inp.x, inp.weights, inp.queries, inp.nearest_index, inp.nearest_has):
        if t is not None:
            mark(t, 0)
    for e, dyn_queries in ((inp.edges_in, False), (inp.edges_out, True), (inp.local_edges, True)):
        if e is not None:
            mark(e.index, 0)
            mark(e.query, 0)
            if dyn_queries:
                mark(e.counts, 0)


def _counting_backend(owner: "CompiledGINO", backend, mode: Optional[str], options: Optional[dict]):
    """A dynamo backend that counts the graphs it compiles (each recompilation is one more)
    and hands them to ``backend`` (Inductor with ``mode`` / ``options`` config patches)."""
    if backend == "inductor":
        from torch._inductor import list_mode_options
        from torch._inductor.compile_fx import compile_fx

        patches = dict(list_mode_options(mode) if mode else {})
        patches.update(options or {})

        def inner(gm, example_inputs):
            return compile_fx(gm, example_inputs, config_patches=patches)
    else:
        if mode or options:
            raise ConfigError(f"compile_gino: mode/options apply to the inductor backend, not {backend!r}")
        inner = torch._dynamo.lookup_backend(backend) if isinstance(backend, str) else backend

    def counting(gm, example_inputs):
        owner.graphs_compiled += 1
        return inner(gm, example_inputs)

    return counting


class CompiledGINO(nn.Module):
    """``model(batch, x)`` through ``torch.compile`` with dynamic point, query and edge counts.

    Parameters
    ----------
    model : the :class:`GINO` (shared, not copied: its parameters are this module's)
    backend : a dynamo backend, default ``"inductor"`` (``"aot_eager"`` compiles fast, for tests)
    mode, options : Inductor's ``mode`` (e.g. ``"max-autotune-no-cudagraphs"``) and config patches
    fullgraph : default True: a graph break is an error, not a silent split

    ``forward(batch, x)`` searches the batch's missing neighbourhoods outside the compiled
    region (:func:`step_inputs`), marks the varying axes dynamic and runs the compiled
    :func:`gino_step`; the backward is compiled too (AOT autograd). A new batch size or
    dtype, the other of train/eval or grad/no-grad, or an edge count crossing the model's
    ``checkpoint_edges`` compiles once more; other geometries do not, with one exception on
    the CPU: Inductor's C++ float sums guard on whether a reduction is longer than 4096
    (above it they sum in cascades), so the first geometry on the other side of 4096 points,
    queries or edges compiles once more (a size bucket; then none). ``graphs_compiled``
    counts the graphs compiled so far (forward graphs; the backward is part of each).

    Shapes: forward(batch with ΣN points and ΣQ queries, x (ΣN, in_channels)) -> (ΣQ, out_channels)
    """

    def __init__(self, model: GINO, backend="inductor", mode: Optional[str] = None, options: Optional[dict] = None,
                 fullgraph: bool = True):
        super().__init__()
        if not isinstance(model, GINO):
            raise ConfigError(f"compile_gino: expected a geoop GINO, got {type(model).__name__}")
        self.model = model
        self.graphs_compiled = 0
        fn = torch.compile(gino_step, backend=_counting_backend(self, backend, mode, options), fullgraph=fullgraph,
                           dynamic=None)
        object.__setattr__(self, "_compiled", fn)  # a function, not a submodule

    def forward(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        inp = step_inputs(self.model, batch, x)
        _mark_dynamic(inp)
        with _no_duck_shapes():
            return self._compiled(self.model, inp, batch.num_samples)


def _no_duck_shapes():
    """Give every dynamic axis its own symbol even when two sizes happen to be equal (the
    car's queries are its points: N == Q; another geometry may differ, which would otherwise
    fail a guard ``N == Q`` and recompile)."""
    try:
        from torch.fx.experimental import _config as fx_config

        return fx_config.patch(use_duck_shape=False)
    except (ImportError, AttributeError):  # older torch: duck shapes stay on
        return contextlib.nullcontext()


def compile_gino(model: GINO, backend="inductor", mode: Optional[str] = None, options: Optional[dict] = None,
                 fullgraph: bool = True) -> CompiledGINO:
    """``torch.compile`` a GINO for batches of any geometry; see :class:`CompiledGINO`."""
    return CompiledGINO(model, backend=backend, mode=mode, options=options, fullgraph=fullgraph)


# ----------------------------------------------------------------------------- CUDA graphs
def _flatten(inp: StepInputs) -> tuple[list, tuple]:
    """(tensors, layout): the non-None tensors of ``inp`` in order and where they go."""
    tensors, layout = [], []
    for v in inp:
        if v is None:
            layout.append(None)
        elif isinstance(v, EdgeList):
            tensors.extend(v)
            layout.append("edges")
        else:
            tensors.append(v)
            layout.append("t")
    return tensors, tuple(layout)


def _unflatten(tensors, layout) -> StepInputs:
    it, vals = iter(tensors), []
    for kind in layout:
        vals.append(None if kind is None else (EdgeList(next(it), next(it), next(it)) if kind == "edges" else next(it)))
    return StepInputs(*vals)


class _StepModule(nn.Module):
    """``gino_step`` as a module (for :func:`torch.func.functional_call`); parameters ``model.*``."""

    def __init__(self, model: GINO):
        super().__init__()
        self.model = model

    def forward(self, inp: StepInputs, num_samples: int) -> Tensor:
        return gino_step(self.model, inp, num_samples)


class _ProxyStep:
    """``(*step tensors, *proxies) -> gino_step`` on proxy parameters (see
    :class:`geoop.models.graphed._ProxyForward` for why graphs are captured on proxies)."""

    def __init__(self, model: GINO, proxies: list, names: list, layout: tuple, num_samples: int):
        self.step, self.proxies = _StepModule(model), proxies
        self.names = ["model." + n for n in names]
        self.layout, self.num_samples = layout, num_samples
        self.n_data = sum(0 if k is None else (3 if k == "edges" else 1) for k in layout)

    def __call__(self, *args: Tensor) -> Tensor:
        inp = _unflatten(args[: self.n_data], self.layout)
        params = dict(zip(self.names, args[self.n_data:]))
        return torch.func.functional_call(self.step, params, (inp, self.num_samples))


class RaggedGraphedGINO(nn.Module):
    """A GINO whose forward and backward replay as CUDA graphs for batches of any geometry:
    each batch is padded to a capacity bucket (:func:`bucket_capacity` per axis: points,
    queries, encoder / decoder / local edges), one pair of graphs is captured per bucket and
    batch size, and every batch that fits replays it.

    Parameters
    ----------
    model : the :class:`GINO` (shared; keep optimising its parameters)
    growth, quantum : the capacity ladder (:func:`bucket_capacity`); padding wastes at most
        ``growth`` x per axis, fewer buckets need fewer captures
    max_graphs : captures kept at most; a batch needing another bucket then runs eagerly
        (counted in ``eager_calls``)
    enabled : capture graphs (default: on a CUDA device); off, the padded step runs eagerly,
        which is how the padding is tested on the CPU
    warmup : eager iterations before each capture

    Gradients: first order, into the parameters through ``backward()`` with ordinary PyTorch
    semantics (proxy parameters, as :class:`~geoop.models.GraphedGINO`); none to ``x``. The
    returned tensor is a view of the graph's static output, overwritten by the next replay of
    the same bucket: ``clone()`` what you keep. Graphs are captured in the model's current
    train/eval mode; in the other mode, under autocast, or with ``x`` requiring grad, the
    model runs eagerly.

    Shapes: forward(batch with ΣN points and ΣQ queries, x (ΣN, in_channels)) -> (ΣQ, out_channels)
    """

    def __init__(self, model: GINO, growth: float = 1.25, quantum: int = 256, max_graphs: int = 16,
                 enabled: Optional[bool] = None, warmup: int = 3):
        super().__init__()
        if not isinstance(model, GINO):
            raise ConfigError(f"RaggedGraphedGINO: expected a geoop GINO, got {type(model).__name__}")
        bucket_capacity(1, growth, quantum)  # validates growth and quantum
        device = model._latent_points.device
        self.use_graphs = device.type == "cuda" if enabled is None else bool(enabled)
        if self.use_graphs and device.type != "cuda":
            raise ConfigError(f"RaggedGraphedGINO: CUDA graphs need a CUDA device, the model is on {device}")
        self.model = model
        self.growth, self.quantum, self.max_graphs, self.warmup = float(growth), int(quantum), int(max_graphs), int(warmup)
        self.graphs: dict = {}  # bucket key -> graphed callable
        self.eager_calls = 0
        named = list(model.named_parameters())
        self._names = [n for n, _ in named]
        self._proxies = []
        if self.use_graphs:
            from .graphed import _grad_mover

            for _, p in named:
                proxy = p.detach().requires_grad_(p.requires_grad)
                if p.requires_grad:
                    proxy.register_post_accumulate_grad_hook(_grad_mover(p))
                self._proxies.append(proxy)
        self._training = model.training

    def padded_inputs(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> tuple[StepInputs, tuple]:
        """(padded :class:`StepInputs`, bucket key) of a batch."""
        inp = step_inputs(self.model, batch, x)
        caps = _capacities(inp, self.growth, self.quantum)
        key = (batch.num_samples,) + caps + (None if inp.x is None else inp.x.dtype, inp.points.dtype)
        return pad_step_inputs(inp, *caps), key

    def forward(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        nq = batch.queries.shape[0]
        eager = (not self.use_graphs or self.model.training != self._training or torch.is_autocast_enabled()
                 or (x is not None and x.requires_grad))
        if eager:
            return self.model(batch, x) if self.use_graphs else self._padded_eager(batch, x)
        inp, key = self.padded_inputs(batch, x)
        tensors, layout = _flatten(inp)
        graphed = self.graphs.get(key)
        if graphed is None:
            if len(self.graphs) >= self.max_graphs:
                self.eager_calls += 1
                return self.model(batch, x)
            fn = _ProxyStep(self.model, self._proxies, self._names, layout, batch.num_samples)
            sample = tuple(t.detach().clone() for t in tensors) + tuple(self._proxies)
            graphed = torch.cuda.make_graphed_callables(fn, sample, num_warmup_iters=self.warmup, allow_unused_input=True)
            self.graphs[key] = graphed
        return graphed(*tensors, *self._proxies)[:nq]

    def _padded_eager(self, batch: GeometryBatch, x: Optional[Tensor]) -> Tensor:
        """The padded step run eagerly (what the graphs replay), rows ``[:Q]``."""
        inp, _ = self.padded_inputs(batch, x)
        return gino_step(self.model, inp, batch.num_samples)[: batch.queries.shape[0]]
