"""Datasets from folders of a user's CFD output files (OpenFOAM, Fluent, Star-CCM+ exports).

A *case* is one simulation: an input geometry carrying the input fields (e.g. the wall
surface ``case_XXX_surface.vtp``) and a query geometry carrying the target fields (e.g. the
volume ``case_XXX_volume.vtu``; it may be the same file). Files are grouped into cases by
patterns with a ``{case}`` placeholder (or a callable); see :func:`discover_cases`.

The path from files to items, one object per step:

1. :class:`~geoop.data.cases.CaseIndex` (:mod:`geoop.data.cases`): the cases and their split,
   no file opened;
2. :class:`CaseReader`: one case's raw geometries read from its files (strict field checks,
   crop, mirror, coefficient rows) and kept decoded in a memory cache
   (:class:`~geoop.data.store_dataset.StoreCaseReader` for a packed store);
3. :class:`~geoop.data.preprocess.Preprocessor`: coordinates and fields normalised -> a Sample;
4. :class:`MeshFolderDataset`: composes them, checks that the cases agree, subsamples, adds
   neighbourhoods. :meth:`MeshFolderDataset.open_cases` opens steps 1-2 alone, so every
   dataset of a run shares them (``reader=``).

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
import itertools
import json
import logging
import os
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..batch import Sample
from ..errors import DatasetError, GeoopError
from ..geometry.geometry import Geometry, NormalizeTransform
from ..geometry.openfoam import case_files, is_openfoam_case, split_region
from ..neighbors.neighborhoods import Neighborhoods
from .cache import DiskNeighborhoodCache, MemoryCache, cache_key, file_sha256, pack_neighbors, unpack_neighbors
from .cache import MemoryCache as _LRU  # noqa: F401  (the former private name)

# discovery and splits live in cases.py; their names stay importable from here
from .cases import MESH_EXTENSIONS, CaseFiles, CaseIndex, Pattern, discover_cases, discover_set_cases, resolve_split
from .cases import load_manifest as _load_manifest  # noqa: F401
from .cases import natural_key as _natural_key  # noqa: F401
from .normalize import DatasetNormalizers
from .preprocess import COEF_P_FIELD, COEF_TAU_FIELD, FITTED_RULES, GEOMETRY_NORMALIZATIONS, Preprocessor, read_file

__all__ = ["MeshFolderDataset", "CaseReader", "CaseShape", "CaseFiles", "CaseIndex", "discover_cases", "discover_set_cases",
           "resolve_split", "MESH_EXTENSIONS"]

log = logging.getLogger(__name__)

_ON_ERROR = ("raise", "skip")
_SPLITS = ("train", "val", "test", "all")
_GEOM_NORM = GEOMETRY_NORMALIZATIONS
#: suffix of the mirrored copy of a training case (``mirror=``)
MIRROR_SUFFIX = "@mirror"
_DATASET_TOKENS = itertools.count()

# ---------------------------------------------------------------------------- choices
def _choice(value, valid: Sequence[str], what: str) -> str:
    """Resolve a string option; an unknown one lists the valid choices."""
    if value not in valid:
        raise DatasetError(f"MeshFolderDataset: unknown {what} {value!r}; valid: {list(valid)}")
    return value


# ---------------------------------------------------------------------------- reading
class _SkippedCase(Exception):
    """A case's file became unreadable during the run and ``on_error="skip"``."""


def _remove_skip_dir(folder: str, owner: int) -> None:
    if os.getpid() != owner:  # a forked DataLoader worker: the folder belongs to the main process
        return
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


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


# ---------------------------------------------------------------------------- reading a case
class CaseShape(NamedTuple):
    """What a case looks like without its values: ``cols`` point columns in its files (2 or
    3), ``dim`` 2 when both its geometries are flat 2-D cases (else 3), ``widths`` the
    channels of each field read (``{name: C}``: the inputs and the targets)."""

    cols: int
    dim: int
    widths: dict


def _failed_file(cf: CaseFiles, err: Exception) -> tuple[str, str]:
    """(the file an error of a case names: its query file when only that one is named, else its
    input file; the message without that file's prefix)."""
    msg = str(err)
    f = str(cf.query) if str(cf.query) in msg and str(cf.input) not in msg else str(cf.input)
    return f, msg.replace(f + ": ", "", 1)


class CaseReader:
    """Reads one case of a :class:`~geoop.data.cases.CaseIndex` from its files: the raw 3-D
    geometries in file coordinates, the input one with the input fields and the query one with
    the target fields (:meth:`Preprocessor.split_geometries` / ``read_sets``: the strict checks
    of fields, the crop, the symmetry plane), mirrored for ``<case>@mirror`` copies, with the
    coefficient operator rows when ``forces`` are asked; decoded cases are kept in a memory
    cache bounded by bytes (:attr:`memory`, shared with the datasets that use this reader).

    One reader serves every dataset of a run (``MeshFolderDataset(..., reader=)``), so a case
    read to size the model is not read again by the dataset.

    Shapes: ``load(case)`` -> (input (N, 3) with fields (N, C_i), query (Q, 3) with fields (Q, C_t)).
    """

    #: describe() errors are raised as they are in ``on_error="raise"`` (a packed store's)
    strict_errors = False

    def __init__(self, index: CaseIndex, preprocessor: Preprocessor, *, mirror: Optional[dict] = None,
                 forces: Optional[dict] = None, memory_cache_mb: float = 1024, settings: Optional[dict] = None):
        self.index = index
        self.preprocessor = preprocessor
        self.mirror = mirror
        self.forces = forces
        #: decoded cases (``("raw", case)``) and the datasets' prepared ones, bounded by bytes
        self.memory = MemoryCache(int(memory_cache_mb * 2**20))
        #: the settings this reader was opened with (a dataset given the reader checks them)
        self.settings = dict(settings or {})
        self.cols: dict[str, int] = {}  # point columns of each case in its files

    def __getstate__(self):  # DataLoader workers started with "spawn": no cached data
        state = dict(self.__dict__)
        state["memory"] = MemoryCache(self.memory.max_bytes)
        return state

    @property
    def root(self) -> Path:
        return self.index.root

    def case_files(self, case: str) -> CaseFiles:
        """The files of ``case`` (a mirrored copy reads those of its original)."""
        if case not in self.index.files and case.endswith(MIRROR_SUFFIX) and self.mirror is not None:
            return self.index.files[case[:-len(MIRROR_SUFFIX)]]
        return self.index.files[case]

    def load(self, case: str) -> tuple[Geometry, Geometry]:
        """Read ``case``'s files now (no cache): (input geometry with the input fields, query
        geometry with the target fields), in file coordinates (3-D; see
        :meth:`Preprocessor.split_geometries`). Raises a :class:`GeoopError` naming the file."""
        cf = self.case_files(case)
        pre = self.preprocessor
        g = read_file(cf.input)
        if pre.query_sets:
            parts = [g if f == cf.input else read_file(f) for f in cf.sets]
            if case.endswith(MIRROR_SUFFIX) and self.mirror is not None:
                from ..geometry.symmetry import mirror

                g, *parts = [mirror(x, self.mirror["plane"], self.mirror["vector_fields"]) for x in [g, *parts]]
            self.cols[case] = max([g.dim] + [q.dim for q in parts])
            gin, gq, sets = pre.read_sets(g, parts, case)
            if self.forces is not None:
                i = pre.set_names.index(self.forces["field"].partition("/")[0])
                r0 = sum(q.n_points for q in sets[:i])
                gq = self._with_coefficients(case, gq, sets[i], r0, cf.sets[i], parts[i].symmetry)
            return gin, gq
        q = None if cf.same_file else read_file(cf.query)
        if case.endswith(MIRROR_SUFFIX) and self.mirror is not None:
            from ..geometry.symmetry import mirror

            g, q = (None if x is None else mirror(x, self.mirror["plane"], self.mirror["vector_fields"]) for x in (g, q))
        # raw geometries are 3-D; files with (N, 2) points get z = 0 (see ``dim``)
        self.cols[case] = max(g.dim, (g if q is None else q).dim)
        gin, gq = pre.crop_queries(*pre.split_geometries(g, q, case))
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

    def get(self, case: str) -> tuple[Geometry, Geometry]:
        """The decoded case from the memory cache, else read now (and not cached)."""
        hit = self.memory.get(("raw", case))
        return hit if hit is not None else self.load(case)

    def describe(self, case: str) -> CaseShape:
        """The case's :class:`CaseShape`, read once: the decoded case stays in the memory
        cache for the dataset's items (:meth:`get`) until :meth:`drop`."""
        hit = self.memory.get(("raw", case))
        gin, gq = hit if hit is not None and case in self.cols else self.load(case)
        self.memory.put(("raw", case), (gin, gq))
        # a case is 2-D when both geometries are (a planar slice of a 3-D case is 3-D)
        return CaseShape(self.cols[case], 2 if (gin.is_2d and gq.is_2d) else 3,
                         {n: int(v.shape[1]) for n, v in {**gin.fields, **gq.fields}.items()})

    def drop(self, case: str) -> None:
        """Forget the decoded case (the memory cache keeps what the datasets put there)."""
        self.memory.pop(("raw", case))

    def failure(self, case: str, err: Exception) -> tuple[str, str]:
        """(file, reason) of a case that could not be read."""
        return _failed_file(self.case_files(case), err)

    def hashes(self, case: str) -> list:
        """sha256 of a case's files (the neighbourhood cache key)."""
        cf = self.case_files(case)
        return [_source_sha256(cf.input)] + ([] if cf.same_file else [_source_sha256(f) for f in (cf.sets or (cf.query,))])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.index!r})"


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

    reader : a :class:`CaseReader` from :meth:`open_cases` with the same settings (keyword; a
        reader opened with other ones is a :class:`DatasetError` naming them): the cases, their
        split and the decoded cases shared with the other datasets of a run, not discovered
        or read again.

    A field named both in ``inputs`` and ``targets`` gets one normaliser fitted on both
    its input and its target values. Attributes after construction: ``cases`` (this
    split), ``train_cases``, ``split_of`` (case -> split), ``skipped`` (``(case, file,
    reason)``), ``normalizers`` (:class:`DatasetNormalizers`, save its ``state_dict()`` with
    the model), ``reader`` (:class:`CaseReader`), ``dim``, ``is_2d``, ``cache`` (:class:`DiskNeighborhoodCache` or None) and
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
        reader: Optional["CaseReader"] = None,
    ):
        args = {k: v for k, v in locals().items() if k not in ("self", "reader", "__class__")}
        opening = self._configure(args)
        normalize = opening.pop("normalize")
        # 1. cases and split (a CaseIndex) and how a case is read (a CaseReader): given, or opened here
        self.reader = self._open_reader(**opening) if reader is None else self._check_reader(reader, opening)
        # 2.-3. read and check the cases, fit the normalisation
        self._build(normalize)

    @classmethod
    def open_cases(cls, root: Union[str, Path], *args, **kwargs) -> "CaseReader":
        """The :class:`CaseReader` (with its :class:`~geoop.data.cases.CaseIndex`: discovery and
        split) of the dataset these arguments build, reading no case (a packed store's reader
        for a store). Give it to every dataset of a run (``reader=``): the cases are
        discovered and split once, and a case read before (e.g. :meth:`CaseReader.describe`
        of the first one, to size a model) is not read again."""
        if cls is MeshFolderDataset:
            from .store import is_store

            if is_store(root):
                from .store_dataset import PackedCaseDataset

                cls = PackedCaseDataset
        bound = inspect.signature(MeshFolderDataset.__init__).bind(None, root, *args, **kwargs)
        bound.apply_defaults()
        obj = torch.utils.data.Dataset.__new__(cls)
        opening = obj._configure({k: v for k, v in bound.arguments.items() if k not in ("self", "reader")})
        opening.pop("normalize")
        return obj._open_reader(**opening)

    def _configure(self, a: dict) -> dict:
        """Check and keep the settings ``a`` (every parameter of ``__init__`` but ``reader``);
        returns those of :meth:`_open_reader` and ``normalize``."""
        (root, inputs, targets, split, input_file, query_file, test_fraction, seed, manifest, normalize, subsample,
         neighbors, cache_dir, on_error, transform, geometry_normalization, isotropic, margin, drop_flat_z, neighbors_key,
         memory_cache_mb, val_fraction, crop, body_margins, symmetry, mirror, queries, forces) = (
            a[k] for k in ("root", "inputs", "targets", "split", "input_file", "query_file", "test_fraction", "seed",
                           "manifest", "normalize", "subsample", "neighbors", "cache_dir", "on_error", "transform",
                           "geometry_normalization", "isotropic", "margin", "drop_flat_z", "neighbors_key",
                           "memory_cache_mb", "val_fraction", "crop", "body_margins", "symmetry", "mirror", "queries",
                           "forces"))
        groups = {g: a.get(g) for g in ("files", "splitting", "normalization", "sampling", "caching")}
        if any(g is not None for g in groups.values()):
            # typed groups of settings (geoop.data.specs) replace their flat keywords
            from .specs import dataset_keywords

            sig = inspect.signature(MeshFolderDataset.__init__).parameters
            flat = {k: v for k, v in a.items() if k in sig and k not in ("root", "inputs", "targets", "split", "neighbors",
                                                                         "transform", "neighbors_key", *groups)}
            kw = dataset_keywords(flat, {k: p.default for k, p in sig.items()}, **groups)
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
        self._token = next(_DATASET_TOKENS)  # this dataset's entries in a shared memory cache
        # cases that became unreadable during the run: markers shared by DataLoader workers
        self._run_bad: set = set()
        self._skip_dir = None
        if self.on_error == "skip":
            self._skip_dir = tempfile.mkdtemp(prefix="geoop-skipped-")
            weakref.finalize(self, _remove_skip_dir, self._skip_dir, os.getpid())
        self.neighbor_computations = 0  # how many times ``neighbors`` actually ran
        opening = {"input_file": input_file, "query_file": query_file, "manifest": manifest, "test_fraction": test_fraction,
                   "val_fraction": val_fraction, "memory_cache_mb": memory_cache_mb}
        return {**opening, "normalize": normalize}

    def _reading_settings(self, input_file, query_file, manifest, test_fraction, val_fraction) -> dict:
        """What decides the cases, their split and how one is read (a shared reader must match)."""
        return {"kind": type(self).__name__, "root": str(self.root), "on_error": self.on_error, "inputs": self.inputs,
                "targets": self.targets,
                "query_sets": self.query_sets, "crop": self.preprocessor.crop, "symmetry": self.preprocessor.symmetry,
                "mirror": self.mirror, "forces": self.forces, "input_file": input_file, "query_file": query_file,
                "manifest": manifest, "seed": self.seed, "test_fraction": test_fraction, "val_fraction": val_fraction}

    def _open_reader(self, input_file, query_file, manifest, test_fraction, val_fraction, memory_cache_mb) -> "CaseReader":
        """Discover and split the cases (:meth:`_index`) and make their reader (:meth:`_reader`)."""
        index = self._index(input_file, query_file, manifest, test_fraction, val_fraction)
        settings = self._reading_settings(input_file, query_file, manifest, test_fraction, val_fraction)
        return self._reader(index, memory_cache_mb, settings)

    def _index(self, input_file, query_file, manifest, test_fraction, val_fraction) -> CaseIndex:
        """The cases of the folder and their split; with ``on_error="raise"`` the first problem
        (a case lacking a file) raises as it is found."""
        return CaseIndex.from_folder(self.root, input_file, query_file,
                                     set_files=[q["file"] for q in self.query_sets] if self.query_sets else None,
                                     manifest=manifest, seed=self.seed, test_fraction=test_fraction,
                                     val_fraction=val_fraction, report=self._bad if self.on_error == "raise" else None)

    def _reader(self, index: CaseIndex, memory_cache_mb: float, settings: dict) -> "CaseReader":
        return CaseReader(index, self.preprocessor, mirror=self.mirror, forces=self.forces,
                          memory_cache_mb=memory_cache_mb, settings=settings)

    def _check_reader(self, reader, opening: dict) -> "CaseReader":
        """A reader given to the dataset: opened with this dataset's settings."""
        if not isinstance(reader, CaseReader):
            raise DatasetError(f"MeshFolderDataset: reader must be a CaseReader (MeshFolderDataset.open_cases(...)), got "
                               f"{type(reader).__name__}")
        mine = self._reading_settings(*(opening[k] for k in ("input_file", "query_file", "manifest", "test_fraction",
                                                             "val_fraction")))
        diff = sorted(k for k in set(mine) | set(reader.settings) if mine.get(k) != reader.settings.get(k))
        if diff:
            raise DatasetError("MeshFolderDataset: the given reader was opened with other settings: "
                               + ", ".join(f"{k}={reader.settings.get(k)!r} (the dataset: {mine.get(k)!r})" for k in diff))
        return reader

    def _build(self, normalize) -> None:
        """Read and check every case the dataset needs, and fit the normalisation."""
        index = self.reader.index
        for case, f, reason in index.problems:  # with on_error="raise" the index raised at the first one
            self._bad(case, f, reason)
        self.split_of = dict(index.split_of)
        self._files = dict(index.files)
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
                f"({index.n_found} found, {len(self.skipped)} skipped: {self.skipped[:3]})"
            )

        # 3. normalisation (training split only)
        self.preprocessor.dim = self.dim
        self.normalizers = self._fit(normalize, fit_fields, fit_geom)
        for c in set(need) - set(self.cases):  # training cases read only for the statistics
            self.reader.drop(c)

    @property
    def _memory(self) -> "MemoryCache":
        """The memory cache of decoded and prepared cases (the reader's, shared with the
        datasets using the same reader)."""
        return self.reader.memory

    @property
    def normalizers(self) -> DatasetNormalizers:
        """The field normalisers and dataset transform (``preprocessor.normalizers``)."""
        return self.preprocessor.normalizers

    @normalizers.setter
    def normalizers(self, value: DatasetNormalizers) -> None:
        self.preprocessor.normalizers = value

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

    # ------------------------------------------------------------------ reading (the reader's)
    def _case_hashes(self, case: str) -> list:
        """sha256 of a case's files (the neighbourhood cache key)."""
        return self.reader.hashes(case)

    def _load_raw(self, case: str) -> tuple[Geometry, Geometry]:
        """(input geometry with the input fields, query geometry with the target fields),
        in file coordinates, read now (:meth:`CaseReader.load`)."""
        return self.reader.load(case)

    def _scan(self, cases: Sequence[str]) -> set:
        """The cases that read and agree (:meth:`CaseReader.describe`, :meth:`_consistent`);
        the others are reported by :meth:`_bad`."""
        ok = {}
        for case in cases:
            try:
                shape = self.reader.describe(case)
            except GeoopError as e:
                if self.reader.strict_errors and self.on_error == "raise":
                    raise
                self._bad(case, *self.reader.failure(case, e))
                continue
            self._dims[case], self._cols[case] = shape.dim, shape.cols
            ok[case] = (shape.cols, shape.widths)
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
                    self.reader.drop(case)
        if ok:
            ref_case = next(iter(ok))
            self._widths = dict(ok[ref_case][1])
            for case in list(ok):
                for n, w in ok[case][1].items():
                    if w != self._widths[n]:
                        self._bad(case, str(self._files[case].query if n in self.targets else self._files[case].input),
                                  f"field {n!r} has {w} components but {self._widths[n]} in case {ref_case!r}")
                        ok.pop(case)
                        self.reader.drop(case)
                        break
        #: every case is 2-D (d = 2, or z = 0 everywhere)
        self.is_2d = bool(ok) and all(self._dims[c] == 2 for c in ok)
        #: point dimension of the items: 2 for 2-D cases stored as (N, 2) or with drop_flat_z
        self.dim = 2 if self.is_2d and (self.drop_flat_z or all(ok[c][0] == 2 for c in ok)) else 3
        return set(ok)

    def _raw(self, case: str) -> tuple[Geometry, Geometry]:
        try:
            return self.reader.get(case)
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
        msg = str(err)
        file = _failed_file(self._files[case], err)[0]
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
        hit = self._memory.get(("prepared", self._token, case))
        if hit is not None:
            return hit
        gin, gq = self._raw(case)
        self.reader.drop(case)
        sample, T = self.preprocessor.apply(gin, gq, meta={"case": case})
        if self.neighbors is not None:
            sample = self._with_neighbors(case, sample, T)
        out = (sample, T)
        self._memory.put(("prepared", self._token, case), out)
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

    def _first_readable(self, index: int, load: Callable[[int, str], Any]) -> tuple[int, str, Any]:
        """``(j, case, load(j, case))`` for the item ``index``: its case, or with
        ``on_error="skip"`` the next readable one (``load`` raises :class:`_SkippedCase` for a
        case that became unreadable)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"MeshFolderDataset: index {index} out of range for {len(self)} cases")
        index = index % len(self)
        for step in range(len(self)):  # on_error="skip": the next readable case stands in
            j = (index + step) % len(self)
            case = self.cases[j]
            if self._known_bad(case):
                continue
            try:
                return j, case, load(j, case)
            except _SkippedCase:
                continue
        raise DatasetError(f"MeshFolderDataset: every case of {self.root} became unreadable during the run: "
                           f"{self.skipped_during_run()[:3]}")

    def _meta(self, case: str, index: int, T: NormalizeTransform, pidx: Optional[Tensor], qidx: Optional[Tensor]) -> dict:
        """An item's ``meta``: case, split, epoch, files, transform, rows kept."""
        cf = self._files[case]
        return {
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

    def __getitem__(self, index: int) -> Sample:
        index, case, (full, T) = self._first_readable(index, lambda j, case: self._prepared(case))
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
        meta = self._meta(case, index, T, pidx, qidx)
        s = Sample(g, q, latent_features=full.latent_features, neighbors_in=nin, neighbors_out=nout, meta=meta)
        return self.transform(s) if self.transform is not None else s

    # ------------------------------------------------------------------ checks
    def queries_outside(self, domain) -> tuple[int, int]:
        """(query points of this split outside the box ``domain`` [[lo...], [hi...]] in
        prepared coordinates, both ends included up to 1e-9; all query points), from the
        decoded cases."""
        dom = torch.as_tensor(domain, dtype=torch.float64)
        k = dom.shape[1]
        out = total = 0
        for case in self.cases:
            gin, gq = self._raw(case)
            q = self.preprocessor.transform_for(gin, gq).apply(gq.points.double())[:, :k]
            out += int((~((q >= dom[0] - 1e-9) & (q <= dom[1] + 1e-9)).all(1)).sum())
            total += int(q.shape[0])
        return out, total

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
