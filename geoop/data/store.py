"""A packed case store: a folder of CFD cases converted once into chunked, compressed zarr
arrays that a dataset reads lazily, a few rows at a time.

The reading stage of the data path (case discovery and split -> **reading** -> the
:class:`~geoop.data.preprocess.Preprocessor` -> :class:`~geoop.batch.Sample`) is done once by
:func:`pack_folder`: every case is read with the dataset's own reader (fields picked, cell
data averaged onto the points, 2-D points given z = 0, queries cropped), its quadrature
weights are computed from its cells, and the result is written as arrays plus the per-case
statistics the normalisation needs. :class:`CaseStore` reads a store's metadata and rows;
:class:`~geoop.data.store_dataset.PackedCaseDataset` is the dataset over it.

Layout (zarr format 3, a directory)::

    STORE/zarr.json               root attributes ``geoop_store``: format, settings
    STORE/manifest.json           the source folder's manifest / split.json, verbatim
    STORE/cases/<key>/            one group per case, renamed into place when complete
        input/points (N, 3)       input geometry (raw file coordinates, z = 0 for 2-D files)
        input/normals (N, 3)      when the file has normals
        input/weights (N,)        quadrature weights of the whole case (from its cells)
        input/order (N,)          file row of each stored row (rows are stored shuffled)
        input/f<i> (N, C_i)       the input fields, names in the attributes
        input/cells/<type>        (M, k) connectivity in file row numbers (``cells=True``)
        query/...                 the same for the query geometry with the target fields;
                                  a query geometry that is the input geometry (one file,
                                  no crop) stores only its fields and shares the rest

Rows are stored in a seeded random permutation (``order``) so that every chunk of rows is a
uniform random sample of the case: reading a few chunks gives points spread over the whole
geometry, not one patch of it. Full reads put the rows back in file order.

Per-case attributes hold, for each role and field channel, ``count``, ``sum``, ``sumsq``
(sum of squares), ``mean``, ``m2`` (sum of squared deviations from the case mean), ``min``
and ``max``; the points' bounds; the point columns of the files; the topological
dimension; the files' sha256 (the neighbourhood cache key of :mod:`geoop.data.cache`).

Packing is resumable and atomic per case: a case is written to ``cases/.partial-<key>-<pid>``
and renamed to ``cases/<key>`` when complete; a rerun skips complete cases packed with the
same settings and removes partial ones of dead processes. Every chunk carries a CRC32C
checksum; a missing or truncated chunk, a store of another format version, a case packed
with other fields than asked: each a :class:`StoreError` naming the case.

Row sampling (:meth:`CaseStore.sample_rows`)
-------------------------------------------
``k`` of the ``N`` rows of one geometry, stored in ``n_c`` chunks of ``c`` rows (the last
one ``r <= c`` rows): choose ``m`` chunks uniformly without replacement, the fewest whose
rows hold ``k`` whatever the draw (``(m - 1) c + r >= k``), then ``k`` rows uniformly from
the ``R`` rows of those chunks. The inclusion probability of a row is

    pi_full  = (m / n_c) k [ p / ((m-1) c + r) + (1 - p) / (m c) ],  p = (m-1)/(n_c-1)
    pi_short = (m / n_c) k / ((m-1) c + r)                           (rows of the last chunk)

(``k / N`` for every row when ``r = c``; ``sum_i pi_i = k``). Quadrature weights of the kept
rows are divided by ``pi_i``, so integrals stay unbiased (the folder dataset's ``N / k``).
Since rows are stored shuffled, the kept rows are a uniform-ish sample of the case; an item
decodes ``m`` chunks per array, never the whole case.

Shapes
------
points (N, 3) float; normals (N, 3); weights (N,); order (N,) int; field (N, C)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .._atomic import atomic_write_text
from ..errors import DatasetError, GeoopError
from ..geometry.geometry import Geometry

__all__ = ["FORMAT_VERSION", "StoreError", "CaseStore", "CaseInfo", "pack_folder", "is_store", "PackReport",
           "inclusion_probabilities"]

#: version of the store layout; a reader refuses other versions
FORMAT_VERSION = 1
_ROOT_KEY = "geoop_store"
_ROLES = ("input", "query")
_MANIFESTS = ("manifest.json", "split.json")


class StoreError(DatasetError):
    """A packed store that cannot be read as asked (version, missing/corrupt chunk, fields)."""


def is_store(path: Union[str, Path, None]) -> bool:
    """True when ``path`` is a folder holding a geoop packed store (``zarr.json`` with the
    ``geoop_store`` attributes); reads one small file."""
    if path is None:
        return False
    p = Path(path) / "zarr.json"
    if not p.is_file():
        return False
    try:
        return _ROOT_KEY in json.loads(p.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False


def _zarr():
    from .._optional import require

    require("zarr", "packed case stores")
    import zarr
    import zarr.codecs  # noqa: F401

    return zarr


def _case_key(name: str) -> str:
    """A directory name for a case: the name itself when it is plain, else a hash."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        return name
    return "c-" + hashlib.sha1(name.encode()).hexdigest()[:20]


def _codecs():
    zc = _zarr().codecs

    # blosc/zstd with byte shuffle (floats compress well), then a checksum of the chunk
    return {"compressors": (zc.BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"), zc.Crc32cCodec())}


# ---------------------------------------------------------------------------- statistics
def _field_stats(v: torch.Tensor) -> dict:
    """Per-channel count, sum, sumsq, mean, m2 (centred sum of squares), min, max of (N, C)."""
    x = v.detach().to("cpu", torch.float64)
    x = x[:, None] if x.dim() == 1 else x
    n = int(x.shape[0])
    mean = x.mean(0) if n else torch.zeros(x.shape[1], dtype=torch.float64)
    return {"count": n, "sum": x.sum(0).tolist(), "sumsq": (x * x).sum(0).tolist(), "mean": mean.tolist(),
            "m2": ((x - mean) ** 2).sum(0).tolist(), "min": x.min(0).values.tolist() if n else [],
            "max": x.max(0).values.tolist() if n else []}


def inclusion_probabilities(n_rows: int, chunk_rows: int, k: int) -> tuple[int, float, float]:
    """``(m, pi_full, pi_short)`` of the row sampling in the module docstring: chunks read,
    and the inclusion probability of a row of a full chunk and of the last chunk."""
    c = int(chunk_rows)
    nc = max(1, math.ceil(n_rows / c))
    r = n_rows - (nc - 1) * c
    if k >= n_rows:
        return nc, 1.0, 1.0
    m = min(nc, max(1, math.ceil((k + c - r) / c)))
    if m >= nc:
        return nc, k / n_rows, k / n_rows
    p = (m - 1) / (nc - 1)
    short = (m - 1) * c + r
    pi_full = (m / nc) * k * (p / short + (1 - p) / (m * c))
    pi_short = (m / nc) * k / short
    return m, pi_full, pi_short


# ---------------------------------------------------------------------------- metadata
@dataclass
class CaseInfo:
    """Metadata of one packed case (its group attributes); ``roles[role]`` has ``n``,
    ``fields`` ({name: [array key, channels]}), ``bounds``, ``cols``, ``is_2d``,
    ``topological_dim``, ``normals``, ``cells``, ``shared``, ``stats``."""

    name: str
    key: str
    path: Path
    attrs: dict

    @property
    def roles(self) -> dict:
        return self.attrs["roles"]

    @property
    def files(self) -> dict:
        return self.attrs["files"]

    def n(self, role: str) -> int:
        return int(self.roles[role]["n"])

    def symmetry(self, role: str):
        """The symmetry plane the ``role`` geometry carried when packed (or None)."""
        spec = self.roles[role].get("symmetry")
        if spec is None:
            return None
        from ..geometry.symmetry import SymmetryPlane

        return SymmetryPlane.from_spec(spec, 3)

    def geometry_role(self, role: str) -> str:
        """The role whose points / normals / weights / order ``role`` uses."""
        return "input" if self.roles[role].get("shared") else role


class CaseStore:
    """Read access to a packed store (see the module docstring).

    Opening reads the root and per-case attributes only. Counters ``chunks_read`` and
    ``bytes_read`` (compressed bytes of the chunk files decoded) count payload reads.

    Parameters
    ----------
    path : the store folder.
    """

    def __init__(self, path: Union[str, Path]):
        zarr = _zarr()
        self.path = Path(path)
        self.chunks_read = 0
        self.bytes_read = 0
        self._arrays: dict = {}
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path}: not a packed store (no zarr.json); pack a folder with `geoop data pack`")
        try:
            root = zarr.open_group(str(self.path), mode="r")
            meta = dict(root.attrs).get(_ROOT_KEY)
        except Exception as e:  # noqa: BLE001  a damaged zarr.json
            raise StoreError(f"{self.path}: cannot read the store metadata ({type(e).__name__}: {e})") from None
        if not isinstance(meta, Mapping):
            raise StoreError(f"{self.path}: a zarr group but not a geoop store (no {_ROOT_KEY!r} attributes)")
        self.meta = dict(meta)
        _check_version(self.meta.get("format"), str(self.path / "zarr.json"))
        self.cases: dict[str, CaseInfo] = {}
        folder = self.path / "cases"
        for key in sorted(os.listdir(folder)) if folder.is_dir() else []:
            if key.startswith(".") or not (folder / key / "zarr.json").is_file():
                continue  # a case being written (or left partial by a killed pack)
            try:
                attrs = json.loads((folder / key / "zarr.json").read_text()).get("attributes", {})
            except (OSError, ValueError) as e:
                raise StoreError(f"{folder / key}: cannot read the case metadata ({type(e).__name__}: {e})") from None
            _check_version(attrs.get("format"), str(folder / key / "zarr.json"), attrs.get("name", key))
            if not attrs.get("complete"):
                raise StoreError(f"{folder / key}: case {attrs.get('name', key)!r} is incomplete; run `geoop data pack` "
                                 "again to finish it")
            self.cases[attrs["name"]] = CaseInfo(attrs["name"], key, folder / key, attrs)

    # ------------------------------------------------------------------ metadata
    @property
    def inputs(self) -> list:
        return list(self.meta.get("inputs", []))

    @property
    def targets(self) -> list:
        return list(self.meta.get("targets", []))

    def info(self, case: str) -> CaseInfo:
        try:
            return self.cases[case]
        except KeyError:
            raise StoreError(f"{self.path}: no case {case!r}; cases: {list(self.cases)[:5]}...") from None

    def check_fields(self, case: str, inputs: Sequence[str], targets: Sequence[str]) -> None:
        """Raise naming the case when it lacks one of the requested input / target fields."""
        info = self.info(case)
        have_in, have_t = list(info.roles["input"]["fields"]), list(info.roles["query"]["fields"])
        miss_in = [n for n in inputs if n not in have_in]
        miss_t = [n for n in targets if n not in have_t]
        if miss_in or miss_t:
            raise StoreError(
                f"{info.path}: case {case!r} was packed with inputs {have_in} and targets {have_t}; asked for inputs "
                f"{list(inputs)} and targets {list(targets)} (missing {miss_in + miss_t}); pack the folder again with "
                "these fields (`geoop data pack FOLDER --out STORE --config CFG --overwrite`)")

    # ------------------------------------------------------------------ arrays
    def _array(self, info: CaseInfo, rel: str):
        zarr = _zarr()
        key = (info.key, rel)
        arr = self._arrays.get(key)
        if arr is None:
            try:
                arr = zarr.open_array(str(info.path / rel), mode="r")
            except Exception as e:  # noqa: BLE001
                raise StoreError(f"{info.path / rel}: case {info.name!r}: cannot open array {rel!r} "
                                 f"({type(e).__name__}: {e})") from None
            self._arrays[key] = arr
        return arr

    def _read_chunks(self, info: CaseInfo, rel: str, chunks: Sequence[int]) -> np.ndarray:
        """The rows of the given row chunks of one array, concatenated in that order."""
        arr = self._array(info, rel)
        c = int(arr.chunks[0])
        parts = []
        for i in chunks:
            coords = (int(i),) + (0,) * (arr.ndim - 1)
            f = info.path / rel / arr.metadata.encode_chunk_key(coords)
            try:
                size = f.stat().st_size
            except OSError:
                raise StoreError(f"{f}: case {info.name!r}: chunk {i} of {rel!r} is missing; the store is damaged "
                                 "(pack the case again)") from None
            try:
                parts.append(arr[i * c:(i + 1) * c])
            except Exception as e:  # noqa: BLE001  checksum mismatch, truncated blosc frame...
                raise StoreError(f"{f}: case {info.name!r}: chunk {i} of {rel!r} is truncated or corrupt "
                                 f"({type(e).__name__}: {e}); pack the case again") from None
            self.chunks_read += 1
            self.bytes_read += size
        if not parts:
            return np.zeros((0,) + tuple(arr.shape[1:]), dtype=arr.dtype)
        return np.concatenate(parts, 0)

    def chunk_rows(self, case: str, role: str) -> int:
        info = self.info(case)
        return int(self._array(info, f"{info.geometry_role(role)}/points").chunks[0])

    def sample_rows(self, case: str, role: str, k: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``k`` stored rows of a case's ``role`` geometry drawn as in the module docstring:
        ``(rows (k,) sorted, pi (k,) their inclusion probabilities)``."""
        info = self.info(case)
        n = info.n(role)
        c = self.chunk_rows(case, role)
        m, pi_full, pi_short = inclusion_probabilities(n, c, k)
        nc = max(1, math.ceil(n / c))
        if m >= nc:
            rows = torch.randperm(n, generator=generator)[:k].sort().values.numpy()
            return rows, np.full(rows.shape, min(1.0, k / n))
        chunks = torch.randperm(nc, generator=generator)[:m].sort().values
        pool = torch.cat([torch.arange(int(j) * c, min((int(j) + 1) * c, n)) for j in chunks])
        rows = pool[torch.randperm(pool.numel(), generator=generator)[:k]].sort().values.numpy()
        pi = np.where(rows >= (nc - 1) * c, pi_short, pi_full)
        return rows, pi

    def read_rows(self, case: str, role: str, rows: Optional[np.ndarray], fields: Sequence[str] = (),
                  what: Sequence[str] = ("points", "normals", "weights", "order")) -> dict:
        """Arrays of a case's ``role`` geometry at the stored ``rows`` (sorted; None: every
        row in stored order), decoding only the chunks holding them: ``{"points", "normals"
        (or None), "weights", "order", fields by name}`` as numpy arrays."""
        info = self.info(case)
        g = info.geometry_role(role)
        n = info.n(role)
        c = self.chunk_rows(case, role)
        if rows is None:
            chunks, local = np.arange(max(1, math.ceil(n / c))), None
        else:
            chunk_of = rows // c
            chunks = np.unique(chunk_of)
            # position of each row inside the concatenation of its chunks
            start = np.searchsorted(chunks, chunk_of)
            local = start * c + (rows - chunk_of * c)
        out = {}
        for name in what:
            if name == "normals" and not info.roles[g]["normals"]:
                out[name] = None
                continue
            block = self._read_chunks(info, f"{g}/{name}", chunks)
            out[name] = block if local is None else block[local]
        for name in fields:
            spec = info.roles[role]["fields"].get(name)
            if spec is None:
                self.check_fields(case, fields if role == "input" else (), fields if role == "query" else ())
            block = self._read_chunks(info, f"{role}/{spec[0]}", chunks)
            out[name] = block if local is None else block[local]
        return out

    def read_points(self, case: str, role: str, chunk: int) -> np.ndarray:
        """The points of one stored row chunk (bounded-memory scans over a case)."""
        info = self.info(case)
        return self._read_chunks(info, f"{info.geometry_role(role)}/points", [chunk])

    def read_case(self, case: str, inputs: Sequence[str], targets: Sequence[str]) -> tuple[Geometry, Geometry]:
        """The whole case as the folder dataset reads it: raw 3-D geometries in file row
        order with the input / target fields, the stored weights, and the cells when packed."""
        self.check_fields(case, inputs, targets)
        info = self.info(case)
        out = []
        for role, names in (("input", inputs), ("query", targets)):
            d = self.read_rows(case, role, None, names)
            order = d["order"].astype(np.int64)

            def unshuffle(a):
                if a is None:
                    return None
                b = np.empty_like(a)
                b[order] = a
                return torch.from_numpy(b)

            out.append(Geometry(unshuffle(d["points"]), cells=self.read_cells(case, role), normals=unshuffle(d["normals"]),
                                weights=unshuffle(d["weights"]), fields={n: unshuffle(d[n]) for n in names},
                                name=case, source=info.files[role], validate=False, symmetry=info.symmetry(role)))
        return out[0], out[1]

    def read_cells(self, case: str, role: str) -> dict:
        """The packed cells of a case's ``role`` geometry ``{type: (M, k) long}`` in file row
        numbers ({} when packed without cells)."""
        info = self.info(case)
        out = {}
        for kind, rel in info.roles[info.geometry_role(role)].get("cells", {}).items():
            out[kind] = torch.from_numpy(self._read_chunks(info, rel, range(self._nchunks(info, rel))).astype(np.int64))
        return out

    def _nchunks(self, info: CaseInfo, rel: str) -> int:
        arr = self._array(info, rel)
        return max(1, math.ceil(arr.shape[0] / arr.chunks[0]))

    def __getstate__(self):  # DataLoader workers: reopen arrays lazily
        state = dict(self.__dict__)
        state["_arrays"] = {}
        return state

    def __repr__(self) -> str:
        return f"CaseStore({str(self.path)!r}, cases={len(self.cases)}, inputs={self.inputs}, targets={self.targets})"


def _check_version(found, where: str, case: Optional[str] = None) -> None:
    what = f"case {case!r} in " if case else ""
    if found != FORMAT_VERSION:
        newer = isinstance(found, int) and found > FORMAT_VERSION
        raise StoreError(f"{where}: {what}a store of format version {found!r}; this geoop reads version {FORMAT_VERSION}"
                         + (" (the store was written by a newer geoop: upgrade geoop)" if newer else
                            " (pack the folder again with this geoop)"))


# ---------------------------------------------------------------------------- packing
@dataclass
class PackReport:
    """What :func:`pack_folder` did: cases ``packed`` now, ``kept`` (already complete),
    ``skipped`` ``(case, file, reason)``, and the store path."""

    store: Path
    packed: list
    kept: list
    skipped: list


def _write_array(group_path: Path, rel: str, data: np.ndarray, chunk_rows: int) -> None:
    zarr = _zarr()
    data = np.ascontiguousarray(data)
    chunks = (max(1, min(chunk_rows, data.shape[0])),) + tuple(data.shape[1:])
    arr = zarr.create_array(str(group_path / rel), shape=data.shape, chunks=chunks, dtype=data.dtype,
                            fill_value=0, **_codecs())
    if data.size:
        arr[...] = data


def _pack_case(tmp: Path, name: str, gin: Geometry, gq: Geometry, cols: int, files: dict, hashes: list,
               inputs: Sequence[str], targets: Sequence[str], cells: bool, chunk_rows: int, seed: int,
               shared: bool) -> dict:
    """Write one case's arrays under ``tmp``; returns its attributes (without ``complete``)."""
    zarr = _zarr()
    zarr.open_group(str(tmp), mode="w")
    roles = {}
    for role, g, names in (("input", gin, inputs), ("query", gq, targets)):
        sub = tmp / role
        zarr.open_group(str(sub), mode="w")
        rinfo = {"n": int(g.n_points), "fields": {}, "stats": {}, "shared": bool(role == "query" and shared)}
        if not rinfo["shared"]:
            n = g.n_points
            ss = np.random.SeedSequence([seed, int.from_bytes(hashlib.sha256(f"{name}/{role}".encode()).digest()[:8], "little")])
            order = np.random.default_rng(ss).permutation(n).astype(np.int32 if n < 2**31 else np.int64)
            _write_array(tmp, f"{role}/points", g.points.numpy()[order], chunk_rows)
            if g.normals is not None:
                _write_array(tmp, f"{role}/normals", g.normals.numpy()[order], chunk_rows)
            _write_array(tmp, f"{role}/weights", g.weights.numpy()[order], chunk_rows)
            _write_array(tmp, f"{role}/order", order, chunk_rows)
            lo, hi = g.bounds
            rinfo.update(normals=g.normals is not None, bounds=[lo.double().tolist(), hi.double().tolist()],
                         is_2d=bool(g.is_2d), topological_dim=int(g.topological_dim), cells={},
                         symmetry=None if g.symmetry is None else g.symmetry.to_list())
            if cells:
                for kind, conn in g.cells.items():
                    rel = f"{role}/cells/{kind}"
                    _write_array(tmp, rel, conn.numpy(), max(chunk_rows, 1))
                    rinfo["cells"][kind] = rel
            perm = order
        else:
            perm = np.asarray(zarr.open_array(str(tmp / "input/order"), mode="r")[:]).astype(np.int64)
            rinfo.update(normals=roles["input"]["normals"], bounds=roles["input"]["bounds"], is_2d=roles["input"]["is_2d"],
                         topological_dim=roles["input"]["topological_dim"], cells={}, symmetry=roles["input"]["symmetry"])
        for i, fname in enumerate(names):
            v = g.fields[fname]
            _write_array(tmp, f"{role}/f{i}", v.numpy()[perm], chunk_rows)
            rinfo["fields"][fname] = [f"f{i}", int(v.shape[1]) if v.dim() == 2 else 1]
            rinfo["stats"][fname] = _field_stats(v)
        roles[role] = rinfo
    return {"format": FORMAT_VERSION, "name": name, "roles": roles, "cols": int(cols), "files": files,
            "sha256": hashes, "inputs": list(inputs), "targets": list(targets), "dtype": str(gin.points.dtype)}


def _settings(inputs, targets, input_file, query_file, crop, cells, symmetry=None) -> dict:
    return {"inputs": list(inputs), "targets": list(targets), "input_file": input_file, "query_file": query_file,
            "crop": crop, "cells": bool(cells), "symmetry": symmetry}


def pack_folder(folder: Union[str, Path], out: Union[str, Path], inputs: Sequence[str] = (), targets: Sequence[str] = (),
                *, input_file=None, query_file=None, crop=None, symmetry=None, cells: bool = False, chunk_rows: int = 8192,
                seed: int = 0, on_error: str = "raise", overwrite: bool = False,
                log: Optional[Callable[[str], None]] = None) -> PackReport:
    """Convert the cases of ``folder`` (discovered as :class:`~geoop.data.MeshFolderDataset`
    does, ``input_file``/``query_file`` patterns with ``{case}``) into the store ``out``.

    inputs, targets : fields read from the input / query geometry (as the dataset reads them)
    crop : the dataset's ``crop`` box, applied to the query geometries when packing
    symmetry : the dataset's ``symmetry`` setting (``"auto"`` is resolved per case when
        packing); each case stores the plane its geometries carry
    cells : also store the cell connectivity (full-case reads then carry the mesh)
    chunk_rows : rows per chunk (an item of ``k`` points decodes about ``ceil(k / chunk_rows)``
        chunks per array)
    seed : of the per-case row shuffles
    on_error : ``"raise"`` (a bad case stops packing, naming the file) or ``"skip"``
    overwrite : repack cases already in the store (a store of other settings is replaced)

    Rerunning on a partially packed store resumes: complete cases packed with the same
    settings are kept. Returns a :class:`PackReport`.
    """
    zarr = _zarr()
    from .folder import discover_cases
    from .preprocess import Preprocessor, read_file

    log = log or (lambda s: None)
    folder, out = Path(folder), Path(out)
    if on_error not in ("raise", "skip"):
        raise DatasetError(f"pack_folder: on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise DatasetError(f"pack_folder: chunk_rows must be an int >= 1, got {chunk_rows!r}")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not inputs and not targets:
        raise DatasetError("pack_folder: give the fields to pack (inputs=[...] and/or targets=[...], or --config)")
    if out.resolve() == folder.resolve():
        raise DatasetError(f"pack_folder: the store {out} must not be the source folder")
    pre = Preprocessor(inputs, targets, "none", crop=crop, symmetry=symmetry)
    settings = _settings(inputs, targets, input_file if input_file is None or isinstance(input_file, str) else repr(input_file),
                         query_file if query_file is None or isinstance(query_file, str) else repr(query_file), pre.crop, cells,
                         pre.symmetry)
    found, problems = discover_cases(folder, input_file, query_file)
    if out.exists() and any(out.iterdir()):
        if not is_store(out):
            raise StoreError(f"{out}: exists and is not a geoop store; choose another --out")
        meta = json.loads((out / "zarr.json").read_text())["attributes"][_ROOT_KEY]
        _check_version(meta.get("format"), str(out / "zarr.json"))
        old = meta.get("settings", {})
        if old != settings:
            if not overwrite:
                diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
                raise StoreError(f"{out}: the store was packed with other settings {{key: (stored, asked)}}: {diff}; "
                                 "pass --overwrite to repack it, or choose another --out")
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "zarr.json").is_file():
        root = zarr.open_group(str(out), mode="w")
        root.attrs[_ROOT_KEY] = {"format": FORMAT_VERSION, "settings": settings, "inputs": inputs, "targets": targets,
                                 "source": str(folder.resolve()), "chunk_rows": chunk_rows, "seed": seed}
    for name in _MANIFESTS:  # the split and per-case records travel with the store
        if (folder / name).is_file():
            atomic_write_text(out / name, (folder / name).read_text())
    cases_dir = out / "cases"
    cases_dir.mkdir(exist_ok=True)
    _remove_dead_partials(cases_dir)
    from .cache import file_sha256

    report = PackReport(out, [], [], [])
    for case, f, reason in problems:
        if on_error == "raise":
            raise DatasetError(f"{f}: case {case!r}: {reason}")
        report.skipped.append((case, f, reason))
    for name, cf in found.items():
        key = _case_key(name)
        final = cases_dir / key
        if final.exists():
            try:
                attrs = json.loads((final / "zarr.json").read_text())["attributes"]
            except (OSError, ValueError, KeyError):
                attrs = {}
            same = (attrs.get("complete") and attrs.get("format") == FORMAT_VERSION and attrs.get("name") == name
                    and attrs.get("inputs") == inputs and attrs.get("targets") == targets)
            if same and not overwrite:
                report.kept.append(name)
                continue
            if not overwrite:
                raise StoreError(f"{final}: case {name!r} is in the store with other fields (inputs {attrs.get('inputs')}, "
                                 f"targets {attrs.get('targets')}; asked {inputs}, {targets}); pass --overwrite")
        try:
            g = read_file(cf.input)
            q = None if cf.same_file else read_file(cf.query)
            cols = max(g.dim, (g if q is None else q).dim)
            gin, gq = pre.crop_queries(*pre.split_geometries(g, q, name))
            del g, q
        except GeoopError as e:
            if on_error == "raise":
                raise DatasetError(f"case {name!r}: {e}") from None
            report.skipped.append((name, str(cf.input), str(e)))
            continue
        shared = cf.same_file and pre.crop is None
        hashes = [file_sha256(cf.input)] + ([] if cf.same_file else [file_sha256(cf.query)])
        tmp = cases_dir / f".partial-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            attrs = _pack_case(tmp, name, gin, gq, cols, {"input": str(cf.input), "query": str(cf.query)}, hashes,
                               inputs, targets, cells, chunk_rows, seed, shared)
            grp = zarr.open_group(str(tmp), mode="r+")
            grp.attrs.update({**attrs, "complete": True})
            if final.exists():  # --overwrite: the old case goes only once the new one is complete
                shutil.rmtree(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        report.packed.append(name)
        log(f"packed {name} ({gin.n_points} input, {gq.n_points} query points)")
    return report


def _remove_dead_partials(cases_dir: Path) -> None:
    """Remove ``.partial-*`` case folders whose packing process is gone."""
    for p in cases_dir.glob(".partial-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(p, ignore_errors=True)
