"""Validation of the 3-D source panel method, the body meshes and the case generator.

Known answers: the sphere (Cp = 1 - 9/4 sin^2 theta, doublet far field), the prolate
spheroid in axial flow (Lamb), brute-force quadrature of the panel integral, the winding
number of closed meshes, d'Alembert (no net force) and zero net source strength.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from geoop.data import body3d
from geoop.data.body3d import free_stream, solve_body, sphere_cp, spheroid_surface_speed
from geoop.data.panel3d import TrianglePanels, solid_angle, source_influence
from geoop.data.shapes import car_body, check_closed_mesh, ellipsoid_mesh, geodesic_sphere, sphere_mesh
from geoop.errors import ConfigError, ShapeError


def _subtriangle_centroids(tri: np.ndarray, m: int) -> tuple[np.ndarray, float]:
    """Centroids of the m^2 congruent sub-triangles of ``tri`` (3, 3) and their area."""
    pts = []
    for i in range(m):
        for j in range(m - i):
            pts.append((i + 1 / 3, j + 1 / 3))  # upward sub-triangle
            if i + j < m - 1:
                pts.append((i + 2 / 3, j + 2 / 3))  # downward
    w = np.asarray(pts) / m
    q = tri[0] + w[:, :1] * (tri[1] - tri[0]) + w[:, 1:] * (tri[2] - tri[0])
    area = 0.5 * np.linalg.norm(np.cross(tri[1] - tri[0], tri[2] - tri[0]))
    return q, area / m**2


def test_panel_kernel_matches_quadrature():
    tri = np.array([[0.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.2, 0.9, 0.3]])
    panels = TrianglePanels.from_mesh(tri, np.array([[0, 1, 2]]))
    q, dA = _subtriangle_centroids(tri, 200)
    for p in ([0.4, 0.3, 0.5], [0.3, 0.2, -0.3], [2.0, 1.0, 0.5], [1.2, -0.3, 0.05]):
        p = np.asarray(p)
        d = p - q
        ref = (d / np.linalg.norm(d, axis=1)[:, None] ** 3).sum(0) * dA / (4 * np.pi)
        exact = source_influence(panels, p[None], far_factor=np.inf)[:, 0, 0]
        assert np.allclose(exact, ref, rtol=2e-3, atol=2e-4 * np.abs(ref).max()), (p, exact, ref)
    # far away the point source agrees with the exact formula to O((h/d)^2)
    p = np.array([[6.0, 3.0, 2.0]])
    far = source_influence(panels, p, far_factor=4.0)[:, 0, 0]
    exact = source_influence(panels, p, far_factor=np.inf)[:, 0, 0]
    assert np.allclose(far, exact, rtol=5e-3)


def test_solid_angle_winding_number_of_closed_mesh():
    v, f = sphere_mesh(2)
    tri = v[f]
    pts = np.array([[0.0, 0.0, 0.0], [0.3, -0.2, 0.5], [1.5, 0.0, 0.0], [0.2, 2.0, -1.0]])
    w = -solid_angle(tri, pts).sum(axis=1) / (4 * np.pi)
    assert np.allclose(w, [1.0, 1.0, 0.0, 0.0], atol=1e-9)


def test_sphere_cp_converges_to_analytic_at_yaw():
    errs = []
    for level in (1, 2, 3):
        v, f = sphere_mesh(level)
        sol = solve_body(v, f, yaw_deg=30.0)
        err = sol.cp - sphere_cp(sol.panels.panels.centroid, free_stream(30.0))
        errs.append(np.sqrt(np.mean(err**2)))
        if level == 3:
            assert np.abs(err).max() < 0.03
    # rms error falls by ~2x per level (observed 0.025, 0.0125, 0.0058)
    assert errs[1] < 0.7 * errs[0] and errs[2] < 0.7 * errs[1], errs


def test_prolate_spheroid_surface_speed_converges():
    errs = []
    for level in (1, 2, 3):
        v, f = ellipsoid_mesh((2.0, 1.0, 1.0), level)
        sol = solve_body(v, f)
        speed = np.linalg.norm(sol.panels.surface_velocity, axis=1)
        ref = spheroid_surface_speed(sol.panels.panels.centroid, 2.0, 1.0)
        errs.append(np.abs(speed - ref).max())
    assert errs[1] < 0.6 * errs[0] and errs[2] < 0.7 * errs[1], errs
    assert errs[2] < 0.01, errs


def test_sphere_far_field_is_a_doublet_and_surface_limit_consistent():
    v, f = sphere_mesh(2)
    sol = solve_body(v, f)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(100, 3))
    q = d / np.linalg.norm(d, axis=1, keepdims=True) * rng.uniform(1.5, 4.0, (100, 1))

    def ref_at(x):
        r = np.linalg.norm(x, axis=1, keepdims=True)
        ex = np.array([1.0, 0.0, 0.0])
        return ex + 0.5 * (ex / r**3 - 3 * x[:, :1] * x / r**5)

    ref = ref_at(q)
    # 320 flat panels: the polyhedron is ~2 % smaller than the sphere, hence ~1e-2 near it
    assert np.abs(sol.velocity(q) - ref).max() < 1e-2
    assert np.abs(sol.velocity(2 * q) - ref_at(2 * q)).max() < 2e-3
    # just outside a centroid the field equals the surface velocity (outer self-term limit)
    P = sol.panels.panels
    out = P.centroid + 1e-4 * P.size[:, None] * P.normal
    v_out = sol.velocity(out)
    assert np.abs(np.einsum("fi,fi->f", v_out, P.normal)).max() < 1e-3
    assert np.abs(v_out - sol.panels.surface_velocity).max() < 1e-3


def test_far_field_point_source_approximation_close_to_exact():
    v, f = car_body(320, roundness=0.3)
    a = solve_body(v, f, yaw_deg=5.0)
    b = solve_body(v, f, yaw_deg=5.0, far_factor=np.inf)
    assert np.abs(a.cp - b.cp).max() < 5e-3


@pytest.mark.parametrize("roundness", [0.0, 1.0])
def test_car_body_closed_outward_and_physical(roundness):
    v, f = car_body(500, roundness=roundness, nose_slant=0.7, rear_slant=0.5, width=0.45, height=0.3)
    info = check_closed_mesh(v, f)
    assert info["watertight"] and info["winding_consistent"] and info["euler_number"] == 2
    assert info["volume"] > 0  # outward oriented
    assert f.shape[0] == 20 * 5**2
    ext = v.max(0) - v.min(0)
    assert np.allclose(ext, [1.0, 0.45, 0.3], rtol=0.02)
    sol = solve_body(v, f, yaw_deg=10.0)
    P = sol.panels.panels
    assert 0.9 < sol.cp.max() <= 1.0 + 1e-6  # a stagnation point, Cp <= 1 (Bernoulli)
    # d'Alembert: no net force; no net source strength in a closed body
    force = (sol.cp[:, None] * P.normal * P.area[:, None]).sum(0)
    assert np.linalg.norm(force) < 0.1 * 0.45 * 0.3
    assert abs(np.sum(sol.panels.sigma * P.area)) < 0.01 * np.sum(np.abs(sol.panels.sigma) * P.area)


def test_geodesic_sphere_counts():
    for nu in (1, 3, 7):
        v, f = geodesic_sphere(nu)
        assert f.shape[0] == 20 * nu**2 and v.shape[0] == 10 * nu**2 + 2
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
        assert check_closed_mesh(v, f)["volume"] > 0


def test_make_case_fields_and_volume_points_outside():
    # sphere case: a point is outside the (inscribed) polyhedron if it is farther from the
    # centre than every face plane; check that independently of the winding number
    sph, sph_vol, sol_s = body3d.make_case({"shape": "sphere", "n_panels": 320, "n_volume": 800}, seed=0, return_solution=True)
    P = sol_s.panels.panels
    plane_dist = np.einsum("fi,fi->f", P.normal, P.centroid)
    qs = sph_vol.points.numpy().astype(np.float64)
    inside_all = (qs @ P.normal.T - plane_dist[None, :] < 0).all(axis=1)
    assert not inside_all.any() and qs.shape[0] > 400

    surf, vol, sol = body3d.make_case({"n_panels": 320, "n_volume": 600, "yaw_deg": 8.0}, seed=1, return_solution=True)
    assert surf.cells["triangle"].shape == (320, 3)
    assert np.allclose(surf.cell_fields["Cp"][:, 0].numpy(), sol.cp, atol=1e-6)
    assert np.allclose(np.linalg.norm(surf.normals.numpy(), axis=1), 1.0, atol=1e-5)
    q = vol.points.numpy().astype(np.float64)
    w = -solid_angle(sol.panels.panels.tri, q).sum(1) / (4 * np.pi)
    assert np.all(w < 0.5) and 300 < q.shape[0] <= 600
    vel = vol.fields["velocity"].numpy().astype(np.float64)
    assert np.allclose(vol.fields["p"][:, 0].numpy(), 1 - np.sum(vel**2, 1), atol=1e-5)
    assert np.allclose(vel, sol.velocity(q), atol=1e-5)


def test_generate_deterministic_readable_and_validated(tmp_path):
    import geoop

    kw = dict(n_panels=(150, 400), n_volume=(300, 500))
    e1 = body3d.generate(tmp_path / "a", 2, seed=3, **kw)
    e2 = body3d.generate(tmp_path / "b", 2, seed=3, **kw)
    assert e1 == e2
    assert (tmp_path / "a" / "case_0001_surface.vtp").read_bytes() == (tmp_path / "b" / "case_0001_surface.vtp").read_bytes()
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert man["cases"] == e1 and man["shape"] == "car"
    s = geoop.read(tmp_path / "a" / "case_0000_surface.vtp")
    v = geoop.read(tmp_path / "a" / "case_0000_volume.vtu")
    assert s.faces.shape[0] == e1[0]["n_panels"] and "Cp" in s.fields
    assert v.n_points == e1[0]["n_volume"] and {"velocity", "p"} <= set(v.fields)
    e3 = body3d.generate(tmp_path / "c", 1, seed=0, shape="ellipsoid", volume=False, n_panels=80)
    assert "volume" not in e3[0] and not (tmp_path / "c" / "case_0000_volume.vtu").exists()
    with pytest.raises(ConfigError, match="valid"):
        body3d.generate(tmp_path / "d", 1, shape="cube")
    with pytest.raises(ConfigError, match="valid"):
        body3d.generate(tmp_path / "d", 1, wheels=(1, 2))
    with pytest.raises(ShapeError, match="degenerate"):
        TrianglePanels.from_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]))
