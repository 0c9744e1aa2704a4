"""Nothing read is silently changed: each class of hostile file, in every format where it
can occur, is a GeometryReadError naming the file, the array and expected vs found.

The classes (each file here is made from a valid file written by geoop or pyvista):
data arrays longer / shorter than the point or cell count, two arrays of one name,
unknown cell types, files cut short inside the points or the cells, non-finite
coordinates and field values. The libraries underneath accept most of these (VTK trims
long arrays and keeps one of two equal names, returns partial legacy files with a
warning; trimesh drops STL triangles with NaN vertices; np.load keeps the last of two
equal keys), so every case first checks the test file is what it claims to be.
"""
from __future__ import annotations

import io
import re
import struct
import warnings
import zipfile

import numpy as np
import pytest
import torch

import geoop
from geoop import Geometry, GeometryReadError
from geoop._optional import available

pv = pytest.importorskip("pyvista")
pytestmark = pytest.mark.timeout(120)

SENTINEL = 0.8125  # exact in float32: its bytes / text are replaced by NaN or Inf


def _expect(path, *fragments, **kw):
    with pytest.raises(GeometryReadError) as e:
        geoop.read(path, **kw)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert re.search(f, msg), (f, msg)
    return msg


def _geom(n_extra: int = 0) -> Geometry:
    """4 points (one coordinate is SENTINEL), 2 triangles, point field p, cell field c."""
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, SENTINEL, 0]], dtype=torch.float64)
    return Geometry(pts, torch.tensor([[0, 1, 2], [1, 3, 2]]),
                    fields={"p": torch.tensor([10.0, 11, 12, 13], dtype=torch.float64)},
                    cell_fields={"c": torch.tensor([5.0, 6], dtype=torch.float64)})


def _pv_mesh(n: int, cells: bool = True):
    """A pyvista PolyData of n points (triangle fan) with point array p and cell array c."""
    pts = np.c_[np.cos(np.arange(n)), np.sin(np.arange(n)), np.zeros(n)]
    pts[0] = 0
    faces = np.hstack([[3, 0, i, i + 1] for i in range(1, n - 1)]) if cells else None
    m = pv.PolyData(pts, faces=faces) if cells else pv.PolyData(pts)
    m.point_data["p"] = np.arange(n, dtype=float) + 10
    if cells:
        m.cell_data["c"] = np.arange(m.n_cells, dtype=float)
    return m


def _save(mesh, path, binary):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mesh.save(path, binary=binary)
    return path.read_bytes()


def _xml_array(data: bytes, name: bytes, section: bytes = b"PointData") -> tuple[int, int]:
    """Byte span of the <DataArray Name=name> element inside <section>."""
    sec = data.index(b"<" + section)
    i = data.index(b'Name="' + name + b'"', sec)
    s = data.rindex(b"<DataArray", 0, i)
    e = data.index(b"</DataArray>", i) + len(b"</DataArray>")
    return s, e


# ============================================================================ 1. array lengths
@pytest.mark.parametrize("ext", [".vtp", ".vtu"])
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("section,name,delta", [("PointData", b"p", +1), ("PointData", b"p", -1),
                                                ("CellData", b"c", +1), ("CellData", b"c", -1)])
def test_vtk_xml_array_length(tmp_path, ext, binary, section, name, delta):
    """The array of a mesh with one point (cell) more / less spliced into a valid file."""
    def data(n):
        m = _pv_mesh(n)
        return _save(m if ext == ".vtp" else m.cast_to_unstructured_grid(), tmp_path / f"m{n}{ext}", binary)

    good = data(6)
    other = data(6 + delta)
    s, e = _xml_array(good, name, section.encode())
    s2, e2 = _xml_array(other, name, section.encode())
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(good[:s] + other[s2:e2] + good[e:])
    kind = "points" if section == "PointData" else "cells"
    n = 6 if kind == "points" else 4
    if delta > 0:  # the class that got through: VTK trims the longer array without a word
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = pv.read(bad)
        assert (m.point_data if kind == "points" else m.cell_data)[name.decode()].shape[0] == n
    _expect(bad, rf"array '{name.decode()}'", f"expected {n} values", f"found {n + delta}")


def test_vtu_appended_raw_array_length(tmp_path):
    """Appended raw data (what ParaView writes): the array's header word says its length."""
    import vtk

    m = _pv_mesh(6).cast_to_unstructured_grid()
    path = tmp_path / "app.vtu"
    w = vtk.vtkXMLUnstructuredGridWriter()
    w.SetFileName(str(path))
    w.SetInputData(m)
    w.SetDataModeToAppended()
    w.EncodeAppendedDataOff()
    w.SetCompressorTypeToNone()
    w.Write()
    data = path.read_bytes()
    assert geoop.read(path).fields["p"].flatten().tolist() == list(np.arange(6.0) + 10)
    sec = data.index(b"<PointData")
    tag = data[data.rindex(b"<DataArray", 0, data.index(b'Name="p"', sec)):]
    off = int(re.search(rb'offset="(\d+)"', tag[:tag.index(b">")]).group(1))
    start = data.index(b"_", data.index(b"<AppendedData")) + 1 + off
    assert struct.unpack("<I", data[start:start + 4])[0] == 48
    bad = tmp_path / "bad.vtu"
    bad.write_bytes(data[:start] + struct.pack("<I", 56) + data[start + 4:])
    _expect(bad, "array 'p'", "expected 6 values", "found 7")


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("kind", ["POINT_DATA", "CELL_DATA"])
@pytest.mark.parametrize("delta", [+1, -1])
def test_legacy_vtk_array_length(tmp_path, binary, kind, delta):
    """One value more / fewer in a data array than its POINT_DATA / CELL_DATA count."""
    def data(n):
        m = _pv_mesh(n)
        m.point_data.pop("p") if kind == "CELL_DATA" else m.cell_data.pop("c")
        return _save(m, tmp_path / f"m{n}.vtk", binary)

    good, other = data(6), data(6 + delta)
    cut = good.index(kind.encode())
    tail_other = other[other.index(kind.encode()):]
    count = re.match(rb"\w+ (\d+)", good[cut:]).group(1)
    bad = tmp_path / "bad.vtk"
    # the file's own count, the other file's values
    bad.write_bytes(good[:cut] + re.sub(rb"^(\w+) \d+", rb"\1 " + count, tail_other))
    _expect(bad, "expected|declares|keyword|values")


def test_legacy_vtk_count_disagrees_with_points(tmp_path):
    data = _save(_pv_mesh(6), tmp_path / "m.vtk", False)
    bad = tmp_path / "bad.vtk"
    bad.write_bytes(data.replace(b"POINT_DATA 6", b"POINT_DATA 5"))
    _expect(bad, "POINT_DATA 5", "6 points")


def test_ply_more_rows_than_declared(tmp_path):
    good = tmp_path / "g.ply"
    geoop.write(_geom().replace(cell_fields={}), good)
    text = b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n" \
           b"property float p\nend_header\n0 0 0 1\n1 0 0 2\n0 1 0 3\n1 1 0 4\n"
    bad = tmp_path / "long.ply"
    bad.write_bytes(text)
    _expect(bad)


@pytest.mark.parametrize("delta", [+1, -1])
def test_msh_node_data_length(tmp_path, delta):
    good = tmp_path / "g.msh"
    geoop.write(_geom().replace(cell_fields={}), good)
    data = good.read_bytes()
    i = data.index(b"$NodeData")
    j = data.index(b"\n4\n", i)  # the number of entries (4 nodes), then binary (tag, value) pairs
    bad = tmp_path / "bad.msh"
    bad.write_bytes(data[:j] + f"\n{4 + delta}\n".encode() + data[j + 3:])
    _expect(bad)


def test_npz_lengths_and_keys(tmp_path):
    base = {"points": np.zeros((3, 3)), "cells/triangle": np.array([[0, 1, 2]])}
    cases = {
        "field_long.npz": {"fields/p": np.zeros(4)},
        "field_short.npz": {"fields/p": np.zeros(2)},
        "cellfield.npz": {"cell_fields/c": np.zeros(2)},
        "toplevel.npz": {"p": np.zeros(4)},  # used to be skipped without a word
        "normals.npz": {"normals": np.zeros((2, 3))},
        "twice.npz": {"p": np.zeros(3), "fields/p": np.ones(3)},
    }
    for name, extra in cases.items():
        p = tmp_path / name
        np.savez(p, **base, **extra)
        _expect(p)
    msg = _expect(tmp_path / "toplevel.npz", "'p'", r"\(4,\)", "3 rows")
    assert "expected" in msg


def test_npz_repeated_key(tmp_path):
    p = tmp_path / "dup.npz"
    np.savez(p, points=np.zeros((3, 3)))
    buf = io.BytesIO()
    np.save(buf, np.ones((3, 3)))
    with warnings.catch_warnings(), zipfile.ZipFile(p, "a") as z:
        warnings.simplefilter("ignore")  # "Duplicate name"
        z.writestr("points.npy", buf.getvalue())
    with np.load(p) as z:  # numpy keeps the last one without a word
        assert z.files == ["points", "points"] and z["points"].sum() == 9
    _expect(p, "2 arrays named 'points'")


# ============================================================================ 2. repeated names
@pytest.mark.parametrize("ext", [".vtp", ".vtu"])
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("section,name", [("PointData", b"p"), ("CellData", b"c")])
def test_vtk_xml_repeated_name(tmp_path, ext, binary, section, name):
    m = _pv_mesh(6)
    data = _save(m if ext == ".vtp" else m.cast_to_unstructured_grid(), tmp_path / f"g{ext}", binary)
    s, e = _xml_array(data, name, section.encode())
    bad = tmp_path / f"dup{ext}"
    bad.write_bytes(data[:e] + data[s:e] + data[e:])
    _expect(bad, f"two arrays named '{name.decode()}'")


@pytest.mark.parametrize("binary", [False, True])
def test_legacy_vtk_repeated_name(tmp_path, binary):
    m = _pv_mesh(6)
    m.cell_data.pop("c")
    data = _save(m, tmp_path / "g.vtk", binary)
    i = data.index(b"SCALARS p")
    bad = tmp_path / "dup.vtk"
    bad.write_bytes(data[:i] + data[i:] + b"\n" + data[i:])
    _expect(bad, "two arrays named 'p'")


def test_ply_repeated_property(tmp_path):
    text = b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n" \
           b"property float p\nproperty float p\nend_header\n0 0 0 1 5\n1 0 0 2 6\n0 1 0 3 7\n"
    p = tmp_path / "dup.ply"
    p.write_bytes(text)
    _expect(p, "two arrays named 'p'")


def test_msh_repeated_node_data(tmp_path):
    good = tmp_path / "g.msh"
    geoop.write(_geom().replace(cell_fields={}), good)
    data = good.read_bytes()
    i = data.index(b"$NodeData")
    bad = tmp_path / "dup.msh"
    bad.write_bytes(data + data[i:])
    _expect(bad, "two arrays named 'p'")


@pytest.mark.skipif(not available("open3d"), reason="open3d not installed")
def test_pcd_repeated_field(tmp_path):
    p = tmp_path / "dup.pcd"
    p.write_text("VERSION 0.7\nFIELDS x y z x\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 2\nHEIGHT 1\n"
                 "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n0 0 0 5\n1 1 1 6\n")
    _expect(p, "two arrays named 'x'")


# ============================================================================ 3. unknown cell types
@pytest.mark.parametrize("ext", [".vtu", ".vtk"])
@pytest.mark.parametrize("ctype", ["22", "99"])  # a quadratic triangle; an id VTK does not define
def test_vtk_unknown_cell_type(tmp_path, ext, ctype):
    m = _pv_mesh(6).cast_to_unstructured_grid()
    data = _save(m, tmp_path / f"g{ext}", False).decode()
    if ext == ".vtu":
        i = data.index('Name="types"')
        j = data.index(">", i) + 1
        k = data.index("<", j)
        bad_text = data[:j] + " ".join(["5"] * 3 + [ctype]) + data[k:]
    else:
        bad_text = re.sub(r"CELL_TYPES 4\s+5\s+5\s+5\s+5", f"CELL_TYPES 4\n5 5 5 {ctype}", data)
    bad = tmp_path / f"bad{ext}"
    bad.write_text(bad_text)
    _expect(bad, "unsupported", ctype)
    with pytest.warns(UserWarning, match="dropped"):
        g = geoop.read(bad, on_unknown_cells="drop")
    assert g.cells["triangle"].shape[0] == 3 and g.cell_fields["c"].flatten().tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("ext", [".obj", ".ply"])
def test_meshio_polygon_cells(tmp_path, ext):
    p = tmp_path / f"pent{ext}"
    if ext == ".obj":
        p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv -1 .5 0\nf 1 2 3 4 5\nf 1 2 3\n")
    else:
        p.write_text("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
                     "element face 2\nproperty list uchar int vertex_indices\nend_header\n"
                     "0 0 0\n1 0 0\n1 1 0\n0 1 0\n-1 .5 0\n5 0 1 2 3 4\n3 0 1 2\n")
    _expect(p, "unsupported", "polygon")
    with pytest.warns(UserWarning, match="dropped"):
        assert geoop.read(p, on_unknown_cells="drop").cells["triangle"].tolist() == [[0, 1, 2]]


def test_msh_unknown_element_type(tmp_path):
    p = tmp_path / "bad.msh"
    p.write_text("$MeshFormat\n2.2 0 8\n$EndMeshFormat\n$Nodes\n3\n1 0 0 0\n2 1 0 0\n3 0 1 0\n$EndNodes\n"
                 "$Elements\n1\n1 199 2 0 1 1 2 3\n$EndElements\n")
    _expect(p)


# ============================================================================ 4. truncated files
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("where", ["POINTS", "CELLS", "CELL_TYPES", "POINT_DATA"])
def test_legacy_vtk_truncated(tmp_path, binary, where):
    m = _pv_mesh(12).cast_to_unstructured_grid()
    data = _save(m, tmp_path / "g.vtk", binary)
    i = data.index(b"\n" + where.encode()) + 1
    start = data.index(b"\n", data.index(b"\n", i) + 1) + 1 if where == "CELLS" else data.index(b"\n", i) + 1
    if where == "POINT_DATA":
        start = data.index(b"\n", data.index(b"LOOKUP_TABLE", i)) + 1
    cut = start + 10  # inside the values of that section
    bad = tmp_path / "cut.vtk"
    bad.write_bytes(data[:cut])
    if where != "POINT_DATA":  # VTK's own reader returns a partial mesh here, with at most a warning
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert pv.read(bad).n_points > 0
    _expect(bad, "expected", "truncated|found")


@pytest.mark.parametrize("ext", [".vtp", ".vtu", ".ply", ".stl", ".msh", ".off", ".npz", ".pts"])
def test_truncated_inside_data(tmp_path, ext):
    """Cut in the middle of the points, and just before the cells end. (OBJ and XYZ declare
    no counts: a cut at a line boundary is a valid shorter file; see the fuzz harness.)"""
    g = _geom().replace(cell_fields={}) if ext in (".ply", ".off", ".obj", ".stl") else _geom()
    if ext == ".pts":
        g = g.replace(cells={}, cell_fields={})
    good = tmp_path / f"g{ext}"
    geoop.write(g, good)
    data = good.read_bytes()
    for frac in (0.5, 0.9):
        bad = tmp_path / f"cut{int(frac * 10)}{ext}"
        bad.write_bytes(data[: int(len(data) * frac)])
        _expect(bad)


# ============================================================================ 5. non-finite values
def _poison(data: bytes, value: float, new: float) -> bytes:
    """Replace every binary (float32/64, both byte orders) and text form of ``value``."""
    out = data
    for fmt in ("<f", ">f", "<d", ">d"):
        out = out.replace(struct.pack(fmt, value), struct.pack(fmt, new))
    text = {float("nan"): b"nan", float("inf"): b"inf"}.get(new, str(new).encode()) if new == new else b"nan"
    out = re.sub(rb"(?<![\d.])" + re.escape(repr(value).encode()) + rb"0*(?![\d.])", text, out)
    assert out != data, "sentinel not found"
    return out


def _appended_raw(mesh, path):
    """A VTK XML file with raw (unencoded, uncompressed) appended data, as ParaView writes."""
    import vtk

    w = vtk.vtkXMLUnstructuredGridWriter() if isinstance(mesh, pv.UnstructuredGrid) else vtk.vtkXMLPolyDataWriter()
    w.SetFileName(str(path))
    w.SetInputData(mesh)
    w.SetDataModeToAppended()
    w.EncodeAppendedDataOff()
    w.SetCompressorTypeToNone()
    w.Write()


def _poison_array(a: np.ndarray, new: float) -> np.ndarray:
    a = a.copy()
    assert (a == SENTINEL).sum() == 1
    a[a == SENTINEL] = new
    return a


def _written(tmp_path, ext, g, binary=True):
    p = tmp_path / f"good{ext}"
    if ext in (".vtp", ".vtu", ".vtk"):
        m = g.to_pyvista()
        if ext == ".vtu":
            m = m.cast_to_unstructured_grid()
        if binary and ext != ".vtk":
            _appended_raw(m, p)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m.save(p, binary=binary)
    else:
        geoop.write(g, p)
    return p.read_bytes()


NONFINITE_COORD_FORMATS = [(".vtp", False), (".vtp", True), (".vtu", True), (".vtk", False), (".vtk", True),
                           (".stl", False), (".stl", True), (".ply", True), (".ply", False), (".obj", False),
                           (".off", False), (".msh", True), (".xyz", False), (".pts", False), (".pcd", True),
                           (".npz", True)]


@pytest.mark.parametrize("ext,binary", NONFINITE_COORD_FORMATS)
@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_nonfinite_coordinates(tmp_path, ext, binary, bad_value):
    if ext == ".pcd" and not available("open3d"):
        pytest.skip("open3d not installed")
    g = _geom()
    if ext in (".stl", ".obj", ".off", ".ply"):
        g = g.replace(fields={}, cell_fields={})
    if ext in (".xyz", ".pts", ".pcd"):
        g = g.replace(cells={}, cell_fields={}, fields={})
    if ext == ".stl" and not binary:
        import trimesh

        data = trimesh.Trimesh(g.points.numpy(), g.faces.numpy(), process=False).export(file_type="stl_ascii")
        data = data.encode() if isinstance(data, str) else data
    elif ext == ".ply" and not binary:
        data = (b"ply\nformat ascii 1.0\nelement vertex 4\nproperty double x\nproperty double y\nproperty double z\n"
                b"element face 2\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n"
                b"1 0.8125 0\n3 0 1 2\n3 1 3 2\n")
    else:
        data = _written(tmp_path, ext, g, binary) if ext != ".npz" else None
    bad = tmp_path / f"bad{ext}"
    if ext == ".npz":  # zip entries carry a CRC: write the poisoned arrays themselves
        np.savez(bad, points=_poison_array(g.points.numpy(), bad_value), **{"cells/triangle": g.faces.numpy()})
    else:
        bad.write_bytes(_poison(data, SENTINEL, bad_value))
    if ext == ".stl":  # the class that got through: trimesh's processing drops the triangle
        import trimesh

        m = trimesh.load(str(bad), process=True, force="mesh")
        assert np.isfinite(m.vertices).all() and len(m.faces) == 1
    _expect(bad, "NaN/Inf", "points")
    with pytest.warns(UserWarning, match=f"dropped 1 of {6 if ext == '.stl' else 4} points"):
        r = geoop.read(bad, on_nonfinite="drop")
    assert r.n_points == 3 and torch.isfinite(r.points).all()
    if "triangle" in r.cells:  # the triangle using the bad point went with it
        assert r.cells["triangle"].tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("ext,binary", [(".vtp", False), (".vtu", True), (".vtk", True), (".ply", True),
                                        (".msh", True), (".npz", True)])
def test_nonfinite_field_values(tmp_path, ext, binary):
    g = _geom().replace(points=_geom().points.clone().fill_(0) + torch.eye(4, 3, dtype=torch.float64))
    g = g.replace(fields={"p": torch.tensor([10.0, SENTINEL, 12, 13], dtype=torch.float64)}, cell_fields={})
    bad = tmp_path / f"bad{ext}"
    if ext == ".npz":
        np.savez(bad, points=g.points.numpy(), **{"cells/triangle": g.faces.numpy(),
                                                  "fields/p": _poison_array(g.fields["p"].numpy(), float("nan"))})
    else:
        bad.write_bytes(_poison(_written(tmp_path, ext, g, binary), SENTINEL, float("nan")))
    _expect(bad, "field 'p'", "NaN/Inf")
    with pytest.warns(UserWarning, match="dropped 1 of 4 points"):
        r = geoop.read(bad, on_nonfinite="drop")
    assert r.fields["p"].flatten().tolist() == [10.0, 12.0, 13.0]


def test_read_option_values_are_checked(tmp_path):
    p = tmp_path / "ok.xyz"
    p.write_text("0 0 0\n1 1 1\n")
    with pytest.raises(ValueError, match="on_nonfinite"):
        geoop.read(p, on_nonfinite="ignore")
    with pytest.raises(ValueError, match="on_unknown_cells"):
        geoop.read(p, on_unknown_cells="keep")


@pytest.mark.parametrize("ext", [".vtu", ".vtp", ".vtk", ".ply", ".msh", ".npz", ".stl", ".obj", ".off"])
def test_valid_files_still_read_exactly(tmp_path, ext):
    """The strict checks accept what geoop (and pyvista, binary and ascii) writes."""
    g = _geom()
    if ext in (".stl", ".obj", ".off"):
        g = g.replace(fields={}, cell_fields={})
    p = tmp_path / f"g{ext}"
    geoop.write(g, p)
    r = geoop.read(p)
    torch.testing.assert_close(r.points.double(), g.points, atol=1e-6, rtol=0)
    if ext not in (".stl", ".obj", ".off"):
        torch.testing.assert_close(r.fields["p"].double().flatten(), g.fields["p"].flatten())
    if ext in (".vtu", ".vtp", ".vtk"):
        m = _pv_mesh(7)
        for binary in (False, True):
            q = tmp_path / f"pv{int(binary)}{ext}"
            _save(m if ext != ".vtu" else m.cast_to_unstructured_grid(), q, binary)
            r = geoop.read(q)
            assert r.n_points == 7 and r.cell_fields["c"].shape[0] == 5


# ============================================================================ fuzzer findings
def test_legacy_vtk_decreasing_offset_is_an_error_not_a_crash(tmp_path):
    """Found by tests/test_fuzz_readers.py: one flipped bit in a binary OFFSETS array made
    VTK's triangle filter read out of bounds (SIGSEGV)."""
    m = _pv_mesh(8)
    data = _save(m, tmp_path / "g.vtk", True)
    i = data.index(b"OFFSETS vtktypeint64\n") + len(b"OFFSETS vtktypeint64\n")
    off = np.frombuffer(data[i:i + 8 * 7], dtype=">i8").copy()
    off[3] += 1 << 40
    bad = tmp_path / "bad.vtk"
    bad.write_bytes(data[:i] + off.astype(">i8").tobytes() + data[i + 8 * 7:])
    _expect(bad, "offsets must start at 0, never decrease")


@pytest.mark.skipif(not available("open3d"), reason="open3d not installed")
def test_pcd_partial_normals_is_an_error_not_a_crash(tmp_path):
    """Found by the fuzzer: open3d crashes (SIGSEGV) on normal_y/normal_z without normal_x."""
    p = tmp_path / "n.pcd"
    p.write_text("VERSION 0.7\nFIELDS x y z oormal_x normal_y normal_z\nSIZE 4 4 4 4 4 4\nTYPE F F F F F F\n"
                 "COUNT 1 1 1 1 1 1\nWIDTH 1\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 1\nDATA ascii\n0 0 0 0 0 1\n")
    _expect(p, "normal_x, normal_y, normal_z must come together")


def test_vtk_xml_every_writer_mode_still_reads():
    """The array-length checks follow VTK's own encodings: ascii, inline binary, appended
    raw or base64, every compressor, 32/64-bit headers, several pieces per file."""
    import itertools
    import tempfile

    import vtk

    m = _pv_mesh(9)
    m.point_data["v"] = np.random.default_rng(0).random((9, 3))
    u = m.cast_to_unstructured_grid()
    with tempfile.TemporaryDirectory() as tmp:
        for mesh, W, ext in ((m, vtk.vtkXMLPolyDataWriter, "vtp"), (u, vtk.vtkXMLUnstructuredGridWriter, "vtu")):
            for mode, comp, enc, ht, pieces in itertools.product(["ascii", "binary", "appended"],
                                                                 ["None", "ZLib", "LZ4", "LZMA"], [True, False],
                                                                 ["UInt32", "UInt64"], [1, 2]):
                if (mode == "ascii" and (comp != "None" or not enc or ht != "UInt32")) or (mode == "binary" and not enc):
                    continue
                w = W()
                path = f"{tmp}/w_{mode}_{comp}_{enc}_{ht}_{pieces}.{ext}"
                w.SetFileName(path)
                w.SetInputData(mesh)
                getattr(w, f"SetDataModeTo{mode.capitalize()}")()
                getattr(w, f"SetCompressorTypeTo{comp}")()
                w.SetEncodeAppendedData(enc)
                getattr(w, f"SetHeaderTypeTo{ht}")()
                w.SetNumberOfPieces(pieces)
                w.Write()
                g = geoop.read(path)
                assert g.fields["p"].flatten().tolist()[:9] == list(np.arange(9.0) + 10), path
                assert g.fields["v"].shape[1] == 3 and g.cell_fields["c"].shape[0] == g.n_cells, path


def test_counts_must_match_exactly(tmp_path):
    """Rows beyond a declared count, or a file cut at a row boundary, are not a valid
    shorter file when the format declares counts (OFF, PCD, ascii STL's closing line)."""
    cases = {
        "extra_vertex.off": "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n1 1 0\n3 0 1 2\n",  # trimesh reads '1 1 0' as a face
        "extra_face.off": "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 0 2 1\n",
        "cut_facet.stl": "solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\nvertex 0 1 0\n"
                         "endloop\nendfacet\n",
    }
    if available("open3d"):
        hdr = ("VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 1\n"
               "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS 2\nDATA ascii\n")
        cases["extra_rows.pcd"] = hdr + "0 0 0\n1 1 1\n2 2 2\n"
    for name, text in cases.items():
        p = tmp_path / name
        p.write_text(text)
        _expect(p)
    ok = tmp_path / "comments.off"
    ok.write_text("OFF\n# a comment\n3 1 0\n0 0 0\n1 0 0\n\n0 1 0\n3 0 1 2\n")
    assert geoop.read(ok).n_points == 3


def test_legacy_vtk_garbled_version_is_an_error_not_a_crash(tmp_path):
    """Found by the fuzzer: 'Version 5/1' (one flipped bit) made VTK read a 5.1 file with
    the older layout and crash."""
    data = _save(_pv_mesh(8), tmp_path / "g.vtk", True)
    bad = tmp_path / "bad.vtk"
    bad.write_bytes(data.replace(b"Version 5.1", b"Version 5/1", 1))
    _expect(bad, "Version X.Y")


def test_msh_absurd_tag_count_is_an_error_not_a_hang(tmp_path):
    """Found by the fuzzer: a $NodeData tag count of 10^9 kept meshio reading for minutes."""
    good = tmp_path / "g.msh"
    geoop.write(_geom().replace(cell_fields={}), good)
    data = good.read_bytes()
    i = data.index(b"$NodeData\n1\n") + len(b"$NodeData\n")
    for new in (b"1000000000", b"x"):
        bad = tmp_path / "bad.msh"
        bad.write_bytes(data[:i] + new + data[i + 1:])
        _expect(bad, "string tags")
    j = data.index(b"$Nodes\n") + len(b"$Nodes\n")
    bad.write_bytes(data[:j] + b"4000000000" + data[j + 1:])
    _expect(bad, r"\$Nodes declares 4000000000 entries")


def test_cut_at_a_section_boundary_or_inside_the_last_number(tmp_path):
    """Found by the fuzzer (read OK, but with fields or cells missing): legacy VTK cut
    inside the last number of a section, or inside a METADATA block; and the siblings in
    ascii PLY / OFF, whose writers end every line."""
    m = _pv_mesh(8)
    data = _save(m, tmp_path / "g.vtk", False)
    x = data.index(b"POLYGONS")
    block = b"METADATA\nINFORMATION 1\nNAME L2_NORM_RANGE LOCATION vtkDataArray\nDATA 2 1 1\n\n"
    with_meta = tmp_path / "meta.vtk"
    with_meta.write_bytes(data[:x] + block + data[x:])
    assert geoop.read(with_meta).n_points == 8  # the complete file is valid
    cases = {"number.vtk": data[:x].rstrip()[:-1], "metadata.vtk": data[:x] + block[:30]}
    good = tmp_path / "g.off"
    geoop.write(_geom().replace(fields={}, cell_fields={}), good)
    cases["number.off"] = good.read_bytes().rstrip(b"\n")[:-1]
    ply = b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n" \
          b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2"
    cases["number.ply"] = ply[:-1] + b"1"  # '3 0 1 1' cut from '3 0 1 12'
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        _expect(p, "newline|METADATA|truncated")


def test_appended_arrays_may_not_share_data(tmp_path):
    """Found by the fuzzer: an edited offset made one array read another's bytes."""
    m = _pv_mesh(6).cast_to_unstructured_grid()
    m.point_data["q"] = np.arange(6.0) * 2
    path = tmp_path / "a.vtu"
    _appended_raw(m, path)
    data = path.read_bytes()
    offs = re.findall(rb'Name="(\w+)"[^>]*offset="(\d+)"', data)
    (pn, po), (qn, qo) = [(n, o) for n, o in offs if n in (b"p", b"q")]
    tag = data.index(b'Name="' + qn + b'"')
    i = data.index(b'offset="' + qo + b'"', tag)
    bad = tmp_path / "bad.vtu"
    bad.write_bytes(data[:i] + b'offset="' + po + b'"' + data[i + len(b'offset="' + qo + b'"'):])
    _expect(bad, "is also the offset of array")


@pytest.mark.skipif(not available("open3d"), reason="open3d not installed")
def test_pcd_binary_bytes_beyond_the_points(tmp_path):
    good = tmp_path / "g.pcd"
    geoop.write(Geometry(torch.rand(5, 3, dtype=torch.float64)), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.pcd"
    bad.write_bytes(data + data[-24:])
    _expect(bad, "POINTS=5")
