"""Build a training run from a resolved config: datasets, GINO, Trainer (used by
``geoop train``, ``geoop demo`` and the benchmarks), and load a trained model back for
prediction (``geoop predict``).

The model's channel counts and coordinate dimension are inferred from the first case of the
data folder (``in_channels`` = total width of the input fields, ``out_channels`` = total width
of the targets, ``coord_dim`` = 2 for flat 2-D cases with ``drop_flat_z``) unless the
``[model]`` section sets them.
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

__all__ = ["LatentSDF", "TrainingRun", "build_run", "data_kwargs", "infer_model_shape", "input_fields", "model_config", "load_trained", "TrainedModel"]

log = logging.getLogger(__name__)

_OWN_DATA_KEYS = ("folder", "inputs", "targets", "train_split", "val_split", "latent_sdf", "metrics", "metrics_reference")


def data_kwargs(config: Mapping) -> dict:
    """The ``[data]`` keys that are MeshFolderDataset parameters."""
    return {k: v for k, v in config["data"].items() if k not in _OWN_DATA_KEYS}


def _first_case_widths(config: Mapping, inputs) -> tuple[dict, int, int]:
    """Widths of the input fields ``inputs`` and total target width on the first case of
    the folder, and the coordinate dimension of the prepared points."""
    from ..data.folder import discover_cases, discover_set_cases
    from ..data.specs import query_set_specs
    from ..geometry.io import read

    d = config["data"]
    kw = data_kwargs(config)
    from ..data.store import is_store

    if is_store(d["folder"]):  # a packed store: the widths are in its metadata
        return _store_widths(d["folder"], inputs, d["targets"], kw.get("drop_flat_z"))
    sets = query_set_specs(kw["queries"]) if kw.get("queries") is not None else None
    if sets:
        cases, _ = discover_set_cases(d["folder"], kw.get("input_file"), [q.file for q in sets])
    else:
        cases, _ = discover_cases(d["folder"], kw.get("input_file"), kw.get("query_file"))
    if not cases:
        raise ConfigError(f"data.folder {d['folder']}: no case found")
    cf = next(iter(cases.values()))
    gin = read(cf.input)
    gq = gin if cf.same_file else read(cf.query)

    def width(g, n, role, path):  # as the dataset will read it (cell data, components "U[0:2]")
        from ..data.preprocess import pick_fields

        return int(pick_fields(g, [n], path, role)[n].shape[1])

    coord = gin.dim
    if kw.get("drop_flat_z") and gin.dim == 3 and gin.is_2d and gq.is_2d:
        coord = 2
    ins = {n: width(gin, n, "input", cf.input) for n in inputs}
    if sets:  # the outputs of every set side by side
        out = 0
        for q, f in zip(sets, cf.sets):
            g = gin if f == cf.input else read(f)
            out += sum(width(g, n, f"target (query set {q.name!r})", f) for n in q.targets)
        return ins, out, coord
    return ins, sum(width(gq, n, "target", cf.query) for n in d["targets"]), coord


def _store_widths(path, inputs, targets, drop_flat_z) -> tuple[dict, int, int]:
    """:func:`_first_case_widths` from the first case of a packed store (no rows read)."""
    from ..data.store import CaseStore

    store = CaseStore(path)
    if not store.cases:
        raise ConfigError(f"data.folder {path}: the store holds no case")
    case = next(iter(store.cases))
    store.check_fields(case, inputs, targets)
    roles = store.info(case).roles
    coord = int(store.info(case).attrs["cols"])
    if drop_flat_z and coord == 3 and roles["input"]["is_2d"] and roles["query"]["is_2d"]:
        coord = 2
    ins = {n: int(roles["input"]["fields"][n][1]) for n in inputs}
    return ins, sum(int(roles["query"]["fields"][n][1]) for n in targets), coord


def infer_model_shape(config: Mapping) -> dict:
    """``in_channels``, ``out_channels``, ``coord_dim`` from the first case of the folder."""
    ins, out, coord = _first_case_widths(config, config["data"]["inputs"])
    return {"in_channels": sum(ins.values()), "out_channels": out, "coord_dim": coord}


def input_fields(model_cfg: Mapping, data_inputs) -> list:
    """The point fields a run reads: ``data.inputs`` and the fields named in the model's
    ``encoder.inputs``."""
    from ..models.features import parse_point_feature

    enc = model_cfg.get("encoder") if isinstance(model_cfg.get("encoder"), Mapping) else {}
    named = [f.name for f in map(parse_point_feature, enc.get("inputs", ()) or ()) if f.kind == "field"]
    return list(dict.fromkeys([*data_inputs, *named]))


def model_config(config: Mapping) -> dict:
    """The GINO config of a run: the ``[model]`` section (nested, see
    :mod:`geoop.models.config`) with ``out_channels``/``coord_dim`` from the first case
    unless given, ``data.latent_sdf`` as the latent feature ``"sdf"``, and the point inputs by
    name: ``[model.encoder] inputs`` when given, else ``data.inputs`` (a field of C > 1
    components as ``name[0:C]``). A flat (deprecated) ``[model]`` section keeps the old
    meaning: ``in_channels`` is the width of ``data.inputs``, passed by the trainer."""
    from ..models.config import LEGACY_KEYS, latent_spec

    m = dict(config["model"])
    d = config["data"]
    flat = any(k in LEGACY_KEYS for k in m)
    ins, out, coord = _first_case_widths(config, input_fields(m, d["inputs"]) if not flat else d["inputs"])
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
    in the prepared coordinates (the dataset's preprocessor transform); (0, 0) for a sphere."""
    from ..models.extrapolation import outside_window

    if getattr(model, "latent", None) != "box":
        return 0, 0
    if hasattr(dataset, "queries_outside"):  # a packed store: from bounds, chunk by chunk
        return dataset.queries_outside(model.domain)
    out = total = 0
    for case in dataset.cases:
        gin, gq = dataset._raw(case)
        q = dataset.preprocessor.transform_for(gin, gq).apply(gq.points.double())
        out, total = out + outside_window(model, q), total + int(q.shape[0])
    return out, total


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
    mcfg = model_config(config)
    from .resources import check_memory, latent_plan
    from .trainer import resolve_device

    check_memory(latent_plan(mcfg), "geoop train [model]", resolve_device(config.get("device"), dist_info),
                 batch_size=int(config["optim"]["batch_size"]), training=True)  # before the grid is allocated
    torch.manual_seed(int(config["seed"]))
    model = model_from_config(mcfg)
    # a flat (deprecated) model section takes the SDF as a hand-given latent channel
    neighbors = LatentSDF(model) if d.get("latent_sdf") and not model.latent_feature_names else model.precompute
    kw = data_kwargs(config)
    kw.setdefault("seed", int(config["seed"]))
    # the model takes its inputs by name (model_config); a flat model section gets x from the trainer
    by_name = bool(model.point_inputs) or not d["inputs"]
    inputs = input_fields(mcfg, d["inputs"])
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
        kv = {**kw, "normalize": train.normalizers}
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
                              "latent_sdf": bool(d.get("latent_sdf"))}},
    )
    return TrainingRun(model, train, val, trainer, config)


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
