"""Tests of geoop.models.nested: one level == GINO, ragged batches == single calls, the level
coupling's interpolation (known answer + gradcheck), query, precompute, config errors."""
from __future__ import annotations

import json

import pytest
import torch

from geoop.batch import GeometryBatch, Sample
from geoop.errors import ConfigError, ShapeError
from geoop.geometry.geometry import Geometry
from geoop.models import GINO
from geoop.models.config import BoxLatent, EncoderSpec, FNOSpec, GNOSpec, LocalSpec
from geoop.models.nested import LatentLevel, NestedGINO, NestedLatent, interpolate_level, level_boxes

KW = dict(blocks=FNOSpec(width=8, modes=2, layers=2, projection_hidden=16),
          encoder=EncoderSpec(radius=0.3, mlp=(16, 16), n_freqs=3), decoder=GNOSpec(radius=0.3, mlp=(16, 16), n_freqs=3))
LOCAL = dict(local=LocalSpec(radius=0.1, nearest=True))
DOMAIN = ((-2.0, -1.5), (3.0, 1.5))


def blob(n, seed, center=(0.5, 0.0), scale=(0.5, 0.1)):
    g = torch.Generator().manual_seed(seed)
    pts = torch.tensor(center, dtype=torch.float64) + torch.tensor(scale, dtype=torch.float64) * (
        2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1)
    return Geometry(pts, weights=torch.rand(n, generator=g, dtype=torch.float64),
                    fields={"x": torch.randn(n, 2, generator=g, dtype=torch.float64)})


def queries(n, seed):
    g = torch.Generator().manual_seed(seed)
    # half near the body (inside the fine boxes), half anywhere in the domain
    near = torch.tensor([0.5, 0.0]) + torch.tensor([0.8, 0.3]) * (2 * torch.rand(n // 2, 2, generator=g) - 1)
    far = torch.tensor([-2.0, -1.5]) + torch.tensor([5.0, 3.0]) * torch.rand(n - n // 2, 2, generator=g)
    return torch.cat([near, far]).double()


def nested(levels, **kw):
    """A nested model; coupled coarse to fine unless ``coupling`` is given (the coupled path is
    the one with the most to test)."""
    torch.manual_seed(0)
    kw.setdefault("coupling", "interpolate")
    return NestedGINO(2, 3, 2, latent=NestedLatent(levels=levels), **{**KW, **kw}).double()


TWO = [LatentLevel((12, 8), domain=DOMAIN), LatentLevel((10, 8), margin=0.25)]
THREE = TWO + [LatentLevel((8, 8), margin=0.05, fno_modes=(2, 2))]


@pytest.mark.parametrize("kw", [{}, LOCAL])
def test_one_level_is_gino_exactly(kw):
    torch.manual_seed(1)
    gino = GINO(2, 3, 2, latent=BoxLatent(shape=(12, 8), domain=DOMAIN), **KW, **kw).double()
    model = nested([LatentLevel((12, 8), domain=DOMAIN)], **kw)
    model.coarse.load_state_dict(gino.state_dict())
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in gino.parameters())
    geoms = [blob(40, 1), blob(25, 2)]
    qs = [queries(30, 3), queries(17, 4)]
    batch = GeometryBatch.from_geometries(geoms, qs)
    x = batch.x(["x"])
    assert torch.equal(model(batch, x), gino(batch, x))
    assert torch.equal(model.query(geoms[0], qs[0], geoms[0].fields["x"], chunk_size=7),
                       gino.query(geoms[0], qs[0], geoms[0].fields["x"], chunk_size=7))


@pytest.mark.parametrize("levels", [TWO, THREE])
def test_ragged_batch_equals_single_calls_and_precompute(levels):
    model = nested(levels, local=LocalSpec(radius=0.1))
    geoms = [blob(40, 1), blob(70, 2, (0.3, 0.1), (0.6, 0.05)), blob(25, 3, (0.8, -0.1), (0.3, 0.2))]
    qs = [queries(30, 4), queries(9, 5), queries(41, 6)]
    batch = GeometryBatch.from_geometries(geoms, qs)
    out = model(batch, batch.x(["x"]))
    assert out.shape == (80, 3) and torch.isfinite(out).all()
    singles = [model(GeometryBatch.from_geometries([g], [q]), g.fields["x"]) for g, q in zip(geoms, qs)]
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-9, atol=1e-10)
    # per-sample boxes: the fine level follows each geometry
    boxes = model.boxes(batch.points, batch.batch, 3)
    for b, g in enumerate(geoms):
        torch.testing.assert_close(boxes[1][b, 0], g.points.min(0).values - 0.25)
        torch.testing.assert_close(boxes[1][b, 1], g.points.max(0).values + 0.25)
    # the fine levels change the answer (they are used) and only inside their boxes
    inside = model.contains(batch.queries, batch.query_batch, boxes)[:, 1:].any(1)
    assert inside.any() and (~inside).any()
    # precomputed fine neighbourhoods (meta) give the same outputs
    samples = [model.precompute(Sample(g, Geometry(q, validate=False))) for g, q in zip(geoms, qs)]
    pb = GeometryBatch.from_samples(samples)
    torch.testing.assert_close(model(pb, pb.x(["x"])), out, rtol=1e-9, atol=1e-10)
    # query in chunks == forward of the single sample
    torch.testing.assert_close(model.query(geoms[1], qs[1], geoms[1].fields["x"], chunk_size=4), singles[1])


def test_fine_level_contributes_only_inside_its_box():
    model = nested(TWO)
    g = blob(40, 1)
    q = queries(60, 2)
    x = g.fields["x"]
    with torch.no_grad():
        base = model.query(g, q, x)
        for p in model.fine[0].gno_out.parameters():
            p.add_(0.3)
        moved = model.query(g, q, x)
    inside = model.contains(q, None, model.boxes(g.points))[:, 1]
    diff = (moved - base).abs().sum(1)
    assert (diff[~inside] == 0).all() and (diff[inside] > 0).all()


def test_interpolation_is_exact_for_linear_fields_and_gradcheck():
    torch.manual_seed(0)
    for d, shape in ((1, (7,)), (2, (5, 4)), (3, (4, 3, 5))):
        boxes = torch.stack([torch.tensor([[-1.0] * d, [2.0] * d]), torch.tensor([[0.0] * d, [0.5] * d])]).double()
        from geoop.neighbors.grid import grid_points

        coef = torch.randn(2, d, dtype=torch.float64)
        lat = torch.stack([(grid_points(shape, boxes[b], dtype=torch.float64) @ coef[b]).reshape(1, *shape)
                           for b in range(2)])  # (B, 1, *shape): a linear function per sample
        nodes = boxes[:, :1] + torch.rand(2, 6, d, dtype=torch.float64) * (boxes[:, 1:] - boxes[:, :1])
        out = interpolate_level(lat, boxes, nodes)
        ref = torch.einsum("bgd,bd->bg", nodes, coef)[:, None]
        torch.testing.assert_close(out, ref)
        # gradients with respect to the coarse features and the node positions
        latr = torch.randn(2, 2, *shape, dtype=torch.float64, requires_grad=True)
        nd = nodes.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: interpolate_level(a, boxes, b), (latr, nd))


def test_gradcheck_through_the_level_coupling():
    """Gradients of the fine level's lifting input with respect to the coarse latent."""
    model = nested(TWO)
    with torch.no_grad():  # the coupled channels' lifting weights start at zero: make them nonzero
        model.fine[0].lifting.net[0].weight.normal_()
    g = blob(20, 1)
    boxes = model.boxes(g.points)
    nodes = model.level_nodes(1, boxes[1])
    lat = torch.randn(1, 8, 12, 8, dtype=torch.float64, requires_grad=True)

    def f(lat):
        c = interpolate_level(lat, boxes[0], nodes).reshape(1, 8, *model.fine[0].latent_shape)
        return model.fine[0].encode(model._to_unit(g.points, boxes[1], None), g.fields["x"], g.weights, None, 1, None, c)

    assert torch.autograd.gradcheck(f, (lat,), atol=1e-6)
    f(lat).sum().backward()
    assert lat.grad.abs().max() > 1e-6  # the gradient checked is not trivially zero


def test_coupling_starts_as_the_uncoupled_model():
    """Zero-initialised lifting weights on the coupled channels: at initialisation a coupled
    model gives the uncoupled model's outputs (same other parameters), yet gets a gradient there."""
    coupled, free = nested(TWO), nested(TWO, coupling="none")
    fc, ff = coupled.fine[0].lifting.net[0], free.fine[0].lifting.net[0]
    start = fc.in_features - coupled.fine[0].latent_channels - 2
    state = coupled.state_dict()
    with torch.no_grad():
        for k, v in free.state_dict().items():
            if k != "fine.0.lifting.net.0.weight":
                state[k].copy_(v)
        fc.weight[:, :start] = ff.weight[:, :start]
        fc.weight[:, start + 8:] = ff.weight[:, start:]
    assert (fc.weight[:, start: start + 8] == 0).all()
    g, q = blob(30, 1), queries(20, 2)
    out = coupled.query(g, q, g.fields["x"])
    torch.testing.assert_close(out, free.query(g, q, g.fields["x"]), rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    assert fc.weight.grad[:, start: start + 8].abs().max() > 0


def test_uncoupled_levels_do_not_see_the_coarse_latent():
    model = nested(TWO, coupling="none")
    assert model.fine[0].latent_channels == 0
    g, q = blob(30, 1), queries(20, 2)
    out = model.query(g, q, g.fields["x"])
    with torch.no_grad():  # the coarse FNO changes the coarse decoding only
        for p in model.coarse.blocks.parameters():
            p.add_(0.1)
        lat, boxes = model.encode(g.points, g.fields["x"], g.weights)
    assert torch.isfinite(out).all()
    ref, _ = nested(TWO, coupling="none").encode(g.points, g.fields["x"], g.weights)
    torch.testing.assert_close(lat[1], ref[1])
    with pytest.raises(ConfigError, match="coupling"):
        nested(TWO, coupling="both")
    assert NestedGINO(2, 3, 2, latent=NestedLatent(levels=TWO), **KW).coupling == "none"  # the measured default


def test_config_roundtrip_and_errors():
    model = nested(THREE)
    re = NestedGINO.from_config(model.config)
    assert NestedLatent.from_dict(model.levels_config.to_dict()) == model.levels_config
    assert NestedLatent.from_dict(json.loads(json.dumps(model.config["latent"]))) == model.levels_config
    re.load_state_dict(model.state_dict())
    g, q = blob(30, 1), queries(10, 2)
    torch.testing.assert_close(re.double().query(g, q, g.fields["x"]), model.query(g, q, g.fields["x"]))
    with pytest.raises(ConfigError, match="needs a fixed domain"):
        NestedLatent(levels=[LatentLevel((8, 8))]).check(2)
    with pytest.raises(ConfigError, match="coord_dim=2"):
        NestedLatent(levels=[LatentLevel((8, 8, 8), domain=((0, 0, 0), (1, 1, 1)))]).check(2)
    with pytest.raises(ConfigError, match="unknown keys"):
        NestedLatent.from_dict({"levels": [{"shape": (8, 8), "size": 3}]})
    with pytest.raises(ConfigError, match="comes from the levels"):
        NestedGINO(2, 3, 2, latent=NestedLatent(levels=TWO), domain=[[0, 0], [1, 1]])
    # fine levels: radii in cells of their own grid unless given; level 0 keeps the sections' radii
    assert model.coarse.radius_in == 0.3
    assert model.fine[0].radius_in == pytest.approx(1.5 / 7) and model.fine[0].latent_shape == (10, 8)
    assert nested([TWO[0], LatentLevel((10, 8), margin=0.2, radius_in=0.05)]).fine[0].radius_in == 0.05


def test_flat_keywords_still_build_the_same_model():
    import warnings

    flat = dict(fno_width=8, fno_modes=2, fno_layers=2, gno_mlp=(16, 16), n_freqs=3, projection_hidden=16,
                radius_in=0.3, radius_out=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(0)
        a = NestedGINO(2, 3, 2, latent=NestedLatent(levels=TWO), coupling="interpolate", **flat)
    assert a.config == nested(TWO).config
    flat = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ShapeError, match="zero extent"):
        level_boxes(LatentLevel((8, 8)), flat, None, 1)


def test_level_weight_known_values():
    from geoop.models.nested import level_weight

    shape = (11, 5)  # cells of 1/10 and 1/4 of the unit box
    u = torch.tensor([[0.5, 0.5], [0.0, 0.5], [-0.01, 0.5], [0.5, 1.2], [0.1, 0.5], [0.05, 0.5], [0.5, 0.25],
                      [0.05, 0.25]], dtype=torch.float64)
    w = level_weight(u, shape, 1.0)  # taper: one cell per axis
    torch.testing.assert_close(w, torch.tensor([1, 0, 0, 0, 1, 0.5, 1, 0.5], dtype=torch.float64))
    w2 = level_weight(u, shape, 2.0)  # smoothstep at r = 1/4 (x) and 1/2 (y): 5/32 and 1/2
    assert w2[5] == pytest.approx(5 / 32) and w2[6] == pytest.approx(0.5) and w2[7] == pytest.approx(5 / 64)
    torch.testing.assert_close(level_weight(u, shape, 0.0), torch.tensor([1, 1, 0, 0, 1, 1, 1, 1], dtype=torch.float64))


@pytest.mark.parametrize("taper", [0.0, 1.5])
def test_decoded_field_is_continuous_across_a_fine_box_edge_only_with_a_taper(taper):
    levels = [LatentLevel((12, 8), domain=DOMAIN), LatentLevel((10, 8), margin=0.25, taper=taper)]
    model = nested(levels)
    g = blob(40, 1)
    hi = model.boxes(g.points)[1][0, 1]
    y = torch.linspace(-0.05, 0.05, 5, dtype=torch.float64)
    edge = torch.stack([torch.full_like(y, float(hi[0])), y], 1)
    eps = torch.tensor([1e-9, 0.0], dtype=torch.float64)
    with torch.no_grad():
        jump = (model.query(g, edge - eps, g.fields["x"]) - model.query(g, edge + eps, g.fields["x"])).abs().max()
    if taper:
        assert jump < 1e-6
    else:
        assert jump > 1e-4  # the fine level's decoding switched off at once


def ring(n, center=(0.5, 0.0), r=(0.5, 0.08)):
    t = torch.linspace(0, 2 * torch.pi, n + 1, dtype=torch.float64)[:-1]
    pts = torch.stack([center[0] + r[0] * torch.cos(t), center[1] - r[1] * torch.sin(t)], 1)  # clockwise loop
    lines = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n], 1)
    g = torch.Generator().manual_seed(n)
    return Geometry(pts, cells={"line": lines}, fields={"x": torch.randn(n, 2, generator=g, dtype=torch.float64)})


def test_latent_sdf_on_every_level_at_its_physical_nodes():
    levels = NestedLatent(levels=THREE, features=("sdf",))
    torch.manual_seed(0)
    model = NestedGINO(2, 3, 2, latent=levels, coupling="interpolate", **KW).double()
    assert model.coarse.latent_feature_names == ("sdf",) and model.fine[0].latent_channels == 1 + 8
    geoms = [ring(40), ring(30, (0.4, 0.05), (0.4, 0.12))]
    qs = [queries(30, 4), queries(21, 5)]
    # a fine level's feature is the geometry's signed distance at the level's physical nodes
    boxes = model.boxes(geoms[1].points)
    ff = model.fine_features(geoms[1], boxes)
    for l, f in enumerate(ff, start=1):
        ref = geoms[1].sdf(model.level_nodes(l, boxes[l])[0]).reshape(1, 1, *model.fine[l - 1].latent_shape)
        torch.testing.assert_close(f.double(), ref, rtol=1e-6, atol=1e-6)
        assert (f < 0).any() and (f > 0).any()  # nodes inside the body are negative
    # forward computes them; batch == singles == query; precomputed + selected queries == direct
    batch = GeometryBatch.from_geometries(geoms, qs)
    out = model(batch, batch.x(["x"]))
    singles = [model.query(g, q, g.fields["x"]) for g, q in zip(geoms, qs)]
    torch.testing.assert_close(out, torch.cat(singles), rtol=1e-6, atol=1e-7)
    rows = [torch.tensor([3, 0, 17, 17, 29]), torch.tensor([20, 1])]
    samples = [model.select_queries(model.precompute(Sample(g, Geometry(q, validate=False))), r)
               for g, q, r in zip(geoms, qs, rows)]
    pb = GeometryBatch.from_samples(samples)
    torch.testing.assert_close(model(pb, pb.x(["x"])), torch.cat([s[r] for s, r in zip(singles, rows)]),
                               rtol=1e-6, atol=1e-7)
    # the fine features are used: zeroing them changes the fine latent
    g0 = geoms[0]
    b0 = model.boxes(g0.points)
    ff0 = model.fine_features(g0, b0)
    lf0 = model.coarse.latent_features(g0)
    with torch.no_grad():
        a, _ = model.encode(g0.points, g0.fields["x"], g0.weights, latent_features=lf0, boxes=b0, fine_features=ff0)
        z, _ = model.encode(g0.points, g0.fields["x"], g0.weights, latent_features=lf0, boxes=b0,
                            fine_features=[torch.zeros_like(f) for f in ff0])
    torch.testing.assert_close(a[0], z[0])
    assert (a[1] - z[1]).abs().max() > 1e-3
    with pytest.raises(ShapeError, match="pass fine_features"):
        model.encode(g0.points, g0.fields["x"], g0.weights, latent_features=lf0)
    with pytest.raises(ShapeError, match="pass a Geometry"):
        model.query(geoms[0].points, qs[0], geoms[0].fields["x"])
    with pytest.raises(ConfigError, match="features must be"):
        NestedLatent(levels=THREE, features=("curvature",)).check(2)
    with pytest.raises(ConfigError, match="taper"):
        NestedLatent(levels=[TWO[0], LatentLevel((10, 8), margin=0.2, taper=5.0)]).check(2)
    assert NestedLatent.from_dict(levels.to_dict()) == levels


@pytest.mark.parametrize("mix", ["partition", "sum"])
def test_level_mix_against_every_level_decoding_every_query(mix):
    """The decoder's per-level query subsets give the dense mix: every level decoding every
    query, weighted (partition: weights sum to 1, finest first; sum: coarse weight 1)."""
    from geoop.models.nested import level_weight

    model = nested(THREE, mix=mix, local=LocalSpec(radius=0.1))
    geoms = [blob(40, 1), blob(70, 2, (0.3, 0.1), (0.6, 0.05))]
    qs = [queries(50, 4), queries(31, 5)]
    batch = GeometryBatch.from_geometries(geoms, qs)
    x = batch.x(["x"])
    with torch.no_grad():
        out = model(batch, x)
        lat, boxes = model.encode(batch.points, x, batch.weights, batch.batch, 2)
        qb = batch.query_batch
        w = [torch.ones(81, dtype=torch.float64)]
        dec = [model.coarse.decode_latent(lat[0], batch.queries, qb)]
        for l, g in enumerate(model.fine, start=1):
            lo, hi = boxes[l][qb, 0], boxes[l][qb, 1]
            w.append(level_weight((batch.queries - lo) / (hi - lo), g.latent_shape, 2.0))
            dec.append(g.decode(lat[l], model._to_unit(batch.queries, boxes[l], qb), qb))
        if mix == "partition":
            ref_w = [(1 - w[1]) * (1 - w[2]), w[1] * (1 - w[2]), w[2]]
            torch.testing.assert_close(sum(ref_w), torch.ones(81, dtype=torch.float64))
        else:
            ref_w = w
        mixed = model.level_mix(batch.queries, qb, boxes)
        for a, b in zip(mixed, ref_w):
            torch.testing.assert_close(a, b)
        v = sum(wl[:, None] * d for wl, d in zip(ref_w, dec))
        c = model.coarse
        v = torch.cat([v] + c._local_features(batch.queries, batch.points, x, qb, batch.batch, 2), 1)
        torch.testing.assert_close(out, c.projection(v), rtol=1e-9, atol=1e-10)
    # deep inside the finest box only the finest level decodes (partition)
    if mix == "partition":
        assert ((mixed[2] == 1) & (mixed[0] == 0) & (mixed[1] == 0)).any()


@pytest.mark.parametrize("coupling", ["interpolate", "detached"])
def test_detached_coupling_sends_no_gradient_to_the_coarse_level(coupling):
    model = nested(TWO, coupling=coupling)
    with torch.no_grad():
        model.fine[0].lifting.net[0].weight.normal_()  # make the coupled channels matter
    g = blob(30, 1)
    box = model.boxes(g.points)[1][0]
    q = (box[0] + (box[1] - box[0]) * (0.3 + 0.4 * torch.rand(25, 2, dtype=torch.float64)))  # deep inside: fine only
    assert (model.level_mix(q, None, model.boxes(g.points))[1] == 1).all()
    model.query(g, q, g.fields["x"]).square().sum().backward()
    coarse_grad = max((float(p.grad.abs().max()) for p in model.coarse.blocks.parameters() if p.grad is not None),
                      default=0.0)
    assert (coarse_grad == 0) == (coupling == "detached")


def test_stream_query_and_inputs_by_name():
    """geoop predict's streaming path answers a NestedGINO as its query does; the model takes
    its point inputs by name from the geometry like a GINO."""
    from geoop.distributed import stream_query
    from geoop.models import model_from_config

    torch.manual_seed(0)
    enc = EncoderSpec(radius=0.3, mlp=(16, 16), n_freqs=3, inputs=("x[0:2]",))
    model = NestedGINO(None, 3, 2, latent=NestedLatent(levels=THREE, features=("sdf",)),
                       **{**KW, "encoder": enc}).double()
    assert model.in_channels == 2 and model.point_inputs
    g, q = ring(40), queries(33, 7)
    out = model.query(g, q)
    torch.testing.assert_close(out, model.query(g, q, g.fields["x"]))
    torch.testing.assert_close(stream_query(model, g, q, g.fields["x"], chunk_size=7,
                                            latent_features=model.latent_features(g)[0]), out)
    re = model_from_config(model.config)
    assert isinstance(re, NestedGINO)
    assert isinstance(model_from_config(GINO(2, 3, 2, **KW).config), GINO)
    with pytest.raises(ConfigError, match="unknown keys"):
        NestedGINO.check_config({**model.config, "levels": 3})


def test_gino_select_queries_equals_a_forward_on_those_queries():
    """GINO.select_queries (the base of NestedGINO's): selected rows of a precomputed sample
    give the outputs of the model at those queries, in that order, repeats allowed."""
    torch.manual_seed(0)
    gino = GINO(2, 3, 2, latent=BoxLatent(shape=(12, 8), domain=DOMAIN), **KW).double()
    g, q = blob(40, 1), queries(30, 2)
    rows = torch.tensor([7, 0, 29, 7])
    s = gino.select_queries(gino.precompute(Sample(g, Geometry(q, validate=False))), rows)
    assert s.neighbors_out.num_queries == 4
    b = GeometryBatch.from_samples([s])
    torch.testing.assert_close(gino(b, b.x(["x"])), gino.query(g, q, g.fields["x"])[rows], rtol=1e-9, atol=1e-10)
