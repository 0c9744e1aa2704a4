"""The training loop: relative L2 per field, AdamW, warm-up + cosine, clipping, AMP, DDP,
atomic per-epoch checkpoints with exact resume, JSON-lines metrics and a loss-curve PNG.

Per step, for a batch of B samples (``GeometryBatch``)::

    x    = concat_f encode_f(batch.fields[f])        f in inputs   (ΣN, C_in) or None
    y    = concat_f encode_f(batch.query_fields[f])  f in targets  (ΣQ, C_out)
    ŷ    = model(batch, x)                                          (ΣQ, C_out)
    loss = mean_{b, f} relative_l2(ŷ, y)_{b, f}      (see geoop.train.losses)

Metrics are the same relative L2 errors computed on *decoded* (physical) values, per field,
averaged over samples and all-reduced over ranks.

Determinism: the sample order of epoch ``e`` is a permutation drawn from ``(seed, e)``
(:class:`torch.utils.data.DistributedSampler` with ``set_epoch``), the RNG states are stored
in every checkpoint and the scheduler is stepped per optimizer step, so a run stopped after
epoch k and resumed ends with the same weights as an uninterrupted run.

Only finite models are kept: a non-finite loss or gradient norm in a step, or non-finite
weights at the end of an epoch, stop training with :class:`~geoop.errors.TrainingDiverged`
(naming the epoch, the step and the last good checkpoint); the diverged state is written, if
anywhere, as ``diverged-e<E>-s<S>.pt`` and never over ``last.pt``/``best.pt``; ``best.pt`` only
takes finite validation metrics. Resuming with changed optimisation settings applies them
and logs each change (:meth:`Trainer.resume`); a changed global batch size or ``seed`` (the
steps and data order of the run) is refused.

Shapes
------
batch.points : (ΣN, d)   batch.queries : (ΣQ, d)   prediction : (ΣQ, ΣC_targets)
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .._atomic import atomic_path, atomic_write_json, atomic_write_text
from ..batch import GeometryBatch, collate
from ..errors import CheckpointError, ConfigError, DistributedError, FieldError, TrainingDiverged
from .checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state, strip_ddp_prefix
from .config import resolve_amp, resolve_compile
from .distributed import DistInfo, all_reduce_sums, barrier
from .losses import field_columns, relative_l2
from .schedule import WarmupCosine

__all__ = ["Trainer", "TrainingInterrupted", "resolve_device"]

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.fit`; the message names the last complete checkpoint."""


def resolve_device(device: Union[str, torch.device, None], dist_info: Optional[DistInfo] = None) -> torch.device:
    """``"auto"``/None -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", dist_info.local_rank if dist_info else 0)
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not valid ({e}); valid: 'auto', 'cpu', 'cuda', 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


class _Precomputed(Dataset):
    """Applies ``fn`` (e.g. ``model.precompute``: neighbourhoods outside forward) to each
    sample once and caches the result in memory."""

    def __init__(self, base, fn: Callable):
        self.base, self.fn, self.cache = base, fn, {}

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i not in self.cache:
            self.cache[i] = self.fn(self.base[i])
        return self.cache[i]


class _Shard(Dataset):
    """Rank ``r`` of ``w`` gets samples ``r, r + w, ...`` (evaluation: no padding)."""

    def __init__(self, base, rank: int, world: int):
        self.base, self.idx = base, list(range(rank, len(base), world))

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.base[self.idx[i]]


def _plain(x: Any) -> Any:
    """Convert metrics / config to JSON-able plain types."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


_FUSED_DEVICES = ("cpu", "cuda")

#: how a checkpoint setting is named in messages
_SETTING_NAMES = {"seed": "seed", "global_batch_size": "global batch size (optim.batch_size x data-parallel ranks)"}


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where every parameter allows it (floating point, on
    the CPU or a CUDA device): one pass over each parameter instead of ~10 elementwise ops
    (several times faster; ``docs/experiments.md``); the per-parameter loop otherwise. Same update rule and state layout either way."""
    params = list(params)
    fused = bool(params) and all(
        p.device.type in _FUSED_DEVICES and p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        for p in params
    )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _compiled_net(model: nn.Module, mode: str, device: torch.device, distributed: bool, amp_dtype) -> nn.Module:
    """The module the training steps call: ``model`` itself, or it compiled
    (``geoop.models.compile_gino``) / replayed as CUDA graphs of padded capacity buckets
    (``geoop.models.RaggedGraphedGINO``), sharing its parameters. Evaluation stays eager."""
    if mode == "none":
        return model
    from ..models import GINO

    if not isinstance(model, GINO):
        raise ConfigError(f"Trainer: compile={mode!r} needs a geoop GINO, got {type(model).__name__}")
    if mode == "inductor":
        from ..models import compile_gino

        return compile_gino(model)
    if device.type != "cuda":
        raise ConfigError(f"Trainer: compile='cuda_graphs' needs a CUDA device, got {device}; use 'inductor' or false")
    if distributed or amp_dtype is not None:
        raise ConfigError("Trainer: compile='cuda_graphs' runs without DDP and without amp; use 'inductor' there")
    from ..models import RaggedGraphedGINO

    return RaggedGraphedGINO(model)


class Trainer:
    """Train a model ``model(batch: GeometryBatch, x) -> (ΣQ, C_out)`` on a dataset of samples.

    Parameters
    ----------
    model : nn.Module; if it has ``precompute(sample) -> sample`` it is applied once per sample.
    train_data : map-style dataset of :class:`~geoop.batch.Sample` (or Geometry).
    targets : target field names (query fields); ``inputs`` : input point field names.
    val_data : optional validation dataset, evaluated after every epoch.
    normalizers : :class:`geoop.data.normalize.DatasetNormalizers` (or a dict of
        ``FieldNormalizer``), fitted on the training data; None = no field normalisation.
    lr, weight_decay : AdamW; ``warmup`` epochs of linear warm-up then cosine decay to
        ``min_lr_ratio * lr`` at ``epochs``; ``clip`` : max gradient norm (0 = off).
    batch_size : samples per process and step. ``amp`` : "none" | "bf16" | "fp16".
    weighted_loss : weight the relative L2 by the query quadrature weights.
    seed : seeds the data order of every epoch (with the epoch number).
    out_dir : where rank 0 writes ``last.pt``, ``best.pt``, ``metrics.jsonl``, ``loss.png``,
        ``config.json``; None = write nothing.
    config : the resolved run configuration (plain dict) stored in checkpoints.
    dist_info : from :func:`geoop.train.distributed.init_distributed`; None = one process.
    progress : None (default): a tqdm bar on rank 0 when stderr is a TTY, and one line per
        epoch on stderr (rank 0); True: both always; False: neither.
    minutes : wall-clock budget of :meth:`fit` (None or 0: none; see ``fit(max_time=)``).
    optim, schedule, checkpointing, precision : the typed groups of settings of
        :mod:`geoop.train.specs` (:class:`~geoop.train.specs.OptimSpec`, ...; dicts work too),
        in place of their flat keywords above; :meth:`specs` returns them.
    preprocessor : the :class:`geoop.data.preprocess.Preprocessor` that made the data (e.g.
        ``MeshFolderDataset.preprocessor``); stored in checkpoints so that prediction
        prepares new files the same way; its normalisers are used when ``normalizers`` is None.
    metrics : optional :class:`geoop.train.metrics.CoefficientMetrics`: integrated
        coefficients (drag, lift...) of the validation items, reported as ``<c>/mae`` and
        ``<c>/r2`` by :meth:`evaluate`.
    tensorboard : folder for TensorBoard event files (rank 0; needs the ``tensorboard``
        package, :mod:`geoop.train.tracking`); ``tensorboard_images_every`` : a prediction
        picture every that many evaluations (0: none).
    domain : ranks that share each batch, each training on a spatial shard of it
        (:class:`geoop.distributed.DomainParallel`; config ``[parallel] domain``). The ranks
        form a data x domain grid (:func:`geoop.distributed.process_grid`): the samples are
        split over the ``world_size / domain`` data groups (DDP in each), the points and
        queries of a batch over the ``domain`` ranks of a domain group, whose loss is the
        whole batch's (its relative-L2 sums all-reduced) and whose gradients are summed.
    data_normalized : the dataset already returns normalised fields (e.g.
        :class:`geoop.data.MeshFolderDataset`): nothing is encoded, and metrics decode both
        prediction and target with ``normalizers``.
    query_sets : names of the query sets when the items carry several (targets
        ``"<set>/<field>"``, the set of each query in the query field
        :data:`geoop.data.preprocess.QUERY_SET_FIELD`; default: the preprocessor's): each
        target's relative L2 is taken over its own set's queries only, weighted by the
        query weights (the set's weighting: 1 per point, or quadrature weights).
    coefficient_loss : ``{"weights": {"cd": 0.1, ...}, "names": [operator order], "field":
        pressure target, "wall_shear": shear target or None}``: adds
        ``sum_k weight_k * mean_b |c_bk(pred) - c_bk(true)|`` to the loss, the coefficients
        integrated from the predicted and true surface fields in physical units with the
        operator rows the items carry (``MeshFolderDataset(forces=...)``,
        :func:`geoop.train.losses.coefficient_errors`; an :class:`~geoop.models.Ensemble`:
        every member's term, averaged over the members); ``evaluate()`` reports
        ``coef_loss/<c>`` (the mean absolute errors).
    compile : training steps through ``torch.compile`` (``True`` / ``"inductor"``:
        :func:`geoop.models.compile_gino`, dynamic sizes) or CUDA graphs of padded capacity
        buckets (``"cuda_graphs"``: :class:`geoop.models.RaggedGraphedGINO`, CUDA only, no
        DDP, no amp); evaluation and prediction stay eager. Default False.
    fsdp : shard parameters, gradients and AdamW state over the data-parallel ranks
        (PyTorch FSDP2, :mod:`geoop.train.fsdp`; config ``[parallel] fsdp``) instead of
        replicating them (DDP): same updates, ``1 / data ranks`` of the memory. With
        ``domain`` the mesh is ``(domain, data)``: sharded over the data ranks, replicated in
        a domain group. Checkpoints stay full single files (gathered on rank 0), loadable on
        any number of ranks. One data rank: nothing to shard, trains unsharded.
        :meth:`evaluate`, :meth:`save` and :meth:`predict` are collectives then (every rank calls them).

    A model with incremental FNO/SFNO blocks (``blocks.incremental``) grows their modes after
    the epochs where its rule fires (:class:`geoop.train.incremental.IncrementalModes`,
    ``self.incremental``); each epoch's metrics record the ``modes`` it trained with.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data,
        *,
        targets: Sequence[str],
        inputs: Sequence[str] = (),
        val_data=None,
        normalizers=None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        epochs: int = 10,
        batch_size: int = 1,
        warmup: float = 0.0,
        min_lr_ratio: float = 0.0,
        clip: float = 1.0,
        amp: Optional[str] = "none",
        weighted_loss: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        out_dir: Union[str, os.PathLike, None] = None,
        save_best: bool = True,
        device: Union[str, torch.device, None] = "cpu",
        config: Optional[Mapping] = None,
        dist_info: Optional[DistInfo] = None,
        progress: Optional[bool] = None,
        precompute: bool = True,
        data_normalized: bool = False,
        collate_fn: Callable = collate,
        extra_state: Optional[Mapping] = None,
        compile: Union[bool, str] = False,
        metrics=None,
        tensorboard: Union[str, os.PathLike, None] = None,
        tensorboard_images_every: int = 1,
        minutes: Optional[float] = None,
        preprocessor=None,
        domain: int = 1,
        optim=None,
        schedule=None,
        checkpointing=None,
        precision=None,
        query_sets: Optional[Sequence[str]] = None,
        coefficient_loss: Optional[Mapping] = None,
        fsdp: bool = False,
    ):
        # typed groups of settings (geoop.train.specs) replace their flat keywords
        flat = dict(lr=lr, weight_decay=weight_decay, clip=clip, batch_size=batch_size, weighted_loss=weighted_loss,
                    num_workers=num_workers, epochs=epochs, warmup=warmup, min_lr_ratio=min_lr_ratio,
                    minutes=minutes, out_dir=out_dir, save_best=save_best, amp=amp)
        if any(g is not None for g in (optim, schedule, checkpointing, precision)):
            from .specs import apply_specs, trainer_defaults

            flat = apply_specs(flat, trainer_defaults(type(self)), optim=optim, schedule=schedule,
                               checkpointing=checkpointing, precision=precision)
            (lr, weight_decay, clip, batch_size, weighted_loss, num_workers, epochs, warmup, min_lr_ratio, minutes,
             out_dir, save_best, amp) = flat.values()
        self._settings = flat
        self.dist = dist_info or DistInfo()
        self.device = resolve_device(device, self.dist)
        self.model = model.to(self.device)
        self.grid = None
        if domain != 1 or not isinstance(domain, int):
            from ..distributed.grid import grid_layout, process_grid

            grid_layout(self.dist.world_size, domain)  # ConfigError before any collective
            self.grid = process_grid(domain)
        self.targets, self.inputs = list(targets), list(inputs)
        if not self.targets:
            raise ConfigError("Trainer: targets must name at least one field")
        #: the data's :class:`geoop.data.preprocess.Preprocessor` (saved in checkpoints), or None
        self.preprocessor = preprocessor
        if normalizers is None and preprocessor is not None:
            normalizers = preprocessor.normalizers
        if normalizers is not None and not hasattr(normalizers, "decode_concat"):
            from ..data.normalize import DatasetNormalizers

            normalizers = DatasetNormalizers(dict(normalizers))
        self.normalizers = normalizers
        self.data_normalized = bool(data_normalized)
        if query_sets is None and preprocessor is not None:
            query_sets = getattr(preprocessor, "set_names", None) or None
        #: query set names (targets "<set>/<field>"), or None
        self.query_sets = list(query_sets) if query_sets else None
        self._target_set = None
        if self.query_sets:
            sets = [t.partition("/")[0] for t in self.targets]
            bad = [t for t, s_ in zip(self.targets, sets) if s_ not in self.query_sets]
            if bad:
                raise ConfigError(f"Trainer: targets {bad} name no query set of {self.query_sets} ('<set>/<field>')")
            self._target_set = torch.tensor([self.query_sets.index(s_) for s_ in sets])
        self.coefficient_loss = None
        if coefficient_loss:
            cl = dict(coefficient_loss)
            lam = dict(cl.get("weights") or {})
            names = list(cl.get("names") or lam)
            if not lam or set(lam) - set(names) or cl.get("field") not in self.targets or (
                    cl.get("wall_shear") is not None and cl["wall_shear"] not in self.targets):
                raise ConfigError(f"Trainer: coefficient_loss needs weights {{coefficient: weight}} over names {names} and a "
                                  f"pressure field (and optional wall_shear) among the targets {self.targets}; got "
                                  f"{ {k: v for k, v in cl.items()} }")
            if domain != 1:
                raise ConfigError("Trainer: coefficient_loss and domain parallelism do not combine yet")
            cl["lambda"] = torch.tensor([float(lam.get(n, 0.0)) for n in names], dtype=torch.float64)
            cl["names"] = names
            self.coefficient_loss = cl
        self.epochs, self.batch_size = int(epochs), int(batch_size)
        self.epochs_cap = self.epochs  # upper bound when a time budget plans the epochs
        self.clip, self.weighted_loss, self.seed = float(clip or 0.0), bool(weighted_loss), int(seed)
        self.amp_dtype = resolve_amp(amp, self.device.type)
        self.amp = "none" if self.amp_dtype is None else str(amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.save_best = bool(save_best)
        self.config = _plain(dict(config or {}))
        self.extra_state = dict(extra_state or {})
        self.progress = progress
        self.collate_fn = collate_fn
        if minutes is not None and (isinstance(minutes, bool) or not float(minutes) >= 0):
            raise ConfigError(f"Trainer: minutes must be a number >= 0 (0 or None: no time budget), got {minutes!r}")
        self.max_time = 60.0 * float(minutes) if minutes else None

        pre = getattr(model, "precompute", None) if precompute else None
        self.train_data = _Precomputed(train_data, pre) if callable(pre) else train_data
        self.val_data = None
        if val_data is not None and len(val_data):
            self.val_data = _Precomputed(val_data, pre) if callable(pre) else val_data
        if len(self.train_data) == 0:
            raise ConfigError("Trainer: the training dataset is empty")

        replicas, data_rank = self.dist.world_size, self.dist.rank
        if self.grid is not None:  # a domain group shares its batches
            replicas, data_rank = self.grid.data, self.grid.data_rank
        self.sampler = DistributedSampler(
            self.train_data, num_replicas=replicas, rank=data_rank, shuffle=True, seed=self.seed, drop_last=False
        )
        self.loader = DataLoader(
            self.train_data, batch_size=self.batch_size, sampler=self.sampler, collate_fn=collate_fn, num_workers=int(num_workers)
        )
        self.steps_per_epoch = len(self.loader)
        self.fsdp = self._shard(fsdp)
        self.optimizer = _adamw(self.model.parameters(), lr=float(lr), weight_decay=float(weight_decay))
        self.scheduler = WarmupCosine(
            self.optimizer,
            total_steps=self.epochs * self.steps_per_epoch,
            warmup_steps=round(float(warmup) * self.steps_per_epoch),
            min_lr_ratio=min_lr_ratio,
        )
        self.domain_parallel = None
        if self.grid is not None:
            from ..distributed.domain import DomainParallel

            self.domain_parallel = DomainParallel(self.model, group=self.grid.domain_group)
        self.compile = resolve_compile(compile, "Trainer compile")
        from .incremental import IncrementalModes

        #: grows incremental FNO/SFNO blocks (None: the model has none)
        self.incremental = IncrementalModes.from_model(self.model)
        if self.incremental is not None and self.compile == "cuda_graphs":
            raise ConfigError("Trainer: compile='cuda_graphs' replays graphs captured at fixed modes; incremental "
                              "blocks (model.blocks.incremental) change them: use 'inductor' or false")
        if self.incremental is not None and self.fsdp and self.incremental.spec.rule == "energy":
            raise ConfigError("Trainer: the incremental rule 'energy' reads the whole spectral weights, which fsdp "
                              "shards: use model.blocks.incremental.rule = 'loss_plateau' with fsdp")
        if self.compile != "none" and self.domain_parallel is not None:
            raise ConfigError(f"Trainer: compile={self.compile!r} and domain parallelism do not combine yet; set one of them")
        if self.compile != "none" and self.fsdp:
            raise ConfigError(f"Trainer: compile={self.compile!r} and fsdp do not combine yet; set one of them")
        inner = self.domain_parallel or _compiled_net(self.model, self.compile, self.device, self.dist.is_distributed,
                                                      self.amp_dtype)
        if self.dist.is_distributed and not self.fsdp and (self.grid is None or self.grid.data > 1):
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            group = None if self.grid is None else self.grid.data_group
            self.net = DistributedDataParallel(inner, device_ids=ids, process_group=group)
        else:
            self.net = inner
        self.epoch = 0  # completed epochs
        self.history: list[dict] = []
        self.best: Optional[float] = None
        self._good: Optional[tuple] = None  # (path, epoch) of the last finite checkpoint written or resumed
        self.plot_every_s = 10.0
        self._last_plot = -math.inf
        # coefficient metrics (geoop.train.metrics.CoefficientMetrics) and TensorBoard (rank 0)
        self.metrics = metrics
        self.tracker = None
        if tensorboard is not None and self.dist.is_main:
            from .tracking import TensorBoardLogger

            self.tracker = TensorBoardLogger(tensorboard, image_every=tensorboard_images_every)
        self._picture = None

    def _shard(self, fsdp: bool) -> bool:
        """Apply FSDP (:func:`geoop.train.fsdp.shard_model`) when asked and there is more
        than one data-parallel rank; returns whether the model is sharded."""
        if not isinstance(fsdp, bool):
            raise ConfigError(f"Trainer: fsdp must be true or false, got {fsdp!r}")
        domain = self.grid.domain if self.grid is not None else 1
        data = self.dist.world_size // domain
        if not fsdp or data == 1:
            if fsdp:
                log.warning("fsdp: %d data-parallel rank(s) (world size %d, domain %d): nothing to shard, training "
                            "unsharded", data, self.dist.world_size, domain)
            return False
        if self.amp_dtype == torch.float16:
            raise ConfigError("Trainer: fsdp and amp='fp16' (gradient scaling) do not combine yet; use amp='bf16' or 'none'")
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError(f"Trainer: fsdp over {data} data ranks needs an initialised process group (launch with "
                                   "torchrun and call geoop.train.distributed.init_distributed()); there is none")
        from .fsdp import fsdp_mesh, shard_model

        shard_model(self.model, fsdp_mesh(self.dist.world_size, domain, self.device.type), domain_methods=domain > 1)
        return True

    def specs(self) -> dict:
        """The trainer's settings as the typed groups of :mod:`geoop.train.specs`, plain dicts
        (``Trainer(..., **{k: v for k, v in trainer.specs().items()})`` rebuilds them)."""
        from .specs import TRAINER_GROUPS

        s = {**self._settings, "minutes": float(self._settings["minutes"] or 0.0),
             "out_dir": None if self._settings["out_dir"] is None else str(self._settings["out_dir"]),
             "amp": "none" if self._settings["amp"] in (None, False, "") else str(self._settings["amp"]).lower()}
        return {name: cls(**{k: s[k] for k in cls.keys()}).to_dict() for name, cls in TRAINER_GROUPS.items()}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, model: nn.Module, train_data, config: Mapping, **kw) -> "Trainer":
        """Build from a resolved config dict (see :mod:`geoop.train.config`)."""
        o, d = config["optim"], config["data"]
        args = dict(
            targets=d["targets"], inputs=d["inputs"], lr=o["lr"], weight_decay=o["weight_decay"], epochs=o["epochs"],
            batch_size=o["batch_size"], warmup=o["warmup"], min_lr_ratio=o["min_lr_ratio"], clip=o["clip"], amp=o["amp"],
            weighted_loss=o["weighted_loss"], num_workers=o["num_workers"], seed=config["seed"],
            compile=config.get("compile", False),
            out_dir=config["output"]["dir"], save_best=config["output"]["save_best"], device=config["device"], config=config,
            tensorboard=config["output"].get("tensorboard"),
            tensorboard_images_every=config["output"].get("tensorboard_images_every", 1),
            minutes=o.get("minutes"),
            domain=config.get("parallel", {}).get("domain", 1),
            fsdp=config.get("parallel", {}).get("fsdp", False),
        )
        args.update(kw)
        return cls(model, train_data, **args)

    # ------------------------------------------------------------------ data <-> tensors
    def _fields(self, fields: Mapping[str, Tensor], names: Sequence[str], kind: str, encode: bool = True) -> Optional[Tensor]:
        if not names:
            return None
        parts = []
        for n in names:
            if n not in fields:
                raise FieldError(f"Trainer: {kind} field {n!r} is missing from the batch; available: {sorted(fields)}")
            v = fields[n]
            v = v[:, None] if v.dim() == 1 else v
            if encode and not self.data_normalized and self.normalizers is not None and n in self.normalizers:
                v = self.normalizers.encode(n, v)
            parts.append(v.float())
        return torch.cat(parts, dim=1)

    def widths(self, batch: GeometryBatch) -> list[int]:
        return [batch.query_fields[n].shape[1] if batch.query_fields[n].dim() == 2 else 1 for n in self.targets]

    def loss_weights(self, batch: GeometryBatch) -> Optional[Tensor]:
        """Query weights of the relative L2: None (each query the same), (ΣQ,) quadrature
        weights (``weighted_loss``), or with query sets (ΣQ, F): each target's own set's
        weights, zero on the other sets' queries."""
        if self.query_sets is None:
            return batch.query_weights if self.weighted_loss else None
        from ..data.preprocess import QUERY_SET_FIELD

        if QUERY_SET_FIELD not in batch.query_fields:
            raise FieldError(f"Trainer: query sets {self.query_sets} but the batch has no {QUERY_SET_FIELD!r} field "
                             f"(items of MeshFolderDataset(queries=...))")
        mask = self.set_mask(batch)
        w = batch.query_weights if batch.query_weights is not None else torch.ones_like(mask[:, 0])
        return mask * w.float()[:, None]

    def set_mask(self, batch: GeometryBatch) -> Tensor:
        """With query sets: (ΣQ, F) 1 where the query belongs to the target's own set, else 0."""
        from ..data.preprocess import QUERY_SET_FIELD

        sid = batch.query_fields[QUERY_SET_FIELD][:, 0].round().long()
        return (sid[:, None] == self._target_set.to(sid.device)[None, :]).float()

    def coefficient_errors(self, batch: GeometryBatch, pred: Tensor, y: Tensor, widths: Sequence[int],
                           normalized: bool) -> Tensor:
        """(B, K) errors of the integrated coefficients of ``coefficient_loss``, from the
        prediction and target (ΣQ, ΣC) (normalised when ``normalized``: decoded first)."""
        from ..data.preprocess import COEF_P_FIELD, COEF_TAU_FIELD
        from .losses import coefficient_errors

        cl = self.coefficient_loss
        if COEF_P_FIELD not in batch.query_fields:
            raise FieldError(f"Trainer: coefficient_loss needs the coefficient operator rows {COEF_P_FIELD!r} in the "
                             f"batch (MeshFolderDataset(forces=...))")
        cols = field_columns(self.targets, widths)

        def phys(name):
            a, b = pred[:, cols[name]], y[:, cols[name]]
            if normalized and self.normalizers is not None and name in self.normalizers:
                a, b = self.normalizers.decode(name, a), self.normalizers.decode(name, b)
            return a - b

        dtau = phys(cl["wall_shear"]) if cl.get("wall_shear") is not None else None
        return coefficient_errors(phys(cl["field"]), batch.query_fields[COEF_P_FIELD].double(), batch.query_batch,
                                  batch.num_samples, dtau, batch.query_fields[COEF_TAU_FIELD].double())

    def decode(self, pred: Tensor, widths: Sequence[int]) -> Tensor:
        """Normalised prediction (ΣQ, ΣC) -> physical units, field by field."""
        if self.normalizers is None:
            return pred
        out, c0 = [], 0
        for n, c in zip(self.targets, widths):
            p = pred[:, c0 : c0 + c]
            out.append(self.normalizers.decode(n, p) if n in self.normalizers else p)
            c0 += c
        return torch.cat(out, dim=1)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, batch: GeometryBatch, net: Optional[nn.Module] = None) -> Tensor:
        """Normalised prediction for a batch already on the device, (ΣQ, ΣC)."""
        x = self._fields(batch.fields, self.inputs, "input")
        with self._autocast():
            pred = (net or self.net)(batch, x)
        pred = pred.float()
        nq = batch.queries.shape[0]
        if pred.dim() != 2 or pred.shape[0] != nq:
            raise FieldError(f"Trainer: the model returned shape {tuple(pred.shape)}, expected ({nq}, C) for {nq} queries")
        return pred

    def _coefficient_term(self, batch: GeometryBatch, pred: Tensor, y: Tensor, widths: Sequence[int]) -> Tensor:
        """(B,) ``sum_k weight_k |c_bk(pred) - c_bk(true)|`` of ``coefficient_loss`` from the
        normalised prediction and target (ΣQ, ΣC)."""
        dc = self.coefficient_errors(batch, pred, y, widths, normalized=True)
        return (dc.abs() * self.coefficient_loss["lambda"].to(dc)).sum(1)

    def _ensemble_error(self, batch: GeometryBatch, y: Tensor, w: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor]]:
        """(B, F) training error of an :class:`~geoop.models.Ensemble`: the members' relative
        L2 errors (and NLLs, over each target's own query set), averaged over the members;
        and with ``coefficient_loss`` (B,) every member's coefficient term, averaged over the
        members (else None)."""
        if self.domain_parallel is not None or self.dist.world_size > 1:
            raise ConfigError("Trainer: model.ensemble trains in one process (no torchrun / DDP, parallel.domain = 1)")
        x = self._fields(batch.fields, self.inputs, "input")
        widths = self.widths(batch)
        extra = None
        if self.coefficient_loss is not None:
            def extra(p):
                return self._coefficient_term(batch, p.float(), y, widths)
        mask = None if self.query_sets is None else self.set_mask(batch)
        with self._autocast():
            out = self.model.member_losses(batch, x, y, widths, lambda p: relative_l2(
                p.float(), y, batch.query_batch, batch.num_samples, widths, w), extra=extra, mask=mask)
        err, coef = out if extra is not None else (out, None)
        return err.float(), None if coef is None else coef.float()

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, epoch: int) -> dict:
        """One pass over this rank's shard of the training data; returns all-reduced metrics."""
        self.net.train()
        self.sampler.set_epoch(epoch)
        if hasattr(self.train_data, "set_epoch"):  # per-epoch subsampling of datasets
            self.train_data.set_epoch(epoch)
        show = self.progress if self.progress is not None else (self.dist.is_main and sys.stderr.isatty())
        from tqdm.auto import tqdm

        # no tqdm object at all without a bar: tqdm takes a process-shared lock on creation, which a
        # forked process killed at that moment would leave held
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}", leave=False) if show else None
        loss_sum, n_samples, t0 = 0.0, 0, time.perf_counter()
        try:
            dp = self.domain_parallel
            for step, batch in enumerate(self.loader, 1):
                batch = batch.to(self.device)
                if dp is not None:  # this rank's spatial shard of the batch
                    from ..distributed.shard import shard

                    batch = shard(batch, dp.rank, dp.world_size)
                y = self._fields(batch.query_fields, self.targets, "target")
                w = self.loss_weights(batch)
                coef = None  # (B,) the weighted coefficient errors of coefficient_loss
                if getattr(self.model, "is_ensemble", False):  # every member its own loss (geoop.models.ensemble)
                    err, coef = self._ensemble_error(batch, y, w)
                else:
                    pred = self.forward(batch)
                    err = relative_l2(pred, y, batch.query_batch, batch.num_samples, self.widths(batch), w,
                                      reduce=None if dp is None else dp.all_reduce)
                    if self.coefficient_loss is not None:
                        coef = self._coefficient_term(batch, pred, y, self.widths(batch))
                loss = err.mean()
                if coef is not None:
                    loss = loss + coef.mean().float()
                if not torch.isfinite(loss):
                    self._diverged(epoch, step, f"loss {float(loss.detach())}")
                self.optimizer.zero_grad(set_to_none=True)
                # with domain parallelism every rank of the group computed the whole batch's
                # loss: its share of the objective is loss / domain (geoop.distributed.domain);
                # FSDP averages the group's gradients itself (geoop.train.fsdp)
                sync = dp is not None and not self.fsdp
                scaled = loss / dp.world_size if sync else loss
                if self.scaler is not None:
                    self.scaler.scale(scaled).backward()
                    if sync:
                        dp.sync_gradients()
                    self.scaler.unscale_(self.optimizer)
                else:
                    scaled.backward()
                    if sync:
                        dp.sync_gradients()
                # the gradient norm (clipped at ``clip``; a norm only when 0); fp16 loss scaling
                # skips non-finite steps itself
                gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip if self.clip > 0 else math.inf)
                gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm  # FSDP: a DTensor
                if self.scaler is None and not torch.isfinite(gnorm):
                    self._diverged(epoch, step, f"gradient norm {float(gnorm)}")
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.scheduler.step()
                if self.tracker is not None:
                    self.tracker.step(self.scheduler.last_epoch, loss.detach())
                b = batch.num_samples if dp is None or dp.rank == 0 else 0  # a domain group counts its batch once
                loss_sum += float(err.detach().mean(1).sum()) if b else 0.0
                n_samples += b
                dt = time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / max(n_samples, 1):.4f}", sps=f"{n_samples * self.dist.world_size / max(dt, 1e-9):.1f}")
        finally:
            if bar is not None:
                bar.close()
        dt = time.perf_counter() - t0
        s = all_reduce_sums({"loss": loss_sum, "n": n_samples}, self.dist, self._reduce_device)
        return {"train_loss": s["loss"] / max(s["n"], 1), "samples_per_s": s["n"] / max(dt, 1e-9), "lr": self.scheduler.get_last_lr()[0]}

    @property
    def _reduce_device(self):
        return self.device if self.dist.backend == "nccl" else None

    @torch.no_grad()
    def evaluate(self, data=None) -> dict:
        """Relative L2 error per target field in physical units, averaged over the samples of
        ``data`` (default: the validation set), all-reduced over ranks.

        Returns ``{"rel_l2/<field>": float, ..., "rel_l2": mean over fields}``, plus
        ``"<c>/mae"`` and ``"<c>/r2"`` per coefficient with ``metrics``.
        """
        data = self.val_data if data is None else data
        if data is None:
            return {}
        was = self.net.training
        self.model.eval()
        shard = _Shard(data, self.dist.rank, self.dist.world_size)
        loader = DataLoader(shard, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate_fn)
        sums = {f"rel_l2/{n}": 0.0 for n in self.targets}
        if self.coefficient_loss is not None:
            sums.update({f"coef_loss/{c}": 0.0 for c in self.coefficient_loss["names"]})
        count = 0
        if self.metrics is not None:
            self.metrics.reset()
        picture = self.tracker is not None and data is self.val_data and self.tracker.wants_picture()
        # under FSDP every rank must run as many forward passes (each gathers parameters):
        # the largest count is agreed before any of them
        most = self._most_batches(len(loader)) if self.fsdp else 0
        for batch in loader:
            batch = batch.to(self.device)
            y = self._fields(batch.query_fields, self.targets, "target", encode=False)
            widths = self.widths(batch)
            if self.data_normalized:
                y = self.decode(y, widths)
            pred = self.decode(self.forward(batch, net=self.model), widths)
            w = self.loss_weights(batch)
            err = relative_l2(pred, y, batch.query_batch, batch.num_samples, widths, w)
            for j, n in enumerate(self.targets):
                sums[f"rel_l2/{n}"] += float(err[:, j].sum())
            if self.coefficient_loss is not None:
                dc = self.coefficient_errors(batch, pred, y, widths, normalized=False).abs().sum(0)
                for k, c in enumerate(self.coefficient_loss["names"]):
                    sums[f"coef_loss/{c}"] += float(dc[k])
            count += batch.num_samples
            if self.metrics is not None or picture:
                self._per_sample(batch, pred, y, widths, picture)
                picture = False
        if len(loader) < most:  # forward passes on data[0], results dropped
            extra = self.collate_fn([data[0]]).to(self.device)
            for _ in range(most - len(loader)):
                self.forward(extra, net=self.model)
        sums["n"] = count
        coef = {}
        if self.metrics is not None:  # coefficient sums, all-reduced with the field errors
            coef = {f"coef:{k}": v for k, v in self.metrics.sums.items()}
        s = all_reduce_sums({**sums, **coef}, self.dist, self._reduce_device)
        coef = {k[5:]: s.pop(k) for k in list(s) if k.startswith("coef:")}
        n = max(s.pop("n"), 1)
        out = {k: v / n for k, v in s.items()}
        out["rel_l2"] = sum(v for k, v in out.items() if k.startswith("rel_l2/")) / len(self.targets)
        if self.metrics is not None:
            out.update(self.metrics.summary(coef))
        self.model.train(was)
        return out

    def _most_batches(self, mine: int) -> int:
        """The largest number of batches over ranks (one all-reduce)."""
        import torch.distributed as dist

        t = torch.tensor([mine], dtype=torch.long, device=self._reduce_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    def _per_sample(self, batch: GeometryBatch, pred: Tensor, y: Tensor, widths: Sequence[int], picture: bool) -> None:
        """Coefficient metrics of every item of a validation batch (decoded values) and, when
        ``picture``, the TensorBoard picture of its first item."""
        cols = field_columns(self.targets, widths)
        qs, ps, ys = batch.split_queries(batch.queries), batch.split_queries(pred), batch.split_queries(y)
        if picture:
            from .tracking import prediction_picture

            c = cols[self.targets[0]]
            name = batch.meta[0].get("case", "item 0") if batch.meta else "item 0"
            def scalar(v):  # a scalar field as is, a vector field by its magnitude
                return (v[:, c][:, 0] if v[:, c].shape[1] == 1 else v[:, c].norm(dim=1)).cpu().numpy()

            self._picture = prediction_picture(qs[0].cpu().numpy(), scalar(ps[0]), scalar(ys[0]), f"{name}: {self.targets[0]}")
        if self.metrics is not None:
            sets = [None] * len(qs)
            if self.query_sets is not None:  # the metrics' field lives on one query set
                from ..data.preprocess import QUERY_SET_FIELD

                sets = batch.split_queries(batch.query_fields[QUERY_SET_FIELD][:, 0].round().long())
            for meta, q, p_, y_, sid in zip(batch.meta, qs, ps, ys, sets):
                if sid is None:
                    self.metrics.add_sample(meta, q, p_, y_, cols)
                    continue
                i = self.query_sets.index(self.metrics.field.partition("/")[0])
                rows = (sid == i).nonzero()[:, 0]
                self.metrics.add_sample(meta, q[rows], p_[rows], y_[rows], cols, surface_file=meta["query_set_files"][i])

    @torch.no_grad()
    def predict(self, batch: GeometryBatch) -> Tensor:
        """Prediction in physical units for a batch, (ΣQ, ΣC_targets)."""
        self.model.eval()
        batch = batch.to(self.device)
        widths = [self.normalizers[n].channels if self.normalizers is not None and n in self.normalizers else 1 for n in self.targets]
        return self.decode(self.forward(batch, net=self.model), widths)

    # ------------------------------------------------------------------ divergence
    def nonfinite_parameters(self) -> list[str]:
        """Names of the model's parameters and buffers holding NaN or Inf (floating point)."""
        bad = []
        for name, t in [*self.model.named_parameters(), *self.model.named_buffers()]:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(name)
        return bad

    def _diverged(self, epoch: int, step: int, what: str) -> None:
        """Stop training: write the diverged state as ``diverged-e<E>-s<S>.pt`` (never over
        ``last.pt``) and raise :class:`TrainingDiverged` naming the last good checkpoint."""
        where = ""
        # (not under FSDP: gathering the state is a collective, and one rank may diverge alone)
        if self.out_dir is not None and self.dist.is_main and not getattr(self, "fsdp", False):
            path = self.out_dir / f"diverged-e{epoch + 1}-s{step}.pt"
            try:
                save_checkpoint(self.state_dict(), path)
                where = f"; the diverged state is in {path}"
            except Exception as e:  # a failed debugging copy must not hide the divergence
                where = f"; the diverged state could not be written ({e})"
        good = (f"last good checkpoint {self._good[0]} (epoch {self._good[1]})" if self._good is not None
                else "no checkpoint was written before")
        raise TrainingDiverged(
            f"diverged at epoch {epoch + 1} step {step} ({what} non-finite); {good}{where}; lower optim.lr "
            f"(now {float(self._settings['lr']):.3g}), set optim.clip (now {self.clip:g}) or "
            "use amp = \"none\", and resume from the last good checkpoint")

    # ------------------------------------------------------------------ state
    def _run_settings(self) -> dict:
        """The settings a checkpoint records and a resume compares (see :meth:`resume`)."""
        return {"lr": float(self._settings["lr"]),
                "weight_decay": float(self._settings["weight_decay"]), "epochs": int(self.epochs_cap),
                "warmup": float(self._settings["warmup"]), "min_lr_ratio": float(self._settings["min_lr_ratio"]),
                "clip": float(self.clip), "weighted_loss": bool(self.weighted_loss), "amp": self.amp,
                "global_batch_size": int(self.batch_size) * int(self.sampler.num_replicas), "seed": int(self.seed)}

    def state_dict(self) -> dict:
        """Everything a checkpoint holds (plain types; see :mod:`geoop.train.checkpoint`)."""
        mc = getattr(self.model, "config", None)
        if self.fsdp:  # a collective; the full states land on rank 0 (empty elsewhere)
            from .fsdp import full_state

            model_state, optim_state = full_state(self.model, self.optimizer)
        else:
            model_state, optim_state = strip_ddp_prefix(self.model.state_dict()), self.optimizer.state_dict()
        return {
            "epoch": int(self.epoch),
            "model": model_state,
            "model_config": _plain(mc) if isinstance(mc, Mapping) else {},
            "optimizer": optim_state,
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "normalizers": self.normalizers.state_dict() if self.normalizers is not None else {},
            "config": self.config,
            "targets": list(self.targets),
            "inputs": list(self.inputs),
            "rng": rng_state(),
            "metrics": _plain(self.history[-1]) if self.history else {},
            "history": _plain(self.history),
            "best": self.best,
            "settings": self._run_settings(),
            "extra": _plain(self.extra_state),
            "preprocessor": self.preprocessor.state_dict() if self.preprocessor is not None else {},
            "incremental": self.incremental.state_dict() if self.incremental is not None else {},
        }

    def load_state_dict(self, state: Mapping, source: str = "checkpoint") -> None:
        """Restore model, optimizer, scheduler, normalisers, RNG and epoch from ``state``."""
        if self.fsdp:
            from .checkpoint import check_state_dict
            from .fsdp import load_full_state

            check_state_dict(self.model, state["model"], source)
        else:
            load_model_state(self.model, state["model"], source)
        try:
            if self.fsdp:
                load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
            else:
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{source}: optimizer/scheduler state does not match this run: {e}") from e
        if state.get("normalizers") and self.normalizers is not None:
            self.normalizers.load_state_dict(state["normalizers"])
        if self.incremental is not None and state.get("incremental"):
            self.incremental.load_state_dict(state["incremental"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state.get("history", [])]
        self.best = state.get("best")
        if "rng" in state:
            set_rng_state(state["rng"])

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write a checkpoint atomically (call on every rank; only rank 0 writes)."""
        if not self.dist.is_main and not self.fsdp:
            return Path(path)
        state = self.state_dict()  # under FSDP a collective: every rank gathers
        if not self.dist.is_main:
            return Path(path)
        return save_checkpoint(state, path)

    #: settings a resume cannot change: they define the steps and the data order of the run
    #: (the global batch: optim.batch_size x data-parallel ranks; a checkpoint moves between world sizes)
    FIXED_ON_RESUME = ("global_batch_size", "seed")

    def resume(self, path: Union[str, os.PathLike]) -> list[str]:
        """Load a checkpoint written by :meth:`save` (every rank reads it).

        Optimisation settings that differ from the checkpoint's (``lr``, ``weight_decay``,
        ``epochs``, ``warmup``, ``min_lr_ratio``, ``clip``, ``weighted_loss``, ``amp``) are
        applied from the next step on: the learning rate follows this trainer's warm-up +
        cosine schedule at the checkpoint's step count, with this trainer's total steps;
        each change is logged (warning) and returned as ``"lr 0.001 -> 0.0005"`` lines. A
        changed global batch size (``batch_size`` x data-parallel ranks) or ``seed`` is a
        :class:`~geoop.errors.CheckpointError` listing the differences (nothing is loaded)."""
        state = load_checkpoint(path, map_location=self.device)
        old = dict(state.get("settings") or {})
        if not old and isinstance((state.get("config") or {}).get("optim"), Mapping):  # written before "settings"
            o = state["config"]["optim"]
            old = {k: o[k] for k in ("lr", "weight_decay", "warmup", "min_lr_ratio", "clip", "weighted_loss", "amp",
                                     ) if k in o}
            if "seed" in state["config"]:
                old["seed"] = state["config"]["seed"]
        new = self._run_settings()
        changed = {k: (old[k], new[k]) for k in new if k in old and old[k] != new[k]}
        fixed = {k: v for k, v in changed.items() if k in self.FIXED_ON_RESUME}
        if fixed:
            raise CheckpointError(
                f"--resume {path}: settings that define the run's steps and data order changed: "
                + ", ".join(f"{_SETTING_NAMES.get(k, 'optim.' + k)} {a!r} -> {b!r}" for k, (a, b) in fixed.items())
                + "; restore them to continue this run, or start a new run (another output folder, or --overwrite)")
        self.load_state_dict(state, source=str(path))
        self._good = (Path(path), self.epoch)
        if changed:
            self._apply_settings(changed)
        lines = [f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()]  # applied: optimisation settings
        if lines and self.dist.is_main:
            log.warning("resume from %s: settings changed since the checkpoint, applied from epoch %d on: %s",
                        path, self.epoch + 1, ", ".join(f"optim.{x}" for x in lines))
        return lines

    def _apply_settings(self, changed: Mapping[str, tuple]) -> None:
        """Make the loaded optimizer/scheduler state follow this trainer's settings."""
        sch = self.scheduler
        if "lr" in changed:
            sch.base_lrs = [float(self._settings["lr"])] * len(self.optimizer.param_groups)
            for g in self.optimizer.param_groups:
                g["initial_lr"] = float(self._settings["lr"])
        if "weight_decay" in changed:
            for g in self.optimizer.param_groups:
                g["weight_decay"] = float(self._settings["weight_decay"])
        sch.total_steps = max(self.epochs_cap * self.steps_per_epoch, 1)
        sch.warmup_steps = round(float(self._settings["warmup"]) * self.steps_per_epoch)
        sch.min_lr_ratio = float(self._settings["min_lr_ratio"])
        # the rate of the next step: the schedule at the checkpoint's step count
        f = sch.factor(sch.last_epoch)
        for g, base in zip(self.optimizer.param_groups, sch.base_lrs):
            g["lr"] = base * f
        sch._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    # ------------------------------------------------------------------ files
    def _write_files(self, metrics: dict, improved: bool, final: bool) -> None:
        if self.out_dir is None or not (self.dist.is_main or self.fsdp):
            return
        state = self.state_dict()  # under FSDP a collective: every rank gathers, once
        if not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, self.out_dir / "last.pt")
        self._good = (self.out_dir / "last.pt", self.epoch)
        if improved and self.save_best:
            save_checkpoint(state, self.out_dir / "best.pt")
        # the whole history, atomically: a kill never leaves a half line or a repeated epoch
        self._rewrite_metrics()
        # the loss curve at most every ``plot_every_s`` seconds, and after the last epoch
        now = time.perf_counter()
        if final or now - self._last_plot >= self.plot_every_s:
            self._last_plot = now
            try:
                self.plot_losses(self.out_dir / "loss.png")
            except Exception as e:  # a plot failure must not stop training
                log.warning("could not draw the loss curve: %s", e)

    def _rewrite_metrics(self) -> None:
        """After a resume: ``metrics.jsonl`` = the restored history (no duplicate epochs)."""
        if self.out_dir is None or not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "metrics.jsonl"
        atomic_write_text(path, "".join(json.dumps(_plain(h)) + "\n" for h in self.history))

    def write_config(self) -> None:
        """Write the resolved config as ``config.json`` in ``out_dir`` (rank 0, atomically)."""
        if self.out_dir is None or not self.dist.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / "config.json"
        atomic_write_json(path, self.config, sort_keys=True)

    def plot_losses(self, path: Union[str, os.PathLike]) -> Path:
        """Training loss and validation errors per epoch (log scale), Agg, no pyplot state."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        ep = [h["epoch"] for h in self.history]
        ax.plot(ep, [h["train_loss"] for h in self.history], "o-", label="train loss (normalised rel. L2)")
        for k in sorted({k for h in self.history for k in h if k.startswith("val/rel_l2/")}):
            ax.plot(ep, [h.get(k, math.nan) for h in self.history], "s--", label=k.replace("val/", "val "))
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("relative L2")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp)
        return path

    # ------------------------------------------------------------------ loop
    def _plan_epochs(self, budget_end: float, min_epochs: int = 1) -> int:
        """Epochs that fit before ``budget_end`` (``time.perf_counter()`` clock): the completed
        ones plus the remaining time over the mean of the last (up to 3) epoch times, the
        first epoch left out when later ones exist (it also computes neighbourhoods and
        latent features); never more than ``epochs``. The cosine schedule is stretched or
        shrunk to that many epochs (its warm-up is unchanged)."""
        done = self.epoch
        times = [h["time_s"] for h in self.history]
        recent = (times[1:] if len(times) > 1 else times)[-3:]
        per = sum(recent) / len(recent)
        left = budget_end - time.perf_counter()
        planned = max(done, min_epochs, min(self.epochs_cap, done + int(left / max(per, 1e-9))))
        if self.dist.is_distributed:  # every rank must run the same number of epochs
            planned = int(all_reduce_sums({"e": float(planned)}, self.dist, self._reduce_device)["e"] / self.dist.world_size)
        self.epochs = max(planned, done)
        self.scheduler.total_steps = max(self.epochs, 1) * self.steps_per_epoch
        if isinstance(self.config.get("optim"), dict):
            self.config["optim"]["epochs"] = self.epochs
        return self.epochs

    def _epoch_line(self, metrics: dict) -> None:
        """One line per epoch on stderr (rank 0), unless ``progress=False``."""
        if self.progress is False or not self.dist.is_main:
            return
        val = " ".join(f"{k[4:]} {v:.4g}" for k, v in metrics.items() if k.startswith("val/"))
        print(f"epoch {metrics['epoch']}/{self.epochs}: train loss {metrics['train_loss']:.4g}"
              f"{' | val ' + val if val else ''} | lr {metrics['lr']:.3g} | {metrics['time_s']:.1f} s",
              file=sys.stderr, flush=True)

    def fit(self, resume: Union[str, os.PathLike, None] = None, until_epoch: Optional[int] = None,
            max_time: Optional[float] = None, min_epochs: int = 1) -> list[dict]:
        """Train from the current epoch (or from checkpoint ``resume``) up to ``until_epoch``
        (default: ``epochs``); checkpoint after every epoch. Returns the metrics history.

        ``max_time`` (seconds, default: the ``minutes`` budget given at construction): stop
        when the next epoch would not fit in the time left; after every epoch the number of
        epochs is re-estimated (:meth:`_plan_epochs`, at most ``epochs``) and the learning-rate
        schedule follows it, so the cosine ends with the budget. At least ``min_epochs`` run
        (default 1), whatever the budget.

        Raises
        ------
        TrainingInterrupted
            on Ctrl-C; the message names the last complete checkpoint.
        """
        t_start = time.perf_counter()
        if resume is not None:
            self.resume(resume)
            self._rewrite_metrics()
        max_time = self.max_time if max_time is None else (float(max_time) if max_time else None)
        stop = self.epochs if until_epoch is None else min(int(until_epoch), self.epochs)
        self.write_config()
        try:
            while self.epoch < stop:
                e = self.epoch
                t0 = time.perf_counter()
                m = self.train_epoch(e)
                val = self.evaluate() if self.val_data is not None else {}
                metrics = {"epoch": e + 1, **m, **{f"val/{k}": v for k, v in val.items()}, "time_s": time.perf_counter() - t0}
                bad = self.nonfinite_parameters()
                if bad:
                    self._diverged(e, self.steps_per_epoch, f"weights ({len(bad)} tensors, e.g. {bad[0]})")
                if self.incremental is not None:  # the modes this epoch trained with, then maybe grow
                    metrics["modes"] = list(self.incremental.modes)
                    self.incremental.update(m["train_loss"])
                key = float(val.get("rel_l2", m["train_loss"]))
                # only a finite metric can be best (NaN compares false with everything)
                improved = math.isfinite(key) and (self.best is None or not math.isfinite(self.best) or key < self.best)
                if not math.isfinite(key) and self.dist.is_main:
                    log.warning("epoch %d: the %s is %s; best.pt is not updated", e + 1,
                                "validation rel_l2" if "rel_l2" in val else "training loss", key)
                if improved:
                    self.best = key
                self.history.append(metrics)
                self.epoch = e + 1
                if max_time is not None:
                    planned = self._plan_epochs(t_start + max_time, min(int(min_epochs), self.epochs_cap))
                    stop = planned if until_epoch is None else min(int(until_epoch), planned)
                self._write_files(metrics, improved, final=self.epoch >= stop)
                if self.tracker is not None:
                    self.tracker.epoch(self.epoch, metrics, self._picture)
                    self._picture = None
                barrier(self.dist)
                self._epoch_line(metrics)
                log.info("epoch %d: %s", e + 1, {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()})
        except KeyboardInterrupt:
            where = self.out_dir / "last.pt" if self.out_dir is not None else None
            if where is not None and where.exists():
                msg = f"training interrupted during epoch {self.epoch + 1}; the last complete checkpoint is {where} (epoch {self.epoch}); continue with --resume {where}"
            else:
                msg = f"training interrupted during epoch {self.epoch + 1}; no checkpoint was written yet"
            raise TrainingInterrupted(msg) from None
        return self.history
