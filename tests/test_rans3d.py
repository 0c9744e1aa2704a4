"""Tests of geoop.data.rans3d: settings and case files without OpenFOAM, the missing-OpenFOAM
message, the stratified cell sample, and (OpenFOAM installed) a tiny case end to end: the
files read back, forces integrated from the written surface fields equal to OpenFOAM's
forceCoeffs / forces, the manifest, resuming."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from geoop.cli.main import main
from geoop.data import rans3d
from geoop.errors import BackendUnavailableError, ConfigError, DatasetError

needs_foam = pytest.mark.skipif(not rans3d.openfoam_available(),
                                reason="OpenFOAM (simpleFoam) not installed: apt-get install openfoam")

#: a very coarse case (a few thousand cells): seconds of meshing, about a minute of solving
TINY = dict(upstream=1.5, downstream=2.0, domain_half_width=1.0, domain_height=1.0, cell_size=0.25, surface_level=3,
            near_level=2, wake_level=1, n_panels=1280, iterations=80, average=20, n_procs=2, n_points=3000)


def test_settings_validation():
    rans3d.Rans3DSettings().check()
    rans3d.Rans3DSettings(**TINY).check()
    bad = [(dict(surface_level=2, near_level=3), "levels"), (dict(iterations=50, average=60), "average"),
           (dict(cell_size=0.3), "multiple of cell_size"), (dict(n_procs=0), "n_procs"),
           (dict(upstream=0.5), "domain"), (dict(layers=1.5), "layers"), (dict(reynolds=-1), "reynolds")]
    for kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            rans3d.Rans3DSettings(**kw).check()
    with pytest.raises(ConfigError, match="unknown keys"):
        rans3d._coerce_settings({"iterationz": 3})
    with pytest.raises(ConfigError, match="unknown keys"):
        rans3d.body_surface({"yaw_deg": 3})


def test_missing_openfoam_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackendUnavailableError, match="apt-get install openfoam"):
        rans3d.generate(str(tmp_path / "out"), 1)
    assert main(["data", "body", "--solver", "rans", "--n", "1", "--out", str(tmp_path / "o")]) != 0
    assert "apt-get install openfoam" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_frontal_area_and_body_placement():
    from geoop.data.shapes import ellipsoid_mesh

    v, f = ellipsoid_mesh((0.5, 0.2, 0.15), 5)
    # projected area of an ellipsoid along x: pi b c (the mesh is inscribed: slightly less)
    assert rans3d.frontal_area(v, f) == pytest.approx(math.pi * 0.2 * 0.15, rel=2e-3)
    assert rans3d.frontal_area(v, f, (0, 0, 2)) == pytest.approx(math.pi * 0.5 * 0.2, rel=2e-3)
    prm = {"width": 0.44, "height": 0.3, "nose_slant": 0.5, "rear_slant": 0.6, "roundness": 0.2, "clearance": 0.07}
    v, f = rans3d.body_surface(prm, 2000)
    assert v[:, 2].min() == pytest.approx(0.07, abs=1e-12)
    assert np.ptp(v[:, 0]) == pytest.approx(1.0, rel=1e-3) and np.ptp(v[:, 1]) == pytest.approx(0.44, rel=1e-2)
    # the car body is symmetric in y: the half body y >= 0 is half of it
    assert np.allclose(np.sort(v[:, 1]), np.sort(-v[:, 1]), atol=1e-9)
    a = rans3d.frontal_area(v, f)
    assert 0.6 * 0.44 * 0.3 < a < 0.44 * 0.3


def test_case_files_without_openfoam(tmp_path):
    st = rans3d.Rans3DSettings(**TINY)
    info = rans3d.write_case(str(tmp_path), {"clearance": 0.05}, st)
    assert info["aref_openfoam"] == pytest.approx(0.5 * info["aref"])
    for f in ("system/blockMeshDict", "system/snappyHexMeshDict", "system/controlDict", "system/fvSchemes",
              "system/fvSolution", "system/decomposeParDict", "constant/triSurface/body.stl", "0/U", "0/p", "0/k",
              "0/omega", "0/nut", "case.foam"):
        assert (tmp_path / f).exists(), f
    bm = (tmp_path / "system/blockMeshDict").read_text()
    assert "(14 4 4)" in bm  # (1.5 + 2) / 0.25, 1 / 0.25, 1 / 0.25
    cd = (tmp_path / "system/controlDict").read_text()
    assert f"Aref            {info['aref_openfoam']:.12g};" in cd and "timeStart       60;" in cd
    assert "method          hierarchical;" in (tmp_path / "system/decomposeParDict").read_text()
    import trimesh

    stl = trimesh.load(str(tmp_path / "constant/triSurface/body.stl"))
    assert stl.is_watertight and stl.volume > 0


def test_sample_cells_is_stratified_and_weighted():
    rng = np.random.default_rng(0)
    # three refinement levels: volumes 1, 1/8, 1/64 (+- 5 %)
    V = np.concatenate([np.full(200, 1.0), np.full(3000, 1 / 8), np.full(20000, 1 / 64)]) * rng.uniform(0.95, 1.05, 23200)
    idx, w = rans3d.sample_cells(V, 2000, seed=1)
    assert idx.shape == w.shape == (2000,) and np.unique(idx).shape[0] == 2000 and np.all(np.diff(idx) > 0)
    assert w.sum() == pytest.approx(V.sum(), rel=0.01)
    # proportional allocation: each level keeps its share of the cells
    assert np.sum(idx < 200) == pytest.approx(2000 * 200 / 23200, abs=1)
    # the same seed gives the same sample; all cells when n >= N
    np.testing.assert_array_equal(rans3d.sample_cells(V, 2000, seed=1)[0], idx)
    i2, w2 = rans3d.sample_cells(V[:50], 100)
    np.testing.assert_array_equal(i2, np.arange(50))
    np.testing.assert_array_equal(w2, V[:50])


def test_body_cli_names(tmp_path):
    """``geoop data body`` is the panel-method ``body3d`` unless ``--solver rans``."""
    args = ["--n", "1", "--seed", "3", "-p", "n_panels=80", "-p", "n_volume=50"]
    assert main(["data", "body", "--out", str(tmp_path / "a")] + args) == 0
    assert main(["data", "body3d", "--out", str(tmp_path / "b")] + args) == 0
    ma = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert ma == mb and ma["generator"] == "geoop.data.body3d"


@needs_foam
@pytest.mark.slow
def test_tiny_case_end_to_end(tmp_path, monkeypatch):
    import pyvista as pv
    import torch

    import geoop
    from geoop.physics import forces

    out = tmp_path / "body"
    argv = ["data", "body", "--solver", "rans", "--n", "1", "--seed", "4", "--out", str(out)]
    argv += [a for k, v in TINY.items() for a in ("-p", f"{k}={v}")]
    assert main(argv) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["generator"] == "geoop.data.rans3d" and man["settings"]["iterations"] == 80
    (e,) = man["cases"]
    assert (e["surface"], e["volume"], e["points"]) == ("case_0000_surface.vtp", "case_0000_volume.vtu", "case_0000_points.vtu")
    assert set(e) >= {"cd", "cl", "cd_pressure", "cd_viscous", "cl_pressure", "cl_viscous", "cd_std", "cl_std",
                      "final_residuals", "converged", "iterations", "n_cells", "wall_seconds", "aref", "symmetry"}
    assert e["iterations"] == 80 and e["average_window"] == [61, 80] and e["symmetry"] == ["y", 0.0]
    assert e["cd_pressure"] + e["cd_viscous"] == pytest.approx(e["cd"], rel=1e-6)
    assert e["cl_pressure"] + e["cl_viscous"] == pytest.approx(e["cl"], rel=1e-6, abs=1e-9)
    assert 0.05 < e["cd"] < 1.0 and 0 < e["cd_viscous"] < e["cd"]
    assert not (out / "openfoam").exists()

    # the surface: Cp with a stagnation point, outward normals, forces = OpenFOAM's
    surf = geoop.read(str(out / e["surface"]))
    assert {"p", "Cp", "wallShearStress"} <= set(surf.fields) and {"p", "wallShearStress"} <= set(surf.cell_fields)
    assert surf.points[:, 1].min() >= -1e-9  # the half body, its symmetry plane y = 0 declared in the file
    assert surf.symmetry is not None and surf.symmetry.to_list() == [0.0, 1.0, 0.0, 0.0]
    assert 0.8 < float(surf.fields["p"].max()) < 1.1
    front = surf.points[:, 0] < surf.points[:, 0].min() + 0.02
    assert (surf.normals[front, 0] < -0.5).all()  # outward at the nose
    # p, tau already over q; the declared plane makes forces() report the full body: full area
    ref = dict(dynamic_pressure=1.0, area=e["aref"])
    fc = forces(surf, surf.cell_fields["p"], -surf.cell_fields["wallShearStress"], location="cell", **ref)
    # pressure: the triangles of a face have its vector area, so cell data reproduce OpenFOAM's sum
    # (to the single-precision points); shear: their summed areas exceed |S_f| on warped faces
    for k, part, tol in (("pressure", fc.pressure_force, 1e-3), ("viscous", fc.shear_force, 5e-3)):
        assert float(part[0]) / e["aref"] == pytest.approx(e[f"cd_{k}"], rel=tol)
        assert float(part[2]) / e["aref"] == pytest.approx(e[f"cl_{k}"], rel=tol, abs=1e-4)
        assert abs(float(part[1])) < 1e-12  # the side force cancels on the full body
    assert fc.coefficients["cd"] == pytest.approx(e["cd"], rel=1e-3)
    fp = forces(surf, "p", -surf.fields["wallShearStress"], **ref)  # point data: another quadrature
    assert fp.coefficients["cd"] == pytest.approx(e["cd"], rel=0.1)

    # the point cloud: readable by geoop.read, free stream upstream, weights ~ the fluid volume
    pts = geoop.read(str(out / e["points"]))
    assert pts.n_points == 3000 and {"p", "U", "weight", "cell_volume"} <= set(pts.fields)
    up = pts.points[:, 0] < -1.2
    assert torch.allclose(pts.fields["U"][up].double(), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=0.05)
    assert float(pts.fields["weight"].sum()) == pytest.approx(e["mesh_volume"], rel=0.03)

    # the volume: OpenFOAM's cells (polyhedra included), cell volumes summing to checkMesh's
    vol = pv.read(str(out / e["volume"]))
    assert vol.n_cells == e["n_cells"] and {"p", "U", "nut", "cell_volume"} <= set(vol.cell_data.keys())
    # checkMesh's polyhedra, plus any cell shape VTK has no type for (tet-wedges)
    assert int(np.sum(np.asarray(vol.celltypes) == pv.CellType.POLYHEDRON)) >= e["n_polyhedra"] > 0
    assert float(np.sum(vol.cell_data["cell_volume"])) == pytest.approx(e["mesh_volume"], rel=1e-6)
    g = geoop.read(str(out / e["volume"]))  # polyhedra included: its weights integrate the fluid volume
    assert g.n_points == vol.n_points and float(g.weights.sum()) == pytest.approx(e["mesh_volume"], rel=1e-6)

    # resuming: a finished case is skipped, a half-done one is redone, other parameters refused
    def no_solver(*a, **k):
        raise RuntimeError("solver called")

    monkeypatch.setattr(rans3d, "make_case", no_solver)
    assert rans3d.generate(str(out), 1, seed=4, **TINY)[0]["cd"] == e["cd"]
    with pytest.raises(DatasetError, match="other parameters"):
        rans3d.generate(str(out), 1, seed=5, **TINY)
    os.remove(out / "case_0000_points.vtu")
    with pytest.raises(RuntimeError, match="solver called"):
        rans3d.generate(str(out), 1, seed=4, **TINY)
