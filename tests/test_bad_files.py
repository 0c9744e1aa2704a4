"""Corrupt, truncated and absurd files of every family give a clean GeometryReadError.

The readers underneath misbehave on such files (meshio hangs or calls sys.exit, VTK
returns empty meshes or crashes the process on absurd counts, open3d pads missing points);
each case here runs in this process, so a crash or hang would fail the suite.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

import geoop
from geoop import Geometry, GeometryReadError, UnsupportedFormatError
from geoop._optional import available
from geoop.geometry.io import SUPPORTED_FORMATS

pytestmark = pytest.mark.timeout(120)


def _expect_error(path, *fragments):
    with pytest.raises(GeometryReadError) as e:
        geoop.read(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


def _expect_errors(tmp_path, cases):
    """Write each ``{file name: bytes or text}`` case and expect a read error naming it."""
    for name, data in cases.items():
        p = tmp_path / name
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
        _expect_error(p)


def _tri() -> Geometry:
    return Geometry(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.float64),
                    torch.tensor([[0, 1, 2], [1, 3, 2]]), fields={"p": torch.arange(4.0, dtype=torch.float64)})


ASCII_PLY = b"""ply
format ascii 1.0
element vertex 3
property float x
property float y
property float z
element face 1
property list uchar int vertex_indices
end_header
0 0 0
1 0 0
0 1 0
3 0 1 2
"""


# ----------------------------------------------------------------------------- empty / unknown
@pytest.mark.parametrize("ext", sorted(SUPPORTED_FORMATS))
def test_empty_file(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.write_bytes(b"")
    _expect_error(p, "empty")


@pytest.mark.parametrize("ext", sorted(SUPPORTED_FORMATS))
def test_random_bytes(tmp_path, ext):
    if ext == ".pcd" and not available("open3d"):
        pytest.skip("open3d not installed")
    p = tmp_path / f"noise{ext}"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    _expect_error(p)


def test_unknown_extension_lists_supported(tmp_path):
    p = tmp_path / "a.dat"
    p.write_text("1 2 3")
    with pytest.raises(UnsupportedFormatError, match=r"\.ply.*\.vtu|\.vtu"):
        geoop.read(p)


# ----------------------------------------------------------------------------- PLY
def test_ply_good_reference(tmp_path):
    p = tmp_path / "ok.ply"
    p.write_bytes(ASCII_PLY)
    g = geoop.read(p)
    assert g.n_points == 3 and g.cells["triangle"].tolist() == [[0, 1, 2]]


def test_ply_truncated_in_header(tmp_path):
    p = tmp_path / "cut.ply"
    p.write_bytes(ASCII_PLY[:60])  # meshio hangs on this one
    _expect_error(p, "end_header")


@pytest.mark.parametrize("what,old,new", [
    ("more vertices than held", b"element vertex 3", b"element vertex 5"),
    ("face index out of range", b"3 0 1 2", b"3 0 1 7"),
    ("negative face index", b"3 0 1 2", b"3 0 -1 2"),
    ("NaN coordinate", b"1 0 0\n", b"nan 0 0\n"),
])
def test_ply_ascii_inconsistent(tmp_path, what, old, new):
    p = tmp_path / "bad.ply"
    p.write_bytes(ASCII_PLY.replace(old, new))
    _expect_error(p)


def test_ply_binary_absurd_count_and_truncation(tmp_path):
    good = tmp_path / "good.ply"
    geoop.write(_tri(), good)
    data = good.read_bytes()
    absurd = tmp_path / "absurd.ply"
    absurd.write_bytes(data.replace(b"element vertex 4", b"element vertex 1000000000000"))
    _expect_error(absurd, "1000000000000")
    cut = tmp_path / "cut.ply"
    cut.write_bytes(data[: len(data) - 20])
    _expect_error(cut, "bytes")
    faces = tmp_path / "faces.ply"
    faces.write_bytes(data.replace(b"element face 2", b"element face 2000000000"))
    _expect_error(faces, "2000000000")


def test_ply_binary_face_index_far_out_of_range(tmp_path):
    good = tmp_path / "good.ply"
    geoop.write(_tri(), good)
    data = bytearray(good.read_bytes())
    # last face's last index (int32 little endian) -> 2e9
    data[-4:] = struct.pack("<i", 2_000_000_000)
    bad = tmp_path / "far.ply"
    bad.write_bytes(bytes(data))
    _expect_error(bad, "indices")


# ----------------------------------------------------------------------------- VTK XML / legacy
@pytest.fixture
def vtu_bytes(tmp_path):
    p = tmp_path / "good.vtu"
    geoop.write(_tri(), p)
    return p.read_bytes()


def test_vtu_truncated(tmp_path, vtu_bytes):
    p = tmp_path / "half.vtu"
    p.write_bytes(vtu_bytes[: len(vtu_bytes) // 2])
    _expect_error(p)


def test_vtu_absurd_point_count(tmp_path, vtu_bytes):
    p = tmp_path / "absurd.vtu"
    p.write_bytes(vtu_bytes.replace(b'NumberOfPoints="4"', b'NumberOfPoints="1000000000000"'))
    _expect_error(p, "1000000000000")


def test_vtp_zero_points_is_not_a_success(tmp_path):
    p = tmp_path / "g.vtp"
    geoop.write(_tri(), p)
    bad = tmp_path / "zero.vtp"
    bad.write_bytes(p.read_bytes().replace(b'NumberOfPoints="4"', b'NumberOfPoints="0"'))
    _expect_error(bad)


def test_vtu_mismatched_count_is_caught(tmp_path, vtu_bytes):
    p = tmp_path / "fewer.vtu"
    p.write_bytes(vtu_bytes.replace(b'NumberOfPoints="4"', b'NumberOfPoints="3"'))
    _expect_error(p)


LEGACY = b"""# vtk DataFile Version 3.0
tri
ASCII
DATASET POLYDATA
POINTS 3 float
0 0 0 1 0 0 0 1 0
POLYGONS 1 4
3 0 1 2
"""


def test_legacy_vtk_cases(tmp_path):
    ok = tmp_path / "ok.vtk"
    ok.write_bytes(LEGACY)
    assert geoop.read(ok).n_points == 3
    cases = {
        "absurd.vtk": LEGACY.replace(b"POINTS 3 float", b"POINTS 1000000000000 float"),
        "binary_absurd.vtk": LEGACY.replace(b"ASCII", b"BINARY").replace(b"POINTS 3 float", b"POINTS 50000000 float"),
        "index.vtk": LEGACY.replace(b"3 0 1 2", b"3 0 1 9"),
        "nan.vtk": LEGACY.replace(b"0 1 0\n", b"0 nan 0\n"),
        "short.vtk": LEGACY.replace(b"0 0 0 1 0 0 0 1 0", b"0 0 0 1 0 0"),
        "header.vtk": b"# vtk DataFile Version 3.0\ntri\n",
    }
    _expect_errors(tmp_path, cases)


# ----------------------------------------------------------------------------- STL
def test_stl_cases(tmp_path):
    good = tmp_path / "good.stl"
    geoop.write(_tri(), good)
    data = good.read_bytes()
    assert len(data) == 84 + 50 * 2
    cut = tmp_path / "cut.stl"
    cut.write_bytes(data[:-10])
    _expect_error(cut, "triangles")
    absurd = tmp_path / "absurd.stl"
    absurd.write_bytes(data[:80] + struct.pack("<I", 4_000_000_000) + data[84:])
    _expect_error(absurd, "4000000000")
    empty_solid = tmp_path / "empty.stl"
    empty_solid.write_bytes(b"solid x\nendsolid x\n")
    _expect_error(empty_solid, "facet")
    broken = tmp_path / "broken.stl"
    broken.write_bytes(b"solid x\n facet normal 0 0 1\n  outer loop\n   vertex 0 0 0\n   vertex 1 0\n")
    _expect_error(broken)
    nan = tmp_path / "nan.stl"
    nan.write_bytes(b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex nan 1 0\n"
                    b"endloop\nendfacet\nendsolid x\n")
    _expect_error(nan)


# ----------------------------------------------------------------------------- OBJ / OFF / MSH
def test_obj_cases(tmp_path):
    ok = tmp_path / "ok.obj"
    ok.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert geoop.read(ok).cells["triangle"].tolist() == [[0, 1, 2]]
    _expect_errors(tmp_path, {"index.obj": "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n",
                             "nan.obj": "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n",
                             "words.obj": "hello world\nthis is not a mesh\n",
                             "short.obj": "v 0 0\nf 1 2 3\n"})


def test_off_cases(tmp_path):
    ok = tmp_path / "ok.off"
    ok.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    assert geoop.read(ok).n_points == 3
    _expect_errors(tmp_path, {"count.off": "OFF\n10 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n",
                             "index.off": "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 5\n",
                             "magic.off": "FFO\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n"})


def test_msh_cases(tmp_path):
    good = tmp_path / "good.msh"
    geoop.write(_tri(), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.msh"
    cut.write_bytes(data[: len(data) // 2])
    _expect_error(cut)
    text = tmp_path / "text.msh"
    text.write_text("$MeshFormat\n2.2 0 8\n$EndMeshFormat\n$Nodes\n5\n1 0 0 0\n")
    _expect_error(text)


# ----------------------------------------------------------------------------- point clouds
def test_xyz_pts_cases(tmp_path):
    _expect_errors(tmp_path, {"nan.xyz": "0 0 0\n1 nan 0\n", "words.xyz": "a b c\n", "comments.xyz": "# nothing\n",
                             "ragged.xyz": "0 0 0\n1 2\n", "count.pts": "10\n0 0 0\n1 1 1\n",
                             "one_col.xyz": "1\n2\n3\n"})
    ok = tmp_path / "ok.pts"
    ok.write_text("2\n0 0 0\n1 1 1\n")
    assert geoop.read(ok).n_points == 2


PCD = """# .PCD v0.7
VERSION 0.7
FIELDS x y z
SIZE 4 4 4
TYPE F F F
COUNT 1 1 1
WIDTH {n}
HEIGHT 1
VIEWPOINT 0 0 0 1 0 0 0
POINTS {n}
DATA {data}
"""


@pytest.mark.skipif(not available("open3d"), reason="open3d not installed")
def test_pcd_cases(tmp_path):
    ok = tmp_path / "ok.pcd"
    ok.write_text(PCD.format(n=2, data="ascii") + "0 0 0\n1 1 1\n")
    assert geoop.read(ok).n_points == 2
    cases = {
        "more.pcd": (PCD.format(n=10, data="ascii") + "0 0 0\n1 1 1\n").encode(),  # open3d pads these
        "nan.pcd": (PCD.format(n=2, data="ascii") + "0 0 0\nnan 1 1\n").encode(),
        "binary.pcd": PCD.format(n=1_000_000_000, data="binary").encode() + np.zeros(6, np.float32).tobytes(),
        "width.pcd": PCD.format(n=2, data="ascii").replace("WIDTH 2", "WIDTH 3").encode() + b"0 0 0\n1 1 1\n",
        "nodata.pcd": PCD.format(n=2, data="ascii").split("DATA")[0].encode(),
    }
    _expect_errors(tmp_path, cases)


def test_npz_cases(tmp_path):
    pickled = tmp_path / "pickle.npz"
    np.savez(pickled, points=np.zeros((3, 3)), evil=np.array([{"a": 1}], dtype=object))
    _expect_error(pickled)
    nopoints = tmp_path / "nopoints.npz"
    np.savez(nopoints, vertices=np.zeros((3, 3)))
    _expect_error(nopoints, "points")
    index = tmp_path / "index.npz"
    np.savez(index, points=np.zeros((3, 3)), faces=np.array([[0, 1, 5]]))
    _expect_error(index, "indices")
    length = tmp_path / "length.npz"
    np.savez(length, points=np.zeros((3, 3)), **{"fields/p": np.zeros(4)})
    _expect_error(length, "'p'")


def test_legacy_structured_points_absurd_dimensions(tmp_path):
    p = tmp_path / "grid.vtk"
    p.write_bytes(b"# vtk DataFile Version 3.0\ngrid\nASCII\nDATASET STRUCTURED_POINTS\n"
                  b"DIMENSIONS 100000 100000 100000\nORIGIN 0 0 0\nSPACING 1 1 1\n")
    _expect_error(p, "DIMENSIONS")


@pytest.mark.parametrize("ext", [".vtp", ".vtu"])
def test_vtk_xml_connectivity_out_of_range(tmp_path, ext):
    import pyvista as pv

    mesh = pv.Plane(i_resolution=2, j_resolution=2)  # quads: polygons go through VTK filters
    src = tmp_path / f"src{ext}"
    (mesh if ext == ".vtp" else mesh.cast_to_unstructured_grid()).save(src, binary=False)
    text = src.read_text()
    i = text.index('Name="connectivity"', text.index("<Polys>") if ext == ".vtp" else 0)
    j = text.index(">", i) + 1
    k = text.index("<", j)
    vals = text[j:k].split()
    vals[4] = "2000000000"
    bad = tmp_path / f"bad{ext}"
    bad.write_text(text[:j] + " ".join(vals) + text[k:])
    _expect_error(bad, "2000000000")
