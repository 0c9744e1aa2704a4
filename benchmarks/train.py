"""Training throughput of geoop.train.Trainer + GINO on airfoil cases (CPU).

Measured side by side in one run, on the same generated cases (volume queries of
different sizes per airfoil):

* batch of 8 geometries of different sizes vs batch size 1 (samples/s; target >= 2x):
  one process, ``--threads`` torch threads (default 1);
* 2-process DDP (gloo, per-rank batch 4) vs 1 process (batch 8): same global batch, each
  process with ``--threads`` threads.

Threads: on a machine shared with other jobs, 2 OpenMP threads per process were measured
7-16x SLOWER than 1 (spinning threads fighting for the cores), so the default is 1 thread
per process; DDP is then the way to use several cores.

Neighbourhoods are precomputed once per case (warm-up epoch, not timed), as in training.
Prints a JSON object and a short table.

    python benchmarks/train.py [--cases 16] [--epochs 2] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = dict(latent="box", latent_shape=[32, 32], radius_in=0.06, radius_out=0.06, fno_width=32, fno_modes=12,
             fno_layers=4, gno_mlp=[32, 32], n_freqs=6)


def _config(data, out, batch_size, epochs):
    from geoop.data.folder import MeshFolderDataset
    from geoop.models.gino import GINO
    from geoop.train.config import resolve_config

    return resolve_config({
        "seed": 0, "device": "cpu",
        "data": {"folder": str(data), "inputs": [], "targets": ["u", "v", "p"], "val_split": "",
                 "input_file": "{case}_surface.vtp", "query_file": "{case}_volume.vtu", "drop_flat_z": True, "latent_sdf": True},
        "model": dict(MODEL),
        "optim": {"epochs": epochs + 1, "batch_size": batch_size, "lr": 1e-3},
        "output": {"dir": str(out)},
    }, dataset_cls=MeshFolderDataset, model_cls=GINO)


def _throughput(data, out, batch_size, epochs, dist_info=None):
    """samples/s over ``epochs`` timed epochs after one warm-up epoch (neighbourhoods)."""
    from geoop.train.run import build_run

    r = build_run(_config(data, out, batch_size, epochs), dist_info=dist_info, progress=False)
    tr = r.trainer
    tr.out_dir = None  # no files: time the training only
    tr.train_epoch(0)
    world = tr.dist.world_size
    t0 = time.perf_counter()
    n = 0
    for e in range(1, epochs + 1):
        tr.train_epoch(e)
        n += len(tr.train_data)  # global samples per epoch
    dt = time.perf_counter() - t0
    return n / dt, dt, world


def _ddp_worker(rank, world, port, data, out, batch_size, epochs, result, threads):
    torch.set_num_threads(threads)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from geoop.train.distributed import cleanup_distributed, init_distributed

    info = init_distributed(torch.device("cpu"))
    try:
        sps, dt, _ = _throughput(data, out, batch_size, epochs, dist_info=info)
        if rank == 0:
            Path(result).write_text(json.dumps({"samples_per_s": sps, "time_s": dt}))
    finally:
        cleanup_distributed(info)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per configuration")
    ap.add_argument("--repeats", type=int, default=1, help="repeat batch-1/batch-8 alternately, keep the best of each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--data", help="existing folder of airfoil cases (from geoop demo: DIR/cases)")
    args = ap.parse_args()
    from geoop.cli.demo import prepare_cases
    from geoop.data import airfoil

    tmp = Path(tempfile.mkdtemp(prefix="geoop_bench_train_"))
    if args.data:
        data = Path(args.data)
    else:
        entries = airfoil.generate(str(tmp / "raw"), args.cases, seed=1, n_volume=(2000, 4000), n_panels=(100, 140))
        data = tmp / "cases"
        prepare_cases(tmp / "raw", data, entries)
        (data / "split.json").write_text(json.dumps({"train": [e["case"] for e in entries], "test": []}))
    from geoop.data.folder import discover_cases
    from geoop.geometry.io import read

    cases, _ = discover_cases(data, "{case}_surface.vtp", "{case}_volume.vtu")
    sizes = [read(c.query).n_points for c in cases.values()]

    torch.set_num_threads(args.threads)
    res = {"cases": len(cases), "query_points": {"min": min(sizes), "max": max(sizes)}, "threads": args.threads, "model": MODEL}
    b1 = b8 = 0.0
    for _ in range(args.repeats):  # alternate, so a change of machine load hits both
        b1 = max(b1, _throughput(data, tmp / "b1", 1, args.epochs)[0])
        b8 = max(b8, _throughput(data, tmp / "b8", 8, args.epochs)[0])
    res["batch1_samples_per_s"], res["batch8_samples_per_s"] = b1, b8
    res["batch8_over_batch1"] = b8 / b1

    # DDP: 2 processes, per-rank batch 4  vs  1 process, batch 8 (same global batch)
    single = b8
    out = tmp / "ddp.json"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(data), str(tmp / "ddp"), 4, args.epochs, str(out), args.threads), nprocs=2, join=True)
    ddp = json.loads(out.read_text())["samples_per_s"]
    res["single_process_batch8_samples_per_s"] = single
    res["ddp_2procs_batch4x2_samples_per_s"] = ddp
    res["ddp_over_single"] = ddp / single
    print(json.dumps(res, indent=2))
    print()
    print(f"{'configuration':<44} {'samples/s':>10}")
    print(f"{'batch 1 (1 process, %d threads)' % args.threads:<44} {b1:10.2f}")
    print(f"{'batch 8 (1 process, %d threads)' % args.threads:<44} {b8:10.2f}   x{b8 / b1:.2f}")
    print(f"{'DDP 2 processes, batch 4 each (global 8)':<44} {ddp:10.2f}   x{ddp / single:.2f} vs batch 8")


if __name__ == "__main__":
    main()
