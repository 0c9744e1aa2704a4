"""torch.compile (and, on CUDA, CUDA-graph replay of padded buckets) of the GINO training step
against eager, on ``gino.py``'s car model and sample.

    python benchmarks/compile.py --threads 1 --steps 5            # CPU Inductor
    python benchmarks/compile.py --device cuda --steps 10         # adds RaggedGraphedGINO

Measurements (one process; eager and compiled steps of the same model alternate, so both
see the same machine state; medians of ``--steps`` after the warm-up):

* ``car``: one step (zero_grad + forward + MSE + backward) of the car, compiled / eager,
  and the largest relative difference of outputs and parameter gradients.
* ``batch8``: the 8 different geometries of ``gino.py`` (2k..8k points) in one call.
* ``folder``: the 8 geometries one by one (a folder of different cars): graphs compiled
  during a warm-up pass over them, recompilations in the timed passes after it (the target
  is 0), and the step time over the folder.
* ``explain``: ``torch._dynamo.explain`` of the step: graph count, graph breaks and reasons.

Prints one JSON object (``--out`` writes it too) and a short table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gino as bench  # noqa: E402


def _sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _step(model, net, batch):
    import torch

    def run():
        model.zero_grad(set_to_none=True)
        out = net(batch, batch.fields["x"])
        torch.nn.functional.mse_loss(out, batch.fields["y"]).backward()
        return out

    return run


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _compare(model, f_eager, f_other) -> float:
    """Largest relative difference of the output and of every parameter gradient."""
    out_e = f_eager().detach().clone()
    g_e = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    out_c = f_other().detach().clone()
    g_c = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert g_e.keys() == g_c.keys()
    return max([_rel(out_c, out_e)] + [_rel(g_c[k], g_e[k]) for k in g_e])


def _alternate(fns: dict, warmup: int, steps: int, device: str) -> dict:
    """Median seconds per call of each function, calls interleaved."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    _sync(device)
    times = {k: [] for k in fns}
    for _ in range(steps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(args) -> dict:
    import torch

    from geoop.models import RaggedGraphedGINO, compile_gino
    from geoop.models.compiled import gino_step, step_inputs

    bench.DEVICE = args.device
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res: dict = {"device": args.device, "threads": args.threads, "steps": args.steps, "torch": torch.__version__}
    model, sample = bench._geoop_car()
    car = bench._geoop_batch(model, [sample], precompute=True)
    cm = compile_gino(model, mode=args.mode)
    eager, compiled = _step(model, model, car), _step(model, cm, car)
    groups = args.only.split(",")

    if "explain" in groups:
        torch._dynamo.reset()
        inp = step_inputs(model, car, car.fields["x"])
        ex = torch._dynamo.explain(gino_step)(model, inp, 1)
        res["explain"] = {"graph_count": ex.graph_count, "graph_break_count": ex.graph_break_count,
                          "op_count": ex.op_count, "break_reasons": [str(r.reason) for r in ex.break_reasons]}
        torch._dynamo.reset()
        cm = compile_gino(model, mode=args.mode)
        compiled = _step(model, cm, car)

    if "car" in groups:
        t0 = time.perf_counter()
        compiled()
        _sync(args.device)
        res["car_first_compiled_step_s"] = time.perf_counter() - t0
        res["car_max_rel_diff"] = _compare(model, eager, compiled)
        fns = {"eager": eager, "compiled": compiled}
        if args.device.startswith("cuda"):
            ragged = RaggedGraphedGINO(model)
            fns["graphed"] = _step(model, ragged, car)
            res["car_max_rel_diff_graphed"] = _compare(model, eager, lambda: ragged(car, car.fields["x"]).clone())
        t = _alternate(fns, args.warmup, args.steps, args.device)
        res["car_step_s"] = t
        res["car_compiled_over_eager"] = t["compiled"] / t["eager"]
        if "graphed" in t:
            res["car_graphed_over_eager"] = t["graphed"] / t["eager"]

    geoms = [bench._geoop_sample(*bench._to(*g)) for g in bench._eight_geometries()]
    if "batch8" in groups:
        b8 = bench._geoop_batch(model, geoms, precompute=True)
        e8, c8 = _step(model, model, b8), _step(model, cm, b8)
        c8()
        res["batch8_max_rel_diff"] = _compare(model, e8, c8)
        t = _alternate({"eager": e8, "compiled": c8}, 1, max(1, args.steps // 2), args.device)
        res["batch8_step_s"] = t
        res["batch8_compiled_over_eager"] = t["compiled"] / t["eager"]

    if "folder" in groups:
        # warm-up: one pass over the folder (the first geometry above 4096 points or queries
        # compiles once more on the CPU: Inductor's C++ sums guard on "size > 4096", where
        # they switch to cascaded summation); then passes that must not recompile
        singles = [bench._geoop_batch(model, [s], precompute=True) for s in geoms]
        steps_c = [_step(model, cm, b) for b in singles]
        steps_e = [_step(model, model, b) for b in singles]
        before = cm.graphs_compiled
        per_geometry = []
        for f in steps_c:
            f()
            per_geometry.append(cm.graphs_compiled - before)
        after_warmup = cm.graphs_compiled
        t = _alternate({"eager": lambda: [f() for f in steps_e], "compiled": lambda: [f() for f in steps_c]},
                       0, max(1, args.steps // 2), args.device)
        res["folder"] = {
            "points": [int(b.points.shape[0]) for b in singles],
            "edges_in": [b.neighbors_in.num_edges for b in singles],
            "edges_out": [b.neighbors_out.num_edges for b in singles],
            "graphs_compiled_during_warmup_pass": per_geometry,
            "recompilations_after_warmup": cm.graphs_compiled - after_warmup,
            "step_s_8_geometries": t, "compiled_over_eager": t["compiled"] / t["eager"],
        }
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mode", default=None, help="Inductor mode (default: its default)")
    p.add_argument("--only", default="explain,car,batch8,folder")
    p.add_argument("--out")
    args = p.parse_args(argv)
    res = run(args)
    print(json.dumps(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    for k in ("car_compiled_over_eager", "car_graphed_over_eager", "car_max_rel_diff", "batch8_compiled_over_eager",
              "batch8_max_rel_diff"):
        if k in res:
            print(f"{k:32s} {res[k]:.4g}", file=sys.stderr)
    if "folder" in res:
        f = res["folder"]
        print(f"{'folder recompilations':32s} {f['recompilations_after_warmup']} after the warm-up pass (graphs "
              f"during it: {f['graphs_compiled_during_warmup_pass']}), compiled/eager {f['compiled_over_eager']:.3f}",
              file=sys.stderr)
    if "explain" in res:
        e = res["explain"]
        print(f"{'explain':32s} graphs {e['graph_count']}, breaks {e['graph_break_count']}, ops {e['op_count']}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
