"""Cost curve of one large 3-D car: GINO training step at 1e4..2e6 points, 1 rank vs 2 ranks
(``geoop.distributed.DomainParallel``, 1 thread each), ``GINO.query`` and ``geoop predict``
at 1e6 / 1e7 query points.

    python benchmarks/scale.py                         # the whole curve (~15 min on 2 idle cores)
    python benchmarks/scale.py --only step --sizes 1e4,1e5 --ranks 1,2
    python benchmarks/scale.py --only query,predict --queries 1e6,1e7
    python benchmarks/scale.py --only step --sizes 1e6 --ranks 1 --profile   # stage times

Case: ``meshes/car_body.stl`` normalised into the unit box (margin 0.1) and resampled to n
surface points by area (``Geometry.sample_surface``, seed 0) with their normals as input
features (3 channels), n random query points in the unit box (seed 1), target
``sin(6x) cos(4y) + z``; GINO with a 32^3 box latent over [0, 1]^3, radius 0.05 in and out,
FNO width 32, 8 modes, 4 layers, GNO MLPs (64, 64), mean reductions. One step = zero_grad +
forward (neighbourhood search included) + MSE backward, no optimizer.

Every measurement runs in fresh processes (``--worker``): the parent samples the car once and
writes every rank's ORB shard (points, normals, weights, queries, targets) to a file, as a
sharded reader would give them; a step with R ranks starts R gloo processes
(``torch.set_num_threads(1)`` each) that each load their own shard, encode it and decode its
queries (no worker reads the mesh or holds the whole car). The reported memory is each
process's resident-set high-water mark (``VmHWM``, absolute: it includes the ~0.23 GB of
torch itself; reset after the shard is loaded), the maximum over ranks; the time is the
slowest rank's median step after one warm-up step. ``--profile`` adds the stage times of the
step (search, encoder, latent, decoder, backward) and each stage's memory: the resident set
at its end and its own peak (``VmHWM`` reset at the stage's start). ``--checkpoint-latent``
builds the model with ``memory.checkpoint_latent`` (the latent blocks recomputed in
backward). ``allocator`` in the output says whether the workers ran on glibc's malloc or on
a preloaded jemalloc/tcmalloc (``LD_PRELOAD``, inherited by the workers). ``file_mb`` is the
file-backed part of the resident set after the steps (``RssFile``: mostly the shared
libraries' code, the same physical pages for every rank of a node, and reclaimable);
``peak_anon_mb`` = ``peak_mb - file_mb``, the peak a rank adds to a node's memory by itself.

``query``: ``GINO.query`` of the 1e5-point car at Q random points (no grad, chunks of 64k).
``predict``: ``geoop predict`` from files: the car (.vtp, 1e5 points) and a point-cloud .vtu
of Q random points -> a .vtu with the field, against ``GINO.query`` on the same points in the
same run (``predict_over_query``); memory = the predict process's VmHWM.

Growth exponents: the log-log slope of time and memory between consecutive sizes.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = dict(in_channels=3, out_channels=1, latent={"shape": [32, 32, 32]},
             encoder={"radius": 0.05, "mlp": [64, 64]}, decoder={"radius": 0.05, "mlp": [64, 64]},
             blocks={"width": 32, "modes": 8, "layers": 4})


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_hwm() -> None:
    """Restart the RSS high-water mark at the current RSS (Linux ``clear_refs`` 5), so a
    worker's peak measures what follows (the step), not its whole-car data preparation,
    which every rank does alike here and a user's sharded reader would not."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _car(n: int):
    """(Geometry with normals and uniform weights, queries (n, 3), target (n, 1))."""
    import torch

    import geoop

    car, _ = geoop.read(str(ROOT / "meshes" / "car_body.stl")).normalized(margin=0.1)
    s = car.sample_surface(int(n), seed=0)
    g = torch.Generator().manual_seed(1)
    q = torch.rand(int(n), 3, generator=g)
    y = (torch.sin(6 * q[:, 0]) * torch.cos(4 * q[:, 1]) + q[:, 2])[:, None]
    return s, q, y


def _model(checkpoint_latent: bool = False):
    import torch

    from geoop.models import GINO

    torch.manual_seed(0)
    return GINO(**MODEL, memory={"checkpoint_latent": True}) if checkpoint_latent else GINO(**MODEL)


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _allocator() -> str:
    """The malloc this process runs on: a preloaded jemalloc / tcmalloc, else glibc."""
    with open("/proc/self/maps") as f:
        maps = f.read()
    for name in ("jemalloc", "tcmalloc"):
        if name in maps:
            return name
    return "glibc"


def _write_shards(d: str, n: int, world: int) -> None:
    """Sample the car once and write rank r's ORB shard of the points and of the queries to
    ``d/shard{r}.pt`` (what each worker loads)."""
    import torch

    from geoop.distributed import shard_index

    s, q, y = _car(n)
    pis = shard_index(s.points, world) if world > 1 else [torch.arange(n)]
    qis = shard_index(q, world) if world > 1 else [torch.arange(n)]
    for r, (pi, qi) in enumerate(zip(pis, qis)):
        torch.save({"points": s.points[pi].clone(), "x": s.normals[pi].clone(), "weights": s.weights[pi].clone(),
                    "queries": q[qi].clone(), "y": y[qi].clone()}, Path(d, f"shard{r}.pt"))


# --------------------------------------------------------------------------- step worker
def _step_rank(rank: int, world: int, port: int, n: int, steps: int, profile: bool, out: str,
               checkpoint_latent: bool = False) -> None:
    import torch

    torch.set_num_threads(1)
    dp = None
    if world > 1:
        import torch.distributed as dist

        from geoop.distributed import DomainParallel

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=1800))
    model = _model(checkpoint_latent)
    if world > 1:
        dp = DomainParallel(model)
    sh = torch.load(Path(out, f"shard{rank}.pt"))
    pts, x, w, q, y = sh["points"], sh["x"], sh["weights"], sh["queries"], sh["y"]
    del sh
    prep_peak_mb = _hwm_mb()
    gc.collect()
    _reset_hwm()
    stages = {k: [] for k in ("search", "encoder", "latent", "decoder", "backward")}
    stages_cpu = {k: [] for k in stages}
    stages_mem: dict = {}  # profile: stage -> (RSS at its end, its own peak) [MB], of the last step
    times = []

    cpu_times = []

    def mark(k):
        """End of stage k (profile only): its end RSS and peak; the next stage's peak starts here."""
        if profile:
            stages_mem[k] = (_status_mb("VmRSS"), _hwm_mb())
            _reset_hwm()

    def step():
        c0 = time.process_time()
        t = [time.perf_counter()]
        c = [c0]
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            nin = model.neighbors_in(pts)
            nout = model.neighbors_out(q)
        t.append(time.perf_counter())
        c.append(time.process_time())
        mark("search")
        sums, cnt = model.encode_partial(pts, x, w, None, 1, nin)
        if dp is not None:
            both = dp.all_reduce(torch.cat([sums, cnt[:, None]], 1))
            sums, cnt = both[:, :-1], both[:, -1].detach()
        t.append(time.perf_counter())
        c.append(time.process_time())
        mark("encoder")
        latent = model.encode_finish(sums, cnt, None, 1)
        t.append(time.perf_counter())
        c.append(time.process_time())
        mark("latent")
        pred = model.decode(latent, q, None, nout)
        loss = (pred - y).square().sum() / n  # this rank's share of the MSE over all n queries
        t.append(time.perf_counter())
        c.append(time.process_time())
        mark("decoder")
        loss.backward()
        if dp is not None:
            dp.sync_gradients()
        t.append(time.perf_counter())
        c.append(time.process_time())
        mark("backward")
        for k, a, b, ca, cb in zip(stages, t, t[1:], c, c[1:]):
            stages[k].append(b - a)
            stages_cpu[k].append(cb - ca)
        cpu_times.append(time.process_time() - c0)
        return t[-1] - t[0], nin.num_edges, nout.num_edges

    full = pts, x, w, q, y
    m_small = min(4096, int(pts.shape[0]))  # warm-up (lazy imports, allocator) on a small piece
    pts, x, w, q, y = pts[:m_small], x[:m_small], w[:m_small], q[:m_small], y[:m_small]
    step()
    pts, x, w, q, y = full
    for k in stages:
        stages[k].clear()
        stages_cpu[k].clear()
    cpu_times.clear()
    before_mb = _status_mb("VmRSS")  # the resident set the step starts from (runtime, model, data, allocator)
    peak_mb = before_mb
    for _ in range(steps):
        dt, e_in, e_out = step()
        times.append(dt)
        peak_mb = max([peak_mb, _hwm_mb()] + [m[1] for m in stages_mem.values()])
    times.sort()
    file_mb = _status_mb("RssFile")
    res = {"rank": rank, "step_s": times[len(times) // 2], "cpu_s": sorted(cpu_times)[len(times) // 2], "peak_mb": peak_mb,
           "file_mb": file_mb, "peak_anon_mb": peak_mb - file_mb,
           "prep_peak_mb": prep_peak_mb, "before_step_mb": before_mb, "edges_in": e_in, "edges_out": e_out,
           "points": int(pts.shape[0]), "queries": int(q.shape[0]), "allocator": _allocator()}
    if profile:
        res["stages_s"] = {k: sorted(v)[len(v) // 2] for k, v in stages.items()}
        res["stages_cpu_s"] = {k: sorted(v)[len(v) // 2] for k, v in stages_cpu.items()}
        res["stages_mem_mb"] = {k: {"end": round(m[0]), "peak": round(m[1])} for k, m in stages_mem.items()}
    Path(out, f"rank{rank}.json").write_text(json.dumps(res))
    if world > 1:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_step(n: int, ranks: int, steps: int, profile: bool, checkpoint_latent: bool = False) -> dict:
    """One measurement in fresh processes (``--worker step``), on shards written here."""
    with tempfile.TemporaryDirectory() as d:
        _write_shards(d, n, ranks)
        cmd = [sys.executable, __file__, "--worker", "step", "--n", str(n), "--world", str(ranks), "--steps", str(steps),
               "--out", d] + (["--profile"] if profile else []) + (["--checkpoint-latent"] if checkpoint_latent else [])
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rs = [json.loads(Path(d, f"rank{r}.json").read_text()) for r in range(ranks)]
    out = {"n": n, "ranks": ranks, "checkpoint_latent": checkpoint_latent, "allocator": rs[0]["allocator"],
           "step_s": max(r["step_s"] for r in rs), "cpu_s": max(r["cpu_s"] for r in rs),
           "peak_mb": max(r["peak_mb"] for r in rs), "peak_mb_ranks": [round(r["peak_mb"]) for r in rs],
           "file_mb": max(r["file_mb"] for r in rs), "peak_anon_mb": max(r["peak_anon_mb"] for r in rs),
           "before_step_mb": max(r["before_step_mb"] for r in rs), "prep_peak_mb": max(r["prep_peak_mb"] for r in rs),
           "edges_in": sum(r["edges_in"] for r in rs), "edges_out": sum(r["edges_out"] for r in rs)}
    if profile:
        out["stages_s"] = {k: max(r["stages_s"][k] for r in rs) for k in rs[0]["stages_s"]}
        out["stages_cpu_s"] = {k: max(r["stages_cpu_s"][k] for r in rs) for k in rs[0]["stages_cpu_s"]}
        out["stages_mem_mb"] = {k: {"end": max(r["stages_mem_mb"][k]["end"] for r in rs),
                                    "peak": max(r["stages_mem_mb"][k]["peak"] for r in rs)} for k in rs[0]["stages_mem_mb"]}
    return out


def _step_worker(a) -> None:
    import torch.multiprocessing as mp

    if a.world == 1:
        _step_rank(0, 1, 0, a.n, a.steps, a.profile, a.out, a.checkpoint_latent)
    else:
        mp.start_processes(_step_rank, args=(a.world, _free_port(), a.n, a.steps, a.profile, a.out, a.checkpoint_latent),
                           nprocs=a.world, start_method="spawn")


# --------------------------------------------------------------------------- query / predict
def _query_worker(a) -> None:
    import torch

    torch.set_num_threads(1)
    s, _, _ = _car(a.n)
    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    q = torch.rand(a.q, 3, generator=g)
    t, c = time.perf_counter(), time.process_time()
    with torch.no_grad():
        model.query(s, q, x=s.normals, chunk_size=65536)
    Path(a.out, "query.json").write_text(json.dumps({"query_s": time.perf_counter() - t, "query_cpu_s": time.process_time() - c,
                                                     "peak_mb": _hwm_mb()}))


def run_query(n: int, q: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, __file__, "--worker", "query", "--n", str(n), "--q", str(q), "--out", d], check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
        r = json.loads(Path(d, "query.json").read_text())
    return {"n": n, "queries": q, **r}


def _predict_files(d: Path, n: int, q: int) -> tuple[Path, Path, Path]:
    """Car file, query point-cloud file and a checkpoint that ``geoop predict`` reads."""
    import numpy as np
    import pyvista as pv

    import geoop
    from geoop.train.checkpoint import save_checkpoint

    s, _, _ = _car(n)
    car = d / "car.vtp"
    geoop.write(s.replace(fields={"normal": s.normals}), car)
    vol = d / f"volume_{q}.vtu"
    rng = np.random.default_rng(2)
    pts = rng.random((q, 3), dtype=np.float32)
    grid = pv.PolyData(pts).cast_to_unstructured_grid()
    grid.save(str(vol))
    del grid, pts
    ck = d / "model.pt"
    m = _model()
    save_checkpoint({"epoch": 0, "model": m.state_dict(), "model_config": m.config, "inputs": ["normal"], "targets": ["p"],
                     "normalizers": {}, "config": {}, "extra": {"data": {"dim": 3, "geometry_normalization": "none"}}}, ck)
    return car, vol, ck


def _query_files_worker(a) -> None:
    """``GINO.query`` alone on what ``geoop predict`` reads (files read before the clock)."""
    import torch

    import geoop

    torch.set_num_threads(1)
    s = geoop.read(a.car)
    q = geoop.read(a.vol).points.float()
    model = _model().eval()
    t, c = time.perf_counter(), time.process_time()
    with torch.no_grad():
        model.query(s, q, x=s.fields["normal"].float(), chunk_size=65536)
    Path(a.out, "query.json").write_text(json.dumps({"query_s": time.perf_counter() - t, "query_cpu_s": time.process_time() - c,
                                                     "peak_mb": _hwm_mb()}))


def run_predict(n: int, q: int, ranks: int = 1) -> dict:
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        car, vol, ck = _predict_files(d, n, q)
        subprocess.run([sys.executable, __file__, "--worker", "query_files", "--car", str(car), "--vol", str(vol), "--out", str(d)],
                       check=True, env=env)
        qr = json.loads((d / "query.json").read_text())
        out = d / "pred.vtu"
        launch = [sys.executable, "-m", "geoop"] if ranks == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(_free_port()), "-m", "geoop"]
        wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True); "
                   "u = resource.getrusage(resource.RUSAGE_CHILDREN); print(time.perf_counter() - t, u.ru_maxrss, u.ru_utime + u.ru_stime)")
        cmd = [sys.executable, "-c", wrapper, *launch, "predict", "--checkpoint", str(ck), "--geometry", str(car), "--query", str(vol),
               "--out", str(out), "--no-progress"]
        r = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        wall, kib, cpu = r.stdout.strip().splitlines()[-1].split()
        size = out.stat().st_size
    return {"n": n, "queries": q, "ranks": ranks, "predict_s": float(wall), "predict_peak_mb": int(kib) / 1024.0,
            "predict_cpu_s": float(cpu), "query_s": qr["query_s"], "query_cpu_s": qr["query_cpu_s"], "query_peak_mb": qr["peak_mb"],
            "predict_over_query": float(wall) / qr["query_s"], "predict_over_query_cpu": float(cpu) / qr["query_cpu_s"],
            "out_bytes": size}


# --------------------------------------------------------------------------- report
def slopes(rows: list, key: str) -> list:
    out = []
    for a, b in zip(rows, rows[1:]):
        out.append({"from": a["n"], "to": b["n"], "slope": math.log(b[key] / a[key]) / math.log(b["n"] / a["n"])})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="step,query,predict")
    p.add_argument("--sizes", default="1e4,1e5,1e6")
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--queries", default="1e6,1e7")
    p.add_argument("--predict-ranks", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--checkpoint-latent", action="store_true", help="model with memory.checkpoint_latent")
    p.add_argument("--worker", default=None)
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--q", type=int, default=0)
    p.add_argument("--world", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--car", default=None)
    p.add_argument("--vol", default=None)
    a = p.parse_args()
    if a.worker:
        {"step": _step_worker, "query": _query_worker, "query_files": _query_files_worker}[a.worker](a)
        return 0
    only = a.only.split(",")
    report: dict = {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in MODEL.items()}}
    if "step" in only:
        rows = []
        for n in [int(float(s)) for s in a.sizes.split(",")]:
            for r in [int(s) for s in a.ranks.split(",")]:
                rows.append(run_step(n, r, a.steps, a.profile, a.checkpoint_latent))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        report["step"] = rows
        for r in sorted({row["ranks"] for row in rows}):
            rr = [row for row in rows if row["ranks"] == r]
            report[f"slopes_{r}rank"] = {"time": slopes(rr, "step_s"), "memory": slopes(rr, "peak_mb")}
        ones = {row["n"]: row for row in rows if row["ranks"] == 1}
        report["two_over_one"] = [{"n": row["n"], "time": row["step_s"] / ones[row["n"]]["step_s"],
                                   "memory": row["peak_mb"] / ones[row["n"]]["peak_mb"],
                                   "memory_anon": row["peak_anon_mb"] / ones[row["n"]]["peak_anon_mb"]}
                                  for row in rows if row["ranks"] == 2 and row["n"] in ones]
    if "query" in only:
        report["query"] = [run_query(100000, int(float(s))) for s in a.queries.split(",")]
    if "predict" in only:
        report["predict"] = [run_predict(100000, int(float(s)), a.predict_ranks) for s in a.queries.split(",")]
    print(json.dumps(report, indent=1))
    print("\n| measurement | n | ranks | time [s] | peak [MB] |\n| --- | ---: | ---: | ---: | ---: |")
    for row in report.get("step", []):
        print(f"| step | {row['n']:.0e} | {row['ranks']} | {row['step_s']:.2f} | {row['peak_mb']:.0f} |")
    for row in report.get("query", []):
        print(f"| query | {row['queries']:.0e} | 1 | {row['query_s']:.2f} | {row['peak_mb']:.0f} |")
    for row in report.get("predict", []):
        print(f"| predict (x query) | {row['queries']:.0e} | {row['ranks']} | {row['predict_s']:.2f} ({row['predict_over_query']:.2f}x) | {row['predict_peak_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
