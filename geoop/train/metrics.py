"""Integrated engineering quantities (drag, lift, moment coefficients) as validation metrics.

A dataset config names the coefficients and their reference values::

    [data]
    metrics = ["cd", "cl"]
    metrics_reference = {field = "p", dynamic_pressure = 1.0, length = 1.0,
                         alpha_deg = "manifest:alpha_deg"}

``field`` is the pressure target (default ``"p"``), ``wall_shear`` optionally a wall-shear
target; every other key is a keyword of :func:`geoop.physics.forces` (``density``,
``speed``, ``dynamic_pressure``, ``length``, ``area``, ``freestream``, ``lift_direction``,
``moment_center``, ``p_inf``, ``orientation``, ``symmetry``: a half body's plane such as
``["y", 0.0]``, full-body coefficients; ``wall_shear_acts_on = "fluid"`` for OpenFOAM's
``wallShearStress``, the wall's stress on the fluid) or ``alpha_deg`` (2-D: free stream
``(cos a, sin a)``) / ``yaw_deg`` (3-D: ``(cos y, sin y, 0)``). A value
``"manifest:KEY.SUBKEY"`` is read per case from the case's record in the dataset folder's
``manifest.json`` (``{"cases": [{"case": NAME, ...}, ...]}``, as written by the
``geoop data`` generators).

Per case, the coefficients of the predicted and of the true field are integrated with the
same quadrature over the case's INPUT geometry (the body surface, read from its file in
physical coordinates, cells and normals included), the surface values being the query
values at the surface nodes (the queries must contain them: the same file, or a volume
mesh whose nodes include the wall nodes; subsampling keeps them with
``subsample.near_input``). Comparing two integrations of the same quadrature isolates the
model's error from the quadrature's.

Summary over cases (all-reduce friendly: only sums are kept): for each coefficient ``c``
``c/mae = mean |c_pred - c_true|`` and ``c/r2 = 1 - SS_res / SS_tot`` with
``SS_tot = sum (c_true - mean c_true)^2`` (NaN when the true values do not vary).

Shapes: query points (Q, d) in physical units; predicted / true field (Q, C).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, FieldError
from ..geometry.geometry import Geometry

__all__ = ["COEFFICIENTS", "CoefficientMetrics", "coefficients", "regression_stats", "resolve_reference", "match_surface_nodes"]

#: coefficient names a config may ask for (see :mod:`geoop.physics.forces`)
COEFFICIENTS = ("cd", "cl", "cs", "cm", "cm_roll", "cm_yaw", "cfx", "cfy", "cfz", "cmx", "cmy", "cmz")
_FORCE_KEYS = ("density", "speed", "dynamic_pressure", "length", "area", "freestream", "lift_direction",
               "moment_center", "p_inf", "orientation", "symmetry", "wall_shear_acts_on")
_OWN_KEYS = ("field", "wall_shear", "alpha_deg", "yaw_deg")
_MANIFEST = "manifest:"


def _lookup(record: Mapping, path: str, case: str, where: str):
    cur: Any = record
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise ConfigError(f"{where}: case {case!r} has no value {path!r} in its manifest record "
                              f"(keys: {sorted(record) if isinstance(record, Mapping) else record})")
        cur = cur[part]
    return cur


def resolve_reference(reference: Mapping, case: Optional[str] = None, record: Optional[Mapping] = None,
                      where: str = "metrics_reference") -> dict:
    """``reference`` -> keyword arguments of :func:`geoop.physics.forces` for one case
    (``"manifest:..."`` values read from ``record``; ``alpha_deg``/``yaw_deg`` turned into
    ``freestream``). ``field``/``wall_shear`` are dropped."""
    unknown = set(reference) - set(_FORCE_KEYS) - set(_OWN_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; valid: {sorted(_FORCE_KEYS + _OWN_KEYS)}")
    out = {}
    for k, v in reference.items():
        if k in ("field", "wall_shear"):
            continue
        if isinstance(v, str) and v.startswith(_MANIFEST):
            if record is None:
                raise ConfigError(f"{where}: {k} = {v!r} needs a manifest record for case {case!r}, but there is none "
                                  f"(a manifest.json with {{'cases': [{{'case': ..., ...}}]}} in the dataset folder)")
            v = _lookup(record, v[len(_MANIFEST):], str(case), where)
        out[k] = v
    if "alpha_deg" in out:
        a = math.radians(float(out.pop("alpha_deg")))
        if "freestream" in out:
            raise ConfigError(f"{where}: give either alpha_deg or freestream, not both")
        out["freestream"] = (math.cos(a), math.sin(a))
    if "yaw_deg" in out:
        y = math.radians(float(out.pop("yaw_deg")))
        if "freestream" in out:
            raise ConfigError(f"{where}: give either yaw_deg or freestream, not both")
        out["freestream"] = (math.cos(y), math.sin(y), 0.0)
    return out


def match_surface_nodes(surface_points: Tensor, query_points: Tensor, where: str = "surface", tol: float = 1e-5) -> Tensor:
    """Row of ``query_points`` (Q, d) at each surface node (N, d'), compared on the first
    ``min(d, d')`` coordinates (2-D cases: z = 0 dropped); a node farther than ``tol`` times
    the surface's extent from every query is a :class:`FieldError`. Returns (N,) long."""
    from scipy.spatial import cKDTree

    d = min(surface_points.shape[1], query_points.shape[1])
    s = surface_points[:, :d].double().cpu().numpy()
    q = query_points[:, :d].double().cpu().numpy()
    ext = float(np.max(s.max(0) - s.min(0))) or 1.0
    dist, idx = cKDTree(q).query(s)
    bad = dist > tol * ext
    if bad.any():
        raise FieldError(
            f"{where}: {int(bad.sum())} of {s.shape[0]} surface nodes are not among the {q.shape[0]} query points "
            f"(largest gap {float(dist.max()):.3g}, tolerance {tol * ext:.3g}); coefficient metrics need the target "
            f"on the surface nodes (queries containing them; with subsampling, subsample.near_input keeps them)")
    return torch.from_numpy(idx).long()


def coefficients(surface: Geometry, p_pred: Tensor, p_true: Optional[Tensor], reference: Mapping,
                 names: Sequence[str] = ("cd", "cl"), shear_pred: Optional[Tensor] = None,
                 shear_true: Optional[Tensor] = None) -> tuple[dict, Optional[dict]]:
    """Coefficients ``names`` of the predicted and (when given) the true surface field.

    ``surface``: the body surface (physical coordinates); ``p_pred``/``p_true``: (N,) or
    (N, 1) point data on it; ``reference``: resolved keyword arguments of
    :func:`geoop.physics.forces` (see :func:`resolve_reference`). Returns two dicts
    ``{name: float}`` (the second None without ``p_true``)."""
    from ..physics import forces

    bad = [n for n in names if n not in COEFFICIENTS]
    if bad:
        raise ConfigError(f"metrics: unknown coefficients {bad}; valid: {list(COEFFICIENTS)}")

    def pick(p, tau):
        c = forces(surface, p, tau, **reference).coefficients
        missing = [n for n in names if n not in c]
        if missing:
            raise ConfigError(f"metrics: {missing} are not defined for a {'2-D' if 'cs' not in c else '3-D'} surface; "
                              f"available: {sorted(c)}")
        return {n: c[n] for n in names}

    return pick(p_pred, shear_pred), (None if p_true is None else pick(p_true, shear_true))


def regression_stats(sums: Mapping[str, float], names: Sequence[str]) -> dict:
    """MAE and R^2 per coefficient from the sums kept by :class:`CoefficientMetrics`."""
    out = {}
    n = float(sums.get("n", 0.0))
    if n <= 0:
        return out
    for c in names:
        mae = sums[f"{c}/abs"] / n
        ss_res = sums[f"{c}/sq"]
        ss_tot = sums[f"{c}/t2"] - sums[f"{c}/t"] ** 2 / n
        out[f"{c}/mae"] = mae
        out[f"{c}/r2"] = 1.0 - ss_res / ss_tot if ss_tot > 1e-12 * max(sums[f"{c}/t2"], 1e-300) else math.nan
    return out


class CoefficientMetrics:
    """Accumulates predicted vs true coefficients over the validation cases.

    Parameters
    ----------
    names : coefficients (see :data:`COEFFICIENTS`)
    reference : the ``metrics_reference`` mapping (see the module docstring)
    root : the dataset folder (for ``manifest.json``)
    targets : the model's target names (to check ``field``/``wall_shear``)
    """

    def __init__(self, names: Sequence[str], reference: Optional[Mapping] = None, root=None, targets: Sequence[str] = ()):
        self.names = [names] if isinstance(names, str) else list(names)
        bad = [n for n in self.names if n not in COEFFICIENTS]
        if bad or not self.names:
            raise ConfigError(f"data.metrics: unknown coefficients {bad or self.names}; valid: {list(COEFFICIENTS)}")
        self.reference = dict(reference or {})
        resolve_reference({k: v for k, v in self.reference.items() if not (isinstance(v, str) and v.startswith(_MANIFEST))})
        self.field = str(self.reference.get("field", "p"))
        self.shear = self.reference.get("wall_shear")
        for what, n in (("field", self.field), ("wall_shear", self.shear)):
            if n is not None and targets and n not in targets:
                raise ConfigError(f"data.metrics_reference.{what}: {n!r} is not a target; targets: {list(targets)}")
        self.root = None if root is None else Path(root)
        self._records: Optional[dict] = None
        self._surfaces: dict = {}
        self.reset()

    @classmethod
    def from_data_config(cls, data: Mapping) -> Optional["CoefficientMetrics"]:
        """From a resolved ``[data]`` section; None when it names no metrics."""
        names = data.get("metrics") or []
        if not names:
            return None
        return cls(names, data.get("metrics_reference") or {}, data.get("folder"), data.get("targets") or ())

    # ------------------------------------------------------------------ per case
    def record(self, case: str) -> Optional[dict]:
        """The case's record in ``root/manifest.json`` (None when there is none)."""
        if self._records is None:
            self._records = {}
            path = None if self.root is None else self.root / "manifest.json"
            if path is not None and path.exists():
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as e:
                    raise ConfigError(f"{path}: cannot read the manifest: {e}") from None
                recs = data.get("cases") if isinstance(data, Mapping) else data
                for r in recs if isinstance(recs, list) else []:
                    if isinstance(r, Mapping):
                        name = next((r[k] for k in ("case", "name", "id") if k in r), None)
                        if name is not None:
                            self._records[str(name)] = dict(r)
        return self._records.get(case)

    def case_for_file(self, path) -> Optional[str]:
        """The manifest case of a file: the record with a value equal to the file's name,
        else the longest case name the file name starts with (None: no match)."""
        self.record("")  # load
        fname = Path(path).name
        for name, rec in self._records.items():
            if any(isinstance(v, str) and Path(v).name == fname for v in rec.values()):
                return name
        hits = [n for n in self._records if fname.startswith(n)]
        return max(hits, key=len) if hits else None

    def case_reference(self, case: str) -> dict:
        return resolve_reference(self.reference, case, self.record(case), where=f"metrics_reference (case {case!r})")

    def surface(self, path) -> Geometry:
        """The body surface of a case, read once from its input file (physical units)."""
        key = str(path)
        if key not in self._surfaces:
            from ..geometry.io import read

            self._surfaces[key] = read(path)
        return self._surfaces[key]

    def case_coefficients(self, case: str, surface: Geometry, query_points: Tensor, pred: Tensor,
                          true: Optional[Tensor], columns: Mapping[str, slice]) -> tuple[dict, Optional[dict]]:
        """Coefficients of one case from the query values (Q, ΣC) at physical query points;
        ``columns``: target name -> its columns in ``pred``/``true``."""
        where = surface.source or case
        rows = match_surface_nodes(surface.points, query_points, where=f"{where} (case {case!r})").to(pred.device)
        cp = columns[self.field]
        p_pred, p_true = pred[rows, cp], None if true is None else true[rows, cp]
        s_pred = s_true = None
        if self.shear is not None:
            cs = columns[self.shear]
            s_pred, s_true = pred[rows, cs], None if true is None else true[rows, cs]
        return coefficients(surface, p_pred, p_true, self.case_reference(case), self.names, s_pred, s_true)

    def drag_regions(self, case: str, surface: Geometry, query_points: Tensor, pred: Tensor, true: Tensor,
                     columns: Mapping[str, slice]) -> dict:
        """The drag coefficient error of one case split over the body regions of
        :func:`geoop.physics.body_regions`: ``{region: cd part of (prediction - truth)}``,
        summing to the case's ``cd`` error (same quadrature as :meth:`case_coefficients`;
        pressure and, with ``wall_shear``, shear)."""
        from ..physics.coefficients import REGIONS, body_regions, coefficient_weights

        where = surface.source or case
        rows = match_surface_nodes(surface.points, query_points, where=f"{where} (case {case!r})").to(pred.device)
        ref = self.case_reference(case)
        cw = coefficient_weights(surface, ["cd"], **ref)
        dp = (pred[rows, columns[self.field]] - true[rows, columns[self.field]]).double().reshape(-1)
        dtau = None
        if self.shear is not None:
            dtau = (pred[rows, columns[self.shear]] - true[rows, columns[self.shear]]).double()
        lab = body_regions(surface, ref.get("freestream"), ref.get("lift_direction"), ref.get("orientation", "auto"))
        return {r: float(cw.rows(lab == i)(dp, dtau)[0]) for i, r in enumerate(REGIONS)}

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        self.sums = {"n": 0.0}
        for c in self.names:
            for s in ("abs", "sq", "t", "t2"):
                self.sums[f"{c}/{s}"] = 0.0
        self.per_case: list[dict] = []

    def add(self, case: str, pred: Mapping[str, float], true: Mapping[str, float]) -> None:
        self.sums["n"] += 1.0
        for c in self.names:
            e = pred[c] - true[c]
            self.sums[f"{c}/abs"] += abs(e)
            self.sums[f"{c}/sq"] += e * e
            self.sums[f"{c}/t"] += true[c]
            self.sums[f"{c}/t2"] += true[c] ** 2
        self.per_case.append({"case": case, **{f"{c}_pred": pred[c] for c in self.names},
                              **{f"{c}_true": true[c] for c in self.names}})

    def add_sample(self, meta: Mapping, query_points: Tensor, pred: Tensor, true: Tensor, columns: Mapping[str, slice],
                   surface_file=None) -> None:
        """One validation item: ``meta`` of a :class:`~geoop.data.MeshFolderDataset` item
        (``case``, ``input_file``, ``transform``), its NORMALISED query points (Q, d) and
        the decoded prediction / truth (Q, ΣC); ``surface_file``: the file of the surface
        to integrate on (default ``meta["input_file"]``; with query sets, the file of the
        field's set)."""
        from ..geometry.geometry import NormalizeTransform

        for k in ("case", "input_file", "transform"):
            if k not in meta:
                raise ConfigError(f"metrics: the validation items lack meta[{k!r}]; coefficient metrics need a "
                                  f"MeshFolderDataset (or items with case, input_file and transform)")
        T = NormalizeTransform.from_state_dict(meta["transform"])
        qp = T.inverse(query_points.detach().double().cpu())
        surf = self.surface(meta["input_file"] if surface_file is None else surface_file)
        pp, tp = self.case_coefficients(str(meta["case"]), surf, qp,
                                        pred.detach().double().cpu(), true.detach().double().cpu(), columns)
        self.add(str(meta["case"]), pp, tp)

    def summary(self, sums: Optional[Mapping[str, float]] = None) -> dict:
        """``{"<c>/mae": ..., "<c>/r2": ...}`` from ``sums`` (default: this process's)."""
        return regression_stats(self.sums if sums is None else sums, self.names)
