"""Segment reductions over CSR-grouped edges (sums with ``index_add_``).

For edges grouped by query (``ptr`` (Q+1,)), the segment sum of edge values ``m_e`` is
``s_q = sum_{e in [ptr_q, ptr_{q+1})} m_e`` and the segment mean is ``s_q / max(n_q, 1)``
(an empty segment gives exactly 0).

Shapes
------
values : (E, C) float     index : (E,) long, target segment of each edge
ptr    : (Q+1,) long      result : (Q, C) float
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["segment_index", "segment_sum", "segment_sum_csr", "segment_mean_csr"]


def segment_index(ptr: Tensor, num_edges: int | None = None) -> Tensor:
    """(E,) segment id of each edge from the CSR offsets ``ptr`` (Q+1,)."""
    counts = ptr[1:] - ptr[:-1]
    e = int(ptr[-1] - ptr[0]) if num_edges is None else num_edges
    return torch.repeat_interleave(torch.arange(counts.numel(), device=ptr.device), counts, output_size=e)


def segment_sum(values: Tensor, index: Tensor, num_segments: int) -> Tensor:
    """``out[q] = sum of values[e] with index[e] == q``; (E, C) -> (num_segments, C).

    Uses ``index_add_`` (differentiable; the edges need not be sorted)."""
    out = values.new_zeros((num_segments,) + tuple(values.shape[1:]))
    return out.index_add_(0, index, values)


def segment_sum_csr(values: Tensor, ptr: Tensor) -> Tensor:
    """Sum of the edge values of each CSR segment; ``values`` (E, C) with edges sorted by
    segment and ``ptr`` (Q+1,) relative to ``values`` (``ptr[0] == 0``)."""
    return segment_sum(values, segment_index(ptr, values.shape[0]), ptr.numel() - 1)


def segment_mean_csr(values: Tensor, ptr: Tensor) -> Tensor:
    """Mean of each CSR segment; an empty segment gives exactly 0 (never NaN)."""
    s = segment_sum_csr(values, ptr)
    n = (ptr[1:] - ptr[:-1]).clamp(min=1).to(values.dtype)
    return s / n.view(-1, *([1] * (values.dim() - 1)))
