"""Tests of the GNO layer (geoop.nn.gno), its embeddings and segment reductions."""
from __future__ import annotations

import math

import pytest
import torch

from geoop.errors import ConfigError, ShapeError
from geoop.neighbors.neighborhoods import Neighborhoods
from geoop.nn import GNO, MLP, NeRFEmbedding, SinusoidalEmbedding, resolve_activation, resolve_pos_embed
from geoop.nn.segment import segment_mean_csr, segment_sum_csr

KERNELS = ["linear", "nonlinear", "kernel_only"]
REDUCTIONS = ["weighted", "mean", "sum"]


def brute_neighbors(sources, queries, r):
    """Independent reference neighbourhoods from a dense distance matrix."""
    d = torch.cdist(queries.double(), sources.double())
    qi, si = (d < r).nonzero(as_tuple=True)
    return Neighborhoods.from_coo(qi, si, queries.shape[0], sources.shape[0], radius=r)


def make_case(seed=0, s=60, q=40, cin=3, dtype=torch.float32, r=0.35):
    g = torch.Generator().manual_seed(seed)
    src = torch.rand(s, 3, generator=g, dtype=dtype)
    qry = torch.rand(q, 3, generator=g, dtype=dtype)
    qry[0] = 5.0  # far away: empty ball
    f = torch.randn(s, cin, generator=g, dtype=dtype) if cin else None
    w = torch.rand(s, generator=g, dtype=dtype) + 0.1
    return src, qry, brute_neighbors(src, qry, r), f, w


def make_gno(kernel, reduction, cin=3, cout=4, **kw):
    torch.manual_seed(1)
    return GNO(0 if kernel == "kernel_only" else cin, cout, 3, mlp_hidden=(16, 16), kernel=kernel, reduction=reduction, **kw)


def dense_reference(gno, src, qry, nb, f, w):
    """The un-split kernel MLP on the concatenated per-edge input, summed per query with a
    Python loop (independent of the split first layer, the chunking and index_add_)."""
    L = gno.embed.freqs.numel()
    freqs = math.pi * 2.0 ** torch.arange(L, dtype=src.dtype)

    def emb(x):
        a = x[:, :, None] * freqs
        return torch.cat([torch.sin(a), torch.cos(a)], -1).flatten(1)

    wfull = [gno.lin_query.weight, gno.lin_source.weight]
    if gno.kernel == "nonlinear":
        wfull.append(gno.lin_feature.weight)
    wfull = torch.cat(wfull, 1)
    outs = []
    for qq, nbr in enumerate(nb.to_sets()):
        nbr = sorted(nbr)
        if not nbr:
            outs.append(torch.zeros(gno.out_channels, dtype=src.dtype))
            continue
        ys = src[nbr]
        parts = [emb(qry[qq : qq + 1]).expand(len(nbr), -1), emb(ys)]
        if gno.kernel == "nonlinear":
            parts.append(f[nbr])
        h = torch.cat(parts, 1) @ wfull.T + gno.lin_query.bias
        k = gno.rest(h)
        if gno.kernel == "linear":
            fm = f[nbr] if gno.channel_map is None else f[nbr] @ gno.channel_map.weight.T
            k = k * fm
        if gno.reduction == "weighted":
            k = k * w[nbr][:, None]
        v = k.sum(0)
        if gno.reduction == "mean":
            v = v / len(nbr)
        outs.append(v)
    return torch.stack(outs)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_dense_reference(kernel, reduction):
    src, qry, nb, f, w = make_case(cin=0 if kernel == "kernel_only" else 3, dtype=torch.float64)
    gno = make_gno(kernel, reduction).double()
    out = gno(src, qry, nb, f, w if reduction == "weighted" else None)
    ref = dense_reference(gno, src, qry, nb, f, w)
    assert out.shape == (qry.shape[0], 4)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    assert torch.all(out[0] == 0)  # empty ball: exactly zero, no NaN


def test_linear_same_width_has_no_channel_map():
    gno = GNO(4, 4, kernel="linear")
    assert gno.channel_map is None
    src, qry, nb, f, w = make_case(cin=4, dtype=torch.float64)
    gno = gno.double()
    torch.testing.assert_close(gno(src, qry, nb, f, w), dense_reference(gno, src, qry, nb, f, w))


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunked_equals_unchunked_forward_and_backward(kernel):
    cin = 0 if kernel == "kernel_only" else 3
    src, qry, nb, f, w = make_case(cin=cin)
    assert int(nb.counts().max()) > 7  # some query alone exceeds a chunk
    gno = make_gno(kernel, "weighted")
    res = []
    for chunk in (1 << 20, 7):
        gno.chunk_edges = chunk
        gno.zero_grad()
        s = src.clone().requires_grad_()
        ff = None if f is None else f.clone().requires_grad_()
        out = gno(s, qry, nb, ff, w)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        res.append((out.detach(), s.grad, None if ff is None else ff.grad, [p.grad.clone() for p in gno.parameters()]))
    (o1, s1, f1, p1), (o2, s2, f2, p2) = res
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s1, s2, rtol=1e-4, atol=1e-6)
    if f1 is not None:
        torch.testing.assert_close(f1, f2, rtol=1e-4, atol=1e-6)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_checkpointed_backward_equals_plain_backward(kernel):
    """The checkpointed pass (per-edge summands recomputed, their gradient gathered from the
    output's) against plain autograd through index_add_, in float64, for every kernel form
    (``linear`` with a channel map: 3 -> 4 channels)."""
    cin = 0 if kernel == "kernel_only" else 3
    src, qry, nb, f, w = make_case(cin=cin, dtype=torch.float64)
    gno = make_gno(kernel, "weighted", cin=cin, chunk_edges=50).double()
    grads = []
    for ck in (True, False):
        gno.checkpoint = ck
        gno.zero_grad()
        ff = f.clone().requires_grad_() if f is not None else None
        ww = w.clone().requires_grad_()
        qq = qry.clone().requires_grad_()
        out = gno(src, qq, nb, ff, ww)
        (out**2).sum().backward()
        grads.append([out.detach(), qq.grad, ww.grad] + ([ff.grad] if ff is not None else [])
                     + [p.grad.clone() for p in gno.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_checkpoint_is_used_for_several_chunks(monkeypatch):
    """Above checkpoint_edges under autograd, 'auto' runs each chunk through checkpoint;
    below it, or without autograd, it does not."""
    import geoop.nn.gno as mod

    calls = []
    real = mod._CheckpointedEdges.apply

    def spy(*a):
        calls.append(len(a[1]))  # number of chunks
        return real(*a)

    monkeypatch.setattr(mod._CheckpointedEdges, "apply", spy)
    src, qry, nb, f, w = make_case(cin=3)
    gno = make_gno("linear", "weighted", chunk_edges=100, checkpoint_edges=nb.num_edges - 1)
    gno(src, qry, nb, f, w).sum().backward()
    assert calls == [len(mod._edge_chunks(nb.ptr, 100))] and calls[0] > 1
    calls.clear()
    gno.checkpoint_edges = nb.num_edges
    gno(src, qry, nb, f, w).sum().backward()
    assert not calls
    gno.checkpoint_edges = 0
    with torch.no_grad():
        gno(src, qry, nb, f, w)
    assert not calls


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("checkpoint", [False, True])
def test_gradcheck_float64(kernel, checkpoint):
    g = torch.Generator().manual_seed(3)
    src = torch.rand(9, 3, generator=g, dtype=torch.float64)
    qry = torch.rand(5, 3, generator=g, dtype=torch.float64)
    nb = brute_neighbors(src, qry, 0.7)
    assert nb.num_edges > 5
    cin = 0 if kernel == "kernel_only" else 2
    torch.manual_seed(0)
    gno = GNO(cin, 2, 3, mlp_hidden=(6,), kernel=kernel, reduction="weighted", n_freqs=2, chunk_edges=4,
              checkpoint=checkpoint).double()
    f = torch.randn(9, 2, dtype=torch.float64, requires_grad=True) if cin else None
    w = (torch.rand(9, dtype=torch.float64) + 0.5).requires_grad_()
    s = src.clone().requires_grad_()
    q = qry.clone().requires_grad_()
    if cin:
        fn = lambda s_, q_, f_, w_: gno(s_, q_, nb, f_, w_)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (s, q, f, w))
    else:
        fn = lambda s_, q_, w_: gno(s_, q_, nb, None, w_)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (s, q, w))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_balls_and_empty_query_set(reduction):
    src, qry, nb, f, w = make_case(cin=3)
    gno = make_gno("linear", reduction)
    far = torch.full((3, 3), 10.0)
    nb_far = brute_neighbors(src, far, 0.3)
    assert nb_far.num_edges == 0
    out = gno(src, far, nb_far, f, w)
    assert out.shape == (3, 4) and torch.all(out == 0)
    empty = gno(src, torch.zeros(0, 3), brute_neighbors(src, torch.zeros(0, 3), 0.3), f, w)
    assert empty.shape == (0, 4)


def test_permutations():
    src, qry, nb, f, w = make_case(cin=3)
    gno = make_gno("nonlinear", "weighted")
    out = gno(src, qry, nb, f, w)
    ps = torch.randperm(src.shape[0], generator=torch.Generator().manual_seed(5))
    out_ps = gno(src[ps], qry, brute_neighbors(src[ps], qry, 0.35), f[ps], w[ps])
    torch.testing.assert_close(out_ps, out, rtol=1e-5, atol=1e-6)
    pq = torch.randperm(qry.shape[0], generator=torch.Generator().manual_seed(6))
    out_pq = gno(src, qry[pq], brute_neighbors(src, qry[pq], 0.35), f, w)
    torch.testing.assert_close(out_pq, out[pq], rtol=1e-5, atol=1e-6)


def test_weighted_gno_converges_under_refinement():
    """k = 1 (hand-set linear kernel), f(y) = 1 + y_z on icospheres: the weighted GNO is a
    quadrature of the integral over the spherical cap {|y - x| < r}, whose exact value is
    pi r^2 + x_z pi (1 - c^2) with c = 1 - r^2 / 2."""
    trimesh = pytest.importorskip("trimesh")
    from geoop.geometry.geometry import Geometry

    r = 0.8
    gno = GNO(1, 1, 3, mlp_hidden=(8,), kernel="linear", reduction="weighted").double()
    with torch.no_grad():
        for p in gno.parameters():
            p.zero_()
        gno.rest[-1].bias.fill_(1.0)  # k(x, y) = 1
    q = torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    q = q / q.norm(dim=1, keepdim=True)
    c = 1 - r * r / 2
    exact = math.pi * r * r + q[:, 2] * math.pi * (1 - c * c)
    errs = []
    for sub in range(1, 5):
        m = trimesh.creation.icosphere(subdivisions=sub)
        geo = Geometry(torch.tensor(m.vertices), torch.tensor(m.faces))
        y = geo.points
        with torch.no_grad():
            v = gno(y, q, brute_neighbors(y, q, r), (1 + y[:, 2:3]), geo.weights)[:, 0]
        errs.append(float((v - exact).abs().mean()))
    for a, b in zip(errs, errs[1:]):
        assert b < 0.6 * a, errs
    assert errs[-1] < 0.015


def test_shape_errors_name_expected_and_actual():
    src, qry, nb, f, w = make_case(cin=3)
    gno = make_gno("linear", "weighted")
    with pytest.raises(ShapeError, match=r"\(60, 3\).*\(60, 2\)"):
        gno(src, qry, nb, f[:, :2], w)
    with pytest.raises(ShapeError, match="needs source features"):
        gno(src, qry, nb, None, w)
    with pytest.raises(ShapeError, match=r"sources must have shape \(N, 3\)"):
        gno(src[:, :2], qry, nb, f, w)
    with pytest.raises(ShapeError, match="quadrature weights"):
        gno(src, qry, nb, f, None)
    with pytest.raises(ShapeError, match=r"weights must have shape \(60,\)"):
        gno(src, qry, nb, f, w[:5])
    with pytest.raises(ShapeError, match="39"):
        gno(src, qry[1:], nb, f, w)
    with pytest.raises(ShapeError, match="kernel_only"):
        make_gno("kernel_only", "sum")(src, qry, nb, f, None)


def test_unknown_names_list_choices():
    with pytest.raises(ConfigError, match="nonlinear"):
        GNO(2, 2, kernel="quadratic")
    with pytest.raises(ConfigError, match="weighted"):
        GNO(2, 2, reduction="max")
    with pytest.raises(ConfigError, match="sinusoidal"):
        GNO(2, 2, pos_embed="fourier")
    with pytest.raises(ConfigError, match="gelu"):
        resolve_activation("swishy")
    with pytest.raises(ConfigError, match="in_channels must be 0"):
        GNO(3, 2, kernel="kernel_only")


def test_embeddings_known_values():
    x = torch.tensor([[0.25, 0.5]], dtype=torch.float64)
    e = NeRFEmbedding(2, n_freqs=2)(x)
    # layout: per coordinate [sin(f0 x), sin(f1 x), cos(f0 x), cos(f1 x)]
    exp = torch.tensor(
        [[math.sin(math.pi / 4), math.sin(math.pi / 2), math.cos(math.pi / 4), math.cos(math.pi / 2),
          math.sin(math.pi / 2), math.sin(math.pi), math.cos(math.pi / 2), math.cos(math.pi)]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(e, exp)
    s = SinusoidalEmbedding(3, n_freqs=4)
    assert s(torch.rand(5, 3)).shape == (5, s.out_dim) == (5, 24)
    torch.testing.assert_close(s.freqs, 100.0 * 10000.0 ** (-torch.arange(4.0, dtype=torch.float64) / 4))
    assert resolve_pos_embed("none", 3).out_dim == 3 and resolve_pos_embed(None, 2).out_dim == 2
    assert MLP(3, 2, (5,))(torch.rand(4, 3)).shape == (4, 2)


def test_segment_reductions():
    v = torch.arange(10.0).view(5, 2)
    ptr = torch.tensor([0, 2, 2, 5])
    torch.testing.assert_close(segment_sum_csr(v, ptr), torch.tensor([[2.0, 4.0], [0.0, 0.0], [18.0, 21.0]]))
    torch.testing.assert_close(segment_mean_csr(v, ptr), torch.tensor([[1.0, 2.0], [0.0, 0.0], [6.0, 7.0]]))


@pytest.mark.parametrize("order", ["increasing", "decreasing"])
def test_chunked_batch_like_windows_equal_unchunked(order):
    """Two samples (disjoint source ranges with a gap of unused sources), queries in either
    sample order: chunked evaluation, where each chunk gathers from the source pieces of its
    own window, equals one chunk, forward and backward."""
    g = torch.Generator().manual_seed(8)
    src = torch.rand(70, 3, generator=g, dtype=torch.float64)
    qa, qb = torch.rand(15, 3, generator=g, dtype=torch.float64), torch.rand(12, 3, generator=g, dtype=torch.float64)
    na = brute_neighbors(src[:30], qa, 0.5)
    nb_ = brute_neighbors(src[40:], qb, 0.5)
    if order == "increasing":
        qry, nb = torch.cat([qa, qb]), Neighborhoods.cat([na, nb_], [0, 40])
    else:
        qry, nb = torch.cat([qb, qa]), Neighborhoods.cat([nb_, na], [40, 0])
    nb.num_sources = 70
    f = torch.randn(70, 3, generator=g, dtype=torch.float64)
    w = torch.rand(70, generator=g, dtype=torch.float64)
    gno = make_gno("linear", "weighted").double()
    res = []
    for chunk in (1 << 20, 40):
        gno.chunk_edges = chunk
        gno.zero_grad()
        ff, ww = f.clone().requires_grad_(), w.clone().requires_grad_()
        out = gno(src, qry, nb, ff, ww)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        res.append([out.detach(), ff.grad, ww.grad] + [p.grad.clone() for p in gno.parameters()])
    assert len(__import__("geoop.nn.gno", fromlist=["_edge_chunks"])._edge_chunks(nb.ptr, 40)) > 4
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.all(res[0][1][30:40] == 0)  # unused sources get no gradient


def test_chunk_sizes_must_be_positive():
    for kw in (dict(chunk_edges=0), dict(chunk_edges_cuda=-1)):
        with pytest.raises(ConfigError, match="chunk_edges"):
            GNO(2, 3, coord_dim=3, **kw)


def test_source_windows_memoised_per_chunking():
    """The per-chunk source windows are read from the device once per (neighbourhoods,
    chunking) and memoised on the Neighborhoods; they bound every chunk's source indices, and
    calls that hit the memo equal calls on fresh neighbourhoods, for two chunkings."""
    from geoop.nn.gno import _edge_chunks

    src, qry, nb, f, w = make_case(seed=3, s=80, q=50)
    gno = make_gno("linear", "weighted")
    for chunk in (40, 25):
        gno.chunk_edges = chunk
        first = gno(src, qry, nb, f, w)
        key = ("gno_source_windows", tuple(_edge_chunks(nb.ptr, chunk)))
        wins = nb._host_cache[key]
        for (q0, q1, e0, e1), win in zip(key[1], wins):
            if e1 == e0:
                assert win is None
            else:
                assert win == (int(nb.index[e0:e1].min()), int(nb.index[e0:e1].max()) + 1)
        again = gno(src, qry, nb, f, w)
        fresh = gno(src, qry, Neighborhoods(nb.index.clone(), nb.ptr.clone(), nb.num_sources), f, w)
        torch.testing.assert_close(again, first, rtol=0, atol=0)
        torch.testing.assert_close(fresh, first, rtol=0, atol=0)
        assert nb.to("cpu")._host_cache[key] == wins  # .to() carries the host-side values
    assert len([k for k in nb._host_cache if isinstance(k, tuple) and k[0] == "gno_source_windows"]) == 2
