r"""Calibrated uncertainty of an :class:`~geoop.models.Ensemble`: post-hoc temperature,
calibration metrics, the reliability diagram, and the predicted fields' distribution.

Temperature
-----------
The reported standard deviation is :math:`T_c\,\bar\sigma` per output channel ``c``. With a
Gaussian predictive :math:`\mathcal N(\bar\mu, T^2\bar\sigma^2)` the negative
log-likelihood of residuals :math:`r_i = y_i - \bar\mu_i` over the validation points,
:math:`\sum_i \log T + r_i^2 / (2 T^2 \bar\sigma_i^2)`, is minimal at

.. math::  T_c^2 = \frac1n \sum_i r_i^2 / \bar\sigma_i^2,

fitted on the cases of the validation split only (:func:`fit_temperature`; never the test
cases) and stored in the checkpoint (the model's ``temperature`` buffer, plus a
``calibration`` record) by :func:`calibrate_checkpoint` / ``geoop calibrate``.

Metrics (:func:`calibration_metrics`)
-------------------------------------
* coverage of the central :math:`q` interval :math:`\bar\mu \pm z_q\sigma`,
  :math:`z_q = \Phi^{-1}((1+q)/2)`, for q = 50, 90, 95 % (calibrated: coverage = q);
* the Gaussian CRPS, :math:`\sigma\,[z(2\Phi(z) - 1) + 2\varphi(z) - 1/\sqrt\pi]`,
  :math:`z = r/\sigma` (in the field's units; lower is better);
* Spearman rank correlation of :math:`\sigma` and :math:`|r|` over all points, and over the
  cases of the case-mean :math:`\sigma` (relative to the case's RMS truth) and the case's
  relative L2 error.

Shapes: errors, stds (n,) per field (flattened over points and channels).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DatasetError, GeoopError
from ..models.ensemble import mixture
from .losses import field_columns

__all__ = ["LEVELS", "fit_temperature", "calibrate_checkpoint", "interval_coverage", "gaussian_crps", "spearman",
           "calibration_metrics", "reliability_curve", "reliability_diagram", "ensemble_fields", "member_coefficients",
           "field_temperature"]

#: nominal central-interval levels reported by ``geoop evaluate``
LEVELS = (0.5, 0.9, 0.95)


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 * (1.0 + level)))


def interval_coverage(err: np.ndarray, std: np.ndarray, level: float) -> float:
    """Fraction of points with ``|err| <= z_level * std`` (central Gaussian interval)."""
    err, std = np.abs(np.asarray(err, float)), np.asarray(std, float)
    return float(np.mean(err <= _z(level) * std)) if err.size else math.nan


def gaussian_crps(err: np.ndarray, std: np.ndarray) -> float:
    """Mean CRPS of Gaussians N(0, std^2) against the errors (closed form; std 0: |err|)."""
    from scipy.stats import norm

    err, std = np.asarray(err, float), np.asarray(std, float)
    if not err.size:
        return math.nan
    s = np.maximum(std, 1e-300)
    z = err / s
    crps = s * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    return float(np.mean(np.where(std > 0, crps, np.abs(err))))


def spearman(a, b) -> float:
    """Spearman rank correlation (scipy); NaN for fewer than 3 values or a constant input."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size < 3 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(spearmanr(a, b).statistic)


def reliability_curve(err: np.ndarray, std: np.ndarray, levels: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Nominal levels (default 0.05, 0.10, ..., 0.95, 0.99) and the observed coverage of each."""
    lv = np.asarray(levels if levels is not None else [*np.arange(0.05, 0.951, 0.05), 0.99])
    return lv, np.array([interval_coverage(err, std, float(q)) for q in lv])


def calibration_metrics(fields: Mapping[str, Mapping[str, Sequence[np.ndarray]]]) -> dict:
    """Calibration of every field from its per-case arrays ``{"err": [...], "std": [...],
    "true": [...]}`` (physical units, one (Q, C) array per case). Returns
    ``{field: {"coverage_50": ..., "coverage_90": ..., "coverage_95": ..., "crps": ...,
    "spearman_points": ..., "spearman_cases": ..., "mean_std": ..., "n_points": ...}}``."""
    out = {}
    for name, d in fields.items():
        err = np.concatenate([np.asarray(e, float).ravel() for e in d["err"]])
        std = np.concatenate([np.asarray(s, float).ravel() for s in d["std"]])
        row = {f"coverage_{int(round(100 * q))}": interval_coverage(err, std, q) for q in LEVELS}
        row["crps"] = gaussian_crps(err, std)
        row["spearman_points"] = spearman(std, np.abs(err))
        case_std, case_err = [], []
        for e, s, t in zip(d["err"], d["std"], d["true"]):
            rms = float(np.sqrt(np.mean(np.square(t)))) or 1.0
            case_std.append(float(np.mean(s)) / rms)
            case_err.append(float(np.linalg.norm(e)) / (float(np.linalg.norm(t)) or 1.0))
        row["spearman_cases"] = spearman(case_std, case_err)
        row["mean_std"] = float(np.mean(std))
        row["n_points"] = int(err.size)
        out[name] = row
    return out


def reliability_diagram(fields: Mapping[str, Mapping[str, Sequence[np.ndarray]]], path: Union[str, Path],
                        title: str = "reliability") -> Path:
    """Observed vs nominal coverage of the central intervals, one curve per field (Agg PNG,
    written atomically)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .._atomic import atomic_path

    fig = Figure(figsize=(4.6, 4.4), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for name, d in fields.items():
        err = np.concatenate([np.asarray(e, float).ravel() for e in d["err"]])
        std = np.concatenate([np.asarray(s, float).ravel() for s in d["std"]])
        lv, cov = reliability_curve(err, std)
        ax.plot(lv, cov, "o-", ms=3, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of the central interval")
    ax.set_ylabel("observed coverage")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# ---------------------------------------------------------------------------- prediction
def ensemble_fields(model, normalizers, targets: Sequence[str], geometry, queries: Tensor, x: Optional[Tensor],
                    latent_features: Optional[Tensor], chunk_size: int, dtype) -> tuple[dict, dict, dict]:
    """The fields of an ensemble at ``queries`` in physical units: ``(mean {name: (Q, c)},
    std {name: (Q, c)}, members {name: (K, Q, c)})``; std with the model's temperature,
    decoded with the normaliser's scale (the normalisers are affine)."""
    model.check_std()
    with torch.no_grad():
        out = model.query(geometry, queries, x, chunk_size=chunk_size, latent_features=latent_features, distribution=False)
        mu, var = model.split(out)
    T = model.temperature.to(mu.dtype)
    K = mu.shape[0]
    means, stds, members = {}, {}, {}
    c0 = 0
    for n in targets:
        c = normalizers[n].channels if normalizers is not None and n in normalizers else 1
        sl = slice(c0, c0 + c)
        c0 += c
        m = mu[:, :, sl]
        v = None if var is None else var[:, :, sl]
        if normalizers is not None and n in normalizers:
            dec = torch.stack([normalizers.decode(n, m[k]) for k in range(K)])
            zero = normalizers.decode(n, m.new_zeros((1, c)))
            scale = (normalizers.decode(n, m.new_ones((1, c))) - zero).abs()
        else:
            dec, scale = m, m.new_ones((1, c))
        mean, std = mixture(dec, None if v is None else v * scale.square())
        members[n] = dec.to(dtype)
        means[n] = mean.to(dtype)
        stds[n] = (std * T[sl]).to(dtype)
    return means, stds, members


def field_temperature(model, targets: Sequence[str], members: Mapping[str, Tensor], name: str) -> float:
    """The temperature of field ``name`` (mean over its channels) of an ensemble whose
    targets are ``targets`` with member arrays ``members`` {name: (K, Q, c)}."""
    c0 = 0
    for n in targets:
        c = members[n].shape[2]
        if n == name:
            return float(model.temperature[c0 : c0 + c].double().mean())
        c0 += c
    return 1.0


def member_coefficients(metrics, case: str, surface, points: Tensor, members: Mapping[str, Tensor],
                        targets: Sequence[str], temperature: float = 1.0) -> dict:
    r"""The coefficients of every member's prediction (:meth:`CoefficientMetrics.case_coefficients`):
    ``{"mean": {c: ...}, "std": {c: ...}, "members": {c: [K values]}}``. ``std`` is the
    members' spread times ``temperature`` (the pressure field's): a coefficient is linear in
    the pressure, so scaling the members' deviations from the mean field by :math:`T` scales
    their coefficients' deviations by :math:`T`."""
    K = next(iter(members.values())).shape[0]
    cols = field_columns(targets, [members[n].shape[2] for n in targets])
    per = []
    for k in range(K):
        pred = torch.cat([members[n][k].double() for n in targets], 1)
        pp, _ = metrics.case_coefficients(str(case), surface, points, pred, None, cols)
        per.append(pp)
    names = list(per[0])
    vals = {c: [float(p[c]) for p in per] for c in names}
    return {"mean": {c: float(np.mean(v)) for c, v in vals.items()},
            "std": {c: float(np.std(v)) * float(temperature) for c, v in vals.items()}, "members": vals}


# ---------------------------------------------------------------------------- temperature
def fit_temperature(model, dataset, where: str = "calibration split", targets: Optional[Sequence[str]] = None) -> tuple[Tensor, dict]:
    r"""Per-channel temperature :math:`T_c = \sqrt{\mathrm{mean}_i\, r_i^2/\bar\sigma_i^2}`
    of ``model`` (an Ensemble) on the items of ``dataset`` (``Sample``s with target fields
    on their queries, normalised as the model's outputs; ``targets``: their names, default
    ``dataset.targets``; with query sets, ``dataset.query_sets``, each target
    ``"<set>/<field>"`` is fitted on its own set's queries only). Returns ``(T (C,), info)``; the
    model is not changed. :class:`DatasetError` naming ``where`` when it has no case."""
    from ..batch import GeometryBatch

    if not getattr(model, "is_ensemble", False):
        raise ConfigError(f"calibration: the model is a {type(model).__name__}, not an ensemble ([model] ensemble = K)")
    n_items = len(dataset)
    if n_items == 0:
        raise DatasetError(f"calibration: the {where} has no cases; give validation cases (data.val_split with a "
                           "'val' split or data.val_fraction > 0)")
    from ..data.preprocess import QUERY_SET_FIELD

    targets = list(targets if targets is not None else getattr(dataset, "targets", []))
    sets = [q["name"] for q in (getattr(dataset, "query_sets", None) or [])]
    num = torch.zeros(model.fields_channels, dtype=torch.float64)
    count = torch.zeros(model.fields_channels, dtype=torch.float64)
    n_points = 0
    was = model.training
    model.eval()
    with torch.no_grad():
        for i in range(n_items):
            s = dataset[i]
            batch = GeometryBatch.from_samples([s])
            pr = model.predict(batch, calibrated=False)
            y = torch.cat([batch.query_fields[n] if batch.query_fields[n].dim() == 2 else batch.query_fields[n][:, None]
                           for n in targets], 1).to(pr.mean.dtype)
            if y.shape != pr.mean.shape:
                raise GeoopError(f"calibration: the targets {targets} are {tuple(y.shape)} but the model predicts {tuple(pr.mean.shape)}")
            ratio = (y - pr.mean).square() / pr.std.square().clamp(min=1e-30)
            if sets:  # query sets: each target "<set>/<field>" on its own set's rows only
                sid = batch.query_fields[QUERY_SET_FIELD][:, 0].round().long()
                own = torch.cat([(sid == sets.index(n.partition("/")[0]))[:, None].expand(-1, _width(batch, n))
                                 for n in targets], 1)
                ratio = torch.where(own, ratio, torch.zeros_like(ratio))
                count += own.double().sum(0)
            else:
                count += y.shape[0]
            num += ratio.double().sum(0)
            n_points += y.shape[0]
    model.train(was)
    T = (num / count.clamp(min=1)).sqrt().to(model.temperature.dtype)
    return T, {"cases": n_items, "points": n_points, "temperature": [float(t) for t in T]}


def _width(batch, name: str) -> int:
    v = batch.query_fields[name]
    return v.shape[1] if v.dim() == 2 else 1


def calibrate_checkpoint(path, split: str = "val", out=None, log=print) -> dict:
    """Fit the temperature of an ensemble checkpoint on its ``split`` cases (built as
    ``geoop train`` builds its validation set: the checkpoint's data config and
    normalisers) and write the checkpoint (``out``, default in place, atomically) with the
    model's ``temperature`` and a ``calibration`` record. Returns the record."""
    from ..data.folder import MeshFolderDataset
    from .checkpoint import load_checkpoint, save_checkpoint
    from .run import data_kwargs, input_fields, load_trained

    if split == "test":
        raise ConfigError("calibration: --split test would fit the scale on the cases it is evaluated on; use 'val'")
    trained = load_trained(path)
    model = trained.model
    if not getattr(model, "is_ensemble", False):
        raise ConfigError(f"{path}: the model is not an ensemble ([model] ensemble = K >= 2); nothing to calibrate")
    cfg = trained.config
    if not cfg.get("data"):
        raise ConfigError(f"{path}: the checkpoint has no data config to find the {split!r} cases")
    d = dict(cfg["data"])
    kw = data_kwargs(cfg)
    kw.setdefault("seed", int(cfg.get("seed", 0)))
    kw["normalize"] = trained.normalizers
    kw.pop("subsample", None)  # every query point of a validation case
    inputs = input_fields(cfg.get("model") or {}, d.get("inputs") or [])
    targets = d.get("targets") or []
    if kw.get("queries") is not None:  # several query sets: their targets "<set>/<field>" (as geoop train)
        targets = []
    try:
        ds = MeshFolderDataset(d["folder"], inputs=inputs, targets=targets, split=split, **kw)
    except DatasetError as e:
        raise DatasetError(f"calibration split {split!r} (data.val_split / --split): {e}") from None
    T, info = fit_temperature(model, ds, where=f"calibration split {split!r} (data.val_split / --split) of {d['folder']}")
    state = load_checkpoint(path)
    state["model"] = dict(state["model"])
    state["model"]["temperature"] = T.to(state["model"]["temperature"].dtype)
    info = {"split": split, **info}
    state["calibration"] = info
    state.pop("checksum", None)
    target = Path(out) if out is not None else Path(path)
    save_checkpoint(state, target)
    log(f"calibrated {target}: temperature {['%.3g' % t for t in info['temperature']]} on {info['cases']} {split} cases")
    return info
