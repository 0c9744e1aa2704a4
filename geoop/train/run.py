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

from ..errors import CheckpointError, ConfigError, FieldError
from .checkpoint import load_checkpoint, load_model_state
from .distributed import DistInfo
from .trainer import Trainer

__all__ = ["LatentSDF", "TrainingRun", "build_run", "data_kwargs", "infer_model_shape", "load_trained", "TrainedModel"]

log = logging.getLogger(__name__)

_OWN_DATA_KEYS = ("folder", "inputs", "targets", "train_split", "val_split", "latent_sdf", "metrics", "metrics_reference")


class LatentSDF:
    """``neighbors`` callable for datasets: ``model.precompute(sample)`` plus the signed
    distance from the latent grid nodes to the input geometry as ``latent_features``
    (1, *latent_shape) (the GINO paper's geometry encoding on the latent grid)."""

    def __init__(self, model):
        self.model = model

    def cache_key(self) -> dict:
        return {"gino": self.model.cache_key(), "latent_features": "sdf"}

    def features(self, geometry) -> torch.Tensor:
        from ..geometry.sdf import sdf

        nodes = self.model.latent_points().to(geometry.points.dtype)
        return sdf(geometry, nodes).reshape(1, *self.model.latent_shape).to(torch.float32)

    def __call__(self, sample):
        import dataclasses

        out = self.model.precompute(sample)
        return dataclasses.replace(out, latent_features=self.features(sample.geometry))


def data_kwargs(config: Mapping) -> dict:
    """The ``[data]`` keys that are MeshFolderDataset parameters."""
    return {k: v for k, v in config["data"].items() if k not in _OWN_DATA_KEYS}


def infer_model_shape(config: Mapping) -> dict:
    """``in_channels``, ``out_channels``, ``coord_dim`` from the first case of the folder."""
    from ..data.folder import discover_cases
    from ..geometry.io import read

    d = config["data"]
    kw = data_kwargs(config)
    cases, _ = discover_cases(d["folder"], kw.get("input_file"), kw.get("query_file"))
    if not cases:
        raise ConfigError(f"data.folder {d['folder']}: no case found")
    cf = next(iter(cases.values()))
    gin = read(cf.input)
    gq = gin if cf.same_file else read(cf.query)

    def width(g, names, role, path):
        w = 0
        for n in names:
            if n not in g.fields:
                raise FieldError(f"{path}: {role} field {n!r} is missing; available: {sorted(g.fields)}")
            w += int(g.fields[n].shape[1])
        return w

    coord = gin.dim
    if kw.get("drop_flat_z") and gin.dim == 3 and gin.is_2d and gq.is_2d:
        coord = 2
    return {"in_channels": width(gin, d["inputs"], "input", cf.input), "out_channels": width(gq, d["targets"], "target", cf.query), "coord_dim": coord}


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
    from ..models.gino import GINO

    config = dict(config)
    d = config["data"]
    shape = infer_model_shape(config)
    if d.get("latent_sdf"):
        shape["latent_channels"] = 1
    mcfg = {**shape, **config["model"]}
    torch.manual_seed(int(config["seed"]))
    model = GINO.from_config(mcfg)
    neighbors = LatentSDF(model) if d.get("latent_sdf") else model.precompute
    kw = data_kwargs(config)
    kw.setdefault("seed", int(config["seed"]))
    train = MeshFolderDataset(d["folder"], inputs=d["inputs"], targets=d["targets"], split=d["train_split"], neighbors=neighbors, **kw)
    val = None
    if d.get("val_split"):
        kv = {**kw, "normalize": train.normalizers}
        val = MeshFolderDataset(d["folder"], inputs=d["inputs"], targets=d["targets"], split=d["val_split"], neighbors=neighbors, **kv)
    from .metrics import CoefficientMetrics

    metrics = CoefficientMetrics.from_data_config(d) if val is not None else None
    trainer = Trainer.from_config(
        model, train, config, val_data=val, normalizers=train.normalizers, data_normalized=True, dist_info=dist_info,
        precompute=False, progress=progress, metrics=metrics,
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


def load_trained(path, map_location="cpu") -> TrainedModel:
    """Rebuild GINO from a checkpoint's ``model_config`` and load its weights."""
    from ..data.normalize import DatasetNormalizers
    from ..models.gino import GINO

    state = load_checkpoint(path, map_location=map_location)
    mc = state.get("model_config") or {}
    if not mc:
        raise CheckpointError(f"{path}: the checkpoint has no model_config; it was not written by geoop train")
    model = GINO.from_config(dict(mc))
    load_model_state(model, state["model"], str(path))
    model.eval()
    norm = DatasetNormalizers.from_state_dict(state["normalizers"]) if state.get("normalizers") else None
    extra = state.get("extra") or {}
    return TrainedModel(model, norm, list(state.get("inputs", [])), list(state.get("targets", [])), dict(state.get("config") or {}),
                        dict(extra.get("data") or {"dim": mc.get("coord_dim", 3), "geometry_normalization": "none"}), str(path))
