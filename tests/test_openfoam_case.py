"""OpenFOAM cases read as they are (geoop.read("case/")), on every machine: the fixture
tests/data/openfoam_flange is a real snappyHexMesh run (the flange tutorial of Debian's
openfoam-examples, meshed small by scripts/make_openfoam_fixture.py: 332 cells, 19 of them
polyhedra), reconstructed and decomposed on 2 processors, with OpenFOAM's own cell volumes
``V`` and centres ``C`` as fields and the total volume checkMesh reported.

The floor test at the end re-runs OpenFOAM (skipped without it) and compares the three
read paths: foamToVTK's .vtu, the case folder and the decomposed case.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import geoop
from geoop import GeometryReadError

pytest.importorskip("pyvista")
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("float64")]

FIXTURE = Path(__file__).parent / "data" / "openfoam_flange"
INFO = json.loads((FIXTURE / "checkMesh.json").read_text())
PATCHES = ["flange_patch1", "flange_patch2", "flange_patch3", "flange_patch4"]


@pytest.fixture
def case(tmp_path):
    """A writable copy of the fixture."""
    dst = tmp_path / "flange"
    shutil.copytree(FIXTURE, dst)
    return dst


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    return a[np.lexsort(a.T[::-1])]


def _by_centre(g) -> np.ndarray:
    """Cell order by OpenFOAM's cell centre field C (to compare decomposed and reconstructed)."""
    c = g.cell_fields["C"].numpy()
    return np.lexsort(c.T[::-1])


def test_case_folder_reads_polyhedra_and_volumes():
    g = geoop.read(FIXTURE)
    assert g.n_points == INFO["points"] and g.n_cells == INFO["cells"]
    assert g.polyhedra.n_cells == INFO["polyhedra"] > 0
    assert g.source == str(FIXTURE)
    total = float(g.weights.sum())
    # checkMesh prints 6 digits and measures warped faces with its own face centres
    assert total == pytest.approx(INFO["total_volume"], rel=1e-4)
    vol = g.cell_measures()
    ours = torch.cat([vol[k] for k in g.cells] + [vol["polyhedron"]]).numpy()
    foam = g.cell_fields["V"][:, 0].numpy()
    n_fixed = g.n_cells - g.polyhedra.n_cells
    np.testing.assert_allclose(ours[:n_fixed], foam[:n_fixed], rtol=1e-4)  # (nearly) planar hexes and prisms
    np.testing.assert_allclose(ours[n_fixed:], foam[n_fixed:], rtol=3e-2)  # snapped, warped polyhedra
    assert ours.sum() == pytest.approx(foam.sum(), rel=1e-4)
    cen = torch.cat([g.cell_centroids()[k] for k in g.cells] + [g.cell_centroids()["polyhedron"]]).numpy()
    # OpenFOAM's centres treat warped faces as planar (pyramids on the face centre); ours are
    # exact for the faces triangulated about their vertex mean: close, not equal
    dist = np.linalg.norm(cen - g.cell_fields["C"].numpy(), axis=1) / np.cbrt(foam)
    assert np.median(dist) < 5e-3 and dist.max() < 0.1
    # cell data are averaged onto the points, as for files
    assert g.fields["V"].shape == (g.n_points, 1) and g.fields["C"].shape == (g.n_points, 3)


def test_foam_file_and_folder_are_the_same(case):
    (case / "case.foam").touch()
    a, b = geoop.read(case), geoop.read(case / "case.foam")
    assert torch.equal(a.points, b.points) and torch.equal(a.cell_fields["V"], b.cell_fields["V"])
    assert torch.equal(a.polyhedra.face_points, b.polyhedra.face_points)


def test_decomposed_equals_reconstructed():
    r = geoop.read(FIXTURE)
    d = geoop.read(FIXTURE, decomposed=True)
    assert d.n_points == r.n_points and d.n_cells == r.n_cells  # shared points merged exactly
    np.testing.assert_array_equal(_sorted_rows(d.points.numpy()), _sorted_rows(r.points.numpy()))
    ir, id_ = _by_centre(r), _by_centre(d)
    for k in ("V", "C"):
        np.testing.assert_array_equal(d.cell_fields[k].numpy()[id_], r.cell_fields[k].numpy()[ir])
    assert float(d.weights.sum()) == pytest.approx(float(r.weights.sum()), rel=1e-12)
    # the point averages agree point by point too (same cells around each merged point)
    pr, pd = np.lexsort(r.points.numpy().T[::-1]), np.lexsort(d.points.numpy().T[::-1])
    np.testing.assert_allclose(d.fields["V"].numpy()[pd], r.fields["V"].numpy()[pr], rtol=1e-12)


def test_decomposed_only_case_is_found(case):
    shutil.rmtree(case / "constant")
    shutil.rmtree(case / "0")
    g = geoop.read(case)  # no constant/polyMesh: the processors
    assert g.n_cells == INFO["cells"]


@pytest.mark.parametrize("region,expect", [
    ("flange_patch1", ["flange_patch1"]),
    ("flange_patch*", PATCHES),
    (["flange_patch2", "flange_patch4"], ["flange_patch2", "flange_patch4"]),
])
def test_patches_by_name_or_pattern(region, expect):
    g = geoop.read(FIXTURE, region=region)
    assert g.topological_dim == 2 and g.polyhedra is None and "triangle" in g.cells
    one = {p: geoop.read(FIXTURE, region=p) for p in expect}
    area = sum(float(x.weights.sum()) for x in one.values())
    assert float(g.weights.sum()) == pytest.approx(area, rel=1e-12)
    # patches sharing an edge share its points once
    assert g.n_points <= sum(x.n_points for x in one.values())
    assert set(map(tuple, g.points.numpy())) == set().union(*(map(tuple, x.points.numpy()) for x in one.values()))


def test_all_patches_close_the_volume():
    """The four patches bound the fluid: a closed surface whose enclosed volume (divergence
    theorem over the triangles) is the sum of the cell volumes, up to how VTK triangulates
    the warped boundary polygons (not about their centroid: 1e-3)."""
    s = geoop.read(FIXTURE, region="*")
    v = geoop.read(FIXTURE)
    p = s.points
    t = s.faces  # triangles, and quads split in two
    enclosed = abs(float(torch.einsum("ij,ij->i", p[t[:, 0]], torch.linalg.cross(p[t[:, 1]], p[t[:, 2]])).sum() / 6))
    assert enclosed == pytest.approx(float(v.weights.sum()), rel=2e-3)
    assert float(s.weights.sum()) == pytest.approx(sum(float(geoop.read(FIXTURE, region=p).weights.sum())
                                                       for p in PATCHES), rel=1e-12)


def test_region_suffix_in_the_path():
    a = geoop.read(f"{FIXTURE}::flange_patch3")
    b = geoop.read(FIXTURE, region="flange_patch3")
    assert torch.equal(a.points, b.points)


def test_missing_patch_lists_the_available_ones():
    with pytest.raises(GeometryReadError, match=r"no patch matches 'wall'; available patches: \['flange_patch1'"):
        geoop.read(FIXTURE, region="wall")


def test_time_selection(case):
    g = geoop.read(case, time=0)
    assert "V" in g.cell_fields
    with pytest.raises(GeometryReadError, match=r"no time folder 5.*available: \['0'\]"):
        geoop.read(case, time=5)
    # a later time folder is the default ("latest"); the processors must have it too
    shutil.copytree(case / "0", case / "0.5")
    (case / "0.5" / "C.gz").unlink()
    assert set(geoop.read(case).cell_fields) == {"V"}
    assert set(geoop.read(case, time="first").cell_fields) == {"V", "C"}
    with pytest.raises(GeometryReadError, match=r"processor1 has no time folder '0.5'"):
        shutil.copytree(case / "processor0" / "0", case / "processor0" / "0.5")
        geoop.read(case, decomposed=True)


def test_fields_selection_and_missing_field():
    g = geoop.read(FIXTURE, fields=["V"])
    assert set(g.cell_fields) == {"V"} and set(g.fields) == {"V"}
    with pytest.raises(GeometryReadError, match=r"no field\(s\) \['p'\].*available: \['C', 'V'\]"):
        geoop.read(FIXTURE, fields=["p"])


def test_point_data_is_vtk_interpolation():
    g = geoop.read(FIXTURE, data="point")
    assert "V_cell" in g.fields and "V" in g.fields  # VTK's point values win over the cell average
    assert not torch.allclose(g.fields["V"], g.fields["V_cell"])
    with pytest.raises(GeometryReadError, match="data='point' needs a reconstructed case"):
        geoop.read(FIXTURE, decomposed=True, data="point")


def test_no_time_folder_when_fields_are_asked(case):
    shutil.rmtree(case / "0")
    with pytest.raises(GeometryReadError, match=r"flange: no time folder .* only a mesh"):
        geoop.read(case, fields=["V"])
    g = geoop.read(case)  # nothing asked: the mesh alone
    assert g.n_cells == INFO["cells"] and not g.cell_fields


def test_missing_processor_is_named(case):
    shutil.rmtree(case / "processor1")
    with pytest.raises(GeometryReadError, match=r"missing processor1 .*numberOfSubdomains 2"):
        geoop.read(case, decomposed=True)
    shutil.move(str(case / "processor0"), str(case / "processor1"))
    with pytest.raises(GeometryReadError, match="missing processor0"):
        geoop.read(case, decomposed=True)


def test_processor_without_mesh_is_named(case):
    shutil.rmtree(case / "processor1" / "constant")
    with pytest.raises(GeometryReadError, match="processor1 has no constant/polyMesh"):
        geoop.read(case, decomposed=True)


def test_not_a_case_and_options_on_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeometryReadError, match="not an OpenFOAM case: no constant/polyMesh"):
        geoop.read(tmp_path / "empty")
    with pytest.raises(GeometryReadError, match="no such OpenFOAM case folder|does not exist"):
        geoop.read(tmp_path / "nothing" / "case.foam")
    f = geoop.write(geoop.Geometry(torch.rand(4, 3)), tmp_path / "p.npz")
    with pytest.raises(GeometryReadError, match="apply to OpenFOAM cases only"):
        geoop.read(f, region="wall")
    with pytest.raises(TypeError, match="unexpected keyword"):
        geoop.read(f, regoin="wall")


def test_folder_dataset_takes_a_folder_of_cases(tmp_path):
    from geoop.data import MeshFolderDataset

    for name in ("a", "b", "c"):
        shutil.copytree(FIXTURE, tmp_path / name, ignore=shutil.ignore_patterns("processor*", "system"))
    ds = MeshFolderDataset(tmp_path, inputs=["V"], targets=["C"], split="all", input_file="{case}::flange_patch*",
                           query_file="{case}", manifest=False)
    assert len(ds) == 3
    item = ds[0]
    surf = geoop.read(tmp_path / "a", region="flange_patch*")
    assert item.geometry.n_points == surf.n_points and item.queries.n_points == INFO["points"]
    # the polyhedra reach the query weights: they add up to the fluid volume (unit-box units)
    scale = torch.as_tensor(item.meta["transform"]["scale"], dtype=torch.float64)
    volume = float(geoop.read(tmp_path / "a").weights.sum())
    assert float(item.queries.weights.double().sum() * scale.prod()) == pytest.approx(volume, rel=1e-5)


# ---------------------------------------------------------------------------- floor (OpenFOAM)
needs_openfoam = pytest.mark.skipif(shutil.which("snappyHexMesh") is None or shutil.which("foamToVTK") is None,
                                    reason="OpenFOAM (snappyHexMesh, foamToVTK) not installed")


@needs_openfoam
@pytest.mark.slow
def test_snappy_mesh_three_read_paths_agree(tmp_path):
    """A fresh snappyHexMesh run read as foamToVTK's .vtu, as a case folder and decomposed:
    the same points and fields (1e-6), volumes summing to checkMesh's total."""
    run = tmp_path / "run"
    script = Path(__file__).parents[1] / "scripts" / "make_openfoam_fixture.py"
    subprocess.run([sys.executable, str(script), "--run-dir", str(run)], check=True, capture_output=True)
    info = json.loads((run / "checkMesh.json").read_text())
    vtu = geoop.read(next((run / "VTK").glob("*_0/internal.vtu")))
    legacy = geoop.read(next((run / "VTK").glob("*_0.vtk")))
    rec = geoop.read(run)
    dec = geoop.read(run, decomposed=True)
    assert vtu.polyhedra is not None and vtu.polyhedra.n_cells == rec.polyhedra.n_cells == info["polyhedra"]
    assert legacy.polyhedra.n_cells == info["polyhedra"]
    scale = float((vtu.points.max(0).values - vtu.points.min(0).values).max())
    for f in (vtu, legacy):
        assert float((f.points - rec.points).abs().max()) <= 1e-6 * scale
    for k in ("V", "C"):
        ref = np.abs(rec.cell_fields[k].numpy()).max()
        for f in (vtu, legacy):
            assert np.abs(f.cell_fields[k].numpy() - rec.cell_fields[k].numpy()).max() <= 1e-6 * ref
        assert np.abs(dec.cell_fields[k].numpy()[_by_centre(dec)]
                      - rec.cell_fields[k].numpy()[_by_centre(rec)]).max() <= 1e-6 * ref
    np.testing.assert_allclose(_sorted_rows(dec.points.numpy()), _sorted_rows(rec.points.numpy()), atol=1e-6 * scale)
    for g in (vtu, legacy, rec, dec):
        assert float(g.weights.sum()) == pytest.approx(info["total_volume"], rel=1e-4)
