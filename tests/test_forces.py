"""geoop.physics.forces: known answers (closed bodies, d'Alembert, Kutta-Joukowski,
buoyancy by the divergence theorem against trimesh's volume), moment transport, outward
normals."""
import math

import numpy as np
import pytest
import torch

import geoop
from geoop import Geometry, ShapeError
from geoop.physics import forces


def _circle(n, r=1.0, jitter=0.0, seed=0, ccw=True):
    rng = np.random.default_rng(seed)
    th = 2 * np.pi * (np.arange(n) + jitter * rng.uniform(-0.5, 0.5, n)) / n
    if not ccw:
        th = -th
    return np.stack([r * np.cos(th), r * np.sin(th)], 1)


def _polyline(xy, **kw):
    n = xy.shape[0]
    # float64 tensors keep their dtype (numpy arrays would become float32 geometries)
    return Geometry(torch.as_tensor(np.asarray(xy, dtype=np.float64)), cells={"line": np.stack([np.arange(n), (np.arange(n) + 1) % n], 1)}, **kw)


def _star(n=40):
    """A non-convex star-shaped polygon (counter-clockwise)."""
    th = 2 * np.pi * np.arange(n) / n
    r = 1.0 + 0.5 * np.cos(5 * th)
    return np.stack([r * np.cos(th), r * np.sin(th)], 1)


def _torus():
    import trimesh

    m = trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=24, minor_sections=12)
    return m


def _geom(m, **kw):
    return Geometry(torch.as_tensor(np.asarray(m.vertices, dtype=np.float64)), cells={"triangle": np.asarray(m.faces)}, **kw)


# ------------------------------------------------------------------------ constant pressure
@pytest.mark.parametrize("xy", [_circle(17, jitter=0.8), _star()], ids=["circle", "star"])
def test_constant_pressure_2d_zero_force_and_moment(xy):
    g = _polyline(xy)
    r = forces(g, torch.full((g.n_points,), 3.7), moment_center=(0.3, -0.2))
    assert r.force.shape == (2,)
    assert torch.allclose(r.force, torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert abs(float(r.moment[2])) < 1e-12
    # a linear pressure p = g.x gives  oint p n ds = g * area  (divergence theorem): -F = g A
    gvec = np.array([0.7, -1.3])
    area = 0.5 * np.sum(xy[:, 0] * np.roll(xy[:, 1], -1) - np.roll(xy[:, 0], -1) * xy[:, 1])
    r = forces(g, torch.as_tensor(xy @ gvec))
    np.testing.assert_allclose(-r.force.numpy(), gvec * area, rtol=1e-10, atol=1e-12)


def test_constant_pressure_3d_nonconvex_and_buoyancy():
    m = _torus()  # non-convex, genus 1
    g = _geom(m)
    r = forces(g, torch.full((g.n_points,), -2.5), moment_center=(0.1, 0.2, 0.3))
    assert float(r.force.abs().max()) < 1e-12 and float(r.moment.abs().max()) < 1e-12
    # hydrostatic pressure p = -rho g z: buoyancy = rho g V (V from trimesh, independent)
    p = -9.81 * g.points[:, 2].double()
    r = forces(g, p)
    np.testing.assert_allclose(r.force.numpy(), [0.0, 0.0, 9.81 * m.volume], rtol=1e-10, atol=1e-10)
    # the same as cell data (centroid values of a linear field are exact cell means)
    pc = -9.81 * torch.as_tensor(np.array(m.triangles_center[:, 2]))
    rc = forces(g, pc, location="cell")
    np.testing.assert_allclose(rc.force.numpy(), r.force.numpy(), rtol=1e-10, atol=1e-10)


def test_quads_constant_pressure_and_cube_buoyancy():
    pv = pytest.importorskip("pyvista")
    cube = pv.Cube(x_length=2.0, y_length=1.0, z_length=0.5)
    g = geoop.from_pyvista(cube)
    assert "quad" in g.cells
    r = forces(g, torch.ones(g.n_points))
    assert float(r.force.abs().max()) < 1e-12
    r = forces(g, -g.points[:, 2].double())
    np.testing.assert_allclose(r.force.numpy(), [0, 0, 1.0], atol=1e-10)  # volume 2 * 1 * 0.5


# ------------------------------------------------------------------------ d'Alembert
def _cylinder_drag(n, seed=0):
    from geoop.data.panel2d import solve_vortex_panels

    xy = _circle(n, jitter=0.6, seed=seed, ccw=False)  # clockwise nodes as the panel method wants
    sol = solve_vortex_panels(np.vstack([xy, xy[:1]]), alpha=math.radians(20.0), kutta=False)
    cp = 1.0 - sol.gamma[:-1] ** 2
    g = _polyline(xy)
    r = forces(g, cp, dynamic_pressure=1.0, length=2.0, freestream=(math.cos(math.radians(20)), math.sin(math.radians(20))))
    return r.coefficients


def test_dalembert_cylinder_drag_vanishes_under_refinement():
    c = [_cylinder_drag(n) for n in (24, 48, 96, 192)]
    cd = [abs(x["cd"]) for x in c]
    assert cd[-1] < 2e-3
    assert cd[-1] < 0.25 * cd[0]
    assert all(b < a for a, b in zip(cd, cd[1:])), cd
    assert abs(c[-1]["cl"]) < 5e-3  # zero circulation: no lift either


def _sphere_coeffs(level, seed=0):
    from geoop.data.body3d import solve_body, surface_geometry
    from geoop.data.shapes import sphere_mesh

    v, f = sphere_mesh(level, 0.5)
    # break the icosphere's point symmetry (which would make the drag zero by symmetry alone)
    rng = np.random.default_rng(seed)
    v = v + 0.1 * (0.5 * 2.0 ** -level) * rng.normal(size=v.shape)
    v = 0.5 * v / np.linalg.norm(v, axis=1, keepdims=True)
    sol = solve_body(v, f, yaw_deg=13.0)
    g = surface_geometry(sol)
    area = math.pi * 0.25
    stream = (math.cos(math.radians(13)), math.sin(math.radians(13)), 0.0)
    return (forces(g, "Cp", location="cell", dynamic_pressure=1.0, area=area, freestream=stream).coefficients,
            forces(g, "Cp", dynamic_pressure=1.0, area=area, freestream=stream).coefficients)


def test_dalembert_sphere_drag_vanishes_under_refinement():
    res = [_sphere_coeffs(level) for level in (1, 2, 3)]
    for which in (0, 1):  # cell data (panel centroids) and point data (vertex averages)
        cd = [abs(r[which]["cd"]) for r in res]
        assert cd[-1] < 0.02, cd
        assert cd[-1] < 0.5 * cd[0], cd
        lift = [math.hypot(r[which]["cl"], r[which]["cs"]) for r in res]
        assert lift[-1] < 0.02, lift


# ------------------------------------------------------------------------ Kutta-Joukowski
@pytest.mark.parametrize("naca,alpha", [("2412", 4.0), ("0012", -6.0)])
def test_panel_lift_matches_kutta_joukowski(naca, alpha):
    from geoop.data.airfoil import make_case, solve_airfoil

    errs = []
    for n in (80, 160, 320):
        sol = solve_airfoil(naca, alpha, n)
        g = _polyline(sol.surface_points, normals=sol.normals)
        a = math.radians(alpha)
        r = forces(g, sol.cp_surface, dynamic_pressure=1.0, length=1.0, freestream=(math.cos(a), math.sin(a)))
        assert r.reference["lift_direction"][:2] == pytest.approx([-math.sin(a), math.cos(a)])
        errs.append(abs(r.coefficients["cl"] - sol.cl))
        assert abs(r.coefficients["cd"]) < 0.01
    assert errs[-1] < 0.01 * max(abs(sol.cl), 0.1), errs
    assert errs[-1] < errs[0], errs
    # the written case (Cp point field, 3-D points with z = 0, outward Normals) gives the same
    surface, _, sol = make_case({"naca": naca, "alpha_deg": alpha, "n_panels": 160, "n_volume": 500}, return_solution=True)
    r = forces(surface, "Cp", dynamic_pressure=1.0, freestream=(math.cos(a), math.sin(a)))
    assert r.force.shape == (3,) and float(r.force[2]) == 0.0
    assert r.coefficients["cl"] == pytest.approx(sol.cl, rel=0.02)


# ------------------------------------------------------------------------ moments, frames
def test_moment_transport_under_reference_shift():
    m = _torus()
    g = _geom(m)
    rng = np.random.default_rng(1)
    p = torch.as_tensor(rng.normal(size=g.n_points))
    tau = torch.as_tensor(rng.normal(size=(g.n_points, 3)))
    x0, x1 = np.array([0.2, -0.1, 0.4]), np.array([-1.0, 0.5, 2.0])
    r0 = forces(g, p, tau, moment_center=x0)
    r1 = forces(g, p, tau, moment_center=x1)
    np.testing.assert_allclose(r0.force.numpy(), r1.force.numpy(), rtol=1e-12)
    # M(x1) = M(x0) + (x0 - x1) x F
    np.testing.assert_allclose(r1.moment.numpy(), r0.moment.numpy() + np.cross(x0 - x1, r0.force.numpy()), atol=1e-10)
    # 2-D as well
    g2 = _polyline(_star())
    p2 = torch.as_tensor(rng.normal(size=g2.n_points))
    a, b = forces(g2, p2, moment_center=(0.0, 0.0)), forces(g2, p2, moment_center=(1.0, 2.0))
    F = a.force.numpy()
    assert float(b.moment[2]) == pytest.approx(float(a.moment[2]) + (-1.0 * F[1] - (-2.0) * F[0]), abs=1e-10)


def test_rotation_equivariance_and_coefficients():
    m = _torus()
    g = _geom(m)
    rng = np.random.default_rng(2)
    p = torch.as_tensor(rng.normal(size=g.n_points))
    R = torch.as_tensor(__import__("scipy.spatial.transform", fromlist=["Rotation"]).Rotation.random(random_state=3).as_matrix())
    gr = Geometry(g.points.double() @ R.T, cells=g.cells)
    r, rr = forces(g, p), forces(gr, p, freestream=R[:, 0], lift_direction=R[:, 2])
    np.testing.assert_allclose(rr.force.numpy(), (R @ r.force).numpy(), atol=1e-10)
    for k in ("cd", "cl", "cs", "cm", "cm_roll", "cm_yaw"):
        assert rr.coefficients[k] == pytest.approx(r.coefficients[k], abs=1e-9)
    # coefficient definitions
    q, A, L = 0.5 * 1.2 * 30.0**2, 2.0, 0.7
    c = forces(g, p, density=1.2, speed=30.0, area=A, length=L).coefficients
    assert c["cd"] == pytest.approx(float(r.force[0]) / (q * A))
    assert c["cl"] == pytest.approx(float(r.force[2]) / (q * A))
    assert c["cs"] == pytest.approx(float(r.force[1]) / (q * A))  # e_S = e_L x e_D = +y
    assert c["cm"] == pytest.approx(float(r.moment[1]) / (q * A * L))


def test_wall_shear_uses_geometry_weights():
    m = _torus()
    g = _geom(m)
    tau = torch.zeros(g.n_points, 3)
    tau[:, 0] = 2.0
    r = forces(g, torch.zeros(g.n_points), tau)
    # a uniform shear integrates to shear * area; the vertex shares are Geometry.weights
    assert float(r.shear_force[0]) == pytest.approx(2.0 * m.area, rel=1e-10)
    assert float(g.weights.double().sum()) == pytest.approx(m.area, rel=1e-6)
    assert float(r.pressure_force.abs().max()) == 0.0


# ------------------------------------------------------------------------ outward normals
def test_orientation_outward_whatever_the_winding():
    m = _torus()
    p = -g_z(m)
    ref = forces(_geom(m), p).force
    flipped = Geometry(torch.as_tensor(np.array(m.vertices)), cells={"triangle": np.asarray(m.faces)[:, ::-1].copy()})
    assert torch.allclose(forces(flipped, p).force, ref, atol=1e-12)  # closed: oriented by signed volume
    # winding taken as is: inward -> the opposite force
    assert torch.allclose(forces(flipped, p, orientation="cells").force, -ref, atol=1e-12)
    # mixed winding with outward point normals: repaired cell by cell
    f = np.asarray(m.faces).copy()
    f[::3] = f[::3, ::-1]
    mixed = Geometry(torch.as_tensor(np.array(m.vertices)), cells={"triangle": f}, normals=torch.as_tensor(np.array(m.vertex_normals)))
    assert torch.allclose(forces(mixed, p).force, ref, atol=1e-12)
    # ... but without normals it cannot be oriented: a clear error
    with pytest.raises(ShapeError, match="outward"):
        forces(Geometry(np.asarray(m.vertices), cells={"triangle": f}), p)
    # a clockwise 2-D polyline (the airfoil files' order) is oriented by its signed area
    xy = _circle(30, jitter=0.5)
    gv = torch.as_tensor(xy[:, 1])
    assert torch.allclose(forces(_polyline(xy[::-1].copy()), gv.flip(0)).force, forces(_polyline(xy), gv).force, atol=1e-12)


def g_z(m):
    return torch.as_tensor(np.array(m.vertices)[:, 2])


def test_bad_input_errors():
    m = _torus()
    g = _geom(m)
    with pytest.raises(ShapeError, match=r"expected shape \(%d, 1\)" % g.n_points):
        forces(g, torch.zeros(g.n_points + 1))
    with pytest.raises(geoop.FieldError, match="no field 'q'"):
        forces(g, "q")
    with pytest.raises(ShapeError, match="surface cells"):
        forces(Geometry(np.random.rand(10, 3)), torch.zeros(10))
    with pytest.raises(ShapeError, match="2-D domain"):
        forces(Geometry(np.random.rand(4, 2), cells={"triangle": [[0, 1, 2], [1, 2, 3]]}), torch.zeros(4))
    with pytest.raises(ShapeError, match="parallel"):
        forces(g, torch.zeros(g.n_points), freestream=(0, 0, 1))
    with pytest.raises(ShapeError, match="orientation"):
        forces(g, torch.zeros(g.n_points), orientation="inward")
    with pytest.raises(ShapeError, match="NaN"):
        forces(g, torch.full((g.n_points,), float("nan")))


def test_gradients_flow_through_forces():
    g = _polyline(_circle(20))
    p = torch.randn(g.n_points, dtype=torch.float64, requires_grad=True)
    forces(g, p).force.sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_lazy_export():
    import geoop as G

    assert G.physics.forces is forces


def test_wall_shear_convention():
    """``wall_shear_acts_on="fluid"`` (OpenFOAM's wallShearStress: the wall's stress on the
    fluid) of -tau = the default (the fluid's stress on the wall) of tau, for forces and the
    coefficient operator; the friction drag of a shear along the flow is positive."""
    from geoop.physics import coefficient_weights

    m = _torus()
    g = _geom(m)
    rng = np.random.default_rng(2)
    p = torch.as_tensor(rng.normal(size=g.n_points))
    tau = torch.as_tensor(rng.normal(size=(g.n_points, 3)))
    a, b = forces(g, p, tau), forces(g, p, -tau, wall_shear_acts_on="fluid")
    np.testing.assert_allclose(a.force.numpy(), b.force.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.moment.numpy(), b.moment.numpy(), rtol=1e-12, atol=1e-14)
    cw = coefficient_weights(g, ["cd", "cl"], wall_shear_acts_on="fluid")(p, -tau)
    np.testing.assert_allclose(cw.numpy(), [a.coefficients["cd"], a.coefficients["cl"]], rtol=1e-10, atol=1e-12)
    along = torch.zeros(g.n_points, 3, dtype=torch.float64)
    along[:, 0] = 1.0  # skin friction along +x (the free stream) on every node
    assert forces(g, torch.zeros(g.n_points, dtype=torch.float64), along).coefficients["cd"] > 0
    with pytest.raises(geoop.ShapeError, match="wall_shear_acts_on"):
        forces(g, p, tau, wall_shear_acts_on="solid")
