"""Half bodies on a symmetry plane: the signed SDF of the mirrored closed body, the
unsigned-SDF warning, touch errors, detection, files, transforms, full-body forces, mirror
augmentation, and the ``"body"`` normalisation rule (latent box fitted to the body)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import geoop
from geoop.errors import DatasetError, FieldError, SymmetryError, UnsignedSDFWarning
from geoop.geometry.symmetry import SymmetryPlane, detect_symmetry, full_body, is_symmetry_patch, mirror, plane_from_points

pytestmark = pytest.mark.usefixtures("one_thread")


def half_body(nt=20, nphi=12, a=2.0, b=0.7, c=0.5, shift=(0.3, 0.0, 0.2)):
    """Half (y >= 0) of a lumpy, non-convex body of revolution about x, outward wound; its cut
    on y = 0 is exact. Returns (points (N, 3) float64, triangles (F, 3))."""
    t = np.linspace(0, np.pi, nt + 1)[1:-1]
    phi = np.linspace(0, np.pi, nphi + 1)
    T, P = np.meshgrid(t, phi, indexing="ij")
    rho = b * np.sin(T) * (1 + 0.2 * np.cos(3 * T))
    y = rho * np.sin(P)
    y[:, 0] = y[:, -1] = 0.0
    ring = np.stack([a * np.cos(T), y, c / b * rho * np.cos(P) + 0.1 * np.sin(2 * T)], -1).reshape(-1, 3)
    pts = np.concatenate([ring, [[a, 0, 0], [-a, 0, 0]]]) + np.asarray(shift)
    idx = np.arange(ring.shape[0]).reshape(len(t), nphi + 1)
    tri = []
    for i in range(len(t) - 1):
        for j in range(nphi):
            p0, p1, p2, p3 = idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]
            tri += [[p0, p2, p1], [p0, p3, p2]]
    n0, n1 = ring.shape[0], ring.shape[0] + 1
    for j in range(nphi):
        tri += [[n0, idx[0, j + 1], idx[0, j]], [n1, idx[-1, j], idx[-1, j + 1]]]
    return pts, np.asarray(tri)


def reference_full_body(v, f):
    """The mirrored closed body built independently: trimesh concatenates the half and its
    y-mirror (winding reversed) and merges the seam's duplicate vertices."""
    import trimesh

    m = trimesh.Trimesh(np.concatenate([v, v * [1, -1, 1]]), np.concatenate([f, f[:, ::-1] + len(v)]), process=False)
    m.merge_vertices()
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0
    return m


@pytest.fixture(scope="module")
def half():
    v, f = half_body()
    return v, f, geoop.Geometry(torch.tensor(v), faces=torch.tensor(f), symmetry=("y", 0.0), name="half-car")


# ----------------------------------------------------------------------------- SDF
@pytest.mark.parametrize("backend,tol", [("trimesh", 1e-9), ("open3d", 1e-6)])
def test_half_body_sdf_equals_the_mirrored_closed_body_sdf(half, backend, tol):
    pytest.importorskip(backend)
    v, f, g = half
    ref = reference_full_body(v, f)
    q = torch.tensor(np.random.default_rng(0).uniform([-2.5, -1.5, -1.2], [2.8, 1.5, 1.5], (3000, 3)))
    assert (q[:, 1] < 0).sum() > 1000 and (q[:, 1] > 0).sum() > 1000  # both sides of the plane
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedSDFWarning)  # a declared half body is signed
        got = g.sdf(q, backend=backend)
    want = geoop.Geometry(torch.tensor(ref.vertices), faces=torch.tensor(ref.faces)).sdf(q, backend=backend)
    assert float((got - want).abs().max()) <= tol
    inside = torch.from_numpy(ref.contains(q.numpy()))
    assert inside[q[:, 1] < 0].sum() > 20 and inside[q[:, 1] > 0].sum() > 20
    assert bool((got[inside] < 0).all()) and bool((got[~inside] > 0).all())
    assert torch.equal(g.contains(q, backend=backend), inside)  # the inside test of the half is the full body's
    with pytest.raises(geoop.ShapeError, match="open, so it has no inside"):
        g.replace(symmetry=None).contains(q[:3], backend=backend)
    # without the plane the half's distance is unsigned: positive inside the body
    with pytest.warns(UnsignedSDFWarning, match="unsigned"):
        open_ = g.replace(symmetry=None).sdf(q, backend=backend)
    assert bool((open_[inside] > 0).all())


def test_open_surface_warns_closed_and_declared_do_not(half):
    v, f, g = half
    q = torch.zeros(4, 3)
    with pytest.warns(UnsignedSDFWarning, match="half-car.*unsigned.*symmetry"):
        g.replace(symmetry=None).sdf(q)
    ref = reference_full_body(v, f)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedSDFWarning)
        geoop.Geometry(torch.tensor(ref.vertices), faces=torch.tensor(ref.faces)).sdf(q)
        g.sdf(q)
    # a 2-D open polyline warns too; its half with a declared plane is the closed polygon
    th = np.linspace(0, np.pi, 33)
    arc = torch.tensor(np.stack([np.cos(th), np.sin(th)], 1))
    arc[0, 1] = arc[-1, 1] = 0.0
    lines = torch.stack([torch.arange(32), torch.arange(1, 33)], 1)
    with pytest.warns(UnsignedSDFWarning):
        geoop.Geometry(arc, lines).sdf(torch.zeros(1, 2))
    q = torch.tensor([[0.0, -0.5], [0.0, 0.5], [0.0, -1.5], [0.3, -0.2]], dtype=torch.float64)
    d = geoop.Geometry(arc, lines, symmetry="y").sdf(q)
    ring = torch.tensor(np.stack([np.cos(np.arange(64) * np.pi / 32), np.sin(np.arange(64) * np.pi / 32)], 1))
    want = geoop.Geometry(ring, torch.stack([torch.arange(64), (torch.arange(64) + 1) % 64], 1)).sdf(q)
    assert torch.allclose(d, want, atol=1e-12) and (d < 0).tolist() == [True, True, False, True]


def test_plane_the_body_does_not_touch_is_an_error_naming_geometry_and_distance(half):
    v, f, g = half
    with pytest.raises(SymmetryError, match=r"half-car: the symmetry plane y = 0.05 does not touch the body.*0.05 away"):
        g.replace(symmetry=("y", 0.05)).sdf(torch.zeros(1, 3))
    ref = reference_full_body(v, f)
    closed = geoop.Geometry(torch.tensor(ref.vertices), faces=torch.tensor(ref.faces), name="full", symmetry="y")
    with pytest.raises(SymmetryError, match="full: .*no open boundary"):
        closed.sdf(torch.zeros(1, 3))
    pts = g.points.clone()
    pts[pts[:, 0] > 1.0, 1] *= -1  # the boundary loop still on y = 0, the body on both sides
    with pytest.raises(SymmetryError, match="half-car: the body lies on both sides"):
        g.replace(points=pts).sdf(torch.zeros(1, 3))
    with pytest.raises(geoop.errors.GeoopError):
        geoop.physics.forces(g.replace(symmetry=("y", 0.05)), torch.zeros(g.n_points))


def test_auto_detection_patches_and_plane_specs(half):
    v, f, g = half
    auto = geoop.Geometry(torch.tensor(v), faces=torch.tensor(f), symmetry="auto")
    assert auto.symmetry == SymmetryPlane((0.0, 1.0, 0.0), 0.0) and auto.symmetry.axis == 1
    ref = reference_full_body(v, f)
    assert geoop.Geometry(torch.tensor(ref.vertices), faces=torch.tensor(ref.faces), symmetry="auto").symmetry is None
    assert detect_symmetry(g.replace(points=g.points + torch.tensor([0, 0, 1.5], dtype=g.dtype))).describe() == "y = 0"
    # the same plane from every accepted spec
    for spec in [("y", 0.0), "y", (1, 0.0), [0.0, 1.0, 0.0, 0.0], {"normal": [0, 2, 0], "offset": 0.0},
                 {"axis": "y"}, {"normal": [0, 1, 0], "point": [5.0, 0.0, -1.0]}]:
        assert SymmetryPlane.from_spec(spec) == SymmetryPlane((0.0, 1.0, 0.0), 0.0)
    with pytest.raises(SymmetryError, match="unknown axis"):
        SymmetryPlane.from_spec(("w", 0.0))
    # OpenFOAM patches: names/types, and the plane from the patch points
    assert is_symmetry_patch("symmetryPlane") and is_symmetry_patch("symmetry") and is_symmetry_patch("sym_plane")
    assert not is_symmetry_patch("body") and is_symmetry_patch("side", "symmetryPlane") and not is_symmetry_patch("symmetry", "wall")
    pts = torch.rand(50, 3, dtype=torch.float64) * torch.tensor([8.0, 0.0, 3.0]) + torch.tensor([-2.0, 0.0, 0.0])
    assert plane_from_points(pts) == SymmetryPlane.axis_plane("y", 0.0)
    with pytest.raises(SymmetryError, match="patch 'front'.*not flat"):
        plane_from_points(torch.rand(50, 3, dtype=torch.float64), name="patch 'front'")
    from geoop.geometry import symmetry_from_patches

    body = torch.rand(40, 3, dtype=torch.float64)
    assert symmetry_from_patches({"car": body, "symmetryPlane": pts}) == SymmetryPlane.axis_plane("y", 0.0)
    assert symmetry_from_patches({"car": body, "side": pts}, {"car": "wall", "side": "symmetry"}).axis == 1
    assert symmetry_from_patches({"car": body, "inlet": pts}) is None
    with pytest.raises(SymmetryError, match="case7: the symmetry patches are not one plane"):
        symmetry_from_patches({"sym1": pts, "sym2": pts + torch.tensor([0.0, 1.0, 0.0], dtype=pts.dtype)}, where="case7")


# ----------------------------------------------------------------------------- kept / mapped
@pytest.mark.parametrize("ext", [".vtp", ".vtu", ".vtk", ".npz"])
def test_files_round_trip_the_plane(half, tmp_path, ext):
    _, _, g = half
    h = g.replace(symmetry=("z", 0.25)) if ext == ".vtk" else g
    back = geoop.read(geoop.write(h, tmp_path / f"half{ext}"))
    assert back.symmetry == h.symmetry
    assert geoop.read(geoop.write(h.replace(symmetry=None), tmp_path / f"plain{ext}")).symmetry is None


def test_replace_select_to_and_normalisation_keep_and_map_the_plane(half):
    v, f, g = half
    g = g.replace(symmetry=("y", 0.0))
    assert g.with_fields(p=torch.zeros(g.n_points)).symmetry == g.symmetry
    assert g.select(torch.arange(5)).symmetry == g.symmetry and g.to(dtype=torch.float32).symmetry == g.symmetry
    q = torch.tensor(np.random.default_rng(1).uniform(-2.5, 2.5, (500, 3)))
    ref = geoop.Geometry(torch.tensor(reference_full_body(v, f).vertices), faces=torch.tensor(reference_full_body(v, f).faces))
    for T in (g.normalization(), g.normalization(isotropic=False, margin=0.1)):
        gn = T.apply_geometry(g)
        seam = g.points[g.points[:, 1] == 0]
        assert float(gn.symmetry.distance(T.apply(seam)).abs().max()) < 1e-12  # the seam stays on the plane
        assert np.allclose(T.inverse_geometry(gn).symmetry.to_list(), g.symmetry.to_list(), atol=1e-12)
        if bool(torch.allclose(T.scale, T.scale[:1].expand(3))):  # isotropic: distances scale by 1 / scale
            got = gn.sdf(T.apply(q), backend="trimesh")
            want = ref.sdf(q, backend="trimesh") / T.scale[0]
            assert float((got - want).abs().max()) < 1e-9
    with pytest.raises(SymmetryError, match="oblique"):
        g.replace(symmetry={"normal": [0, 1, 1], "offset": 0.0})._affine(torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]))


def test_batches_give_the_plane_back(half):
    _, _, g = half
    b = geoop.GeometryBatch.from_geometries([g, g.replace(symmetry=None)])
    assert [x.symmetry for x in b.unbatch()] == [g.symmetry, None]
    assert [x.symmetry for x in b.to("cpu").unbatch()] == [g.symmetry, None]


def test_latent_sdf_of_a_half_body_is_signed(half):
    """The model's latent "sdf" feature of a half body: negative at latent nodes inside the
    full body on both sides of the plane."""
    from geoop.models.features import latent_sdf

    v, f, g = half
    ref = reference_full_body(v, f)

    class Grid:  # the two members latent_sdf uses
        latent_shape = (9, 7, 5)

        def latent_points(self):
            axes = [torch.linspace(lo, hi, n, dtype=torch.float64) for lo, hi, n in
                    zip((-2.0, -0.8, -0.5), (2.5, 0.8, 0.7), self.latent_shape)]
            return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedSDFWarning)
        lat = latent_sdf(Grid(), g).reshape(-1)
    nodes = Grid().latent_points()
    inside = torch.from_numpy(ref.contains(nodes.numpy()))
    assert inside[nodes[:, 1] < 0].sum() > 5 and bool((lat[inside] < 0).all()) and bool((lat[~inside] > 0).all())


# ----------------------------------------------------------------------------- forces
@pytest.mark.parametrize("center", [None, (0.3, 0.2, -0.1)])
def test_half_body_forces_equal_the_mirrored_closed_body_forces(half, center):
    """Full-body loads from the half (normal force component cancelled, the rest doubled; moments
    about in-plane axes cancelled) against the explicitly mirrored body with mirrored data."""
    from geoop.physics import forces

    v, f, g = half
    V, F = torch.tensor(v), torch.tensor(f)
    p = torch.sin(V[:, 0]) + 0.3 * V[:, 1] + V[:, 2] ** 2
    tau = torch.stack([torch.cos(V[:, 1]), 0.2 * V[:, 0], V[:, 2]], 1)
    h = g.with_fields(p=p, tau=tau)
    R = torch.tensor([1.0, -1.0, 1.0], dtype=V.dtype)  # no seam welding needed for the quadrature
    full = geoop.Geometry(torch.cat([V, V * R]), faces=torch.cat([F, F.flip(1) + len(V)]),
                          fields={"p": torch.cat([p, p]), "tau": torch.cat([tau, tau * R])})
    got = forces(h, "p", "tau", moment_center=center, area=2.0, length=4.0, p_inf=0.7)
    want = forces(full, "p", "tau", moment_center=center, area=2.0, length=4.0, p_inf=0.7, orientation="cells")
    for a in ("force", "moment", "pressure_force", "shear_force", "pressure_moment", "shear_moment"):
        assert torch.allclose(getattr(got, a), getattr(want, a), atol=1e-12), a
    assert got.coefficients == pytest.approx(want.coefficients, abs=1e-12)
    assert abs(float(got.force[1])) < 1e-12  # the side force cancels
    if center is None:  # about a point on the plane, roll and yaw cancel: only the pitching moment is left
        assert abs(float(got.moment[0])) < 1e-12 and abs(float(got.moment[2])) < 1e-12 and abs(float(got.moment[1])) > 1e-3
    assert got.reference["symmetry"] == [0.0, 1.0, 0.0, 0.0]
    half_only = forces(h, "p", "tau", moment_center=center, area=2.0, symmetry=None, orientation="cells")
    assert torch.allclose(got.force[[0, 2]], 2 * half_only.force[[0, 2]], atol=1e-12)
    # a training config's metrics_reference gives the plane for surfaces read without it
    from geoop.train.metrics import coefficients, resolve_reference

    ref = resolve_reference({"symmetry": ["y", 0.0], "area": 2.0, "length": 4.0, "p_inf": 0.7, "moment_center": center})
    pred, _ = coefficients(h.replace(symmetry=None), p, None, ref, ["cd", "cl", "cs"], tau, None)
    assert pred == pytest.approx({k: want.coefficients[k] for k in ("cd", "cl", "cs")}, abs=1e-12)
    # with point normals (CFD exports) the same answer
    with_n = forces(h.compute_normals(), "p", "tau", moment_center=center, area=2.0, length=4.0, p_inf=0.7)
    assert torch.allclose(with_n.force, want.force, atol=1e-12)


def test_half_polyline_forces_equal_the_closed_polygon_forces():
    """2-D: the upper half of a polygon with a declared plane y = 0 against the whole polygon."""
    from geoop.physics import forces

    th = np.linspace(0, np.pi, 25)
    arc = torch.tensor(np.stack([1.5 * np.cos(th) + 0.2, 0.6 * np.sin(th)], 1))
    arc[0, 1] = arc[-1, 1] = 0.0
    half = geoop.Geometry(arc, torch.stack([torch.arange(24), torch.arange(1, 25)], 1), symmetry="y")
    ring = torch.cat([arc, arc[1:-1].flip(0) * torch.tensor([1.0, -1.0], dtype=arc.dtype)])  # counter-clockwise
    n = ring.shape[0]
    whole = geoop.Geometry(ring, torch.stack([torch.arange(n), (torch.arange(n) + 1) % n], 1))
    p_half = arc[:, 0] ** 2 + 0.5 * arc[:, 1]
    p_whole = ring[:, 0] ** 2 + 0.5 * ring[:, 1].abs()
    got = forces(half, p_half, moment_center=(0.25, 0.0))
    want = forces(whole, p_whole, moment_center=(0.25, 0.0))
    assert torch.allclose(got.force, want.force, atol=1e-12) and torch.allclose(got.moment, want.moment, atol=1e-12)
    assert abs(float(got.force[1])) < 1e-12 and abs(float(got.force[0])) > 1e-3  # lift cancels, drag doubles


# ----------------------------------------------------------------------------- mirror
def test_mirror_flips_points_normals_winding_and_vector_fields(half):
    _, _, g = half
    g = g.compute_normals()
    U = torch.randn(g.n_points, 3, dtype=g.dtype)
    m = mirror(g.with_fields(U=U, p=U[:, :1], uv=U[:, :2]), ("y", 0.0))
    R = torch.tensor([1.0, -1.0, 1.0], dtype=g.dtype)
    assert torch.equal(m.points, g.points * R) and torch.allclose(m.normals, g.normals * R)
    assert torch.equal(m.fields["U"], U * R) and torch.equal(m.fields["p"], U[:, :1]) and torch.equal(m.fields["uv"], U[:, :2])
    # winding reversed: normals computed from the mirrored cells are the mirrored normals (outward stays outward)
    assert torch.allclose(m.replace(normals=None).compute_normals().normals, g.normals * R, atol=1e-9)
    assert torch.allclose(m.weights, g.weights)
    twice = mirror(m, ("y", 0.0))
    assert torch.equal(twice.points, g.points) and torch.equal(twice.cells["triangle"], g.cells["triangle"])
    explicit = mirror(g.with_fields(U=U, W=U), "y", vector_fields=["U"])
    assert torch.equal(explicit.fields["W"], U) and torch.equal(explicit.fields["U"], U * R)
    with pytest.raises(FieldError, match="'V' to mirror is missing"):
        mirror(g, "y", vector_fields=["V"])
    with pytest.raises(FieldError, match="'uv' to mirror must have 3 components"):
        mirror(g.with_fields(uv=U[:, :2]), "y", vector_fields=["uv"])
    fb = full_body(g.with_fields(U=U))
    assert fb.n_points == 2 * g.n_points - int((g.points[:, 1] == 0).sum()) and fb.symmetry is None
    assert torch.equal(fb.fields["U"][g.n_points:], (U * R)[g.points[:, 1] != 0])


# ----------------------------------------------------------------------------- body normalisation
def _write_cases(root, scales=(1.0, 1.3, 0.8, 1.1)):
    """Half bodies of different lengths, each surface with ``p`` and the symmetry plane."""
    names = []
    for i, s in enumerate(scales):
        v, f = half_body(nt=10, nphi=6)
        g = geoop.Geometry(torch.tensor(v * s), faces=torch.tensor(f), symmetry=("y", 0.0))
        g = g.compute_normals().with_fields(p=torch.tensor(v[:, 0] * s), U=torch.tensor(v * [1.0, 2.0, 3.0]))
        geoop.write(g, root / f"c{i}.vtp")
        names.append(f"c{i}")
    (root / "split.json").write_text(json.dumps({"train": names[:3], "test": names[3:]}))
    return names


def test_body_box_of_a_known_body():
    from geoop.data.preprocess import body_box

    # a box body [0, 4] x [0, 1] x [0.2, 1.5] (half, y >= 0; the full body is 2 wide): L = 4
    pts = torch.tensor([[x, y, z] for x in (0.0, 4.0) for y in (0.0, 1.0) for z in (0.2, 1.5)], dtype=torch.float64)
    body = geoop.Geometry(pts)
    margins = {"x": [1.0, 3.0], "y": [0.5, 1.0], "z": [0.05, 1.0]}
    lo, hi = body_box(body, margins)
    assert lo.tolist() == [-4.0, -2.0, 0.0] and hi.tolist() == [16.0, 5.0, 5.5]
    lo, hi = body_box(body.replace(symmetry=("y", 0.0)), margins)  # the box starts at the plane
    assert lo.tolist() == [-4.0, 0.0, 0.0] and hi.tolist() == [16.0, 5.0, 5.5]
    lo, hi = body_box(body.replace(points=pts * torch.tensor([1.0, -1.0, 1.0], dtype=pts.dtype), symmetry="y"), margins)
    assert lo.tolist() == [-4.0, -3.0, 0.0] and hi.tolist() == [16.0, 0.0, 5.5]  # a half on the -y side
    # the full body is wider than long: L is the full width
    wide = geoop.Geometry(pts * torch.tensor([1.0, 3.0, 1.0], dtype=pts.dtype), symmetry="y")
    assert body_box(wide, {"x": [1.0, 1.0]})[0][0] == -6.0
    with pytest.raises(DatasetError, match="body_margins\\['x'\\]"):
        body_box(body, {"x": [-1.0, 1.0]})
    with pytest.raises(DatasetError, match="unknown axis 'w'"):
        body_box(body, {"w": [1.0, 1.0]})


@pytest.mark.parametrize("rule", ["body", "body_case"])
def test_body_rule_fits_the_latent_box_to_the_body(tmp_path, rule):
    from geoop.data import MeshFolderDataset
    from geoop.data.preprocess import body_box

    _write_cases(tmp_path)
    margins = {"x": [1.0, 3.0], "y": [0.0, 1.0], "z": [0.5, 1.0]}
    if rule == "body":
        ds = MeshFolderDataset(tmp_path, targets=["p"], input_file="{case}.vtp", geometry_normalization=rule,
                               body_margins=margins, isotropic=False)
    else:  # the typed settings group (a config's [data.normalization]) says the same
        ds = MeshFolderDataset(tmp_path, targets=["p"], input_file="{case}.vtp",
                               normalization={"geometry": rule, "body_margins": margins, "isotropic": False})
    raws = [ds._raw(c) for c in ds.train_cases]
    boxes = [body_box(gin, margins) for gin, _ in raws]
    if rule == "body":  # one frame: the union of the training bodies' boxes is [0, 1]^3
        lo = torch.stack([b[0] for b in boxes]).min(0).values
        hi = torch.stack([b[1] for b in boxes]).max(0).values
        T = ds.normalizers.transform
        assert torch.allclose(T.apply(torch.stack([lo, hi])), torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64))
        assert float(lo[1]) == 0.0  # starts at the symmetry plane
    else:  # each case's own body box is [0, 1]^3
        for (gin, gq), (lo, hi) in zip(raws, boxes):
            T = ds.preprocessor.transform_for(gin, gq)
            assert torch.allclose(T.apply(torch.stack([lo, hi])), torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64))
    item = ds[0]
    x = item.geometry.points.double()
    T = type(ds.normalizers.transform or T).from_state_dict(item.meta["transform"])
    assert torch.allclose(T.inverse(x), ds._raw(ds.cases[0])[0].points.double(), atol=1e-6)  # round trip
    assert item.geometry.symmetry is not None and item.geometry.symmetry.describe() == "y = 0"  # plane mapped along


@pytest.mark.slow
def test_body_rule_is_restored_from_the_checkpoint(tmp_path, capsys):
    """geoop train with the "body" rule; load_trained / geoop predict rebuild it from the
    checkpoint alone: the same transform, margins and symmetry, the body box at [0, 1]^3."""
    import tomli_w

    from geoop.cli.main import main
    from geoop.data.preprocess import body_box
    from geoop.train.run import load_trained

    root = tmp_path / "cases"
    root.mkdir()
    names = _write_cases(root)
    margins = {"x": [1.0, 2.0], "y": [0.0, 1.0], "z": [0.5, 0.5]}
    cfg = {"seed": 1, "device": "cpu",
           "data": {"folder": str(root), "inputs": [], "targets": ["p"], "input_file": "{case}.vtp", "val_split": "",
                    "geometry_normalization": "body", "body_margins": margins, "isotropic": False, "latent_sdf": True},
           "model": {"latent": {"kind": "box", "shape": [6, 4, 4]}, "encoder": {"radius_cells": 1.6, "mlp": [8], "inputs": ["normals"]},
                     "decoder": {"radius_cells": 1.6, "mlp": [8]}, "blocks": {"kind": "fno", "width": 8, "modes": 2, "layers": 1}},
           "optim": {"epochs": 1, "batch_size": 2}, "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "run.toml").write_text(tomli_w.dumps(cfg))
    assert main(["train", str(tmp_path / "run.toml"), "--no-progress"]) == 0
    tm = load_trained(tmp_path / "run" / "last.pt")
    pre = tm.preprocessor
    assert pre.geometry_normalization == "body" and pre.body_margins == {k: tuple(v) for k, v in margins.items()}
    gins = [pre.read_case(root / f"{c}.vtp")[0] for c in names[:3]]
    boxes = [body_box(g, margins) for g in gins]
    lo = torch.stack([b[0] for b in boxes]).min(0).values
    hi = torch.stack([b[1] for b in boxes]).max(0).values
    T = pre.normalizers.transform
    assert torch.allclose(T.apply(torch.stack([lo, hi])), torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64))
    sample, T2 = pre.prepare(geoop.read(root / f"{names[3]}.vtp"))
    assert torch.equal(T2.shift, T.shift) and sample.geometry.symmetry.describe() == "y = 0"
    out = tmp_path / "pred.vtp"
    assert main(["predict", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--geometry", str(root / f"{names[3]}.vtp"),
                 "--out", str(out)]) == 0
    assert torch.isfinite(geoop.read(out).fields["p"]).all()


def test_mirror_augmentation_doubles_the_training_cases(tmp_path):
    from geoop.data import MeshFolderDataset

    _write_cases(tmp_path)
    kw = dict(targets=["p", "U"], input_file="{case}.vtp", geometry_normalization="none", normalize=False)
    plain = MeshFolderDataset(tmp_path, **kw)
    aug = MeshFolderDataset(tmp_path, mirror={"plane": ["y", 0.0], "vector_fields": ["U"]}, **kw)
    assert aug.cases == plain.cases + [c + "@mirror" for c in plain.cases]
    a, b = plain[0], aug[len(plain)]
    R = torch.tensor([1.0, -1.0, 1.0])
    assert torch.allclose(b.geometry.points, a.geometry.points * R)
    assert torch.allclose(b.queries.fields["U"], a.queries.fields["U"] * R) and torch.equal(b.queries.fields["p"], a.queries.fields["p"])
    test = MeshFolderDataset(tmp_path, split="test", mirror="y", **kw)  # augmentation is for training only
    assert not any(c.endswith("@mirror") for c in test.cases)
    # the statistics and the box include the copies, alike in every split
    fit = dict(kw, normalize=True, geometry_normalization="dataset", mirror="y")
    tr, te = MeshFolderDataset(tmp_path, **fit), MeshFolderDataset(tmp_path, split="test", **fit)
    assert torch.equal(tr.normalizers.transform.shift, te.normalizers.transform.shift)
    assert torch.equal(tr.normalizers["U"].mean, te.normalizers["U"].mean)
    assert abs(float(tr.normalizers["U"].mean[1])) < 1e-6  # the mirrored copies cancel U_y on average
    lo = tr.normalizers.transform.apply(torch.stack([g.points.double() for g in (tr._raw(c)[0] for c in tr.cases)]).reshape(-1, 3))
    assert float(lo.min()) >= -1e-9 and float(lo.max()) <= 1 + 1e-9  # mirrored cases inside the unit box
    with pytest.raises(DatasetError, match="mirror must be"):
        MeshFolderDataset(tmp_path, mirror={"plan": "y"}, **kw)


def test_mirror_keeps_volume_cells_and_polyhedra_positive():
    """Reflected tetra/hex/wedge/pyramid cells and polyhedra are reordered to keep their
    orientation: the mirrored snappyHexMesh fixture has the same cell volumes and centroids
    mirrored."""
    from pathlib import Path

    from geoop.geometry.polyhedra import fixed_volumes_centroids

    g = geoop.read(Path(__file__).parent / "data" / "openfoam_flange", fields=[])
    assert g.polyhedra is not None and len(g.cells) >= 1
    m = mirror(g, ("x", 0.1))
    R = torch.tensor([-1.0, 1.0, 1.0], dtype=g.dtype)
    vol, cen = g.polyhedra.volumes_centroids(g.points.double())
    mvol, mcen = m.polyhedra.volumes_centroids(m.points.double())
    assert bool((vol > 0).all()) and torch.allclose(mvol, vol) and torch.allclose(mcen, cen * R.double() + torch.tensor([0.2, 0, 0], dtype=torch.float64))
    for k, c in g.cells.items():
        if k in ("tetra", "pyramid", "wedge", "hexahedron"):
            v0, _ = fixed_volumes_centroids(g.points.double(), k, c)
            v1, _ = fixed_volumes_centroids(m.points.double(), k, m.cells[k])
            assert bool((v0 > 0).all()) and torch.allclose(v1, v0), k
    assert torch.allclose(m.weights, g.weights) and bool((m.weights > 0).all())


# ----------------------------------------------------------------------------- OpenFOAM patches
def _foam_file(cls: str, obj: str, body: str, location: str = "constant/polyMesh") -> str:
    return (f'FoamFile\n{{\n    version 2.0;\n    format ascii;\n    class {cls};\n    location "{location}";\n'
            f"    object {obj};\n}}\n{body}")


def write_box_case(root, n=(4, 2, 2), hi=(2.0, 1.0, 1.0), sym_name="symmetryPlane", sym_type="symmetryPlane"):
    """An OpenFOAM polyMesh of the box [0, hi] (n hexahedra per axis) written by hand: the
    y = 0 face is the patch ``sym_name`` of type ``sym_type``, the five others the wall patch
    ``body``."""
    from pathlib import Path

    root = Path(root)
    pm = root / "constant" / "polyMesh"
    pm.mkdir(parents=True)
    (root / "system").mkdir()
    (root / "system" / "controlDict").write_text(_foam_file("dictionary", "controlDict", "application simpleFoam;\n"
                                                            "startTime 0;\nendTime 1;\ndeltaT 1;\n", "system"))
    pts = np.stack(np.meshgrid(*[np.linspace(0, h, k + 1) for h, k in zip(hi, n)], indexing="ij"), -1).reshape(-1, 3)
    pid = np.arange(pts.shape[0]).reshape(*(k + 1 for k in n))
    cid = np.arange(int(np.prod(n))).reshape(n)
    internal, wall, sym = [], [], []
    for axis in range(3):
        u, v = [np.eye(3, dtype=int)[a] for a in range(3) if a != axis]
        for o in np.ndindex(*(k + (a == axis) for a, k in enumerate(n))):
            o = np.array(o)
            face = [pid[tuple(o)], pid[tuple(o + u)], pid[tuple(o + u + v)], pid[tuple(o + v)]]
            if np.cross(pts[face[1]] - pts[face[0]], pts[face[3]] - pts[face[0]])[axis] < 0:
                face = face[::-1]  # normal along +axis
            below, above = o - np.eye(3, dtype=int)[axis], o
            inside = [all(0 <= c[a] < n[a] for a in range(3)) for c in (below, above)]
            if all(inside):  # owner below, normal towards the neighbour
                internal.append((face, cid[tuple(below)], cid[tuple(above)]))
            elif inside[1]:  # the lower boundary: outward is -axis
                (sym if axis == 1 else wall).append((face[::-1], cid[tuple(above)]))
            else:
                wall.append((face, cid[tuple(below)]))
    internal.sort(key=lambda t: (t[1], t[2]))
    faces = [f for f, *_ in internal] + [f for f, _ in wall] + [f for f, _ in sym]
    owner = [c for _, c, _ in internal] + [c for _, c in wall] + [c for _, c in sym]

    def lst(items):
        return f"{len(items)}\n(\n" + "\n".join(items) + "\n)\n"

    (pm / "points").write_text(_foam_file("vectorField", "points", lst([f"({a:.9g} {b:.9g} {c:.9g})" for a, b, c in pts])))
    (pm / "faces").write_text(_foam_file("faceList", "faces", lst([f"4({' '.join(map(str, f))})" for f in faces])))
    (pm / "owner").write_text(_foam_file("labelList", "owner", lst([str(c) for c in owner])))
    (pm / "neighbour").write_text(_foam_file("labelList", "neighbour", lst([str(c) for *_, c in internal])))
    patches = [("body", "wall", len(wall), len(internal)), (sym_name, sym_type, len(sym), len(internal) + len(wall))]
    (pm / "boundary").write_text(_foam_file("polyBoundaryMesh", "boundary", lst(
        [f"{nm}\n{{\n    type {t};\n    nFaces {k};\n    startFace {s0};\n}}" for nm, t, k, s0 in patches])))
    return root


@pytest.mark.parametrize("sym_name,sym_type,expect", [("symmetryPlane", "symmetryPlane", "y = 0"),
                                                      ("side", "symmetry", "y = 0"), ("bottom", "wall", None)])
def test_openfoam_patch_surface_gets_the_plane_of_the_symmetry_patch(tmp_path, sym_name, sym_type, expect):
    """A box mesh whose y = 0 face is the symmetry patch (by type, whatever its name): the
    surface of the other walls read as a patch is a half body on y = 0, signed SDF; a y = 0
    patch of another type gives no plane (and the open surface warns)."""
    pytest.importorskip("pyvista")
    case = write_box_case(tmp_path / "case", sym_name=sym_name, sym_type=sym_type)
    g = geoop.read(case, region="body", fields=[])
    q = torch.tensor([[1.0, 0.5, 0.5], [1.0, -0.5, 0.5], [1.0, 1.5, 0.5]], dtype=g.dtype)
    if expect is None:
        assert g.symmetry is None
        with pytest.warns(UnsignedSDFWarning):
            g.sdf(q)
        return
    assert g.symmetry is not None and g.symmetry.describe() == expect
    assert torch.allclose(g.sdf(q), torch.tensor([-0.5, -0.5, 0.5], dtype=g.dtype), atol=1e-6)
    vol = geoop.read(case, fields=[])
    assert vol.symmetry is None and float(vol.weights.sum()) == pytest.approx(2.0)  # the volume mesh: closed already


def test_faces_lying_in_the_plane_are_dropped_when_closing(half):
    """A mesher can leave faces lying in the symmetry plane at a body's tip (snappyHexMesh
    does): such a face and its mirror bound no volume. The half body with such a face closes
    to the same watertight body, and its SDF is signed and equals the one without it."""
    from geoop.geometry.sdf import is_watertight

    v, f, g = half
    n0 = v.shape[0] - 2  # the tip at x = a, on the plane
    i00 = 0  # first ring, phi = 0: on the plane; the edge (i00, n0) is an open-boundary edge
    c = (v[n0] + v[i00]) / 2 + [0.0, 0.0, -0.05]  # a third vertex on the plane
    v2 = np.concatenate([v, [c]])
    f2 = np.concatenate([f, [[n0, i00, len(v)]]])  # wound against its neighbour's use of the edge
    g2 = geoop.Geometry(torch.tensor(v2), faces=torch.tensor(f2), symmetry=("y", 0.0), name="half-with-tip-face")
    fb = full_body(g2, vector_fields=())
    assert fb.faces.shape[0] == 2 * f.shape[0] and is_watertight(fb.faces)
    q = torch.tensor(np.random.default_rng(1).uniform([-2.5, -1.5, -1.2], [2.8, 1.5, 1.5], (500, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsignedSDFWarning)
        got = g2.sdf(q)
    assert float((got - g.sdf(q)).abs().max()) <= 1e-9
