"""Relative L2 losses over ragged batches of samples.

For sample ``b`` and field ``f`` (channels ``c`` of that field), with query points ``i`` of the
sample and optional quadrature weights ``w_i``:

.. math::

    e_{b,f} = \\frac{\\sqrt{\\sum_i w_i \\sum_{c \\in f} (\\hat y_{ic} - y_{ic})^2}}
                   {\\sqrt{\\sum_i w_i \\sum_{c \\in f} y_{ic}^2} + \\varepsilon}

The training loss is the mean of ``e_{b,f}`` over samples and fields, so a sample counts the
same whatever its number of points, and every field counts the same whatever its scale.
With ``w_i = 1`` this is the discrete relative L2 error; with surface/volume quadrature
weights it approximates the continuous one (independent of the mesh density).

Shapes
------
pred, target : (ΣQ, C) float
batch        : (ΣQ,) long, sample index of each query point
weights      : (ΣQ,) float, (ΣQ, F) per-field weights (e.g. zero off a field's query set), or None
widths       : list of channel counts per field, summing to C
returns      : (B, F) per-sample, per-field relative errors
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ..errors import ShapeError

__all__ = ["relative_l2", "relative_l2_loss", "coefficient_errors", "field_columns"]


def relative_l2(
    pred: Tensor,
    target: Tensor,
    batch: Tensor,
    num_samples: int,
    widths: Optional[Sequence[int]] = None,
    weights: Optional[Tensor] = None,
    eps: float = 1e-12,
    reduce: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tensor:
    """Per-sample, per-field relative L2 error, shape (B, F). See the module docstring.

    ``reduce`` (optional) maps the stacked sums ``(2, B, F)`` (numerator, denominator) before
    the roots: with a sample's queries split across ranks (domain parallelism), a
    differentiable all-reduce over those ranks gives every rank the whole sample's error."""
    if pred.shape != target.shape:
        raise ShapeError(f"relative_l2: prediction has shape {tuple(pred.shape)}, target {tuple(target.shape)}")
    if pred.dim() == 1:
        pred, target = pred[:, None], target[:, None]
    c = pred.shape[1]
    widths = [c] if widths is None else [int(w) for w in widths]
    if sum(widths) != c:
        raise ShapeError(f"relative_l2: field widths {widths} sum to {sum(widths)}, prediction has {c} channels")
    if batch.shape[0] != pred.shape[0]:
        raise ShapeError(f"relative_l2: batch has {batch.shape[0]} entries, prediction {pred.shape[0]} rows")
    pred = pred.float()
    target = target.float()
    # field membership matrix (C, F): sums channels of each field
    fid = torch.repeat_interleave(torch.arange(len(widths), device=pred.device), torch.as_tensor(widths, device=pred.device))
    member = torch.nn.functional.one_hot(fid, len(widths)).to(pred.dtype)
    d2 = (pred - target).square() @ member  # (ΣQ, F)
    t2 = target.square() @ member
    if weights is not None:
        w = weights.to(pred.dtype)
        w = w[:, None] if w.dim() == 1 else w  # (ΣQ, 1) or per field (ΣQ, F)
        d2, t2 = d2 * w, t2 * w
    num = torch.zeros(num_samples, len(widths), dtype=pred.dtype, device=pred.device).index_add_(0, batch, d2)
    den = torch.zeros_like(num).index_add_(0, batch, t2)
    if reduce is not None:
        num, den = reduce(torch.stack([num, den]))
    # eps² inside the root keeps the gradient finite when a prediction is exact
    return (num + eps * eps).sqrt() / (den.sqrt() + eps)


def field_columns(names: Sequence[str], widths: Sequence[int]) -> dict:
    """``{name: slice}``: the columns of each field in a (ΣQ, ΣC) array of the fields
    ``names`` side by side, ``widths`` channels each."""
    cols, c0 = {}, 0
    for n, c in zip(names, widths):
        cols[n] = slice(c0, c0 + int(c))
        c0 += int(c)
    return cols


def relative_l2_loss(pred, target, batch, num_samples, widths=None, weights=None) -> Tensor:
    """Scalar training loss: the mean over samples and fields of :func:`relative_l2`."""
    return relative_l2(pred, target, batch, num_samples, widths, weights).mean()


def coefficient_errors(dp: Tensor, op_p: Tensor, batch: Tensor, num_samples: int, dtau: Optional[Tensor] = None,
                       op_tau: Optional[Tensor] = None) -> Tensor:
    """Per-sample errors of integrated coefficients, (B, K): the coefficient operator rows
    (:func:`geoop.physics.coefficient_weights`, stored per query) applied to the errors of the
    surface fields in physical units,

    .. math:: \\Delta c_{bk} = \\sum_{i \\in b} P_{ik}\\,\\Delta p_i + \\sum_{i \\in b} \\mathbf S_{ik} \\cdot \\Delta\\boldsymbol\\tau_i

    (linear, so it is the difference of the coefficients of prediction and truth; rows off
    the force surface have zero operator rows). Differentiable.

    Shapes: dp (ΣQ,) / (ΣQ, 1); op_p (ΣQ, K); dtau (ΣQ, 3); op_tau (ΣQ, 3K); batch (ΣQ,)."""
    dp = dp.reshape(-1, 1).to(op_p.dtype)
    k = op_p.shape[1]
    per = op_p * dp  # (ΣQ, K)
    if dtau is not None:
        if op_tau is None:
            raise ShapeError("coefficient_errors: wall shear errors given without the shear operator rows")
        t = dtau.to(op_tau.dtype)
        t = t if t.shape[1] == 3 else torch.cat([t, t.new_zeros(t.shape[0], 3 - t.shape[1])], 1)
        per = per + (op_tau.reshape(-1, 3, k) * t[:, :, None]).sum(1)
    return torch.zeros(num_samples, k, dtype=per.dtype, device=per.device).index_add_(0, batch, per)
