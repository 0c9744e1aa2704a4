"""Domain parallelism (geoop.distributed): 2 gloo processes, each holding a spatial shard of
the same geometries, give the outputs and parameter gradients of 1 process on the whole
geometries; inconsistent set-ups raise DistributedError / ConfigError on every rank (no hang:
collectives time out after 30 s, the parent kills the workers after 240 s)."""
from __future__ import annotations

import datetime
import os
import time

import pytest
import torch
import torch.multiprocessing as mp
from _helpers import free_port, tiny_gino_config, write_annulus_cases

from geoop import Geometry, GeometryBatch
from geoop.distributed import DomainParallel, grid_layout, orb_split, shard, shard_index, stream_query
from geoop.errors import ConfigError, DistributedError, GeoopError
from geoop.models import GINO

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2

# name -> (GINO kwargs, sizes of the input point sets, sizes of the query sets)
CASES = {
    "box_mean": (dict(in_channels=2, gno_reduction_in="mean"), [300], [200]),
    "box_weighted": (dict(in_channels=2, gno_reduction_in="weighted", gno_reduction_out="weighted"), [300], [200]),
    "box_sum": (dict(in_channels=0, gno_reduction_in="sum", gno_reduction_out="sum"), [300], [200]),
    "sphere_mean": (dict(in_channels=2, latent="sphere", latent_shape=(8, 16), radius_in=0.6, radius_out=0.6), [300], [200]),
    "sphere_weighted": (dict(in_channels=0, latent="sphere", latent_shape=(8, 16), radius_in=0.6, radius_out=0.6,
                             gno_reduction_in="weighted"), [300], [200]),
    "ragged_local": (dict(in_channels=2, local_radius=0.15, local_nearest=True, latent_channels=1), [300, 120], [150, 90]),
    "empty_shard": (dict(in_channels=2, local_nearest=True), [1], [1]),
    "ragged_empty": (dict(in_channels=2), [250, 1], [100, 1]),
}


def _model(kw) -> GINO:
    torch.manual_seed(0)
    base = dict(out_channels=2, latent_shape=(8, 8, 8), radius_in=0.2, radius_out=0.2, fno_width=8, fno_modes=3,
                fno_layers=2, gno_mlp=(16,), chunk_size=512, checkpoint_edges=1000)
    if kw.get("latent") == "sphere":
        base.pop("fno_modes")
        base["latent_shape"] = kw["latent_shape"]
    return GINO(**{**base, **kw})


def _data(name):
    """Whole batch, input features x, query weights c of the test loss Σ c ⊙ out."""
    kw, ns, qs = CASES[name]
    g = torch.Generator().manual_seed(len(name))
    sphere = kw.get("latent") == "sphere"
    geoms, queries = [], []
    for n, q in zip(ns, qs):
        p = torch.rand(n, 3, generator=g)
        pq = torch.rand(q, 3, generator=g)
        if sphere:
            p, pq = p - 0.5, pq - 0.5
            p, pq = p / p.norm(dim=1, keepdim=True), pq / pq.norm(dim=1, keepdim=True)
        w = torch.rand(n, generator=g) + 0.5  # "whole-geometry" quadrature weights
        geoms.append(Geometry(p, weights=w, fields={"a": torch.randn(n, 2, generator=g)}))
        queries.append(pq)
    lf = None
    if kw.get("latent_channels"):
        lf = [torch.randn(1, 8, 8, 8, generator=g) for _ in ns]
    batch = GeometryBatch.from_geometries(geoms, queries, latent_features=lf)
    x = batch.x(["a"]) if kw.get("in_channels") else None
    c = torch.randn(batch.queries.shape[0], 2, generator=g)
    return batch, x, c


def _run_case(model, batch, x, c, qidx=None):
    model.zero_grad(set_to_none=True)
    out = model(batch, x)
    cc = c if qidx is None else c[qidx]
    (out * cc).sum().backward()  # rank r's loss: its own queries' share of the objective
    return out.detach()


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                                         timeout=datetime.timedelta(seconds=30))
    res = {}
    try:
        for name, (kw, _, _) in CASES.items():
            model = _model(kw)
            dp = DomainParallel(model)
            batch, x, c = _data(name)
            pidx = shard_index(batch.points, WORLD, batch.ptr)[rank]
            qidx = shard_index(batch.queries, WORLD, batch.query_ptr)[rank]
            part = shard(batch, rank, WORLD)
            out = _run_case(dp, part, None if x is None else x[pidx], c, qidx)
            dp.sync_gradients()
            res[name] = {"out": out, "qidx": qidx, "npts": int(part.points.shape[0]),
                         "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}
        # query(): shards of one geometry, each rank its queries
        model = _model(CASES["box_mean"][0] | {"local_radius": 0.15})
        dp = DomainParallel(model)
        batch, x, _ = _data("box_mean")
        geom = Geometry(batch.points, weights=batch.weights)
        pidx = shard_index(geom.points, WORLD)[rank]
        with torch.no_grad():
            res["query"] = dp.query(shard(geom, rank, WORLD), batch.queries[rank::WORLD], x=x[pidx], chunk_size=37)
            res["stream"] = stream_query(dp, geom, batch.queries, x, chunk_size=37, progress=False)
        # bad input 1: ranks hold different numbers of samples
        batch2, _, _ = _data("ragged_empty")
        try:
            dp(shard(batch2 if rank == 0 else _data("box_sum")[0], rank, WORLD), None)
        except GeoopError as e:
            res["err_samples"] = (type(e).__name__, str(e))
        # bad input 2: replicas differ
        m2 = _model(CASES["box_sum"][0])
        if rank == 1:
            with torch.no_grad():
                m2.projection.net[0].weight[0, 0] += 1e-3
        try:
            DomainParallel(m2)
        except GeoopError as e:
            res["err_replica"] = (type(e).__name__, str(e))
        DomainParallel(m2, check=False).broadcast_parameters()  # rank 0's parameters everywhere: now consistent
        DomainParallel(m2)
        res["fixed_replica"] = float(m2.projection.net[0].weight[0, 0])
    finally:
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("domain")
    ctx = mp.start_processes(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("domain-parallel workers did not finish within 240 s")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process(ranks, name):
    kw, _, _ = CASES[name]
    model = _model(kw)
    batch, x, c = _data(name)
    ref = _run_case(model, batch, x, c)
    out = torch.zeros_like(ref)
    seen = torch.zeros(ref.shape[0], dtype=torch.long)
    for r in ranks:
        out[r[name]["qidx"]] = r[name]["out"]
        seen[r[name]["qidx"]] += 1
    assert bool((seen == 1).all())  # the query shards partition the queries
    assert _rel(out, ref) <= 1e-5
    for k, p in model.named_parameters():
        for r in ranks:  # every rank holds the whole objective's gradient
            assert _rel(r[name]["grads"][k], p.grad) <= 1e-5, (name, k)
    if name == "empty_shard":
        assert sorted(r[name]["npts"] for r in ranks) == [0, 1]


def test_query_matches_gino_query(ranks):
    model = _model(CASES["box_mean"][0] | {"local_radius": 0.15})
    batch, x, _ = _data("box_mean")
    with torch.no_grad():
        ref = model.query(Geometry(batch.points, weights=batch.weights), batch.queries, x=x)
    for r, res in enumerate(ranks):
        assert _rel(res["query"], ref[r::WORLD]) <= 1e-5


def test_stream_query_gathers_every_chunk_on_rank_0(ranks):
    model = _model(CASES["box_mean"][0] | {"local_radius": 0.15})
    batch, x, _ = _data("box_mean")
    geom = Geometry(batch.points, weights=batch.weights)
    with torch.no_grad():
        ref = model.query(geom, batch.queries, x=x)
    assert ranks[1]["stream"] is None
    assert _rel(ranks[0]["stream"], ref) <= 1e-5
    one = stream_query(model, geom, batch.queries, x, chunk_size=37, progress=False)  # one process
    assert _rel(one, ref) <= 1e-6


def test_inconsistent_ranks_raise_on_every_rank(ranks):
    for res in ranks:
        assert res["err_samples"][0] == "DistributedError" and "numbers of samples per rank [2, 1]" in res["err_samples"][1]
        assert res["err_replica"][0] == "DistributedError" and "projection.net.0.weight" in res["err_replica"][1]
    assert ranks[0]["fixed_replica"] == ranks[1]["fixed_replica"] == float(_model(CASES["box_sum"][0]).projection.net[0].weight[0, 0].detach())


def test_missing_process_group_and_bad_grid():
    with pytest.raises(DistributedError, match="process group"):
        DomainParallel(_model(CASES["box_sum"][0]))
    with pytest.raises(ConfigError, match="does not divide the world size 3"):
        grid_layout(3, 2)
    assert grid_layout(4, 2, 3) == (2, 1, 1)


def test_orb_split_is_balanced_and_spatial():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(1001, 3, generator=g) * torch.tensor([4.0, 1.0, 1.0])
    parts = orb_split(p, 3)
    assert sorted(torch.cat(parts).tolist()) == list(range(1001))
    assert [len(i) for i in parts] == [333, 334, 334]
    # the longest axis (x) is cut: the shards' x ranges do not overlap
    spans = sorted((float(p[i, 0].min()), float(p[i, 0].max())) for i in parts)
    assert spans[0][1] <= spans[1][0] and spans[1][1] <= spans[2][0]
    assert [len(i) for i in orb_split(p[:1], 2)] == [0, 1]
    with pytest.raises(GeoopError, match="rank must be"):
        shard(Geometry(p), 2, 2)


def test_shard_keeps_neighbourhoods_exact():
    """Precomputed neighbourhoods restricted to a shard equal a fresh search on the shard."""
    model = _model(CASES["box_mean"][0])
    batch, _, _ = _data("ragged_local")
    nin = model.neighbors_in(batch.points, batch.batch, 2)
    nout = model.neighbors_out(batch.queries, batch.query_batch, 2)
    full = GeometryBatch(batch.points, batch.ptr, weights=batch.weights, queries=batch.queries, query_ptr=batch.query_ptr,
                         neighbors_in=nin, neighbors_out=nout)
    for r in range(WORLD):
        part = shard(full, r, WORLD)
        assert part.neighbors_in.to_sets() == model.neighbors_in(part.points, part.batch, 2).to_sets()
        assert part.neighbors_out.to_sets() == model.neighbors_out(part.queries, part.query_batch, 2).to_sets()


@pytest.mark.slow
def test_train_with_domain_2_under_torchrun(tmp_path):
    """``[parallel] domain = 2`` under torchrun: 2 ranks share every batch; training matches
    one process on the whole batches, and only rank 0 writes."""
    import subprocess
    import sys

    import geoop
    from geoop.cli.main import main

    root = write_annulus_cases(tmp_path / "cases", 4)

    def config(run, domain):
        return tiny_gino_config(tmp_path / f"cfg{domain}.toml", root, run, model={"local_radius": 0.1},
                                parallel={"domain": domain})

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "geoop", "train", str(config(tmp_path / "run2", 2)), "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"checkpoint"') == 1  # rank 0 reports
    run2 = tmp_path / "run2"
    assert sorted(p.name for p in run2.iterdir()) == ["best.pt", "config.json", "last.pt", "loss.png", "metrics.jsonl"]
    assert len((run2 / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["train", str(config(tmp_path / "run1", 1)), "--no-progress"]) == 0
    a = torch.load(run2 / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "run1" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["config"]["parallel"]["domain"] == 2
    for k in ("train_loss", "val/rel_l2"):
        assert abs(a["metrics"][k] - b["metrics"][k]) <= 1e-4 * abs(b["metrics"][k]), k
    for k, v in b["model"].items():
        assert torch.allclose(a["model"][k], v, rtol=1e-4, atol=1e-6), k
    # predict under torchrun: 2 ranks split the geometry and the queries, rank 0 writes the same file
    case, p1, p2 = root / "case_3.vtu", tmp_path / "p1.vtu", tmp_path / "p2.vtu"
    assert main(["predict", "--checkpoint", str(run2 / "last.pt"), "--geometry", str(case), "--out", str(p1), "--chunk-size", "50"]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "geoop",
           "predict", "--checkpoint", str(run2 / "last.pt"), "--geometry", str(case), "--out", str(p2), "--chunk-size", "50"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"ranks": 2') == 1  # only rank 0 wrote and reported
    a, b = geoop.read(p2), geoop.read(p1)
    assert torch.allclose(a.points, b.points) and torch.allclose(a.fields["p"], b.fields["p"], rtol=1e-5, atol=1e-6)
    # a world size that parallel.domain does not divide: a clear error before any collective
    with pytest.raises(ConfigError, match="does not divide"):
        from geoop.train import Trainer
        from geoop.train.distributed import DistInfo

        Trainer(_model(CASES["box_sum"][0]), [Geometry(torch.rand(5, 3))], targets=["p"], dist_info=DistInfo(0, 3), domain=2)


def test_decoder_grid_search_equals_tree_search():
    """GINO.neighbors_out on a box latent (point-major grid search, no sort) finds exactly
    the pairs of a KD-tree search, per sample of a batch, also for queries outside the box."""
    from geoop.neighbors.search import radius_search

    model = _model(CASES["box_mean"][0])
    g = torch.Generator().manual_seed(3)
    q = torch.rand(700, 3, generator=g) * 1.2 - 0.1
    qb = torch.cat([torch.zeros(400, dtype=torch.long), torch.ones(300, dtype=torch.long)])
    got = model.neighbors_out(q, qb, 2)
    lat = model.latent_points().repeat(2, 1)
    ref = radius_search(lat, q, model.radius_out, model._latent_batch(2), qb, backend="scipy")
    assert got.num_sources == 2 * model.num_latent and got.num_edges == ref.num_edges > 0
    assert torch.equal(got.ptr, ref.ptr) and torch.equal(got.index, ref.index)


def test_large_vtk_results_are_written_uncompressed(tmp_path, monkeypatch):
    """Streamed predictions of millions of points skip zlib (geoop.geometry.io.LARGE_VTK_POINTS);
    the file reads back exactly."""
    import geoop
    import geoop.geometry.io as gio

    g = Geometry(torch.rand(50, 3, dtype=torch.float64), fields={"p": torch.randn(50, 1, dtype=torch.float64)})
    geoop.write(g, tmp_path / "small.vtu")
    monkeypatch.setattr(gio, "LARGE_VTK_POINTS", 10)
    geoop.write(g, tmp_path / "large.vtu")
    assert b"compressor=" in (tmp_path / "small.vtu").read_bytes()[:2000]
    assert b"compressor=" not in (tmp_path / "large.vtu").read_bytes()[:2000]
    back = geoop.read(tmp_path / "large.vtu")
    assert torch.allclose(back.points.double(), g.points) and torch.allclose(back.fields["p"].double().reshape(50, 1), g.fields["p"])
