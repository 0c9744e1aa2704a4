"""Run configuration for ``geoop train``: TOML or YAML, validated, resolved to a plain dict.

File layout (TOML shown; YAML with the same nesting works too)::

    seed = 0                 # optional, default 0
    device = "auto"          # optional: "auto" | "cpu" | "cuda" | "cuda:1" ...
    compile = false          # optional: true / "inductor" (torch.compile, dynamic sizes) |
                             # "cuda_graphs" (padded capacity buckets, CUDA only) | false

    [data]
    folder = "data/airfoil"  # required: a folder for geoop.data.MeshFolderDataset
    inputs = []              # input point fields (may be empty)
    targets = ["p"]          # required: target fields
    train_split = "train"
    val_split = "val"        # "" or null: no validation (default "test"; validating on the test
                             # split selects best.pt on it: give a "val" split or data.val_fraction)
    latent_sdf = false       # signed distance to the input geometry on the latent grid
    metrics = ["cd", "cl"]   # optional integrated coefficients on the validation split
    metrics_reference = {field = "p", dynamic_pressure = 1.0, alpha_deg = "manifest:alpha_deg"}
                             # see geoop.train.metrics
    queries = [{name = "surface", file = "{case}_surface.vtp", targets = ["p", "wallShearStress"]},
               {name = "points", file = "{case}_points.vtu", targets = ["p", "U"]}]
                             # several query sets per case instead of query_file / targets:
                             # data.targets become "<set>/<field>" (geoop.data.specs.QuerySetSpec)
    # further keys are passed to MeshFolderDataset (must be among its parameters)

    [model.latent]           # the nested sections of geoop.models.GINO (geoop.models.config):
    shape = [32, 32]         # latent, encoder, blocks, decoder, local, memory
    [model.encoder]
    radius = "1.6 cells"     # or coordinates

    [optim]
    lr = 1e-3
    weight_decay = 1e-4
    epochs = 20              # at most this many epochs
    minutes = 0              # wall-clock budget of training (0: none); the cosine schedule
                             # follows the epochs that fit (Trainer.fit(max_time=))
    batch_size = 4           # per process (global batch = world size x batch_size)
    warmup = 1.0             # epochs of linear warm-up (float)
    min_lr_ratio = 0.0       # cosine decays to lr * min_lr_ratio
    clip = 1.0               # gradient-norm clipping, 0 disables
    amp = "none"             # "none" | "bf16" | "fp16" (fp16 on CUDA only)
    weighted_loss = false    # relative L2 with quadrature weights

    [loss]
    surface_weighting = "points"   # "area": relative L2 on surface query sets weighted by the
                             # vertex areas (a single query file: optim.weighted_loss)
    coefficients = {}        # e.g. {cd = 0.1, cl = 0.1}: + weight * mean |c_pred - c_true| of the
                             # coefficients integrated from the predicted surface p (and
                             # wall shear) with data.metrics_reference (geoop.physics.coefficient_weights)

    [output]
    dir = "runs/airfoil"     # required
    save_best = true
    tensorboard = "runs/airfoil/tb"   # optional TensorBoard event folder (geoop train --tensorboard)
    tensorboard_images_every = 1      # a prediction picture every that many evaluations (0: none)

    [parallel]
    domain = 1               # ranks sharing each batch, each a spatial shard of its samples
                             # (geoop.distributed.DomainParallel); the world size must be a
                             # multiple; DDP over the world_size / domain data groups
    fsdp = false             # shard parameters, gradients and optimizer state over the data
                             # ranks (geoop.train.fsdp, PyTorch FSDP2) instead of DDP replicas

Unknown keys are a :class:`~geoop.errors.ConfigError` listing the valid ones; missing
required keys are named. :func:`resolve_config` returns the complete dict (defaults filled
in) that is stored in checkpoints and written as ``config.json``.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from .. import _strict_json
from ..errors import ConfigError

__all__ = ["DEFAULTS", "REQUIRED", "AMP_MODES", "COMPILE_MODES", "resolve_compile", "load_config_file", "resolve_config",
           "load_config", "resolve_amp", "check_keys", "strict_yaml_load", "strict_json_load"]

#: defaults of every known key, per section (None at top level = scalar key)
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "compile": False,
    "data": {
        "folder": None,
        "inputs": [],
        "targets": None,
        "train_split": "train",
        "val_split": "test",
        "latent_sdf": False,
        "metrics": [],
        "metrics_reference": {},
    },
    "model": {},
    "optim": {
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "epochs": 10,
        "batch_size": 1,
        "warmup": 0.0,
        "min_lr_ratio": 0.0,
        "clip": 1.0,
        "amp": "none",
        "weighted_loss": False,
        "num_workers": 0,
        "minutes": 0.0,
    },
    "loss": {"surface_weighting": "points", "coefficients": {}},
    "output": {"dir": None, "save_best": True, "tensorboard": None, "tensorboard_images_every": 1},
    # domain: ranks sharing one batch of samples, each a spatial shard (geoop.distributed);
    # fsdp: parameters, gradients and optimizer state sharded over the data ranks (geoop.train.fsdp)
    "parallel": {"domain": 1, "fsdp": False},
}

REQUIRED = {"data": ("folder", "targets"), "output": ("dir",)}

AMP_MODES = ("none", "bf16", "fp16")


def resolve_amp(mode: Optional[str], device_type: str) -> Optional["torch.dtype"]:  # noqa: F821
    """The one place that maps the ``amp`` string to an autocast dtype (None = off)."""
    import torch

    mode = "none" if mode in (None, False, "") else str(mode).lower()
    if mode not in AMP_MODES:
        raise ConfigError(f"optim.amp: {mode!r} is unknown; valid: {list(AMP_MODES)}")
    if mode == "none":
        return None
    if mode == "fp16" and device_type != "cuda":
        raise ConfigError("optim.amp: 'fp16' needs a CUDA device (use 'bf16' on CPU)")
    return torch.float16 if mode == "fp16" else torch.bfloat16


COMPILE_MODES = ("none", "inductor", "cuda_graphs")


def resolve_compile(value: Any, what: str = "compile") -> str:
    """The one place that maps the ``compile`` setting to a mode of :data:`COMPILE_MODES`
    (``true`` means ``"inductor"``, ``false``/None ``"none"``)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "inductor"
    key = str(value).lower()
    if key not in COMPILE_MODES:
        raise ConfigError(f"{what}: {value!r} is unknown; valid: true, false or one of {list(COMPILE_MODES)}")
    return key


def check_keys(where: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Unknown keys -> :class:`ConfigError` naming them and listing the valid ones."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {unknown}; valid keys: {valid}")


class _DuplicateKey(ValueError):
    pass


def strict_yaml_load(stream) -> Any:
    """``yaml.safe_load`` that refuses a key repeated in one mapping (PyYAML keeps the last
    one silently); ``<<`` merge keys may still be overridden, as YAML defines."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: PyYAML reports it itself
                continue
            if first is not None:
                raise _DuplicateKey(f"duplicate key {key!r} on line {key_node.start_mark.line + 1} (first on line {first}); "
                                    "each key may appear once in a mapping")
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(stream, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass


def strict_json_load(stream) -> Any:
    """``json.load`` that refuses a key repeated in one object (``json`` keeps the last one)."""
    try:
        return _strict_json.load(stream)
    except _strict_json.DuplicateKeyError as e:
        raise _DuplicateKey(str(e)) from None


def load_config_file(path: Union[str, os.PathLike]) -> dict:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON file into a dict. A key
    repeated in one table/mapping/object is a :class:`ConfigError` in every format (TOML
    forbids it; YAML and JSON readers are made strict)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            with open(path, "rb") as f:
                data = tomllib.load(f)
        elif suffix in (".yaml", ".yml"):
            with open(path) as f:
                data = strict_yaml_load(f) or {}
        elif suffix == ".json":
            with open(path) as f:
                data = strict_json_load(f)
        else:
            raise ConfigError(f"config file {path}: unknown extension {suffix!r}; valid: ['.json', '.toml', '.yaml', '.yml']")
    except ConfigError:
        raise
    except _DuplicateKey as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, JSONDecodeError
        raise ConfigError(f"config file {path} cannot be parsed: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _params(fn: Optional[Callable], skip: Iterable[str] = ()) -> Optional[set]:
    """Keyword parameter names of ``fn`` (a class: of its ``__init__``, which a ``__new__(cls,
    *args, **kwargs)`` would hide; None when it takes ``**kwargs`` or is None)."""
    if fn is None:
        return None
    sig = inspect.signature(fn.__init__ if isinstance(fn, type) else fn)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if n not in ("self", *skip) and p.kind != p.VAR_POSITIONAL}


def resolve_config(
    raw: Mapping[str, Any],
    source: str = "config",
    dataset_cls: Optional[Callable] = None,
    model_cls: Optional[Callable] = None,
) -> dict:
    """Validate ``raw`` and fill in defaults. ``dataset_cls``/``model_cls`` (when given) widen
    the valid ``data`` keys to the dataset's parameters and restrict ``model`` keys to the
    model's parameters."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {type(raw).__name__}")
    check_keys(source, raw, DEFAULTS)
    out = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if isinstance(DEFAULTS[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: [{key}] must be a table/mapping, got {type(value).__name__}")
            valid = set(DEFAULTS[key])
            if key == "data":
                extra = _params(dataset_cls, skip=("root", "inputs", "targets", "split", "reader"))
                valid |= extra or set()
                if extra is None and dataset_cls is not None:
                    valid |= set(value)
            if key == "model":
                if hasattr(model_cls, "check_config"):  # GINO: nested sections, checked by their specs
                    model_cls.check_config(value, where=f"{source} [model]")
                    valid = set(value)
                else:
                    valid = _params(model_cls) if model_cls is not None else set(value)
                    valid = set(value) if valid is None else valid
            check_keys(f"{source} [{key}]", value, valid)
            out[key].update(copy.deepcopy(dict(value)))
        else:
            out[key] = value
    d = out["data"]
    if d.get("queries") is not None:  # several query sets: each names its own targets
        from ..data.specs import query_set_specs

        if d.get("targets") not in (None, "", []) or d.get("query_file") is not None:
            raise ConfigError(f"{source}: data.queries gives each set's file and targets; remove data.targets / data.query_file")
        d["targets"] = [f"{q.name}/{t}" for q in query_set_specs(d["queries"]) for t in q.targets]
    lo = out["loss"]
    if lo["surface_weighting"] not in ("points", "area"):
        raise ConfigError(f"{source}: loss.surface_weighting {lo['surface_weighting']!r} is unknown; valid: ['area', 'points']")
    if not isinstance(lo["coefficients"], Mapping) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in lo["coefficients"].values()):
        raise ConfigError(f"{source}: loss.coefficients must map coefficient names to weights >= 0, e.g. {{cd = 0.1}}, "
                          f"got {lo['coefficients']!r}")
    for section, keys in REQUIRED.items():
        missing = [k for k in keys if out[section].get(k) in (None, "")]
        if missing:
            raise ConfigError(f"{source}: missing required key{'s' if len(missing) > 1 else ''} " + ", ".join(f"{section}.{k}" for k in missing))
    d, o = out["data"], out["optim"]
    if isinstance(d["targets"], str):
        d["targets"] = [d["targets"]]
    if isinstance(d["inputs"], str):
        d["inputs"] = [d["inputs"]]
    for k in ("inputs", "targets"):
        if not isinstance(d[k], list) or not all(isinstance(x, str) for x in d[k]):
            raise ConfigError(f"{source}: data.{k} must be a list of field names, got {d[k]!r}")
    if not d["targets"]:
        raise ConfigError(f"{source}: data.targets must name at least one field")
    for k, typ, lo in (("lr", float, 0.0), ("weight_decay", float, 0.0), ("warmup", float, 0.0), ("clip", float, 0.0), ("min_lr_ratio", float, 0.0), ("minutes", float, 0.0)):
        try:
            o[k] = typ(o[k] if o[k] is not None else 0.0)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: optim.{k} must be a number, got {o[k]!r}") from None
        if o[k] < lo:
            raise ConfigError(f"{source}: optim.{k} must be >= {lo}, got {o[k]}")
    for k in ("epochs", "batch_size", "num_workers"):
        if not isinstance(o[k], int) or isinstance(o[k], bool) or o[k] < (0 if k == "num_workers" else 1):
            raise ConfigError(f"{source}: optim.{k} must be a positive integer, got {o[k]!r}")
    o["amp"] = "none" if o["amp"] in (None, False, "") else str(o["amp"]).lower()
    if o["amp"] not in AMP_MODES:
        raise ConfigError(f"{source}: optim.amp {o['amp']!r} is unknown; valid: {list(AMP_MODES)}")
    out["compile"] = resolve_compile(out["compile"], f"{source}: compile")
    dom = out["parallel"]["domain"]
    if isinstance(dom, bool) or not isinstance(dom, int) or dom < 1:
        raise ConfigError(f"{source}: parallel.domain must be an integer >= 1, got {dom!r}")
    if not isinstance(out["parallel"]["fsdp"], bool):
        raise ConfigError(f"{source}: parallel.fsdp must be true or false, got {out['parallel']['fsdp']!r}")
    if not isinstance(out["seed"], int):
        raise ConfigError(f"{source}: seed must be an integer, got {out['seed']!r}")
    out["output"]["dir"] = str(out["output"]["dir"])
    check_values(out, source)
    return out


def check_values(config: Mapping[str, Any], source: str = "config") -> None:
    """A non-finite number anywhere in a config (TOML ``nan``/``inf``, YAML ``.nan``) is a
    :class:`ConfigError` naming its key, when the config is read (before any data is read
    or any model built); the ranges of the model's values are checked by the model's own
    ``check_config`` (``model_cls``), which a NaN would pass (``nan <= x`` is false)."""

    def walk(v: Any, where: str) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{source}: {where} must be finite, got {v}")
        if isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, f"{where}.{k}" if where else str(k))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")

    walk(config, "")


def load_config(path: Union[str, os.PathLike], **kw) -> dict:
    """:func:`load_config_file` then :func:`resolve_config` (relative ``data.folder`` and
    ``output.dir`` are taken relative to the current directory, as on the command line)."""
    return resolve_config(load_config_file(path), source=str(path), **kw)
