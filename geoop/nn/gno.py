r"""Graph neural operator layer: an integral transform over radius balls.

For every query point :math:`x` with neighbourhood :math:`B_r(x)` among the source points,

.. math::

    v(x) = \bigoplus_{y \in B_r(x)} k(x, y, f(y)) \, [\odot \, W f(y)]

where :math:`\bigoplus` is one of the reductions

* ``"weighted"``: :math:`\sum_y w(y)\,(\cdot)` with quadrature weights :math:`w` (a Riemann
  sum of :math:`\int_{B_r(x)} k(x, y)\, f(y)\, dy`; it converges as the mesh is refined),
* ``"mean"``: :math:`\frac{1}{|B_r(x)|} \sum_y (\cdot)`,
* ``"sum"``: :math:`\sum_y (\cdot)`,

and the kernel form is one of

* ``"linear"``: :math:`k(x, y) \odot W f(y)`, :math:`k = \mathrm{MLP}([e(x), e(y)])` with
  ``out_channels`` outputs, multiplied elementwise with the source features; ``W`` is a learned
  ``in_channels -> out_channels`` linear map when the widths differ, the identity otherwise,
* ``"nonlinear"``: :math:`k(x, y, f(y)) = \mathrm{MLP}([e(x), e(y), f(y)])`,
* ``"kernel_only"``: :math:`k(x, y) = \mathrm{MLP}([e(x), e(y)])` (no source features; the
  transform of the indicator of the geometry, ``in_channels`` must be 0),

with :math:`e` a positional embedding (:mod:`geoop.nn.embeddings`). A query whose ball is
empty gets exactly 0 (also for ``"mean"``; never NaN); an empty query set gives ``(0, C_out)``.

Implementation: the kernel MLP's first layer is split,
:math:`A e(x) + B e(y) + C f(y) + b`, and evaluated once per query / source point; per edge
only a gather and an add remain for that layer. Edges are processed in chunks of consecutive
queries with at most ``chunk_edges`` edges each, reduced with ``index_add_``; in training on
more than ``checkpoint_edges`` edges the chunks are checkpointed (a custom autograd function
runs them without a graph and recomputes one chunk at a time in backward, accumulating the
per-point gradients with ``index_add_``), so the peak memory of the edge computation is
``O(chunk_edges * hidden)`` instead of ``O(E * hidden)``. The checkpointed path supports
first-order gradients only (no double backward).

Shapes
------
sources   : (S, d) float       source points y
queries   : (Q, d) float       query points x
neighbors : Neighborhoods with Q queries, indices into the S sources
f         : (S, in_channels) float or None (``kernel_only``)
weights   : (S,) float or None (required for ``"weighted"``)
output    : (Q, out_channels) float
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from ..neighbors.neighborhoods import EdgeList, Neighborhoods
from ._func import under_func_transform
from .embeddings import resolve_pos_embed
from .mlp import resolve_activation
from .segment import segment_index

__all__ = ["GNO", "GNO_KERNELS", "GNO_REDUCTIONS", "resolve_choice"]

GNO_KERNELS = ("linear", "nonlinear", "kernel_only")
GNO_REDUCTIONS = ("weighted", "mean", "sum")


def resolve_choice(value: str, choices: Sequence[str], what: str) -> str:
    """Lower-case ``value`` if it is one of ``choices``; else :class:`ConfigError` listing them."""
    key = str(value).lower()
    if key not in choices:
        raise ConfigError(f"{what}: unknown value {value!r}; valid choices: {list(choices)}")
    return key


def _edge_chunks(ptr: Tensor, chunk_edges: int) -> list[tuple[int, int, int, int]]:
    """Consecutive query ranges ``[q0, q1)`` with at most ``chunk_edges`` edges each (a single
    query with more edges forms its own chunk), with their edge ranges
    ``[e0, e1) = [ptr[q0], ptr[q1])``, as host ints (give a CPU ``ptr``, e.g.
    :meth:`Neighborhoods.ptr_host`, so that no GPU tensor is read)."""
    q = ptr.numel() - 1
    if q == 0:
        return []
    pc = ptr if ptr.device.type == "cpu" else ptr.detach().cpu()
    if int(pc[-1]) - int(pc[0]) <= chunk_edges:
        return [(0, q, int(pc[0]), int(pc[-1]))]
    out, q0 = [], 0
    while q0 < q:
        limit = pc[q0] + chunk_edges
        q1 = int(torch.searchsorted(pc, limit, right=True)) - 1
        q1 = min(max(q1, q0 + 1), q)
        out.append((q0, q1, int(pc[q0]), int(pc[q1])))
        q0 = q1
    return out


def _source_windows(index: Tensor, chunks, neighbors: Optional[Neighborhoods] = None) -> list:
    """Source window ``(lo, hi)`` (``lo <= index[e] < hi`` for the chunk's edges) of every
    chunk, or None for a chunk without edges, as host ints: one device-to-host copy for all
    chunks, memoised on ``neighbors`` (so repeated calls on the same neighbourhoods, and
    CUDA-graph capture, read no GPU tensor)."""

    def compute() -> list:
        full = [(e0, e1) for _, _, e0, e1 in chunks if e1 > e0]
        bounds = iter(torch.stack([torch.stack(torch.aminmax(index[e0:e1])) for e0, e1 in full]).tolist() if full else [])
        wins = []
        for _, _, e0, e1 in chunks:
            if e1 > e0:
                lo, hi = next(bounds)
                wins.append((int(lo), int(hi) + 1))
            else:
                wins.append(None)
        return wins

    if neighbors is None:
        return compute()
    return neighbors.host_value(("gno_source_windows", tuple(chunks)), compute)


class GNO(nn.Module):
    """Integral transform over radius neighbourhoods (see the module docstring for the maths).

    Parameters
    ----------
    in_channels : width of the source features f (0 for ``kernel="kernel_only"``)
    out_channels : width of the output v
    coord_dim : dimension d of the points
    radius : radius of the balls (informational; the neighbourhoods are given to ``forward``)
    mlp_hidden : hidden widths of the kernel MLP, e.g. ``(64, 64)``
    kernel : ``"linear"``, ``"nonlinear"`` or ``"kernel_only"``
    reduction : ``"weighted"``, ``"mean"`` or ``"sum"``
    pos_embed : ``"nerf"``, ``"sinusoidal"`` or ``"none"``/``None``
    n_freqs : number of frequencies of the positional embedding
    activation : activation of the kernel MLP (``"gelu"``, ``"relu"``, ...)
    chunk_edges : maximum number of edges processed at once on the CPU (small chunks keep the
        per-edge tensors in cache: 16k edges x 64 channels = 4 MB, faster than one big chunk)
    chunk_edges_cuda : the same on a GPU without checkpointing, where a chunk is a few kernel
        launches and host synchronisations, so chunks are larger (default 256k edges: 64 MiB
        per 64-wide per-edge tensor in float32); checkpointed calls keep ``chunk_edges``,
        whose size bounds their memory
    checkpoint : ``"auto"`` (checkpoint each chunk when gradients are needed and the call
        has more than ``checkpoint_edges`` edges), ``True`` (whenever gradients are needed)
        or ``False``
    checkpoint_edges : edge count above which ``"auto"`` checkpoints; below it the edge
        activations (about ``6 * 4 * hidden`` bytes per edge in float32) are kept

    Shapes
    ------
    forward(sources (S, d), queries (Q, d), neighbors, f (S, in_channels) | None,
    weights (S,) | None) -> (Q, out_channels)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        coord_dim: int = 3,
        radius: Optional[float] = None,
        mlp_hidden: Sequence[int] = (64, 64),
        kernel: str = "linear",
        reduction: str = "weighted",
        pos_embed: Optional[str] = "nerf",
        n_freqs: int = 8,
        activation: str = "gelu",
        chunk_edges: int = 1 << 14,
        chunk_edges_cuda: int = 1 << 18,
        checkpoint: Union[bool, str] = "auto",
        checkpoint_edges: int = 1 << 19,
    ):
        super().__init__()
        self.kernel = resolve_choice(kernel, GNO_KERNELS, "GNO kernel")
        self.reduction = resolve_choice(reduction, GNO_REDUCTIONS, "GNO reduction")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.coord_dim = int(coord_dim)
        self.radius = radius
        if self.kernel == "kernel_only" and self.in_channels != 0:
            raise ConfigError(f"GNO: kernel='kernel_only' uses no source features; in_channels must be 0, got {in_channels}")
        if self.kernel != "kernel_only" and self.in_channels <= 0:
            raise ConfigError(f"GNO: kernel={self.kernel!r} needs in_channels >= 1, got {in_channels}")
        if self.out_channels <= 0:
            raise ConfigError(f"GNO: out_channels must be >= 1, got {out_channels}")
        if checkpoint not in (True, False, "auto"):
            raise ConfigError(f"GNO: checkpoint must be True, False or 'auto', got {checkpoint!r}")
        self.chunk_edges = int(chunk_edges)
        self.chunk_edges_cuda = int(chunk_edges_cuda)
        if self.chunk_edges < 1 or self.chunk_edges_cuda < 1:
            raise ConfigError(f"GNO: chunk_edges and chunk_edges_cuda must be >= 1, got {chunk_edges} and {chunk_edges_cuda}")
        self.checkpoint = checkpoint
        self.checkpoint_edges = int(checkpoint_edges)

        self.embed = resolve_pos_embed(pos_embed, self.coord_dim, n_freqs)
        de = self.embed.out_dim
        hidden = [int(h) for h in mlp_hidden]
        h0 = hidden[0] if hidden else self.out_channels
        # first layer of the kernel MLP, split by input block
        self.lin_query = nn.Linear(de, h0, bias=True)
        self.lin_source = nn.Linear(de, h0, bias=False)
        self.lin_feature = nn.Linear(self.in_channels, h0, bias=False) if self.kernel == "nonlinear" else None
        # remaining layers, applied per edge
        rest: list[nn.Module] = []
        dims = hidden + [self.out_channels]
        for i in range(len(dims) - 1):
            rest.append(resolve_activation(activation))
            rest.append(nn.Linear(dims[i], dims[i + 1]))
        self.rest = nn.Sequential(*rest)
        self.channel_map = (
            nn.Linear(self.in_channels, self.out_channels, bias=False)
            if self.kernel == "linear" and self.in_channels != self.out_channels
            else None
        )

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel={self.kernel!r}, "
            f"reduction={self.reduction!r}, radius={self.radius}, chunk_edges={self.chunk_edges}"
        )

    # ------------------------------------------------------------------ checks
    def _check(self, sources, queries, neighbors, f, weights):
        d = self.coord_dim
        for name, t in (("sources", sources), ("queries", queries)):
            if t.dim() != 2 or t.shape[1] != d:
                raise ShapeError(f"GNO: {name} must have shape (N, {d}), got {tuple(t.shape)}")
        s, q = sources.shape[0], queries.shape[0]
        if not isinstance(neighbors, (Neighborhoods, EdgeList)):
            raise ShapeError(f"GNO: neighbors must be a Neighborhoods or an EdgeList, got {type(neighbors).__name__}")
        if neighbors.num_queries != q:
            raise ShapeError(
                f"GNO: neighbors has {neighbors.num_queries} queries, expected one per query point ({q})"
            )
        if isinstance(neighbors, Neighborhoods) and neighbors.num_sources is not None and neighbors.num_sources != s:
            raise ShapeError(f"GNO: neighbors refer to {neighbors.num_sources} sources, got {s} source points")
        if self.kernel == "kernel_only":
            if f is not None:
                raise ShapeError(
                    f"GNO: kernel='kernel_only' takes no source features, got f of shape {tuple(f.shape)}"
                )
        else:
            if f is None:
                raise ShapeError(f"GNO: kernel={self.kernel!r} needs source features f of shape ({s}, {self.in_channels})")
            if f.dim() != 2 or tuple(f.shape) != (s, self.in_channels):
                raise ShapeError(f"GNO: f must have shape ({s}, {self.in_channels}), got {tuple(f.shape)}")
        if self.reduction == "weighted":
            if weights is None:
                raise ShapeError(f"GNO: reduction='weighted' needs quadrature weights of shape ({s},)")
        if weights is not None and tuple(weights.shape) != (s,):
            raise ShapeError(f"GNO: weights must have shape ({s},), got {tuple(weights.shape)}")

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sources: Tensor,
        queries: Tensor,
        neighbors: Neighborhoods,
        f: Optional[Tensor] = None,
        weights: Optional[Tensor] = None,
        *,
        partial: bool = False,
    ):
        """Evaluate the integral transform at the queries; see the class docstring for shapes.

        ``partial=True`` returns the additive pieces ``(sums (Q, out), counts (Q,) or None)``
        instead: the un-normalised sum over the given edges and, for ``"mean"``, the edge
        count per query (None for ``"sum"``/``"weighted"``, which are plain sums). Pieces
        computed on disjoint subsets of the sources add up, and :meth:`finish` of the summed
        pieces equals the output on all sources (domain parallelism uses this).
        """
        self._check(sources, queries, neighbors, f, weights)
        dtype = self.lin_query.weight.dtype
        n_q = queries.shape[0]
        if n_q == 0:
            out = queries.new_zeros((0, self.out_channels), dtype=dtype)
            return (out, out.new_zeros(0) if self.reduction == "mean" else None) if partial else out
        # per-point parts of the first layer
        hq = self.lin_query(self.embed(queries.to(dtype)))  # (Q, H0)
        hs = self.lin_source(self.embed(sources.to(dtype)))  # (S, H0)
        if self.lin_feature is not None:
            hs = hs + self.lin_feature(f.to(dtype))
        # per-source multiplier of the edge values: W f(y) * w(y), or w(y), or nothing
        src_mult = None
        if self.kernel == "linear":
            src_mult = f.to(dtype) if self.channel_map is None else self.channel_map(f.to(dtype))
        use_w = self.reduction == "weighted"
        if use_w:
            w = weights.to(dtype)[:, None]
            src_mult = w if src_mult is None else src_mult * w

        need_grad = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (hq, hs, src_mult)
        )
        ckpt = need_grad and not under_func_transform(hq, hs) and (  # autograd.Functions do not batch under vmap
            self.checkpoint is True or (self.checkpoint == "auto" and neighbors.num_edges > self.checkpoint_edges)
        )
        if isinstance(neighbors, EdgeList):
            out = self._edge_list(hq, hs, src_mult, neighbors, ckpt)
            counts = neighbors.counts.to(dtype) if self.reduction == "mean" else None
            return (out, counts) if partial else self.finish(out, counts)
        ptr = neighbors.ptr
        index = neighbors.index
        # chunk bounds are read on the host (no GPU syncs); the checkpointed path's chunk
        # bounds its memory: chunk_edges on every device
        chunks = _edge_chunks(neighbors.ptr_host(), self.chunk_edges_cuda if hq.is_cuda and not ckpt else self.chunk_edges)
        if ckpt:
            params = [p for p in self.rest.parameters()]
            out = _CheckpointedEdges.apply(self, chunks, index, ptr, hq, hs, src_mult, *params)
        else:
            out = self._plain_edges(chunks, index, ptr, hq, hs, src_mult, neighbors)
        counts = neighbors.counts().to(dtype) if self.reduction == "mean" else None
        return (out, counts) if partial else self.finish(out, counts)

    def _edge_list(self, hq: Tensor, hs: Tensor, src_mult: Optional[Tensor], edges: EdgeList, ckpt: bool) -> Tensor:
        """All edges of an :class:`EdgeList` in one piece, reading nothing on the host (for
        ``torch.compile`` and CUDA-graph capture). Padding edges (``query == Q``) gather a
        zero query row and are summed into a spare row ``Q`` that is dropped. With ``ckpt``
        the edge MLP is recomputed in backward (``torch.utils.checkpoint``, non-reentrant,
        which ``torch.compile`` traces), whole rather than chunk by chunk."""
        n_q = hq.shape[0]

        def run(hq, hs, src_mult):
            hq1 = torch.cat([hq, hq.new_zeros((1, hq.shape[1]))])  # (Q+1, H0): row Q for padding edges
            mult_e = src_mult.index_select(0, edges.index) if src_mult is not None else None
            return self._chunk_gathered(hq1, hs.index_select(0, edges.index), mult_e, edges.query)[:n_q]

        if ckpt:
            from torch.utils.checkpoint import checkpoint

            return checkpoint(run, hq, hs, src_mult, use_reentrant=False, preserve_rng_state=False)
        return run(hq, hs, src_mult)

    @staticmethod
    def finish(sums: Tensor, counts: Optional[Tensor]) -> Tensor:
        """Output from (summed) :meth:`forward` ``partial=True`` pieces: ``sums / max(counts, 1)``
        for ``"mean"`` (an empty ball stays 0), ``sums`` otherwise."""
        if counts is None:
            return sums
        return sums / counts.clamp(min=1)[:, None]

    def _plain_edges(self, chunks, index, ptr, hq, hs, src_mult, neighbors: Optional[Neighborhoods] = None) -> Tensor:
        """All chunks under ordinary autograd (double backward works).

        Per-point tensors are cut with :func:`torch.split` (whose backward is one ``cat``)
        rather than sliced or gathered whole per chunk: a chunk's gather then only produces a
        gradient over the source window it touches, not a dense ``(S, H)`` one per chunk,
        which made a batch of B samples slower than B single calls."""
        if len(chunks) == 1:
            return self._chunk(hq, hs, src_mult, index, ptr - ptr[0])
        hq_parts = torch.split(hq, [q1 - q0 for q0, q1, _, _ in chunks])
        # source window [lo, hi) of every chunk; the sorted window ends cut the sources into
        # pieces, and a chunk gathers from the (concatenated) pieces of its own window
        wins = _source_windows(index, chunks, neighbors)
        n_src = hs.shape[0]
        cuts = sorted({0, n_src}.union(*[set(w) for w in wins if w is not None]))
        pos = {c: i for i, c in enumerate(cuts)}
        sizes = [b - a for a, b in zip(cuts, cuts[1:])]
        hs_pieces = torch.split(hs, sizes)
        mult_pieces = torch.split(src_mult, sizes) if src_mult is not None else None

        def window(pieces, k0, k1):
            return pieces[k0] if k1 == k0 + 1 else torch.cat(pieces[k0:k1])

        outs = []
        for c, (q0, q1, e0, e1) in enumerate(chunks):
            if wins[c] is None:
                outs.append(hq_parts[c].new_zeros((q1 - q0, self.out_channels)))
                continue
            lo, hi = wins[c]
            k0, k1 = pos[lo], pos[hi]
            hs_c = window(hs_pieces, k0, k1)
            mult_c = window(mult_pieces, k0, k1) if mult_pieces is not None else None
            outs.append(self._chunk(hq_parts[c], hs_c, mult_c, index[e0:e1] - lo, ptr[q0 : q1 + 1] - e0))
        return torch.cat(outs)

    def _chunk(self, hq: Tensor, hs: Tensor, src_mult: Optional[Tensor], src: Tensor, local_ptr: Tensor) -> Tensor:
        """Edge computation for one chunk of queries: (q, H0) per-query, (S, H0) per-source
        pre-activations -> (q, out_channels) sums over the chunk's edges."""
        qloc = segment_index(local_ptr, src.numel())
        mult_e = src_mult.index_select(0, src) if src_mult is not None else None
        return self._chunk_gathered(hq, hs.index_select(0, src), mult_e, qloc)

    def _chunk_gathered(self, hq: Tensor, hs_e: Tensor, mult_e: Optional[Tensor], qloc: Tensor) -> Tensor:
        """As :meth:`_chunk`, from per-edge gathered source rows ``hs_e`` (e, H0) and
        ``mult_e`` (e, C) and the local query row of every edge ``qloc`` (e,)."""
        h = self.rest(hq.index_select(0, qloc) + hs_e)
        if mult_e is not None:
            h = h * mult_e
        return h.new_zeros((hq.shape[0], h.shape[1])).index_add_(0, qloc, h)


class _CheckpointedEdges(torch.autograd.Function):
    """The chunked edge computation with activation recomputation.

    Forward runs every chunk without recording a graph; backward recomputes one chunk at a
    time from the per-point inputs and accumulates the gradients of the per-point tensors with
    ``index_add_`` into preallocated buffers. Peak memory is ``O(chunk_edges * hidden)``
    plus the per-point tensors, and no per-chunk dense ``(S, H)`` gradient is materialised
    (which plain ``torch.utils.checkpoint`` around each chunk does, through the gather's
    backward). First-order gradients only (no double backward).
    """

    @staticmethod
    def forward(ctx, layer, chunks, index, ptr, hq, hs, src_mult, *params):
        """``chunks``: ``(q0, q1, e0, e1)`` query and edge ranges (host ints)."""
        ctx.layer, ctx.chunks = layer, chunks
        ctx.has_mult = src_mult is not None
        ctx.save_for_backward(index, ptr, hq, hs, src_mult if src_mult is not None else hq.new_zeros(0))
        out = hq.new_zeros((hq.shape[0], layer.out_channels))
        for q0, q1, e0, e1 in chunks:
            out[q0:q1] = layer._chunk(hq[q0:q1], hs, src_mult, index[e0:e1], ptr[q0 : q1 + 1] - e0)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gout):
        index, ptr, hq, hs, src_mult = ctx.saved_tensors
        layer = ctx.layer
        params = list(layer.rest.parameters())
        need_hq, need_hs, need_mult = ctx.needs_input_grad[4], ctx.needs_input_grad[5], ctx.needs_input_grad[6]
        need_p = [ctx.needs_input_grad[7 + i] for i in range(len(params))]
        g_hq = torch.zeros_like(hq) if need_hq else None
        g_hs = torch.zeros_like(hs) if need_hs else None
        g_mult = torch.zeros_like(src_mult) if (ctx.has_mult and need_mult) else None
        g_p = [torch.zeros_like(p) if n else None for p, n in zip(params, need_p)]
        for q0, q1, e0, e1 in ctx.chunks:
            if e1 == e0:
                continue
            qloc = segment_index(ptr[q0 : q1 + 1], e1 - e0)
            src = index[e0:e1]
            with torch.enable_grad():
                hq_c = hq[q0:q1].detach().requires_grad_(need_hq)
                hs_e = hs.index_select(0, src).requires_grad_(need_hs)
                m_e = src_mult.index_select(0, src).requires_grad_(need_mult) if ctx.has_mult else None
                out_c = layer._chunk_gathered(hq_c, hs_e, m_e, qloc)
                inputs, slots = [], []
                for name, t, n in (("hq", hq_c, need_hq), ("hs", hs_e, need_hs), ("m", m_e, need_mult and ctx.has_mult)):
                    if n:
                        inputs.append(t)
                        slots.append(name)
                for i, (p, n) in enumerate(zip(params, need_p)):
                    if n:
                        inputs.append(p)
                        slots.append(i)
                if not inputs:
                    continue
                grads = torch.autograd.grad(out_c, inputs, gout[q0:q1], allow_unused=True)
            for slot, g in zip(slots, grads):
                if g is None:
                    continue
                if slot == "hq":
                    g_hq[q0:q1] += g
                elif slot == "hs":
                    g_hs.index_add_(0, src, g)
                elif slot == "m":
                    g_mult.index_add_(0, src, g)
                else:
                    g_p[slot] += g
        return (None, None, None, None, g_hq, g_hs, g_mult, *g_p)
