"""Polyhedral cells (VTK_POLYHEDRON): read from VTU (both VTK layouts) and legacy VTK,
exact volumes and centroids, quadrature weights, cell-to-point averages, bad faces.

The reference mesh is the unit cube on a 0.25 grid: one octant of 8 hexahedra and 7
octant-sized polyhedra whose sides are split into 4 quads where they meet (the hanging
nodes snappyHexMesh leaves at a refinement-level change), plus one octant-sized polyhedron
split into two prisms-with-hanging-nodes by a diagonal plane. Interior points are moved at
random, so most faces are not planar: the cell volumes must still add up to 1 and the
volume-weighted centroids to the cube's centre, both exactly (1e-12).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import geoop
from geoop import Geometry, GeometryReadError
from geoop.errors import ShapeError
from geoop.geometry.polyhedra import Polyhedra

pv = pytest.importorskip("pyvista")
pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("float64")]

H = 4  # fine cells per side


def _pid(i, j, k):
    return (i * (H + 1) + j) * (H + 1) + k


def _box_faces(lo, hi):
    """Outward fine quads covering the sides of the box [lo, hi) (grid units)."""
    faces = []
    for ax in range(3):
        a1, a2 = [a for a in range(3) if a != ax]
        for side, coord in ((0, lo[ax]), (1, hi[ax])):
            for u in range(lo[a1], hi[a1]):
                for v in range(lo[a2], hi[a2]):
                    q = []
                    for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
                        idx = [0, 0, 0]
                        idx[ax], idx[a1], idx[a2] = coord, u + du, v + dv
                        q.append(_pid(*idx))
                    # (a1, a2, ax) right-handed for ax = 0, 2 and left-handed for ax = 1
                    outward = (side == 1) == (ax != 1)
                    faces.append(q if outward else q[::-1])
    return faces


def cube_mesh(jitter: float = 0.06, seed: int = 0):
    """(points, hexahedra, list of polyhedra as face lists) of the split unit cube."""
    g = np.stack(np.meshgrid(*[np.arange(H + 1)] * 3, indexing="ij"), -1).reshape(-1, 3) / H
    rng = np.random.default_rng(seed)
    inner = ((g > 0) & (g < 1)).all(1)
    pts = g.copy()
    pts[inner] += rng.uniform(-jitter, jitter, (int(inner.sum()), 3))
    hexes, polys = [], []
    for i, j, k in itertools.product(range(2), repeat=3):  # the refined octant [0, 0.5)^3
        hexes.append([_pid(i, j, k), _pid(i + 1, j, k), _pid(i + 1, j + 1, k), _pid(i, j + 1, k),
                      _pid(i, j, k + 1), _pid(i + 1, j, k + 1), _pid(i + 1, j + 1, k + 1), _pid(i, j + 1, k + 1)])
    for o in itertools.product(range(2), repeat=3):
        if o == (0, 0, 0):
            continue
        lo = [2 * x for x in o]
        hi = [x + 2 for x in lo]
        if o == (1, 1, 1):  # split along the plane x = y: two prisms with hanging nodes
            polys += _split_diagonal(lo, hi)
        else:
            polys.append(_box_faces(lo, hi))
    # conforming: the octant below the split one has the same two triangles where the
    # diagonal cuts the quads of their shared side
    tris = [f for cell in polys[-2:] for f in cell if len(f) == 3 and all(p % (H + 1) == H // 2 for p in f)]
    below = polys[-3]  # octant (1, 1, 0)
    for t1, t2 in itertools.combinations(tris, 2):
        quad = set(t1) | set(t2)
        for n, f in enumerate(below):
            if len(f) == 4 and set(f) == quad:
                below[n:n + 1] = [t1[::-1], t2[::-1]]
                break
    return pts, np.array(hexes), polys


def _split_diagonal(lo, hi):
    """The box split by the plane x - lo_x = y - lo_y into two closed polyhedra."""
    out = []
    for keep in (lambda u, v: u >= v, lambda u, v: u <= v):
        faces = []
        for f in _box_faces(lo, hi):
            # the quads of the sides x = const / y = const / z = const lying in this half
            cs = [np.array(np.unravel_index(p, (H + 1,) * 3)) for p in f]
            c = np.mean(cs, 0)
            u, v = c[0] - lo[0], c[1] - lo[1]
            if abs(u - v) < 1e-9:  # a z-quad cut by the diagonal: split into two triangles
                tri = [p for p, x in zip(f, cs) if keep(x[0] - lo[0], x[1] - lo[1])]
                faces.append(tri)
            elif keep(u, v):
                faces.append(f)
        # the diagonal plane itself: quads between the diagonal points, oriented outward
        d = []
        for t in range(hi[0] - lo[0]):
            for s in range(hi[2] - lo[2]):
                a, b = _pid(lo[0] + t, lo[1] + t, lo[2] + s), _pid(lo[0] + t + 1, lo[1] + t + 1, lo[2] + s)
                c_, e = _pid(lo[0] + t + 1, lo[1] + t + 1, lo[2] + s + 1), _pid(lo[0] + t, lo[1] + t, lo[2] + s + 1)
                d.append([a, b, c_, e])
        first = keep(1, 0)  # the half x > y: the plane's outward normal is (-1, 1, 0)
        faces += [q[::-1] if first else q for q in d]
        out.append(faces)
    return out


def _grid(pts, hexes, polys):
    """A pyvista UnstructuredGrid built with VTK's legacy polyhedron face stream."""
    cells, types = [], []
    for h in hexes:
        cells += [8, *h]
        types.append(pv.CellType.HEXAHEDRON)
    for faces in polys:
        stream = [len(faces)] + [x for f in faces for x in (len(f), *f)]
        cells += [len(stream), *stream]
        types.append(pv.CellType.POLYHEDRON)
    return pv.UnstructuredGrid(np.array(cells), np.array(types, np.uint8), pts)


def _geometry(pts, hexes, polys):
    fp, fo, co = [], [0], [0]
    for faces in polys:
        for f in faces:
            fp += f
            fo.append(len(fp))
        co.append(len(fo) - 1)
    return Geometry(pts, cells={"hexahedron": hexes}, polyhedra=Polyhedra(fp, fo, co),
                    cell_fields={"cid": np.arange(len(hexes) + len(polys), dtype=float)})


def _first_moment(g):
    vol = g.cell_measures()
    cen = g.cell_centroids()
    return sum((vol[k][:, None] * cen[k]).sum(0) for k in vol), sum(v.sum() for v in vol.values())


@pytest.mark.parametrize("ext", [".vtu", ".vtk", ".npz"])
def test_split_cube_total_weight_is_one(tmp_path, ext):
    pts, hexes, polys = cube_mesh()
    path = tmp_path / f"cube{ext}"
    if ext == ".npz":
        geoop.write(_geometry(pts, hexes, polys), path)
    else:
        _grid(pts, hexes, polys).save(path, binary=ext == ".vtu")  # legacy: ascii
    g = geoop.read(path)
    assert g.polyhedra is not None and g.polyhedra.n_cells == 8 and g.cells["hexahedron"].shape == (8, 8)
    assert g.n_cells == 16 and g.topological_dim == 3
    assert abs(float(g.weights.sum()) - 1.0) < 1e-12
    m, vol = _first_moment(g)
    assert abs(float(vol) - 1.0) < 1e-12
    torch.testing.assert_close(m, torch.full((3,), 0.5), rtol=0, atol=1e-12)


def test_polyhedra_write_read_round_trip(tmp_path):
    pts, hexes, polys = cube_mesh()
    g = _geometry(pts, hexes, polys)
    for ext in (".vtu", ".vtk", ".npz"):
        r = geoop.read(geoop.write(g, tmp_path / f"rt{ext}"))
        assert torch.equal(r.polyhedra.face_points, g.polyhedra.face_points)
        assert torch.equal(r.polyhedra.cell_offsets, g.polyhedra.cell_offsets)
        torch.testing.assert_close(r.cell_fields["cid"], g.cell_fields["cid"])
        torch.testing.assert_close(r.weights, g.weights, rtol=0, atol=1e-15)


def test_volumes_match_convex_hull_and_vtk_on_convex_cells():
    """Unperturbed cells are convex: scipy's hull volume and VTK's cell size agree."""
    from scipy.spatial import ConvexHull

    pts, hexes, polys = cube_mesh(jitter=0.0)
    g = _geometry(pts, hexes, polys)
    vol = g.cell_measures()["polyhedron"].numpy()
    hull = [ConvexHull(pts[sorted({p for f in faces for p in f})]).volume for faces in polys]
    np.testing.assert_allclose(vol, hull, rtol=1e-12)
    vtk = np.asarray(_grid(pts, hexes, polys).compute_cell_sizes()["Volume"])[len(hexes):]
    np.testing.assert_allclose(vol, vtk, rtol=1e-9)
    # centroid of a box is its centre; of a half box split on x = y, the prism's centroid
    cen = g.cell_centroids()["polyhedron"].numpy()
    np.testing.assert_allclose(cen[0], [0.25, 0.25, 0.75], atol=1e-14)


def test_warped_cells_against_fine_tetrahedra():
    """Non-convex, non-planar cells: the volume and centroid of each polyhedron equal those
    of an independent decomposition into tetrahedra (cell centroid, face centroid, edge)."""
    pts, hexes, polys = cube_mesh(jitter=0.1, seed=3)
    g = _geometry(pts, hexes, polys)
    vol = g.cell_measures()["polyhedron"].numpy()
    cen = g.cell_centroids()["polyhedron"].numpy()
    for i, faces in enumerate(polys):
        apex = pts[sorted({p for f in faces for p in f})[0]]  # another reference point
        v_sum, m_sum = 0.0, np.zeros(3)
        for f in faces:
            c = pts[f].mean(0)
            for a, b in zip(f, f[1:] + f[:1]):
                v = np.dot(pts[a] - apex, np.cross(pts[b] - apex, c - apex)) / 6
                v_sum += v
                m_sum += v * (apex + pts[a] + pts[b] + c) / 4
        assert vol[i] == pytest.approx(abs(v_sum), rel=1e-12)
        np.testing.assert_allclose(cen[i], m_sum / v_sum, atol=1e-12)


def test_frustum_volume_and_centroid_are_exact():
    """A square frustum (planar faces, not an affine hexahedron): V = h/3 (a^2 + ab + b^2),
    centroid height h (a^2 + 2ab + 3b^2) / (4 (a^2 + ab + b^2)), as a hexahedron and as a
    polyhedron."""
    a, b, h = 2.0, 1.0, 1.5
    pts = torch.tensor([[-a / 2, -a / 2, 0], [a / 2, -a / 2, 0], [a / 2, a / 2, 0], [-a / 2, a / 2, 0],
                        [-b / 2, -b / 2, h], [b / 2, -b / 2, h], [b / 2, b / 2, h], [-b / 2, b / 2, h]])
    faces = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]
    poly = Polyhedra([x for f in faces for x in f], np.arange(0, 25, 4), [0, 6])
    zc = h * (a * a + 2 * a * b + 3 * b * b) / (4 * (a * a + a * b + b * b))
    for g, key in ((Geometry(pts, cells={"hexahedron": torch.arange(8)[None]}), "hexahedron"),
                   (Geometry(pts, polyhedra=poly), "polyhedron")):
        assert float(g.cell_measures()[key][0]) == pytest.approx(h / 3 * (a * a + a * b + b * b), rel=1e-14)
        torch.testing.assert_close(g.cell_centroids()[key][0], torch.tensor([0.0, 0.0, zc]), rtol=0, atol=1e-14)


def test_cell_to_point_counts_each_polyhedron_once():
    pts, hexes, polys = cube_mesh()
    g = _geometry(pts, hexes, polys).cell_data_to_point_data(["cid"])
    # the corner (1, 1, 0) touches only octant (1, 1, 0) (cell 13); the centre point
    # touches every cell but the 7 small hexahedra away from it: ids 7..15
    assert float(g.fields["cid"][_pid(H, H, 0)]) == 13.0
    centre = float(g.fields["cid"][_pid(H // 2, H // 2, H // 2)])
    assert centre == pytest.approx(np.mean(range(7, 16)))
    # weights: each polyhedron's volume split equally among its distinct points
    w = g.weights
    corner = float(w[_pid(H, H, 0)])
    vol = g.cell_measures()["polyhedron"]
    n_pts = len({p for f in polys[5] for p in f})
    assert corner == pytest.approx(float(vol[5]) / n_pts, rel=1e-12)


def test_old_xml_layout_faces_faceoffsets(tmp_path):
    """VTU with the pre-9.4 polyhedron arrays 'faces'/'faceoffsets' (what foamToVTK
    writes), single-quoted attributes: one unit cube as a 6-face polyhedron."""
    corners = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]
    faces = [[0, 3, 2, 1], [4, 5, 6, 7], [0, 1, 5, 4], [1, 2, 6, 5], [2, 3, 7, 6], [3, 0, 4, 7]]
    stream = [6] + [x for f in faces for x in (4, *f)]
    text = f"""<?xml version='1.0'?>
<VTKFile type='UnstructuredGrid' version='1.0' byte_order='LittleEndian' header_type='UInt64'>
<UnstructuredGrid><Piece NumberOfPoints='8' NumberOfCells='1'>
<Points><DataArray type='Float64' NumberOfComponents='3' format='ascii'>
{' '.join(str(x) for c in corners for x in c)}
</DataArray></Points>
<Cells>
<DataArray type='Int64' Name='connectivity' format='ascii'>0 1 2 3 4 5 6 7</DataArray>
<DataArray type='Int64' Name='offsets' format='ascii'>8</DataArray>
<DataArray type='UInt8' Name='types' format='ascii'>42</DataArray>
<DataArray type='Int64' Name='faces' format='ascii'>{' '.join(map(str, stream))}</DataArray>
<DataArray type='Int64' Name='faceoffsets' format='ascii'>{len(stream)}</DataArray>
</Cells>
<CellData><DataArray type='Float64' Name='p' format='ascii'>3.5</DataArray></CellData>
</Piece></UnstructuredGrid></VTKFile>
"""
    path = tmp_path / "old.vtu"
    path.write_text(text)
    g = geoop.read(path)
    assert g.polyhedra.n_cells == 1 and float(g.weights.sum()) == pytest.approx(1.0, abs=1e-14)
    torch.testing.assert_close(g.fields["p"], torch.full((8, 1), 3.5))
    # a wrong count in a single-quoted attribute is caught before VTK reads it
    path.write_text(text.replace("NumberOfPoints='8'", "NumberOfPoints='9'"))
    with pytest.raises(GeometryReadError, match="9"):
        geoop.read(path)


def _bad_cube_file(tmp_path, edit, name):
    pts, hexes, polys = cube_mesh(jitter=0.0)
    polys = [list(map(list, p)) for p in polys]
    edit(polys)
    path = tmp_path / name
    _grid(pts, hexes, polys).save(path)
    return path


@pytest.mark.parametrize("name", ["open.vtu", "open.vtk"])
def test_open_polyhedron_is_an_error_naming_the_cell(tmp_path, name):
    path = _bad_cube_file(tmp_path, lambda polys: polys[2].pop(5), name)
    with pytest.raises(GeometryReadError, match=rf"{name}.*polyhedron cell 2 is open: edge"):
        geoop.read(path)


def test_flipped_face_is_an_error_naming_the_cell(tmp_path):
    def flip(polys):
        polys[4][7] = polys[4][7][::-1]

    path = _bad_cube_file(tmp_path, flip, "flip.vtu")
    with pytest.raises(GeometryReadError, match=r"flip.vtu.*polyhedron cell 4 has inconsistently oriented faces"):
        geoop.read(path)


def test_polyhedra_constructor_checks():
    with pytest.raises(ShapeError, match="face_offsets must end"):
        Polyhedra([0, 1, 2, 3], [0, 3], [0, 1])
    with pytest.raises(ShapeError, match="cell_offsets must end"):
        Polyhedra([0, 1, 2], [0, 3], [0, 2])
    tet = Polyhedra([0, 2, 1, 0, 1, 3, 1, 2, 3, 0, 3, 2], [0, 3, 6, 9, 12], [0, 4])
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    g = Geometry(pts, polyhedra=tet)
    assert float(g.weights.sum()) == pytest.approx(1 / 6, rel=1e-14)
    with pytest.raises(ShapeError, match=r"polyhedron cell 0: point ids must be in \[0, 2\]"):
        Geometry(pts[:3], polyhedra=tet)


def test_nonfinite_drop_removes_polyhedra_using_the_point(tmp_path):
    pts, hexes, polys = cube_mesh(jitter=0.0)
    pts = pts.copy()
    pts[_pid(H, 0, H)] = np.nan  # only octant (1, 0, 1) uses it
    path = tmp_path / "nan.vtu"
    _grid(pts, hexes, polys).save(path)
    with pytest.warns(UserWarning, match="dropped 1 of 125 points and 1 of 16 cells"):
        g = geoop.read(path, on_nonfinite="drop")
    assert g.polyhedra.n_cells == 7 and g.n_points == 124


def test_formats_without_polyhedra_refuse_to_write(tmp_path):
    pts, hexes, polys = cube_mesh()
    g = _geometry(pts, hexes, polys)
    for ext in (".msh", ".vtp", ".ply"):
        with pytest.raises(geoop.GeometryWriteError, match="polyhedral cells"):
            geoop.write(g, tmp_path / f"x{ext}")
        assert not (tmp_path / f"x{ext}").exists()


def test_sdf_of_a_polyhedral_volume_mesh():
    """The boundary of the split cube (from VTK's surface of the polyhedral grid) is the
    cube: signed distances of a few points are exact."""
    pts, hexes, polys = cube_mesh(jitter=0.0)
    g = _geometry(pts, hexes, polys)
    q = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 1.5], [0.9, 0.2, 0.5]])
    torch.testing.assert_close(g.sdf(q), torch.tensor([-0.5, 0.5, -0.1]), rtol=0, atol=1e-6)
