"""Tests of geoop.models.GraphedGINO (CUDA-graph replay of a GINO on one batch geometry).

The CPU tests check the interface and its eager path; the CUDA tests (skipped without a GPU;
run by ``benchmarks/gpu_check.sh`` on a GPU machine) check that replayed graphs give the eager
outputs, gradients and training trajectory, including chunked and checkpointed GNO edges.
"""
from __future__ import annotations

import pytest
import torch

from geoop.batch import GeometryBatch
from geoop.errors import ConfigError, ShapeError
from geoop.geometry.geometry import Geometry
from geoop.models import GINO, GraphedGINO

CUDA = torch.cuda.is_available()
SMALL = dict(latent_shape=(8, 8, 8), radius_in=0.25, radius_out=0.25, fno_width=8, fno_modes=2, fno_layers=2,
             gno_mlp=(16, 16), n_freqs=3, projection_hidden=16)


def model_and_batch(device="cpu", dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = dict(SMALL)
    cfg.update(kw)
    model = GINO(2, 3, **cfg).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    geoms, queries = [], []
    for n, q in ((60, 25), (90, 40), (35, 10)):
        pts = 0.5 + 0.35 * (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 2
        geoms.append(Geometry(pts, weights=torch.rand(n, generator=g, dtype=dtype),
                              fields={"x": torch.randn(n, 2, generator=g, dtype=dtype)}))
        queries.append(0.5 + 0.4 * (torch.rand(q, 3, generator=g, dtype=dtype) - 0.5) * 2)
    batch = GeometryBatch.from_geometries(geoms, queries).to(device)
    return model, batch, batch.x(["x"])


def sphere_model_and_batch(device="cpu", dtype=torch.float64):
    """An SFNO-latent GINO (torch-harmonics) and a batch of two point sets on the unit sphere."""
    pytest.importorskip("torch_harmonics")
    torch.manual_seed(0)
    model = GINO(2, 2, latent="sphere", latent_shape=(8, 16), radius_in=0.6, radius_out=0.6, fno_width=8,
                 fno_layers=2, gno_mlp=(16,), n_freqs=2, gno_reduction_in="weighted").to(device=device, dtype=dtype)
    geoms, queries = [], []
    for i, n in enumerate((60, 90)):
        g = torch.Generator().manual_seed(i)
        p = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=dtype), dim=1)
        geoms.append(Geometry(p, weights=torch.full((n,), 4 * torch.pi / n, dtype=dtype), fields={"x": p[:, 1:]}))
        queries.append(torch.nn.functional.normalize(torch.randn(10 + 5 * i, 3, generator=g, dtype=dtype), dim=1))
    batch = GeometryBatch.from_geometries(geoms, queries).to(device)
    return model, batch, batch.x(["x"])


def grads(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


# ----------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("latent", ["box", "sphere"])
def test_eager_path_equals_model_and_fills_neighborhoods(latent):
    model, batch, x = model_and_batch() if latent == "box" else sphere_model_and_batch()
    assert batch.neighbors_in is None
    gm = GraphedGINO(model, batch, x)
    assert not gm.graphed and batch.neighbors_in is None  # the caller's batch is left alone
    assert gm.batch.neighbors_in is not None and gm.batch.neighbors_out is not None
    out = gm(x)
    ref = model(batch, x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    # gradients reach the shared parameters
    model.zero_grad()
    ref.square().sum().backward()
    g_ref = grads(model)
    model.zero_grad()
    gm(x).square().sum().backward()
    for a, b in zip(grads(model), g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert list(gm.parameters()) == list(model.parameters())


def test_bad_input():
    model, batch, x = model_and_batch()
    with pytest.raises(ShapeError, match=r"x must have shape \(185, 2\)"):
        GraphedGINO(model, batch, x[:10])
    gm = GraphedGINO(model, batch, x)
    with pytest.raises(ShapeError, match="captured"):
        gm(x[:, :1])
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        GraphedGINO(model, batch, x, enabled=True)  # the model is on the CPU
    local, b2, x2 = model_and_batch(local_radius=0.1)
    with pytest.raises(ConfigError, match="local-geometry features"):
        GraphedGINO(local, b2, x2)
    with pytest.raises(ShapeError, match="GeometryBatch"):
        GraphedGINO(model, batch.points, x)


def test_geometry_only_model():
    torch.manual_seed(0)
    model = GINO(0, 1, **SMALL).double()
    _, batch, _ = model_and_batch()
    gm = GraphedGINO(model, batch)
    torch.testing.assert_close(gm(), model(batch, None))
    with pytest.raises(ShapeError, match="in_channels=0"):
        gm(torch.zeros(185, 1, dtype=torch.float64))


def static_grad_callable(fn):
    """A CPU stand-in for what ``torch.cuda.make_graphed_callables`` returns, as far as
    gradients go: forward computes ``fn(*args)``; backward returns the input gradients in
    FIXED buffers (one per input, refilled every call), as the replayed backward graph does."""
    buffers = {}

    class Static(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            ins = [a.detach().requires_grad_(a.requires_grad) for a in args]
            with torch.enable_grad():
                out = fn(*ins)
            ctx.ins, ctx.out = ins, out
            return out.detach()

        @staticmethod
        def backward(ctx, g):
            req = [i for i in ctx.ins if i.requires_grad]
            grads = iter(torch.autograd.grad(ctx.out, req, g, allow_unused=True))
            result = []
            for k, i in enumerate(ctx.ins):
                if not i.requires_grad:
                    result.append(None)
                    continue
                gr = next(grads)
                buf = buffers.setdefault(k, torch.zeros_like(i))
                buf.copy_(gr if gr is not None else torch.zeros_like(i))
                result.append(buf.detach())
            return tuple(result)

    return lambda *args: Static.apply(*args)


def test_proxy_parameters_keep_gradient_semantics_with_static_grad_buffers():
    """Graph replay returns parameter gradients in static buffers; autograd would install
    such a buffer as ``.grad`` (PyTorch issue 181723), so zeroing in place or accumulating
    goes wrong. Checked on the CPU with a stand-in that returns fixed buffers: without the
    proxies the gradient doubles after an in-place zero_grad; with them, in-place zeroing,
    set_to_none and accumulation over two passes all equal eager autograd, and optimizer
    updates of the parameters reach the proxies."""
    from geoop.models.graphed import _ProxyForward, _with_neighborhoods

    model, batch, x = model_and_batch()
    batch = _with_neighborhoods(model, batch)
    x2 = x.flip(0).contiguous()

    def eager_grads(*xs):
        model.zero_grad(set_to_none=True)
        for xi in xs:
            model(batch, xi).square().mean().backward()
        return grads(model)

    # the failure the proxies prevent: real parameters as the graphed inputs
    names = [n for n, _ in model.named_parameters()]
    naive = static_grad_callable(lambda xi, *ps: torch.func.functional_call(model, dict(zip(names, ps)), (batch, xi)))
    model.zero_grad(set_to_none=True)
    naive(x, *model.parameters()).square().mean().backward()
    model.zero_grad(set_to_none=False)
    naive(x, *model.parameters()).square().mean().backward()
    naive_grads = grads(model)
    ref = eager_grads(x)
    for a, b in zip(naive_grads, ref):  # the stolen static buffer was zeroed, refilled, then added to itself
        torch.testing.assert_close(a, 2 * b, rtol=1e-10, atol=1e-12)

    fn = _ProxyForward(model, batch)
    call = static_grad_callable(fn)
    for zero in ("none", "inplace"):
        model.zero_grad(set_to_none=True)
        call(*fn.inputs(x)).square().mean().backward()
        model.zero_grad(set_to_none=(zero == "none"))
        call(*fn.inputs(x)).square().mean().backward()
        for a, b in zip(grads(model), ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        assert all(p.grad is None for p in fn.proxies)
    # accumulation over two passes with different inputs
    model.zero_grad(set_to_none=True)
    call(*fn.inputs(x)).square().mean().backward()
    call(*fn.inputs(x2)).square().mean().backward()
    for a, b in zip(grads(model), eager_grads(x, x2)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # optimizer steps change the parameters in place; the proxies share their storage
    torch.optim.Adam(model.parameters(), lr=1e-2).step()
    with torch.no_grad():
        torch.testing.assert_close(call(*fn.inputs(x)), model(batch, x), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- CUDA
cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")


def _cuda_case(**kw):
    # small chunks: the encoder's checkpointed edges and the decoder's plain edges both run in
    # several chunks, so the captured graph contains the chunk loops and the source windows
    return model_and_batch("cuda", torch.float32, **kw)


@cuda_only
@pytest.mark.parametrize("small_chunks,latent", [(False, "box"), (True, "box"), (False, "sphere")])
def test_cuda_graph_replay_equals_eager(small_chunks, latent):
    model, batch, x = _cuda_case() if latent == "box" else sphere_model_and_batch("cuda", torch.float32)
    if small_chunks:
        for gno in (model.gno_in, model.gno_out):
            gno.chunk_edges, gno.chunk_edges_cuda = 97, 131
    gm = GraphedGINO(model, batch, x)
    assert gm.graphed
    for seed in range(3):  # new x every call: copied into the graph's static input
        xs = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x)
        model.zero_grad(set_to_none=True)
        out = gm(xs)
        (out.square().mean()).backward()
        g_graph = grads(model)
        model.zero_grad(set_to_none=True)
        ref = model(gm.batch, xs)
        ref.square().mean().backward()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        for a, b in zip(g_graph, grads(model)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@cuda_only
def test_cuda_graph_training_trajectory_and_eval_fallback():
    model, batch, x = _cuda_case()
    twin = GINO(2, 3, **SMALL).cuda()
    twin.load_state_dict(model.state_dict())
    y = torch.randn(batch.queries.shape[0], 3, device="cuda")
    gm = GraphedGINO(model, batch, x)
    opt_a = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt_b = torch.optim.Adam(twin.parameters(), lr=1e-3)
    for _ in range(5):
        for m, opt, f in ((model, opt_a, lambda: gm(x)), (twin, opt_b, lambda: twin(gm.batch, x))):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(f(), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # in-place zeroing and accumulation over two graphed passes equal eager
    for m, f in ((model, lambda xi: gm(xi)), (twin, lambda xi: twin(gm.batch, xi))):
        m.zero_grad(set_to_none=False)
        for xi in (x, x.flip(0).contiguous()):
            f(xi).square().mean().backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    gm.eval()  # captured in train mode: eval runs eagerly
    with torch.no_grad():
        torch.testing.assert_close(gm(x), twin.eval()(gm.batch, x), rtol=1e-4, atol=1e-5)
