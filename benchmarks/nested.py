"""Nested latent grids vs one grid, at the same wall-clock training budget, on airfoil sets
whose far field is >= 30 chords away.

Sets (a fixed split: the last ``--test`` cases of the folder's manifest are the test set):

* ``rans``: ``geoop data airfoil --solver rans`` (OpenFOAM simpleFoam, far field 40 chords);
* ``panel``: the panel-method generator (:func:`geoop.data.airfoil.make_case`) with
  ``far_radius=30``, written by this script with ``--make-panel DIR --n N``.

Task (all models): input = the airfoil's surface nodes with the free-stream direction
``(cos a, sin a)`` and the outward normal (4 channels, body frame, chords); output ``p, u, v``
at the volume nodes. Models (same width, depth, GNO MLPs, NeRF embedding and decoder
local-geometry features as the demo; see :func:`build`):

* ``single``: one 64 x 64 grid over the whole domain (spacing ~1.3 chords);
* ``window``: one 64 x 48 grid on the demo's hand-placed near-body window
  ``[-0.5, 1.5] x [-0.75, 0.75]`` (nodes outside it get no latent features);
* ``nested_window``: a 32 x 32 grid over the whole domain + the window's 64 x 48 grid as a
  fixed fine level (the nested model of the results table);
* ``nested_fine``: the same with the fine level on a box around each airfoil (margin 0.3 chord);
* ``nested_le``: ``nested_window`` + a third level, 32 x 32 on the leading edge
  ``[-0.1, 0.21] x [-0.15, 0.15]`` (spacing 0.01 chord);
* ``nested``: three levels, 32 x 32 over the domain, 32 x 32 around each airfoil (margin 2
  chords) and 64 x 48 (margin 0.3 chord); ``nested_nocoupling``: the same, ``coupling="none"``.

Every model takes the signed distance to the airfoil as a latent feature (on every level;
``--no-sdf``: none) and the decoder's local-geometry features (``--no-local``: none, so a
query near the wall sees only what its latent grid resolves). Nested options: ``--coupling`` (default ``none``, the library's),
``--mix`` (``partition``), ``--taper`` (2 cells). Every case's neighbourhoods (all its volume
nodes) and latent features are computed once before the clock; a step selects its nodes' rows.

Training: AdamW, batch 4, 1500 random volume nodes + every surface node per case and step,
loss MSE of the fields normalised by the training set's mean and std, learning rate with a
5 % warm-up and a cosine decay over the time budget (``--budget`` seconds of the process's
CPU time with one torch thread, so that a busy shared machine does not change the number of
steps much; the per-case precomputation and the evaluation excluded). Metrics on the test cases (every volume
node): relative L2 of p and of the velocity vector (u, v), of p on the near-body window, of
the surface Cp (p at the surface nodes); C_L from the predicted surface Cp (pressure lift,
trapezoidal) against the manifest's C_L (R^2 over the test cases; on the RANS set the
converged ones); the fraction of volume nodes inside some latent box.

    python benchmarks/nested.py --make-panel /tmp/panel30 --n 48
    python benchmarks/nested.py --data /tmp/rans48 --model nested_window --budget 150 --seed 0 --out r.json
    python benchmarks/nested.py --summary r.json     # table of every run in r.json

Prints one JSON line per run (also appended to ``--out``) and, with ``--summary``, a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import geoop  # noqa: E402
from geoop.batch import GeometryBatch, Sample  # noqa: E402
from geoop.geometry.geometry import Geometry  # noqa: E402
from geoop.models import GINO, LatentLevel, NestedGINO, NestedLatent  # noqa: E402

WINDOW = ((-0.5, -0.75), (1.5, 0.75))
#: the leading-edge box of ``nested_le``, body frame, chords (in ``SCALE`` units at run time)
LEADING_EDGE = ((-0.1, -0.15), (0.21, 0.15))
COMMON = dict(fno_width=24, fno_layers=3, gno_mlp=(32, 32), n_freqs=10, local_radius=0.04, local_channels=16,
              local_nearest=True)
#: lengths unit: coordinates are divided by SCALE chords (``--scale``), and so are every
#: length of the models below (window, radii, margins)
SCALE = 1.0


def _set_local(on: bool) -> None:
    """``--no-local``: no decoder local-geometry features in any model, so that near the wall
    a query sees only what its latent grid resolves (the ablation of the results table)."""
    for k in ("local_radius", "local_channels", "local_nearest"):
        COMMON.pop(k, None)
    if on:
        COMMON.update(local_radius=0.04 / SCALE, local_channels=16, local_nearest=True)


def _set_scale(s: float) -> None:
    global SCALE, WINDOW
    SCALE = float(s)
    WINDOW = tuple(tuple(v / SCALE for v in c) for c in ((-0.5, -0.75), (1.5, 0.75)))
    COMMON["local_radius"] = 0.04 / SCALE


def make_panel(out: str, n: int, seed: int = 0) -> None:
    """Panel-method cases with the far field at 30 chords (the generator's design, seed)."""
    from geoop.data import airfoil
    from geoop.data._case_io import write_geometry, write_manifest

    os.makedirs(out, exist_ok=True)
    cases = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        prm = airfoil.sample_params(rng)
        prm["far_radius"] = 30.0
        prm["n_volume"] = 9000
        s, v, sol = airfoil.make_case(prm, seed=int(rng.integers(2**31)), return_solution=True, te_stagnation=True)
        name = f"case_{i:04d}"
        write_geometry(s, os.path.join(out, f"{name}_surface.vtp"))
        write_geometry(v, os.path.join(out, f"{name}_volume.vtu"))
        cases.append({"case": name, "surface": f"{name}_surface.vtp", "volume": f"{name}_volume.vtu",
                      "params": prm, "cl": sol.cl, "converged": True})
    write_manifest(out, {"generator": "benchmarks/nested.py panel far_radius=30", "seed": seed, "cases": cases})


def load(folder: str):
    man = json.load(open(os.path.join(folder, "manifest.json")))
    out = []
    for c in man["cases"]:
        s = geoop.read(os.path.join(folder, c["surface"]))
        v = geoop.read(os.path.join(folder, c["volume"]))
        a = math.radians(c["params"]["alpha_deg"])
        sp = s.points[:, :2].float() / SCALE
        nrm = s.normals[:, :2].float()
        x = torch.cat([torch.tensor([[math.cos(a), math.sin(a)]]).expand(sp.shape[0], 2), nrm], 1)
        vp = v.points[:, :2].float() / SCALE
        y = torch.stack([v.fields["p"].float().reshape(-1), v.fields["u"].float().reshape(-1),
                         v.fields["v"].float().reshape(-1)], 1)
        # surface nodes inside the volume mesh (same coordinates)
        from scipy.spatial import cKDTree

        d, idx = cKDTree(vp.numpy()).query(sp.numpy())
        if d.max() > 1e-6:
            raise ValueError(f"{c['case']}: surface nodes are not volume nodes (max distance {d.max()})")
        # the 2-D outline (its line cells give the SDF's inside) in the body frame
        geom = Geometry(sp, cells={k: v for k, v in s.cells.items() if k == "line"}, validate=False)
        out.append(dict(case=c["case"], points=sp, geometry=geom, x=x, queries=vp, y=y, surf_idx=torch.from_numpy(idx),
                        cl=float(c["cl"]), converged=bool(c.get("converged", True)), alpha=a))
    return out


def box(shape, domain, sdf: bool) -> dict:
    return {"kind": "box", "shape": list(shape), "domain": [list(domain[0]), list(domain[1])],
            "features": ["sdf"] if sdf else []}


def build(kind: str, bounds, sdf: bool = True, taper: float = 2.0, mix: str = "partition",
          coupling: str = "interpolate") -> torch.nn.Module:
    lo, hi = bounds
    if kind == "single":
        h = max((hi[0] - lo[0]) / 63, (hi[1] - lo[1]) / 63)
        return GINO(4, 3, 2, latent=box((64, 64), (lo, hi), sdf), radius_in=1.6 * h, radius_out=1.9 * h,
                    fno_modes=(16, 16), **COMMON)
    if kind == "window":
        return GINO(4, 3, 2, latent=box((64, 48), WINDOW, sdf), radius_in=0.05 / SCALE, radius_out=0.06 / SCALE,
                    fno_modes=(16, 12),
                    **COMMON)
    if kind in ("nested_window", "nested_fine"):
        # two levels: the coarse grid + one fine level, on the fixed window (nested_window: the
        # window GINO's grid as a level) or around each airfoil (nested_fine, margin 0.3 chord)
        h = max((hi[0] - lo[0]) / 31, (hi[1] - lo[1]) / 31)
        fine = (LatentLevel((64, 48), domain=WINDOW, fno_modes=(16, 12), taper=taper) if kind == "nested_window"
                else LatentLevel((64, 48), margin=0.3 / SCALE, fno_modes=(16, 12), taper=taper))
        lv = NestedLatent(levels=[
            LatentLevel((32, 32), domain=(tuple(lo), tuple(hi)), radius_in=1.6 * h, radius_out=1.9 * h, fno_modes=(8, 8)),
            fine], features=("sdf",) if sdf else ())
        return NestedGINO(4, 3, 2, latent=lv, mix=mix, coupling=coupling, **COMMON)
    if kind == "nested_le":
        # three levels: nested_window's two + a 32 x 32 grid on the leading edge (spacing 0.01
        # chord, finer than the leading-edge radius of most airfoils of the design), where the
        # suction peak varies fastest; a single grid that fine over the window would be 200 x 150
        h = max((hi[0] - lo[0]) / 31, (hi[1] - lo[1]) / 31)
        le = tuple(tuple(v / SCALE for v in c) for c in LEADING_EDGE)
        lv = NestedLatent(levels=[
            LatentLevel((32, 32), domain=(tuple(lo), tuple(hi)), radius_in=1.6 * h, radius_out=1.9 * h, fno_modes=(8, 8)),
            LatentLevel((64, 48), domain=WINDOW, fno_modes=(16, 12), taper=taper),
            LatentLevel((32, 32), domain=le, fno_modes=(8, 8), taper=taper),
        ], features=("sdf",) if sdf else ())
        return NestedGINO(4, 3, 2, latent=lv, mix=mix, coupling=coupling, **COMMON)
    if kind in ("nested", "nested_nocoupling"):
        h = max((hi[0] - lo[0]) / 31, (hi[1] - lo[1]) / 31)
        lv = NestedLatent(levels=[
            LatentLevel((32, 32), domain=(tuple(lo), tuple(hi)), radius_in=1.6 * h, radius_out=1.9 * h, fno_modes=(8, 8)),
            LatentLevel((32, 32), margin=2.0 / SCALE, fno_modes=(8, 8), taper=taper),
            LatentLevel((64, 48), margin=0.3 / SCALE, fno_modes=(16, 12), taper=taper),
        ], features=("sdf",) if sdf else ())
        return NestedGINO(4, 3, 2, latent=lv, coupling="none" if kind == "nested_nocoupling" else coupling, mix=mix,
                          **COMMON)
    raise ValueError(kind)





def coverage(model, case) -> float:
    q = case["queries"]
    if isinstance(model, NestedGINO):
        boxes = model.boxes(case["points"])
        return float(model.contains(q, None, boxes).any(1).float().mean())
    lo, hi = torch.tensor(model.domain[0]), torch.tensor(model.domain[1])
    return float(((q >= lo) & (q <= hi)).all(1).float().mean())


def cl_from_cp(points: torch.Tensor, cp: torch.Tensor, alpha: float) -> float:
    """Pressure lift of a closed clockwise polyline (trapezoidal Cp per panel)."""
    P = points.double().numpy()
    c = cp.double().numpy()
    e = np.roll(P, -1, 0) - P
    nrm = np.stack([-e[:, 1], e[:, 0]], 1)  # outward normal times panel length
    F = -((0.5 * (c + np.roll(c, -1)))[:, None] * nrm).sum(0)
    return float(-F[0] * math.sin(alpha) + F[1] * math.cos(alpha))


def rel(a, b) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b).clamp_min(1e-12))


def run(args) -> dict:
    _set_scale(args.scale)
    _set_local(not args.no_local)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    data = load(args.data)
    test, train = data[-args.test:], data[: -args.test]
    allq = torch.cat([c["queries"] for c in data])
    lo = (allq.min(0).values - 0.5 / SCALE).tolist()
    hi = (allq.max(0).values + 0.5 / SCALE).tolist()
    model = build(args.model, (lo, hi), sdf=not args.no_sdf, taper=args.taper, mix=args.mix, coupling=args.coupling)
    # every case's neighbourhoods (all its volume nodes) and latent features, once, before the
    # clock: each step then selects its random nodes' rows instead of searching again
    tp = time.perf_counter()
    with torch.no_grad():
        for c in train:
            c["sample"] = model.precompute(Sample(c["geometry"], Geometry(c["queries"], validate=False)))
    prep_s = time.perf_counter() - tp
    ys = torch.cat([c["y"] for c in train])
    mu, sd = ys.mean(0), ys.std(0)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    # the budget is this process's CPU time (1 thread): the same for every model even when the
    # shared machine is busy; the wall time is reported too
    t0, c0, steps, losses = time.perf_counter(), time.process_time(), 0, []
    while True:
        el = time.process_time() - c0
        if el > args.budget:
            break
        f = el / args.budget
        lr = args.lr * min(1.0, f / 0.05) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * f)))
        for g in opt.param_groups:
            g["lr"] = lr
        pick = torch.randperm(len(train), generator=gen)[:4]
        samples, xs, yt = [], [], []
        for i in pick.tolist():
            c = train[i]
            sel = torch.unique(torch.cat([c["surf_idx"], torch.randint(c["queries"].shape[0], (1500,), generator=gen)]))
            samples.append(model.select_queries(c["sample"], sel))
            xs.append(c["x"])
            yt.append((c["y"][sel] - mu) / sd)
        batch = GeometryBatch.from_samples(samples)
        pred = model(batch, torch.cat(xs))
        loss = torch.nn.functional.mse_loss(pred, torch.cat(yt))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        losses.append(loss.item())
    train_s, train_wall = time.process_time() - c0, time.perf_counter() - t0
    model.eval()
    m = {"p": [], "U": [], "p_near": [], "cp": [], "cl_pred": [], "cl_true": [], "conv": [], "cov": []}
    with torch.no_grad():
        for c in test:
            out = model.query(c["geometry"], c["queries"], c["x"], chunk_size=8192) * sd + mu
            y = c["y"]
            m["p"].append(rel(out[:, 0], y[:, 0]))
            m["U"].append(rel(out[:, 1:], y[:, 1:]))
            q = c["queries"]
            near = ((q >= torch.tensor(WINDOW[0])) & (q <= torch.tensor(WINDOW[1]))).all(1)
            m["p_near"].append(rel(out[near, 0], y[near, 0]))
            cp_hat, cp = out[c["surf_idx"], 0], y[c["surf_idx"], 0]
            m["cp"].append(rel(cp_hat, cp))
            m["cl_pred"].append(cl_from_cp(c["points"] * SCALE, cp_hat, c["alpha"]))
            m["cl_true"].append(c["cl"])
            m["conv"].append(c["converged"])
            m["cov"].append(coverage(model, c))
    conv = np.array(m["conv"])
    clp, clt = np.array(m["cl_pred"])[conv], np.array(m["cl_true"])[conv]
    r2 = float(1 - ((clp - clt) ** 2).sum() / max(((clt - clt.mean()) ** 2).sum(), 1e-12)) if conv.sum() > 1 else float("nan")
    res = {"data": os.path.basename(os.path.normpath(args.data)), "model": args.model, "budget_s": args.budget,
           "train_s": round(train_s, 1), "train_wall_s": round(train_wall, 1), "prep_s": round(prep_s, 1),
           "sdf": not args.no_sdf, "local": not args.no_local, "scale": args.scale, "taper": args.taper, "mix": args.mix, "coupling": args.coupling, "seed": args.seed, "steps": steps, "final_loss": float(np.mean(losses[-20:])),
           "params": sum(p.numel() for p in model.parameters()), "n_train": len(train), "n_test": len(test),
           "n_test_converged": int(conv.sum()),
           "p_rel_l2": float(np.mean(m["p"])), "U_rel_l2": float(np.mean(m["U"])),
           "p_near_rel_l2": float(np.mean(m["p_near"])), "cp_rel_l2": float(np.mean(m["cp"])),
           "cl_r2": r2, "coverage": float(np.mean(m["cov"]))}
    return res


def summary(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    cols = ["data", "model", "coupling", "local", "seed", "n_train", "steps", "train_s", "final_loss", "p_rel_l2",
            "U_rel_l2", "p_near_rel_l2", "cp_rel_l2", "cl_r2", "coverage"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        r.setdefault("local", True)
        print("| " + " | ".join(f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="case folder (manifest.json + case_*_surface.vtp / _volume.vtu)")
    ap.add_argument("--model", choices=["single", "window", "nested", "nested_nocoupling", "nested_window", "nested_fine",
                                             "nested_le"])
    ap.add_argument("--budget", type=float, default=240.0, help="training seconds")
    ap.add_argument("--test", type=int, default=12, help="the last N cases are the test set")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="divide every coordinate and model length by this")
    ap.add_argument("--no-sdf", action="store_true", help="no signed-distance latent features (on every level)")
    ap.add_argument("--no-local", action="store_true", help="no decoder local-geometry features (every model)")
    ap.add_argument("--coupling", default="none", choices=["interpolate", "detached", "none"], help="nested level coupling")
    ap.add_argument("--mix", default="partition", choices=["partition", "sum"], help="nested decoders' mix")
    ap.add_argument("--taper", type=float, default=2.0, help="fine levels' decoder taper, in their cells (0: hard mask)")
    ap.add_argument("--out", default=None, help="append the JSON result to this file")
    ap.add_argument("--make-panel", default=None, metavar="DIR", help="write the panel set (far field 30 chords)")
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--summary", default=None, metavar="FILE", help="print the table of the runs in FILE")
    args = ap.parse_args()
    if args.summary:
        summary(args.summary)
        return
    if args.make_panel:
        make_panel(args.make_panel, args.n, args.seed)
        return
    res = run(args)
    print(json.dumps(res))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
