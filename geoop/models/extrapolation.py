"""How far a geometry and its queries lie outside what a GINO can see.

A box-latent GINO sees the input geometry through its latent grid: input points farther than
the encoder radius from every latent node contribute nothing, a latent node with an empty
encoder ball carries no information about the geometry, and a query outside the latent
window is answered from the grid's edge (an extrapolation). For prepared (normalised)
points ``P`` (N, d) and queries ``Q`` (M, d) the report is::

    queries_outside = #{q in Q : q not in window} / M
    inputs_outside  = #{p in P : p not in window} / N
    empty_latent    = #{latent nodes with no p within radius_in} / G

with the window the latent ``domain`` (a sphere latent has none: both fractions 0). The rule
is the one training applies to its query points (``geoop.train.run``): a warning as soon as a
fraction of points outside the window exceeds :data:`WARN_FRACTION` (0: any point), or when
no latent node sees any input point (``empty_latent == 1``: the prediction cannot depend on
the geometry).

Shapes
------
points : (N, d)   queries : (M, d)
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

__all__ = ["WARN_FRACTION", "ExtrapolationWarning", "extrapolation_report", "extrapolation_messages", "warn_extrapolation",
           "outside_window"]

#: a fraction of query or input points outside the latent window above this is warned about
WARN_FRACTION = 0.0


class ExtrapolationWarning(UserWarning):
    """A prediction extrapolates: points outside the latent window, or no input seen by the grid."""


def outside_window(model, pts: Tensor) -> int:
    """Number of the (prepared) points ``pts`` (N, d) outside ``model``'s box latent window
    (``model.domain``, both ends included up to 1e-9); the rule of training's warning too."""
    dom = torch.as_tensor(model.domain, dtype=torch.float64, device=pts.device)
    p = pts.double()[:, : dom.shape[1]]
    inside = ((p >= dom[0] - 1e-9) & (p <= dom[1] + 1e-9)).all(1)
    return int((~inside).sum())


def extrapolation_report(model, points: Tensor, queries: Optional[Tensor] = None, empty_balls: bool = True) -> dict:
    """The fractions of the module docstring for a GINO ``model`` (``latent``, ``domain``,
    ``neighbors_in``), in the model's (prepared) coordinates. Returns
    ``{"queries_outside", "inputs_outside", "empty_latent"}`` (floats in [0, 1]; a key is left
    out when the model does not define it) and the counts ``"n_queries"``, ``"n_inputs"``."""
    points = torch.as_tensor(points)
    rep: dict = {"n_inputs": int(points.shape[0])}
    box = getattr(model, "latent", None) == "box" and getattr(model, "domain", None) is not None
    if box:
        rep["inputs_outside"] = outside_window(model, points) / max(points.shape[0], 1)
    if queries is not None:
        queries = torch.as_tensor(queries)
        rep["n_queries"] = int(queries.shape[0])
        if box:
            rep["queries_outside"] = outside_window(model, queries) / max(queries.shape[0], 1)
    if empty_balls and callable(getattr(model, "neighbors_in", None)) and getattr(model, "num_latent", 0):
        with torch.no_grad():
            nb = model.neighbors_in(points.to(model.latent_points().dtype) if points.is_floating_point() else points)
        counts = nb.counts()
        rep["empty_latent"] = float((counts == 0).sum()) / max(int(counts.shape[0]), 1)
    return rep


def extrapolation_messages(report: dict, where: str = "", threshold: float = WARN_FRACTION) -> list[str]:
    """The warnings :func:`extrapolation_report` calls for (empty when none)."""
    out = []
    head = f"{where}: " if where else ""
    for key, what, n in (("queries_outside", "query points", "n_queries"), ("inputs_outside", "input points", "n_inputs")):
        f = report.get(key)
        if f is not None and f > threshold:
            out.append(f"{head}{100 * f:.1f} % of the {report.get(n, '?')} {what} lie outside the latent window: the "
                       "prediction there extrapolates (the geometry is far from the training window)")
    if report.get("empty_latent") == 1.0:
        out.append(f"{head}no latent node has an input point within the encoder radius: the prediction does not "
                   "depend on this geometry (it lies outside what the model sees)")
    return out


def warn_extrapolation(report: dict, where: str = "", threshold: float = WARN_FRACTION) -> list[str]:
    """:func:`extrapolation_messages`, each also issued as an :class:`ExtrapolationWarning`."""
    msgs = extrapolation_messages(report, where, threshold)
    for m in msgs:
        warnings.warn(m, ExtrapolationWarning, stacklevel=3)
    return msgs
