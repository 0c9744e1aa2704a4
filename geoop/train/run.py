"""Build a training run from a resolved config: datasets, GINO, Trainer (used by
``geoop train``, ``geoop demo`` and the benchmarks), and load a trained model back for
prediction (``geoop predict``).

The model's channel counts and coordinate dimension are inferred from the first training case
of the data folder (``in_channels`` = total width of the input fields, ``out_channels`` = total
width of the targets, ``coord_dim`` = 2 for flat 2-D cases with ``drop_flat_z``) unless the
``[model]`` section sets them.

A config travels the data path once (:func:`build_run`): :func:`open_cases` discovers and
splits the cases (:class:`~geoop.data.cases.CaseIndex`) and gives the one
:class:`~geoop.data.folder.CaseReader` every dataset of the run shares; the first training case
is read by it to size the model and stays decoded for the training dataset, which reads every
other case once; the validation dataset reuses the index and the reader.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from ..errors import CheckpointError, ConfigError
from ..models.features import LatentSDF  # noqa: F401  (moved to the model layer; kept importable here)
from .checkpoint import load_checkpoint, load_model_state
from .distributed import DistInfo
from .trainer import Trainer

__all__ = ["LatentSDF", "TrainingRun", "build_run", "data_kwargs", "infer_model_shape", "input_fields", "model_config",
           "model_inputs", "open_cases", "load_trained", "TrainedModel"]

log = logging.getLogger(__name__)

_OWN_DATA_KEYS = ("folder", "inputs", "targets", "train_split", "val_split", "latent_sdf", "metrics", "metrics_reference")


def data_kwargs(config: Mapping) -> dict:
    """The ``[data]`` keys that are MeshFolderDataset parameters."""
    return {k: v for k, v in config["data"].items() if k not in _OWN_DATA_KEYS}


def open_cases(config: Mapping, inputs, kw: Optional[Mapping] = None):
    """The :class:`~geoop.data.folder.CaseReader` of a run's data (discovery and split done,
    no case read): what every dataset of the run shares (``MeshFolderDataset(..., reader=)``).
    ``kw``: the dataset keywords (default :func:`data_kwargs` with the run's seed)."""
    from ..data.folder import MeshFolderDataset

    d = config["data"]
    kw = dict(data_kwargs(config) if kw is None else kw)
    kw.setdefault("seed", int(config.get("seed", 0)))
    targets = [] if kw.get("queries") is not None else d["targets"]
    return MeshFolderDataset.open_cases(d["folder"], inputs=list(inputs), targets=targets, split=d.get("train_split", "train"),
                                        **kw)


def _first_case_widths(config: Mapping, inputs, reader=None) -> tuple[dict, int, int]:
    """Widths of the input fields ``inputs`` and total target width on the first training case
    (the first case when the training split has none), and the coordinate dimension of the
    prepared points. The case is read once by ``reader`` (:func:`open_cases`) and stays in its
    memory cache for the training dataset (a packed store: from its metadata, no rows read)."""
    from ..errors import GeoopError

    d = config["data"]
    reader = open_cases(config, inputs) if reader is None else reader
    index = reader.index
    cases = index.cases(d.get("train_split", "train")) or index.cases("all")
    if not cases:
        raise ConfigError(f"data.folder {d['folder']}: no case found")
    skip = reader.settings.get("on_error") == "skip"
    for case in cases:
        try:
            shape = reader.describe(case)
            break
        except GeoopError:  # the reader's error names the file, the field and what the file holds
            if skip and case != cases[-1]:
                continue  # the dataset leaves it out too
            raise
    targets = list(reader.settings.get("targets") or d["targets"])
    missing = [n for n in [*inputs, *targets] if n not in shape.widths]
    if missing:
        raise ConfigError(f"data.folder {d['folder']}: the reader given was opened for the fields "
                          f"{sorted(shape.widths)}, not {missing}")
    coord = 2 if shape.dim == 2 and (data_kwargs(config).get("drop_flat_z") or shape.cols == 2) else 3
    return {n: shape.widths[n] for n in inputs}, sum(shape.widths[n] for n in targets), coord


def infer_model_shape(config: Mapping, reader=None) -> dict:
    """``in_channels``, ``out_channels``, ``coord_dim`` from the first case of the folder."""
    ins, out, coord = _first_case_widths(config, config["data"]["inputs"], reader)
    return {"in_channels": sum(ins.values()), "out_channels": out, "coord_dim": coord}


def input_fields(model_cfg: Mapping, data_inputs) -> list:
    """The point fields a run reads: ``data.inputs`` and the fields named in the model's
    ``encoder.inputs``."""
    from ..models.features import parse_point_feature

    enc = model_cfg.get("encoder") if isinstance(model_cfg.get("encoder"), Mapping) else {}
    named = [f.name for f in map(parse_point_feature, enc.get("inputs", ()) or ()) if f.kind == "field"]
    return list(dict.fromkeys([*data_inputs, *named]))


def model_inputs(config: Mapping) -> list:
    """The point fields a run's datasets read (:func:`input_fields` of the ``[model]`` section;
    ``data.inputs`` for a flat one)."""
    from ..models.config import LEGACY_KEYS

    m, d = config["model"], config["data"]
    return list(d["inputs"]) if any(k in LEGACY_KEYS for k in m) else input_fields(m, d["inputs"])


def model_config(config: Mapping, reader=None) -> dict:
    """The GINO config of a run: the ``[model]`` section (nested, see
    :mod:`geoop.models.config`) with ``out_channels``/``coord_dim`` from the first case
    unless given, ``data.latent_sdf`` as the latent feature ``"sdf"``, and the point inputs by
    name: ``[model.encoder] inputs`` when given, else ``data.inputs`` (a field of C > 1
    components as ``name[0:C]``). A flat (deprecated) ``[model]`` section keeps the old
    meaning: ``in_channels`` is the width of ``data.inputs``, passed by the trainer. ``reader``:
    the run's :func:`open_cases` (its inputs must be :func:`model_inputs`), so the first case
    read here is the training dataset's."""
    from ..models.config import LEGACY_KEYS, latent_spec

    m = dict(config["model"])
    d = config["data"]
    flat = any(k in LEGACY_KEYS for k in m)
    ins, out, coord = _first_case_widths(config, model_inputs(config), reader)
    shape = {"out_channels": out, "coord_dim": coord}
    if flat:
        shape["in_channels"] = sum(ins[n] for n in d["inputs"])
        if d.get("latent_sdf"):
            shape["latent_channels"] = 1
        return {**shape, **m}
    if d.get("latent_sdf"):
        lat = m.get("latent")
        lat = dict(lat) if isinstance(lat, Mapping) and lat.get("kind") == "nested" else latent_spec(lat).to_dict()
        lat["features"] = list(dict.fromkeys([*lat.get("features", []), "sdf"]))
        m["latent"] = lat
    enc = dict(m.get("encoder") or {})
    if not enc.get("inputs") and d["inputs"]:
        enc["inputs"] = [n if ins[n] == 1 else f"{n}[0:{ins[n]}]" for n in d["inputs"]]
        m["encoder"] = enc
    return {**shape, **m}


def queries_outside(dataset, model) -> tuple[int, int]:
    """(query points of ``dataset`` outside ``model``'s box latent window, all query points),
    in the prepared coordinates (the dataset's preprocessor transform); (0, 0) for a sphere.
    The rule of :func:`geoop.models.extrapolation.outside_window`, counted by the dataset
    (``queries_outside``: a packed store from its bounds, chunk by chunk)."""
    if getattr(model, "latent", None) != "box":
        return 0, 0
    return dataset.queries_outside(model.domain)


@dataclass
class TrainingRun:
    model: torch.nn.Module
    train_data: Any
    val_data: Any
    trainer: Trainer
    config: dict


def build_run(config: Mapping, dist_info: Optional[DistInfo] = None, progress: Optional[bool] = None) -> TrainingRun:
    """Datasets (normalisation fitted on the training split), GINO and Trainer from a
    resolved config (see :mod:`geoop.train.config`)."""
    from ..data.folder import MeshFolderDataset
    from ..models.nested import model_from_config

    config = dict(config)
    d = config["data"]
    kw = data_kwargs(config)
    kw.setdefault("seed", int(config["seed"]))
    lo = config.get("loss") or {}
    area = lo.get("surface_weighting") == "area"
    targets = d["targets"]
    if kw.get("queries") is not None:  # each set's targets; [loss] surface_weighting for the sets that name none
        targets = []
        kw["queries"] = [{**q, "weighting": q.get("weighting") or ("surface" if area else "points")} for q in kw["queries"]]
    coef = None
    if lo.get("coefficients"):
        from .metrics import CoefficientMetrics

        ref = dict(d.get("metrics_reference") or {})
        names = list(lo["coefficients"])
        cm = CoefficientMetrics(names, ref, d["folder"], d["targets"])
        kw["forces"] = {"field": cm.field, "wall_shear": cm.shear, "names": names, "reference": cm.case_reference}
        coef = {"weights": dict(lo["coefficients"]), "names": names, "field": cm.field, "wall_shear": cm.shear}
    # the data path, once: cases discovered and split (CaseIndex), one reader for every dataset; the
    # first training case, read to size the model, stays decoded for the training dataset
    reader = open_cases(config, model_inputs(config), kw)
    mcfg = model_config(config, reader)
    from .resources import check_memory, latent_plan
    from .trainer import resolve_device

    check_memory(latent_plan(mcfg), "geoop train [model]", resolve_device(config.get("device"), dist_info),
                 batch_size=int(config["optim"]["batch_size"]), training=True)  # before the grid is allocated
    torch.manual_seed(int(config["seed"]))
    model = model_from_config(mcfg)
    # a flat (deprecated) model section takes the SDF as a hand-given latent channel
    neighbors = LatentSDF(model) if d.get("latent_sdf") and not model.latent_feature_names else model.precompute
    # the model takes its inputs by name (model_config); a flat model section gets x from the trainer
    by_name = bool(model.point_inputs) or not d["inputs"]
    inputs = input_fields(mcfg, d["inputs"])
    if inputs != reader.settings["inputs"]:  # the model names fields the config's [model] did not: read afresh
        reader = None
    kw["reader"] = reader
    train = MeshFolderDataset(d["folder"], inputs=inputs, targets=targets, split=d["train_split"], neighbors=neighbors, **kw)
    out, total = queries_outside(train, model)
    if out:
        log.warning("%d of %d training query points (%.1f %%) lie outside the latent window %s: their predictions "
                    "extrapolate (geoop data check CONFIG shows the window in file units)", out, total,
                    100.0 * out / total, model.domain)
    val = None
    if d.get("val_split") == "test":
        log.warning("data.val_split is 'test': validation and best.pt use the test cases; give validation cases "
                    "(a 'val' split, or data.val_fraction) and set val_split = 'val' to keep the test cases unseen")
    if d.get("val_split"):
        # the same reader: the cases are not discovered again. Validation sees every point of
        # its cases (no subsample): its errors are not sampling noise, and coefficient metrics
        # integrate the whole predicted surface
        kv = {**kw, "normalize": train.normalizers, "subsample": None}
        val = MeshFolderDataset(d["folder"], inputs=inputs, targets=targets, split=d["val_split"], neighbors=neighbors, **kv)
    from .metrics import CoefficientMetrics

    metrics = CoefficientMetrics.from_data_config(d) if val is not None else None
    trainer = Trainer.from_config(
        model, train, config, val_data=val, normalizers=train.normalizers, data_normalized=True, dist_info=dist_info,
        inputs=[] if by_name else d["inputs"],
        precompute=False, progress=progress, preprocessor=train.preprocessor, metrics=metrics, coefficient_loss=coef,
        **({"weighted_loss": True} if area and not train.query_sets else {}),
        extra_state={"data": {"dim": mcfg["coord_dim"], "geometry_normalization": kw.get("geometry_normalization", "dataset"),
                              "isotropic": kw.get("isotropic", True), "margin": kw.get("margin", 0.0),
                              "latent_sdf": bool(d.get("latent_sdf")),
                              # the split trained on, so `geoop evaluate` scores the same test cases
                              # when the folder itself records none (a seeded split)
                              "split": _split_used(train)}},
    )
    return TrainingRun(model, train, val, trainer, config)


def _split_used(train) -> Optional[dict]:
    """``{case: "train"|"val"|"test"}`` of the run's data (None when the dataset has no case
    index, e.g. a packed store)."""
    index = getattr(getattr(train, "reader", None), "index", None)
    split_of = getattr(index, "split_of", None)
    return dict(split_of) if split_of else None


@dataclass
class TrainedModel:
    """A trained model with what is needed to use it on new files."""

    model: torch.nn.Module
    normalizers: Any  # DatasetNormalizers
    inputs: list
    targets: list
    config: dict
    data: dict  # dim, geometry_normalization, isotropic, margin
    checkpoint: str
    preprocessor: Any = None  # geoop.data.preprocess.Preprocessor


def load_trained(path, map_location="cpu") -> TrainedModel:
    """Rebuild GINO from a checkpoint's ``model_config`` and load its weights."""
    from ..data.normalize import DatasetNormalizers
    from ..data.preprocess import Preprocessor
    from ..models.nested import model_from_config

    state = load_checkpoint(path, map_location=map_location)
    mc = state.get("model_config") or {}
    if not mc:
        raise CheckpointError(f"{path}: the checkpoint has no model_config; it was not written by geoop train")
    from .resources import check_memory, latent_plan

    check_memory(latent_plan(mc), f"checkpoint {path}", map_location, batch_size=1, training=False)
    bad = [k for k, v in state["model"].items() if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite weights ({len(bad)} tensors, e.g. {bad[0]!r}): it is "
                              "the state of a diverged run and would predict NaN; use an earlier checkpoint")
    model = model_from_config(dict(mc))
    load_model_state(model, state["model"], str(path))
    model.eval()
    norm = DatasetNormalizers.from_state_dict(state["normalizers"]) if state.get("normalizers") else None
    extra = state.get("extra") or {}
    data = dict(extra.get("data") or {"dim": mc.get("coord_dim", 3), "geometry_normalization": "none"})
    inputs, targets = list(state.get("inputs", [])), list(state.get("targets", []))
    if state.get("preprocessor"):
        pre = Preprocessor.from_state_dict(state["preprocessor"])
    else:  # a checkpoint written before the preprocessor was stored: rebuild it from its parts
        pre = Preprocessor(inputs, targets, data.get("geometry_normalization", "none"), bool(data.get("isotropic", True)),
                           float(data.get("margin", 0.0)), int(data.get("dim", mc.get("coord_dim", 3))),
                           norm if norm is not None else DatasetNormalizers())
    return TrainedModel(model, pre.normalizers, inputs, targets, dict(state.get("config") or {}), data, str(path), pre)
