"""Geometry measures, normals, transforms, cell->point, SDF and surface sampling."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from geoop import ConfigError, Geometry, ShapeError
from geoop._optional import available
from geoop.errors import UnsignedSDFWarning
from geoop.geometry.sdf import inside_polygon, is_watertight, sdf, segment_distance


def icosphere(sub: int, r: float = 1.0) -> Geometry:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=sub, radius=r)
    return Geometry(torch.tensor(s.vertices), torch.tensor(s.faces))


def unit_cube_hexes(n: int) -> Geometry:
    """[0, 1]^3 split into n^3 hexahedra (VTK node order)."""
    x = np.linspace(0, 1, n + 1)
    pts = np.array([[a, b, c] for c in x for b in x for a in x])
    idx = lambda i, j, k: i + (n + 1) * (j + (n + 1) * k)  # noqa: E731
    hexes = [[idx(i, j, k), idx(i + 1, j, k), idx(i + 1, j + 1, k), idx(i, j + 1, k),
              idx(i, j, k + 1), idx(i + 1, j, k + 1), idx(i + 1, j + 1, k + 1), idx(i, j + 1, k + 1)]
             for k in range(n) for j in range(n) for i in range(n)]
    return Geometry(torch.tensor(pts), cells={"hexahedron": torch.tensor(hexes)})


def circle(n: int, r: float = 1.0) -> Geometry:
    th = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    pts = r * torch.stack([th.cos(), th.sin()], 1)
    seg = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n], 1)
    return Geometry(pts, seg)


# ----------------------------------------------------------------------------- measures
def test_sphere_vertex_weights_converge_to_area():
    errs = [abs(float(icosphere(s).weights.sum()) - 4 * math.pi) for s in (1, 2, 3, 4)]
    assert all(b < a / 3 for a, b in zip(errs, errs[1:]))  # O(h^2): ~4x per refinement
    assert errs[-1] < 0.005 * 4 * math.pi


def test_dual_volumes_sum_to_volume():
    g = unit_cube_hexes(3)
    w = g.weights
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=w.dtype))
    assert torch.isclose(w[0], torch.tensor(1 / 27 / 8, dtype=w.dtype))  # a corner: 1/8 of one cell
    # tetrahedra of the convex hull of random points: volume of the hull (scipy reference)
    from scipy.spatial import ConvexHull, Delaunay

    pts = np.random.default_rng(0).normal(size=(60, 3))
    tets = Delaunay(pts).simplices
    tg = Geometry(torch.tensor(pts), cells={"tetra": torch.tensor(tets)})
    assert math.isclose(float(tg.weights.sum()), ConvexHull(pts).volume, rel_tol=1e-10)


def test_polyline_weights_are_length():
    g = circle(64)
    assert math.isclose(float(g.weights.sum()), 64 * 2 * math.sin(math.pi / 64), rel_tol=1e-12)


def test_sphere_normals_point_outward():
    g = icosphere(2).compute_normals()
    n, p = g.normals, g.points
    torch.testing.assert_close(n.norm(dim=1), torch.ones(g.n_points, dtype=n.dtype))
    cos = (n * p).sum(1) / p.norm(dim=1)
    assert float(cos.min()) > 0.99


# ----------------------------------------------------------------------------- transforms
def _snapshot(g: Geometry) -> dict:
    d = {"points": g.points.clone(), "cells": {k: v.clone() for k, v in g.cells.items()},
         "fields": {k: v.clone() for k, v in g.fields.items()}}
    if g.normals is not None:
        d["normals"] = g.normals.clone()
    return d


def _same(g: Geometry, snap: dict) -> bool:
    ok = torch.equal(g.points, snap["points"]) and all(torch.equal(g.cells[k], v) for k, v in snap["cells"].items())
    ok = ok and set(g.fields) == set(snap["fields"]) and all(torch.equal(g.fields[k], v) for k, v in snap["fields"].items())
    return ok and ("normals" not in snap or torch.equal(g.normals, snap["normals"]))


def test_normalized_round_trip_and_input_untouched():
    g = icosphere(2, r=3.0).compute_normals()
    g = g.replace(points=g.points * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) + 7.0)
    g = g.with_fields(p=g.points[:, 0])
    snap = _snapshot(g)
    area = float(g.weights.sum())
    for iso in (True, False):
        n, t = g.normalized(isotropic=iso, margin=0.05)
        lo, hi = n.bounds
        assert float(lo.min()) >= 0.05 - 1e-9 and float(hi.max()) <= 0.95 + 1e-9
        torch.testing.assert_close(t.inverse(n.points), g.points)
        torch.testing.assert_close(t.inverse_geometry(n).points, g.points)
        if iso:  # surface weights scale by the squared (isotropic) scale
            s = float(t.scale[0])
            assert math.isclose(float(n.weights.sum()) * s * s, area, rel_tol=1e-9)
    g.sample_surface(50, seed=0)
    g.cell_data_to_point_data()
    g.select(torch.arange(5))
    g.with_fields(q=torch.zeros(g.n_points))
    sdf(g, torch.zeros(3, 3))
    assert _same(g, snap)


def test_flat_2d_mesh_normalizes_without_division_by_zero():
    pts = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [4.0, 2.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    g = Geometry(pts, torch.tensor([[0, 1, 2], [0, 2, 3]]))
    assert g.is_2d
    g.weights  # computed before the transform: normalized() must rescale them
    for iso, area in ((True, 0.5), (False, 1.0)):  # 4 x 2 -> 1 x 0.5, or -> 1 x 1
        n, t = g.normalized(isotropic=iso)
        assert torch.isfinite(n.points).all() and torch.all(n.points[:, 2] == 0)
        torch.testing.assert_close(t.inverse(n.points), pts)
        assert math.isclose(float(n.weights.sum()), area, rel_tol=1e-12)


def test_cell_to_point_known_case():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = Geometry(pts, torch.tensor([[0, 1, 2], [1, 3, 2]]), cell_fields={"p": torch.tensor([1.0, 3.0])})
    out = g.cell_data_to_point_data()
    torch.testing.assert_close(out.fields["p"][:, 0], torch.tensor([1.0, 2.0, 2.0, 3.0]))
    assert "p" not in g.fields  # input untouched


# ----------------------------------------------------------------------------- SDF
def _sphere_queries(n: int = 64):
    rng = np.random.default_rng(1)
    q = torch.tensor(rng.uniform(-1.5, 1.5, size=(n, 3)))
    return q[(q.norm(dim=1) - 1).abs() > 0.05]  # keep clear of the polyhedral error band


@pytest.mark.parametrize("backend", ["open3d", "trimesh"])
def test_sdf_sphere_exact(backend):
    if backend == "open3d" and not available("open3d"):
        pytest.skip("open3d not installed")
    g = icosphere(3)
    q = _sphere_queries()
    d = sdf(g, q, backend=backend)
    exact = q.norm(dim=1) - 1.0
    assert d.shape == (q.shape[0],) and d.dtype == q.dtype
    assert float((d - exact).abs().max()) < 0.01  # chord error of a subdivision-3 icosphere
    assert torch.equal(d < 0, exact < 0)


def test_sdf_open_surface_is_unsigned_and_backends_agree():
    g = icosphere(2)
    open_g = Geometry(g.points, g.faces[1:])
    assert is_watertight(g.faces) and not is_watertight(open_g.faces)
    q = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    with pytest.warns(UnsignedSDFWarning, match="unsigned"):
        d = sdf(open_g, q, backend="trimesh")
    assert torch.all(d > 0)
    if available("open3d"):
        with pytest.warns(UnsignedSDFWarning):
            torch.testing.assert_close(sdf(open_g, q, backend="open3d"), d, atol=1e-5, rtol=0)


def test_sdf_point_cloud_and_kdtree_match_brute_force():
    rng = np.random.default_rng(2)
    pc = Geometry(torch.tensor(rng.normal(size=(200, 3))))
    q = torch.tensor(rng.normal(size=(30, 3)))
    ref = torch.cdist(q, pc.points).min(dim=1).values
    torch.testing.assert_close(sdf(pc, q), ref)
    torch.testing.assert_close(sdf(icosphere(1), q, backend="kdtree"), torch.cdist(q, icosphere(1).points).min(1).values)


def test_sdf_2d_circle_polyline():
    g = circle(400)
    q = torch.tensor([[0.0, 0.0], [0.5, 0.1], [2.0, 0.0], [0.0, -3.0], [0.7, 0.7]], dtype=torch.float64)
    exact = q.norm(dim=1) - 1.0
    d = sdf(g, q)
    torch.testing.assert_close(d, exact, atol=1e-4, rtol=0)
    open_g = Geometry(g.points, g.cells["line"][1:])
    with pytest.warns(UnsignedSDFWarning):
        assert torch.all(sdf(open_g, q) >= 0)


def test_sdf_2d_domain_square_with_hole():
    """Unit square minus nothing: sdf = -min distance to the sides inside, + outside."""
    from scipy.spatial import Delaunay

    x = np.linspace(0, 1, 6)
    pts = np.array([[a, b] for a in x for b in x])
    g = Geometry(torch.tensor(pts), torch.tensor(Delaunay(pts).simplices))
    q = torch.tensor([[0.5, 0.5], [0.1, 0.3], [1.5, 0.5], [-0.2, -0.2]], dtype=torch.float64)
    d = sdf(g, q)
    ref = torch.tensor([-0.5, -0.1, 0.5, math.hypot(0.2, 0.2)], dtype=torch.float64)
    torch.testing.assert_close(d, ref, atol=1e-12, rtol=0)
    # the same square stored in 3-D with z = 0 gives the same answer
    g3 = Geometry(torch.cat([g.points, torch.zeros(g.n_points, 1, dtype=torch.float64)], 1), g.faces)
    torch.testing.assert_close(sdf(g3, q), ref, atol=1e-12, rtol=0)


def test_sdf_volume_mesh():
    g = unit_cube_hexes(2)
    q = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 1.25]], dtype=torch.float64)
    torch.testing.assert_close(sdf(g, q, backend="trimesh"), torch.tensor([-0.5, 0.25], dtype=torch.float64),
                               atol=1e-6, rtol=0)


def _dense_segment_distance(q, a, b):
    """Independent reference: distance to 20,001 points sampled along every segment."""
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    dense = (a[:, None] + t[None, :, None] * (b - a)[:, None]).reshape(-1, a.shape[1])
    return torch.cdist(q, dense).min(1).values


def test_segment_helpers_against_reference():
    rng = np.random.default_rng(3)
    a, b = torch.tensor(rng.normal(size=(7, 2))), torch.tensor(rng.normal(size=(7, 2)))
    q = torch.tensor(rng.normal(size=(20, 2)))
    ref = _dense_segment_distance(q, a, b)
    torch.testing.assert_close(segment_distance(q, a, b, chunk_elems=16), ref, atol=1e-4, rtol=0)
    from matplotlib.path import Path

    sq = circle(5)  # a pentagon
    p = sq.points
    qq = torch.tensor(rng.uniform(-1.2, 1.2, size=(200, 2)))
    ins = inside_polygon(qq, p, p.roll(-1, 0))
    assert torch.equal(ins, torch.tensor(Path(p.numpy()).contains_points(qq.numpy())))


def test_sdf_bad_inputs():
    g = icosphere(1)
    with pytest.raises(ConfigError, match="valid"):
        sdf(g, torch.zeros(2, 3), backend="embree")
    with pytest.raises(ShapeError):
        sdf(g, torch.zeros(2, 4))
    with pytest.raises(ShapeError):
        sdf(g, torch.full((2, 3), float("nan")))


# ----------------------------------------------------------------------------- sampling
def test_sample_surface_is_area_uniform():
    g = icosphere(4).with_fields(z=icosphere(4).points[:, 2])
    s = g.sample_surface(20000, seed=0)
    z = s.points[:, 2]
    assert abs(float(z.mean())) < 0.02
    assert abs(float((z * z).mean()) - 1 / 3) < 0.02
    assert s.cells == {} and s.n_points == 20000
    torch.testing.assert_close(s.weights.sum(), g.weights.sum())
    torch.testing.assert_close(s.fields["z"][:, 0], z)  # linear fields interpolate exactly
    assert float((s.points.norm(dim=1) - 1).abs().max()) < 0.01
    assert float(((s.normals * s.points).sum(1)).min()) > 0.95  # outward, unit
    again = g.sample_surface(20000, seed=0)
    assert torch.equal(again.points, s.points)
    assert not torch.equal(g.sample_surface(100, seed=1).points, s.points[:100])


def test_sample_polyline_and_errors():
    g = circle(200)
    s = g.sample_surface(5000, seed=0)
    torch.testing.assert_close(s.points.norm(dim=1), torch.ones(5000, dtype=torch.float64), atol=2e-4, rtol=0)
    assert abs(float(s.points[:, 0].mean())) < 0.03 and abs(float(s.points[:, 1].mean())) < 0.03
    torch.testing.assert_close(s.weights.sum(), g.weights.sum())
    assert float((s.normals * s.points).sum(1).min()) > 0.99  # counter-clockwise -> outward
    with pytest.raises(ShapeError, match="point cloud"):
        Geometry(torch.rand(5, 3)).sample_surface(10)
    with pytest.raises(ShapeError):
        g.sample_surface(0)


def test_segment_distance_3d_against_dense_sampling():
    rng = np.random.default_rng(4)
    a, b = torch.tensor(rng.normal(size=(9, 3))), torch.tensor(rng.normal(size=(9, 3)))
    q = torch.tensor(rng.normal(size=(30, 3)))
    ref = _dense_segment_distance(q, a, b)
    for chunk in (9, 40, 1 << 22):  # one query per chunk, a few, all at once
        torch.testing.assert_close(segment_distance(q, a, b, chunk_elems=chunk), ref, atol=1e-4, rtol=0)


def test_trimesh_sdf_in_chunks_matches_open3d():
    """The exact trimesh SDF queries in chunks (its per-query triangle gather can reach every
    triangle far from the surface); across several chunks it equals open3d's distance."""
    pytest.importorskip("open3d")
    import trimesh

    from geoop.geometry.sdf import _surface_sdf

    m = trimesh.creation.icosphere(subdivisions=5)  # 20 480 faces: chunks of 819 queries
    q = np.random.default_rng(0).uniform(-3, 3, (2500, 3))
    a = _surface_sdf(np.asarray(m.vertices), np.asarray(m.faces), q, True, "trimesh")
    b = _surface_sdf(np.asarray(m.vertices), np.asarray(m.faces), q, True, "open3d")
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (a < 0).any() and (a > 0).any()


def test_a_zero_thickness_fin_does_not_unsign_a_closed_body():
    """snappyHexMesh can leave a sliver: two triangles on the same vertices with opposite
    winding, whose edges are shared by four faces. They bound no volume: the body stays
    closed and its SDF equals the body's without them; a duplicate of the same winding is
    still an open/non-manifold surface (warned)."""
    import trimesh

    from geoop.geometry.sdf import drop_cancelling_faces

    box = trimesh.creation.box()
    v = torch.tensor(np.asarray(box.vertices), dtype=torch.float64)
    f = torch.tensor(np.asarray(box.faces), dtype=torch.long)
    tip = torch.tensor([[0.9, 0.0, 0.0]], dtype=torch.float64)  # the fin pokes out of the +x face
    a, b = int(f[0, 0]), int(f[0, 1])
    fin = torch.tensor([[a, b, 8], [b, a, 8]])
    body = Geometry(torch.cat([v, tip]), torch.cat([f, fin]))
    assert drop_cancelling_faces(body.faces).shape[0] == f.shape[0]
    q = torch.tensor(np.random.default_rng(1).uniform(-1, 1, (200, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedSDFWarning)
        got = sdf(body, q, backend="trimesh")
    torch.testing.assert_close(got, sdf(Geometry(v, f), q, backend="trimesh"))
    assert (got < 0).any()
    dup = Geometry(torch.cat([v, tip]), torch.cat([f, fin[:1], fin[:1]]))
    with pytest.warns(UnsignedSDFWarning, match="with more than two"):
        sdf(dup, q, backend="trimesh")
