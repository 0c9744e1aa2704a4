"""In-memory LRU cache of radius searches: a neighbourhood is computed once per
(geometry, query set, radius) and reused.

The key is a content hash (BLAKE2b) of the coordinates, their dtype and shape, the batch
vectors, the radius and ``max_neighbors``. It does not depend on the backend (every backend
returns the same sets) nor on the device or on object identity: two equal tensors hit the
same entry. Hashing reads every byte once (about 1 GB/s), far cheaper than a search.

With ``max_neighbors`` the cached random subset is reused as is (that is the point of
caching); pass a different ``generator`` seed through a fresh cache to draw another.

Shapes
------
as :func:`geoop.radius_search`.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Optional

import numpy as np
import torch

from .neighborhoods import Neighborhoods
from .search import radius_search

__all__ = ["NeighborhoodCache", "cached_radius_search", "neighborhood_key", "default_cache"]


def _feed(h, x) -> None:
    if x is None:
        h.update(b"<none>")
        return
    # numpy arrays / lists hash like the equal torch tensor
    x = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    x = x.detach().cpu().contiguous()
    h.update(f"{x.dtype}{tuple(x.shape)}".encode())
    if x.numel():
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())


def neighborhood_key(sources, queries, radius, source_batch=None, query_batch=None, max_neighbors=None) -> str:
    """Hex digest identifying a search by content (backend independent)."""
    h = hashlib.blake2b(digest_size=20)
    for part in (sources, queries, source_batch, query_batch):
        _feed(h, part)
    h.update(repr((float(radius), None if max_neighbors is None else int(max_neighbors))).encode())
    return h.hexdigest()


class NeighborhoodCache:
    """Least-recently-used cache of :class:`Neighborhoods`, bounded by entry count and by
    total stored edges.

    Parameters
    ----------
    maxsize : at most this many entries
    max_edges : at most this many edges over all entries (int64 indices: 8 bytes each);
        a single result larger than this is returned but not stored
    """

    def __init__(self, maxsize: int = 128, max_edges: int = 50_000_000):
        self.maxsize = int(maxsize)
        self.max_edges = int(max_edges)
        self._data: OrderedDict[str, Neighborhoods] = OrderedDict()
        self._edges = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    @property
    def num_edges(self) -> int:
        """Edges currently stored."""
        return self._edges

    def get(self, key: str) -> Optional[Neighborhoods]:
        with self._lock:
            nb = self._data.get(key)
            if nb is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return nb

    def put(self, key: str, nb: Neighborhoods) -> None:
        with self._lock:
            if key in self._data:
                self._edges -= self._data.pop(key).num_edges
            if nb.num_edges > self.max_edges or self.maxsize <= 0:
                return
            self._data[key] = nb
            self._edges += nb.num_edges
            while len(self._data) > self.maxsize or self._edges > self.max_edges:
                _, old = self._data.popitem(last=False)
                self._edges -= old.num_edges

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._edges = 0
            self.hits = self.misses = 0

    def radius_search(self, sources, queries, radius, source_batch=None, query_batch=None, **kwargs) -> Neighborhoods:
        """:func:`geoop.radius_search` through this cache (same arguments)."""
        key = neighborhood_key(sources, queries, radius, source_batch, query_batch, kwargs.get("max_neighbors"))
        nb = self.get(key)
        if nb is None:
            nb = radius_search(sources, queries, radius, source_batch, query_batch, **kwargs)
            self.put(key, nb)
        device = queries.device if isinstance(queries, torch.Tensor) else torch.device("cpu")
        return nb if nb.device == device else nb.to(device)


_DEFAULT: Optional[NeighborhoodCache] = None


def default_cache() -> NeighborhoodCache:
    """The process-wide cache used by :func:`cached_radius_search` (created on first use)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = NeighborhoodCache()
    return _DEFAULT


def cached_radius_search(
    sources, queries, radius, source_batch=None, query_batch=None, *, cache: Optional[NeighborhoodCache] = None, **kwargs
) -> Neighborhoods:
    """:func:`geoop.radius_search` memoised in ``cache`` (default: :func:`default_cache`).
    The returned object is shared between hits: treat it as read-only."""
    return (cache if cache is not None else default_cache()).radius_search(
        sources, queries, radius, source_batch, query_batch, **kwargs
    )
