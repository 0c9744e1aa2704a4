"""Typed groups of :class:`~geoop.data.MeshFolderDataset` settings, as
:mod:`geoop.models.config` does for the model: each validates itself, names the valid keys
in its errors and round-trips through ``to_dict``/``from_dict`` (TOML, YAML).

=================  =====================================================================
``files=``         :class:`FilesSpec`: ``input_file``/``query_file`` patterns, ``manifest``,
                   ``on_error``
``splitting=``     :class:`SplitSpec`: ``test_fraction``, ``val_fraction``, ``seed``
``normalization=`` :class:`NormalizationSpec`: ``fields`` (fit field normalisers),
                   ``geometry`` rule, ``isotropic``, ``margin``, ``drop_flat_z``, ``crop``,
                   ``body_margins``
``sampling=``      :class:`SamplingSpec`: per-epoch ``points``/``queries`` subsample,
                   ``near_input``
``caching=``       :class:`CacheSpec`: on-disk ``dir``, in-memory ``memory_mb``
``queries=``       a list of :class:`QuerySetSpec`: several query files per case, each with
                   its own targets (:func:`query_set_specs`)
=================  =====================================================================

The flat keywords of ``MeshFolderDataset`` stay; a group given as a spec replaces them, and
giving a group's flat keyword with a non-default value as well is an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

from ..errors import ConfigError
from ..models.config import _Spec

__all__ = ["QuerySetSpec", "query_set_specs", "QUERY_WEIGHTINGS", "FilesSpec", "SplitSpec", "NormalizationSpec", "SamplingSpec", "CacheSpec", "DATASET_GROUPS", "dataset_keywords"]


@dataclass
class FilesSpec(_Spec):
    """How cases are found: ``input_file``/``query_file`` glob patterns with ``{case}``
    (see :func:`geoop.data.folder.discover_cases`), the split ``manifest`` (a path; None:
    ``split.json``/``manifest.json`` when present), ``on_error`` ``"raise"`` or ``"skip"``."""

    input_file: Optional[str] = None
    query_file: Optional[str] = None
    manifest: Optional[str] = None
    on_error: str = "raise"

    def __post_init__(self):
        self._choice("on_error", ("raise", "skip"))


@dataclass
class SplitSpec(_Spec):
    """The seeded split when no manifest gives one: ``test_fraction``, ``val_fraction``, ``seed``."""

    test_fraction: float = 0.2
    val_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for k in ("test_fraction", "val_fraction"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise self._err(f"{k} must be in [0, 1), got {v!r}")
        self._int("seed", 0)


@dataclass
class NormalizationSpec(_Spec):
    """``fields``: fit per-channel field normalisers on the training split; ``geometry``:
    ``"dataset"``, ``"case"``, ``"none"``, ``"body"``, ``"body_case"`` or ``{"scale": L,
    "shift": [...]}``; ``isotropic``, ``margin`` of the unit-box transforms; ``drop_flat_z``
    (2-D points for flat cases); ``crop`` ``[lower, upper]`` corners in file units;
    ``body_margins`` ``{x = [before, after], ...}`` in body lengths (the ``"body"`` rules, see
    :func:`geoop.data.preprocess.body_box`)."""

    fields: bool = True
    geometry: Union[str, dict] = "dataset"
    isotropic: bool = True
    margin: float = 0.0
    drop_flat_z: bool = False
    crop: Optional[Any] = None
    body_margins: Optional[dict] = None

    def __post_init__(self):
        from .preprocess import GEOMETRY_NORMALIZATIONS, check_body_margins

        if isinstance(self.geometry, dict):
            from .preprocess import fixed_rule

            fixed_rule(self.geometry)
        else:
            self._choice("geometry", GEOMETRY_NORMALIZATIONS)
        if self.body_margins is not None:
            check_body_margins(self.body_margins)
        for k in ("fields", "isotropic", "drop_flat_z"):
            if not isinstance(getattr(self, k), bool):
                raise self._err(f"{k} must be true or false, got {getattr(self, k)!r}")


@dataclass
class SamplingSpec(_Spec):
    """Per-epoch random subsample: ``points``/``queries`` an int (kept) or a fraction in
    (0, 1]; ``near_input``: queries within this distance of an input point are always kept."""

    points: Union[int, float, None] = None
    queries: Union[int, float, None] = None
    near_input: Optional[float] = None


@dataclass
class CacheSpec(_Spec):
    """``dir``: folder of the on-disk neighbourhood cache (None: memory only);
    ``memory_mb``: bound of the in-memory cache of prepared cases."""

    dir: Optional[str] = None
    memory_mb: float = 1024.0

    def __post_init__(self):
        if isinstance(self.memory_mb, bool) or not isinstance(self.memory_mb, (int, float)) or self.memory_mb < 0:
            raise self._err(f"memory_mb must be a number >= 0, got {self.memory_mb!r}")


#: how the queries of a set weigh in the relative L2 loss (see :class:`QuerySetSpec`)
QUERY_WEIGHTINGS = ("points", "quadrature", "surface")


@dataclass
class QuerySetSpec(_Spec):
    """One set of query points per case: ``file`` a pattern with ``{case}`` (as
    ``query_file``), ``targets`` the fields read from it, ``name`` (default: the pattern
    without ``{case}``, extension and separators, e.g. ``"surface"`` for
    ``"{case}_surface.vtp"``); the model's outputs for this set are its targets, named
    ``"<name>/<field>"``. ``weighting``: ``"points"`` (each query counts the same),
    ``"quadrature"`` (the file's quadrature weights: vertex areas of a surface, dual volumes
    of a volume mesh) or ``"surface"`` (quadrature on a surface, points otherwise); None:
    ``"points"`` (``geoop train``: ``"surface"`` with ``[loss] surface_weighting = "area"``)."""

    file: str = ""
    targets: Any = ()
    name: Optional[str] = None
    weighting: Optional[str] = None

    def __post_init__(self):
        if not isinstance(self.file, str) or not self.file:
            raise self._err(f"file must be a file pattern with '{{case}}', got {self.file!r}")
        t = [self.targets] if isinstance(self.targets, str) else self.targets
        if not isinstance(t, (list, tuple)) or not t or not all(isinstance(x, str) and x for x in t):
            raise self._err(f"targets must be a non-empty list of field names, got {self.targets!r}")
        self.targets = list(t)
        if len(set(self.targets)) != len(self.targets):
            raise self._err(f"targets {self.targets} name a field twice")
        if self.name is None:
            import re

            stem = re.sub(r"\.[A-Za-z0-9]+$", "", self.file.replace("{case}", "").split("/")[-1])
            self.name = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", stem) or None
        if self.name is not None and (not isinstance(self.name, str) or "/" in self.name or not self.name):
            raise self._err(f"name must be a non-empty string without '/', got {self.name!r}")
        self._choice("weighting", QUERY_WEIGHTINGS, allow_none=True)


def query_set_specs(sets) -> list:
    """A list of :class:`QuerySetSpec` (or dicts) -> specs with unique names (unnamed ones
    whose name cannot be derived from the pattern get ``set<i>``)."""
    if isinstance(sets, (dict, QuerySetSpec)) or not isinstance(sets, (list, tuple)) or not sets:
        raise ConfigError(f"queries: expected a non-empty list of {{file = ..., targets = [...]}}, got {sets!r}")
    out = [s if isinstance(s, QuerySetSpec) else QuerySetSpec.from_dict(s) for s in sets]
    for i, s in enumerate(out):
        if s.name is None:
            s.name = f"set{i}"
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"queries: the query sets {dup} have the same name; give each a distinct name = ...")
    return out


#: dataset keyword -> (spec class, {spec key: MeshFolderDataset keyword})
DATASET_GROUPS = {
    "files": (FilesSpec, {"input_file": "input_file", "query_file": "query_file", "manifest": "manifest", "on_error": "on_error"}),
    "splitting": (SplitSpec, {"test_fraction": "test_fraction", "val_fraction": "val_fraction", "seed": "seed"}),
    "normalization": (NormalizationSpec, {"fields": "normalize", "geometry": "geometry_normalization", "isotropic": "isotropic",
                                          "margin": "margin", "drop_flat_z": "drop_flat_z", "crop": "crop",
                                          "body_margins": "body_margins"}),
    "sampling": (SamplingSpec, None),
    "caching": (CacheSpec, {"dir": "cache_dir", "memory_mb": "memory_cache_mb"}),
}


def dataset_keywords(flat: dict, defaults: dict, **groups) -> dict:
    """``flat`` MeshFolderDataset keywords with the given group specs (or dicts) written in; a
    flat keyword of a given group that differs from its default is a :class:`ConfigError`."""
    out = dict(flat)
    for name, value in groups.items():
        if value is None:
            continue
        cls, keys = DATASET_GROUPS[name]
        s = value if isinstance(value, cls) else cls.from_dict(value)
        if keys is None:  # sampling -> subsample
            clash = ["subsample"] if flat.get("subsample") is not None else []
            new = {"subsample": {k: getattr(s, k) for k in cls.keys()}}
        else:
            clash = sorted(kw for kw in keys.values() if flat[kw] != defaults[kw])
            new = {kw: getattr(s, k) for k, kw in keys.items()}
        if clash:
            raise ConfigError(f"MeshFolderDataset: {clash} given both as keywords and in {name}=; give them in {name}= only")
        out.update(new)
    return out
