"""Normalisers for datasets: per-channel field statistics and the geometric unit-box map.

Field normalisation (per channel c of a field, fitted on the training split only)::

    encode(x)[:, c] = (x[:, c] - mean_c) / std_c
    decode(z)[:, c] = z[:, c] * std_c + mean_c
    std_c = max(sqrt(E[x_c^2] - E[x_c]^2), eps)      (population std, over all points)

Statistics are accumulated in float64 as running sums (count, sum, sum of squares), so
fitting streams over cases without holding them in memory. A constant channel (``U_z = 0``
in a 2-D case) has std 0; channels whose std is below ``eps`` get ``std = 1`` instead (they
are only shifted, never divided by ~0).

Geometric normalisation: :func:`fit_box_transform` maps the union of the bounding boxes of
the training cases into the unit box with one :class:`~geoop.NormalizeTransform`
(``x' = (x - shift) / scale``), built by :meth:`Geometry.normalization` on the two corners.

``state_dict()`` of every class holds only plain tensors (and nested dicts of them), so a
checkpoint loads with ``torch.load(..., weights_only=True)``.

Shapes
------
x      : (N, C) float (a (N,) input is treated as C = 1 and returned as (N,))
mean   : (C,) float64
std    : (C,) float64
bounds : list of ((d,), (d,)) lower / upper corners
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import torch
from torch import Tensor

from ..errors import CheckpointError, FieldError, ShapeError
from ..geometry.geometry import Geometry, NormalizeTransform

__all__ = ["FieldNormalizer", "DatasetNormalizers", "fit_box_transform"]


class FieldNormalizer:
    """Mean / standard deviation per channel of one field; ``encode``/``decode``.

    Parameters
    ----------
    eps : channels whose standard deviation is below ``eps`` are not scaled (std = 1).
    name : field name, used in error messages.
    """

    def __init__(self, eps: float = 1e-8, name: Optional[str] = None):
        self.eps = float(eps)
        self.name = name
        self.count = torch.zeros((), dtype=torch.float64)
        self._sum: Optional[Tensor] = None
        self._sumsq: Optional[Tensor] = None
        self.mean: Optional[Tensor] = None
        self.std: Optional[Tensor] = None

    # ----------------------------------------------------------------- fitting
    def _label(self) -> str:
        return f"FieldNormalizer({self.name!r})" if self.name else "FieldNormalizer"

    @staticmethod
    def _2d(x: Tensor) -> Tensor:
        x = torch.as_tensor(x)
        return x[:, None] if x.dim() == 1 else x

    def update(self, x: Tensor) -> "FieldNormalizer":
        """Add the rows of ``x`` (N, C) to the running statistics (no NaN allowed)."""
        x = self._2d(x).detach().to("cpu", torch.float64)
        if x.dim() != 2:
            raise ShapeError(f"{self._label()}: expected (N, C) values, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ShapeError(f"{self._label()}: values contain NaN/Inf; refusing to fit statistics on them")
        self._begin(x.shape[1], lambda: x.mean(0) if x.shape[0] else torch.zeros(x.shape[1], dtype=torch.float64))
        xs = x - self._shift
        self._sum += xs.sum(0)
        self._sumsq += (xs * xs).sum(0)
        self.count += x.shape[0]
        return self._finish()

    def _begin(self, channels: int, first_shift) -> None:
        """Check a block's channel count against earlier data; for the first block (or the
        first after load_state_dict: start afresh) zero the sums, with ``first_shift()`` (C,)
        as the running shift: sums shifted by the first mean seen keep E[x^2] - E[x]^2
        accurate for large offsets."""
        if self._sum is not None:
            if channels != self._sum.numel():
                raise FieldError(f"{self._label()}: expected {self._sum.numel()} channels (as in earlier data), got {channels}")
            return
        self._sum = torch.zeros(channels, dtype=torch.float64)
        self._sumsq = torch.zeros(channels, dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)
        self._shift = first_shift()

    def update_moments(self, count: int, mean, m2) -> "FieldNormalizer":
        """Add a block of rows given by its moments instead of its values: ``count``, the
        per-channel ``mean`` (C,) and ``m2`` (C,) = sum_i (x_i - mean)^2 (e.g. the per-case
        statistics of a packed store). With the running shift s the block adds
        ``count (mean - s)`` to the shifted sum and ``m2 + count (mean - s)^2`` to the shifted
        sum of squares, the same totals :meth:`update` accumulates from the values."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        m2 = torch.as_tensor(m2, dtype=torch.float64).reshape(-1)
        if int(count) <= 0:
            return self
        if mean.shape != m2.shape or not (torch.isfinite(mean).all() and torch.isfinite(m2).all()):
            raise ShapeError(f"{self._label()}: moments need finite mean and m2 of one shape, got {tuple(mean.shape)}, "
                             f"{tuple(m2.shape)}")
        self._begin(mean.numel(), mean.clone)
        d = mean - self._shift
        self._sum += int(count) * d
        self._sumsq += m2 + int(count) * d * d
        self.count += int(count)
        return self._finish()

    def _finish(self) -> "FieldNormalizer":
        n = float(self.count)
        if n > 0:
            m = self._sum / n
            var = (self._sumsq / n - m * m).clamp_min(0)
            std = var.sqrt()
            self.mean = m + self._shift
            self.std = torch.where(std < self.eps, torch.ones_like(std), std)
        return self

    def fit(self, values: Iterable[Tensor]) -> "FieldNormalizer":
        """Fit on an iterable of (N_i, C) tensors (e.g. one per training case)."""
        for v in values:
            self.update(v)
        if self.mean is None:
            raise ShapeError(f"{self._label()}: fit() got no values")
        return self

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def channels(self) -> int:
        self._check_fitted()
        return int(self.mean.numel())

    def _check_fitted(self):
        if self.mean is None:
            raise ShapeError(f"{self._label()}: not fitted; call fit() or load_state_dict() first")

    # ----------------------------------------------------------------- maps
    def _prep(self, x: Tensor):
        self._check_fitted()
        x = torch.as_tensor(x)
        squeeze = x.dim() == 1
        x2 = x[:, None] if squeeze else x
        if x2.shape[-1] != self.mean.numel():
            raise FieldError(
                f"{self._label()}: expected {self.mean.numel()} channels in the last dimension, "
                f"got shape {tuple(x.shape)}"
            )
        dt = x2.dtype if torch.is_floating_point(x2) else torch.get_default_dtype()
        # computed in float64 (large offsets such as pressures ~1e5 lose digits in float32),
        # returned in the input's dtype
        return x2.double(), self.mean.to(x2.device), self.std.to(x2.device), squeeze, dt

    def encode(self, x: Tensor) -> Tensor:
        """(…, C) physical values -> (…, C) normalised values (a new tensor)."""
        x2, m, s, squeeze, dt = self._prep(x)
        z = ((x2 - m) / s).to(dt)
        return z[:, 0] if squeeze else z

    def decode(self, z: Tensor) -> Tensor:
        """(…, C) normalised values (e.g. a prediction) -> (…, C) physical values."""
        z2, m, s, squeeze, dt = self._prep(z)
        x = (z2 * s + m).to(dt)
        return x[:, 0] if squeeze else x

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        """Plain tensors only: ``mean``, ``std`` (C,) float64, ``count`` () float64, ``eps``."""
        self._check_fitted()
        return {
            "mean": self.mean.clone(),
            "std": self.std.clone(),
            "count": self.count.clone(),
            "eps": torch.tensor(self.eps, dtype=torch.float64),
        }

    def load_state_dict(self, state: Mapping) -> "FieldNormalizer":
        try:
            mean = torch.as_tensor(state["mean"], dtype=torch.float64).reshape(-1)
            std = torch.as_tensor(state["std"], dtype=torch.float64).reshape(-1)
        except KeyError as e:
            raise CheckpointError(f"{self._label()}: state_dict lacks key {e.args[0]!r}; has {sorted(state)}") from None
        if mean.shape != std.shape:
            raise CheckpointError(f"{self._label()}: mean has shape {tuple(mean.shape)} but std {tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise CheckpointError(f"{self._label()}: state_dict has non-finite mean/std or std <= 0")
        self.mean, self.std = mean, std
        self.count = torch.as_tensor(state.get("count", torch.tensor(0.0)), dtype=torch.float64)
        if "eps" in state:
            self.eps = float(state["eps"])
        self._sum = self._sumsq = None  # a loaded normaliser is frozen (update() starts afresh)
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping, name: Optional[str] = None) -> "FieldNormalizer":
        return cls(name=name).load_state_dict(state)

    def __repr__(self) -> str:
        if not self.fitted:
            return f"{self._label()}(unfitted)"
        return f"{self._label()}(channels={self.channels}, count={int(self.count)})"


def fit_box_transform(
    bounds: Sequence[tuple[Tensor, Tensor]], isotropic: bool = True, margin: float = 0.0
) -> NormalizeTransform:
    """One transform mapping the union of the given bounding boxes into ``[0, 1]^d``.

    bounds : list of (lower (d,), upper (d,)) corners, e.g. ``geometry.bounds`` of every
        training case. Semantics of ``isotropic``/``margin`` as in
        :meth:`Geometry.normalization` (flat axes such as z = 0 of 2-D cases stay at 0).
    """
    bounds = list(bounds)
    if not bounds:
        raise ShapeError("fit_box_transform: need at least one bounding box")
    lo = torch.stack([torch.as_tensor(b[0], dtype=torch.float64) for b in bounds]).min(0).values
    hi = torch.stack([torch.as_tensor(b[1], dtype=torch.float64) for b in bounds]).max(0).values
    return Geometry(torch.stack([lo, hi]), validate=True).normalization(isotropic=isotropic, margin=margin)


class DatasetNormalizers:
    """The normalisation state of a dataset: a :class:`FieldNormalizer` per field name and
    an optional dataset-wide geometric transform (None when geometries are normalised per
    case, or not at all).

    ``encode(name, x)`` / ``decode(name, z)`` dispatch on the field name.
    """

    def __init__(self, fields: Optional[Mapping[str, FieldNormalizer]] = None,
                 transform: Optional[NormalizeTransform] = None):
        self.fields: dict[str, FieldNormalizer] = dict(fields or {})
        self.transform = transform

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def __getitem__(self, name: str) -> FieldNormalizer:
        if name not in self.fields:
            raise FieldError(f"DatasetNormalizers: no normaliser for field {name!r}; have {sorted(self.fields)}")
        return self.fields[name]

    def encode(self, name: str, x: Tensor) -> Tensor:
        return self[name].encode(x)

    def decode(self, name: str, z: Tensor) -> Tensor:
        return self[name].decode(z)

    def decode_concat(self, names: Sequence[str], z: Tensor) -> Tensor:
        """Decode a (N, ΣC) tensor whose channels are the named fields side by side (the
        layout of ``GeometryBatch.y(names)``)."""
        out, c0 = [], 0
        for n in names:
            c = self[n].channels
            out.append(self[n].decode(z[:, c0 : c0 + c]))
            c0 += c
        if c0 != z.shape[-1]:
            raise FieldError(f"DatasetNormalizers.decode_concat: fields {list(names)} have {c0} channels, got {z.shape[-1]}")
        return torch.cat(out, dim=-1)

    def state_dict(self) -> dict:
        """``{"fields": {name: FieldNormalizer.state_dict()}, "transform": {shift, scale} or {}}``."""
        return {
            "fields": {k: v.state_dict() for k, v in self.fields.items()},
            "transform": {} if self.transform is None else self.transform.state_dict(),
        }

    def load_state_dict(self, state: Mapping) -> "DatasetNormalizers":
        if "fields" not in state:
            raise CheckpointError(f"DatasetNormalizers: state_dict lacks 'fields'; has {sorted(state)}")
        self.fields = {k: FieldNormalizer.from_state_dict(v, name=k) for k, v in state["fields"].items()}
        t = state.get("transform") or {}
        self.transform = NormalizeTransform.from_state_dict(t) if t else None
        return self

    @classmethod
    def from_state_dict(cls, state: Mapping) -> "DatasetNormalizers":
        return cls().load_state_dict(state)

    def __repr__(self) -> str:
        return f"DatasetNormalizers(fields={sorted(self.fields)}, transform={'yes' if self.transform else 'per case/none'})"
