"""Benchmark-only stand-in for ``torch_scatter.segment_csr`` on machines where torch-scatter
cannot be built (the lent GPU machines have no internet and no time budget for a 10-minute
CUDA build).

neuraloperator's ``segment_csr`` uses torch-scatter when ``importlib.util.find_spec(
"torch_scatter")`` finds it and otherwise falls back to a Python loop over every output
point, which would make the comparison meaningless on a GPU. This module gives it the same
operation through PyTorch's native CSR segment reduction, ``torch.segment_reduce`` (one CUDA
kernel, forward and backward), so neuralop runs a fused reduction as it would with
torch-scatter. It is put on ``PYTHONPATH`` only by ``benchmarks/gpu_check.sh`` and is never
a geoop dependency.

Shapes: ``src (E, C)`` or ``(B, E, C)``, ``indptr (N + 1,)`` or ``(B, N + 1)`` -> ``(N, C)``
or ``(B, N, C)``.
"""
import torch

__version__ = "shim-segment_reduce"


def segment_csr(src, indptr, out=None, reduce="sum"):
    if reduce not in ("sum", "mean"):
        raise ValueError(f"segment_csr shim: reduce must be 'sum' or 'mean', got {reduce!r}")
    if src.dim() == 3:  # batched, one shared indptr row per batch entry
        return torch.stack([segment_csr(s, p, reduce=reduce) for s, p in zip(src, indptr)])
    offsets = indptr.to(torch.long)
    res = torch.segment_reduce(src, reduce, offsets=offsets, axis=0, unsafe=True, initial=0.0)
    if out is not None:
        out.copy_(res)
        return out
    return res
