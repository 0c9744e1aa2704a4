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
    torch.manual_seed(0)
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
    g = blob(20, 1)
    boxes = model.boxes(g.points)
    nodes = model.level_nodes(1, boxes[1])
    lat = torch.randn(1, 8, 12, 8, dtype=torch.float64, requires_grad=True)

    def f(lat):
        c = interpolate_level(lat, boxes[0], nodes).reshape(1, 8, *model.fine[0].latent_shape)
        return model.fine[0].encode(model._to_unit(g.points, boxes[1], None), g.fields["x"], g.weights, None, 1, None, c)

    assert torch.autograd.gradcheck(f, (lat,), atol=1e-6)


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
        a = NestedGINO(2, 3, 2, latent=NestedLatent(levels=TWO), **flat)
    assert a.config == nested(TWO).config
    flat = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ShapeError, match="zero extent"):
        level_boxes(LatentLevel((8, 8)), flat, None, 1)
