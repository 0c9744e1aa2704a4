"""Forecast a shallow-water state on the sphere from scattered weather stations with a GINO.

Each case (:mod:`geoop.data.sphere`, torch-harmonics' shallow-water solver) gives the height
and vorticity "now" at a few hundred random stations (a different set and count per case)
and the full lat-lon grid ``hours`` later. A GINO with a sphere latent
(GNO stations -> SFNO on an (nlat, nlon) grid -> GNO grid -> any query point) is trained to
map the stations to the future state on the full grid.

Reported: the relative L2 error on the full grid of the test cases,
``sqrt(sum_i w_i (pred_i - true_i)^2 / sum_i w_i (true_i - mean_w(true))^2)`` per field
(area weights ``w``; the denominator is the spatial variance, so predicting the mean gives
1.0), for the GINO and for persistence (the exact full-grid state *now*, which the GINO
never sees: an optimistic baseline).

    .venv/bin/python examples/sphere_stations.py                 # ~100 s of CPU time, 1 thread
    .venv/bin/python examples/sphere_stations.py --n-train 256 --epochs 100 --width 48
    .venv/bin/python examples/sphere_stations.py --out runs/sphere  # also writes .vtp files

Prints a JSON line and a short table.

Measured here (2 shared CPU cores, 1 torch thread; test cases = the 8 seeds after the
training seeds, so the persistence numbers differ between the two runs):

=======================================  ==========  =============  ===================
run                                      field       GINO rel. L2   persistence rel. L2
=======================================  ==========  =============  ===================
defaults (48 train, 25 epochs, 96 s CPU)  height      0.767          1.457
                                         vorticity   0.669          0.770
--n-train 128 --epochs 30 (284 s CPU)    height      0.665          1.389
                                         vorticity   0.656          0.798
=======================================  ==========  =============  ===================

(Persistence of the height is worse than the spatial mean, 1.0: the random initial states
are not balanced and gravity waves move the height anomalies within hours.)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without an installed geoop
    sys.path.insert(0, str(ROOT))

import geoop  # noqa: E402
from geoop.batch import GeometryBatch  # noqa: E402
from geoop.data import sphere  # noqa: E402
from geoop.data.normalize import FieldNormalizer  # noqa: E402

FIELDS = ("height", "vorticity")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=48)
    p.add_argument("--n-test", type=int, default=8)
    p.add_argument("--nlat", type=int, default=32, help="data grid latitudes")
    p.add_argument("--nlon", type=int, default=64, help="data grid longitudes")
    p.add_argument("--hours", type=float, default=6.0, help="forecast horizon")
    p.add_argument("--stations", type=int, nargs=2, default=(200, 400), metavar=("MIN", "MAX"))
    p.add_argument("--latent", type=int, nargs=2, default=(16, 32), metavar=("NLAT", "NLON"))
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--radius", type=float, default=0.3, help="GNO radius (chord length, unit sphere)")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the tensors are small: 1 is fastest on a busy machine)")
    p.add_argument("--out", default=None, help="folder for predicted test fields (.vtp) and metrics.json")
    return p.parse_args(argv)


def rel_l2(pred, true, w):
    """Area-weighted relative L2 per column, normalised by the spatial variance of ``true``.
    Shapes: pred, true (G, C); w (G,) -> (C,)."""
    w = w[:, None].double()
    pred, true = pred.double(), true.double()
    mean = (w * true).sum(0) / w.sum()
    return torch.sqrt((w * (pred - true) ** 2).sum(0) / (w * (true - mean) ** 2).sum(0))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    params = dict(nlat=args.nlat, nlon=args.nlon, hours=args.hours, stations=tuple(args.stations))

    # ---------------------------------------------------------------- data
    n_total = args.n_train + args.n_test
    cases = [sphere.make_sample(args.seed * 100003 + i, name=f"case_{i:04d}", **params) for i in range(n_total)]
    train, test = cases[: args.n_train], cases[args.n_train :]
    t_data = time.perf_counter() - t_start

    norm_in = {f: FieldNormalizer(name=f).fit(c.stations.fields[f] for c in train) for f in FIELDS}
    norm_out = {f: FieldNormalizer(name=f).fit(c.target.fields[f] for c in train) for f in FIELDS}

    def x_of(batch):
        return torch.cat([norm_in[f].encode(batch.fields[f]) for f in FIELDS], 1)

    def y_of(batch):
        return torch.cat([norm_out[f].encode(batch.query_fields[f]) for f in FIELDS], 1)

    # ---------------------------------------------------------------- model
    from geoop.models import GNOSpec, SFNOSpec, SphereLatent

    model = geoop.GINO(
        in_channels=len(FIELDS),
        out_channels=len(FIELDS),
        coord_dim=3,
        latent=SphereLatent(shape=tuple(args.latent)),
        encoder={"radius": args.radius, "mlp": (32, 32)},
        blocks=SFNOSpec(width=args.width, layers=args.layers),
        decoder=GNOSpec(radius=args.radius, mlp=(32, 32)),
    )
    n_params = sum(p.numel() for p in model.parameters())
    # neighbourhoods once per case (stations -> latent, latent -> grid), not once per epoch
    train_s = [model.precompute(c.to_sample()) for c in train]
    test_s = [model.precompute(c.to_sample()) for c in test]

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(train_s) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(1, steps))
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_s), generator=gen).tolist()
        total = 0.0
        for k in range(0, len(order), args.batch_size):
            batch = GeometryBatch.from_samples([train_s[i] for i in order[k : k + args.batch_size]])
            loss = torch.nn.functional.mse_loss(model(batch, x_of(batch)), y_of(batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * batch.num_samples
        if epoch % 5 == 0 or epoch == args.epochs - 1:
            print(f"epoch {epoch:3d}  train mse {total / len(train_s):.4f}", file=sys.stderr)
    t_train = time.perf_counter() - t0

    # ---------------------------------------------------------------- evaluate
    model.eval()
    errs = {"gino": [], "persistence": []}
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    with torch.no_grad():
        for i, s in enumerate(test_s):
            batch = GeometryBatch.from_samples([s])
            z = model(batch, x_of(batch))
            pred = torch.cat([norm_out[f].decode(z[:, j : j + 1]) for j, f in enumerate(FIELDS)], 1)
            tg = test[i].target
            true = torch.cat([tg.fields[f] for f in FIELDS], 1)
            pers = torch.cat([tg.fields[f"{f}_t0"] for f in FIELDS], 1)
            errs["gino"].append(rel_l2(pred, true, tg.weights))
            errs["persistence"].append(rel_l2(pers, true, tg.weights))
            if args.out:
                out = tg.with_fields(**{f"{f}_pred": pred[:, j : j + 1] for j, f in enumerate(FIELDS)})
                geoop.write(out, os.path.join(args.out, f"test_{i:03d}_prediction.vtp"))
    summary = {k: torch.stack(v).mean(0).tolist() for k, v in errs.items()}
    result = {
        "example": "sphere_stations",
        "n_train": args.n_train,
        "n_test": args.n_test,
        "hours": args.hours,
        "stations": list(args.stations),
        "latent": list(args.latent),
        "params": n_params,
        "rel_l2": {k: dict(zip(FIELDS, v)) for k, v in summary.items()},
        "ratio_gino_over_persistence": {
            f: summary["gino"][j] / summary["persistence"][j] for j, f in enumerate(FIELDS)
        },
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "total": round(time.perf_counter() - t_start, 1)},
    }
    print(json.dumps(result))
    print(f"{'test rel. L2 (full grid)':<26}" + "".join(f"{f:>12}" for f in FIELDS))
    for k in ("gino", "persistence"):
        print(f"{k:<26}" + "".join(f"{v:>12.4f}" for v in summary[k]))
    print(f"{'ratio gino / persistence':<26}" + "".join(f"{result['ratio_gino_over_persistence'][f]:>12.3f}" for f in FIELDS))
    if args.out:
        with open(os.path.join(args.out, "metrics.json"), "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
