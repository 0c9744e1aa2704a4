"""Model inputs by name (point features, computed latent SDF) and the SDF's sign for 2-D
bodies made of several chains."""
import math

import numpy as np
import pytest
import torch

from geoop.batch import GeometryBatch, Sample
from geoop.errors import ConfigError, FieldError
from geoop.geometry.geometry import Geometry
from geoop.geometry.sdf import closed_loop_segments, sdf
from geoop.models import GINO
from geoop.models.config import BoxLatent, EncoderSpec, FNOSpec, GNOSpec
from geoop.models.features import parse_point_feature, point_features

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the SDF of a car outline
def _car_with_intake():
    """A closed car-like outline (body with a cabin bump) plus an open intake duct: a chain
    entering the body at its nose and ending inside."""
    body = np.array([[0.0, 0.1], [0.1, 0.0], [0.9, 0.0], [1.0, 0.1], [1.0, 0.25], [0.75, 0.28], [0.6, 0.45],
                     [0.3, 0.45], [0.2, 0.3], [0.0, 0.25]])
    duct = np.array([[0.0, 0.18], [0.08, 0.18], [0.15, 0.15], [0.22, 0.16]])
    pts = np.concatenate([body, duct])
    nb = len(body)
    loop = [[i, (i + 1) % nb] for i in range(nb)]
    chain = [[nb + i, nb + i + 1] for i in range(len(duct) - 1)]
    return Geometry(torch.tensor(pts), cells={"line": torch.tensor(loop + chain)}), body, len(loop)


def test_sdf_sign_comes_from_the_closed_loop_of_a_body_with_an_open_chain():
    from matplotlib.path import Path as MplPath

    g, body, n_loop = _car_with_intake()
    mask = closed_loop_segments(g.cells["line"])
    assert mask[:n_loop].all() and not mask[n_loop:].any()
    rng = np.random.default_rng(0)
    q = torch.tensor(rng.uniform([-0.2, -0.2], [1.2, 0.6], size=(400, 2)))
    phi = sdf(g, q)
    inside = torch.from_numpy(MplPath(body).contains_points(q.numpy()))  # independent inside test
    # distance to every segment, the open duct included (brute force over a fine sampling)
    lines = g.cells["line"]
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)[:, None, None]
    samples = (g.points[lines[:, 0]] * (1 - t) + g.points[lines[:, 1]] * t).reshape(-1, 2)
    dist = torch.cdist(q, samples).min(1).values
    assert torch.allclose(phi.abs(), dist, atol=1e-3)
    far = dist > 1e-3
    assert torch.equal((phi < 0)[far], inside[far])
    assert inside.sum() > 50 and (~inside).sum() > 50


# ----------------------------------------------------------------------------- point features by name
def test_parse_point_features():
    assert parse_point_feature("normals").width(2) == 2
    assert parse_point_feature("coords").width(3) == 3
    assert parse_point_feature("U[0:2]").width(3) == 2
    assert parse_point_feature("U[2]").width(3) == 1
    assert parse_point_feature("const=2").value == 2.0
    with pytest.raises(ConfigError):
        parse_point_feature("U[:]")


def test_point_features_assemble_and_name_what_is_missing():
    pts = torch.rand(5, 2)
    nrm = torch.rand(5, 2)
    U = torch.rand(5, 3)
    x = point_features(["U[1:3]", "normals", "const=0.5", "coords"], pts, nrm, {"U": U})
    assert torch.equal(x, torch.cat([U[:, 1:3], nrm, torch.full((5, 1), 0.5), pts], 1))
    with pytest.raises(FieldError, match="'U\\[0:3\\]'"):
        point_features(["U"], pts, nrm, {"U": U})
    with pytest.raises(FieldError, match="p"):
        point_features(["p"], pts, nrm, {"U": U})
    with pytest.raises(FieldError, match="compute_normals"):
        point_features(["normals"], pts, None, {})


def _blob(seed, n=40):
    """A closed 2-D polyline (a wobbly circle) with normals, a point field ``p`` and, at
    random queries, the target ``t`` (depends on both inputs)."""
    g = torch.Generator().manual_seed(seed)
    th = torch.linspace(0, 2 * math.pi, n + 1)[:-1]
    r = 0.25 + 0.05 * torch.rand(1, generator=g)
    pts = torch.stack([0.5 + r * torch.cos(th), 0.5 + r * torch.sin(th)], 1)
    lines = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n], 1)
    p = torch.sin(3 * th + float(seed))[:, None]
    geom = Geometry(pts, cells={"line": lines}, fields={"p": p}).compute_normals()
    q = torch.rand(60, 2, generator=g)
    t = (q - 0.5).norm(dim=1, keepdim=True) * float(p.mean() + 1)
    return geom, Geometry(q, fields={"t": t})


def _model():
    torch.manual_seed(0)
    return GINO(out_channels=1, coord_dim=2, latent=BoxLatent(shape=(8, 8), features=("sdf",)),
                encoder=EncoderSpec(radius_cells=1.5, mlp=(16,), inputs=("normals", "p")),
                blocks=FNOSpec(width=8, modes=3, layers=1), decoder=GNOSpec(radius_cells=1.5, mlp=(16,)))


def test_model_with_normals_and_a_field_trains_and_queries_without_hand_made_features(tmp_path):
    from geoop.train import Trainer

    model = _model()
    assert model.in_channels == 3 and model.latent_channels == 1
    samples = [Sample(*_blob(s)) for s in range(4)]
    tr = Trainer(model, samples, targets=["t"], epochs=3, batch_size=2, lr=1e-2, progress=False)
    hist = tr.fit()
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    geom, q = _blob(9)
    model.eval()
    with torch.no_grad():
        y = model.query(geom, q.points, chunk_size=17)
        # the same by hand: features assembled independently, SDF from the geometry module
        x = torch.cat([geom.normals, geom.fields["p"]], 1).float()
        lf = sdf(geom, model.latent_points().double()).reshape(1, 8, 8).float()
        ref = model.query(geom.points, q.points, x=x, latent_features=lf)
        batch = GeometryBatch.from_geometries([geom], queries=[q])
        fwd = model(batch)
    assert y.shape == (60, 1)
    assert torch.allclose(y, ref, atol=1e-6)
    assert torch.allclose(fwd, ref, atol=1e-5)


def test_precompute_fills_latent_features_and_can_skip_the_decoder():
    model = _model()
    geom, q = _blob(1)
    s = model.precompute(Sample(geom, q))
    assert s.latent_features.shape == (1, 8, 8) and s.neighbors_out is not None
    s2 = model.precompute(Sample(geom, q), decoder=False)
    assert s2.neighbors_out is None and s2.neighbors_in is not None
    assert torch.equal(s2.neighbors_in.index, s.neighbors_in.index)


def test_field_width_mismatch_is_named():
    model = _model()
    geom, q = _blob(2)
    geom = geom.with_fields(p=torch.rand(geom.n_points, 2))
    with pytest.raises(FieldError, match="'p'"):
        model.query(geom, q.points)


def test_neighborhoods_select_matches_a_search_on_the_selected_queries():
    from geoop import radius_search

    g = torch.Generator().manual_seed(0)
    src, q = torch.rand(200, 2, generator=g), torch.rand(80, 2, generator=g)
    nb = radius_search(src, q, 0.15)
    rows = torch.tensor([5, 0, 79, 5, 33])
    sel = nb.select(rows)
    ref = radius_search(src, q[rows], 0.15)
    assert sel.to_sets() == ref.to_sets() and sel.num_sources == 200
    assert nb.select(torch.zeros(0, dtype=torch.long)).num_queries == 0
    with pytest.raises(Exception, match="query rows"):
        nb.select(torch.tensor([80]))
