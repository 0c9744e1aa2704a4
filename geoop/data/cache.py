"""On-disk cache of precomputed neighbourhoods (and latent features) for datasets.

Neighbourhoods are data, not compute: they depend only on the files of a case and on the
search configuration (radii, latent grid, geometric transform). Entries are therefore keyed
by

    key = sha256( json({"files": [sha256(file bytes) ...], "config": config, "version": V}) )

so renaming or moving a file keeps its entry, and editing a file or changing a radius
misses. Each entry is one ``<key>.pt`` file holding only plain tensors / numbers (loaded
with ``torch.load(weights_only=True)``). Writes are atomic (temporary file in the same
folder, then ``os.replace``), so a crash never leaves a half-written entry under the final
name; an unreadable or inconsistent entry is reported with a ``warnings.warn`` naming the
file, removed, and recomputed.

Shapes (stored entry)
------
neighbors_in.index  : (E_in,) long     neighbors_in.ptr  : (G+1,) long
neighbors_out.index : (E_out,) long    neighbors_out.ptr : (Q+1,) long
latent_features     : (C, *grid) float
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch

from .._atomic import atomic_open
from ..batch import Sample
from ..errors import DatasetError
from ..geometry.geometry import Geometry
from ..neighbors.neighborhoods import Neighborhoods

__all__ = ["file_sha256", "cache_key", "DiskNeighborhoodCache", "MemoryCache", "nbytes", "pack_neighbors", "unpack_neighbors"]

log = logging.getLogger(__name__)

#: bump when the stored layout changes (old entries then simply miss)
CACHE_VERSION = 1

_HASHES: dict[tuple, str] = {}


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex sha256 of the bytes of ``path``. Memoised per (path, size, mtime_ns), so asking
    again for an unchanged file does not re-read it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DatasetError(f"{p}: cannot hash file for the cache: {e}") from None
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    h = _HASHES.get(memo)
    if h is None:
        d = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                d.update(block)
        h = d.hexdigest()
        _HASHES[memo] = h
    return h


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return [round(float(v), 12) for v in x.detach().cpu().reshape(-1).tolist()]
    if isinstance(x, float):
        return round(x, 12)
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (int, str, bool)) or x is None:
        return x
    return repr(x)


def cache_key(file_hashes: Sequence[str], config: Mapping) -> str:
    """The hex sha256 of the file content hashes and the (JSON-serialisable) config."""
    payload = json.dumps(
        {"files": list(file_hashes), "config": _jsonable(config), "version": CACHE_VERSION}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def pack_neighbors(nb: Optional[Neighborhoods]) -> dict:
    """A Neighborhoods as plain tensors ({} for None)."""
    if nb is None:
        return {}
    return {
        "index": nb.index.detach().cpu(),
        "ptr": nb.ptr.detach().cpu(),
        "num_sources": -1 if nb.num_sources is None else int(nb.num_sources),
        "radius": float("nan") if nb.radius is None else float(nb.radius),
    }


def unpack_neighbors(d: Mapping) -> Optional[Neighborhoods]:
    if not d:
        return None
    ns = int(d["num_sources"])
    r = float(d["radius"])
    nb = Neighborhoods(d["index"].long(), d["ptr"].long(), None if ns < 0 else ns, None if r != r else r)
    return nb.validate()


class DiskNeighborhoodCache:
    """A folder of cached entries (``<key>.pt``), each a dict of plain tensors.

    Parameters
    ----------
    root : the cache folder (created on first write).

    Counters ``hits``, ``misses`` and ``corrupt`` count what :meth:`get_or_compute` did.
    """

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, check: Optional[Callable[[dict], None]] = None) -> Optional[dict]:
        """The entry stored under ``key``, or None when absent. An unreadable entry, or one
        for which ``check(entry)`` raises, is removed with a warning and None is returned."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION:
                raise ValueError(f"unexpected content (type {type(entry).__name__}, version "
                                 f"{entry.get('version') if isinstance(entry, dict) else None})")
            if check is not None:
                check(entry)
        except Exception as e:  # corrupt pickle, truncated zip, wrong shapes...
            self.corrupt += 1
            warnings.warn(f"neighbourhood cache entry {p} is unreadable or inconsistent ({type(e).__name__}: {e}); "
                          "recomputing it", RuntimeWarning, stacklevel=3)
            try:
                p.unlink()
            except OSError:
                pass
            return None
        return entry

    def save(self, key: str, entry: Mapping) -> Path:
        """Store ``entry`` (plain tensors / numbers / nested dicts) atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        with atomic_open(p, "wb") as f:
            torch.save({**entry, "version": CACHE_VERSION}, f)
        return p

    def get_or_compute(self, key: str, compute: Callable[[], dict],
                       check: Optional[Callable[[dict], None]] = None) -> dict:
        """Load the entry for ``key``; on a miss (or a corrupt entry) call ``compute()``,
        store its result and return it."""
        entry = self.load(key, check)
        if entry is not None:
            self.hits += 1
            return entry
        self.misses += 1
        entry = dict(compute())
        try:
            self.save(key, entry)
        except OSError as e:  # a read-only or full cache folder must not stop training
            warnings.warn(f"could not write neighbourhood cache entry {self.path(key)}: {e}", RuntimeWarning,
                          stacklevel=2)
        return entry

    def clear(self) -> int:
        """Remove all entries; returns how many were removed."""
        n = 0
        if self.root.exists():
            for p in self.root.glob("*.pt"):
                p.unlink()
                n += 1
        return n

    def __len__(self) -> int:
        return len(list(self.root.glob("*.pt"))) if self.root.exists() else 0

    def __repr__(self) -> str:
        return f"DiskNeighborhoodCache({str(self.root)!r}, hits={self.hits}, misses={self.misses}, corrupt={self.corrupt})"


# ---------------------------------------------------------------------------- memory
def nbytes(obj) -> int:
    """Bytes held by the tensors of a Geometry / Neighborhoods / Sample (or a tuple of them)."""
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.numel()
    if isinstance(obj, Geometry):
        n = nbytes(obj.points) + nbytes(obj.normals) + nbytes(obj._weights)
        return n + sum(nbytes(v) for v in list(obj.fields.values()) + list(obj.cells.values()))
    if isinstance(obj, Neighborhoods):
        return nbytes(obj.index) + nbytes(obj.ptr)
    if isinstance(obj, Sample):
        return sum(nbytes(getattr(obj, a)) for a in ("geometry", "queries", "latent_features", "neighbors_in", "neighbors_out"))
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    return 0


class MemoryCache:
    """Least-recently-used store in memory bounded by bytes (:func:`nbytes` of each value; 0
    disables it): the decoded and prepared cases of a :class:`~geoop.data.folder.CaseReader`
    and its datasets."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.data: OrderedDict = OrderedDict()
        self.sizes: dict = {}
        self.total = 0

    def get(self, key):
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        return None

    def put(self, key, value):
        size = nbytes(value)
        self.pop(key)
        if size > self.max_bytes:
            return
        self.data[key] = value
        self.sizes[key] = size
        self.total += size
        while self.total > self.max_bytes:
            k, _ = self.data.popitem(last=False)
            self.total -= self.sizes.pop(k)

    def pop(self, key):
        if key in self.data:
            self.data.pop(key)
            self.total -= self.sizes.pop(key)
