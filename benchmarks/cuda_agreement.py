"""geoop on CUDA agrees with geoop on the CPU (run on a GPU machine; see gpu_check.sh).

Checks, printed as JSON: (1) ``radius_search`` on CUDA returns the same neighbour sets as
on the CPU; (2) a GINO (the car configuration of ``benchmarks/gino.py``) on a batch of 3
different geometries gives the same outputs and parameter gradients on CUDA as on the CPU
(relative difference, float32); (3) ``GINO.query`` in chunks on CUDA equals one shot;
(4) ``GraphedGINO`` (CUDA-graph replay) gives the eager outputs and gradients on that batch,
for three different input fields; (5) so do ``RaggedGraphedGINO`` (CUDA graphs of padded
capacity buckets, on that batch and on each of its geometries alone) and ``compile_gino``
(torch.compile, on each geometry alone: one compilation); and it reports the host synchronisations of one CUDA
training step (sync debug mode).
Exit status 1 when a check fails.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gino as bench  # noqa: E402
import torch  # noqa: E402

from geoop import Geometry, radius_search  # noqa: E402
from geoop.batch import GeometryBatch  # noqa: E402


def _rel(a, b) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-30))


def main() -> int:
    assert torch.cuda.is_available(), "no CUDA device"
    out, ok = {"device": torch.cuda.get_device_name()}, True
    g = torch.Generator().manual_seed(0)
    src, qry = torch.rand(20000, 3, generator=g), torch.rand(5000, 3, generator=g)
    a = radius_search(src, qry, 0.05)
    b = radius_search(src.cuda(), qry.cuda(), 0.05)
    same = torch.equal(a.ptr.cpu(), b.ptr.cpu()) and all(
        torch.equal(a.index[a.ptr[i]:a.ptr[i + 1]].sort().values.cpu(), b.index[b.ptr[i]:b.ptr[i + 1]].sort().values.cpu())
        for i in range(0, 5000, 97))
    out["radius_search_same_sets"] = bool(same)
    ok &= bool(same)

    torch.manual_seed(0)
    model = bench._geoop_model()
    geoms = bench._eight_geometries()[:3]
    samples = [bench._geoop_sample(*gm) for gm in geoms]
    batch = GeometryBatch.from_samples([model.precompute(s) for s in samples])

    def run(m, bt):
        m.zero_grad(set_to_none=True)
        y = m(bt, bt.fields["x"])
        y.square().mean().backward()
        return y.detach(), {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}

    y_cpu, g_cpu = run(model, batch)
    model_cuda = bench._geoop_model()
    model_cuda.load_state_dict(model.state_dict())
    model_cuda = model_cuda.cuda()
    y_gpu, g_gpu = run(model_cuda, batch.to("cuda"))
    # host synchronisations in a steady-state CUDA training step (each one stalls the queue)
    import warnings

    bt = batch.to("cuda")
    run(model_cuda, bt)
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(model_cuda, bt)
    torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0][:120] for w in caught if "synchroniz" in str(w.message).lower()]
    out["syncs_per_training_step"] = len(syncs)
    out["sync_kinds"] = sorted(set(syncs))[:10]
    out["gino_output_rel_diff"] = _rel(y_gpu, y_cpu)
    out["gino_grad_rel_diff_max"] = max(_rel(g_gpu[n], g_cpu[n]) for n in g_cpu)
    ok &= out["gino_output_rel_diff"] < 1e-4 and out["gino_grad_rel_diff_max"] < 1e-3

    # CUDA-graph replay of forward + backward on the same batch, new x each call
    from geoop.models import GraphedGINO

    try:
        graphed = GraphedGINO(model_cuda, bt, bt.fields["x"])
        diffs = []
        for seed in range(3):
            xs = torch.nn.functional.normalize(torch.randn(bt.fields["x"].shape, generator=torch.Generator().manual_seed(seed)), dim=1).cuda()
            model_cuda.zero_grad(set_to_none=True)
            yg = graphed(xs)
            yg.square().mean().backward()
            gg = {n: p.grad.detach().clone() for n, p in model_cuda.named_parameters() if p.grad is not None}
            model_cuda.zero_grad(set_to_none=True)
            ye = model_cuda(bt, xs)
            ye.square().mean().backward()
            diffs.append(max([_rel(yg, ye)] + [_rel(gg[n], p.grad) for n, p in model_cuda.named_parameters() if p.grad is not None]))
        out["graphed_max_rel_diff"] = max(diffs)
        ok &= out["graphed_max_rel_diff"] < 1e-4
    except Exception as exc:  # report and fail, keep the other checks
        out["graphed_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        ok = False

    # CUDA graphs of padded capacity buckets and torch.compile, on the batch of 3 and on each
    # of its geometries alone (new geometries: new buckets / no recompilation expected)
    from geoop.models import RaggedGraphedGINO, compile_gino

    singles = [GeometryBatch.from_samples([model.precompute(s)]).to("cuda") for s in samples]
    for name, make in (("ragged", lambda: RaggedGraphedGINO(model_cuda)), ("compiled", lambda: compile_gino(model_cuda))):
        try:
            net, diffs = make(), []
            for b in ([bt] if name == "ragged" else []) + singles:  # compiled: batch size 1 only (one compilation)
                model_cuda.zero_grad(set_to_none=True)
                yo = net(b, b.fields["x"]).clone()
                yo.square().mean().backward()
                go = {n: p.grad.detach().clone() for n, p in model_cuda.named_parameters() if p.grad is not None}
                model_cuda.zero_grad(set_to_none=True)
                ye = model_cuda(b, b.fields["x"])
                ye.square().mean().backward()
                diffs.append(max([_rel(yo, ye)] + [_rel(go[n], p.grad) for n, p in model_cuda.named_parameters() if p.grad is not None]))
            out[f"{name}_max_rel_diff"] = max(diffs)
            out[f"{name}_graphs"] = len(net.graphs) if name == "ragged" else net.graphs_compiled
            ok &= out[f"{name}_max_rel_diff"] < 1e-4
        except Exception as exc:  # report and fail, keep the other checks
            out[f"{name}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            ok = False

    pts, nrm, _, _ = bench._car(0)
    geom = Geometry(pts.cuda(), fields={"x": nrm.cuda()}, validate=False)
    q = torch.rand(200_000, 3, generator=g).cuda()
    model_cuda.eval()
    with torch.no_grad():
        one = model_cuda.query(geom, q, x=nrm.cuda(), chunk_size=len(q))
        chunked = model_cuda.query(geom, q, x=nrm.cuda(), chunk_size=7919)
    out["query_chunked_rel_diff"] = _rel(chunked, one)
    ok &= out["query_chunked_rel_diff"] < 1e-5
    out["ok"] = bool(ok)
    print(json.dumps(out, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
