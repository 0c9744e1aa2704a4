"""Tests of geoop.models.GINO: batching, invariances, gradients, chunked queries, sphere latent."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from geoop.batch import GeometryBatch, Sample
from geoop.errors import ConfigError, ShapeError
from geoop.geometry.geometry import Geometry
from geoop.models import GINO, sphere_grid_points

SMALL = dict(latent_shape=(8, 8, 8), radius_in=0.25, radius_out=0.25, fno_width=8, fno_modes=2, fno_layers=2,
             gno_mlp=(16, 16), n_freqs=3, projection_hidden=16)


def box_model(**kw):
    torch.manual_seed(0)
    cfg = dict(SMALL)
    cfg.update(kw)
    return GINO(2, 3, **cfg).double()


def blob(n, seed, center=(0.5, 0.5, 0.5), scale=0.3):
    g = torch.Generator().manual_seed(seed)
    pts = torch.tensor(center, dtype=torch.float64) + scale * (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5) * 2
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    w = torch.rand(n, generator=g, dtype=torch.float64)
    return Geometry(pts, weights=w, fields={"x": x})


def three_samples():
    geoms = [blob(50, 1), blob(80, 2, (0.4, 0.6, 0.5), 0.25), blob(30, 3, (0.6, 0.4, 0.45), 0.35)]
    queries = [blob(n, 10 + i).points for i, n in enumerate((20, 7, 33))]
    return geoms, queries


def batch_and_singles(model):
    """The three samples as one batch and as three single calls; asserts they agree (1e-5).
    Returns (geoms, queries, batch, batched output, single outputs)."""
    geoms, queries = three_samples()
    batch = GeometryBatch.from_geometries(geoms, queries)
    out = model(batch, batch.x(["x"]))
    assert out.shape == (60, 3) and torch.isfinite(out).all()
    singles = [model(GeometryBatch.from_geometries([g], [q]), g.fields["x"]) for g, q in zip(geoms, queries)]
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-5, atol=1e-7)
    return geoms, queries, batch, out, singles


def test_batch_equals_single_calls_and_precompute():
    model = box_model()
    geoms, queries, batch, out, _ = batch_and_singles(model)
    # precomputed neighbourhoods (outside forward), batched by collate
    samples = [model.precompute(Sample(g, Geometry(q, validate=False))) for g, q in zip(geoms, queries)]
    pb = GeometryBatch.from_samples(samples)
    assert pb.neighbors_in is not None and pb.neighbors_out is not None
    torch.testing.assert_close(model(pb, pb.x(["x"])), out, rtol=1e-10, atol=1e-12)
    # the encoder does something: changing sample 1's features changes only sample 1
    x2 = batch.x(["x"]).clone()
    x2[50:130] += 1.0
    out2 = model(batch, x2)
    torch.testing.assert_close(out2[:20], out[:20], rtol=0, atol=0)
    assert not torch.allclose(out2[20:27], out[20:27])


def test_weighted_reductions_batch_equals_single():
    model = box_model(gno_reduction_in="weighted", gno_reduction_out="weighted", gno_kernel_out="nonlinear")
    geoms, queries = three_samples()
    batch = GeometryBatch.from_geometries(geoms, queries)
    out = model(batch, batch.x(["x"]))
    singles = [model(GeometryBatch.from_geometries([g], [q]), g.fields["x"]) for g, q in zip(geoms, queries)]
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-5, atol=1e-7)


def test_permutations():
    model = box_model()
    g, _ = three_samples()
    g = g[0]
    q = blob(25, 7).points
    out = model.query(g, q, g.fields["x"])
    p = torch.randperm(g.n_points, generator=torch.Generator().manual_seed(0))
    gp = Geometry(g.points[p], weights=g.weights[p], fields={"x": g.fields["x"][p]})
    torch.testing.assert_close(model.query(gp, q, gp.fields["x"]), out, rtol=1e-5, atol=1e-8)
    pq = torch.randperm(25, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.query(g, q[pq], g.fields["x"]), out[pq], rtol=1e-5, atol=1e-8)


def test_gradients_do_not_leak_between_samples():
    model = box_model()
    geoms, queries = three_samples()
    batch = GeometryBatch.from_geometries(geoms, queries)
    x = batch.x(["x"]).clone().requires_grad_()
    batch.points.requires_grad_()
    out = model(batch, x)
    out[:20].sum().backward()  # sample 0's outputs only
    assert x.grad[:50].abs().sum() > 0
    assert torch.all(x.grad[50:] == 0)
    assert torch.all(batch.points.grad[50:] == 0) and batch.points.grad[:50].abs().sum() > 0


def test_query_in_chunks_equals_one_shot_and_forward():
    model = box_model()
    g = three_samples()[0][1]
    q = torch.rand(101, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        one = model.query(g, q, g.fields["x"], chunk_size=10_000)
        chunked = model.query(g, q, g.fields["x"], chunk_size=7)
        fwd = model(GeometryBatch.from_geometries([g], [q]), g.fields["x"])
    torch.testing.assert_close(chunked, one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fwd, one, rtol=1e-12, atol=1e-12)
    assert model.query(g, torch.zeros(0, 3, dtype=torch.float64), g.fields["x"]).shape == (0, 3)


def test_empty_query_set_in_batch():
    model = box_model()
    geoms, queries = three_samples()
    queries[1] = torch.zeros(0, 3, dtype=torch.float64)
    batch = GeometryBatch.from_geometries(geoms, queries)
    out = model(batch, batch.x(["x"]))
    assert out.shape == (53, 3)
    single0 = model(GeometryBatch.from_geometries([geoms[0]], [queries[0]]), geoms[0].fields["x"])
    torch.testing.assert_close(out[:20], single0, rtol=1e-5, atol=1e-7)


def test_no_input_point_in_any_latent_ball_is_finite_and_zero_encoded():
    model = box_model()
    far = blob(40, 5, center=(5.0, 5.0, 5.0), scale=0.1)
    nb = model.neighbors_in(far.points)
    assert nb.num_edges == 0
    lat = model._latent_points.double()
    enc = model.gno_in(far.points, lat, nb, far.fields["x"], None)
    assert torch.all(enc == 0)
    out = model.query(far, torch.rand(10, 3, dtype=torch.float64), far.fields["x"])
    assert torch.isfinite(out).all()
    # and inside a batch with a normal sample: the normal sample is unaffected
    g = three_samples()[0][0]
    q = torch.rand(5, 3, dtype=torch.float64)
    batch = GeometryBatch.from_geometries([far, g], [q, q])
    out_b = model(batch, batch.x(["x"]))
    assert torch.isfinite(out_b).all()
    torch.testing.assert_close(out_b[5:], model.query(g, q, g.fields["x"]), rtol=1e-5, atol=1e-8)


def test_shape_errors():
    model = box_model()
    geoms, queries = three_samples()
    batch = GeometryBatch.from_geometries(geoms, queries)
    with pytest.raises(ShapeError, match=r"\(160, 2\).*\(160, 3\)"):
        model(batch, torch.zeros(160, 3, dtype=torch.float64))
    with pytest.raises(ShapeError, match=r"\(160, 2\)"):
        model(batch, None)
    with pytest.raises(ShapeError, match="latent_features"):
        model(GeometryBatch.from_geometries(geoms, queries, latent_features=[torch.zeros(1, 8, 8, 8)] * 3), batch.x(["x"]))
    lf_model = box_model(latent_channels=1)
    with pytest.raises(ShapeError, match=r"\(3, 1, 8, 8, 8\)"):
        lf_model(batch, batch.x(["x"]))
    with pytest.raises(ShapeError, match=r"\(Q, 3\)"):
        model.query(geoms[0], torch.zeros(4, 2), geoms[0].fields["x"])


def test_config_errors_list_choices():
    with pytest.raises(ConfigError, match="sphere"):
        GINO(1, 1, latent="torus")
    with pytest.raises(ConfigError, match="kernel_only"):
        GINO(0, 1, gno_kernel_in="linear", **SMALL)
    with pytest.raises(ConfigError, match="unknown keys"):
        GINO.from_config({"in_channels": 1, "out_channels": 1, "widht": 3})


def test_config_roundtrip_latent_features_and_geometry_only():
    torch.manual_seed(0)
    model = GINO(0, 2, latent_channels=1, **SMALL).double()
    cfg = json.loads(json.dumps(model.config))
    clone = GINO.from_config(cfg).double()
    clone.load_state_dict(model.state_dict())
    geoms, queries = three_samples()
    g = torch.Generator().manual_seed(2)
    lf = [torch.rand(1, 8, 8, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    batch = GeometryBatch.from_geometries(geoms, queries, latent_features=lf)
    out = model(batch)
    torch.testing.assert_close(clone(batch), out, rtol=0, atol=0)
    batch2 = GeometryBatch.from_geometries(geoms, queries, latent_features=[t + 1 for t in lf])
    assert not torch.allclose(model(batch2), out)
    assert model.latent_points().shape == (512, 3)
    assert model.latent_points().min() == 0 and model.latent_points().max() == 1


def test_default_model_on_a_real_car():
    """Sensible defaults: GINO(in, out) on a car surface in the unit cube (16^3 latent)."""
    from geoop.data.cars import load_mini_car

    car = load_mini_car(Path(__file__).parent / "data" / "mini_car.pt", faces=False)[0]
    g = car.select(torch.arange(0, car.n_points, 4))
    queries = car.points[1::8]
    torch.manual_seed(0)
    model = GINO(3, 1, fno_modes=4)
    assert model.num_latent == 16**3
    out = model.query(g, queries, g.normals)
    assert out.shape == (queries.shape[0], 1) and torch.isfinite(out).all()


def test_sphere_grid_matches_torch_harmonics_ordering():
    """z = cos(theta) sampled on our nodes has a positive (l=1, m=0) coefficient under
    torch-harmonics' RealSHT, and nothing else: the colatitude order is the SHT's."""
    th = pytest.importorskip("torch_harmonics")
    pts, w = sphere_grid_points(12, 24, dtype=torch.float64)
    torch.testing.assert_close(pts.norm(dim=1), torch.ones(288, dtype=torch.float64))
    torch.testing.assert_close(w.sum(), torch.tensor(4 * math.pi, dtype=torch.float64))
    for grid in ("equiangular", "legendre-gauss"):
        pts, _ = sphere_grid_points(12, 24, grid, dtype=torch.float64)
        coeffs = th.RealSHT(12, 24, grid=grid).double()(pts[:, 2].reshape(12, 24))
        assert coeffs[1, 0].real > 2.0  # sqrt(4 pi / 3) = 2.047; negative if latitudes were flipped
        coeffs[1, 0] = 0
        # Gauss quadrature is exact; Clenshaw-Curtis aliases a little into the top degree only
        assert coeffs[:-1].abs().max() < 1e-10 and coeffs.abs().max() < (1e-10 if grid != "equiangular" else 1e-2)


def test_sphere_latent_end_to_end():
    pytest.importorskip("torch_harmonics")
    torch.manual_seed(0)
    model = GINO(1, 2, latent="sphere", latent_shape=(8, 16), radius_in=0.6, radius_out=0.6, fno_width=8,
                 fno_layers=2, gno_mlp=(16,), n_freqs=2, gno_reduction_in="weighted").double()
    geoms, queries = [], []
    for i, n in enumerate((60, 90)):
        g = torch.Generator().manual_seed(i)
        p = torch.randn(n, 3, generator=g, dtype=torch.float64)
        p = p / p.norm(dim=1, keepdim=True)
        geoms.append(Geometry(p, weights=torch.full((n,), 4 * math.pi / n, dtype=torch.float64), fields={"t": p[:, 2:]}))
        q = torch.randn(10 + 5 * i, 3, generator=g, dtype=torch.float64)
        queries.append(q / q.norm(dim=1, keepdim=True))
    batch = GeometryBatch.from_geometries(geoms, queries)
    x = batch.x(["t"]).requires_grad_()
    out = model(batch, x)
    assert out.shape == (25, 2) and torch.isfinite(out).all()
    singles = [model(GeometryBatch.from_geometries([g], [q]), g.fields["t"]) for g, q in zip(geoms, queries)]
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-5, atol=1e-8)
    out.sum().backward()
    assert x.grad.abs().sum() > 0
    assert model.latent_points().shape == (128, 3)


# ---------------------------------------------------------------- local geometry features
LOCAL = [dict(local_radius=0.15, local_channels=5), dict(local_nearest=True),
         dict(local_radius=0.15, local_channels=5, local_nearest=True)]


@pytest.mark.parametrize("kw", LOCAL)
def test_local_features_batch_equals_single_calls_and_chunked_query(kw):
    """The local branch / nearest-point features of a batch of different geometries equal
    single calls, GINO.query in chunks equals one shot and forward, and they change the output."""
    model = box_model(**kw)
    geoms, queries, batch, out, singles = batch_and_singles(model)
    with torch.no_grad():
        g, q = geoms[1], queries[1]
        one = model.query(g, q, g.fields["x"], chunk_size=10_000)
        chunked = model.query(g, q, g.fields["x"], chunk_size=3)
    torch.testing.assert_close(chunked, one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(singles[1].detach(), one, rtol=1e-12, atol=1e-12)
    # the features matter: zeroing their projection weights changes the answer
    with torch.no_grad():
        model.projection.net[0].weight[:, 8:] = 0
        assert not torch.allclose(model(batch, batch.x(["x"])), out)


@pytest.mark.parametrize("kw", LOCAL)
def test_local_features_permutation_invariant_and_sample_local(kw):
    model = box_model(**kw)
    g = three_samples()[0][0]
    q = torch.cat([blob(25, 7).points, g.points[:5]])  # queries on input points too (distance 0)
    out = model.query(g, q, g.fields["x"])
    p = torch.randperm(g.n_points, generator=torch.Generator().manual_seed(0))
    gp = Geometry(g.points[p], weights=g.weights[p], fields={"x": g.fields["x"][p]})
    torch.testing.assert_close(model.query(gp, q, gp.fields["x"]), out, rtol=1e-5, atol=1e-8)
    # gradients stay finite at distance 0 and do not leak between samples
    geoms, queries = three_samples()
    queries[0] = torch.cat([queries[0], geoms[0].points[:3]])
    batch = GeometryBatch.from_geometries(geoms, queries)
    x = batch.x(["x"]).clone().requires_grad_()
    batch.points.requires_grad_()
    model(batch, x)[:23].sum().backward()
    assert torch.isfinite(batch.points.grad).all() and torch.isfinite(x.grad).all()
    assert torch.all(x.grad[50:] == 0) and torch.all(batch.points.grad[50:] == 0)


def test_local_nearest_features_values():
    """The nearest-point features are the offset / distance to the nearest input point in
    units of the scale, and that point's features."""
    from geoop.models.gino import _nearest

    pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    qs = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.0, 0.0], [4.0, 5.0, 5.0]], dtype=torch.float64)
    idx, has = _nearest(pts, qs, torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]), 2)
    assert idx.tolist() == [1, 0, 1] and has.tolist() == [1.0, 1.0, 1.0]  # sample 1's point is not a candidate
    idx, has = _nearest(pts, qs, torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1]), 2)
    assert has.tolist() == [1.0, 0.0, 0.0]  # sample 1 has no point
    model = box_model(local_nearest=True)
    x = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    f = model._local_features(qs, pts, x, None, None, 1)[0]
    s = model.radius_out
    torch.testing.assert_close(f[0], torch.tensor([-0.1 / s, 0.1 / s, 0.0, math.sqrt(0.02) / s, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(f[1], torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64))


def test_local_config_roundtrip_and_errors():
    model = box_model(local_radius=0.1, local_channels=4, local_nearest=True)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["local"]["radius"] == 0.1 and cfg["local"]["nearest"] is True
    twin = GINO.from_config(cfg).double()
    twin.load_state_dict(model.state_dict())
    g, q = blob(40, 1), blob(9, 2).points
    torch.testing.assert_close(twin.query(g, q, g.fields["x"]), model.query(g, q, g.fields["x"]))
    assert box_model().gno_local is None and not box_model().local_nearest  # off by default
    with pytest.raises(ConfigError):
        box_model(local_radius=-1.0)
    with pytest.raises(ShapeError, match="input points"):
        model.decode(torch.zeros(1, 8, 8, 8, 8, dtype=torch.float64), q)


def test_checkpointed_encoder_gives_the_plain_gradients():
    """checkpoint_encoder=True (default: the encoder's edge MLP is recomputed in backward)
    gives the same outputs and parameter/input gradients as keeping its activations."""
    geoms, queries = three_samples()
    batch = GeometryBatch.from_geometries(geoms, queries)
    grads = []
    for ckpt in (True, False):
        model = box_model(checkpoint_encoder=ckpt)
        assert model.config["memory"]["checkpoint_encoder"] is ckpt
        assert model.gno_in.checkpoint == (True if ckpt else "auto")
        x = batch.x(["x"]).clone().requires_grad_()
        out = model(batch, x)
        out.square().sum().backward()
        grads.append((out.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (o1, x1, p1), (o2, x2, p2) = grads
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-12)
    torch.testing.assert_close(x1, x2, rtol=1e-10, atol=1e-12)
    assert p1.keys() == p2.keys() and any(n.startswith("gno_in.") for n in p1)
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], rtol=1e-9, atol=1e-12, msg=n)


def _block_saves(model) -> int:
    """Number of tensors that the latent blocks save for backward on a (2, width, *grid)
    input, as an outer saved-tensor hook sees them (a checkpointed block shows its input
    only; what it saves inside is recomputed in backward)."""
    count = [0]

    def pack(t):
        count[0] += 1
        return t

    h = torch.randn(2, model.blocks.channels, *model.latent_shape, dtype=torch.float64, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.blocks(h)
    return count[0]


@pytest.mark.parametrize("latent", ["box", "sphere"])
def test_checkpointed_latent_gives_the_plain_outputs_and_gradients(latent):
    """memory.checkpoint_latent recomputes every latent block in backward: the same outputs,
    input and parameter gradients as keeping the activations, and the blocks keep nothing
    for backward but their inputs."""
    if latent == "sphere":
        pytest.importorskip("torch_harmonics")
        kw = dict(latent={"kind": "sphere", "shape": [8, 16]}, encoder={"radius": 0.6, "mlp": [16]},
                  decoder={"radius": 0.6, "mlp": [16]}, blocks={"width": 8, "layers": 3})
    else:
        kw = dict(latent={"shape": [8, 8, 8]}, encoder={"radius": 0.25, "mlp": [16]}, decoder={"radius": 0.25, "mlp": [16]},
                  blocks={"width": 8, "modes": 2, "layers": 3})
    geoms, queries = three_samples()
    if latent == "sphere":  # points on the unit sphere
        geoms = [Geometry(g.points / g.points.norm(dim=1, keepdim=True), weights=g.weights, fields=g.fields) for g in geoms]
        queries = [q / q.norm(dim=1, keepdim=True) for q in queries]
    batch = GeometryBatch.from_geometries(geoms, queries)
    res, saves = [], []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = GINO(2, 3, memory={"checkpoint_latent": ckpt}, **kw).double()
        assert model.config["memory"]["checkpoint_latent"] is ckpt and model.blocks.checkpoint is ckpt
        x = batch.x(["x"]).clone().requires_grad_()
        out = model(batch, x)
        out.square().sum().backward()
        res.append((out.detach(), x.grad, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        saves.append(_block_saves(model))
        with torch.no_grad():  # inference is unchanged by the flag
            torch.testing.assert_close(model(batch, x), out.detach(), rtol=0, atol=0)
    (o1, x1, p1), (o2, x2, p2) = res
    torch.testing.assert_close(o2, o1, rtol=0, atol=0)
    torch.testing.assert_close(x2, x1, rtol=1e-12, atol=1e-14)
    assert p1.keys() == p2.keys() and any(n.startswith("blocks.") for n in p1)
    for n in p1:
        torch.testing.assert_close(p2[n], p1[n], rtol=1e-12, atol=1e-14, msg=n)
    assert saves[0] >= 3 * 4 and saves[1] == 3, saves  # plain: several per block; checkpointed: each block's input
    with pytest.raises(ConfigError, match="checkpoint_latent"):
        GINO(2, 3, memory={"checkpoint_latent": "yes"}, **kw)


def _saved_edge_activations(model, batch, x) -> tuple:
    """(number of float tensors with one row per decoder edge that a training forward saves
    for backward, i.e. the ``(E_out, hidden)`` activations checkpointing avoids; the output)."""
    e_out = batch.neighbors_out.num_edges
    count = [0]

    def pack(t):
        if t.is_floating_point() and t.dim() == 2 and t.shape[0] == e_out:
            count[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch, x)
    return count[0], out


def test_checkpoint_edges_bounds_the_decoder_activations():
    """checkpoint_edges=0 makes the decoder recompute its edge MLP in backward: no (E_out, H)
    tensor is saved (the default threshold keeps them for this small case), and the outputs
    and gradients are those of the plain path."""
    geoms, queries = three_samples()
    model = box_model()
    batch = GeometryBatch.from_samples([model.precompute(Sample(g, Geometry(q, validate=False))) for g, q in zip(geoms, queries)])
    assert 0 < batch.neighbors_out.num_edges < model.gno_out.checkpoint_edges
    results = []
    for edges in (1 << 19, 0):
        torch.manual_seed(0)
        model = box_model(checkpoint_edges=edges)
        assert model.config["memory"]["checkpoint_edges"] == edges and model.gno_out.checkpoint_edges == edges
        x = batch.x(["x"]).clone().requires_grad_()
        n_saved, out = _saved_edge_activations(model, batch, x)
        out.square().sum().backward()
        results.append((n_saved, out.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}))
    (n_keep, o1, x1, p1), (n_ckpt, o2, x2, p2) = results
    assert n_keep >= 2 and n_ckpt == 0
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-12)
    torch.testing.assert_close(x1, x2, rtol=1e-10, atol=1e-12)
    for n in p1:
        torch.testing.assert_close(p1[n], p2[n], rtol=1e-9, atol=1e-12, msg=n)
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="checkpoint_edges"):
            box_model(checkpoint_edges=bad)


def test_neighborhoods_host_ptr_is_cached_and_carried():
    from geoop.neighbors.neighborhoods import Neighborhoods

    nb = Neighborhoods(torch.tensor([0, 2, 1]), torch.tensor([0, 2, 2, 3]), num_sources=3)
    assert nb.ptr_host() is nb.ptr  # already on the host: no copy
    moved = nb.to("cpu")
    assert moved.ptr_host() is nb.ptr  # .to() carries the host copy (no device read later)
    assert moved == nb  # the cache takes no part in equality
