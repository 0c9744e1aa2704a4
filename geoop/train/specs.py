"""Typed groups of :class:`~geoop.train.Trainer` settings, as :mod:`geoop.models.config` does
for the model: each validates itself, lists the valid keys in its errors and round-trips
through ``to_dict``/``from_dict`` (TOML, YAML).

==================  ====================================================================
``optim=``          :class:`OptimSpec`: AdamW ``lr``/``weight_decay``, gradient ``clip``,
                    ``batch_size``, ``weighted_loss``, DataLoader ``num_workers``
``schedule=``       :class:`ScheduleSpec`: ``epochs`` (at most, with a budget), ``warmup``
                    epochs, cosine to ``min_lr_ratio * lr``, wall-clock ``minutes``
``checkpointing=``  :class:`CheckpointSpec`: ``out_dir``, ``save_best``
``precision=``      :class:`PrecisionSpec`: ``amp`` (``"none"``, ``"bf16"``, ``"fp16"``)
==================  ====================================================================

The flat keywords of ``Trainer`` (``lr=``, ``epochs=``, ...) stay; a group given as a spec
replaces them, and giving a group's flat keyword with a non-default value as well is an error.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Mapping, Optional

from ..errors import ConfigError
from ..models.config import _Spec

__all__ = ["OptimSpec", "ScheduleSpec", "CheckpointSpec", "PrecisionSpec", "TRAINER_GROUPS", "apply_specs"]


def _number(s, name: str, lo: float) -> None:
    v = getattr(s, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= lo:
        raise s._err(f"{name} must be a number >= {lo}, got {v!r}")
    setattr(s, name, float(v))


@dataclass
class OptimSpec(_Spec):
    """AdamW and the step: ``lr``, ``weight_decay``, gradient-norm ``clip`` (0: off),
    ``batch_size`` samples per process and step, ``weighted_loss`` (query quadrature weights
    in the relative L2), ``num_workers`` of the DataLoader."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    clip: float = 1.0
    batch_size: int = 1
    weighted_loss: bool = False
    num_workers: int = 0

    def __post_init__(self):
        for k in ("lr", "weight_decay", "clip"):
            _number(self, k, 0.0)
        self._int("batch_size", 1)
        self._int("num_workers", 0)
        if not isinstance(self.weighted_loss, bool):
            raise self._err(f"weighted_loss must be true or false, got {self.weighted_loss!r}")


@dataclass
class ScheduleSpec(_Spec):
    """Linear warm-up for ``warmup`` epochs, then cosine decay to ``min_lr_ratio * lr`` at
    ``epochs``; with ``minutes`` > 0 training stops when the budget is spent and the cosine
    follows the epochs that fit (``epochs`` is then an upper bound)."""

    epochs: int = 10
    warmup: float = 0.0
    min_lr_ratio: float = 0.0
    minutes: float = 0.0

    def __post_init__(self):
        self._int("epochs", 1)
        for k in ("warmup", "min_lr_ratio", "minutes"):
            _number(self, k, 0.0)


@dataclass
class CheckpointSpec(_Spec):
    """Where rank 0 writes ``last.pt``/``best.pt``/metrics (``out_dir``; None: nothing) and
    whether ``best.pt`` is kept (``save_best``)."""

    out_dir: Optional[str] = None
    save_best: bool = True

    def __post_init__(self):
        if self.out_dir is not None:
            self.out_dir = str(self.out_dir)
        if not isinstance(self.save_best, bool):
            raise self._err(f"save_best must be true or false, got {self.save_best!r}")


@dataclass
class PrecisionSpec(_Spec):
    """Autocast: ``amp`` = ``"none"``, ``"bf16"`` or ``"fp16"`` (CUDA only)."""

    amp: str = "none"

    def __post_init__(self):
        from .config import AMP_MODES

        self._choice("amp", AMP_MODES)


#: Trainer keyword -> its group spec
TRAINER_GROUPS = {"optim": OptimSpec, "schedule": ScheduleSpec, "checkpointing": CheckpointSpec, "precision": PrecisionSpec}


def apply_specs(flat: dict, defaults: Mapping, **groups) -> dict:
    """``flat`` Trainer keywords with the given group specs (specs or dicts) written in;
    a flat keyword of a given group that differs from its default is a :class:`ConfigError`."""
    out = dict(flat)
    for name, value in groups.items():
        if value is None:
            continue
        cls = TRAINER_GROUPS[name]
        s = value if isinstance(value, cls) else cls.from_dict(value)
        clash = sorted(k for k in cls.keys() if k in flat and flat[k] != defaults[k])
        if clash:
            raise ConfigError(f"Trainer: {clash} given both as keywords and in {name}=; give them in {name}= only")
        out.update({k: getattr(s, k) for k in cls.keys()})
    return out


def trainer_defaults(cls) -> dict:
    """The default values of the Trainer keywords (for :func:`apply_specs`)."""
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is not p.empty}
