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
from .segment_csr import segment_csr  # noqa: F401  (neuralop does `import torch_scatter.segment_csr as f`)

__version__ = "shim-segment_reduce"
