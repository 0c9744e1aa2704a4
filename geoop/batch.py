"""Batches of geometries of different sizes.

B samples are concatenated along the point axis; each point set (input points, query
points) keeps its own ``ptr`` (B+1,) and ``batch`` (ΣN,) vectors. Which tensors receive an
index offset when concatenated is declared explicitly in :data:`GeometryBatch.INDEX_OFFSETS`
(cells get the input-point offset; precomputed neighbourhoods get the offset of the point
set their indices refer to), never guessed from attribute names.

Shapes (B samples, N_b input points and Q_b queries in sample b)
------
points        : (ΣN_b, d)          ptr : (B+1,)  batch : (ΣN_b,)
weights       : (ΣN_b,)            normals : (ΣN_b, d) or None
fields        : name -> (ΣN_b, C)
queries       : (ΣQ_b, d)          query_ptr : (B+1,)  query_batch : (ΣQ_b,)
query_fields  : name -> (ΣQ_b, C)
query_weights : (ΣQ_b,)
latent_features : (B, C, *grid) or None
neighbors_in  : Neighborhoods over B*G latent queries, indices into ``points``, or None
neighbors_out : Neighborhoods over ΣQ_b queries, indices into the B*G latent points, or None
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import FieldError, ShapeError
from .geometry.geometry import Geometry
from .neighbors.neighborhoods import Neighborhoods

__all__ = ["Sample", "GeometryBatch", "collate"]


@dataclass
class Sample:
    """One training / inference sample: an input geometry, its query points and optional
    precomputed pieces (geometry is computed outside ``forward``).

    geometry        : input points with fields (the GNO encoder's sources)
    queries         : query points with target fields, or None (query = input points)
    latent_features : (C, *grid) features on the latent grid (e.g. SDF), or None
    neighbors_in    : Neighborhoods (G latent points -> N input points) or None
    neighbors_out   : Neighborhoods (Q queries -> G latent points) or None
    meta            : free-form per-sample information (case name, transforms...)
    """

    geometry: Geometry
    queries: Optional[Geometry] = None
    latent_features: Optional[Tensor] = None
    neighbors_in: Optional[Neighborhoods] = None
    neighbors_out: Optional[Neighborhoods] = None
    meta: dict = field(default_factory=dict)


def _ptr_from_counts(counts: Sequence[int], device=None) -> Tensor:
    ptr = torch.zeros(len(counts) + 1, dtype=torch.long, device=device)
    if len(counts):
        ptr[1:] = torch.cumsum(torch.as_tensor(list(counts), dtype=torch.long, device=device), 0)
    return ptr


def _batch_from_ptr(ptr: Tensor) -> Tensor:
    counts = ptr[1:] - ptr[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts)


def _cat_fields(geoms: Sequence[Geometry], kind: str) -> dict[str, Tensor]:
    """Concatenate the point fields every sample has; a field missing in some samples or
    with different widths is an error naming the sample."""
    if not geoms:
        return {}
    names = list(geoms[0].fields)
    out = {}
    for name in names:
        parts = []
        for i, g in enumerate(geoms):
            if name not in g.fields:
                raise FieldError(
                    f"GeometryBatch: {kind} field {name!r} is present in sample 0 but missing in "
                    f"sample {i} ({g.source or g.name or 'unnamed'})"
                )
            parts.append(g.fields[name])
        widths = {p.shape[1] for p in parts}
        if len(widths) > 1:
            raise FieldError(f"GeometryBatch: {kind} field {name!r} has different widths {sorted(widths)} across samples")
        out[name] = torch.cat(parts)
    for i, g in enumerate(geoms):
        extra = set(g.fields) - set(names)
        if extra:
            raise FieldError(
                f"GeometryBatch: sample {i} has {kind} fields {sorted(extra)} that sample 0 lacks"
            )
    return out


class GeometryBatch:
    """B geometries of different sizes (and B query sets of different sizes) in one object.

    Build with :meth:`from_geometries` or :meth:`from_samples` (the DataLoader collate);
    split back with :meth:`unbatch`, :meth:`unbatch_queries`, :meth:`split_points`,
    :meth:`split_queries`.
    """

    #: attribute -> which point set its integer entries index (offset added when batching)
    INDEX_OFFSETS = {
        "cells": "points",
        "neighbors_in.index": "points",
        "neighbors_out.index": "latent",
    }

    def __init__(
        self,
        points: Tensor,
        ptr: Tensor,
        *,
        weights: Tensor,
        normals: Optional[Tensor] = None,
        fields: Optional[dict] = None,
        queries: Tensor,
        query_ptr: Tensor,
        query_fields: Optional[dict] = None,
        query_weights: Optional[Tensor] = None,
        query_normals: Optional[Tensor] = None,
        cells: Optional[dict] = None,
        cell_ptr: Optional[dict] = None,
        latent_features: Optional[Tensor] = None,
        neighbors_in: Optional[Neighborhoods] = None,
        neighbors_out: Optional[Neighborhoods] = None,
        meta: Optional[list] = None,
        symmetry: Optional[list] = None,
    ):
        self.points = points
        self.ptr = ptr
        self.batch = _batch_from_ptr(ptr)
        self.weights = weights
        self.normals = normals
        self.fields = dict(fields or {})
        self.queries = queries
        self.query_ptr = query_ptr
        self.query_batch = _batch_from_ptr(query_ptr)
        self.query_fields = dict(query_fields or {})
        self.query_weights = query_weights
        self.query_normals = query_normals
        self.cells = dict(cells or {})
        self.cell_ptr = dict(cell_ptr or {})
        self.latent_features = latent_features
        self.neighbors_in = neighbors_in
        self.neighbors_out = neighbors_out
        self.meta = list(meta) if meta is not None else [{} for _ in range(self.num_samples)]
        #: per sample, the input geometry's symmetry plane (or None), given back by unbatch()
        self.symmetry = list(symmetry) if symmetry is not None else [None] * self.num_samples

    # ----------------------------------------------------------------- build
    @classmethod
    def from_geometries(
        cls,
        geometries: Sequence[Geometry],
        queries: Optional[Sequence[Union[Geometry, Tensor]]] = None,
        *,
        latent_features: Optional[Sequence[Tensor]] = None,
        neighbors_in: Optional[Sequence[Neighborhoods]] = None,
        neighbors_out: Optional[Sequence[Neighborhoods]] = None,
        meta: Optional[Sequence[dict]] = None,
    ) -> "GeometryBatch":
        """Concatenate geometries of different sizes.

        geometries : B input geometries (same embedding dimension d, same field names)
        queries : B query sets (Geometry with target fields, or (Q_b, d) tensors); None means
            each sample is queried at its own input points (fields become query fields too)
        latent_features : B tensors (C, *grid), stacked to (B, C, *grid)
        neighbors_in / neighbors_out : B precomputed neighbourhoods, concatenated with the
            offsets declared in :data:`INDEX_OFFSETS`

        Example
        -------
        >>> import torch, geoop
        >>> a = geoop.Geometry(torch.rand(5, 3), fields={"p": torch.rand(5, 1)})
        >>> b = geoop.Geometry(torch.rand(7, 3), fields={"p": torch.rand(7, 1)})
        >>> batch = geoop.GeometryBatch.from_geometries([a, b], queries=[torch.rand(4, 3), torch.rand(2, 3)])
        >>> batch.points.shape, batch.ptr.tolist(), batch.query_ptr.tolist(), batch.batch.tolist()
        (torch.Size([12, 3]), [0, 5, 12], [0, 4, 6], [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
        """
        geoms = list(geometries)
        if not geoms:
            raise ShapeError("GeometryBatch.from_geometries: need at least one geometry")
        d = geoms[0].dim
        for i, g in enumerate(geoms):
            if not isinstance(g, Geometry):
                raise ShapeError(f"GeometryBatch: sample {i} is a {type(g).__name__}, expected Geometry")
            if g.dim != d:
                raise ShapeError(
                    f"GeometryBatch: all samples need the same dimension; sample 0 has d={d}, "
                    f"sample {i} ({g.source or g.name or 'unnamed'}) has d={g.dim}"
                )
        device = geoms[0].device
        ptr = _ptr_from_counts([g.n_points for g in geoms], device)
        points = torch.cat([g.points for g in geoms])
        weights = torch.cat([g.weights for g in geoms])
        normals = torch.cat([g.normals for g in geoms]) if all(g.normals is not None for g in geoms) else None
        fields = _cat_fields(geoms, "point")

        # cells, with the input-point offset of their sample
        cells, cell_ptr = {}, {}
        types = sorted({t for g in geoms for t in g.cells})
        for t in types:
            parts = [g.cells.get(t, torch.zeros(0, g.cells[t].shape[1] if t in g.cells else 1, dtype=torch.long)) for g in geoms]
            k = max(p.shape[1] for p in parts)
            parts = [p if p.shape[1] == k else p.new_zeros(0, k) for p in parts]
            cells[t] = torch.cat([p.to(device) + int(ptr[b]) for b, p in enumerate(parts)])
            cell_ptr[t] = _ptr_from_counts([p.shape[0] for p in parts], device)

        if queries is None:
            qgeoms = geoms
        else:
            if len(queries) != len(geoms):
                raise ShapeError(f"GeometryBatch: got {len(geoms)} geometries but {len(queries)} query sets")
            qgeoms = []
            for i, q in enumerate(queries):
                if not isinstance(q, Geometry):
                    q = Geometry(torch.as_tensor(q).reshape(-1, d), name=f"queries[{i}]", validate=False)
                if q.dim != d:
                    raise ShapeError(f"GeometryBatch: queries of sample {i} have d={q.dim}, expected d={d}")
                qgeoms.append(q)
        query_ptr = _ptr_from_counts([q.n_points for q in qgeoms], device)
        qpts = torch.cat([q.points for q in qgeoms])
        qfields = _cat_fields([q for q in qgeoms if q.n_points] or qgeoms[:1], "query") if queries is not None else dict(fields)
        qweights = torch.cat([q.weights for q in qgeoms]) if queries is not None else weights
        qnormals = (
            torch.cat([q.normals for q in qgeoms]) if all(q.normals is not None for q in qgeoms) else None
        )

        lat = None
        if latent_features is not None:
            lat = torch.stack([torch.as_tensor(x) for x in latent_features])
        nin = Neighborhoods.cat(neighbors_in, [int(o) for o in ptr[:-1]]) if neighbors_in is not None else None
        nout = None
        if neighbors_out is not None:
            nout = Neighborhoods.cat(neighbors_out)  # offsets: cumulative latent sizes
        return cls(
            points,
            ptr,
            weights=weights,
            normals=normals,
            fields=fields,
            queries=qpts,
            query_ptr=query_ptr,
            query_fields=qfields,
            query_weights=qweights,
            query_normals=qnormals,
            cells=cells,
            cell_ptr=cell_ptr,
            latent_features=lat,
            neighbors_in=nin,
            neighbors_out=nout,
            meta=list(meta) if meta is not None else None,
            symmetry=[g.symmetry for g in geoms],
        )

    @classmethod
    def from_pyg(cls, batch, queries: Optional[Sequence[Union[Geometry, Tensor]]] = None, **kw) -> "GeometryBatch":
        """From a ``torch_geometric.data.Batch`` (or a list of ``Data``): each graph becomes a
        Geometry (:meth:`Geometry.from_pyg`), then :meth:`from_geometries` (``queries`` and
        the other keywords as there)."""
        graphs = batch.to_data_list() if hasattr(batch, "to_data_list") else list(batch)
        return cls.from_geometries([Geometry.from_pyg(g) for g in graphs], queries, **kw)

    @classmethod
    def from_samples(cls, samples: Sequence[Union[Sample, Geometry, tuple]]) -> "GeometryBatch":
        """Batch :class:`Sample` objects (or bare geometries, or ``(geometry, queries)``
        tuples). All samples must agree on which optional parts they carry."""
        ss = []
        for s in samples:
            if isinstance(s, Sample):
                ss.append(s)
            elif isinstance(s, Geometry):
                ss.append(Sample(s))
            elif isinstance(s, tuple):
                ss.append(Sample(*s))
            else:
                raise ShapeError(f"collate: cannot batch a {type(s).__name__}; expected Sample or Geometry")

        def opt(attr):
            have = [getattr(s, attr) is not None for s in ss]
            if any(have) and not all(have):
                raise ShapeError(f"collate: {attr} is present in some samples and missing in others")
            return [getattr(s, attr) for s in ss] if all(have) else None

        return cls.from_geometries(
            [s.geometry for s in ss],
            opt("queries"),
            latent_features=opt("latent_features"),
            neighbors_in=opt("neighbors_in"),
            neighbors_out=opt("neighbors_out"),
            meta=[s.meta for s in ss],
        )

    # ----------------------------------------------------------------- info
    @property
    def num_samples(self) -> int:
        return int(self.ptr.numel() - 1)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def dim(self) -> int:
        return int(self.points.shape[1])

    @property
    def device(self) -> torch.device:
        return self.points.device

    def counts(self) -> list[int]:
        return (self.ptr[1:] - self.ptr[:-1]).tolist()

    def query_counts(self) -> list[int]:
        return (self.query_ptr[1:] - self.query_ptr[:-1]).tolist()

    def __repr__(self) -> str:
        return (
            f"GeometryBatch(samples={self.num_samples}, points={self.counts()}, "
            f"queries={self.query_counts()}, fields={sorted(self.fields)}, "
            f"query_fields={sorted(self.query_fields)})"
        )

    def x(self, names: Sequence[str]) -> Optional[Tensor]:
        """Input features: the named point fields concatenated, (ΣN, C) (None if no names)."""
        return self._stack(self.fields, names, "point")

    def y(self, names: Sequence[str]) -> Tensor:
        """Targets: the named query fields concatenated, (ΣQ, C)."""
        return self._stack(self.query_fields, names, "query")

    @staticmethod
    def _stack(fields: dict, names: Sequence[str], kind: str) -> Optional[Tensor]:
        names = list(names)
        if not names:
            return None
        for n in names:
            if n not in fields:
                raise FieldError(f"GeometryBatch: no {kind} field {n!r}; available: {sorted(fields)}")
        return torch.cat([fields[n] for n in names], dim=1)

    # ----------------------------------------------------------------- move
    def to(self, device) -> "GeometryBatch":
        def f(t):
            return None if t is None else t.to(device)

        return GeometryBatch(
            self.points.to(device),
            self.ptr.to(device),
            weights=self.weights.to(device),
            normals=f(self.normals),
            fields={k: v.to(device) for k, v in self.fields.items()},
            queries=self.queries.to(device),
            query_ptr=self.query_ptr.to(device),
            query_fields={k: v.to(device) for k, v in self.query_fields.items()},
            query_weights=f(self.query_weights),
            query_normals=f(self.query_normals),
            cells={k: v.to(device) for k, v in self.cells.items()},
            cell_ptr={k: v.to(device) for k, v in self.cell_ptr.items()},
            latent_features=f(self.latent_features),
            neighbors_in=None if self.neighbors_in is None else self.neighbors_in.to(device),
            neighbors_out=None if self.neighbors_out is None else self.neighbors_out.to(device),
            meta=self.meta,
            symmetry=self.symmetry,
        )

    # ----------------------------------------------------------------- split
    def split_points(self, values: Tensor) -> list[Tensor]:
        """Split a (ΣN, …) tensor over the input points into B tensors."""
        return list(torch.split(values, self.counts()))

    def split_queries(self, values: Tensor) -> list[Tensor]:
        """Split a (ΣQ, …) tensor over the queries (e.g. a prediction) into B tensors."""
        return list(torch.split(values, self.query_counts()))

    def unbatch(self) -> list[Geometry]:
        """The B input geometries (points, cells, normals, weights, fields)."""
        out = []
        for b in range(self.num_samples):
            s, e = int(self.ptr[b]), int(self.ptr[b + 1])
            cells = {}
            for t, c in self.cells.items():
                cs, ce = int(self.cell_ptr[t][b]), int(self.cell_ptr[t][b + 1])
                if ce > cs:
                    cells[t] = c[cs:ce] - s
            out.append(
                Geometry(
                    self.points[s:e],
                    cells=cells,
                    normals=None if self.normals is None else self.normals[s:e],
                    weights=self.weights[s:e],
                    fields={k: v[s:e] for k, v in self.fields.items()},
                    validate=False,
                    symmetry=self.symmetry[b],
                )
            )
        return out

    def unbatch_queries(self) -> list[Geometry]:
        """The B query point sets with their query fields (empty sets are allowed)."""
        out = []
        for b in range(self.num_samples):
            s, e = int(self.query_ptr[b]), int(self.query_ptr[b + 1])
            g = Geometry(
                self.queries[s:e],
                normals=None if self.query_normals is None else self.query_normals[s:e],
                weights=None if self.query_weights is None else self.query_weights[s:e],
                fields={k: v[s:e] for k, v in self.query_fields.items()},
                validate=False,
            )
            out.append(g)
        return out


def collate(samples: Sequence[Union[Sample, Geometry, tuple]]) -> GeometryBatch:
    """``collate_fn`` for :class:`torch.utils.data.DataLoader` (see
    :meth:`GeometryBatch.from_samples`)."""
    return GeometryBatch.from_samples(samples)
