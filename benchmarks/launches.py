"""Operator count of a car-sized GINO training step: the number a GPU step is bound by.

On a GPU the car step of ``gino.py`` is launch-bound (measured on an H200: ~2.3 ms of kernel
time in a 12-22 ms step for both geoop and neuraloperator), so its eager time follows the
number of kernels launched per step, not the arithmetic. This script counts, on the CPU
(no GPU needed), the ATen operators of one training step (zero_grad + forward + backward)
that do work, as ``torch.profiler`` records them: the innermost ``aten::`` calls (an
``aten::linear`` counts as its ``addmm``, an ``einsum`` as its ``bmm`` and copies; matrix
products and FFTs count once, as on a GPU, although the CPU splits a complex ``bmm`` into
per-sample calls), minus views and host-side metadata ops (``view``, ``slice``, ``item``,
...), which launch nothing.
geoop's spectral contraction has a CPU-only form (a loop over channels, faster on the CPU);
it is swapped for the form geoop runs on CUDA (complex ``einsum`` forward and backward), and
the un-checkpointed GNO calls get CUDA's chunk size (one chunk for the car instead of four),
so the count is that of geoop's CUDA code path, with one over-count: the CSR bookkeeping that
runs on host copies of the offsets on a GPU (``_edge_chunks``: a few ``cumsum`` /
``searchsorted`` per GNO call) is counted too. neuraloperator runs the same code on both
devices.

Run with the benchmark environment (neuraloperator and torch-scatter installed)::

    .venv-bench/bin/python benchmarks/launches.py

Prints JSON and a table: compute ops per step for geoop (precomputed neighbourhoods, its
training mode) and neuraloperator (searching in every forward, as it does), their ratio, and
geoop's count per module (``gno_in``, ``blocks``, ``gno_out``, ...), and geoop's count with
``GINO(checkpoint_encoder=False)`` (the encoder keeps its edge activations: one chunk on
CUDA, no recomputation).
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (str(ROOT), str(Path(__file__).resolve().parent)):
    if p not in sys.path:
        sys.path.insert(0, p)

#: ATen ops that only make views or read metadata / host values: no kernel on a GPU
NO_KERNEL = {
    "aten::alias", "aten::as_strided", "aten::chunk", "aten::conj", "aten::_conj", "aten::detach",
    "aten::expand", "aten::expand_as", "aten::flatten", "aten::item", "aten::_local_scalar_dense",
    "aten::lift_fresh", "aten::movedim", "aten::narrow", "aten::numpy_T", "aten::permute",
    "aten::_reshape_alias", "aten::reshape", "aten::resolve_conj", "aten::select", "aten::slice",
    "aten::split", "aten::split_with_sizes", "aten::squeeze", "aten::t", "aten::transpose",
    "aten::unbind", "aten::unflatten", "aten::unsqueeze", "aten::view", "aten::view_as_complex",
    "aten::view_as_real", "aten::empty", "aten::empty_strided", "aten::new_empty",
    "aten::new_empty_strided", "aten::empty_like", "aten::is_nonzero", "aten::result_type",
    "aten::broadcast_tensors", "aten::_unsafe_view", "aten::contiguous", "aten::real", "aten::imag",
    "aten::sym_size", "aten::sym_numel", "aten::sym_stride", "aten::size", "aten::stride",
    "aten::to", "aten::_to_copy_noop", "aten::resize_", "aten::resize_as_", "aten::_nnpack_available",
    "aten::scalar_tensor", "aten::mT", "aten::as_strided_", "aten::detach_", "aten::is_floating_point", "aten::is_same_size", "aten::view_as", "aten::diagonal",
}


#: ops that are one library call on a GPU (cuBLAS, cuFFT) but decompose into many ATen calls
#: on the CPU (a complex ``bmm`` loops over the batch there): counted once, never descended
ONE_CALL = {"aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "aten::_fft_r2c", "aten::_fft_c2r",
            "aten::_fft_c2c"}


#: operator namespaces of compiled extensions whose calls are one kernel each
EXTENSION_OPS = ("torch_scatter::", "torch_cluster::")


def _kernels(e) -> list:
    """The ops under (and including) ``e`` that launch work: a ONE_CALL op counts once; any
    other op counts as its working descendants, or as itself when none of them works (e.g.
    ``index_select``, whose only child is the ``resize_`` of its output)."""
    if e.name in ONE_CALL:
        return [e]
    below = [k for c in e.cpu_children if c.name.startswith("aten::") for k in _kernels(c)]
    if below or e.name in NO_KERNEL:
        return below
    return [e]


def use_cuda_contraction() -> None:
    """Make geoop's spectral contraction take its CUDA form (complex einsums) on the CPU."""
    import geoop.nn.fno as fno

    fno._einsum_contraction = lambda x: True


def count_ops(step) -> dict:
    """Compute ops of one ``step()``: {"total": n, "by_op": {...}}, plus "by_module" and
    "by_module_op" when the step's modules are labelled (:func:`_label_modules`): forward
    ops by the module range they run in, backward ops by the autograd sequence number of
    the forward op they belong to."""
    from torch.profiler import ProfilerActivity, profile

    step()  # warm-up (caches, lazily built index tensors)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    tops = [e for e in events if not _has_aten_parent(e)]
    # custom extension ops (neuraloperator's torch_scatter segment reductions): one kernel each
    work = [k for e in tops for k in _kernels(e)] + [e for e in prof.events() if e.name.startswith(EXTENSION_OPS)]
    by_op = collections.Counter(e.name for e in work)
    res = {"total": sum(by_op.values()), "by_op": dict(by_op.most_common())}
    ranges = [(e.time_range.start, e.time_range.end, e.name[len(MODULE_RANGE):])
              for e in prof.events() if e.name.startswith(MODULE_RANGE)]
    if not ranges:
        return res

    def module_of(e):
        return next((name for s, t, name in ranges if s <= e.time_range.start <= t), None)

    seq_module = {e.sequence_nr: m for e in events if (m := module_of(e)) is not None}
    by_module_op = collections.defaultdict(collections.Counter)
    for e in work:
        name = module_of(e)
        if name is None:
            name = seq_module.get(_forward_seq(e), "other")
        by_module_op[name][e.name] += 1
    res["by_module"] = {m: sum(c.values()) for m, c in by_module_op.items()}
    res["by_module_op"] = {m: dict(c.most_common()) for m, c in by_module_op.items()}
    return res


def _has_aten_parent(e) -> bool:
    q = e.cpu_parent
    while q is not None:
        if q.name.startswith("aten::"):
            return True
        q = q.cpu_parent
    return False


def _forward_seq(e):
    """The forward sequence number of a backward op (its enclosing autograd node), if any."""
    q = e
    while q is not None:
        if q.name.startswith("autograd::engine::evaluate_function") and q.sequence_nr >= 0:
            return q.sequence_nr
        if not q.name.startswith("aten::") and q.sequence_nr >= 0 and "Backward" in q.name:
            return q.sequence_nr
        q = q.cpu_parent
    return None


#: profiler range name prefix of a labelled module's forward
MODULE_RANGE = "geoop_module::"


def _label_modules(model, names) -> None:
    """Wrap the forwards of ``model.<name>`` in profiler ranges ``geoop_module::<name>``."""
    import torch

    for name in names:
        mod = getattr(model, name, None)
        if mod is None:
            continue

        def wrapped(*a, __fwd=mod.forward, __name=name, **k):
            with torch.profiler.record_function(MODULE_RANGE + __name):
                return __fwd(*a, **k)

        mod.forward = wrapped


def geoop_step(**overrides):
    import gino as G

    use_cuda_contraction()
    model, sample = G._geoop_car(**overrides)
    from geoop.nn.gno import GNO

    for m in model.modules():  # CUDA chunking: un-checkpointed GNO calls use chunk_edges_cuda
        if isinstance(m, GNO) and m.checkpoint is not True:
            m.chunk_edges = m.chunk_edges_cuda
    _label_modules(model, ["gno_in", "lifting", "blocks", "gno_out", "projection"])
    batch = G._geoop_batch(model, [sample], precompute=True)
    return G._geoop_step_fn(model, batch)


def neuralop_step():
    import gino as G
    import torch

    pts, nrm, prs = G._to(*G._car(0)[:3])
    latent = G._latent_grid(torch)
    model = G._neuralop_model()

    def step():
        model.zero_grad(set_to_none=True)
        out = model(input_geom=pts[None], latent_queries=latent[None], output_queries=pts[None], x=nrm[None])
        torch.nn.functional.mse_loss(out[0], prs).backward()

    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-neuralop", action="store_true", help="count geoop only")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    res = {"geoop": count_ops(geoop_step()), "geoop_plain_encoder": count_ops(geoop_step(checkpoint_encoder=False))}
    if not args.no_neuralop:
        try:
            res["neuralop"] = count_ops(neuralop_step())
        except Exception as exc:  # neuralop not installed: geoop's count alone
            res["neuralop"] = {"error": f"{type(exc).__name__}: {exc}"}
    g, n = res["geoop"]["total"], res.get("neuralop", {}).get("total")
    gp = res["geoop_plain_encoder"]["total"]
    res["ratio_geoop_over_neuralop"] = None if n is None else g / n
    res["ratio_geoop_plain_encoder_over_neuralop"] = None if n is None else gp / n
    print(json.dumps(res, indent=1))
    print()
    print(f"{'compute ops per training step':34s} {'count':>6s}")
    print(f"{'geoop (CUDA code path)':34s} {g:6d}")
    for name, c in res["geoop"]["by_module"].items():
        print(f"{'  ' + name:34s} {c:6d}")
    print(f"{'geoop, checkpoint_encoder=False':34s} {gp:6d}")
    if n is not None:
        print(f"{'neuraloperator':34s} {n:6d}")
        print(f"{'ratio geoop / neuraloperator':34s} {g / n:6.3f}")
        print(f"{'  with checkpoint_encoder=False':34s} {gp / n:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
