r"""Domain parallelism: one geometry's points and queries split across the ranks of a group.

A GINO's encoder is a sum over input points: for latent node :math:`z_g`,

.. math::

    u(z_g) = \frac{\sum_j a_{gj}\, k(z_g, y_j)\,[W f_j]}{\sum_j a_{gj}\, c_j}

with :math:`a_{gj} = 1` when :math:`|z_g - y_j| \le r_{in}` (and the quadrature weight
:math:`w_j` inside the numerator for ``"weighted"``), :math:`c_j = 1` for ``"mean"`` and no
denominator for ``"sum"``/``"weighted"``. With the points split into disjoint rank shards
:math:`S_r`, numerator and denominator are sums over ranks of per-shard sums, so

1. every rank computes its shard's pieces (:meth:`GINO.encode_partial`: the sums and, for
   ``"mean"``, the edge counts) for all ``B * G`` latent nodes,
2. one all-reduce (SUM) over the group gives the whole geometry's pieces on every rank, the
   division (:meth:`GNO.finish`), lifting and latent blocks run replicated on every rank
   (identical inputs and parameters give identical latents),
3. every rank decodes its own queries. Local-geometry features (``local_radius`` /
   ``local_nearest``) need the whole sample's input points near each query: the points (and
   their input features, without gradient, as data) are all-gathered once per call, so
   every rank holds ``N * (d + in_channels + 1)`` numbers: small next to the encoder's
   edges, but not sharded.

Gradients. The all-reduce is the map :math:`y_r = \sum_s x_s` for every rank :math:`r`.
Each rank's loss :math:`L_r` depends on its copy :math:`y_r`, and the objective is
:math:`L = \sum_r L_r`; the vector-Jacobian product is
:math:`\partial L / \partial x_s = \sum_r \partial L_r / \partial y_r`, i.e. the backward of
the all-reduce is an all-reduce (SUM) of the incoming gradients (:func:`all_reduce_sum`).
After ``backward`` every rank holds in its parameters' ``.grad`` the part of
:math:`\partial L / \partial \theta` that went through its own computation, and
:meth:`DomainParallel.sync_gradients` sums them over the group. So: **each rank's loss must
be its share of the objective** (e.g. a sum over its own queries, or a loss computed
identically on every rank divided by the group size); then, after ``sync_gradients``, every
rank holds the gradient of the one-process objective on the whole geometry.

Cost per rank: the encoder edges, the encoder's search and the decoder split by W; the latent
``(B, W, *grid)`` tensor, its FFTs and the spectral weights are replicated (for a 32^3 grid
of width 32: 4 MiB per tensor, a few dozen tensors live in training), as is one all-reduce
of ``B * G * (enc + 1)`` numbers forward and backward. That replicated part stays fixed as
the geometry grows; it would need sharding too (a distributed FFT) only when the latent grid
itself outgrows one device (about 256^3 at width 32: 2 GiB per activation).

Consistency checks: every call all-gathers a few numbers per rank (number of samples,
input-feature width, latent-feature checksum, a checksum per parameter tensor) and raises
:class:`DistributedError` on every rank alike when they disagree, so a mistake is an error,
never a hang or a silently wrong gradient.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..batch import GeometryBatch
from ..errors import DistributedError, ShapeError
from ..geometry.geometry import Geometry

__all__ = ["DomainParallel", "all_reduce_sum", "all_gather_rows", "parameter_checksums"]


class _AllReduceSum(torch.autograd.Function):
    """y = Σ_ranks x (every rank gets y); backward: grad_x = Σ_ranks grad_y (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        y = x.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM, group=group)
        return y

    @staticmethod
    def backward(ctx, g: Tensor):
        g = g.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


class _Anchor(torch.autograd.Function):
    """Identity on ``out`` whose backward also reaches ``latent`` (with a zero gradient), so
    that every rank's backward runs the latent's all-reduce, even a rank whose output does
    not depend on the latent (no queries): otherwise that rank would skip the collective and
    the others would wait for it."""

    @staticmethod
    def forward(ctx, out: Tensor, latent: Tensor) -> Tensor:
        ctx.save_for_backward(latent)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g: Tensor):
        (latent,) = ctx.saved_tensors
        return g, torch.zeros_like(latent)


def all_reduce_sum(x: Tensor, group=None) -> Tensor:
    """Sum of ``x`` over the ranks of ``group`` on every rank, differentiable: the gradient
    of ``Σ_r L_r`` flows back to every rank's ``x`` (see the module docstring)."""
    return _AllReduceSum.apply(x, group)


def all_gather_rows(t: Tensor, group=None) -> Tensor:
    """Concatenation in rank order of every rank's ``t`` (n_r, *rest), n_r may differ
    (padded to the largest for the collective). No gradient."""
    world = dist.get_world_size(group)
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes = [int(s) for s in sizes]
    m = max(sizes)
    pad = t.detach().new_zeros((m,) + tuple(t.shape[1:]))
    pad[: t.shape[0]] = t.detach()
    bufs = [torch.empty_like(pad) for _ in range(world)]
    dist.all_gather(bufs, pad.contiguous(), group=group)
    return torch.cat([b[:s] for b, s in zip(bufs, sizes)])


def parameter_checksums(module: nn.Module) -> Tensor:
    """(P, 2) float64: sum and sum of squares of every parameter tensor (real and imaginary
    parts of a complex one; of the local shard of a sharded one, which the ranks of a domain
    group share under FSDP), for the replica check."""

    def two(p: Tensor) -> Tensor:
        p = p.to_local() if hasattr(p, "to_local") else p  # a DTensor (FSDP): this rank's shard
        r = torch.view_as_real(p.detach()) if p.is_complex() else p.detach()
        return torch.stack([r.sum(dtype=torch.float64), r.square().sum(dtype=torch.float64)])

    rows = [two(p) for p in module.parameters()]
    return torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


class DomainParallel(nn.Module):
    """A :class:`geoop.models.GINO` whose geometry is split across the ranks of ``group``
    (see the module docstring for the maths, the gradient convention and the cost).

    Every rank passes ITS shard (:func:`geoop.distributed.shard`) of the same B samples:
    ``forward(batch, x)`` returns the predictions at this rank's queries, ``query(geometry,
    points)`` at this rank's points. After ``loss.backward()`` call :meth:`sync_gradients`.

    Parameters
    ----------
    model : the GINO (same parameters on every rank: checked at construction and in every
        call; :meth:`broadcast_parameters` copies rank 0's)
    group : a ``torch.distributed`` process group (default: the whole world)
    check : all-gather the consistency numbers at construction and in every call (one tiny
        collective); False skips them (e.g. to call :meth:`broadcast_parameters` on replicas
        known to differ)

    Raises
    ------
    DistributedError
        no initialised process group; ranks holding different numbers of samples, input
        widths or latent features; parameters differing across ranks.
    """

    def __init__(self, model: nn.Module, group=None, check: bool = True):
        super().__init__()
        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError(
                "DomainParallel needs an initialised torch.distributed process group (launch with torchrun and call "
                "geoop.train.distributed.init_distributed() or torch.distributed.init_process_group() first); none is"
            )
        for name in ("encode_partial", "encode_finish", "decode"):
            if not callable(getattr(model, name, None)):
                raise DistributedError(f"DomainParallel wraps a GINO (with {name}); got {type(model).__name__}")
        self.module = model
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.check = bool(check)
        self._check_consistency(None, None, None)

    # ------------------------------------------------------------------ passthrough
    @property
    def config(self):
        return getattr(self.module, "config", None)

    def precompute(self, sample):
        """``module.precompute`` of this rank's shard of ``sample``."""
        from .shard import shard

        return self.module.precompute(shard(sample, self.rank, self.world_size))

    # ------------------------------------------------------------------ checks
    def _check_consistency(self, num_samples: Optional[int], x: Optional[Tensor], latent_features: Optional[Tensor]) -> None:
        """All-gather (B, x width, latent-feature sum, parameter checksums) and compare."""
        if not self.check:
            return
        dev = next(self.module.parameters()).device
        lf = -1.0 if latent_features is None else float(latent_features.detach().double().sum())
        head = torch.tensor([-1 if num_samples is None else num_samples, -1 if x is None else x.shape[1], lf],
                            dtype=torch.float64, device=dev)
        mine = torch.cat([head, parameter_checksums(self.module).to(dev).flatten()])
        table = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(table, mine, group=self.group)
        t = torch.stack(table)
        what = None
        if not bool((t[:, 0] == t[0, 0]).all()):
            what = f"numbers of samples per rank {t[:, 0].long().tolist()} (every rank must hold a shard of the same B samples)"
        elif not bool((t[:, 1] == t[0, 1]).all()):
            what = f"input feature widths per rank {t[:, 1].long().tolist()} (-1: none)"
        elif not bool(torch.isclose(t[:, 2], t[0, 2], rtol=1e-9, atol=0).all()):
            what = f"latent_features checksums per rank {t[:, 2].tolist()} (latent features are replicated, not sharded)"
        else:
            diff = (t[:, 3:] != t[0, 3:]).any(0).nonzero()
            if diff.numel():
                names = [n for n, _ in self.module.named_parameters()]
                k = int(diff[0]) // 2
                what = (f"model parameters: {names[k]!r} has checksums {t[:, 3 + 2 * k].tolist()} across ranks "
                        f"(load the same checkpoint or call broadcast_parameters())")
        if what is not None:
            raise DistributedError(f"DomainParallel: the {self.world_size} ranks of the group disagree on {what}")

    # ------------------------------------------------------------------ collectives
    def broadcast_parameters(self) -> None:
        """Copy group rank 0's parameters and buffers to every rank."""
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        with torch.no_grad():
            for t in list(self.module.parameters()) + list(self.module.buffers()):
                dist.broadcast(t.data, src=src, group=self.group)

    def sync_gradients(self) -> None:
        """Sum the parameters' ``.grad`` over the group (one all-reduce; a missing gradient
        counts as zero): afterwards every rank holds the whole objective's gradient."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        o = 0
        for p in params:
            n = p.numel()
            g = flat[o : o + n].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)
            o += n

    def all_reduce(self, t: Tensor) -> Tensor:
        """Differentiable sum of ``t`` over the group (:func:`all_reduce_sum`)."""
        return all_reduce_sum(t, self.group)

    # ------------------------------------------------------------------ stages
    def encode(self, points: Tensor, x: Optional[Tensor], weights: Optional[Tensor], point_batch: Optional[Tensor],
               num_samples: int, neighbors_in=None, latent_features: Optional[Tensor] = None) -> Tensor:
        """The whole samples' latent (B, W, *grid), identical on every rank, from this rank's
        input points (one all-reduce of the encoder's pieces)."""
        m = self.module
        sums, counts = m.encode_partial(points, x, weights, point_batch, num_samples, neighbors_in)
        if counts is None:
            sums = self.all_reduce(sums)
        else:
            both = self.all_reduce(torch.cat([sums, counts[:, None].to(sums.dtype)], 1))
            sums, counts = both[:, :-1], both[:, -1].detach()
        return m.encode_finish(sums, counts, latent_features, num_samples)

    def _needs_points(self) -> bool:
        m = self.module
        return getattr(m, "gno_local", None) is not None or bool(getattr(m, "local_nearest", False))

    def _whole_points(self, points: Tensor, x: Optional[Tensor], point_batch: Optional[Tensor], num_samples: int):
        """All ranks' input points (and x), grouped by sample: (ΣN, d), (ΣN, C) | None, (ΣN,) | None."""
        d = points.shape[1]
        pb = point_batch if point_batch is not None else torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
        parts = [points, pb[:, None].to(points.dtype)]
        if x is not None:
            parts.insert(1, x.detach().to(points.dtype))
        allp = all_gather_rows(torch.cat(parts, 1), self.group)
        b = allp[:, -1].round().long()
        order = torch.argsort(b, stable=True)
        allp, b = allp[order], b[order]
        xs = allp[:, d:-1].to(x.dtype) if x is not None else None
        return allp[:, :d], xs, (b if num_samples > 1 else None)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: GeometryBatch, x: Optional[Tensor] = None) -> Tensor:
        """This rank's predictions (ΣQ_r, out) for its shard ``batch`` of the B samples
        (``x``: (ΣN_r, in_channels) input features of its points, or None)."""
        if not isinstance(batch, GeometryBatch):
            raise ShapeError(f"DomainParallel.forward: expected a GeometryBatch, got {type(batch).__name__}")
        B = batch.num_samples
        self._check_consistency(B, x, batch.latent_features)
        latent = self.encode(batch.points, x, batch.weights, batch.batch, B, batch.neighbors_in, batch.latent_features)
        pts, xs, pb = batch.points, x, batch.batch
        if self._needs_points():
            pts, xs, pb = self._whole_points(batch.points, x, batch.batch, B)
        out = self.module.decode(latent, batch.queries, batch.query_batch, batch.neighbors_out, pts, xs, pb)
        return _Anchor.apply(out, latent) if latent.requires_grad else out

    def encode_geometry(self, geometry: Union[Geometry, Tensor], x: Optional[Tensor] = None,
                        latent_features: Optional[Tensor] = None):
        """This rank's shard of ONE geometry -> ``(latent (1, W, *grid), points, x)``: the
        whole geometry's latent (identical on every rank) and the input points / features
        that the decoder's local features need (all ranks' when it has local features, else
        this rank's). ``geometry``: a Geometry from :func:`shard` (whole-geometry quadrature
        weights) or (N_r, d) points (uniform weights 1 / N over all ranks);
        ``latent_features``: (latent_channels, *grid) or None."""
        if isinstance(geometry, Geometry):
            pts, w = geometry.points, geometry.weights
        else:
            pts = torch.as_tensor(geometry)
            n = torch.tensor([float(pts.shape[0])], dtype=torch.float64, device=pts.device)
            dist.all_reduce(n, group=self.group)
            w = torch.full((pts.shape[0],), 1.0 / max(float(n), 1.0), dtype=pts.dtype, device=pts.device)
        lf = None if latent_features is None else latent_features.unsqueeze(0)
        self._check_consistency(1, x, lf)
        latent = self.encode(pts, x, w, None, 1, None, lf)
        if self._needs_points():
            lp, lx, _ = self._whole_points(pts, x, None, 1)
            return latent, lp, lx
        return latent, pts, x

    def query(
        self,
        geometry: Union[Geometry, Tensor],
        points: Tensor,
        x: Optional[Tensor] = None,
        chunk_size: int = 65536,
        latent_features: Optional[Tensor] = None,
    ) -> Tensor:
        """As :meth:`GINO.query`, with this rank's shard of the geometry (a Geometry from
        :func:`shard`, carrying the whole geometry's quadrature weights, or its (N_r, d)
        points: uniform weights 1 / N over all ranks) and this rank's query points.
        (:func:`geoop.distributed.stream_query` answers a query set too large to hold twice.)"""
        m = self.module
        q = torch.as_tensor(points)
        if q.dim() != 2 or q.shape[1] != m.coord_dim:
            raise ShapeError(f"DomainParallel.query: points must have shape (Q, {m.coord_dim}), got {tuple(q.shape)}")
        latent, lp, lx = self.encode_geometry(geometry, x, latent_features)
        q = q.to(lp.device)
        cs = max(1, int(chunk_size))
        outs = [m.decode(latent, q[i : i + cs], points=lp, x=lx) for i in range(0, q.shape[0], cs)]
        out = torch.cat(outs) if outs else latent.new_zeros((0, m.out_channels))
        return _Anchor.apply(out, latent) if latent.requires_grad else out
