"""Per-rank memory of parameters, gradients and AdamW state: FSDP (``Trainer(fsdp=True)``,
:mod:`geoop.train.fsdp`) against DDP (``fsdp=False``), 2 gloo ranks on the CPU.

    python benchmarks/fsdp.py                         # width 256, 2-D latent 32^2, 6 modes, 4 layers
    python benchmarks/fsdp.py --width 64 --steps 1    # a quick look

Model: a 2-D GINO (1 input channel, 1 output), box latent 32 x 32, FNO width ``--width``,
``--modes`` modes per axis, ``--layers`` layers, GNO MLPs (64, 64) (38.7 M parameters at
width 256, 6 modes, 4 layers: the dense spectral weights dominate). Data: 4 random point
clouds of 400 points per rank set (field ``p = sin(3x) y``), batch 1 per rank, ``--steps``
training steps through :class:`geoop.train.Trainer`, then each rank counts the bytes it holds:

* ``params``, ``grads``, ``optimizer``: the local shard of every parameter, of its gradient
  (the last step's, still allocated) and of the AdamW moments and step counters
  (:func:`geoop.train.fsdp.local_bytes`: a ``DTensor``'s ``to_local()``, a plain tensor whole).
  DDP also keeps its gradient buckets (one more gradient-sized buffer), not counted here.
* ``peak_rss_mb``: the process's resident-set high-water mark (``VmHWM``, absolute: ~0.3 GB
  is torch itself), the maximum over ranks.

Each configuration runs in fresh processes (``torch.multiprocessing.spawn``, 1 thread each).
Ratio reported: FSDP / DDP of the per-rank ``params + grads + optimizer`` bytes (floor <= 0.55).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _vm_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _samples(n: int, points: int, seed: int):
    import torch

    from geoop.batch import Sample
    from geoop.geometry.geometry import Geometry

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        pts = torch.rand(points, 2, generator=g)
        p = torch.sin(3 * pts[:, :1]) * pts[:, 1:]
        geo = Geometry(pts, fields={"a": p.clone(), "p": p}, weights=torch.full((points,), 1.0 / points))
        out.append(Sample(geo, Geometry(pts, fields={"p": p})))
    return out


def _worker(rank: int, world: int, port: int, args: dict, out: str) -> None:
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from geoop.models import GINO
    from geoop.train import Trainer
    from geoop.train.distributed import cleanup_distributed, init_distributed
    from geoop.train.fsdp import local_bytes

    info = init_distributed(torch.device("cpu"), timeout_s=1800)
    try:
        torch.manual_seed(0)
        model = GINO(in_channels=1, out_channels=1, coord_dim=2, latent={"shape": [32, 32]},
                     encoder={"radius": 0.08, "mlp": [64, 64]}, decoder={"radius": 0.08, "mlp": [64, 64]},
                     blocks={"width": args["width"], "modes": args["modes"], "layers": args["layers"]})
        n_params = sum(p.numel() for p in model.parameters())
        tr = Trainer(model, _samples(world * args["steps"], 400, 0), targets=["p"], inputs=["a"], epochs=1, batch_size=1,
                     lr=1e-3, dist_info=info, progress=False, fsdp=args["fsdp"])
        tr.fit()
        rep = {**local_bytes(tr.model, tr.optimizer), "peak_rss_mb": _vm_hwm_mb(), "n_params": n_params,
               "sharded": tr.fsdp, "train_loss": tr.history[-1]["train_loss"]}
        with open(os.path.join(out, f"{'fsdp' if args['fsdp'] else 'ddp'}_{rank}.json"), "w") as f:
            json.dump(rep, f)
    finally:
        cleanup_distributed(info)


def run(width: int, modes: int, layers: int, steps: int, world: int = 2) -> dict:
    import torch.multiprocessing as mp

    res: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fsdp in (False, True):
            args = dict(width=width, modes=modes, layers=layers, steps=steps, fsdp=fsdp)
            mp.spawn(_worker, args=(world, _free_port(), args, tmp), nprocs=world, join=True)
            name = "fsdp" if fsdp else "ddp"
            ranks = [json.loads(Path(tmp, f"{name}_{r}.json").read_text()) for r in range(world)]
            res[name] = {k: max(r[k] for r in ranks) for k in ("params", "grads", "optimizer", "total", "peak_rss_mb")}
            res[name]["per_rank_total"] = [r["total"] for r in ranks]
            res[name]["sharded"] = ranks[0]["sharded"]
            res["n_params"] = ranks[0]["n_params"]
    res["ratio_total"] = res["fsdp"]["total"] / res["ddp"]["total"]
    res["ratio_peak_rss"] = res["fsdp"]["peak_rss_mb"] / res["ddp"]["peak_rss_mb"]
    return res


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--modes", type=int, default=6)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the report to this file")
    a = ap.parse_args(argv)
    res = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "ranks": 2,
           "config": {"width": a.width, "modes": a.modes, "layers": a.layers, "steps": a.steps},
           **run(a.width, a.modes, a.layers, a.steps)}
    print(json.dumps(res, indent=1))
    mb = 1024.0 ** 2
    print(f"\n{'':6} {'params MB':>10} {'grads MB':>10} {'Adam MB':>10} {'total MB':>10} {'peak RSS MB':>12}")
    for k in ("ddp", "fsdp"):
        r = res[k]
        print(f"{k:6} {r['params'] / mb:10.1f} {r['grads'] / mb:10.1f} {r['optimizer'] / mb:10.1f} "
              f"{r['total'] / mb:10.1f} {r['peak_rss_mb']:12.0f}")
    print(f"FSDP / DDP per rank: params+grads+Adam {res['ratio_total']:.3f}, peak RSS {res['ratio_peak_rss']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
