"""benchmarks/resolution.py --body: one truth for every resolution. The panel solution of a
car-like body changes with its panel count (suction peaks at creases deepen), so the
benchmark samples the finest solution at every resolution's nodes; these tests check that
sampling (known answers) and the convergence it relies on."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("resolution_bench", ROOT / "benchmarks" / "resolution.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resample_surface_field_is_exact_for_linear_fields():
    trimesh = pytest.importorskip("trimesh")
    res = _bench()
    fine = trimesh.creation.icosphere(subdivisions=3)
    coeff = np.array([[0.3, -1.2], [2.0, 0.5], [-0.7, 0.1]])
    values = fine.vertices @ coeff + np.array([0.25, -1.0])  # (V, 2)
    # points on the fine mesh's triangles (random barycentric weights): exact
    rng = np.random.default_rng(0)
    tri = rng.integers(0, len(fine.faces), 200)
    b = rng.dirichlet(np.ones(3), 200)
    pts = np.einsum("qk,qkd->qd", b, fine.vertices[fine.faces[tri]])
    got = res.resample_surface_field(pts, fine.vertices, fine.faces, values)
    np.testing.assert_allclose(got, pts @ coeff + np.array([0.25, -1.0]), atol=1e-9)
    # a coarser icosphere's vertices are vertices of the finer one: the values themselves
    coarse = trimesh.creation.icosphere(subdivisions=1)
    got = res.resample_surface_field(coarse.vertices, fine.vertices, fine.faces, values[:, 0])
    np.testing.assert_allclose(got, coarse.vertices @ coeff[:, 0] + 0.25, atol=1e-9)


def test_reference_truth_replaces_cp_by_the_finest_solution(tmp_path):
    pytest.importorskip("trimesh")
    from geoop import read

    res = _bench()
    res.BODY_PANELS = (200, 300)
    for k in (1, 2, 4):  # the same 2 bodies at 200-300, 400-600, 800-1200 panels requested
        res.generate_body(tmp_path / f"b{k}", 2, k, n_test=1, seed=1)
    m = {k: json.loads((tmp_path / f"b{k}" / "manifest.json").read_text())["cases"] for k in (1, 2, 4)}
    assert [e["params"]["rear_slant"] for e in m[1]] == [e["params"]["rear_slant"] for e in m[4]]
    assert all(e4["n_panels"] >= 3 * e1["n_panels"] for e1, e4 in zip(m[1], m[4]))
    cases = ["case_0000", "case_0001"]
    gaps = {k: res.reference_truth(tmp_path / f"b{k}", tmp_path / "b4", tmp_path / f"r{k}", cases[:1] if k == 2 else cases)
            for k in (1, 2, 4)}
    assert all(g["nodes"] < 1e-12 and g["area"] < 1e-12 for g in gaps[4].values())  # the finest is its own truth
    # the coarser the discretisation, the further its own panel solution from the finest
    for c in cases[:1]:
        assert gaps[1][c]["nodes"] > gaps[2][c]["nodes"] > 0.005, (gaps[1][c], gaps[2][c])
    assert gaps[1]["case_0001"]["nodes"] > 0.005
    assert json.loads((tmp_path / "r1" / "split.json").read_text()) == {"test": cases[:1], "train": cases[1:]}
    assert json.loads((tmp_path / "r2" / "split.json").read_text()) == {"test": cases[:1], "train": []}
    own, ref, fine = (read(str(tmp_path / d / "case_0001_surface.vtp")) for d in ("b1", "r1", "b4"))
    assert np.array_equal(own.points.numpy(), ref.points.numpy())
    assert np.array_equal(own.cells["triangle"].numpy(), ref.cells["triangle"].numpy())
    cp = ref.fields["Cp"].numpy().ravel()
    assert not np.allclose(cp, own.fields["Cp"].numpy().ravel())
    # the sampled field stays in the finest field's range, and its suction peak is the deeper one
    f = fine.fields["Cp"].numpy().ravel()
    assert f.min() - 1e-6 <= cp.min() and cp.max() <= f.max() + 1e-6
    assert cp.min() < own.fields["Cp"].numpy().min()
