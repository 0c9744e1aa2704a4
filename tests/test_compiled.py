"""Tests of geoop.models.compiled: the host-read-free GINO step (edge lists), its padding to
capacity buckets (exact against the unpadded step on the CPU), torch.compile with dynamic
sizes (CPU Inductor: same numbers as eager, no recompilation across geometries, no graph
breaks) and CUDA-graph replay of ragged batches (CUDA only)."""
from __future__ import annotations

import pytest
import torch

from geoop.batch import GeometryBatch
from geoop.errors import ConfigError
from geoop.geometry.geometry import Geometry
from geoop.models import GINO, RaggedGraphedGINO, compile_gino
from geoop.models.compiled import bucket_capacity, gino_step, pad_step_inputs, step_inputs
from geoop.neighbors.neighborhoods import EdgeList
from geoop.nn.gno import GNO

CUDA = torch.cuda.is_available()
SMALL = dict(latent_shape=(8, 8, 8), radius_in=0.25, radius_out=0.25, fno_width=8, fno_modes=2, fno_layers=2,
             gno_mlp=(16, 16), n_freqs=3, projection_hidden=16)


def make_batch(sizes, seed=1, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    geoms, queries = [], []
    for n, q in sizes:
        pts = 0.5 + 0.35 * (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 2
        geoms.append(Geometry(pts, weights=torch.rand(n, generator=g, dtype=dtype),
                              fields={"x": torch.randn(n, 2, generator=g, dtype=dtype)}))
        queries.append(0.5 + 0.4 * (torch.rand(q, 3, generator=g, dtype=dtype) - 0.5) * 2)
    batch = GeometryBatch.from_geometries(geoms, queries).to(device)
    return batch, batch.x(["x"])


def make_model(dtype=torch.float64, device="cpu", **kw):
    torch.manual_seed(0)
    cfg = dict(SMALL)
    cfg.update(kw)
    return GINO(2, 3, **cfg).to(device=device, dtype=dtype)


def sphere_case(dtype=torch.float64):
    """The SFNO-latent GINO and ragged batch on the unit sphere of tests/test_graphed.py."""
    from test_graphed import sphere_model_and_batch

    return sphere_model_and_batch(dtype=dtype)


def out_and_grads(fn, model):
    model.zero_grad(set_to_none=True)
    out = fn()
    (out.square().mean() + out[:, :1].sum()).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(a, b, rtol, atol):
    (oa, ga), (ob, gb) = a, b
    torch.testing.assert_close(oa, ob, rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], rtol=rtol, atol=atol, msg=k)


# ----------------------------------------------------------------------------- edge lists
@pytest.mark.parametrize("kernel,reduction,ckpt", [("linear", "mean", True), ("linear", "weighted", False),
                                                   ("nonlinear", "sum", "auto"), ("kernel_only", "mean", True)])
def test_gno_edge_list_equals_chunked_neighborhoods(kernel, reduction, ckpt):
    """One-piece EdgeList path == the chunked (and checkpointed) Neighborhoods path, values and
    gradients, and padding edges (query == Q) change nothing."""
    g = torch.Generator().manual_seed(0)
    s, q = 50, 30
    src = torch.rand(s, 3, generator=g, dtype=torch.float64)
    qry = torch.rand(q, 3, generator=g, dtype=torch.float64)
    from geoop import radius_search

    nb = radius_search(src, qry, 0.35)
    nb.num_sources = s
    cin = 0 if kernel == "kernel_only" else 4
    torch.manual_seed(0)
    layer = GNO(cin, 5, kernel=kernel, reduction=reduction, mlp_hidden=(8, 8), chunk_edges=37,
                checkpoint=ckpt, checkpoint_edges=10).double()
    f = torch.randn(s, cin, generator=g, dtype=torch.float64, requires_grad=True) if cin else None
    w = torch.rand(s, generator=g, dtype=torch.float64)
    el = nb.edge_list()
    pad = 9
    padded = EdgeList(torch.cat([el.index, torch.zeros(pad, dtype=torch.long)]),
                      torch.cat([el.query, torch.full((pad,), q, dtype=torch.long)]), el.counts)
    res = []
    for n in (nb, el, padded):
        ref = out_and_grads(lambda: layer(src, qry, n, f, w), layer)
        res.append((ref, None if f is None else f.grad.clone()))
        if f is not None:
            f.grad = None
    assert nb.num_edges > 37  # several chunks on the Neighborhoods path
    for other in res[1:]:
        assert_same(other[0], res[0][0], 1e-12, 1e-13)
        if f is not None:
            torch.testing.assert_close(other[1], res[0][1], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("nlat,nlon,lmax,mmax", [(8, 16, None, None), (9, 18, 9, 10), (6, 12, 6, 7)])
def test_traceable_inverse_sht_equals_torch_harmonics(nlat, nlon, lmax, mmax):
    th = pytest.importorskip("torch_harmonics")
    from geoop.nn.sfno import _inverse_sht_traceable

    isht = th.InverseRealSHT(nlat, nlon, lmax=lmax, mmax=mmax, grid="equiangular", norm="ortho").double()
    g = torch.Generator().manual_seed(0)
    xh = torch.randn(2, 3, isht.lmax, isht.mmax, 2, generator=g, dtype=torch.float64)
    xh = torch.view_as_complex(xh)
    torch.testing.assert_close(_inverse_sht_traceable(isht, xh), isht(xh.clone()), rtol=1e-12, atol=1e-12)


def test_bucket_capacity_ladder():
    caps = [bucket_capacity(n, 1.25, 64) for n in range(1, 20000, 7)]
    assert all(c % 64 == 0 for c in caps) and caps == sorted(caps)
    for n, c in zip(range(1, 20000, 7), caps):
        assert n <= c <= max(64, 1.25 * n + 64)
    assert len(set(caps)) < 25  # a few capacities per decade, not one per size
    with pytest.raises(ConfigError, match="growth > 1"):
        bucket_capacity(10, 1.0)


# ----------------------------------------------------------------------------- padding (CPU)
@pytest.mark.parametrize("case", ["box", "box_local", "sphere"])
def test_padded_step_equals_unpadded(case):
    """The padded step (what the CUDA graphs replay) == model(batch, x): outputs and every
    parameter gradient, float64, for a ragged batch of 3 geometries."""
    if case == "sphere":
        model, batch, x = sphere_case()
    else:
        model = make_model(**(dict(local_radius=0.15, local_nearest=True) if case == "box_local" else {}))
        batch, x = make_batch(((60, 25), (90, 40), (35, 10)))
    ragged = RaggedGraphedGINO(model, quantum=64)
    assert not ragged.use_graphs
    inp, key = ragged.padded_inputs(batch, x)
    real = step_inputs(model, batch, x)
    assert inp.points.shape[0] > real.points.shape[0] and inp.queries.shape[0] > real.queries.shape[0]
    assert inp.edges_out.num_edges > real.edges_out.num_edges
    ref = out_and_grads(lambda: model(batch, x), model)
    got = out_and_grads(lambda: ragged(batch, x), model)
    assert_same(got, ref, 1e-11, 1e-13)
    # larger capacities than the ladder's: still the same numbers
    big = pad_step_inputs(real, 500, 200, real.edges_in.num_edges + 777, real.edges_out.num_edges + 333,
                          0 if real.local_edges is None else real.local_edges.num_edges + 55)
    got2 = out_and_grads(lambda: gino_step(model, big, batch.num_samples)[: batch.queries.shape[0]], model)
    assert_same(got2, ref, 1e-11, 1e-13)


def test_ragged_graphs_need_cuda():
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        RaggedGraphedGINO(make_model(), enabled=True)


# ----------------------------------------------------------------------------- torch.compile
def test_step_traces_as_one_graph_without_breaks():
    """torch._dynamo.explain of the step (forward; GNO chunks, FNO, decoder): one graph, no
    break, for a box latent with local features."""
    model = make_model(torch.float32, local_radius=0.15, local_nearest=True)
    batch, x = make_batch(((60, 25), (90, 40)), dtype=torch.float32)
    inp = step_inputs(model, batch, x)
    torch._dynamo.reset()
    ex = torch._dynamo.explain(gino_step)(model, inp, batch.num_samples)
    assert ex.graph_break_count == 0, [str(r.reason) for r in ex.break_reasons]
    assert ex.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("latent", ["box", "sphere"])
def test_compiled_equals_eager_and_does_not_recompile(latent):
    """CPU Inductor: compiled outputs and gradients == eager (1e-5) on three geometries of
    different sizes (and point != query counts), compiled once (forward graph count stays 1
    after the first geometry)."""
    torch._dynamo.reset()
    if latent == "sphere":
        model, b0, _ = sphere_case(torch.float32)
        batches = []
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            p = torch.nn.functional.normalize(torch.randn(40 + 17 * seed, 3, generator=g), dim=1)
            q = torch.nn.functional.normalize(torch.randn(12 + 9 * seed, 3, generator=g), dim=1)
            geo = Geometry(p, weights=torch.full((p.shape[0],), 4 * torch.pi / p.shape[0]), fields={"x": p[:, 1:]})
            b = GeometryBatch.from_geometries([geo], [q])
            batches.append((b, b.x(["x"])))
    else:
        model = make_model(torch.float32, local_radius=0.15, local_nearest=True)
        batches = [make_batch(((n, q),), seed=s, dtype=torch.float32) for s, (n, q) in enumerate(((70, 30), (95, 95), (52, 41)))]
    cm = compile_gino(model)
    assert list(cm.parameters()) == list(model.parameters())
    for i, (batch, x) in enumerate(batches):  # compiled first: no cache filled by an eager call
        got = out_and_grads(lambda: cm(batch, x), model)
        ref = out_and_grads(lambda: model(batch, x), model)
        assert_same(got, ref, 1e-5, 1e-6)
        assert cm.graphs_compiled == 1, f"recompiled at geometry {i}"


def test_trainer_compile_setting():
    from geoop.train.config import resolve_compile
    from geoop.train.trainer import _compiled_net

    assert resolve_compile(True) == "inductor" and resolve_compile(False) == "none"
    assert resolve_compile("CUDA_GRAPHS") == "cuda_graphs"
    with pytest.raises(ConfigError, match="valid"):
        resolve_compile("fast")
    model = make_model()
    net = _compiled_net(model, "inductor", torch.device("cpu"), False, None)
    assert net.model is model and list(net.parameters()) == list(model.parameters())
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        _compiled_net(model, "cuda_graphs", torch.device("cpu"), False, None)
    assert _compiled_net(model, "none", torch.device("cpu"), False, None) is model


# ----------------------------------------------------------------------------- CUDA
cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")


@cuda_only
def test_cuda_ragged_graph_replay_equals_eager_across_geometries():
    """Replayed graphs == eager for 4 batches of different geometries, with fewer captures
    than batches (they share capacity buckets), and an Adam trajectory like eager's."""
    model = make_model(torch.float32, "cuda")
    ragged = RaggedGraphedGINO(model, quantum=64)
    assert ragged.use_graphs
    sizes = [((60, 25), (90, 40)), ((62, 27), (88, 41)), ((58, 30), (91, 38)), ((120, 60), (40, 10))]
    for k, sz in enumerate(sizes):
        batch, x = make_batch(sz, seed=k, dtype=torch.float32, device="cuda")
        got = out_and_grads(lambda: ragged(batch, x).clone(), model)
        ref = out_and_grads(lambda: model(batch, x), model)
        assert_same(got, ref, 1e-4, 1e-5)
    assert 1 <= len(ragged.graphs) < len(sizes)
    assert ragged.eager_calls == 0


@cuda_only
def test_cuda_compiled_equals_eager():
    torch._dynamo.reset()
    model = make_model(torch.float32, "cuda")
    cm = compile_gino(model)
    for s, sz in enumerate((((70, 30),), ((95, 95),), ((52, 41),))):
        batch, x = make_batch(sz, seed=s, dtype=torch.float32, device="cuda")
        assert_same(out_and_grads(lambda: cm(batch, x), model), out_and_grads(lambda: model(batch, x), model), 1e-4, 1e-5)
    assert cm.graphs_compiled == 1  # three geometries, one compilation


def test_trainer_with_compile_trains_like_eager(monkeypatch, tmp_path):
    """Trainer(compile="inductor") steps through CompiledGINO (here with dynamo's
    ``aot_eager`` backend: the same tracing, no C++ compilation) and follows eager's loss
    history over an epoch of batches of different geometries."""
    import functools

    import geoop.models as gm
    from geoop.train import Trainer

    monkeypatch.setattr(gm, "compile_gino", functools.partial(gm.compile_gino, backend="aot_eager"))
    g = torch.Generator().manual_seed(3)
    samples = []
    from geoop.batch import Sample

    for i in range(4):
        n = 30 + 7 * i
        pts = 0.5 + 0.3 * (torch.rand(n, 2, generator=g) - 0.5) * 2
        a = torch.randn(n, 1, generator=g)
        samples.append(Sample(Geometry(pts, fields={"a": a, "p": a * pts[:, :1]}, weights=torch.full((n,), 1.0 / n))))
    hist = {}
    for mode in ("none", "inductor"):
        torch.manual_seed(0)
        model = GINO(1, 1, coord_dim=2, latent_shape=(8, 8), radius_in=0.3, radius_out=0.3, fno_width=8, fno_modes=2,
                     fno_layers=1, gno_mlp=(8,), n_freqs=2, projection_hidden=8)
        tr = Trainer(model, samples, targets=["p"], inputs=["a"], epochs=2, batch_size=2, lr=1e-2, seed=1,
                     progress=False, compile=mode)
        assert (tr.net is model) == (mode == "none")
        hist[mode] = [m["train_loss"] for m in tr.fit()]
        if mode == "inductor":
            assert tr.net.graphs_compiled >= 1
    assert hist["inductor"] == pytest.approx(hist["none"], rel=1e-5)
