"""Candidate generators for radius search: torch-cluster, open3d, scipy KD-tree, brute force.

A backend answers one question for ONE sample (no batch): which pairs ``(query, source)``
may lie within distance ``radius``? It returns a *superset* of the exact answer, computed
with a slightly enlarged radius (:func:`candidate_radius`) so the rounding of its own float
arithmetic can never drop a true neighbour. The final, exact decision (closed ball,
``d(q, s) <= r`` evaluated in float64) is taken in one place,
:func:`geoop.neighbors.search.exact_filter`, so every backend returns the same sets.

Backend names are resolved by :func:`resolve_backend` only; an unknown name lists the valid
ones, a known but uninstalled one raises :class:`~geoop.errors.BackendUnavailableError`.

Shapes
------
sources : (S, d) float      one sample's source points, d in {1, 2, 3}
queries : (Q, d) float      one sample's query points (same device, same dtype)
returns : (query (C,) long, source (C,) long)  candidate pairs, local indices, C >= E
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .._optional import available, require
from ..errors import ConfigError

__all__ = [
    "BACKENDS",
    "AUTO_ORDER_CPU",
    "AUTO_ORDER_CUDA",
    "Backend",
    "resolve_backend",
    "available_backends",
    "candidate_radius",
    "TORCH_BLOCK_BYTES",
    "morton_order",
]

#: memory bound of one (queries chunk x sources) distance block of the brute-force backend
TORCH_BLOCK_BYTES = 64 * 2**20


def candidate_radius(radius: float, scale: float, dtype: torch.dtype) -> float:
    """Enlarged radius used for candidate generation in ``dtype`` arithmetic.

    A backend computing ``|q - s|`` in a float type with unit round-off ``u`` on coordinates of
    magnitude at most ``scale`` errs by at most a few ``u * (scale + r)``; we widen by a safe
    multiple of that (``r' = r (1 + 64 u) + 16 u scale``). Extra candidates are removed by the
    exact filter, so the only cost of the slack is a handful of extra pairs.
    """
    u = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return float(radius) * (1.0 + 64.0 * u) + 16.0 * u * float(scale)


def _search_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class Backend:
    """One candidate generator. ``prepare(sources, radius)`` builds an index over one sample's
    sources and returns a function ``queries -> (query_idx, source_idx)``."""

    name: str = ""
    package: Optional[str] = None  # optional import name, None = always available
    cuda: bool = False  # runs natively on CUDA tensors

    def is_available(self) -> bool:
        return self.package is None or available(self.package)

    def check(self) -> None:
        if self.package is not None:
            require(self.package, f"the {self.name!r} radius-search backend")

    def prepare(self, sources: Tensor, radius: float) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        raise NotImplementedError


# --------------------------------------------------------------------------- torch
def morton_order(points: Tensor, bits: int = 10) -> Tensor:
    """Permutation sorting points along a Z-order (Morton) curve of their bounding box, so
    that consecutive points are spatially close. ``points (N, d)`` -> ``(N,) long``."""
    n, d = points.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    lo, hi = points.amin(0), points.amax(0)
    cells = ((points - lo) / (hi - lo).clamp_min(1e-300) * (2**bits - 1)).round().long()
    code = torch.zeros(n, dtype=torch.long, device=points.device)
    for bit in range(bits):
        for k in range(d):
            code |= ((cells[:, k] >> bit) & 1) << (bit * d + k)
    return torch.argsort(code)


class TorchBackend(Backend):
    """Chunked brute force in pure torch (any device); also the reference of the tests.

    Queries are visited in Morton order, in blocks; for each block only the sources inside
    the block's bounding box widened by ``r`` are compared (sources are sorted along axis 0,
    so the box test only scans the block's slab), and
    ``|q - s|^2 = |q|^2 + |s|^2 - 2 q.s`` is evaluated for that block, whose size
    (``queries x boxed sources``) stays under :data:`TORCH_BLOCK_BYTES`. Coordinates are
    centred first, which keeps the cancellation error of this formula at
    ``O(u * extent^2)``; the threshold is widened by that bound (candidates only).
    """

    name = "torch"
    cuda = True
    #: queries per block before the memory bound shrinks it
    block_queries = 256

    def prepare(self, sources, radius):
        dt = _search_dtype(sources.dtype)
        src = sources.to(dt)
        S = src.shape[0]
        center = (src.amax(0) + src.amin(0)) / 2 if S else torch.zeros(src.shape[1], dtype=dt, device=src.device)
        # sources sorted along axis 0: a block's box is a contiguous slice of them along x
        perm = torch.argsort(src[:, 0]) if S else torch.zeros(0, dtype=torch.long, device=src.device)
        s = src[perm] - center
        s2 = (s * s).sum(1)
        sx = s[:, 0].contiguous()
        u = torch.finfo(dt).eps
        itemsize = torch.finfo(dt).bits // 8

        def search(queries):
            q = queries.to(dt) - center
            Q = q.shape[0]
            if S == 0 or Q == 0:
                e = torch.zeros(0, dtype=torch.long, device=queries.device)
                return e, e
            q2 = (q * q).sum(1)
            scale2 = float(s2.max()) + float(q2.max())
            thr = radius * radius + 16.0 * u * (scale2 + radius * radius)
            pad = math.sqrt(thr)
            order = morton_order(q)
            qs, ss = [], []
            a, n = 0, self.block_queries
            while a < Q:
                while True:
                    blk = order[a : a + n]
                    qb = q[blk]
                    lo, hi = qb.amin(0) - pad, qb.amax(0) + pad
                    i0 = int(torch.searchsorted(sx, lo[:1]))
                    i1 = int(torch.searchsorted(sx, hi[:1], right=True))
                    box = s[i0:i1]
                    sel = torch.nonzero(((box >= lo) & (box <= hi)).all(1)).squeeze(1) + i0
                    if n == 1 or blk.numel() * sel.numel() * itemsize <= TORCH_BLOCK_BYTES:
                        break
                    n = max(1, n // 2)
                if sel.numel():
                    d2 = torch.addmm(s2[sel].unsqueeze(0), qb, s[sel].T, beta=1.0, alpha=-2.0)
                    d2 += q2[blk, None]
                    i, j = torch.nonzero(d2 <= thr, as_tuple=True)
                    qs.append(blk[i])
                    ss.append(perm[sel[j]])
                a += blk.numel()
                if blk.numel() * sel.numel() * itemsize * 4 <= TORCH_BLOCK_BYTES:
                    n = min(2 * n, self.block_queries)  # grow back after a dense region
            if not qs:
                e = torch.zeros(0, dtype=torch.long, device=queries.device)
                return e, e
            return torch.cat(qs), torch.cat(ss)

        return search


# --------------------------------------------------------------------------- scipy
class ScipyBackend(Backend):
    """scipy ``cKDTree``: one tree per point set, ``sparse_distance_matrix`` between them
    (returns all pairs with distance <= r, zero distances included, as a structured array)."""

    name = "scipy"
    package = "scipy"

    def prepare(self, sources, radius):
        from scipy.spatial import cKDTree

        src = sources.detach().cpu().to(torch.float64).numpy()
        tree = cKDTree(src) if len(src) else None

        def search(queries):
            q = queries.detach().cpu().to(torch.float64).numpy()
            if tree is None or len(q) == 0:
                e = torch.zeros(0, dtype=torch.long)
                return e, e
            m = cKDTree(q).sparse_distance_matrix(tree, radius, output_type="ndarray")
            return torch.from_numpy(m["i"].astype(np.int64)), torch.from_numpy(m["j"].astype(np.int64))

        return search


# --------------------------------------------------------------------------- open3d
class Open3DBackend(Backend):
    """open3d ``core.nns.NearestNeighborSearch`` fixed-radius search on CPU tensors
    (float32 or float64), neighbours grouped per query (``splits`` is a CSR ``ptr``)."""

    name = "open3d"
    package = "open3d"

    def prepare(self, sources, radius):
        o3c = require("open3d", "the 'open3d' radius-search backend").core
        dt = _search_dtype(sources.dtype)
        src = np.ascontiguousarray(sources.detach().cpu().to(dt).numpy())
        if len(src) == 0:
            nns = None
        else:
            nns = o3c.nns.NearestNeighborSearch(o3c.Tensor(src))
            nns.fixed_radius_index(radius)

        def search(queries):
            q = np.ascontiguousarray(queries.detach().cpu().to(dt).numpy())
            if nns is None or len(q) == 0:
                e = torch.zeros(0, dtype=torch.long)
                return e, e
            idx, _dist, splits = nns.fixed_radius_search(o3c.Tensor(q), radius, sort=False)
            idx = torch.from_numpy(idx.numpy()).long()
            splits = torch.from_numpy(splits.numpy()).long()
            qi = torch.repeat_interleave(torch.arange(len(q)), splits[1:] - splits[:-1], output_size=idx.numel())
            return qi, idx

        return search


# --------------------------------------------------------------------------- torch_cluster
class TorchClusterBackend(Backend):
    """``torch_cluster.radius`` (nanoflann KD-tree on CPU, a CUDA kernel on GPU).

    Its ``max_num_neighbors`` (default 32) silently truncates balls. On CPU we pass the
    number of sources, which cannot truncate. On CUDA the kernel allocates
    ``Q * max_num_neighbors`` slots, so we start from a small cap and re-run, with a doubled
    cap, only the queries whose ball came back full (and so may have been truncated).
    """

    name = "torch_cluster"
    package = "torch_cluster"
    cuda = True
    #: first cap of the CUDA strategy; each retry multiplies it by 4
    initial_cap = 64
    #: use the capped strategy on CPU too (tests exercise it there)
    cap_on_cpu = False

    def prepare(self, sources, radius):
        tc = require("torch_cluster", "the 'torch_cluster' radius-search backend")
        dt = _search_dtype(sources.dtype)
        src = sources.to(dt).contiguous()
        S = src.shape[0]

        def run(q, k):
            # edge_index[0] indexes y (the queries), edge_index[1] indexes x (the sources)
            ei = tc.radius(src, q, radius, max_num_neighbors=k, num_workers=torch.get_num_threads())
            return ei[0], ei[1]

        def search(queries):
            q = queries.to(dt).contiguous()
            if S == 0 or q.shape[0] == 0:
                e = torch.zeros(0, dtype=torch.long, device=queries.device)
                return e, e
            if q.device.type == "cpu" and not self.cap_on_cpu:
                return run(q, S)
            ids = torch.arange(q.shape[0], device=q.device)
            k, qs, ss = self.initial_cap, [], []
            while ids.numel():
                k = min(k, S)
                qi, si = run(q[ids], k)
                full = torch.bincount(qi, minlength=ids.numel()) >= k
                if k >= S:
                    full[:] = False
                keep = ~full[qi]
                qs.append(ids[qi[keep]])
                ss.append(si[keep])
                ids = ids[full]
                k *= 4
            return torch.cat(qs), torch.cat(ss)

        return search


#: every backend by name, in no particular order
BACKENDS: dict[str, Backend] = {
    b.name: b for b in (TorchClusterBackend(), Open3DBackend(), ScipyBackend(), TorchBackend())
}
#: preference of ``backend="auto"`` on CPU, from benchmarks/neighbors.py on the 2-core dev
#: machine (shared, noisy): open3d fastest on 100k points -> 32^3 grid (scipy 1.2x,
#: torch_cluster 1.4x, pruned torch brute force 4.4x); on a 3.6k-point car -> 32^3 grid
#: open3d and scipy tie, torch_cluster is slower (docs/experiments.md)
AUTO_ORDER_CPU = ("open3d", "scipy", "torch_cluster", "torch")
#: preference of ``backend="auto"`` on CUDA (open3d / scipy would round-trip through the CPU)
AUTO_ORDER_CUDA = ("torch_cluster", "torch")


def available_backends() -> list[str]:
    """Names of the backends usable in this environment (installed and not disabled)."""
    return [n for n, b in BACKENDS.items() if b.is_available()]


def resolve_backend(name: str, device: torch.device | str = "cpu") -> Backend:
    """The one place where a backend name is turned into a :class:`Backend`.

    ``"auto"`` picks the first available backend of :data:`AUTO_ORDER_CPU` (or
    :data:`AUTO_ORDER_CUDA` for CUDA queries). ``-`` and ``_`` are interchangeable
    (``"torch-cluster"``).

    Raises
    ------
    ConfigError
        unknown name, listing the valid choices.
    BackendUnavailableError
        a known backend whose package is not installed (or disabled by
        ``GEOOP_DISABLE_BACKENDS``); there is no silent fallback.
    """
    if not isinstance(name, str):
        raise ConfigError(f"radius_search: backend must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key == "auto":
        order = AUTO_ORDER_CUDA if torch.device(device).type == "cuda" else AUTO_ORDER_CPU
        for n in order:
            if BACKENDS[n].is_available():
                return BACKENDS[n]
        return BACKENDS["torch"]
    if key not in BACKENDS:
        raise ConfigError(
            f"radius_search: unknown backend {name!r}; valid choices are "
            f"{', '.join(['auto', *sorted(BACKENDS)])}"
        )
    b = BACKENDS[key]
    b.check()
    return b
