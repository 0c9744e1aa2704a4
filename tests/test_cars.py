"""Tests of the mini_car loader (geoop.data.cars) and of the car pressure example."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from geoop.data.cars import (
    MINI_CAR_KEYS,
    load_mini_car,
    load_mini_car_records,
    load_mini_car_samples,
    reconstruct_faces,
)
from geoop.errors import DatasetError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "mini_car.pt"


@pytest.fixture(scope="module")
def raw():
    return torch.load(DATA, weights_only=True)


@pytest.fixture(scope="module")
def cars():
    return load_mini_car(DATA)


def _edge_counts(faces: np.ndarray) -> np.ndarray:
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), 1)
    return np.unique(e, axis=0, return_counts=True)[1]


def test_loader_shapes_and_values(cars, raw):
    assert [g.name for g in cars] == ["car_0", "car_1", "car_2"]
    for g, r in zip(cars, raw):
        assert g.points.shape == (3586, 3) and g.points.dtype == torch.float32
        assert torch.equal(g.points, r["vertices"])
        assert torch.equal(g.fields["pressure"], r["press"].T)
        assert g.fields["pressure"].shape == (3586, 1)
        assert torch.allclose(g.normals.norm(dim=1), torch.ones(3586), atol=1e-3)
        assert g.points.min() >= 0 and g.points.max() <= 1


def test_reconstructed_triangles_match_the_stored_centroids_and_normals(cars, raw):
    from geoop.geometry.measures import vertex_normals

    for g, r in zip(cars, raw):
        f = g.faces
        assert f.shape == (7168, 3)
        # every stored centroid is the mean of its recovered triangle
        assert torch.allclose(g.points[f].mean(1), r["centroids"], atol=1e-6)
        # a closed 2-manifold: F = 2N - 4 and every edge in exactly two triangles
        assert (_edge_counts(f.numpy()) == 2).all()
        # orientation agrees in sign with the stored (unscaled-coordinates) triangle normals
        cr = torch.cross(g.points[f[:, 1]] - g.points[f[:, 0]], g.points[f[:, 2]] - g.points[f[:, 0]], dim=1)
        assert ((cr * r["triangle_normals"]).sum(1) > 0).all()
        # independent check of the connectivity: area-weighted normals of the recovered
        # triangles agree with the stored vertex normals
        cos = (vertex_normals(g.points, g.cells) * r["vertex_normals"]).sum(1)
        assert cos.median() > 0.9 and (cos > 0).float().mean() > 0.97
        # lumped vertex areas: positive, summing to the area of the recovered triangles
        area = 0.5 * cr.norm(dim=1).sum()
        assert (g.weights > 0).all()
        assert torch.allclose(g.weights.sum(), area, rtol=1e-5)


def test_reconstruct_faces_recovers_a_known_mesh():
    trimesh = pytest.importorskip("trimesh")
    mesh = trimesh.creation.icosphere(subdivisions=2)
    V = torch.as_tensor(np.array(mesh.vertices), dtype=torch.float64)
    F = torch.as_tensor(np.array(mesh.faces), dtype=torch.long)
    perm = torch.randperm(F.shape[0], generator=torch.Generator().manual_seed(0))
    F = F[perm]
    normals = torch.as_tensor(np.array(mesh.face_normals), dtype=torch.float64)[perm]
    got = reconstruct_faces(V, V[F].mean(1), normals)
    # same triangles, in the order of the centroids, with the same orientation (cyclic shift)
    assert {tuple(sorted(t)) for t in got.tolist()} == {tuple(sorted(t)) for t in F.tolist()}
    for a, b in zip(got.tolist(), F.tolist()):
        assert a in (b, b[1:] + b[:1], b[2:] + b[:2])


def test_point_cloud_mode_has_uniform_weights():
    g = load_mini_car(DATA, faces=False)[1]
    assert g.faces is None
    assert torch.allclose(g.weights, torch.full((3586,), 1 / 3586))


def test_samples_carry_the_signed_distance_in_the_gino_latent_order(raw):
    from scipy.spatial import cKDTree

    from geoop.neighbors.grid import grid_points

    samples = load_mini_car_samples(DATA)
    grid = grid_points((16, 16, 16), [[0.0] * 3, [1.0] * 3])
    for s, r in zip(samples, raw):
        assert s.latent_features.shape == (1, 16, 16, 16)
        assert torch.allclose(s.meta["latent_points"].reshape(-1, 3), grid, atol=1e-6)
        phi = s.latent_features.reshape(-1)
        # |sdf| is at most the distance to the nearest vertex (a surface point), and close
        # to it on this fine mesh; both signs occur (grid nodes inside and outside the car)
        dv, iv = cKDTree(r["vertices"].numpy()).query(grid.numpy())
        dv = torch.as_tensor(dv, dtype=torch.float32)
        assert (phi.abs() <= dv + 1e-4).all()
        assert (dv - phi.abs()).median() < 0.01
        # the sign agrees with the side of the nearest vertex's stored (outward) normal
        side = ((grid - r["vertices"][iv]) * r["vertex_normals"][iv]).sum(1)
        clear = phi.abs() > 0.02
        assert (phi < 0).sum() > 100 and (phi > 0).sum() > 100
        assert ((side[clear] > 0) == (phi[clear] > 0)).float().mean() > 0.95
    stored = load_mini_car_samples(DATA, latent="distance")
    assert torch.equal(stored[0].latent_features.reshape(-1), raw[0]["distance"].reshape(-1))
    assert load_mini_car_samples(DATA, latent="none", faces=False)[0].latent_features is None
    with pytest.raises(DatasetError, match="valid choices"):
        load_mini_car_samples(DATA, latent="sdv")


# ------------------------------------------------------------------------------ errors
def _write(tmp_path, obj, name="car.pt"):
    p = tmp_path / name
    torch.save(obj, p)
    return p


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_mini_car(tmp_path / "nope.pt")


def test_garbage_file(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(DatasetError, match="junk.pt"):
        load_mini_car(p)


def test_not_a_list(tmp_path, raw):
    with pytest.raises(DatasetError, match="list of dicts"):
        load_mini_car(_write(tmp_path, raw[0]))


def test_missing_key_is_named(tmp_path, raw):
    bad = [dict(r) for r in raw]
    del bad[2]["press"]
    with pytest.raises(DatasetError, match=r"car 2.*missing key.*'press'"):
        load_mini_car(_write(tmp_path, bad))


def test_wrong_shape_names_key_expected_and_actual(tmp_path, raw):
    bad = [dict(r) for r in raw]
    bad[1]["press"] = bad[1]["press"][:, :100]
    with pytest.raises(DatasetError) as e:
        load_mini_car(_write(tmp_path, bad))
    msg = str(e.value)
    assert "car 1" in msg and "'press'" in msg and "(1, 100)" in msg and "(1, 3586)" in msg
    bad = [dict(r) for r in raw]
    bad[0]["distance"] = bad[0]["distance"][..., 0]
    with pytest.raises(DatasetError, match=r"'distance'.*\(16, 16, 16\).*expected \(16, 16, 16, 1\)"):
        load_mini_car(_write(tmp_path, bad))


def test_wrong_type_and_non_finite(tmp_path, raw):
    bad = [dict(r) for r in raw]
    bad[0]["vertices"] = bad[0]["vertices"].tolist()
    with pytest.raises(DatasetError, match="'vertices' must be a tensor"):
        load_mini_car(_write(tmp_path, bad))
    bad = [dict(r) for r in raw]
    v = bad[0]["vertex_normals"].clone()
    v[5, 1] = float("nan")
    bad[0]["vertex_normals"] = v
    with pytest.raises(DatasetError, match="'vertex_normals' has 1 non-finite"):
        load_mini_car(_write(tmp_path, bad))


class _Evil:  # pickled objects are refused (weights_only=True): nothing runs on load
    def __reduce__(self):
        return (print, ("executed",))


def test_pickled_objects_are_refused(tmp_path, raw):
    p = _write(tmp_path, [_Evil()])
    with pytest.raises(DatasetError, match="weights_only=True"):
        load_mini_car_records(p)


def test_expected_keys_are_documented():
    assert set(MINI_CAR_KEYS) == {"vertices", "vertex_normals", "press", "centroids", "triangle_normals",
                                  "triangle_areas", "query_points", "distance"}


# ------------------------------------------------------------------------------ example
def _example():
    spec = importlib.util.spec_from_file_location("car_pressure", ROOT / "examples" / "car_pressure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_split_and_two_training_steps_reduce_the_loss():
    ex = _example()
    torch.manual_seed(0)
    samples = load_mini_car_samples(DATA)
    train, test = ex.split_sample(samples[0], train_fraction=0.5, seed=3)
    n = samples[0].geometry.n_points
    assert train.geometry.n_points + test.n_points == n
    # disjoint: no held-out vertex is a training vertex
    d = torch.cdist(test.points, train.geometry.points).min(1).values
    assert (d > 0).all()
    model = ex.build_model(fno_width=8, fno_modes=2, fno_layers=1, gno_mlp=(16,))
    batch = ex.make_batch(model, [train])
    with torch.no_grad():
        before = float(ex.batch_loss(model, batch))
    losses = ex.train(model, batch, steps=2, lr=1e-2, log_every=0)
    with torch.no_grad():
        after = float(ex.batch_loss(model, batch))
    assert len(losses) == 2 and abs(losses[0] - before) < 1e-5
    assert after < before
    res = ex.evaluate(model, [train], [test])
    c = res["per_car"][0]
    assert c["n_test"] == test.n_points
    # the mean baseline of a normalised field is ~1; nearest neighbour is far better on this mesh
    assert 0.9 < c["mean"] < 1.1 and c["nearest"] < 0.6
    assert np.isfinite(c["gino"])
