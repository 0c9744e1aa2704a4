"""Tests of geoop.data.sphere (shallow-water states at scattered stations)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch_harmonics  # noqa: F401  (a core dependency: fail, never skip)

from geoop.data import sphere  # noqa: E402
from geoop.errors import ConfigError  # noqa: E402

SMALL = dict(nlat=16, nlon=32, dt=900.0, spinup_hours=0.5, hours=3.0)


@pytest.fixture(scope="module")
def sample():
    return sphere.make_sample(11, **SMALL)


def test_make_sample_is_deterministic_and_seed_dependent(sample):
    again = sphere.make_sample(11, **SMALL)
    torch.testing.assert_close(again.stations.points, sample.stations.points, rtol=0, atol=0)
    for k in sphere.STATION_FIELDS:
        torch.testing.assert_close(again.stations.fields[k], sample.stations.fields[k], rtol=0, atol=0)
    for k in sphere.TARGET_FIELDS:
        torch.testing.assert_close(again.target.fields[k], sample.target.fields[k], rtol=0, atol=0)
    other = sphere.make_sample(12, **SMALL)
    assert not torch.equal(other.target.fields["height"], sample.target.fields["height"])
    # the global torch RNG is left alone
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    sphere.make_sample(13, n_stations=5, **SMALL)
    assert torch.equal(torch.rand(3), a)


def test_sample_geometry_and_fields(sample):
    st, tg = sample.stations, sample.target
    n = st.n_points
    lo, hi = sphere.DEFAULTS["stations"]
    assert lo <= n <= hi and n == sample.params["n_stations"]
    torch.testing.assert_close(st.points.norm(dim=1), torch.ones(n))
    assert tg.n_points == SMALL["nlat"] * SMALL["nlon"]
    assert math.isclose(float(tg.weights.double().sum()), 4 * math.pi, rel_tol=1e-5)
    for g in (st, tg):
        for name, f in g.fields.items():
            assert f.shape == (g.n_points, 1) and torch.isfinite(f).all(), name
    # heights are around the solver's mean depth (10 km), vorticity is small (1/s)
    h = tg.fields["height_t0"]
    assert 9000 < float(h.min()) and float(h.max()) < 11000
    assert float(tg.fields["vorticity_t0"].abs().max()) < 1e-3
    # station values lie within the range of the grid state at t0
    for k in ("height", "vorticity"):
        grid = tg.fields[f"{k}_t0"]
        span = float(grid.max() - grid.min())
        assert float(st.fields[k].min()) > float(grid.min()) - 0.1 * span
        assert float(st.fields[k].max()) < float(grid.max()) + 0.1 * span


def test_solver_evolves_and_conserves_mass(sample):
    tg = sample.target
    w = tg.weights.double()
    dz = (tg.fields["vorticity"] - tg.fields["vorticity_t0"]).double().norm()
    assert dz / tg.fields["vorticity_t0"].double().norm() > 0.05
    h0, h1 = tg.fields["height_t0"].double()[:, 0], tg.fields["height"].double()[:, 0]
    anomaly = h0 - (w * h0).sum() / w.sum()
    assert (h1 - h0).norm() / anomaly.norm() > 0.05
    # mass: exactly conserved by the spectral flux-form scheme (float64 in the solver) ...
    m0, m1 = sample.params["mass_t0"], sample.params["mass_t1"]
    assert abs(m1 - m0) / m0 < 1e-10
    # ... and still to float32 rounding in the stored fields
    assert abs(float((w * h1).sum() - (w * h0).sum())) / float((w * h0).sum()) < 1e-6


def test_spectral_evaluation_matches_the_solver_grid():
    sim = sphere.simulate(3, **SMALL)
    solver, spec = sim["solver"], sim["spec_t1"]
    grid = solver.spec2grid(spec)  # (3, nlat, nlon)
    colat = (math.pi / 2 - solver.lats).double()
    t, p = torch.meshgrid(colat, solver.lons.double(), indexing="ij")
    vals = sphere.evaluate_spectral(solver, spec, t.reshape(-1), p.reshape(-1))
    torch.testing.assert_close(vals, grid.reshape(3, -1), rtol=1e-9, atol=1e-9 * float(grid.abs().max()))


def test_generate_writes_cases_and_manifest(tmp_path):
    import geoop

    pytest.importorskip("pyvista")
    params = dict(SMALL, stations=(10, 60))
    entries = sphere.generate(str(tmp_path / "a"), 3, seed=4, **params)
    counts = [e["params"]["n_stations"] for e in entries]
    assert len(set(counts)) > 1 and all(10 <= c <= 60 for c in counts)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["generator"] == "geoop.data.sphere" and len(manifest["cases"]) == 3
    assert manifest["params"]["stations"] == [10, 60]
    positions = []
    for e in entries:
        st = geoop.read(str(tmp_path / "a" / e["stations"]))
        tg = geoop.read(str(tmp_path / "a" / e["target"]))
        assert st.n_points == e["params"]["n_stations"]
        assert set(st.fields) == set(sphere.STATION_FIELDS) and set(tg.fields) == set(sphere.TARGET_FIELDS)
        assert tg.n_points == params["nlat"] * params["nlon"]
        positions.append(st.points[:5])
    assert not torch.allclose(positions[0], positions[1][: len(positions[0])])
    # same seed -> same files (content), different folder
    again = sphere.generate(str(tmp_path / "b"), 3, seed=4, **params)
    assert [e["params"] for e in again] == [e["params"] for e in entries]
    for name in ("manifest.json", "case_0002_stations.vtp", "case_0002_target.vtp"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a = geoop.read(str(tmp_path / "a" / "case_0002_stations.vtp"))
    b = geoop.read(str(tmp_path / "b" / "case_0002_stations.vtp"))
    torch.testing.assert_close(a.points, b.points, rtol=0, atol=0)
    np.testing.assert_array_equal(a.fields["height"].numpy(), b.fields["height"].numpy())


def test_bad_parameters():
    with pytest.raises(ConfigError, match="valid"):
        sphere.make_sample(0, nlatt=8)
    with pytest.raises(ConfigError, match="equiangular"):
        sphere.make_sample(0, grid="healpix")
    with pytest.raises(ConfigError, match="stations"):
        sphere.make_sample(0, stations=(50, 10))
    with pytest.raises(ConfigError, match="invalid"):
        sphere.make_sample(0, hours="soon")
    with pytest.raises(ConfigError):
        sphere.generate("/tmp/never_used_geoop", -1)


@pytest.mark.slow
def test_sphere_stations_example_runs(tmp_path, capsys):
    """End-to-end smoke run of examples/sphere_stations.py (tiny sizes): GINO with a sphere
    latent trains, evaluates on the full grid and writes its predictions."""
    pytest.importorskip("pyvista")
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "sphere_stations.py"
    spec = importlib.util.spec_from_file_location("sphere_stations_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "run"
    args = ["--n-train", "3", "--n-test", "2", "--epochs", "2", "--nlat", "16", "--nlon", "32",
            "--latent", "8", "16", "--width", "8", "--layers", "1", "--stations", "40", "80",
            "--radius", "0.5", "--hours", "3", "--out", str(out)]
    assert mod.main(args) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[0])
    for kind in ("gino", "persistence"):
        for f in ("height", "vorticity"):
            v = result["rel_l2"][kind][f]
            assert math.isfinite(v) and v > 0
    assert sorted(os.listdir(out)) == ["metrics.json", "test_000_prediction.vtp", "test_001_prediction.vtp"]
