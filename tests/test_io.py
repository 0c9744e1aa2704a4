"""geoop.read / geoop.write round trips, pyvista's bundled files, conversions, `geoop info`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import geoop
from geoop import FieldError, Geometry, GeometryReadError, GeometryWriteError, UnsupportedFormatError
from geoop._optional import available
from geoop.geometry.convert import from_pyvista, to_open3d, to_pyvista, to_trimesh

REPO = Path(__file__).resolve().parents[1]
MESHES = REPO / "meshes"
pv = pytest.importorskip("pyvista")
PV_EXAMPLES = Path(pv.__file__).parent / "examples"


def icosphere(sub: int = 2, dtype=torch.float64) -> Geometry:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=sub)
    v = torch.tensor(s.vertices, dtype=dtype)
    return Geometry(v, torch.tensor(s.faces), normals=v.clone(),
                    fields={"p": v[:, 2] ** 2, "u": v * torch.tensor([1.0, -2.0, 3.0], dtype=dtype)})


def _canon_faces(points: torch.Tensor, faces: torch.Tensor, ref_points: torch.Tensor) -> set:
    """Faces as sets of reference-vertex ids (matching points by nearest neighbour)."""
    from scipy.spatial import cKDTree

    _, ids = cKDTree(ref_points.numpy()).query(points.double().numpy())
    return {tuple(sorted(ids[f])) for f in faces.numpy()}


# format -> (keeps point fields, keeps normals, keeps vertex order)
MESH_FORMATS = {
    ".vtu": (True, True, True),
    ".vtp": (True, True, True),
    ".vtk": (True, True, True),
    ".ply": (True, True, True),
    ".obj": (False, True, True),
    ".stl": (False, False, False),
    ".off": (False, False, True),
    ".msh": (True, True, True),
    ".npz": (True, True, True),
}


@pytest.mark.parametrize("ext", sorted(MESH_FORMATS))
def test_mesh_round_trip(tmp_path, ext):
    g = icosphere()
    path = tmp_path / f"sphere{ext}"
    assert geoop.write(g, path) == path
    r = geoop.read(path)
    keeps_fields, keeps_normals, keeps_order = MESH_FORMATS[ext]
    assert r.n_points == g.n_points and r.source == str(path)
    assert list(r.cells) == ["triangle"] and r.cells["triangle"].shape == g.cells["triangle"].shape
    if keeps_order:
        torch.testing.assert_close(r.points.double(), g.points, atol=1e-6, rtol=0)
        assert torch.equal(r.cells["triangle"], g.cells["triangle"])
    else:
        assert _canon_faces(r.points, r.cells["triangle"], g.points) == _canon_faces(g.points, g.faces, g.points)
    if keeps_normals:
        torch.testing.assert_close(r.normals.double(), g.normals, atol=1e-6, rtol=0)
    else:
        assert r.normals is None
    if keeps_fields:
        assert set(r.fields) == {"p", "u"}
        torch.testing.assert_close(r.fields["p"].double(), g.fields["p"], atol=1e-6, rtol=0)
        torch.testing.assert_close(r.fields["u"].double(), g.fields["u"], atol=1e-6, rtol=0)
    # no temporary files left next to the output
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("ext", [".xyz", ".pts", ".pcd", ".ply", ".vtp", ".vtu", ".npz"])
def test_point_cloud_round_trip(tmp_path, ext):
    if ext == ".pcd" and not available("open3d"):
        pytest.skip("open3d not installed")
    g = icosphere(1)
    pc = g.replace(cells={}, fields={"p": g.fields["p"]})
    path = tmp_path / f"pc{ext}"
    geoop.write(pc, path)
    r = geoop.read(path)
    assert r.cells == {} and r.topological_dim == 0
    torch.testing.assert_close(r.points.double(), pc.points, atol=1e-6, rtol=0)
    torch.testing.assert_close(r.normals.double(), pc.normals, atol=1e-6, rtol=0)
    if ext in (".ply", ".vtp", ".vtu", ".npz"):
        torch.testing.assert_close(r.fields["p"].double(), pc.fields["p"], atol=1e-6, rtol=0)


def _volume_geometry() -> Geometry:
    """Two unit hexahedra and a tetrahedron (volume 1/6) on top, cell field = cell id."""
    pts = np.array([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1, 2)] + [[0.5, 0.5, 2.0]], float)
    ids = lambda x, y, z: x + 3 * y + 6 * z  # noqa: E731
    hexes = np.array([[ids(i, 0, 0), ids(i + 1, 0, 0), ids(i + 1, 1, 0), ids(i, 1, 0),
                       ids(i, 0, 1), ids(i + 1, 0, 1), ids(i + 1, 1, 1), ids(i, 1, 1)] for i in (0, 1)])
    tet = np.array([[ids(0, 0, 1), ids(1, 0, 1), ids(1, 1, 1), 12]])  # on top of the first hex
    return Geometry(pts, cells={"hexahedron": hexes, "tetra": tet},
                    cell_fields={"cid": np.arange(3.0), "vec": np.arange(6.0).reshape(3, 2)})


@pytest.mark.parametrize("ext", [".vtu", ".vtk", ".msh", ".npz"])
def test_volume_round_trip_with_cell_fields(tmp_path, ext):
    g = _volume_geometry()
    path = tmp_path / f"vol{ext}"
    geoop.write(g, path)
    r = geoop.read(path)
    assert {k: v.shape[0] for k, v in r.cells.items()} == {"hexahedron": 2, "tetra": 1}
    for k in ("cid", "vec"):
        torch.testing.assert_close(r.cell_fields[k].double(), g.cell_fields[k].double())
    # cell data are also converted to point data: the apex touches only the tetra (id 2)
    assert "cid" in r.fields and float(r.fields["cid"][-1]) == 2.0
    expected = g.cell_data_to_point_data().fields["cid"]
    torch.testing.assert_close(r.fields["cid"].double(), expected.double())
    torch.testing.assert_close(r.weights.double().sum(), torch.tensor(2.0 + 1.0 / 6.0, dtype=torch.float64))


def test_cell_field_order_survives_mixed_cell_types():
    """Quads, triangles and lines in a non-VTK order: each cell keeps its own value."""
    pts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0]], float)
    g = Geometry(pts, cells={"quad": [[0, 1, 2, 3]], "triangle": [[1, 4, 5], [1, 5, 2]], "line": [[3, 0]]},
                 cell_fields={"v": [10.0, 20.0, 30.0, 40.0]})
    key = lambda c: tuple(sorted(c))  # noqa: E731
    want = {key(c): v for c, v in zip([[0, 1, 2, 3], [1, 4, 5], [1, 5, 2], [3, 0]], [10, 20, 30, 40])}
    back = from_pyvista(to_pyvista(g))
    got = {}
    start = 0
    for ctype, c in back.cells.items():
        for row, val in zip(c.tolist(), back.cell_fields["v"][start:start + len(c), 0].tolist()):
            got[key(row)] = val
        start += len(c)
    assert got == want


def test_two_d_geometry_is_padded_and_normalizes(tmp_path):
    pts = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    g = Geometry(pts, torch.tensor([[0, 1, 2], [0, 2, 3]]), fields={"f": pts[:, 0]})
    for ext in (".vtu", ".vtp", ".vtk"):
        geoop.write(g, tmp_path / f"flat{ext}")
        r = geoop.read(tmp_path / f"flat{ext}")
        assert r.dim == 3 and r.is_2d
        assert torch.all(r.points[:, 2] == 0)
        n, t = r.normalized()
        assert torch.isfinite(n.points).all() and torch.all(n.points[:, 2] == 0)
        torch.testing.assert_close(t.inverse(n.points), r.points)
        torch.testing.assert_close(r.weights.double().sum(), torch.tensor(2.0, dtype=torch.float64))


def test_cell_only_file_gets_point_fields(tmp_path):
    """A CFD-like export with only cell data still gives point fields."""
    mesh = pv.Plane(i_resolution=3, j_resolution=2).triangulate()
    mesh.clear_data()
    mesh.cell_data["pressure"] = np.arange(mesh.n_cells, dtype=float)
    mesh.save(tmp_path / "cells.vtp")
    r = geoop.read(tmp_path / "cells.vtp")
    assert "pressure" in r.cell_fields and "pressure" in r.fields
    # independent reference: VTK's own cell-to-point averaging
    ref = np.asarray(mesh.cell_data_to_point_data().point_data["pressure"])
    np.testing.assert_allclose(r.fields["pressure"][:, 0].numpy(), ref, atol=1e-6)


def test_field_selection(tmp_path):
    g = icosphere(1)
    geoop.write(g, tmp_path / "s.vtp")
    r = geoop.read(tmp_path / "s.vtp", fields=["u"])
    assert list(r.fields) == ["u"]
    with pytest.raises(FieldError) as e:
        geoop.read(tmp_path / "s.vtp", fields=["u", "pressure"])
    assert "pressure" in str(e.value) and "'p'" in str(e.value) and "s.vtp" in str(e.value)


def test_missing_and_unsupported(tmp_path):
    with pytest.raises(GeometryReadError, match="no such file"):
        geoop.read(tmp_path / "missing.vtu")
    (tmp_path / "a.xyzq").write_text("1 2 3\n")
    with pytest.raises(UnsupportedFormatError, match=r"\.vtu"):
        geoop.read(tmp_path / "a.xyzq")
    with pytest.raises(UnsupportedFormatError):
        geoop.write(icosphere(1), tmp_path / "a.docx")


def test_failed_write_is_atomic(tmp_path):
    g = icosphere(1)
    path = tmp_path / "keep.stl"
    geoop.write(g, path)
    before = path.read_bytes()
    with pytest.raises(GeometryWriteError, match="needs triangle"):
        geoop.write(g.replace(cells={}), path)  # a point cloud cannot be an STL
    assert path.read_bytes() == before
    with pytest.raises(GeometryWriteError, match="volume"):
        geoop.write(_volume_geometry(), tmp_path / "vol.vtp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.stl"]
    with pytest.raises(GeometryWriteError, match="does not exist"):
        geoop.write(g, tmp_path / "nope" / "x.vtu")


@pytest.mark.parametrize("name", ["airplane.ply", "ant.ply", "sphere.ply", "nut.ply", "hexbeam.vtk",
                                  "uniform.vtk", "rectilinear.vtk", "globe.vtk"])
def test_pyvista_bundled_files(name):
    path = PV_EXAMPLES / name
    if not path.exists():
        pytest.skip(f"{name} not shipped with this pyvista")
    ref = pv.read(path)
    g = geoop.read(path)
    assert g.n_points == ref.n_points
    np.testing.assert_allclose(g.points.double().numpy(), np.asarray(ref.points, float), rtol=1e-6, atol=1e-6)
    assert g.n_cells > 0
    if name == "hexbeam.vtk" or name.endswith("uniform.vtk") or name == "rectilinear.vtk":
        # dual volumes add up to VTK's own volume of the grid
        np.testing.assert_allclose(float(g.weights.double().sum()), ref.volume, rtol=1e-6)
    if name.endswith(".ply") and ref.n_cells:
        np.testing.assert_allclose(float(g.weights.double().sum()), ref.triangulate().area, rtol=1e-5)


def test_bundled_meshes():
    foil = geoop.read(MESHES / "naca0012.vtp")
    assert foil.is_2d and list(foil.cells) == ["line"] and foil.normals is not None
    # outward normals of a counter-clockwise closed curve: point away from the centroid
    c = foil.points.mean(0)
    assert (((foil.points - c) * foil.normals).sum(1) > -1e-6).float().mean() > 0.95
    # signed distance to the closed curve read back with z = 0: negative inside the airfoil
    d = foil.sdf(torch.tensor([[0.3, 0.0, 0.0], [0.3, 0.5, 0.0], [-1.0, 0.0, 0.0]]))
    assert d[0] < 0 < d[1] and abs(float(d[2]) - 1.0) < 1e-6
    dom = geoop.read(MESHES / "naca0012_domain.vtu")
    assert dom.is_2d and dom.topological_dim == 2 and "wall_distance" in dom.fields
    car = geoop.read(MESHES / "car_body.stl")
    assert to_trimesh(car).is_watertight
    sph = geoop.read(MESHES / "sphere.vtp")
    torch.testing.assert_close(sph.fields["z"][:, 0], sph.points[:, 2])
    for f in MESHES.iterdir():
        if f.suffix != ".md":
            assert f.stat().st_size < 1 << 20


def test_make_meshes_is_deterministic(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_meshes", REPO / "scripts" / "make_meshes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pts, seg = mod.naca0012()
    foil = geoop.read(MESHES / "naca0012.vtp")
    torch.testing.assert_close(foil.points[:, :2].double(), torch.tensor(pts), atol=1e-6, rtol=0)
    car = mod.car_body()
    ref = geoop.read(MESHES / "car_body.stl")
    assert car.is_watertight and abs(car.area - float(ref.weights.double().sum())) < 1e-3 * car.area


def test_conversions():
    g = icosphere(2)
    tm = to_trimesh(g)
    assert tm.is_watertight and len(tm.faces) == g.faces.shape[0]
    np.testing.assert_allclose(tm.area, float(g.weights.sum()), rtol=1e-10)
    pd = to_pyvista(g)
    assert isinstance(pd, pv.PolyData) and pd.n_cells == g.faces.shape[0]
    np.testing.assert_allclose(pd.point_data["Normals"], g.normals.numpy())
    back = from_pyvista(pd, fields=["p"])
    assert list(back.fields) == ["p"] and back.normals is not None
    vol = to_pyvista(_volume_geometry())
    assert isinstance(vol, pv.UnstructuredGrid) and vol.n_cells == 3
    assert to_trimesh(g.replace(cells={})).__class__.__name__ == "PointCloud"
    if available("open3d"):
        m = to_open3d(g)
        assert len(m.triangles) == g.faces.shape[0] and m.has_vertex_normals()
        pc = to_open3d(g.replace(cells={}))
        assert len(pc.points) == g.n_points and pc.has_normals()


def test_cli_info(capsys):
    from geoop.cli.main import main

    assert main(["info", str(MESHES / "sphere.vtp"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["points"] == 2562 and info["cells"] == {"triangle": 5120}
    assert abs(info["total_weight"] - 4 * np.pi) < 0.02 * 4 * np.pi
    assert info["point_fields"]["z"]["width"] == 1 and info["is_2d"] is False
    assert main(["info", str(MESHES / "naca0012_domain.vtu")]) == 0
    out = capsys.readouterr().out
    assert "2-D: yes" in out and "wall_distance" in out and "triangle: " in out
    assert main(["info", os.devnull + ".vtu"]) == 2
    assert "no such file" in capsys.readouterr().err
