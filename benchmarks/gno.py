"""GNO layer design choices, measured side by side in one run.

    .venv/bin/python benchmarks/gno.py                 # ~1-3 min on 2 cores
    .venv/bin/python benchmarks/gno.py --big           # + the 10 M edge training step (minutes)

Measurements (training step = forward + backward of ``out.square().mean()``):

* ``split_vs_concat``: geoop's GNO (kernel MLP first layer split into per-point parts, edges
  in cache-sized chunks) against the textbook per-edge MLP on the concatenated
  ``[e(x), e(y)]`` (one chunk, what a direct implementation does), on the car decoder's
  neighbourhoods (16^3 latent nodes -> 3,586 car vertices, radius 0.1, ~45k edges),
  kernel MLP (64, 64), 32 channels, NeRF embedding with 8 frequencies.
* ``chunk_edges``: the same GNO step for several chunk sizes (cache effects).
* ``checkpoint``: step time and peak memory (resident-set high-water mark of a fresh
  subprocess, reset just before the step, minus the resident set at that moment) with and without the checkpointed edge pass, 1 M random edges.
* ``gno_10m`` (``--big``): peak memory of a 10 M edge training step (target < 2 GB).
* ``recipe`` (``--recipe``, alone): edges/s of a checkpointed step at the 3-D body recipe's
  encoder and decoder sizes, for 1 and 2 threads, chunks of 16k and 64k edges, and the
  checkpointed backward before / after it stopped recomputing the reduction (wall time,
  variants interleaved).

Times are medians of ``--repeats`` runs of process CPU time (``time.process_time``) with
one thread, which is robust to other processes on a shared machine; ratios are between
numbers of the same run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_cpu(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        ts.append(time.process_time() - t)
    return sorted(ts)[len(ts) // 2]


def _car_decoder_case():
    import torch

    from geoop.neighbors.grid import grid_points
    from geoop.neighbors.search import radius_search

    car = torch.load(ROOT.parent / "shared" / "data" / "mini_car.pt", weights_only=False)[0] \
        if (ROOT.parent / "shared" / "data" / "mini_car.pt").exists() else \
        torch.load("/work/shared/data/mini_car.pt", weights_only=False)[0]
    queries = car["vertices"].float()
    latent = grid_points((16, 16, 16), [[0.0] * 3, [1.0] * 3])
    nb = radius_search(latent, queries, 0.1)
    return latent, queries, nb


def _concat_step(gno, src, qry, nb, f):
    """Per-edge MLP on the concatenated embeddings, same weights as ``gno``."""
    import torch

    qi = nb.query_index()
    si = nb.index
    e = torch.cat([gno.embed(qry)[qi], gno.embed(src)[si]], 1)
    w = torch.cat([gno.lin_query.weight, gno.lin_source.weight], 1)
    h = gno.rest(e @ w.T + gno.lin_query.bias) * f[si]
    out = h.new_zeros(qry.shape[0], h.shape[1]).index_add_(0, qi, h)
    return out


def bench_small(repeats: int) -> dict:
    import torch

    from geoop.nn import GNO

    torch.set_num_threads(1)
    src, qry, nb = _car_decoder_case()
    f = torch.randn(src.shape[0], 32)
    torch.manual_seed(0)
    gno = GNO(32, 32, 3, mlp_hidden=(64, 64), kernel="linear", reduction="sum", checkpoint=False)
    out = {"edges": nb.num_edges}
    with torch.no_grad():
        ref = _concat_step(gno, src, qry, nb, f)
        assert torch.allclose(gno(src, qry, nb, f), ref, rtol=1e-4, atol=1e-4)

    def geoop_step():
        gno.zero_grad()
        gno(src, qry, nb, f).square().mean().backward()

    def concat_step():
        gno.zero_grad()
        _concat_step(gno, src, qry, nb, f).square().mean().backward()

    t_geoop = _median_cpu(geoop_step, repeats)
    t_concat = _median_cpu(concat_step, repeats)
    out["split_vs_concat"] = {"geoop_ms": 1e3 * t_geoop, "concat_ms": 1e3 * t_concat, "ratio": t_geoop / t_concat}
    chunks = {}
    for ce in (1 << 12, 1 << 14, 1 << 16, 1 << 20):
        gno.chunk_edges = ce
        chunks[str(ce)] = 1e3 * _median_cpu(geoop_step, repeats)
    out["chunk_edges_ms"] = chunks
    return out


def _recipe_cases():
    """The 3-D body recipe's first GNOs (configs/body_rans.toml before its CPU sizing) on synthetic points of the same
    sizes: a 48 x 24 x 24 latent grid on [0, 2] x [0, 1] x [0, 1]; encoder: 20k points on a
    sphere -> the grid nodes, 3 input channels (normals) -> 48; decoder: the grid nodes ->
    4,000 random queries, 48 -> 48 channels. Radius 0.095 (about 49 latent nodes per decoder
    query, as in the recipe's real cases). Kernel MLP (64, 64), NeRF embedding, 8 frequencies."""
    import torch

    from geoop.neighbors.grid import grid_points
    from geoop.neighbors.search import radius_search

    g = torch.Generator().manual_seed(0)
    latent = grid_points((48, 24, 24), [[0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])
    d = torch.randn(20_000, 3, generator=g)
    surf = torch.tensor([0.8, 0.5, 0.5]) + 0.35 * d / d.norm(dim=1, keepdim=True)
    qry = torch.rand(4000, 3, generator=g) * torch.tensor([2.0, 1.0, 1.0])
    r = 0.095
    return {"encoder": (surf, latent, radius_search(surf, latent, r), 3, 48),
            "decoder": (latent, qry, radius_search(latent, qry, r), 48, 48)}


def _legacy_backward(ctx, gout):
    """The checkpointed backward before the per-edge-summand recompute: it recomputed each
    chunk's ``index_add_`` reduction too (kept here as the benchmark's 'before')."""
    import torch

    from geoop.nn.segment import segment_index

    index, ptr, hq, hs, src_mult = ctx.saved_tensors
    layer = ctx.layer
    params = list(layer.rest.parameters())
    g_hq, g_hs = torch.zeros_like(hq), torch.zeros_like(hs)
    g_mult = torch.zeros_like(src_mult) if ctx.has_mult else None
    g_p = [torch.zeros_like(p) for p in params]
    for q0, q1, e0, e1 in ctx.chunks:
        if e1 == e0:
            continue
        qloc = segment_index(ptr[q0 : q1 + 1], e1 - e0)
        src = index[e0:e1]
        with torch.enable_grad():
            hq_c = hq[q0:q1].detach().requires_grad_()
            hs_e = hs.index_select(0, src).requires_grad_()
            m_e = src_mult.index_select(0, src).requires_grad_() if ctx.has_mult else None
            out_c = layer._chunk_gathered(hq_c, hs_e, m_e, qloc)
            inputs = [hq_c, hs_e] + ([m_e] if m_e is not None else []) + params
            grads = list(torch.autograd.grad(out_c, inputs, gout[q0:q1]))
        g_hq[q0:q1] += grads.pop(0)
        g_hs.index_add_(0, src, grads.pop(0))
        if m_e is not None:
            g_mult.index_add_(0, src, grads.pop(0))
        for acc, g in zip(g_p, grads):
            acc += g
    return (None, None, None, None, g_hq, g_hs, g_mult, *g_p)


def bench_recipe(repeats: int) -> dict:
    """Edges per second of a checkpointed forward + backward at the body recipe's sizes, for
    1 and 2 threads, two chunk sizes, and the checkpointed backward before / after it stopped
    recomputing the reduction; all variants interleaved in this process, median wall time."""
    import torch

    import geoop.nn.gno as gno_mod
    from geoop.nn import GNO

    new_backward = gno_mod._CheckpointedEdges.backward
    old_backward = torch.autograd.function.once_differentiable(_legacy_backward)
    res = {}
    for name, (src, qry, nb, cin, cout) in _recipe_cases().items():
        torch.manual_seed(0)
        gno = GNO(cin, cout, 3, mlp_hidden=(64, 64), kernel="linear", reduction="weighted", checkpoint=True)
        f = torch.randn(src.shape[0], cin, requires_grad=True)
        w = torch.rand(src.shape[0]) + 0.5
        variants = [(t, c, b) for t in (1, 2) for c in (1 << 14, 1 << 16) for b in ("before", "after")]
        times = {v: [] for v in variants}
        grads = {}
        for _ in range(repeats + 1):  # the first round warms up
            for v in variants:
                t, c, b = v
                torch.set_num_threads(t)
                gno.chunk_edges = c
                gno_mod._CheckpointedEdges.backward = staticmethod(old_backward if b == "before" else new_backward)
                gno.zero_grad()
                f.grad = None
                t0 = time.perf_counter()
                gno(src, qry, nb, f, w).square().mean().backward()
                times[v].append(time.perf_counter() - t0)
                grads[v] = f.grad.clone()
        gno_mod._CheckpointedEdges.backward = staticmethod(new_backward)
        torch.set_num_threads(1)
        ref = grads[variants[0]]
        out = {"edges": nb.num_edges, "queries": qry.shape[0], "sources": src.shape[0],
               "max_rel_grad_diff": max(float((g - ref).abs().max() / ref.abs().max()) for g in grads.values())}
        for (t, c, b), ts in times.items():
            med = sorted(ts[1:])[len(ts[1:]) // 2]
            out[f"threads{t}_chunk{c}_{b}"] = {"s": med, "edges_per_s": nb.num_edges / med}
        res[name] = out
    return res


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak_rss() -> float:
    """Reset the resident-set high-water mark (Linux ``clear_refs`` 5) and return the current
    resident set in MB; falls back to ``ru_maxrss`` where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss_mb() -> float:
    try:
        return _status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(kind: str) -> dict:
    """Run one training step in this (fresh) process and report its peak memory."""
    import torch

    from geoop.neighbors.neighborhoods import Neighborhoods
    from geoop.nn import GNO

    torch.set_num_threads(1)
    n, k = (100_000, 100) if kind.startswith("10m") else (20_000, 50)
    g = torch.Generator().manual_seed(0)
    src, qry = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    nb = Neighborhoods(torch.randint(0, n, (n * k,), generator=g), torch.arange(0, n * k + 1, k), n)
    f = torch.randn(n, 32, generator=g)
    gno = GNO(32, 32, 3, mlp_hidden=(64, 64), kernel="linear", reduction="mean",
              checkpoint=not kind.endswith("plain"))
    base = _reset_peak_rss()
    t = time.process_time()
    gno(src, qry, nb, f).square().mean().backward()
    dt = time.process_time() - t
    peak = _peak_rss_mb() - base
    return {"edges": n * k, "cpu_s": dt, "peak_mb": peak}


def _run_worker(kind: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--worker", kind], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--big", action="store_true", help="also run the 10 M edge step")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="write the results to this file")
    p.add_argument("--recipe", action="store_true",
                   help="only the 3-D body recipe's sizes: edges/s for threads, chunk sizes, backward before/after")
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(a.worker)))
        return 0
    if a.recipe:
        res = {"recipe": bench_recipe(a.repeats)}
        print(json.dumps(res, indent=1))
        for name, r in res["recipe"].items():
            for k, v in r.items():
                if isinstance(v, dict):
                    print(f"{name} ({r['edges']} edges) {k:<30} {v['s']:8.3f} s  {v['edges_per_s'] / 1e3:8.1f} k edges/s")
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))
        return 0
    res = bench_small(a.repeats)
    ck, plain = _run_worker("1m_ckpt"), _run_worker("1m_plain")
    res["checkpoint_1m"] = {"checkpointed": ck, "plain": plain, "time_ratio": ck["cpu_s"] / plain["cpu_s"],
                            "memory_ratio": ck["peak_mb"] / max(plain["peak_mb"], 1e-9)}
    if a.big:
        res["gno_10m"] = _run_worker("10m_ckpt")
    print(json.dumps(res, indent=1))
    s = res["split_vs_concat"]
    rows = [
        ("split first layer vs concatenated MLP (car decoder, %d edges)" % res["edges"],
         f"{s['geoop_ms']:.1f} ms vs {s['concat_ms']:.1f} ms", f"{s['ratio']:.2f}x"),
        ("checkpointed vs plain, 1 M edges: time", f"{ck['cpu_s']:.2f} s vs {plain['cpu_s']:.2f} s",
         f"{res['checkpoint_1m']['time_ratio']:.2f}x"),
        ("checkpointed vs plain, 1 M edges: peak memory", f"{ck['peak_mb']:.0f} MB vs {plain['peak_mb']:.0f} MB",
         f"{res['checkpoint_1m']['memory_ratio']:.2f}x"),
    ]
    rows += [(f"chunk_edges={k}", f"{v:.1f} ms", "") for k, v in res["chunk_edges_ms"].items()]
    if "gno_10m" in res:
        rows.append(("10 M edge training step", f"{res['gno_10m']['cpu_s']:.1f} s CPU", f"{res['gno_10m']['peak_mb']:.0f} MB peak"))
    w = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w}}  {r[1]:>24}  {r[2]}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
