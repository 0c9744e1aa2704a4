r"""Shallow-water states on the rotating sphere, observed at scattered "stations".

Physics: torch-harmonics' spectral shallow-water solver
(:class:`torch_harmonics.examples.ShallowWaterSolver`, Earth radius, rotation and gravity;
third-order Adams-Bashforth with hyperdiffusion) evolves the geopotential
``phi = g h``, the relative vorticity ``zeta`` and the divergence ``delta``:

.. math::  \partial_t \zeta = -\nabla\cdot\big((\zeta + f)\,\mathbf u\big),\qquad
           \partial_t \delta = \mathbf k\cdot\nabla\times\big((\zeta+f)\mathbf u\big)
              - \nabla^2\big(\phi + \tfrac12|\mathbf u|^2\big),\qquad
           \partial_t \phi = -\nabla\cdot(\phi\,\mathbf u),

with ``f = 2 Omega sin(latitude)``. The continuity equation is in flux form, so the mass
``\int h\, dA`` is conserved exactly by the spectral scheme (tested).

A case: a random smooth initial condition (the solver's ``random_initial_condition``, its
own RNG seeded per case), ``spinup_hours`` of integration to reach the "now" state ``t0``,
then ``hours`` more to the target state ``t1``. The "now" state is observed at ``S``
stations, uniformly random on the sphere, ``S`` drawn per case from ``stations=(min, max)``;
values at the stations are the exact spectral expansion evaluated there (no grid
interpolation error: the solver's state is band-limited to ``lmax``).

Files written by :func:`generate` (through :func:`geoop.write`):

* ``case_XXXX_stations.vtp``: the stations, unit vectors ``(S, 3)``, fields ``height``
  (m) and ``vorticity`` (1/s) at ``t0``;
* ``case_XXXX_target.vtp``: the full lat-lon grid ``(nlat * nlon, 3)`` as a quad surface,
  fields ``height``, ``vorticity`` at ``t1`` and ``height_t0``, ``vorticity_t0`` (the
  persistence baseline);
* ``manifest.json``: generator parameters and one entry per case.

Shapes
------
stations.points : (S, 3) float32, unit vectors     stations.fields : name -> (S, 1)
target.points   : (nlat * nlon, 3), C order over (lat, lon), row 0 nearest the north pole
target.weights  : (nlat * nlon,) area quadrature weights on the unit sphere (sum 4 pi)
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .._optional import require
from ..errors import ConfigError
from ..geometry.geometry import Geometry

__all__ = [
    "DEFAULTS",
    "GRIDS",
    "SphereSample",
    "make_sample",
    "generate",
    "simulate",
    "evaluate_spectral",
]

#: latitude grids of the solver
GRIDS = ("equiangular", "legendre-gauss")

#: default case parameters (``generate``/``make_sample`` keyword arguments)
DEFAULTS = {
    "nlat": 32,
    "nlon": 64,
    "grid": "equiangular",
    "lmax": None,  # None: ceil(nlat / 3), as torch-harmonics' PdeDataset
    "dt": 600.0,  # solver time step, seconds
    "spinup_hours": 2.0,
    "hours": 6.0,
    "mach": 0.2,
    "stations": (200, 400),
}

STATION_FIELDS = ("height", "vorticity")
TARGET_FIELDS = ("height", "vorticity", "height_t0", "vorticity_t0")


def _params(overrides: dict) -> dict:
    """Validated case parameters (defaults + overrides); bad values raise ConfigError."""
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"sphere data: unknown parameters {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    try:
        return _convert({**DEFAULTS, **overrides})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"sphere data: invalid parameter value ({e}); got {overrides!r}") from None


def _convert(p: dict) -> dict:
    if str(p["grid"]).lower() not in GRIDS:
        raise ConfigError(f"sphere data grid: unknown grid {p['grid']!r}; valid choices: {list(GRIDS)}")
    p["grid"] = str(p["grid"]).lower()
    p["nlat"], p["nlon"] = int(p["nlat"]), int(p["nlon"])
    if p["nlat"] < 4 or p["nlon"] < 8:
        raise ConfigError(f"sphere data: expected nlat >= 4 and nlon >= 8, got ({p['nlat']}, {p['nlon']})")
    p["lmax"] = int(p["lmax"]) if p["lmax"] is not None else int(math.ceil(p["nlat"] / 3))
    if not 2 <= p["lmax"] <= min(p["nlat"], p["nlon"] // 2):
        raise ConfigError(f"sphere data lmax: expected 2 <= lmax <= min(nlat, nlon // 2), got {p['lmax']}")
    st = p["stations"]
    if isinstance(st, str):
        raise ConfigError(f"sphere data stations: expected an int or (min, max), got {st!r}")
    st = (int(st), int(st)) if np.isscalar(st) else tuple(int(s) for s in st)
    if len(st) != 2 or not 1 <= st[0] <= st[1]:
        raise ConfigError(f"sphere data stations: expected (min, max) with 1 <= min <= max, got {p['stations']!r}")
    p["stations"] = st
    for k in ("dt", "hours", "spinup_hours", "mach"):
        p[k] = float(p[k])
    if p["dt"] <= 0 or p["hours"] <= 0 or p["spinup_hours"] < 0 or p["mach"] <= 0:
        raise ConfigError(
            f"sphere data: expected dt > 0, hours > 0, spinup_hours >= 0, mach > 0, got dt={p['dt']}, "
            f"hours={p['hours']}, spinup_hours={p['spinup_hours']}, mach={p['mach']}"
        )
    return p


@functools.lru_cache(maxsize=4)
def _solver(nlat: int, nlon: int, grid: str, lmax: int, dt: float):
    examples = require("torch_harmonics", "the sphere data generator").examples
    return examples.ShallowWaterSolver(nlat, nlon, dt, lmax=lmax, mmax=lmax, grid=grid).double()


def _steps(hours: float, dt: float) -> int:
    return int(round(hours * 3600.0 / dt))


def simulate(seed: int, **params) -> dict:
    """Integrate one random case. Returns ``{"solver", "spec_t0", "spec_t1", "params",
    "steps"}`` with spectral states ``(3, lmax, lmax)`` complex128 (phi, vorticity,
    divergence)."""
    p = _params(params)
    solver = _solver(p["nlat"], p["nlon"], p["grid"], p["lmax"], p["dt"])
    with torch.random.fork_rng(devices=[]):  # the solver draws from torch's global RNG
        torch.manual_seed(int(seed))
        spec = solver.random_initial_condition(mach=p["mach"])
    with torch.no_grad():
        n0 = _steps(p["spinup_hours"], p["dt"])
        n1 = max(1, _steps(p["hours"], p["dt"]))
        spec0 = solver.timestep(spec, n0) if n0 > 0 else spec
        spec1 = solver.timestep(spec0, n1)
    if not (torch.isfinite(torch.view_as_real(spec0)).all() and torch.isfinite(torch.view_as_real(spec1)).all()):
        raise ConfigError(
            f"sphere data: the shallow-water solver diverged (non-finite state) for seed {seed} with "
            f"dt={p['dt']} s on a ({p['nlat']}, {p['nlon']}) grid, lmax={p['lmax']}; use a smaller dt"
        )
    return {"solver": solver, "spec_t0": spec0, "spec_t1": spec1, "params": p, "steps": (n0, n1)}


def evaluate_spectral(solver, spec: Tensor, colatitude: Tensor, longitude: Tensor) -> Tensor:
    r"""Evaluate the spectral fields at arbitrary points:
    ``f(theta, phi) = Re sum_m a_m (sum_l c_lm P_l^m(cos theta)) e^{i m phi}``, ``a_0 = 1``,
    ``a_m = 2`` (the real-field convention of ``InverseRealSHT``), with the solver's own
    normalised Legendre functions (orthonormal, no Condon-Shortley phase).

    Shapes: ``spec : (F, lmax, mmax)`` complex, ``colatitude, longitude : (S,)`` ->
    ``(F, S)`` float64.
    """
    from torch_harmonics.legendre import _precompute_legpoly

    lmax, mmax = spec.shape[-2:]
    theta = torch.as_tensor(colatitude, dtype=torch.float64)
    phi = torch.as_tensor(longitude, dtype=torch.float64)
    pct = _precompute_legpoly(mmax, lmax, theta, norm=solver.isht.norm, inverse=True, csphase=solver.isht.csphase)
    pct = torch.as_tensor(pct, dtype=torch.float64)  # (mmax, lmax, S)
    xm = torch.einsum("flm,mls->fsm", spec.to(torch.complex128), pct.to(torch.complex128))  # (F, S, mmax)
    m = torch.arange(mmax, dtype=torch.float64)
    a = torch.where(m == 0, 1.0, 2.0).to(torch.float64)
    phase = torch.exp(1j * phi[:, None] * m[None, :])  # (S, mmax)
    return (xm * phase[None] * a).real.sum(-1)


def _grid_fields(solver, spec: Tensor) -> tuple[Tensor, Tensor]:
    grid = solver.spec2grid(spec)  # (3, nlat, nlon)
    return grid[0] / solver.gravity, grid[1]


@dataclass
class SphereSample:
    """One case: ``stations`` (input Geometry at t0), ``target`` (full grid, t1 and t0
    fields), ``params`` (JSON-able case description)."""

    stations: Geometry
    target: Geometry
    params: dict = field(default_factory=dict)

    def to_sample(self):
        """A :class:`geoop.batch.Sample` (stations as inputs, grid as queries)."""
        from ..batch import Sample

        return Sample(geometry=self.stations, queries=self.target, meta=dict(self.params))


def _grid_quads(nlat: int, nlon: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(nlat - 1), np.arange(nlon), indexing="ij")
    a = i * nlon + j
    b = i * nlon + (j + 1) % nlon
    return np.stack([a, b, b + nlon, a + nlon], -1).reshape(-1, 4)


def make_sample(seed: int = 0, n_stations: Optional[int] = None, name: Optional[str] = None, **params) -> SphereSample:
    """Simulate one case and return its :class:`SphereSample` (deterministic for ``seed``).

    ``n_stations`` fixes the station count; otherwise it is drawn from ``params["stations"]``.
    Other keyword arguments: see :data:`DEFAULTS`.
    """
    p = _params(params)
    rng = np.random.default_rng([int(seed), 7])
    lo, hi = p["stations"]
    s = int(n_stations) if n_stations is not None else int(rng.integers(lo, hi + 1))
    if s < 1:
        raise ConfigError(f"n_stations: expected >= 1, got {n_stations}")
    sim = simulate(seed, **{k: v for k, v in p.items()})
    solver = sim["solver"]
    cos_t = rng.uniform(-1.0, 1.0, s)
    lon = rng.uniform(0.0, 2.0 * math.pi, s)
    theta = np.arccos(cos_t)
    vals = evaluate_spectral(solver, sim["spec_t0"][:2], torch.as_tensor(theta), torch.as_tensor(lon))
    h0, z0 = _grid_fields(solver, sim["spec_t0"])
    h1, z1 = _grid_fields(solver, sim["spec_t1"])
    if not all(bool(torch.isfinite(t.float()).all()) for t in (vals, h0, z0, h1, z1)):  # float32 files
        raise ConfigError(
            f"sphere data: the shallow-water state is not finite for seed {seed} with dt={p['dt']} s, "
            f"hours={p['hours']}; use a smaller dt or a shorter horizon"
        )
    sin_t = np.sin(theta)
    st_pts = np.stack([sin_t * np.cos(lon), sin_t * np.sin(lon), cos_t], -1)
    f32 = torch.float32
    stations = Geometry(
        torch.as_tensor(st_pts, dtype=f32),
        weights=torch.full((s,), 4.0 * math.pi / s, dtype=f32),
        fields={
            "height": (vals[0] / solver.gravity).to(f32)[:, None],
            "vorticity": vals[1].to(f32)[:, None],
        },
        name=name and f"{name}_stations",
    )
    # full grid: same node order as the solver / RealSHT (colatitude from the north pole)
    colat = (math.pi / 2 - solver.lats).to(torch.float64)
    t, ph = torch.meshgrid(colat, solver.lons.to(torch.float64), indexing="ij")
    grid_pts = torch.stack([torch.sin(t) * torch.cos(ph), torch.sin(t) * torch.sin(ph), torch.cos(t)], -1).reshape(-1, 3)
    w = (solver.quad_weights.reshape(-1, 1) * (2 * math.pi / p["nlon"])).expand(p["nlat"], p["nlon"]).reshape(-1)
    target = Geometry(
        grid_pts.to(f32),
        cells={"quad": torch.as_tensor(_grid_quads(p["nlat"], p["nlon"]))},
        weights=w.to(f32),
        fields={
            "height": h1.reshape(-1, 1).to(f32),
            "vorticity": z1.reshape(-1, 1).to(f32),
            "height_t0": h0.reshape(-1, 1).to(f32),
            "vorticity_t0": z0.reshape(-1, 1).to(f32),
        },
        name=name and f"{name}_target",
    )
    mass0 = float(solver.integrate_grid(h0, dimensionless=True))
    mass1 = float(solver.integrate_grid(h1, dimensionless=True))
    info = {
        "seed": int(seed),
        "n_stations": s,
        "steps": list(sim["steps"]),
        "mass_t0": mass0,
        "mass_t1": mass1,
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
    }
    return SphereSample(stations=stations, target=target, params=info)


def generate(out_dir: str, n: int, seed: int = 0, **params) -> list[dict]:
    """Write ``n`` cases to ``out_dir`` (``case_XXXX_stations.vtp``,
    ``case_XXXX_target.vtp``) plus ``manifest.json``; case ``i`` uses the seed
    ``seed * 100003 + i`` (deterministic). Keyword arguments: see :data:`DEFAULTS`
    (``nlat``, ``nlon``, ``stations=(min, max)``, ``hours``, ...).

    Returns the manifest entries ``{"case", "stations", "target", "params"}`` per case.
    """
    from ..geometry.io import write
    from ._case_io import write_manifest

    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ConfigError(f"n: expected a non-negative integer, got {n!r}")
    p = _params(params)
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for i in range(int(n)):
        case = f"case_{i:04d}"
        sample = make_sample(int(seed) * 100003 + i, name=case, **p)
        sname, tname = f"{case}_stations.vtp", f"{case}_target.vtp"
        write(sample.stations, os.path.join(out_dir, sname))
        write(sample.target, os.path.join(out_dir, tname))
        entries.append({"case": case, "stations": sname, "target": tname, "params": sample.params})
    jsonable = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    write_manifest(
        out_dir,
        {
            "generator": "geoop.data.sphere",
            "seed": int(seed),
            "params": jsonable,
            "station_fields": list(STATION_FIELDS),
            "target_fields": list(TARGET_FIELDS),
            "cases": entries,
        },
    )
    return entries
