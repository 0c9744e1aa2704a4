"""Where the time of one car-sized GINO training step goes (``torch.profiler`` tables).

    python benchmarks/profile_step.py --model geoop --device cpu
    python benchmarks/profile_step.py --model neuralop --device cuda   # needs the bench env

Builds the step of ``benchmarks/gino.py`` (same models and data), runs it ``--warmup`` times,
then profiles ``--steps`` steps and prints the operators sorted by their own time (CUDA
kernel time on a GPU, CPU time otherwise) and the number of host synchronisations' worth of
wall time per step.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gino as bench  # noqa: E402


def build(model_name: str):
    import torch

    pts, nrm, prs = bench._to(*bench._car(0)[:3])
    if model_name == "neuralop":
        latent = bench._latent_grid(torch).to(bench.DEVICE)
        model = bench._neuralop_model().to(bench.DEVICE)

        def step():
            model.zero_grad(set_to_none=True)
            out = model(input_geom=pts[None], latent_queries=latent[None], output_queries=pts[None], x=nrm[None])
            torch.nn.functional.mse_loss(out[0], prs).backward()

        return step
    model = bench._geoop_model().to(bench.DEVICE)
    batch = bench._geoop_batch(model, [bench._geoop_sample(pts, nrm, prs)], precompute=True)
    return bench._geoop_step_fn(model, batch)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("geoop", "neuralop"), default="geoop")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(a.threads)
    bench.DEVICE = a.device
    step = build(a.model)
    for _ in range(a.warmup):
        step()
    bench._sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    bench._sync()
    print(f"{a.model} on {a.device}: {(time.perf_counter() - t0) / a.steps * 1e3:.2f} ms per step (unprofiled)")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        for _ in range(a.steps):
            step()
        bench._sync()
    key = "self_cuda_time_total" if a.device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=a.rows, max_name_column_width=60))
    if a.device.startswith("cuda"):
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
