"""FNO benchmark: parameter count and time of dense vs Tucker vs CP spectral weights, and
the pointwise channel map as ``F.linear`` on a channel-last view vs a 1x1 convolution.

All variants run side by side in one process, interleaved (round-robin repeats, median), so
the ratios are comparable even on a shared machine. Prints one JSON line and a table.

    .venv/bin/python benchmarks/fno.py                      # 3-D, 32 channels, 8 modes, 32^3
    .venv/bin/python benchmarks/fno.py --channels 64 --modes 16 --grid 64 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from geoop.nn.channel_mlp import ChannelLinear  # noqa: E402
from geoop.nn.fno import FNOBlocks  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--modes", type=int, default=8)
    p.add_argument("--grid", type=int, default=32)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rank", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    C, m, n = a.channels, a.modes, a.grid
    x = torch.randn(a.batch, C, n, n, n)

    models = {
        f: FNOBlocks(C, (m, m, m), a.layers, factorization=f, rank=a.rank)
        for f in ("dense", "tucker", "cp")
    }
    lin = ChannelLinear(C, C)
    conv = torch.nn.Conv3d(C, C, 1)
    with torch.no_grad():
        conv.weight.copy_(lin.linear.weight.view(C, C, 1, 1, 1))
        conv.bias.copy_(lin.linear.bias)
    pointwise = {"channel_linear": lin, "conv1x1": conv}

    def run_fwd_bwd(model):
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    def run_fwd(model):
        with torch.no_grad():
            model(x)

    times = {k: [] for k in list(models) + list(pointwise)}
    for k, mdl in models.items():  # warm-up
        run_fwd_bwd(mdl)
    for k, mdl in pointwise.items():
        run_fwd(mdl)
    for _ in range(a.repeats):
        for k, mdl in models.items():
            t = time.perf_counter()
            run_fwd_bwd(mdl)
            times[k].append(time.perf_counter() - t)
        for k, mdl in pointwise.items():
            t = time.perf_counter()
            for _ in range(10):
                run_fwd(mdl)
            times[k].append((time.perf_counter() - t) / 10)
    med = {k: statistics.median(v) for k, v in times.items()}
    spectral = {k: sum(b.spectral.weight.n_params for b in mdl.blocks) for k, mdl in models.items()}
    total = {k: sum(q.numel() for q in mdl.parameters()) for k, mdl in models.items()}
    torch.testing.assert_close(lin(x), conv(x), rtol=1e-4, atol=1e-4)
    result = {
        "benchmark": "fno",
        "config": vars(a),
        "spectral_params": spectral,
        "total_params": total,
        "param_ratio_vs_dense": {k: total[k] / total["dense"] for k in models},
        "fwd_bwd_seconds": {k: med[k] for k in models},
        "time_ratio_vs_dense": {k: med[k] / med["dense"] for k in models},
        "pointwise_forward_seconds": {k: med[k] for k in pointwise},
        "conv1x1_over_channel_linear": med["conv1x1"] / med["channel_linear"],
    }
    print(json.dumps(result))
    print(f"{'weights':<10}{'params':>14}{'ratio':>8}{'fwd+bwd s':>12}{'ratio':>8}")
    for k in models:
        print(f"{k:<10}{total[k]:>14,}{result['param_ratio_vs_dense'][k]:>8.3f}{med[k]:>12.4f}"
              f"{result['time_ratio_vs_dense'][k]:>8.2f}")
    print(f"pointwise channel map: conv1x1 / F.linear(channel-last) time = {result['conv1x1_over_channel_linear']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
