"""Datasets from folders of a user's CFD output files (OpenFOAM, Fluent, Star-CCM+ exports).

A *case* is one simulation: an input geometry carrying the input fields (e.g. the wall
surface ``case_XXX_surface.vtp``) and a query geometry carrying the target fields (e.g. the
volume ``case_XXX_volume.vtu``; it may be the same file). Files are grouped into cases by
patterns with a ``{case}`` placeholder (or a callable); see :func:`discover_cases`.

Each item is a :class:`geoop.batch.Sample` whose

* points (input and query) are mapped into the unit box by ONE transform fitted on the
  training split (``geometry_normalization="dataset"``), or by one transform per case
  (``"case"``), ``x' = (x - shift) / scale``; the transform is stored in ``meta["transform"]``
  so predictions and query points map back with ``x = x' * scale + shift``;
* fields are normalised per channel, ``(f - mean) / std``, with statistics from the
  TRAINING split only (:class:`~geoop.data.normalize.FieldNormalizer`);
* optional neighbourhoods come from ``neighbors(sample) -> sample`` (e.g. ``GINO.precompute``)
  on the full normalised case, cached on disk (:mod:`geoop.data.cache`) and in memory;
* optional random subsample of input points and queries is drawn per epoch from a
  generator seeded with ``(seed, epoch, index)``; cached neighbourhoods are restricted to
  the kept points (never recomputed) and quadrature weights are scaled by ``N / K`` so
  integrals stay unbiased.

All cases the dataset needs (the selected split, and the training split for the
statistics) are read and checked when the dataset is built, so bad files surface before
training: a missing field, NaN/Inf values, an unreadable file, a case of another dimension
(2-D among 3-D) or another field width raises a :class:`~geoop.errors.DatasetError` naming
the file, or with ``on_error="skip"`` is left out with a ``warnings.warn`` naming the file
and the reason (listed in :attr:`MeshFolderDataset.skipped`).

A file that becomes unreadable after the dataset was built (while a run reads it) raises a
:class:`~geoop.errors.DatasetError` too, or with ``on_error="skip"`` its item is replaced
by the next readable case and the file is reported once for the whole run, across
DataLoader worker processes: the first process to fail on it claims a marker file in a
folder shared by all copies of the dataset (made when the dataset is built), warns, and
records the reason there; every process then skips that case without reading it again
(:meth:`MeshFolderDataset.skipped_during_run` lists them).

Shapes (one item)
------
sample.geometry.points : (N, d) float in the unit box; fields ``inputs`` each (N, C_i)
sample.queries.points  : (Q, d) float; fields ``targets`` each (Q, C_t)
meta["transform"]      : {"shift": (d,), "scale": (d,)}
meta["point_index"]    : (K,) long rows of the full case kept by subsampling, or None
meta["query_index"]    : (K_q,) long, or None
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import tempfile
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..batch import Sample
from ..errors import DatasetError, GeoopError
from ..geometry.geometry import Geometry, NormalizeTransform
from ..geometry.openfoam import REGION_SEP, case_files, is_openfoam_case, split_region
from ..neighbors.neighborhoods import Neighborhoods
from .cache import DiskNeighborhoodCache, cache_key, file_sha256, pack_neighbors, unpack_neighbors
from .normalize import DatasetNormalizers
from .preprocess import COEF_P_FIELD, COEF_TAU_FIELD, FITTED_RULES, GEOMETRY_NORMALIZATIONS, Preprocessor, read_file

__all__ = ["MeshFolderDataset", "CaseFiles", "discover_cases", "discover_set_cases", "resolve_split", "MESH_EXTENSIONS"]

log = logging.getLogger(__name__)

#: extensions considered by the default one-file-per-case discovery
MESH_EXTENSIONS = (".vtu", ".vtp", ".vtk", ".ply", ".stl", ".obj", ".off", ".msh", ".xdmf", ".xmf", ".npz")

_ON_ERROR = ("raise", "skip")
_SPLITS = ("train", "val", "test", "all")
_GEOM_NORM = GEOMETRY_NORMALIZATIONS
#: suffix of the mirrored copy of a training case (``mirror=``)
MIRROR_SUFFIX = "@mirror"

Pattern = Union[str, Callable[[str], Optional[str]], None]


# ---------------------------------------------------------------------------- choices
def _choice(value, valid: Sequence[str], what: str) -> str:
    """Resolve a string option; an unknown one lists the valid choices."""
    if value not in valid:
        raise DatasetError(f"MeshFolderDataset: unknown {what} {value!r}; valid: {list(valid)}")
    return value


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


# ---------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class CaseFiles:
    """The files of one case. ``query`` equals ``input`` when targets live on the input file."""

    name: str
    input: Path
    query: Path
    #: the files of the query sets, in set order (empty: one query file)
    sets: tuple = ()

    @property
    def same_file(self) -> bool:
        return self.input == self.query and all(p == self.input for p in self.sets)


def _pattern_regex(pattern: str) -> re.Pattern:
    """Glob pattern with one ``{case}`` placeholder -> regex over the relative posix path."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("{case}", i):
            out.append(r"(?P<case>[^/]+)")
            i += 6
        elif pattern.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif pattern[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out) + "$")


def _match(root: Path, pattern: Pattern, role: str) -> dict[str, list[Path]]:
    """Files of one role grouped by case name."""
    found: dict[str, list[Path]] = {}
    if callable(pattern):
        for p in sorted(root.rglob("*")):
            if p.is_file():
                case = pattern(p.relative_to(root).as_posix())
                if case:
                    found.setdefault(str(case), []).append(p)
        return found
    pat, region = split_region(str(pattern))  # "{case}::wall*": patches of OpenFOAM cases
    if "{case}" not in pat:
        if "*" not in pat:
            raise DatasetError(
                f"MeshFolderDataset: {role}_file pattern {pat!r} has neither a '{{case}}' placeholder nor a '*' "
                "to take the case name from (e.g. '{case}_surface.vtp' or '*_surface.vtp')"
            )
        pat = pat.replace("*", "{case}", 1)  # the first '*' names the case
    if pat.count("{case}") != 1:
        raise DatasetError(f"MeshFolderDataset: {role}_file pattern {pattern!r} must contain '{{case}}' once")
    rx = _pattern_regex(pat)
    for p in sorted(root.glob(pat.replace("{case}", "*"))):
        if not (p.is_file() or is_openfoam_case(p)):  # a folder matches when it is an OpenFOAM case
            continue
        m = rx.match(p.relative_to(root).as_posix())
        if m:
            found.setdefault(m.group("case"), []).append(p if region is None else Path(f"{p}{REGION_SEP}{region}"))
    return found


def discover_cases(root: Union[str, Path], input_file: Pattern = None, query_file: Pattern = None) -> tuple[dict[str, CaseFiles], list[tuple[str, str, str]]]:
    """Group the files under ``root`` into cases.

    input_file / query_file : how to find a case's input / query file:

        * a glob pattern relative to ``root`` with a ``{case}`` placeholder, e.g.
          ``"{case}_surface.vtp"``, ``"{case}/VTK/*/boundary/wall.vtp"`` (OpenFOAM
          ``foamToVTK``), ``"exports/{case}.cgns"``; without ``{case}`` the first ``*``
          names the case (``"*_surface.vtp"``). A pattern may match OpenFOAM case folders
          (``"{case}"``, ``"runs/{case}"``: the internal mesh at the latest time) and
          name patches after ``::`` (``"{case}::wall*"``: those patches as one surface;
          :mod:`geoop.geometry.openfoam`);
        * a callable ``f(relative_posix_path) -> case name or None``, applied to every file;
        * None: the same file as the other role; both None: every file with a mesh
          extension directly in ``root`` is one case named by its stem.

    When a pattern matches several files of one case (e.g. several time steps
    ``case/VTK/case_100``, ``case_200``), the last one in natural sort order (the latest
    time) is used.

    Returns ``(cases, problems)``: cases by name (natural order) and a list of
    ``(case, file, reason)`` for cases lacking the file of one role.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"MeshFolderDataset: dataset folder {str(root)!r} does not exist or is not a folder")
    if input_file is None and query_file is None:
        files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in MESH_EXTENSIONS)
        ins = {p.name.split(".")[0]: [p] for p in files}
        qs = ins
        searched = f"files with extensions {list(MESH_EXTENSIONS)} directly in {root}"
    else:
        ins = _match(root, input_file, "input") if input_file is not None else None
        qs = _match(root, query_file, "query") if query_file is not None else None
        ins = qs if ins is None else ins
        qs = ins if qs is None else qs
        searched = " and ".join(
            f"{role}_file={pat if isinstance(pat, str) else getattr(pat, '__name__', 'callable')!r}"
            for role, pat in (("input", input_file), ("query", query_file)) if pat is not None
        ) + f" under {root}"
    if not ins and not qs:
        raise DatasetError(f"MeshFolderDataset: no case found; searched {searched}")

    def pick(paths: list[Path], case: str, role: str) -> Path:
        paths = sorted(paths, key=lambda p: _natural_key(p.relative_to(root).as_posix()))
        if len(paths) > 1:
            log.info("case %r: %d %s files match, using the last (%s)", case, len(paths), role, paths[-1])
        return paths[-1]

    cases, problems = {}, []
    for name in sorted(set(ins) | set(qs), key=_natural_key):
        if name not in ins:
            problems.append((name, str(pick(qs[name], name, "query")), f"no input file matching {input_file!r}"))
            continue
        if name not in qs:
            problems.append((name, str(pick(ins[name], name, "input")), f"no query file matching {query_file!r}"))
            continue
        cases[name] = CaseFiles(name, pick(ins[name], name, "input"), pick(qs[name], name, "query"))
    return cases, problems


def discover_set_cases(root: Union[str, Path], input_file: Pattern, set_files: Sequence[Pattern]) -> tuple[dict[str, CaseFiles], list[tuple[str, str, str]]]:
    """:func:`discover_cases` for several query sets: the cases that have the input file
    and one file of every set pattern (``CaseFiles.sets`` in set order, ``query`` the first
    set's file); a case lacking one is a problem ``(case, file, reason)``."""
    per = [discover_cases(root, input_file, f) for f in set_files]
    problems = [pr for _, probs in per for pr in probs]
    names = [n for n in per[0][0] if all(n in c for c, _ in per)]
    for c, _ in per:
        for n in c:
            if n not in names and not any(p[0] == n for p in problems):
                missing = [f for f, (cc, _) in zip(set_files, per) if n not in cc]
                problems.append((n, str(c[n].input), f"no query file matching {missing[0]!r}"))
    cases = {n: CaseFiles(n, per[0][0][n].input, per[0][0][n].query, tuple(c[n].query for c, _ in per)) for n in names}
    return cases, problems


# ---------------------------------------------------------------------------- split
def _load_manifest(root: Path, manifest) -> Optional[dict]:
    if manifest is False:
        return None
    if isinstance(manifest, Mapping):
        return dict(manifest)
    if manifest is not None:
        paths = [Path(manifest) if Path(manifest).is_absolute() else root / manifest]
        if not paths[0].exists():
            raise DatasetError(f"MeshFolderDataset: manifest {str(paths[0])!r} does not exist")
    else:
        paths = [root / "split.json", root / "manifest.json"]
    for p in paths:
        if p.exists():
            try:
                data = json.loads(p.read_text(), object_pairs_hook=_unique_pairs)
            except (OSError, ValueError) as e:
                raise DatasetError(f"{p}: cannot read the manifest as JSON: {e}") from None
            split = _split_from_manifest(data, p)
            if split is not None:
                return split
            if manifest is not None or p.name == "split.json":
                raise DatasetError(
                    f"{p}: no split found; expected {{'train': [...], 'test': [...]}}, a 'split' key holding "
                    "that or {case: 'train'|'test'}, or case records with a 'split' key"
                )
    return None


def _unique_pairs(items) -> dict:
    """JSON object hook: a key given twice is an error (``json`` would keep the last)."""
    out = {}
    for k, v in items:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _assign(out: dict, name: str, part: str, where) -> None:
    """``out[name] = part``; a case listed in two splits is a :class:`DatasetError`."""
    if name in out and out[name] != part:
        raise DatasetError(f"{where}: case {name!r} is listed in two splits, {out[name]!r} and {part!r}; "
                           "a case belongs to one split (remove it from one of them)")
    out[name] = part


def _split_from_manifest(data: Any, where) -> Optional[dict]:
    """Normalise the accepted manifest layouts to ``{case: "train"|"test"|other}``; a case in
    two splits is a :class:`DatasetError` naming it and both splits."""
    if isinstance(data, Mapping) and "split" in data:
        data = data["split"]
    out: dict = {}
    if isinstance(data, Mapping) and any(k in data for k in ("train", "val", "test")):
        for part, names in data.items():
            if isinstance(names, (list, tuple)):
                for n in names:
                    _assign(out, str(n), str(part), where)
        return out
    if isinstance(data, Mapping) and data and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    records = data.get("cases") if isinstance(data, Mapping) else data
    if isinstance(records, list) and records and all(isinstance(r, Mapping) for r in records):
        if all("split" in r for r in records):
            for r in records:
                name = next((r[k] for k in ("case", "name", "id") if k in r), None)
                if name is None:
                    raise DatasetError(f"{where}: manifest record {dict(r)} has a 'split' but no 'case'/'name'/'id'")
                _assign(out, str(name), str(r["split"]), where)
            return out
    return None


def resolve_split(cases: Sequence[str], seed: int = 0, test_fraction: float = 0.2,
                  manifest: Optional[Mapping[str, str]] = None, val_fraction: float = 0.0) -> dict[str, str]:
    """``{case: "train"|"val"|"test"}``. From ``manifest`` when given (cases it does not list
    are left out), else a deterministic shuffle of the naturally sorted names with ``seed``:
    ``round(test_fraction * n)`` test cases (at least one when 0 < fraction and n >= 2), then
    ``round(val_fraction * n)`` validation cases (at least one when 0 < fraction) from the rest
    (with a manifest that names no ``"val"`` case: from its training cases)."""
    if manifest is not None:
        out = {c: manifest[c] for c in cases if c in manifest}
        if val_fraction > 0 and "val" not in out.values():  # draw validation cases from the training ones
            train = [c for c in sorted(out, key=_natural_key) if out[c] == "train"]
            part = resolve_split(train, seed, 0.0, None, val_fraction)
            out.update({c: "val" for c, v in part.items() if v == "val"})
        return out
    if not 0.0 <= test_fraction < 1.0:
        raise DatasetError(f"MeshFolderDataset: test_fraction must be in [0, 1), got {test_fraction}")
    names = sorted(cases, key=_natural_key)
    n = len(names)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    if not 0.0 <= val_fraction < 1.0 or (val_fraction > 0 and n - n_test < 2):
        raise DatasetError(f"MeshFolderDataset: val_fraction must be in [0, 1) and leave a training case, got "
                           f"{val_fraction} for {n} cases ({n_test} test)")
    n_val = min(max(int(round(val_fraction * n)), 1 if val_fraction > 0 else 0), max(n - n_test - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    test = {names[i] for i in perm[:n_test]}
    val = {names[i] for i in perm[n_test:n_test + n_val]}
    return {c: ("test" if c in test else "val" if c in val else "train") for c in names}


# ---------------------------------------------------------------------------- reading
class _SkippedCase(Exception):
    """A case's file became unreadable during the run and ``on_error="skip"``."""


def _remove_skip_dir(folder: str, owner: int) -> None:
    if os.getpid() != owner:  # a forked DataLoader worker: the folder belongs to the main process
        return
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- memory cache
def _nbytes(obj) -> int:
    if isinstance(obj, Tensor):
        return obj.element_size() * obj.numel()
    if isinstance(obj, Geometry):
        n = _nbytes(obj.points) + _nbytes(obj.normals) + _nbytes(obj._weights)
        return n + sum(_nbytes(v) for v in list(obj.fields.values()) + list(obj.cells.values()))
    if isinstance(obj, Neighborhoods):
        return _nbytes(obj.index) + _nbytes(obj.ptr)
    if isinstance(obj, Sample):
        return sum(_nbytes(getattr(obj, a)) for a in ("geometry", "queries", "latent_features", "neighbors_in", "neighbors_out"))
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    return 0


class _LRU:
    """Least-recently-used store bounded by bytes (0 disables it)."""

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
        size = _nbytes(value)
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


# ---------------------------------------------------------------------------- CSR helpers
def _keep_sources(nb: Neighborhoods, keep: Tensor, n_sources: int) -> Neighborhoods:
    """Restrict to the sources ``keep`` (K,) (sorted, unique) and renumber them 0..K-1."""
    new_id = torch.full((n_sources,), -1, dtype=torch.long)
    new_id[keep] = torch.arange(keep.numel())
    e = new_id[nb.index]
    ok = e >= 0
    kept_per_query = torch.zeros(nb.num_queries, dtype=torch.long).index_add_(0, nb.query_index(), ok.long())
    ptr = torch.zeros_like(nb.ptr)
    torch.cumsum(kept_per_query, 0, out=ptr[1:])
    return Neighborhoods(e[ok], ptr, int(keep.numel()), nb.radius)


def _take_queries(nb: Neighborhoods, rows: Tensor) -> Neighborhoods:
    """The neighbourhoods of the queries ``rows`` (K,), in that order."""
    return nb.select(rows)


# ---------------------------------------------------------------------------- dataset
#: attributes of a model that determine its neighbourhoods (GINO: radii, latent grid, domain)
_NEIGHBOR_ATTRS = ("radius", "radius_in", "radius_out", "latent", "latent_shape", "domain", "coord_dim",
                   "num_latent", "max_neighbors", "sphere_grid")


def _neighbors_config(fn: Callable, key) -> dict:
    """What identifies a neighbourhood computation in the cache key: ``neighbors_key`` when
    given, else the callable's ``cache_key``/``config`` when it has one, else its qualified
    name plus the numeric/str configuration attributes of its owner (radii, latent shape...)."""
    if key is not None:
        return {"key": key}
    owner = getattr(fn, "__self__", None)
    if owner is None and not inspect.isfunction(fn) and not hasattr(fn, "func") and hasattr(fn, "__dict__"):
        owner = fn  # a callable object: its attributes are its configuration
    for src in (fn, owner):
        ck = getattr(src, "cache_key", None) if src is not None else None
        if ck is not None:
            return {"key": ck() if callable(ck) else ck}
    cfg: dict = {"fn": f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"}
    func = getattr(fn, "func", None)  # functools.partial
    if func is not None:
        cfg["fn"] = f"{func.__module__}.{func.__qualname__}"
        cfg["args"] = [a for a in fn.args if isinstance(a, (int, float, str, tuple))]
        cfg["kwargs"] = {k: v for k, v in fn.keywords.items() if isinstance(v, (int, float, str, tuple, list))}
    if owner is not None:
        simple = {k: v for k, v in vars(owner).items()
                  if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, tuple, list, bool))}
        relevant = {k: v for k, v in simple.items() if k in _NEIGHBOR_ATTRS}
        cfg["owner"] = relevant or simple  # a GINO: only what changes its neighbourhoods
    return cfg


def _mirror_spec(spec) -> Optional[dict]:
    """``mirror=`` -> ``{"plane": [n..., c], "vector_fields": "auto" | [names]}`` or None."""
    if spec is None or spec is False:
        return None
    from ..geometry.symmetry import SymmetryPlane

    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"plane", "vector_fields"})
        if unknown or "plane" not in spec:
            raise DatasetError(f"MeshFolderDataset: mirror must be {{'plane': ['y', 0.0], 'vector_fields': 'auto' | [names]}} "
                               f"(or a plane), got keys {sorted(spec)}")
        plane, vec = spec["plane"], spec.get("vector_fields", "auto")
    else:
        plane, vec = spec, "auto"
    if not (vec == "auto" or (isinstance(vec, (list, tuple)) and all(isinstance(v, str) for v in vec))):
        raise DatasetError(f"MeshFolderDataset: mirror vector_fields must be 'auto' or a list of field names, got {vec!r}")
    return {"plane": SymmetryPlane.from_spec(plane, 3).to_list(), "vector_fields": vec if vec == "auto" else list(vec)}


def _source_sha256(path: Path) -> str:
    """sha256 of a file, or of an OpenFOAM case: the files its reader reads and the region."""
    if not is_openfoam_case(path):
        return file_sha256(path)
    d = hashlib.sha256(str(split_region(path)[1]).encode())
    for f in case_files(path):
        d.update(f"{f.name}:{file_sha256(f)}".encode())
    return d.hexdigest()


class MeshFolderDataset(torch.utils.data.Dataset):
    """A folder of CFD cases as a dataset of :class:`~geoop.batch.Sample`.

    Parameters
    ----------
    root : folder holding the cases, or a packed store (``geoop data pack``; the dataset is then
        a :class:`~geoop.data.store_dataset.PackedCaseDataset`, which reads it lazily).
    inputs : names of the input fields (on the input geometry), may be empty.
    targets : names of the target fields (on the query geometry).
    split : ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    input_file, query_file : case grouping, see :func:`discover_cases`.
    test_fraction, seed : the seeded split when no manifest gives one (``val_fraction``, a
        keyword: the share of validation cases drawn from the non-test ones; default 0).
    manifest : None (use ``root/split.json``, else a ``split`` in ``root/manifest.json``,
        else the seed), a path, a dict, or False (ignore manifest files).
    normalize : True (fit field statistics on the training split), False, or a
        :class:`DatasetNormalizers` / its ``state_dict()`` (e.g. from the training dataset
        or a checkpoint) to reuse.
    geometry_normalization : ``{"scale": L, "shift": [x0, y0, z0]}`` (a fixed transform
        ``x' = (x - shift) / L`` of the user's choosing, e.g. a chord length: latent windows
        are then the file's coordinates over ``L``), ``"dataset"`` (one transform from the training split),
        ``"case"`` (one per case, stored in ``meta``) or ``"none"``.
    isotropic, margin : of the unit-box transform (see :meth:`Geometry.normalization`).
    drop_flat_z : when every case is 2-D (z = 0 everywhere), return 2-D points.
    subsample : None, an int (points kept) or a fraction in (0, 1], for both input points
        and queries, or a dict ``{"points": ..., "queries": ..., "near_input": r}``; with
        ``near_input`` every query within distance ``r`` (in the dataset's normalised units) of
        an input point is always kept (e.g. the wall nodes of a volume mesh), and the rest of
        the ``queries`` count is drawn at random from the others (their quadrature weights are
        scaled by the inverse sampling fraction of the others, the kept ones are not).
    neighbors : callable ``f(sample) -> sample`` filling ``neighbors_in``/``neighbors_out``
        /``latent_features`` (e.g. ``GINO.precompute``), run once per case on the full
        normalised case.
    neighbors_key : what identifies ``neighbors`` in the cache key (default: derived from
        the callable, see :func:`_neighbors_config`).
    cache_dir : folder of the on-disk neighbourhood cache (None: memory only).
    memory_cache_mb : bound of the in-memory cache of parsed, prepared cases (0 disables).
    on_error : ``"raise"`` or ``"skip"`` (bad cases warned about and left out).
    files, splitting, normalization, sampling, caching : typed groups of the settings above
        (:mod:`geoop.data.specs`: ``FilesSpec``, ``SplitSpec``, ``NormalizationSpec``,
        ``SamplingSpec``, ``CacheSpec``; dicts work too), in place of their flat keywords.
    crop : ``[lower corner, upper corner]`` in file units (keyword): every case's query
        geometry is cut to this box (cells with a node outside are dropped), e.g. the region
        around a body in a far-field mesh.
    transform : callable ``f(sample) -> sample`` applied last to every item.
    body_margins : margins of the ``"body"``/``"body_case"`` geometry normalisations in body
        lengths, ``{"x": [before, after], ...}`` (keyword; :func:`geoop.data.preprocess.body_box`).
    symmetry : the symmetry plane of every input geometry (keyword): None (what the files
        say), ``"auto"`` (detected from the open boundary) or e.g. ``("y", 0.0)``; a half body
        then gets the signed SDF of its mirrored closed body.
    mirror : mirror augmentation (keyword) of the ``"train"`` split: ``{"plane": ["y", 0.0],
        "vector_fields": "auto" | [names]}`` (or just the plane): every training case gets a
        mirrored copy ``<case>@mirror`` (both files mirrored before the fields are picked:
        points, normals, cell winding, and the vector fields' component normal to the plane;
        ``"auto"``: fields with one component per coordinate; see
        :func:`geoop.geometry.symmetry.mirror`), with its own neighbourhoods; the statistics
        and the dataset transform are fitted on the originals and the copies (whatever the
        split, so every split of one folder and config normalises alike).
    queries : several query sets per case (keyword), a list of
        :class:`~geoop.data.specs.QuerySetSpec` or dicts ``{"file": "{case}_points.vtu",
        "targets": ["p", "U"], "name": ..., "weighting": ...}`` in place of ``query_file`` and
        ``targets``: the sets' points are concatenated into one query geometry
        (:func:`~geoop.data.preprocess.combine_query_sets`), the targets are ``"<set>/<field>"``
        (zero on the other sets' rows, normalisers fitted on the set's own rows) and the
        field :data:`~geoop.data.preprocess.QUERY_SET_FIELD` holds each query's set.
    forces : coefficient operator rows as query fields (keyword), for a loss on integrated
        coefficients: ``{"field": pressure target, "wall_shear": shear target or None,
        "names": ["cd", "cl"], "reference": {forces keywords} or callable(case) -> them}``; the
        geometry of the query set holding ``field`` (or the query geometry) must be a surface
        with cells; :func:`geoop.physics.coefficient_weights` of it become the fields
        :data:`~geoop.data.preprocess.COEF_P_FIELD` / ``COEF_TAU_FIELD`` (zero elsewhere;
        scaled with the quadrature weights when queries are subsampled).

    A field named both in ``inputs`` and ``targets`` gets one normaliser fitted on both
    its input and its target values. Attributes after construction: ``cases`` (this
    split), ``train_cases``, ``split_of`` (case -> split), ``skipped`` (``(case, file,
    reason)``), ``normalizers`` (:class:`DatasetNormalizers`, save its ``state_dict()`` with
    the model), ``dim``, ``is_2d``, ``cache`` (:class:`DiskNeighborhoodCache` or None) and
    ``neighbor_computations`` (how often ``neighbors`` actually ran in this process).
    """

    def __new__(cls, root=None, *args, **kwargs):
        # a packed store (``geoop data pack``) is read by its own lazy dataset class
        if cls is MeshFolderDataset and root is not None:
            from .store import is_store

            if is_store(root):
                from .store_dataset import PackedCaseDataset

                return super().__new__(PackedCaseDataset)
        return super().__new__(cls)

    def __init__(
        self,
        root: Union[str, Path],
        inputs: Sequence[str] = (),
        targets: Sequence[str] = (),
        split: str = "train",
        input_file: Pattern = None,
        query_file: Pattern = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        manifest=None,
        normalize: Union[bool, DatasetNormalizers, Mapping] = True,
        subsample: Union[None, int, float, Mapping] = None,
        neighbors: Optional[Callable[[Sample], Sample]] = None,
        cache_dir: Union[str, Path, None] = None,
        on_error: str = "raise",
        transform: Optional[Callable[[Sample], Sample]] = None,
        *,
        geometry_normalization: str = "dataset",
        isotropic: bool = True,
        margin: float = 0.0,
        drop_flat_z: bool = False,
        neighbors_key=None,
        memory_cache_mb: float = 1024,
        val_fraction: float = 0.0,
        crop=None,
        body_margins=None,
        symmetry=None,
        mirror=None,
        files=None,
        splitting=None,
        normalization=None,
        sampling=None,
        caching=None,
        queries=None,
        forces=None,
    ):
        if any(g is not None for g in (files, splitting, normalization, sampling, caching)):
            # typed groups of settings (geoop.data.specs) replace their flat keywords
            from .specs import dataset_keywords

            sig = inspect.signature(type(self).__init__).parameters
            flat = {k: v for k, v in locals().items() if k in sig and k not in ("self", "root", "inputs", "targets", "split",
                                                                                 "neighbors", "transform", "neighbors_key")}
            kw = dataset_keywords({k: v for k, v in flat.items() if k not in ("files", "splitting", "normalization",
                                                                              "sampling", "caching")},
                                  {k: p.default for k, p in sig.items()}, files=files, splitting=splitting,
                                  normalization=normalization, sampling=sampling, caching=caching)
            (input_file, query_file, manifest, on_error, test_fraction, val_fraction, seed, normalize, geometry_normalization,
             isotropic, margin, drop_flat_z, crop, subsample, cache_dir, memory_cache_mb) = (
                kw[k] for k in ("input_file", "query_file", "manifest", "on_error", "test_fraction", "val_fraction", "seed",
                                "normalize", "geometry_normalization", "isotropic", "margin", "drop_flat_z", "crop",
                                "subsample", "cache_dir", "memory_cache_mb"))
            body_margins = kw["body_margins"]
        self.root = Path(root)
        self.inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        if queries is not None and (self.targets or query_file is not None):
            raise DatasetError("MeshFolderDataset: with queries=[...] give each set's targets and file there, not "
                               f"targets={self.targets} / query_file={query_file!r}")
        if not self.targets and not self.inputs and queries is None:
            raise DatasetError("MeshFolderDataset: give at least one of inputs=[...] or targets=[...] field names")
        self.split = _choice(split, _SPLITS, "split")
        self.on_error = _choice(on_error, _ON_ERROR, "on_error")
        self.geometry_normalization = (dict(geometry_normalization) if isinstance(geometry_normalization, Mapping)
                                       else _choice(geometry_normalization, _GEOM_NORM, "geometry_normalization"))
        self.seed = int(seed)
        self.isotropic, self.margin, self.drop_flat_z = isotropic, margin, drop_flat_z
        #: reading, coordinate and field normalisation of a case (shared with prediction)
        self.preprocessor = Preprocessor(self.inputs, self.targets, self.geometry_normalization, isotropic, margin, crop=crop,
                                         body_margins=body_margins, symmetry=symmetry, query_sets=queries)
        self.mirror = _mirror_spec(mirror)
        #: the query sets (plain dicts) or None; with them ``targets`` are ``"<set>/<field>"``
        self.query_sets = self.preprocessor.query_sets
        self.targets = list(self.preprocessor.targets)
        self.forces = None if forces is None else dict(forces)
        if self.forces is not None:
            unknown = sorted(set(self.forces) - {"field", "wall_shear", "names", "reference"})
            bad = [self.forces.get(k) for k in ("field", "wall_shear") if self.forces.get(k) is not None
                   and self.forces.get(k) not in self.targets]
            if unknown or not self.forces.get("names") or "field" not in self.forces or bad:
                raise DatasetError(f"MeshFolderDataset: forces must be {{'field': target, 'wall_shear': target or None, "
                                   f"'names': [...], 'reference': ...}} with fields among the targets {self.targets}; got "
                                   f"{ {k: v for k, v in self.forces.items() if k != 'reference'} }")
        self.geometry_normalization = self.preprocessor.geometry_normalization  # a fixed rule, validated
        self.subsample = self._parse_subsample(subsample)
        self.neighbors = neighbors
        self.neighbors_config = _neighbors_config(neighbors, neighbors_key) if neighbors is not None else None
        self.cache = DiskNeighborhoodCache(cache_dir) if cache_dir is not None else None
        self.transform = transform
        self.epoch = 0
        self.skipped: list[tuple[str, str, str]] = []
        self._memory = _LRU(int(memory_cache_mb * 2**20))
        # cases that became unreadable during the run: markers shared by DataLoader workers
        self._run_bad: set = set()
        self._skip_dir = None
        if self.on_error == "skip":
            self._skip_dir = tempfile.mkdtemp(prefix="geoop-skipped-")
            weakref.finalize(self, _remove_skip_dir, self._skip_dir, os.getpid())
        self.neighbor_computations = 0  # how many times ``neighbors`` actually ran

        # 1. cases and split
        found, problems = self._discover(input_file, query_file)
        for case, f, reason in problems:
            self._bad(case, f, reason)
        man = _load_manifest(self.root, manifest)
        if man is not None:
            unknown = sorted(set(c for c, part in man.items() if part in ("train", "val", "test")) - set(found), key=_natural_key)
            if unknown:
                self._bad(unknown[0], str(self.root), f"manifest lists {len(unknown)} case(s) with no files: "
                          f"{unknown[:5]}; cases found: {list(found)[:5]}...")
            unlisted = sorted(set(found) - set(man), key=_natural_key)
            if unlisted:
                warnings.warn(f"MeshFolderDataset: {len(unlisted)} case(s) in {self.root} are not in the manifest and "
                              f"are left out: {unlisted[:5]}", stacklevel=2)
        self.split_of = resolve_split(list(found), self.seed, test_fraction, man, val_fraction)
        self._files = {c: found[c] for c in found if c in self.split_of}
        train = [c for c in self._files if self.split_of[c] == "train"]
        wanted = [c for c in self._files if self.split == "all" or self.split_of[c] == self.split]
        if self.mirror is not None:  # mirrored copies of the training cases: items of "train", fitted on in every split
            for c in list(train):
                self._files[c + MIRROR_SUFFIX], self.split_of[c + MIRROR_SUFFIX] = self._files[c], "train"
            train += [c + MIRROR_SUFFIX for c in train]
            if self.split == "train":
                wanted += [c + MIRROR_SUFFIX for c in wanted]

        # 2. read and check every case needed (the split, plus the training split for statistics)
        fit_fields = normalize is True
        fit_geom = self.geometry_normalization in FITTED_RULES and not self._given_transform(normalize)
        need = wanted + [c for c in train if c not in wanted] if (fit_fields or fit_geom) else wanted
        self._dims: dict[str, int] = {}
        self._widths: dict[str, int] = {}
        self._cols: dict[str, int] = {}  # columns of the points in the files (2 or 3)
        ok = self._scan(need)
        self.cases = [c for c in wanted if c in ok]
        self.train_cases = [c for c in train if c in ok]
        if not self.cases:
            raise DatasetError(
                f"MeshFolderDataset: no usable {self.split!r} case in {self.root} "
                f"({len(found)} found, {len(self.skipped)} skipped: {self.skipped[:3]})"
            )

        # 3. normalisation (training split only)
        self.preprocessor.dim = self.dim
        self.normalizers = self._fit(normalize, fit_fields, fit_geom)
        for c in set(need) - set(self.cases):  # training cases read only for the statistics
            self._memory.pop(("raw", c))

    @property
    def normalizers(self) -> DatasetNormalizers:
        """The field normalisers and dataset transform (``preprocessor.normalizers``)."""
        return self.preprocessor.normalizers

    @normalizers.setter
    def normalizers(self, value: DatasetNormalizers) -> None:
        self.preprocessor.normalizers = value

    def __getstate__(self):
        # DataLoader workers started with "spawn" get the dataset pickled: send no cached data
        state = dict(self.__dict__)
        state["_memory"] = _LRU(self._memory.max_bytes)
        return state

    # ------------------------------------------------------------------ options
    @staticmethod
    def _parse_subsample(s):
        if s is None:
            return {"points": None, "queries": None, "near_input": None}
        spec = dict(s) if isinstance(s, Mapping) else {"points": s, "queries": s}
        unknown = set(spec) - {"points", "queries", "near_input"}
        if unknown:
            raise DatasetError(f"MeshFolderDataset: subsample keys must be 'points'/'queries'/'near_input', got {sorted(unknown)}")
        near = spec.pop("near_input", None)
        if near is not None and (isinstance(near, bool) or not isinstance(near, (int, float)) or not 0 <= near < float("inf")):
            raise DatasetError(f"MeshFolderDataset: subsample['near_input'] must be a distance >= 0, got {near!r}")
        for k, v in spec.items():
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (isinstance(v, float) and v > 1):
                raise DatasetError(f"MeshFolderDataset: subsample[{k!r}] must be an int > 0 or a fraction in (0, 1], got {v!r}")
        return {"points": spec.get("points"), "queries": spec.get("queries"), "near_input": near}

    @staticmethod
    def _given_transform(normalize) -> bool:
        if isinstance(normalize, DatasetNormalizers):
            return normalize.transform is not None
        if isinstance(normalize, Mapping):
            return bool(normalize.get("transform"))
        return False

    def _bad(self, case: str, file: str, reason: str):
        if self.on_error == "raise":
            raise DatasetError(f"{file}: case {case!r}: {reason}")
        warnings.warn(f"MeshFolderDataset: skipping case {case!r} ({file}): {reason}", RuntimeWarning, stacklevel=3)
        self.skipped.append((case, file, reason))

    # ------------------------------------------------------------------ reading
    def _discover(self, input_file: Pattern, query_file: Pattern):
        """``(cases {name: CaseFiles}, problems)`` of the dataset's root (:func:`discover_cases`,
        :func:`discover_set_cases` with query sets)."""
        if self.query_sets:
            return discover_set_cases(self.root, input_file, [q["file"] for q in self.query_sets])
        return discover_cases(self.root, input_file, query_file)

    def _case_hashes(self, case: str) -> list:
        """sha256 of a case's files (the neighbourhood cache key)."""
        cf = self._files[case]
        return [_source_sha256(cf.input)] + ([] if cf.same_file else [_source_sha256(f) for f in (cf.sets or (cf.query,))])

    def _load_raw(self, case: str) -> tuple[Geometry, Geometry]:
        """(input geometry with the input fields, query geometry with the target fields),
        in file coordinates (3-D; see :meth:`Preprocessor.split_geometries`)."""
        cf = self._files[case]
        g = read_file(cf.input)
        if self.query_sets:
            parts = [g if f == cf.input else read_file(f) for f in cf.sets]
            if case.endswith(MIRROR_SUFFIX) and self.mirror is not None:
                from ..geometry.symmetry import mirror

                g, *parts = [mirror(x, self.mirror["plane"], self.mirror["vector_fields"]) for x in [g, *parts]]
            self._cols[case] = max([g.dim] + [q.dim for q in parts])
            gin, gq, sets = self.preprocessor.read_sets(g, parts, case)
            if self.forces is not None:
                i = self.preprocessor.set_names.index(self.forces["field"].partition("/")[0])
                r0 = sum(q.n_points for q in sets[:i])
                gq = self._with_coefficients(case, gq, sets[i], r0, cf.sets[i], parts[i].symmetry)
            return gin, gq
        q = None if cf.same_file else read_file(cf.query)
        if case.endswith(MIRROR_SUFFIX) and self.mirror is not None:
            from ..geometry.symmetry import mirror

            g, q = (None if x is None else mirror(x, self.mirror["plane"], self.mirror["vector_fields"]) for x in (g, q))
        # raw geometries are 3-D; files with (N, 2) points get z = 0 (see ``dim``)
        self._cols[case] = max(g.dim, (g if q is None else q).dim)
        gin, gq = self.preprocessor.crop_queries(*self.preprocessor.split_geometries(g, q, case))
        if self.forces is not None:
            gq = self._with_coefficients(case, gq, gq, 0, cf.query, (g if q is None else q).symmetry)
        return gin, gq

    def _with_coefficients(self, case: str, gq: Geometry, surface: Geometry, r0: int, path, plane=None) -> Geometry:
        """``gq`` with the coefficient operator of ``surface`` (its rows from ``r0``) as the
        query fields ``COEF_P_FIELD`` (Q, K) and ``COEF_TAU_FIELD`` (Q, 3K). The symmetry
        plane is the reference's ``symmetry``, else the file's (``plane``): the one the
        coefficient metrics integrate the surface file with."""
        from ..physics.coefficients import coefficient_weights

        ref = self.forces.get("reference") or {}
        ref = ref(case) if callable(ref) else dict(ref)
        ref.setdefault("symmetry", plane)
        try:
            cw = coefficient_weights(surface, list(self.forces["names"]), **ref)
        except GeoopError as e:
            raise DatasetError(f"{path}: case {case!r}: the coefficient operator of the force surface: {e}") from None
        k, n = len(cw.names), surface.n_points
        P = torch.zeros(gq.n_points, k, dtype=gq.dtype)
        S = torch.zeros(gq.n_points, 3 * k, dtype=gq.dtype)
        P[r0:r0 + n] = cw.pressure.to(gq.dtype)
        sh = cw.shear if cw.shear.shape[1] == 3 else torch.cat([cw.shear, cw.shear.new_zeros(n, 1, k)], 1)
        S[r0:r0 + n] = sh.reshape(n, 3 * k).to(gq.dtype)
        return gq.replace(fields={**gq.fields, COEF_P_FIELD: P, COEF_TAU_FIELD: S})

    def _scan(self, cases: Sequence[str]) -> set:
        ok = {}
        for case in cases:
            cf = self._files[case]
            try:
                gin, gq = self._load_raw(case)
            except GeoopError as e:
                msg = str(e)
                f = str(cf.query) if str(cf.query) in msg and str(cf.input) not in msg else str(cf.input)
                self._bad(case, f, msg.replace(f + ": ", "", 1))
                continue
            # a case is 2-D when both geometries are (a planar slice of a 3-D case is 3-D)
            self._dims[case] = 2 if (gin.is_2d and gq.is_2d) else 3
            widths = {n: int(v.shape[1]) for n, v in {**gin.fields, **gq.fields}.items()}
            ok[case] = (self._cols[case], widths)
            self._memory.put(("raw", case), (gin, gq))
        return self._consistent(ok)

    def _consistent(self, ok: dict) -> set:
        """The cases of ``ok`` ({case: (point columns, {field: width})}, dimensions in
        ``_dims``) that share the majority's dimension and field widths; sets ``dim``, ``is_2d``."""
        # every case must have the dimension (and field widths) of the majority
        if ok:
            dims = [self._dims[c] for c in ok]
            major = max(set(dims), key=lambda d: (dims.count(d), -dims.index(d)))
            ref = next(c for c in ok if self._dims[c] == major)
            for case in list(ok):
                if self._dims[case] != major:
                    self._bad(case, str(self._files[case].input),
                              f"is a {self._dims[case]}-D case but the dataset is {major}-D "
                              f"(e.g. {self._files[ref].input}); 2-D and 3-D cases cannot be mixed")
                    ok.pop(case)
                    self._memory.pop(("raw", case))
        if ok:
            ref_case = next(iter(ok))
            self._widths = dict(ok[ref_case][1])
            for case in list(ok):
                for n, w in ok[case][1].items():
                    if w != self._widths[n]:
                        self._bad(case, str(self._files[case].query if n in self.targets else self._files[case].input),
                                  f"field {n!r} has {w} components but {self._widths[n]} in case {ref_case!r}")
                        ok.pop(case)
                        self._memory.pop(("raw", case))
                        break
        #: every case is 2-D (d = 2, or z = 0 everywhere)
        self.is_2d = bool(ok) and all(self._dims[c] == 2 for c in ok)
        #: point dimension of the items: 2 for 2-D cases stored as (N, 2) or with drop_flat_z
        self.dim = 2 if self.is_2d and (self.drop_flat_z or all(ok[c][0] == 2 for c in ok)) else 3
        return set(ok)

    def _raw(self, case: str) -> tuple[Geometry, Geometry]:
        hit = self._memory.get(("raw", case))
        if hit is not None:
            return hit
        try:
            return self._load_raw(case)
        except GeoopError as e:  # the file changed since the dataset was built
            if self.on_error == "skip":
                self._skip_during_run(case, e)
                raise _SkippedCase(case) from None
            raise DatasetError(f"case {case!r}: {e}") from None

    # ------------------------------------------------------------------ skipping during a run
    def _marker(self, case: str) -> Path:
        return Path(self._skip_dir) / (hashlib.sha1(case.encode()).hexdigest() + ".json")

    def _known_bad(self, case: str) -> bool:
        return case in self._run_bad or (self._skip_dir is not None and self._marker(case).exists())

    def _skip_during_run(self, case: str, err: Exception) -> None:
        """Mark ``case`` unreadable; warn only if no process (worker) reported it before."""
        self._run_bad.add(case)
        cf = self._files[case]
        msg = str(err)
        file = str(cf.query) if str(cf.query) in msg and str(cf.input) not in msg else str(cf.input)
        tmp = Path(tempfile.mkstemp(dir=self._skip_dir, suffix=".tmp")[1])
        tmp.write_text(json.dumps({"case": case, "file": file, "reason": msg}))
        try:
            os.link(tmp, self._marker(case))  # atomic claim: fails when another process has it
        except FileExistsError:
            return
        finally:
            tmp.unlink()
        warnings.warn(f"MeshFolderDataset: skipping case {case!r} ({file}): it became unreadable during the run: "
                      f"{msg}", RuntimeWarning, stacklevel=4)

    def skipped_during_run(self) -> list[tuple[str, str, str]]:
        """``(case, file, reason)`` of the cases skipped because a file became unreadable
        after the dataset was built, reported by this process or any DataLoader worker."""
        if self._skip_dir is None or not os.path.isdir(self._skip_dir):
            return []
        out = []
        for p in sorted(Path(self._skip_dir).glob("*.json")):
            d = json.loads(p.read_text())
            out.append((d["case"], d["file"], d["reason"]))
        return sorted(out)

    # ------------------------------------------------------------------ normalisation
    def _fit(self, normalize, fit_fields: bool, fit_geom: bool) -> DatasetNormalizers:
        if isinstance(normalize, DatasetNormalizers):
            norms = normalize
        elif isinstance(normalize, Mapping):
            norms = DatasetNormalizers.from_state_dict(normalize)
        elif normalize in (True, False):
            norms = DatasetNormalizers()
        else:
            raise DatasetError(f"MeshFolderDataset: normalize must be True, False or DatasetNormalizers, got {normalize!r}")
        if isinstance(normalize, (DatasetNormalizers, Mapping)):
            missing = [n for n in self.inputs + self.targets if n not in norms.fields]
            if missing:
                raise DatasetError(f"MeshFolderDataset: the given normalizers lack fields {missing}; have {sorted(norms.fields)}")
        if not (fit_fields or fit_geom):
            if self.geometry_normalization not in FITTED_RULES:
                norms.transform = None
            return norms
        if not self.train_cases:
            raise DatasetError(
                f"MeshFolderDataset: no usable training case in {self.root} to fit the normalisation on "
                f"(pass normalize=<the training dataset's normalizers> instead)"
            )
        self.preprocessor.normalizers = norms
        self._fit_statistics(fit_fields, fit_geom)
        return norms

    def _fit_statistics(self, fit_fields: bool, fit_geom: bool) -> None:
        """Fit the preprocessor's field statistics / dataset transform on the training cases."""
        self.preprocessor.fit((self._raw(c) for c in self.train_cases), fields=fit_fields, geometry=fit_geom)

    def _case_transform(self, gin: Geometry, gq: Geometry) -> NormalizeTransform:
        return self.preprocessor.transform_for(gin, gq)

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.cases)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random subsample items are drawn from (reproducible from
        ``(seed, epoch, index)``). Call before each epoch (with DataLoader workers, use
        ``persistent_workers=False`` so workers see the new epoch)."""
        self.epoch = int(epoch)

    def _prepared(self, case: str) -> tuple[Sample, NormalizeTransform]:
        hit = self._memory.get(("prepared", case))
        if hit is not None:
            return hit
        gin, gq = self._raw(case)
        self._memory.pop(("raw", case))
        sample, T = self.preprocessor.apply(gin, gq, meta={"case": case})
        if self.neighbors is not None:
            sample = self._with_neighbors(case, sample, T)
        out = (sample, T)
        self._memory.put(("prepared", case), out)
        return out

    def _with_neighbors(self, case: str, sample: Sample, T: NormalizeTransform) -> Sample:
        def compute() -> dict:
            self.neighbor_computations += 1
            out = self.neighbors(sample)
            if not isinstance(out, Sample):
                raise DatasetError(f"MeshFolderDataset: neighbors(sample) must return a Sample, got {type(out).__name__}")
            return {
                "neighbors_in": pack_neighbors(out.neighbors_in),
                "neighbors_out": pack_neighbors(out.neighbors_out),
                "latent_features": {} if out.latent_features is None else {"t": out.latent_features.detach().cpu()},
            }

        n, q = sample.geometry.n_points, sample.queries.n_points

        def check(entry: dict):
            nin, nout = unpack_neighbors(entry["neighbors_in"]), unpack_neighbors(entry["neighbors_out"])
            if nin is not None and nin.num_sources not in (None, n):
                raise ValueError(f"neighbors_in refers to {nin.num_sources} points, the case has {n}")
            if nout is not None and nout.num_queries != q:
                raise ValueError(f"neighbors_out has {nout.num_queries} queries, the case has {q}")

        if self.cache is not None:
            cf = self._files[case]
            hashes = self._case_hashes(case)
            config = {
                "neighbors": self.neighbors_config,
                "transform": {"shift": T.shift, "scale": T.scale},
                **({"crop": self.preprocessor.crop} if self.preprocessor.crop is not None else {}),
                **({"symmetry": self.preprocessor.symmetry} if self.preprocessor.symmetry is not None else {}),
                **({"mirror": self.mirror} if case.endswith(MIRROR_SUFFIX) else {}),
                "dim": sample.geometry.dim,
                "roles": [cf.same_file],
            }
            entry = self.cache.get_or_compute(cache_key(hashes, config), compute, check)
        else:
            entry = compute()
        lat = entry["latent_features"]
        return Sample(
            sample.geometry,
            sample.queries,
            latent_features=lat["t"] if lat else None,
            neighbors_in=unpack_neighbors(entry["neighbors_in"]),
            neighbors_out=unpack_neighbors(entry["neighbors_out"]),
            meta=sample.meta,
        )

    def _near_input(self, case: str, g: Geometry, q: Geometry, r: float) -> Tensor:
        """(Q,) bool: the queries of ``case`` within ``r`` of an input point (cached per case)."""
        cache = self.__dict__.setdefault("_near_cache", {})
        if case not in cache:
            from scipy.spatial import cKDTree

            d, _ = cKDTree(g.points.double().numpy()).query(q.points.double().numpy())
            cache[case] = torch.from_numpy(d <= r)
        return cache[case]

    def _generator(self, index: int, stream: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index, stream]).generate_state(2, dtype=np.uint32)
        g = torch.Generator()
        g.manual_seed(int(state[0]) << 32 | int(state[1]))
        return g

    @staticmethod
    def _count(spec, n: int) -> int:
        k = int(round(spec * n)) if isinstance(spec, float) else int(spec)
        return max(1, min(k, n))

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"MeshFolderDataset: index {index} out of range for {len(self)} cases")
        index = index % len(self)
        for step in range(len(self)):  # on_error="skip": the next readable case stands in
            j = (index + step) % len(self)
            if self._known_bad(self.cases[j]):
                continue
            try:
                full, T = self._prepared(self.cases[j])
            except _SkippedCase:
                continue
            index, case = j, self.cases[j]
            break
        else:
            raise DatasetError(f"MeshFolderDataset: every case of {self.root} became unreadable during the run: "
                               f"{self.skipped_during_run()[:3]}")
        g, q = full.geometry, full.queries
        nin, nout = full.neighbors_in, full.neighbors_out
        pidx = qidx = None
        if self.subsample["points"] is not None and self._count(self.subsample["points"], g.n_points) < g.n_points:
            k = self._count(self.subsample["points"], g.n_points)
            pidx = torch.randperm(g.n_points, generator=self._generator(index, 0))[:k].sort().values
            w = g.weights[pidx] * (g.n_points / k)  # keep the quadrature sum unbiased
            g = g.select(pidx).replace(weights=w)
            if nin is not None:
                nin = _keep_sources(nin, pidx, full.geometry.n_points)
        if self.subsample["queries"] is not None and self._count(self.subsample["queries"], q.n_points) < q.n_points:
            k = self._count(self.subsample["queries"], q.n_points)
            near = self.subsample.get("near_input")
            if near is None:
                qidx = torch.randperm(q.n_points, generator=self._generator(index, 1))[:k].sort().values
                scale = torch.full((q.n_points,), q.n_points / k, dtype=q.weights.dtype)
                w = q.weights[qidx] * scale[qidx]
            else:
                keep = self._near_input(case, full.geometry, q, float(near))
                rest = torch.nonzero(~keep).flatten()
                k_rest = max(0, min(k - int(keep.sum()), rest.numel()))
                pick = rest[torch.randperm(rest.numel(), generator=self._generator(index, 1))[:k_rest]]
                qidx = torch.cat([torch.nonzero(keep).flatten(), pick]).sort().values
                scale = torch.ones(q.n_points, dtype=q.weights.dtype)
                scale[rest] = rest.numel() / max(k_rest, 1)
                w = q.weights[qidx] * scale[qidx]
            q = q.select(qidx).replace(weights=w)
            if COEF_P_FIELD in q.fields:  # integrals stay unbiased, as the weights
                q = q.replace(fields={**q.fields, **{n: q.fields[n] * scale[qidx, None].to(q.dtype)
                                                     for n in (COEF_P_FIELD, COEF_TAU_FIELD)}})
            if nout is not None:
                nout = _take_queries(nout, qidx)
        cf = self._files[case]
        meta = {
            "case": case,
            "index": index,
            "split": self.split_of[case],
            "epoch": self.epoch,
            "input_file": str(cf.input),
            "query_file": str(cf.query),
            **({"query_set_files": [str(f) for f in cf.sets]} if cf.sets else {}),
            "transform": T.state_dict(),
            "point_index": pidx,
            "query_index": qidx,
        }
        s = Sample(g, q, latent_features=full.latent_features, neighbors_in=nin, neighbors_out=nout, meta=meta)
        return self.transform(s) if self.transform is not None else s

    # ------------------------------------------------------------------ mapping back
    def decode(self, values: Tensor, names: Optional[Sequence[str]] = None) -> Tensor:
        """Normalised values of the fields ``names`` (default: the targets) side by side,
        (Q, ΣC) -> physical values (Q, ΣC)."""
        names = self.targets if names is None else list(names)
        if not self.normalizers.fields:
            return values
        return self.normalizers.decode_concat(names, values)

    @staticmethod
    def to_physical_points(points: Tensor, meta: Mapping) -> Tensor:
        """Map normalised points (…, d) of an item back to file coordinates with
        ``meta["transform"]``."""
        t = NormalizeTransform.from_state_dict(meta["transform"])
        return t.inverse(points)

    def __repr__(self) -> str:
        return (f"MeshFolderDataset({str(self.root)!r}, split={self.split!r}, cases={len(self)}, "
                f"inputs={self.inputs}, targets={self.targets}, skipped={len(self.skipped)})")
