r"""Radius-ball neighbourhoods between two point sets, batch-aware, any backend.

For every query point :math:`x` we return the sources in the closed ball

.. math::  B_r(x) = \{\, y \in \text{sources of the same sample} : \|x - y\|_2 \le r \,\}.

**Boundary rule** (identical for every backend). A source ``s`` belongs to the ball of the
query ``q`` iff

    ``sum_k (float64(q_k) - float64(s_k))**2 <= float64(r)**2``

evaluated in float64, coordinates summed in axis order 0, 1, 2 (:func:`exact_filter`).
Points at distance exactly ``r`` (e.g. neighbours on an integer lattice with ``r = 1``) are
inside. Backends (:mod:`geoop.neighbors.backends`) only propose candidates with a slightly
larger radius; the decision is taken here, once, so all backends return identical sets.

**Output**: a :class:`~geoop.neighbors.neighborhoods.Neighborhoods` CSR over the queries,
source indices sorted ascending within each query, on the queries' device. With batch
vectors, a query of sample ``b`` only sees the sources of sample ``b``.

Shapes
------
sources      : (S, d) float, d in {1, 2, 3} (torch tensor or numpy array)
queries      : (Q, d) float
source_batch : (S,) long, sorted, sample of each source (as ``GeometryBatch.batch``)
query_batch  : (Q,) long, sorted, sample of each query (as ``GeometryBatch.query_batch``)
returns      : Neighborhoods(index (E,) long, ptr (Q+1,) long), indices into ``sources``
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import NeighborhoodTooLargeError, ShapeError
from .backends import candidate_radius, resolve_backend
from .neighborhoods import Neighborhoods

__all__ = ["radius_search", "exact_filter", "DEFAULT_MAX_EDGES", "CHUNK_EDGES"]

#: default bound on the number of edges a search may return (2e8 edges = 1.6 GB of indices)
DEFAULT_MAX_EDGES = 200_000_000
#: queries are searched in chunks of about this many (estimated) candidate edges
CHUNK_EDGES = 1 << 23
#: number of queries sampled to estimate the edge count of a large search
ESTIMATE_SAMPLES = 128

ArrayLike = Union[Tensor, np.ndarray]


# --------------------------------------------------------------------------- validation
def _as_points(x, name: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as e:  # noqa: BLE001 - report what we got
            raise ShapeError(f"radius_search: {name} must be an (N, d) tensor or array, got {type(x).__name__}") from e
    if x.dim() != 2 or x.shape[1] not in (1, 2, 3):
        raise ShapeError(f"radius_search: {name} must have shape (N, d) with d in {{1, 2, 3}}, got {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        if x.dtype in (torch.bool,) or x.is_complex():
            raise ShapeError(f"radius_search: {name} must be real numbers, got dtype {x.dtype}")
        x = x.to(torch.get_default_dtype())
    if x.numel() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(1).sum())
        raise ShapeError(f"radius_search: {name} must be finite, got {bad} point(s) with NaN/inf coordinates")
    return x


def _as_batch(b, n: int, name: str, device) -> Tensor:
    if isinstance(b, np.ndarray):
        b = torch.from_numpy(b)
    b = torch.as_tensor(b, device=device)
    if b.dim() != 1 or b.numel() != n:
        raise ShapeError(f"radius_search: {name} must have shape ({n},) (one entry per point), got {tuple(b.shape)}")
    if b.dtype.is_floating_point or b.dtype == torch.bool or b.is_complex():
        raise ShapeError(f"radius_search: {name} must be an integer tensor, got dtype {b.dtype}")
    b = b.long()
    if n:
        if int(b.min()) < 0:
            raise ShapeError(f"radius_search: {name} must be >= 0, got minimum {int(b.min())}")
        dec = torch.nonzero(b[1:] < b[:-1])
        if dec.numel():
            i = int(dec[0])
            raise ShapeError(
                f"radius_search: {name} must be sorted (non-decreasing, as GeometryBatch.batch), got "
                f"{name}[{i}]={int(b[i])} > {name}[{i + 1}]={int(b[i + 1])}"
            )
    return b


def _check_radius(radius) -> float:
    try:
        r = float(radius)
    except (TypeError, ValueError) as e:
        raise ShapeError(f"radius_search: radius must be a number, got {radius!r}") from e
    if not math.isfinite(r) or r < 0:
        raise ShapeError(f"radius_search: radius must be finite and >= 0, got {r}")
    return r


def _ptr(batch: Optional[Tensor], n: int, num_samples: int) -> list[int]:
    if batch is None:
        return [0, n]
    counts = torch.bincount(batch, minlength=num_samples).cpu().tolist()
    return [0, *np.cumsum(counts).tolist()]


# --------------------------------------------------------------------------- exact rule
def exact_filter(qi: Tensor, si: Tensor, queries: Tensor, sources: Tensor, radius: float, num_sources: int):
    """Apply the boundary rule to candidate pairs and sort them.

    Keeps the pairs with ``sum_k (float64(q_k) - float64(s_k))**2 <= float64(r)**2`` (terms
    added in axis order) and returns them ordered by query, then by source index. CPU
    tensors go through numpy (column gathers are faster there), others through torch;
    both evaluate the same float64 expression.

    Parameters
    ----------
    qi, si : (C,) long  candidate pairs (local query / source indices, any order)
    queries : (Q, d), sources : (S, d)   the coordinates the indices refer to
    num_sources : S (used to build a single sort key ``qi * S + si``)

    Returns
    -------
    (qi, si) : (E,) long each, the exact pairs, sorted by ``(qi, si)``.
    """
    if qi.numel() == 0:
        return qi, si
    if qi.device.type == "cpu":
        return _exact_filter_numpy(qi, si, queries, sources, radius, num_sources)
    return _exact_filter_torch(qi, si, queries, sources, radius, num_sources)


def _exact_filter_numpy(qi, si, queries, sources, radius, num_sources):
    r2 = float(radius) * float(radius)
    q_np, s_np = qi.numpy(), si.numpy()
    qc = queries.detach().cpu().to(torch.float64).T.contiguous().numpy()
    sc = sources.detach().cpu().to(torch.float64).T.contiguous().numpy()
    d2 = np.zeros(q_np.shape[0], dtype=np.float64)
    for k in range(qc.shape[0]):
        diff = qc[k][q_np] - sc[k][s_np]
        d2 += diff * diff
    keep = d2 <= r2
    key = q_np[keep] * np.int64(num_sources) + s_np[keep]
    if key.size > 1 and not bool(np.all(key[1:] > key[:-1])):
        key = np.sort(key)
    qo = key // num_sources
    return torch.from_numpy(qo), torch.from_numpy(key - qo * num_sources)


def _exact_filter_torch(qi, si, queries, sources, radius, num_sources):
    r2 = float(radius) * float(radius)
    qc = queries.detach().to(device=qi.device, dtype=torch.float64)
    sc = sources.detach().to(device=qi.device, dtype=torch.float64)
    d2 = torch.zeros(qi.shape[0], dtype=torch.float64, device=qi.device)
    for k in range(qc.shape[1]):
        diff = qc[:, k][qi] - sc[:, k][si]
        d2 += diff * diff
    keep = d2 <= r2
    key = torch.sort(qi[keep] * num_sources + si[keep]).values
    qo = torch.div(key, num_sources, rounding_mode="floor")
    return qo, key - qo * num_sources


# --------------------------------------------------------------------------- estimate
def _estimate(qry, src, qptr, sptr, radius, max_neighbors, searcher_of):
    """Mean number of (kept) neighbours per query, from ESTIMATE_SAMPLES evenly spread
    queries, searched with the chosen backend (``searcher_of(b)``) and the exact rule."""
    Q = qry.shape[0]
    m = min(Q, ESTIMATE_SAMPLES)
    picks = np.unique(np.linspace(0, Q - 1, m).round().astype(np.int64))
    qb = np.searchsorted(np.asarray(qptr[1:]), picks, side="right")
    counts = []
    for b in np.unique(qb):
        n_b = int((qb == b).sum())
        if sptr[b + 1] == sptr[b]:
            counts.append(torch.zeros(n_b, dtype=torch.long))
            continue
        q = qry[torch.from_numpy(picks[qb == b]).to(qry.device)]
        searcher, on_device = searcher_of(int(b))
        qi, si = searcher(q if on_device else q.cpu())
        src_b = src[sptr[b] : sptr[b + 1]]
        qi, _ = exact_filter(qi, si, q.to(qi.device), src_b.to(qi.device), radius, src_b.shape[0])
        counts.append(torch.bincount(qi, minlength=n_b).cpu())
    c = torch.cat(counts).double()
    kept = c.clamp(max=max_neighbors) if max_neighbors is not None else c
    return float(c.mean()), float(kept.mean()), len(picks)


def _too_large(what: str, edges: float, max_edges: int, detail: str = "") -> NeighborhoodTooLargeError:
    return NeighborhoodTooLargeError(
        f"radius_search: {what} {edges:.3g} edges{detail}, more than max_edges={max_edges:.3g} "
        f"(~{edges * 8 / 2**30:.2f} GiB of int64 indices). Use a smaller radius, pass "
        f"max_neighbors=k to keep k random neighbours per query, search the queries in chunks, "
        f"or raise max_edges."
    )


# --------------------------------------------------------------------------- search
def radius_search(
    sources: ArrayLike,
    queries: ArrayLike,
    radius: float,
    source_batch: Optional[ArrayLike] = None,
    query_batch: Optional[ArrayLike] = None,
    backend: str = "auto",
    max_neighbors: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    max_edges: int = DEFAULT_MAX_EDGES,
) -> Neighborhoods:
    """For each query, the indices of the sources within distance ``radius`` (closed ball).

    Parameters
    ----------
    sources, queries : (S, d), (Q, d) float tensors or numpy arrays, d in {1, 2, 3}
    radius : ball radius, finite and >= 0; the boundary rule is in the module docstring
    source_batch, query_batch : sorted (S,), (Q,) sample ids, both or neither; neighbourhoods
        never cross samples
    backend : ``"auto"`` (fastest available for the queries' device), ``"torch_cluster"``,
        ``"open3d"``, ``"scipy"`` or ``"torch"`` (chunked brute force, bounded memory)
    max_neighbors : keep at most this many neighbours per query, a uniform random subset of
        the ball (:meth:`Neighborhoods.subsample`), ``None`` keeps all
    generator : CPU ``torch.Generator`` for that subset (reproducibility)
    max_edges : raise :class:`NeighborhoodTooLargeError` when the (estimated, then actual)
        number of returned edges exceeds this

    Returns
    -------
    Neighborhoods over the Q queries with indices into ``sources``, on the queries' device,
    indices sorted ascending within each query.

    Raises
    ------
    ShapeError : bad shapes/dims, non-finite points or radius, negative radius, batch vectors
        of the wrong length, unsorted or given alone.
    ConfigError / BackendUnavailableError : unknown / unavailable backend.
    NeighborhoodTooLargeError : more than ``max_edges`` edges (estimated before searching).

    Example
    -------
    >>> import torch, geoop
    >>> sources = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.5]])
    >>> nb = geoop.radius_search(sources, torch.tensor([[0.0, 0.0], [1.0, 0.1]]), radius=0.6)
    >>> nb.to_sets(), nb.ptr.tolist()
    ([{0, 2}, {1}], [0, 2, 3])
    """
    qry = _as_points(queries, "queries")
    src = _as_points(sources, "sources")
    device = qry.device
    src = src.to(device)
    if src.shape[1] != qry.shape[1]:
        raise ShapeError(
            f"radius_search: sources and queries must have the same dimension d, got "
            f"sources {tuple(src.shape)} and queries {tuple(qry.shape)}"
        )
    if src.dtype != qry.dtype:
        dt = torch.promote_types(src.dtype, qry.dtype)
        src, qry = src.to(dt), qry.to(dt)
    r = _check_radius(radius)
    if max_neighbors is not None:
        if isinstance(max_neighbors, bool) or not isinstance(max_neighbors, (int, np.integer)) or max_neighbors < 0:
            raise ShapeError(f"radius_search: max_neighbors must be an int >= 0 or None, got {max_neighbors!r}")
        max_neighbors = int(max_neighbors)
    if (source_batch is None) != (query_batch is None):
        given = "source_batch" if source_batch is not None else "query_batch"
        raise ShapeError(f"radius_search: pass both source_batch and query_batch or neither, got only {given}")
    S, Q = src.shape[0], qry.shape[0]
    if source_batch is not None:
        sb = _as_batch(source_batch, S, "source_batch", device)
        qb = _as_batch(query_batch, Q, "query_batch", device)
        B = 1 + max(int(sb.max()) if S else -1, int(qb.max()) if Q else -1, 0)
        sptr, qptr = _ptr(sb, S, B), _ptr(qb, Q, B)
    else:
        B, sptr, qptr = 1, [0, S], [0, Q]
    be = resolve_backend(backend, device)

    scale = 0.0
    if S and Q:
        scale = max(float(src.abs().max()), float(qry.abs().max()))
    search_dtype = torch.float64 if (src.dtype == torch.float64 or be.name == "scipy") else torch.float32
    rc = candidate_radius(r, scale, search_dtype)
    searchers: dict = {}

    def searcher_of(b: int):
        """Index over the sources of sample b, built once (kept until the sample is done)."""
        if b not in searchers:
            src_b = src[sptr[b] : sptr[b + 1]]
            searchers[b] = be.prepare(src_b if be.cuda else src_b.cpu(), rc)
        return searchers[b], be.cuda

    # ---- size guard and chunking, from a sample of queries when the search is large
    pairs = sum((qptr[b + 1] - qptr[b]) * (sptr[b + 1] - sptr[b]) for b in range(B))
    chunk_q = Q
    if pairs > min(max_edges, CHUNK_EDGES):
        mean, mean_kept, m = _estimate(qry, src, qptr, sptr, r, max_neighbors, searcher_of)
        est = mean_kept * Q
        if est > max_edges:
            raise _too_large(
                "estimated", est, max_edges,
                f" ({mean:.1f} neighbours per query on average, from {m} sampled queries, x {Q} queries)",
            )
        chunk_q = max(1, int(CHUNK_EDGES / max(mean, 1.0)))

    index_parts, count_parts, total = [], [], 0
    for b in range(B):
        q0, q1, s0, s1 = qptr[b], qptr[b + 1], sptr[b], sptr[b + 1]
        if q1 == q0:
            continue
        if s1 == s0:
            count_parts.append(torch.zeros(q1 - q0, dtype=torch.long, device=device))
            continue
        src_b = src[s0:s1]
        searcher, _ = searcher_of(b)
        for a in range(q0, q1, chunk_q):
            qry_c = qry[a : min(a + chunk_q, q1)]
            qi, si = searcher(qry_c if be.cuda else qry_c.cpu())
            qi, si = qi.to(device), si.to(device)
            qi, si = exact_filter(qi, si, qry_c, src_b, r, s1 - s0)
            counts = torch.bincount(qi, minlength=qry_c.shape[0])
            if max_neighbors is not None:
                ptr = torch.zeros(qry_c.shape[0] + 1, dtype=torch.long, device=device)
                torch.cumsum(counts, 0, out=ptr[1:])
                nb = Neighborhoods(si, ptr).subsample(max_neighbors, generator)
                si, counts = nb.index, nb.counts()
            total += si.numel()
            if total > max_edges:
                raise _too_large("found at least", total, max_edges, f" (after {a + qry_c.shape[0]} of {Q} queries)")
            index_parts.append(si + s0)
            count_parts.append(counts)
        searchers.pop(b, None)
    index = torch.cat(index_parts) if index_parts else torch.zeros(0, dtype=torch.long, device=device)
    counts = torch.cat(count_parts) if count_parts else torch.zeros(0, dtype=torch.long, device=device)
    ptr = torch.zeros(Q + 1, dtype=torch.long, device=device)
    torch.cumsum(counts, 0, out=ptr[1:])
    return Neighborhoods(index, ptr, num_sources=S, radius=r)
