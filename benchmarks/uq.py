"""Ensembles and calibrated uncertainty (geoop.models.Ensemble): cost and calibration.

Cost (``--cost``): one training step (forward, backward, AdamW) of a K-member ensemble
(stacked parameters, one ``vmap`` call, shared neighbourhoods and features) against one step
of a single GINO on the same batch, the members one after the other (``vectorize=False``),
and one after the other with their latent and decoder stages recomputed in backward
(``recompute=True``); the step's peak memory (RSS high-water mark above the state after one warm
step, in a fresh process; ``benchmarks/_memory.py``; CUDA: the allocator's peak); prediction
of mean + std on one case (every volume node) against one GINO.query. Data: a few panel-method
airfoil cases written to a temporary folder. Floors: step time and memory <= 3x, prediction <= 3x.

    nice -n 5 python benchmarks/uq.py --cost --members 5

Calibration protocol (``--protocol``) on any generated airfoil set in the generator's layout
(``geoop data airfoil [--solver rans]``; the loader of ``benchmarks/nested.py``: input = the
surface nodes with the free stream ``(cos a, sin a)`` and the normal, output ``p, u, v`` at the
volume nodes). Split: the last ``--test`` cases of the manifest are the test set, the
``--val`` before them the validation set, the rest train. K members are trained together for
``K x --budget`` seconds of this process's CPU time (equal training time per member; batch 4,
1500 random volume nodes + the surface nodes per case and step, MSE of the normalised fields,
AdamW with warm-up and cosine decay, as ``benchmarks/nested.py``); the std temperature is
fitted on the validation cases (:func:`geoop.train.calibration.fit_temperature`); reported on
the test cases: coverage of the 50/90/95 % intervals, CRPS and Spearman(std, |error|) over
points and cases for volume ``p`` and surface ``Cp``; C_L (pressure lift of the predicted Cp,
per member; the truth is the same quadrature of the true Cp) inside mean +- 2 std; the
ensemble mean's errors against the median member's; out of distribution (``--ood DIR``: a set
generated with ranges outside the training ones, e.g. ``-p t=0.18,0.3 -p alpha_deg=10,16``):
the mean std of p per case against its distance from the training ranges (the largest excess
of ``t`` / ``alpha_deg`` over the training range, in units of that range's width), binned.

    geoop data airfoil --n 40 --out /tmp/panel -p n_volume=1500,2500
    geoop data airfoil --n 12 --out /tmp/panel_ood --seed 1 -p n_volume=1500,2500 -p t=0.18,0.3 -p alpha_deg=10,16
    nice -n 5 python benchmarks/uq.py --protocol --data /tmp/panel --ood /tmp/panel_ood --members 5 --budget 30

Prints one JSON line (also appended to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nested import cl_from_cp, load, rel  # noqa: E402  (benchmarks/nested.py)

from geoop.batch import GeometryBatch, Sample  # noqa: E402
from geoop.geometry.geometry import Geometry  # noqa: E402
from geoop.models import GINO, Ensemble  # noqa: E402
from geoop.train.calibration import calibration_metrics, fit_temperature  # noqa: E402


def model_config(bounds, width: int = 24, layers: int = 3) -> dict:
    """One 48 x 48 box latent over ``bounds`` with the SDF, inputs by name (free stream and
    normal), local-geometry features; 3 outputs (p, u, v)."""
    lo, hi = bounds
    h = max((hi[0] - lo[0]) / 47, (hi[1] - lo[1]) / 47)
    return {"out_channels": 3, "coord_dim": 2,
            "latent": {"shape": [48, 48], "domain": [list(lo), list(hi)], "features": ["sdf"]},
            "encoder": {"radius": 1.6 * h, "mlp": [32, 32], "n_freqs": 10, "inputs": ["fs[0:2]", "nrm[0:2]"]},
            "decoder": {"radius": 1.9 * h, "mlp": [32, 32], "n_freqs": 10},
            "blocks": {"width": width, "modes": [12, 12], "layers": layers},
            "local": {"radius": 0.04, "channels": 16, "nearest": True}}


def with_inputs(c) -> Geometry:
    """The case's outline with its inputs as named point fields."""
    g = c["geometry"]
    return g.replace(fields={"fs": c["x"][:, :2], "nrm": c["x"][:, 2:]})


def bounds_of(cases, margin=0.5):
    allq = torch.cat([c["queries"] for c in cases])
    return (allq.min(0).values - margin).tolist(), (allq.max(0).values + margin).tolist()


def prepare(model, cases, mu, sd):
    """Precomputed samples (every volume node; neighbourhoods and SDF once) with the
    normalised targets as the query field ``y``."""
    for c in cases:
        q = Geometry(c["queries"], fields={"y": (c["y"] - mu) / sd}, validate=False)
        c["geo_in"] = with_inputs(c)
        with torch.no_grad():
            c["sample"] = model.precompute(Sample(c["geo_in"], q, meta={"case": c["case"]}))


def make_batch(model, cases, gen, n_nodes=1500, bs=4):
    pick = torch.randperm(len(cases), generator=gen)[:bs]
    samples = []
    for i in pick.tolist():
        c = cases[i]
        sel = torch.unique(torch.cat([c["surf_idx"], torch.randint(c["queries"].shape[0], (n_nodes,), generator=gen)]))
        samples.append(GINO.select_queries(c["sample"], sel))
    return GeometryBatch.from_samples(samples)


def mse_per_sample(pred, y, batch):
    B = batch.num_samples
    se = torch.zeros(B, y.shape[1], dtype=pred.dtype).index_add_(0, batch.query_batch, (pred - y).square())
    return se / torch.bincount(batch.query_batch, minlength=B).clamp(min=1)[:, None].to(pred.dtype)


def step_fn(model, opt):
    """One training step of ``model`` (GINO or Ensemble) on a batch."""
    def step(batch):
        y = batch.query_fields["y"]
        if isinstance(model, Ensemble):
            err = model.member_losses(batch, None, y, [1, 1, 1], lambda p: mse_per_sample(p, y, batch))
        else:
            err = mse_per_sample(model(batch), y, batch)
        loss = err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


# ---------------------------------------------------------------------------- cost
_COST = {}


def _threads() -> int:
    """torch threads of the cost measurement (``--threads``; passed to the memory child
    through the environment)."""
    return int(os.environ.get("GEOOP_UQ_THREADS", "1"))


def _cost_setup(kind: str, K: int, data: str, device: str):
    key = (kind, K, data, device)
    if key not in _COST:
        torch.manual_seed(0)
        torch.set_num_threads(_threads())
        cases = load(data)
        cfg = model_config(bounds_of(cases))
        model = GINO.from_config(cfg) if kind == "single" else Ensemble(cfg, K, vectorize=kind == "vmap",
                                                                        recompute=kind == "loop_recompute")
        ys = torch.cat([c["y"] for c in cases])
        prepare(model, cases, ys.mean(0), ys.std(0))
        model = model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        batches = [make_batch(model, cases, gen).to(device) for _ in range(3)]
        _COST[key] = (model, step_fn(model, opt), batches, cases)
    return _COST[key]


def cost_step(kind: str, K: int, data: str, device: str = "cpu") -> None:
    """One training step (module level: ``_memory.measure_memory`` runs it in a child)."""
    _, step, batches, _ = _cost_setup(kind, K, data, device)
    step(batches[0])


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(kinds, K, data, device, n):
    """Median step time of every kind, the kinds interleaved step by step (a shared machine's
    load then drifts the same for all)."""
    setups = {k: _cost_setup(k, K, data, device) for k in kinds}
    for k in kinds:
        setups[k][1](setups[k][2][0])  # warm
    ts = {k: [] for k in kinds}
    for i in range(n):
        for k in kinds:
            _, step, batches, _ = setups[k]
            _sync(device)
            t = time.perf_counter()
            step(batches[i % len(batches)])
            _sync(device)
            ts[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in ts.items()}


def time_predict(kind, K, data, device, n=3):
    model, _, _, cases = _cost_setup(kind, K, data, device)
    c = cases[-1]
    g, q = c["geo_in"].to(device), c["queries"].to(device)
    ts = []
    with torch.no_grad():
        for _ in range(n + 1):
            _sync(device)
            t = time.perf_counter()
            out = model.query(g, q, chunk_size=16384)
            _ = out.std if isinstance(model, Ensemble) else out
            _sync(device)
            ts.append(time.perf_counter() - t)
    return statistics.median(ts[1:])


def run_cost(args) -> dict:
    from _memory import measure_memory

    from geoop.data import airfoil

    os.environ["GEOOP_UQ_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="geoop_uq_")
    airfoil.generate(tmp, 5, seed=0, n_volume=3000)
    K, dev = args.members, args.device
    res = {"what": "cost", "members": K, "device": dev, "threads": args.threads, "cases": 5, "batch": 4,
           "nodes_per_case": 1500}
    kinds = ("single", "vmap", "loop", "loop_recompute")
    for kind, t in time_steps(kinds, K, tmp, dev, args.steps).items():
        res[f"step_s_{kind}"] = round(t, 4)
    for kind in ("single", "vmap", "loop"):
        res[f"predict_s_{kind}"] = round(time_predict(kind, K, tmp, dev), 4)
    # large blocks are mmap'd and returned on free, so the RSS high-water mark follows the live tensors
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    for kind in kinds:
        m = measure_memory(os.path.abspath(__file__) + ":cost_step", kind, K, tmp, dev, device="cuda" if dev.startswith("cuda") else "cpu", warmup=True)
        res[f"step_peak_mb_{kind}"] = round(float(m["peak_mb"]), 1)
    for kind in kinds[1:]:
        res[f"step_ratio_{kind}"] = round(res[f"step_s_{kind}"] / res["step_s_single"], 2)
        res[f"memory_ratio_{kind}"] = round(res[f"step_peak_mb_{kind}"] / max(res["step_peak_mb_single"], 1e-9), 2)
    res["predict_ratio_vmap"] = round(res["predict_s_vmap"] / res["predict_s_single"], 2)
    res["predict_ratio_loop"] = round(res["predict_s_loop"] / res["predict_s_single"], 2)
    model = _cost_setup("vmap", K, tmp, dev)[0]
    res["params_single"] = sum(p.numel() for p in GINO.from_config(model.member_config).parameters())
    return res


# ---------------------------------------------------------------------------- calibration protocol
def ranges_of(folder):
    man = json.load(open(os.path.join(folder, "manifest.json")))
    if "ranges" in man:
        return man["ranges"]
    vals = {k: [c["params"][k] for c in man["cases"]] for k in ("t", "alpha_deg")}
    return {k: [min(v), max(v)] for k, v in vals.items()}


def distance(params, ranges, keys=("t", "alpha_deg")) -> float:
    """Largest excess of the case's parameters over the training ranges, in range widths."""
    d = 0.0
    for k in keys:
        lo, hi = (float(v) for v in ranges[k]) if not isinstance(ranges[k], (int, float)) else (ranges[k], ranges[k])
        w = max(hi - lo, 1e-12)
        d = max(d, (params[k] - hi) / w, (lo - params[k]) / w)
    return d


def evaluate(ens, cases, mu, sd, T, T_surface=None):
    """Per case: the members' fields (physical), mean, std (the mixture of the members, with
    their variance heads when the ensemble has them; temperature ``T`` applied, and
    ``T_surface`` on the surface nodes when given)."""
    out = []
    with torch.no_grad():
        for c in cases:
            raw = ens.query(c["geo_in"], c["queries"], chunk_size=16384, distribution=False)  # (K, Q, 3 or 6)
            m, var = ens.split(raw)
            members = m * sd + mu
            mean = members.mean(0)
            total = (members - mean).square().mean(0)
            if var is not None:
                total = total + (var * sd.square()).mean(0)
            scale = T.expand(total.shape).clone()
            if T_surface is not None:
                scale[c["surf_idx"]] = T_surface
            out.append({"members": members, "mean": mean, "std": total.sqrt() * scale})
    return out


def run_protocol(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    data = load(args.data)
    man = json.load(open(os.path.join(args.data, "manifest.json")))
    params = {c["case"]: c["params"] for c in man["cases"]}
    test, val, train = data[-args.test:], data[-args.test - args.val:-args.test], data[: -args.test - args.val]
    cfg = model_config(bounds_of(train + val + test))
    K = args.members
    ens = Ensemble(cfg, K, bootstrap=args.bootstrap, seed=args.seed, variance=args.variance)
    ys = torch.cat([c["y"] for c in train])
    mu, sd = ys.mean(0), ys.std(0)
    tp = time.perf_counter()
    prepare(ens, train + val + test, mu, sd)
    prep_s = time.perf_counter() - tp
    opt = torch.optim.AdamW(ens.parameters(), lr=args.lr, weight_decay=1e-4)
    step = step_fn(ens, opt)
    gen = torch.Generator().manual_seed(args.seed)
    budget = args.budget * K  # equal training time per member
    t0, c0, steps, losses = time.perf_counter(), time.process_time(), 0, []
    while True:
        el = time.process_time() - c0
        if el > budget:
            break
        f = el / budget
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, f / 0.05) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * f)))
        losses.append(step(make_batch(ens, train, gen)))
        steps += 1
    train_s, train_wall = time.process_time() - c0, time.perf_counter() - t0
    ens.eval()
    T, info = fit_temperature(ens, [c["sample"] for c in val], "validation cases", targets=["y"])
    ens.temperature.copy_(T)
    T_surf = None
    if args.surface_temperature:  # the wall's own temperature, fitted on the validation cases' surface nodes
        T_surf, _ = fit_temperature(ens, [GINO.select_queries(c["sample"], c["surf_idx"]) for c in val],
                                    "validation surface nodes", targets=["y"])
    res = {"what": "protocol", "data": os.path.basename(os.path.normpath(args.data)), "members": K, "seed": args.seed,
           "bootstrap": args.bootstrap, "n_train": len(train), "n_val": len(val), "n_test": len(test),
           "budget_per_member_s": args.budget, "train_cpu_s": round(train_s, 1), "train_wall_s": round(train_wall, 1),
           "prep_s": round(prep_s, 1), "steps": steps, "final_loss": float(np.mean(losses[-20:])),
           "temperature": [round(float(t), 3) for t in T], "variance_head": bool(args.variance),
           "surface_temperature": None if T_surf is None else [round(float(t), 3) for t in T_surf]}
    ev = evaluate(ens, test, mu, sd, T, T_surf)
    fields = {"p": {"err": [], "std": [], "true": []}, "Cp": {"err": [], "std": [], "true": []}}
    cl_rows, errs = [], {"p": [], "cp": [], "cl": []}
    member_errs = {"p": [[] for _ in range(K)], "cp": [[] for _ in range(K)], "cl": [[] for _ in range(K)]}
    for c, e in zip(test, ev):
        y, si = c["y"], c["surf_idx"]
        fields["p"]["err"].append((e["mean"][:, 0] - y[:, 0]).numpy())
        fields["p"]["std"].append(e["std"][:, 0].numpy())
        fields["p"]["true"].append(y[:, 0].numpy())
        fields["Cp"]["err"].append((e["mean"][si, 0] - y[si, 0]).numpy())
        fields["Cp"]["std"].append(e["std"][si, 0].numpy())
        fields["Cp"]["true"].append(y[si, 0].numpy())
        cl_true = cl_from_cp(c["points"], y[si, 0], c["alpha"])
        cl_m = np.array([cl_from_cp(c["points"], e["members"][k][si, 0], c["alpha"]) for k in range(K)])
        cl_mean, cl_std = float(cl_m.mean()), float(cl_m.std()) * float((T if T_surf is None else T_surf)[0])
        cl_rows.append((cl_mean, cl_std, cl_true))
        errs["p"].append(rel(e["mean"][:, 0], y[:, 0]))
        errs["cp"].append(rel(e["mean"][si, 0], y[si, 0]))
        errs["cl"].append(abs(cl_mean - cl_true))
        for k in range(K):
            member_errs["p"][k].append(rel(e["members"][k][:, 0], y[:, 0]))
            member_errs["cp"][k].append(rel(e["members"][k][si, 0], y[si, 0]))
            member_errs["cl"][k].append(abs(float(cl_m[k]) - cl_true))
    cal = calibration_metrics(fields)
    for n, r in cal.items():
        for k in ("coverage_50", "coverage_90", "coverage_95", "crps", "spearman_points", "spearman_cases", "mean_std"):
            res[f"{n}_{k}"] = round(r[k], 4)
    # The Spearman a perfectly calibrated model with these stds would reach: errors drawn as
    # N(0, std^2) at every test point. |e| = std * |z| is a noisy function of std, so a point
    # Spearman is bounded by the spread of the stds; the floor can only be met above this.
    from geoop.train.calibration import spearman

    rng = np.random.default_rng(args.seed)
    for n, f in fields.items():
        sd_all = np.concatenate(f["std"])
        res[f"{n}_spearman_points_ceiling"] = round(float(np.mean(
            [spearman(sd_all, np.abs(sd_all * rng.standard_normal(sd_all.shape))) for _ in range(3)])), 4)
    res["cl_coverage_2std"] = round(float(np.mean([abs(m - t) <= 2 * s for m, s, t in cl_rows])), 3)
    for n in ("p", "cp", "cl"):
        res[f"ensemble_{n}_error"] = round(float(np.mean(errs[n])), 4)
        res[f"median_member_{n}_error"] = round(float(np.median([np.mean(v) for v in member_errs[n]])), 4)
    if args.ood:
        tr_ranges = ranges_of(args.data)
        ood = load(args.ood)
        oman = {c["case"]: c["params"] for c in json.load(open(os.path.join(args.ood, "manifest.json")))["cases"]}
        prepare(ens, ood, mu, sd)
        oev = evaluate(ens, ood, mu, sd, T, T_surf)
        in_std = float(np.mean([float(e["std"][:, 0].mean()) for e in ev]))
        rows = sorted((distance(oman[c["case"]], tr_ranges), float(e["std"][:, 0].mean())) for c, e in zip(ood, oev))
        in_d = [distance(params[c["case"]], tr_ranges) for c in test]
        res["in_distribution_mean_std_p"] = round(in_std, 4)
        res["in_distribution_max_distance"] = round(max(in_d), 3)
        res["ood_mean_std_ratio"] = round(float(np.mean([s for _, s in rows])) / in_std, 3)
        nb = min(args.ood_bins, len(rows))
        curve = []
        for b in np.array_split(np.arange(len(rows)), nb):
            ds, ss = [rows[i][0] for i in b], [rows[i][1] for i in b]
            curve.append({"distance": round(float(np.mean(ds)), 3), "mean_std_ratio": round(float(np.mean(ss)) / in_std, 3),
                          "cases": len(b)})
        res["ood_curve"] = curve
        from geoop.train.calibration import spearman

        res["ood_spearman_distance_std"] = round(spearman([d for d, _ in rows], [s for _, s in rows]), 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cost", action="store_true", help="step time / memory and prediction cost, K members vs one")
    ap.add_argument("--protocol", action="store_true", help="the calibration protocol on --data")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5, help="--cost: timed steps (median)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="--cost: torch CPU threads (measure on an idle machine)")
    ap.add_argument("--data", help="--protocol: generated airfoil folder (manifest.json)")
    ap.add_argument("--ood", help="--protocol: a folder of out-of-distribution cases")
    ap.add_argument("--ood-bins", type=int, default=4)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--val", type=int, default=6)
    ap.add_argument("--budget", type=float, default=60.0, help="CPU seconds of training per member")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--bootstrap", action="store_true")
    ap.add_argument("--variance", action="store_true", help="--protocol: a heteroscedastic variance head per member (NLL)")
    ap.add_argument("--surface-temperature", action="store_true",
                    help="--protocol: fit the surface nodes' temperature on their own (validation surface nodes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="append the JSON line here")
    args = ap.parse_args()
    if not (args.cost or args.protocol):
        ap.error("give --cost and/or --protocol")
    results = []
    if args.cost:
        results.append(run_cost(args))
    if args.protocol:
        if not args.data:
            ap.error("--protocol needs --data")
        results.append(run_protocol(args))
    for r in results:
        line = json.dumps(r)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
