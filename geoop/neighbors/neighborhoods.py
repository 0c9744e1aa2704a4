"""The :class:`Neighborhoods` type: a CSR list of source indices per query point.

Shapes
------
index : (E,) long   source index of each edge, grouped by query
ptr   : (Q+1,) long edges of query q are ``index[ptr[q]:ptr[q+1]]``
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ShapeError

__all__ = ["Neighborhoods", "EdgeList"]


class EdgeList(NamedTuple):
    """Neighbourhoods as three tensors, for code that must not read anything on the host
    (``torch.compile``d or CUDA-graph-captured steps): a :class:`Neighborhoods` needs its
    offsets on the host to cut the edges into chunks, an EdgeList is processed in one piece.

    ``query[e] == num_queries`` (one past the last query) marks a padding edge: its value
    lands in a spare row that is dropped, so it contributes exactly nothing (see
    :meth:`Neighborhoods.edge_list` and ``geoop.models.compiled``).

    Shapes
    ------
    index  : (E,) long, source index of each edge (any valid index for a padding edge)
    query  : (E,) long, query of each edge, in ``[0, Q]``
    counts : (Q,) neighbours of each query (padding edges not counted; the ``"mean"``
             reduction divides by it)
    """

    index: Tensor
    query: Tensor
    counts: Tensor

    @property
    def num_queries(self) -> int:
        return self.counts.shape[0]

    @property
    def num_edges(self) -> int:
        return self.index.shape[0]


@dataclass
class Neighborhoods:
    """For each query point, the indices of the source points in its ball.

    Attributes
    ----------
    index : (E,) long, source indices; within one query's slice they are sorted ascending
        by every backend (so results compare exactly)
    ptr : (Q+1,) long, CSR offsets over the queries, ``ptr[0] == 0``, ``ptr[-1] == E``
    num_sources : number of source points the indices refer to (for validation / batching)
    radius : the radius used (informational)
    """

    index: Tensor
    ptr: Tensor
    num_sources: Optional[int] = None
    radius: Optional[float] = None
    #: host-side values derived from ``index``/``ptr`` (see :meth:`host_value`)
    _host_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------- properties
    @property
    def num_queries(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def num_edges(self) -> int:
        return int(self.index.numel())

    @property
    def device(self) -> torch.device:
        return self.index.device

    def counts(self) -> Tensor:
        """(Q,) number of neighbours of each query."""
        return self.ptr[1:] - self.ptr[:-1]

    def query_index(self) -> Tensor:
        """(E,) the query of each edge (the CSR expanded to COO rows)."""
        return torch.repeat_interleave(
            torch.arange(self.num_queries, device=self.device), self.counts(), output_size=self.num_edges
        )

    def edge_list(self) -> EdgeList:
        """The same neighbourhoods as an :class:`EdgeList` (index, query of every edge, counts)."""
        return EdgeList(self.index, self.query_index(), self.counts())

    def host_value(self, key, compute):
        """``compute()`` once per Neighborhoods and ``key``: a host-side value derived from
        ``index``/``ptr`` (on a GPU, reading them again would be a synchronisation). Valid
        because a Neighborhoods is never mutated; :meth:`to` carries the values along."""
        if key not in self._host_cache:
            self._host_cache[key] = compute()
        return self._host_cache[key]

    def ptr_host(self) -> Tensor:
        """(Q+1,) ``ptr`` on the CPU, copied once and cached (layers that cut the edges into
        chunks read the offsets on the host)."""
        return self.host_value("ptr", lambda: self.ptr if self.ptr.device.type == "cpu" else self.ptr.detach().cpu())

    def to(self, device) -> "Neighborhoods":
        out = Neighborhoods(self.index.to(device), self.ptr.to(device), self.num_sources, self.radius)
        out._host_cache.update(self._host_cache)
        if self.ptr.device.type == "cpu":
            out._host_cache.setdefault("ptr", self.ptr)
        return out

    def __repr__(self) -> str:
        return (
            f"Neighborhoods(queries={self.num_queries}, edges={self.num_edges}, "
            f"sources={self.num_sources}, radius={self.radius})"
        )

    # ------------------------------------------------------------- checks
    def validate(self) -> "Neighborhoods":
        """Check CSR invariants; raise :class:`ShapeError` when broken."""
        if self.index.dim() != 1 or self.ptr.dim() != 1 or self.ptr.numel() < 1:
            raise ShapeError(
                f"Neighborhoods: index must be (E,) and ptr (Q+1,), got {tuple(self.index.shape)} "
                f"and {tuple(self.ptr.shape)}"
            )
        if int(self.ptr[0]) != 0 or int(self.ptr[-1]) != self.num_edges:
            raise ShapeError(
                f"Neighborhoods: ptr must start at 0 and end at E={self.num_edges}, got "
                f"{int(self.ptr[0])}..{int(self.ptr[-1])}"
            )
        if self.num_queries and bool((self.counts() < 0).any()):
            raise ShapeError("Neighborhoods: ptr must be non-decreasing")
        if self.num_sources is not None and self.num_edges:
            lo, hi = int(self.index.min()), int(self.index.max())
            if lo < 0 or hi >= self.num_sources:
                raise ShapeError(
                    f"Neighborhoods: index must be in [0, {self.num_sources - 1}], got [{lo}, {hi}]"
                )
        return self

    # ------------------------------------------------------------- transforms
    def to_sets(self) -> list[set[int]]:
        """Python sets per query (for tests and debugging)."""
        idx = self.index.tolist()
        p = self.ptr.tolist()
        return [set(idx[p[i] : p[i + 1]]) for i in range(self.num_queries)]

    def sorted(self) -> "Neighborhoods":
        """Same neighbourhoods with indices sorted ascending inside each query's slice."""
        if self.num_edges == 0:
            return self
        q = self.query_index()
        key = q * (int(self.index.max()) + 1) + self.index
        order = torch.argsort(key)
        return Neighborhoods(self.index[order], self.ptr, self.num_sources, self.radius)

    @staticmethod
    def from_coo(
        query: Tensor, source: Tensor, num_queries: int, num_sources: Optional[int] = None, radius=None
    ) -> "Neighborhoods":
        """Build from edge lists ``(query, source)`` in any order; sorts by (query, source)."""
        if query.numel():
            ns = int(source.max()) + 1 if num_sources is None else num_sources
            order = torch.argsort(query.long() * max(ns, 1) + source.long())
            query, source = query[order], source[order]
        counts = torch.bincount(query.long(), minlength=num_queries)
        ptr = torch.zeros(num_queries + 1, dtype=torch.long, device=query.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        return Neighborhoods(source.long(), ptr, num_sources, radius)

    def subsample(self, max_neighbors: int, generator: Optional[torch.Generator] = None) -> "Neighborhoods":
        """Keep at most ``max_neighbors`` per query, a uniformly random subset (without
        replacement) of each ball, so the estimate of a mean over the ball stays unbiased.
        Kept indices stay sorted within each query."""
        counts = self.counts()
        if self.num_edges == 0 or int(counts.max()) <= max_neighbors:
            return self
        q = self.query_index()
        # random key per edge, rank edges inside their query by the key
        r = torch.rand(self.num_edges, generator=generator, dtype=torch.float64).to(self.device)
        order = torch.argsort(q.to(torch.float64) * 2.0 + r)  # sorts by query, then by random key
        rank = torch.empty_like(order)
        # rank of each edge inside its query after the random shuffle
        pos = torch.arange(self.num_edges, device=self.device) - torch.repeat_interleave(self.ptr[:-1], counts)
        rank[order] = pos
        keep = rank < max_neighbors
        new_counts = torch.clamp(counts, max=max_neighbors)
        ptr = torch.zeros_like(self.ptr)
        torch.cumsum(new_counts, 0, out=ptr[1:])
        return Neighborhoods(self.index[keep], ptr, self.num_sources, self.radius)

    def select(self, query_rows: Tensor) -> "Neighborhoods":
        """The neighbourhoods of the queries ``query_rows`` (K,) (long indices, any order,
        repeats allowed), in that order: query ``k`` of the result is query
        ``query_rows[k]`` of this one, with the same sources. For training loops that draw
        a fresh subset of precomputed queries every step instead of searching again."""
        rows = torch.as_tensor(query_rows, dtype=torch.long, device=self.device).reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self.num_queries):
            raise ShapeError(f"Neighborhoods.select: query rows must be in [0, {self.num_queries}), got "
                             f"[{int(rows.min())}, {int(rows.max())}]")
        counts = self.counts()[rows]
        ptr = torch.zeros(rows.numel() + 1, dtype=torch.long, device=self.device)
        torch.cumsum(counts, 0, out=ptr[1:])
        total = int(ptr[-1])
        edge = torch.arange(total, device=self.device) - torch.repeat_interleave(ptr[:-1] - self.ptr[rows], counts, output_size=total)
        return Neighborhoods(self.index[edge], ptr, self.num_sources, self.radius)

    @staticmethod
    def cat(parts: Sequence["Neighborhoods"], source_offsets: Optional[Sequence[int]] = None) -> "Neighborhoods":
        """Concatenate per-sample neighbourhoods into one over the concatenated queries.

        ``source_offsets[b]`` is added to the indices of part b; by default the cumulative
        ``num_sources`` of the previous parts (so sources concatenate in the same order).
        """
        if not parts:
            raise ShapeError("Neighborhoods.cat: need at least one part")
        if source_offsets is None:
            if any(p.num_sources is None for p in parts):
                raise ShapeError("Neighborhoods.cat: num_sources unknown; pass source_offsets")
            offs, acc = [], 0
            for p in parts:
                offs.append(acc)
                acc += p.num_sources
            total_sources = acc
        else:
            offs = list(source_offsets)
            total_sources = None
        index = torch.cat([p.index + o for p, o in zip(parts, offs)])
        ptrs, e = [parts[0].ptr.new_zeros(1)], 0
        for p in parts:
            ptrs.append(p.ptr[1:] + e)
            e += p.num_edges
        return Neighborhoods(index, torch.cat(ptrs), total_sources, parts[0].radius)

    def split(self, query_counts: Sequence[int], source_offsets: Sequence[int]) -> list["Neighborhoods"]:
        """Inverse of :meth:`cat` given the per-part query counts and source offsets."""
        out, q0 = [], 0
        for nq, off in zip(query_counts, source_offsets):
            p = self.ptr[q0 : q0 + nq + 1]
            e0, e1 = int(p[0]), int(p[-1])
            out.append(Neighborhoods(self.index[e0:e1] - off, p - e0, None, self.radius))
            q0 += nq
        return out
