"""Radius-ball neighbourhoods: every backend against an independent float64 brute force,
hand-made cases with known counts, batching, random caps, the grid search, the cache, errors.

Backends that are not installed (or disabled with GEOOP_DISABLE_BACKENDS) are skipped,
except in the tests that check that asking for them raises.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import geoop
from geoop import _optional
from geoop.errors import BackendUnavailableError, ConfigError, NeighborhoodTooLargeError, ShapeError
from geoop.neighbors import backends as be_mod
from geoop.neighbors import search as search_mod
from geoop.neighbors.cache import NeighborhoodCache, cached_radius_search, neighborhood_key
from geoop.neighbors.grid import grid_points, radius_search_grid
from geoop.neighbors.neighborhoods import Neighborhoods
from geoop.neighbors.search import radius_search

OPTIONAL = ["torch_cluster", "open3d", "scipy"]
ALL = ["torch", *OPTIONAL]


def _param(name):
    pkg = be_mod.BACKENDS[name].package
    ok = pkg is None or _optional.available(pkg)
    return pytest.param(name, marks=pytest.mark.skipif(not ok, reason=f"{name} not installed or disabled"))


BACKENDS = [_param(n) for n in ALL]


def reference(sources, queries, r, sb=None, qb=None):
    """Independent oracle: full float64 distance matrix with the documented rule
    sum_k (q_k - s_k)^2 <= r^2, batch mask, sets per query."""
    s = np.asarray(sources, dtype=np.float64).reshape(len(sources), -1)
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    d2 = np.zeros((len(q), len(s)))
    for k in range(q.shape[1]):
        diff = q[:, k : k + 1] - s[None, :, k]
        d2 += diff * diff
    m = d2 <= float(r) * float(r)
    if sb is not None:
        m &= np.asarray(qb)[:, None] == np.asarray(sb)[None, :]
    return [set(np.nonzero(row)[0].tolist()) for row in m]


def check_csr(nb, Q, S):
    nb.validate()
    assert nb.num_queries == Q and nb.num_sources == S
    assert nb.index.dtype == torch.long and nb.ptr.dtype == torch.long
    for a, b in zip(nb.ptr[:-1].tolist(), nb.ptr[1:].tolist()):
        seg = nb.index[a:b]
        assert bool((seg[1:] > seg[:-1]).all()), "indices must be strictly ascending within a query"


def sorted_batch(n, B, gen):
    return torch.sort(torch.randint(0, B, (n,), generator=gen)).values


# --------------------------------------------------------------------------- known answers
SIX = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0], [5, 5, 5], [5, 5, 5.5]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_six_points_known_counts(backend):
    # r = 1: the points at distance exactly 1 are inside (closed ball)
    nb = radius_search(SIX, SIX, 1.0, backend=backend)
    check_csr(nb, 6, 6)
    assert nb.to_sets() == [{0, 1, 3}, {0, 1, 2}, {1, 2}, {0, 3}, {4, 5}, {4, 5}]
    assert nb.counts().tolist() == [3, 3, 2, 2, 2, 2]
    # r = 0.5: point 4 and 5 are exactly 0.5 apart, the rest are isolated
    assert radius_search(SIX, SIX, 0.5, backend=backend).counts().tolist() == [1, 1, 1, 1, 2, 2]
    # r = 0: only the point itself
    assert radius_search(SIX, SIX, 0.0, backend=backend).to_sets() == [{i} for i in range(6)]
    # r = sqrt(2): 1 and 3 are sqrt(2) apart; float64(sqrt 2)^2 > 2 so they are inside
    nb = radius_search(SIX, SIX, math.sqrt(2.0), backend=backend)
    assert nb.to_sets()[1] == {0, 1, 2, 3}


def test_reference_rule_on_six_points():
    # the oracle itself on the hand-made case (protects the other comparisons)
    assert reference(SIX, SIX, 1.0) == [{0, 1, 3}, {0, 1, 2}, {1, 2}, {0, 3}, {4, 5}, {4, 5}]


# --------------------------------------------------------------------------- random inputs
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_equals_reference(backend, d, dtype):
    g = torch.Generator().manual_seed(10 * d + (dtype == torch.float64))
    S, Q = 600, 250
    src = (torch.rand(S, d, generator=g, dtype=torch.float64) * 2 - 0.5).to(dtype)
    qry = (torch.rand(Q, d, generator=g, dtype=torch.float64) * 2 - 0.5).to(dtype)
    r = {1: 0.01, 2: 0.08, 3: 0.2}[d]
    nb = radius_search(src, qry, r, backend=backend)
    check_csr(nb, Q, S)
    assert nb.to_sets() == reference(src, qry, r)
    oracle = radius_search(src, qry, r, backend="torch")
    assert torch.equal(nb.index, oracle.index) and torch.equal(nb.ptr, oracle.ptr)
    assert nb.num_edges > Q  # non-trivial


@pytest.mark.parametrize("backend", BACKENDS)
def test_far_from_origin(backend):
    # coordinates ~1e3 with a tiny radius: float32 cancellation would break a naive test
    g = torch.Generator().manual_seed(3)
    src = 1000.0 + torch.rand(500, 3, generator=g) * 0.1
    qry = 1000.0 + torch.rand(200, 3, generator=g) * 0.1
    nb = radius_search(src, qry, 0.01, backend=backend)
    assert nb.to_sets() == reference(src, qry, 0.01)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_equals_reference_and_never_crosses(backend):
    g = torch.Generator().manual_seed(5)
    B = 4
    # sample 2 has no sources, sample 3 has no queries
    sn, qn = [300, 200, 0, 150], [100, 80, 60, 0]
    sb = torch.cat([torch.full((n,), b) for b, n in enumerate(sn)])
    qb = torch.cat([torch.full((n,), b) for b, n in enumerate(qn)])
    # identical coordinate ranges in every sample, so crossing would be visible
    src = torch.rand(len(sb), 3, generator=g)
    qry = torch.rand(len(qb), 3, generator=g)
    nb = radius_search(src, qry, 0.2, source_batch=sb, query_batch=qb, backend=backend)
    check_csr(nb, len(qb), len(sb))
    assert nb.to_sets() == reference(src, qry, 0.2, sb, qb)
    qi = nb.query_index()
    assert torch.equal(sb[nb.index], qb[qi])
    # equals one search per sample, concatenated
    sp, qp = np.cumsum([0, *sn]), np.cumsum([0, *qn])
    parts = [
        radius_search(src[sp[b] : sp[b + 1]], qry[qp[b] : qp[b + 1]], 0.2, backend=backend) for b in range(B)
    ]
    cat = Neighborhoods.cat(parts)
    assert torch.equal(cat.index, nb.index) and torch.equal(cat.ptr, nb.ptr)
    assert nb.counts()[qb == 2].sum() == 0


# --------------------------------------------------------------------------- adversarial
def _lattice(n, d, spacing=1.0, dtype=torch.float32):
    axes = [torch.arange(n, dtype=torch.float64) * spacing] * d
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_lattice_points_exactly_at_radius(backend, d):
    pts = _lattice(5, d)
    for r in (1.0, 2.0, math.sqrt(2.0)):
        nb = radius_search(pts, pts, r, backend=backend)
        assert nb.to_sets() == reference(pts, pts, r)
    # r = 1 on the integer lattice: the centre node has 2d neighbours plus itself
    centre = (len(pts) - 1) // 2
    assert radius_search(pts, pts, 1.0, backend=backend).counts()[centre] == 2 * d + 1
    # spacing 0.1 in float32: whether a neighbour is at <= r is decided by the float64 rule
    pts = _lattice(6, d, 0.1)
    nb = radius_search(pts, pts, 0.1, backend=backend)
    assert nb.to_sets() == reference(pts, pts, 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicates_empty_and_degenerate(backend):
    src = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.2, 0.2]])
    qry = torch.tensor([[0.5, 0.5], [9.0, 9.0], [0.2, 0.2]])
    nb = radius_search(src, qry, 0.0, backend=backend)
    assert nb.to_sets() == [{0, 1, 2}, set(), {3}]
    # zero sources
    nb = radius_search(torch.zeros(0, 2), qry, 1.0, backend=backend)
    check_csr(nb, 3, 0)
    assert nb.num_edges == 0
    # zero queries
    nb = radius_search(src, torch.zeros(0, 2), 1.0, backend=backend)
    assert nb.num_queries == 0 and nb.num_edges == 0 and nb.ptr.tolist() == [0]
    # all balls empty
    assert radius_search(src, qry + 100, 1.0, backend=backend).num_edges == 0
    # everything inside
    nb = radius_search(src, qry, 100.0, backend=backend)
    assert nb.counts().tolist() == [4, 4, 4]


def test_numpy_and_integer_inputs_and_export():
    assert geoop.radius_search is radius_search
    a = np.array([[0, 0], [1, 0], [3, 0]])
    nb = radius_search(a, a.astype(np.float64), 1)
    assert nb.to_sets() == [{0, 1}, {0, 1}, {2}]
    assert isinstance(nb.index, torch.Tensor) and nb.radius == 1.0
    # float32 sources against float64 queries: promoted, same answer as all-float64
    s32 = torch.rand(50, 3, dtype=torch.float32)
    q64 = torch.rand(20, 3, dtype=torch.float64)
    mixed = radius_search(s32, q64, 0.3)
    assert mixed.to_sets() == reference(s32.double(), q64, 0.3)


def test_auto_equals_torch():
    g = torch.Generator().manual_seed(1)
    src, qry = torch.rand(400, 3, generator=g), torch.rand(100, 3, generator=g)
    a = radius_search(src, qry, 0.15)
    b = radius_search(src, qry, 0.15, backend="torch")
    assert torch.equal(a.index, b.index) and torch.equal(a.ptr, b.ptr)
    assert be_mod.resolve_backend("auto").name in be_mod.available_backends()


def test_torch_backend_blocks(monkeypatch):
    # many Morton blocks, a dense cluster (blocks shrink there and grow back), tiny budget
    g = torch.Generator().manual_seed(2)
    src = torch.cat([torch.rand(1500, 3, generator=g), 0.5 + 0.01 * torch.rand(1500, 3, generator=g)])
    qry = torch.cat([torch.rand(1000, 3, generator=g), 0.5 + 0.02 * torch.rand(300, 3, generator=g)])
    full = radius_search(src, qry, 0.1, backend="torch")
    assert full.to_sets() == reference(src, qry, 0.1)
    monkeypatch.setattr(be_mod, "TORCH_BLOCK_BYTES", 3000 * 4 * 7)
    chunked = radius_search(src, qry, 0.1, backend="torch")
    assert torch.equal(full.index, chunked.index) and torch.equal(full.ptr, chunked.ptr)


def test_morton_order_is_a_local_permutation():
    pts = grid_points((8, 8, 8), [[0.0] * 3, [1.0] * 3])
    perm = be_mod.morton_order(pts)
    assert torch.equal(torch.sort(perm).values, torch.arange(512))
    # the first 8 points of a Z-order curve on a 2^3 lattice form one 2x2x2 cell
    first = pts[perm[:8]]
    assert float((first.amax(0) - first.amin(0)).max()) == pytest.approx(1 / 7)


def test_query_chunking_equals_single_pass(monkeypatch):
    g = torch.Generator().manual_seed(4)
    sb = sorted_batch(2000, 3, g)
    qb = sorted_batch(700, 3, g)
    src, qry = torch.rand(2000, 3, generator=g), torch.rand(700, 3, generator=g)
    full = radius_search(src, qry, 0.15, sb, qb, backend="torch")
    monkeypatch.setattr(search_mod, "CHUNK_EDGES", 500)  # forces estimate + many query chunks
    chunked = radius_search(src, qry, 0.15, sb, qb, backend="torch")
    assert torch.equal(full.index, chunked.index) and torch.equal(full.ptr, chunked.ptr)


def test_exact_filter_numpy_and_torch_paths_agree():
    g = torch.Generator().manual_seed(6)
    q, s = torch.rand(50, 3, generator=g), torch.rand(80, 3, generator=g)
    qi = torch.randint(0, 50, (3000,), generator=g)
    si = torch.randint(0, 80, (3000,), generator=g)
    a = search_mod._exact_filter_numpy(qi, si, q, s, 0.3, 80)
    b = search_mod._exact_filter_torch(qi, si, q, s, 0.3, 80)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].numel() > 0


# --------------------------------------------------------------------------- max_neighbors
@pytest.mark.parametrize("backend", BACKENDS)
def test_max_neighbors_cap_and_subset(backend):
    g = torch.Generator().manual_seed(7)
    src, qry = torch.rand(500, 3, generator=g), torch.rand(100, 3, generator=g)
    full = radius_search(src, qry, 0.3, backend=backend)
    k = 5
    capped = radius_search(src, qry, 0.3, backend=backend, max_neighbors=k, generator=torch.Generator().manual_seed(0))
    check_csr(capped, 100, 500)
    assert torch.equal(capped.counts(), full.counts().clamp(max=k))
    assert all(c <= f for c, f in zip(capped.to_sets(), full.to_sets()))
    assert int(full.counts().max()) > k
    again = radius_search(src, qry, 0.3, backend=backend, max_neighbors=k, generator=torch.Generator().manual_seed(0))
    assert torch.equal(capped.index, again.index)


def test_max_neighbors_is_uniform():
    # 4000 identical queries, each with the same 10 sources in its ball: 4000 independent
    # draws of 3 out of 10; each source must be kept with probability 3/10
    src = torch.rand(10, 3) * 0.01
    qry = torch.zeros(4000, 3)
    nb = radius_search(src, qry, 1.0, max_neighbors=3, generator=torch.Generator().manual_seed(1))
    assert nb.counts().eq(3).all()
    freq = torch.bincount(nb.index, minlength=10).double() / 4000
    # binomial std sqrt(0.3*0.7/4000) ~ 0.0072; 5 sigma
    assert torch.allclose(freq, torch.full((10,), 0.3, dtype=torch.float64), atol=0.036), freq
    # pairs too: each unordered pair kept with probability (3*2)/(10*9)
    sets = nb.index.view(4000, 3)
    pair01 = ((sets == 0).any(1) & (sets == 1).any(1)).double().mean()
    assert abs(float(pair01) - 6 / 90) < 0.02


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(radius=-0.1), "radius"),
        (dict(radius=float("nan")), "radius"),
        (dict(radius=float("inf")), "radius"),
        (dict(sources=torch.rand(5, 4)), r"\(N, d\)"),
        (dict(queries=torch.rand(5)), r"\(N, d\)"),
        (dict(queries=torch.rand(5, 2)), "same dimension"),
        (dict(sources=torch.tensor([[0.0, 0, float("nan")]])), "finite"),
        (dict(source_batch=torch.zeros(3, dtype=torch.long), query_batch=torch.zeros(4, dtype=torch.long)), r"\(6,\)"),
        (dict(source_batch=torch.tensor([0, 0, 1, 0, 1, 1]), query_batch=torch.zeros(4, dtype=torch.long)), "sorted"),
        (dict(source_batch=torch.zeros(6, dtype=torch.long)), "both"),
        (dict(source_batch=torch.zeros(6), query_batch=torch.zeros(4)), "integer"),
        (dict(max_neighbors=-1), "max_neighbors"),
    ],
)
def test_shape_errors(kwargs, match):
    args = dict(sources=torch.rand(6, 3), queries=torch.rand(4, 3), radius=0.5)
    args.update(kwargs)
    with pytest.raises(ShapeError, match=match):
        radius_search(**args)


def test_unknown_backend_lists_choices():
    with pytest.raises(ConfigError, match="open3d.*scipy.*torch.*torch_cluster|auto"):
        radius_search(torch.rand(3, 3), torch.rand(3, 3), 0.1, backend="kdtree")
    try:
        radius_search(torch.rand(3, 3), torch.rand(3, 3), 0.1, backend="kdtree")
    except ConfigError as e:
        for n in ("auto", "torch_cluster", "open3d", "scipy", "torch"):
            assert n in str(e)


@pytest.mark.parametrize("name", ["torch_cluster", "open3d"])
def test_missing_backend_raises(name, monkeypatch):
    if _optional.available(name):  # pretend it is missing, as GEOOP_DISABLE_BACKENDS does
        monkeypatch.setattr(_optional, "_DISABLED", _optional._DISABLED | {name})
        monkeypatch.setattr(_optional, "_CACHE", {})
    with pytest.raises(BackendUnavailableError, match=name):
        radius_search(torch.rand(3, 3), torch.rand(3, 3), 0.1, backend=name)
    # auto never picks it
    assert be_mod.resolve_backend("auto").name != name


def test_too_many_edges_raises_before_search():
    src, qry = torch.rand(1000, 3), torch.rand(400, 3)
    with pytest.raises(NeighborhoodTooLargeError, match="max_neighbors") as ei:
        radius_search(src, qry, 10.0, max_edges=10_000, backend="torch")
    assert "estimated" in str(ei.value)
    # the same search with a cap fits
    nb = radius_search(src, qry, 10.0, max_edges=10_000, max_neighbors=16, backend="torch")
    assert nb.num_edges == 400 * 16


# --------------------------------------------------------------------------- grid
def test_grid_points_c_order():
    shape, bounds = (3, 4, 5), [[0.0, -1.0, 2.0], [1.0, 1.0, 3.0]]
    g = grid_points(shape, bounds)
    assert g.shape == (60, 3)
    # a (B, C, *grid) tensor holding the coordinates, flattened, has the same rows
    axes = [torch.linspace(lo, hi, n) for lo, hi, n in zip(bounds[0], bounds[1], shape)]
    lat = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)[None]  # (1, 3, 3, 4, 5)
    assert torch.allclose(lat.flatten(2)[0].T, g)
    i, j, k = np.unravel_index(37, shape)
    assert torch.allclose(g[37], torch.tensor([axes[0][i], axes[1][j], axes[2][k]]))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_grid_search_equals_explicit(d):
    g = torch.Generator().manual_seed(20 + d)
    shape = (9, 6, 5)[:d]
    bounds = [[0.0] * d, [1.0] * d]
    N = 800
    pts = torch.rand(N, d, generator=g) * 1.4 - 0.2  # some points outside the box
    pb = sorted_batch(N, 3, g)
    G = math.prod(shape)
    B = 4  # sample 3 has no points
    grid = grid_points(shape, bounds)
    qb = torch.arange(B).repeat_interleave(G)
    for r in (0.0, 0.125, 0.23, 0.6):
        nb = radius_search_grid(pts, shape, bounds, r, point_batch=pb, num_batches=B)
        ref = radius_search(pts, grid.repeat(B, 1), r, pb, qb, backend="torch")
        check_csr(nb, B * G, N)
        assert torch.equal(nb.ptr, ref.ptr) and torch.equal(nb.index, ref.index), r
    # points exactly on nodes, radius = node spacing along axis 0 (boundary cases)
    h = 1.0 / (shape[0] - 1)
    nodes = grid[::3]
    nb = radius_search_grid(nodes, shape, bounds, h)
    ref = radius_search(nodes, grid, h, backend="torch")
    assert torch.equal(nb.ptr, ref.ptr) and torch.equal(nb.index, ref.index)
    # chunking over points does not change the result
    nb2 = radius_search_grid(pts, shape, bounds, 0.23, point_batch=pb, num_batches=B, chunk_points=37)
    nb1 = radius_search_grid(pts, shape, bounds, 0.23, point_batch=pb, num_batches=B)
    assert torch.equal(nb1.index, nb2.index) and torch.equal(nb1.ptr, nb2.ptr)


def test_grid_search_errors():
    with pytest.raises(ShapeError, match="axes"):
        radius_search_grid(torch.rand(5, 3), (4, 4), [[0, 0], [1, 1]], 0.1)
    with pytest.raises(ShapeError, match="bounds"):
        radius_search_grid(torch.rand(5, 2), (4, 4), [[0, 0, 0], [1, 1, 1]], 0.1)
    with pytest.raises(ShapeError, match="radius"):
        radius_search_grid(torch.rand(5, 2), (4, 4), [[0, 0], [1, 1]], -1)
    with pytest.raises(ShapeError, match="num_batches"):
        radius_search_grid(torch.rand(5, 2), (4, 4), [[0, 0], [1, 1]], 0.1, point_batch=[0, 0, 1, 2, 2], num_batches=2)


# --------------------------------------------------------------------------- cache
def test_cache_hits_by_content_and_evicts():
    g = torch.Generator().manual_seed(8)
    src, qry = torch.rand(200, 3, generator=g), torch.rand(50, 3, generator=g)
    cache = NeighborhoodCache(maxsize=2)
    a = cached_radius_search(src, qry, 0.2, cache=cache, backend="torch")
    b = cached_radius_search(src.clone().numpy(), qry.clone(), 0.2, cache=cache, backend="auto")
    assert b is a and cache.hits == 1 and cache.misses == 1
    ref = radius_search(src, qry, 0.2)
    assert torch.equal(a.index, ref.index)
    # different radius / moved point / batch vectors -> different keys
    k0 = neighborhood_key(src, qry, 0.2)
    moved = src.clone()
    moved[0, 0] += 1e-6
    assert len({k0, neighborhood_key(src, qry, 0.21), neighborhood_key(moved, qry, 0.2),
                neighborhood_key(src, qry, 0.2, torch.zeros(200, dtype=torch.long), torch.zeros(50, dtype=torch.long)),
                neighborhood_key(src.double(), qry, 0.2)}) == 5
    cached_radius_search(src, qry, 0.3, cache=cache)
    cached_radius_search(src, qry, 0.4, cache=cache)  # evicts r=0.2 (least recently used)
    assert len(cache) == 2 and k0 not in cache
    assert cache.num_edges == sum(nb.num_edges for nb in cache._data.values())
    small = NeighborhoodCache(max_edges=10)
    small.radius_search(src, qry, 0.5)
    assert len(small) == 0  # too large to store, still returned


# --------------------------------------------------------------------------- torch_cluster cap
@pytest.mark.skipif(not _optional.available("torch_cluster"), reason="torch_cluster not installed or disabled")
def test_torch_cluster_capped_retries(monkeypatch):
    # the CUDA strategy (cap, then re-run full balls with a 4x larger cap), run on CPU
    tc = be_mod.BACKENDS["torch_cluster"]
    monkeypatch.setattr(tc, "cap_on_cpu", True)
    monkeypatch.setattr(tc, "initial_cap", 3)
    g = torch.Generator().manual_seed(9)
    src = torch.cat([torch.rand(400, 3, generator=g), 0.5 + 0.01 * torch.rand(200, 3, generator=g)])
    qry = torch.cat([torch.rand(150, 3, generator=g), torch.full((2, 3), 0.5)])
    nb = radius_search(src, qry, 0.2, backend="torch_cluster")
    assert int(nb.counts().max()) > 3 * 4 * 4  # needed at least two retries
    ref = radius_search(src, qry, 0.2, backend="torch")
    assert torch.equal(nb.index, ref.index) and torch.equal(nb.ptr, ref.ptr)
