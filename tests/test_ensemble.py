"""Tests of geoop.models.Ensemble: stacked members = members one by one, 1 member = GINO,
identical members have std 0, calibration on validation only, checkpoints, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from geoop.batch import GeometryBatch, Sample
from geoop.errors import CheckpointError, ConfigError, GeoopError
from geoop.geometry.geometry import Geometry
from geoop.models import GINO, Ensemble
from geoop.models.ensemble import mixture

CFG = dict(out_channels=2, coord_dim=2, latent={"shape": (12, 12), "features": ["sdf"]},
           encoder={"radius_cells": 1.5, "inputs": ["normals"]}, blocks={"width": 8, "modes": 3, "layers": 2},
           decoder={"radius_cells": 1.5}, local={"radius_cells": 0.6, "nearest": True}, memory={"chunk_edges": 64})


def shapes(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        m = 40 + 10 * i
        t = torch.linspace(0, 2 * math.pi, m + 1)[:-1]
        r = 0.25 + 0.05 * torch.rand(1, generator=g)
        pts = torch.stack([0.5 + r * torch.cos(t), 0.5 + 0.7 * r * torch.sin(t)], 1)
        nrm = torch.stack([torch.cos(t), torch.sin(t)], 1)
        segs = torch.stack([torch.arange(m), (torch.arange(m) + 1) % m], 1)
        geo = Geometry(pts, cells={"line": segs}, normals=nrm, weights=torch.full((m,), 1.0 / m), name=f"c{i}")
        q = torch.rand(25 + i, 2, generator=g)
        out.append((geo, q))
    return out


def batch_of(model, items):
    return GeometryBatch.from_samples([model.precompute(Sample(g, Geometry(q, validate=False))) for g, q in items])


def test_stacked_equals_members_one_by_one_forward_and_gradients():
    torch.manual_seed(0)
    ens = Ensemble(CFG, size=3).double()
    items = shapes()
    batch = batch_of(ens, items)
    out = ens.member_outputs(batch)  # one vmap call
    assert out.shape == (3, batch.queries.shape[0], 2)
    members = [ens.member(i) for i in range(3)]
    for k, m in enumerate(members):
        torch.testing.assert_close(out[k], m(batch), rtol=1e-6, atol=1e-6)
    # the loop fallback gives the same numbers
    ens.vectorize = False
    torch.testing.assert_close(ens.member_outputs(batch), out, rtol=1e-10, atol=1e-12)
    ens.vectorize = True
    # gradients of the stacked parameters = the members' own gradients
    y = torch.randn_like(out[0])
    (ens.member_outputs(batch) - y).square().sum().backward()
    for k, m in enumerate(members):
        (m(batch) - y).square().sum().backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(ens.stacked_parameters()[name].grad[k], p.grad, rtol=1e-6, atol=1e-8)
    # members differ (independent initialisations)
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_one_member_ensemble_is_gino_and_query():
    torch.manual_seed(3)
    ens = Ensemble(CFG, size=1, variance=False)
    torch.manual_seed(3)
    gino = GINO.from_config(CFG)
    items = shapes(2)
    batch = batch_of(gino, items)
    torch.testing.assert_close(ens(batch), gino(batch), rtol=1e-6, atol=1e-6)
    for (n, p), (n2, p2) in zip(gino.named_parameters(), ens.member(0).named_parameters()):
        assert n == n2 and torch.equal(p, p2)
    with pytest.raises(ConfigError, match="ensemble >= 2"):
        ens.predict(batch)
    # query of a 3-member ensemble = per-member GINO.query (chunked)
    torch.manual_seed(1)
    ens3 = Ensemble(CFG, size=3)
    geo, q = items[0]
    with torch.no_grad():
        pr = ens3.query(geo, q, chunk_size=7)
        ref = torch.stack([ens3.member(k).query(geo, q, chunk_size=7) for k in range(3)])
    torch.testing.assert_close(pr.members, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pr.mean, ref.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pr.std, ref.std(0, unbiased=False), rtol=1e-4, atol=1e-6)


def test_identical_members_have_zero_std_and_mixture():
    torch.manual_seed(0)
    m = GINO.from_config(CFG)
    ens = Ensemble.from_members([m, m, m, m])
    batch = batch_of(m, shapes(2))
    with torch.no_grad():
        pr = ens.predict(batch)
    assert torch.all(pr.std <= 1e-6 * (1 + pr.mean.abs()))
    torch.testing.assert_close(pr.mean, m(batch).detach(), rtol=1e-6, atol=1e-6)
    # the mixture: law of total variance on a known example
    mu = torch.tensor([[0.0], [2.0]])
    var = torch.tensor([[1.0], [3.0]])
    mean, std = mixture(mu, var)
    assert float(mean) == 1.0 and abs(float(std) - math.sqrt(1.0 + 2.0)) < 1e-7
    with pytest.raises(ConfigError, match="same|share one config"):
        Ensemble.from_members([m, GINO.from_config({**CFG, "blocks": {"width": 4, "modes": 3, "layers": 1}})])


def test_variance_head_and_member_losses():
    torch.manual_seed(0)
    ens = Ensemble(CFG, size=2, variance=True, bootstrap=True, seed=5)
    batch = batch_of(ens, shapes(3))
    for i, m in enumerate(batch.meta):
        m["case"] = f"case_{i}"
    out = ens.member_outputs(batch)
    assert out.shape[-1] == 4
    pr = ens.distribution(out)
    assert torch.all(pr.std > 0) and pr.member_var.shape == pr.members.shape
    y = torch.randn(batch.queries.shape[0], 2)

    def loss(p):
        return torch.stack([(p - y).square().mean(1)[batch.query_batch == b].mean() for b in range(3)])[:, None]

    err = ens.member_losses(batch, None, y, [2], loss)
    assert err.shape == (3, 1) and torch.isfinite(err).all()
    w = ens.bootstrap_weights(batch.meta)
    torch.testing.assert_close(w, ens.bootstrap_weights(batch.meta))  # the same every epoch
    assert w.shape == (2, 3) and torch.all(w == w.round())
    err.mean().backward()
    assert all(p.grad is not None for p in ens.stacked_parameters().values())


def test_checkpoint_round_trip_and_member_count_mismatch(tmp_path):
    from geoop.models.nested import model_from_config
    from geoop.train.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    ens = model_from_config({**CFG, "ensemble": 3})
    assert isinstance(ens, Ensemble) and ens.size == 3
    ens.temperature.fill_(1.7)
    save_checkpoint({"model": ens.state_dict(), "model_config": ens.config}, tmp_path / "e.pt")
    state = load_checkpoint(tmp_path / "e.pt")
    again = model_from_config(dict(state["model_config"]))
    again.load_state_dict(state["model"])
    batch = batch_of(ens, shapes(2))
    with torch.no_grad():
        a, b = ens.predict(batch), again.predict(batch)
    torch.testing.assert_close(a.mean, b.mean, rtol=0, atol=0)
    torch.testing.assert_close(a.std, b.std, rtol=0, atol=0)
    assert float(again.temperature[0]) == pytest.approx(1.7)
    five = model_from_config({**CFG, "ensemble": 5})
    with pytest.raises(CheckpointError, match=r"ensemble = 5"):
        five.load_state_dict(state["model"])


@pytest.mark.parametrize("bad", [0, -1, True, "3", {"size": 2, "colour": 1}, {"size": 2, "variance": "yes"}])
def test_bad_ensemble_settings(bad):
    with pytest.raises(ConfigError, match="ensemble"):
        Ensemble({**CFG, "ensemble": bad})
    assert issubclass(ConfigError, GeoopError)
