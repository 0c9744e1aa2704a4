r"""When incremental FNO/SFNO blocks grow their modes: the loss-plateau and explained-energy rules.

After every ``every`` epochs :meth:`IncrementalModes.update` checks its rule and, when it
fires, grows the active modes of the model's incremental blocks by ``step``
(:func:`geoop.nn.incremental.grow_modes`, capped at the final modes):

* ``"loss_plateau"``: the epoch's training loss ``L_e`` (the relative L2 it minimises) has
  improved by less than ``eps`` in each of the last ``patience`` epochs,
  ``L_{e-1} - L_e < eps``, counted from the last growth;
* ``"energy"``: the explained ratio ``r_buffer`` of the active spectral weights
  (:func:`geoop.nn.incremental.explained_energy`) is below ``threshold``: the outer
  ``buffer`` frequency shells hold more than ``1 - threshold`` of the energy.

These are the two rules of George et al., "Incremental spectral learning in Fourier neural
operator" (neuraloperator's ``IncrementalFNOTrainer``: loss gap, explained ratio). The
decision uses only all-reduced or replicated values (the epoch's mean loss, the weights), so
every rank of a distributed run grows at the same epoch. The rule's own state (the losses
seen since the last growth) is part of the trainer's checkpoint; the active modes are
buffers of the model, so a resumed run continues with the modes and the rule state it had.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from torch import nn

from ..errors import ConfigError
from ..models.config import IncrementalSpec
from ..nn.incremental import active_modes, explained_energy, grow_modes, incremental_blocks, max_modes

__all__ = ["IncrementalModes"]


class IncrementalModes:
    """Grows a model's incremental spectral blocks during training (module docstring).

    Parameters
    ----------
    model : the model (its incremental FNO/SFNO stacks are found by
        :func:`geoop.nn.incremental.incremental_blocks`)
    spec : :class:`geoop.models.config.IncrementalSpec` or its dict (``rule``, ``step``,
        ``every``, ``eps``, ``patience``, ``threshold``, ``buffer``; ``start`` is the model's)
    """

    def __init__(self, model: nn.Module, spec: Any = None):
        if not incremental_blocks(model):
            raise ConfigError(f"IncrementalModes: {type(model).__name__} has no incremental FNO/SFNO blocks "
                              "(set model.blocks.incremental)")
        self.model = model
        self.spec = spec if isinstance(spec, IncrementalSpec) else IncrementalSpec.from_dict(spec)
        self.losses: list[float] = []  # training losses since the last growth
        self.epochs = 0  # epochs seen
        self.grown_at: list[int] = []  # epochs after which the modes grew

    @classmethod
    def from_model(cls, model: nn.Module) -> Optional["IncrementalModes"]:
        """From the model's ``blocks.incremental`` spec (a GINO's ``specs``), None when the
        model has no incremental blocks."""
        if not incremental_blocks(model):
            return None
        blk = getattr(model, "specs", {}).get("blocks") if isinstance(getattr(model, "specs", None), Mapping) else None
        return cls(model, getattr(blk, "incremental", None))

    @property
    def modes(self) -> tuple[int, ...]:
        """The active modes now."""
        return active_modes(self.model)

    @property
    def done(self) -> bool:
        """Whether the final modes are reached."""
        return tuple(self.modes) == max_modes(self.model)

    def should_grow(self, loss: float) -> bool:
        """Record the epoch's training loss and say whether the rule fires (no growth done)."""
        self.losses.append(float(loss))
        s = self.spec
        if self.done or self.epochs % s.every:
            return False
        if s.rule == "energy":
            return explained_energy(self.model, s.buffer) < s.threshold
        if len(self.losses) <= s.patience:
            return False
        recent = self.losses[-(s.patience + 1):]
        return all(a - b < s.eps for a, b in zip(recent[:-1], recent[1:]))

    def update(self, loss: float) -> bool:
        """After an epoch with mean training loss ``loss``: grow when the rule fires; returns
        whether the modes grew."""
        self.epochs += 1
        if not self.should_grow(loss):
            return False
        grow_modes(self.model, self.spec.step)
        self.losses = []
        self.grown_at.append(self.epochs)
        return True

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "epochs": self.epochs, "grown_at": list(self.grown_at),
                "spec": self.spec.to_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.losses = [float(v) for v in state.get("losses", [])]
        self.epochs = int(state.get("epochs", 0))
        self.grown_at = [int(v) for v in state.get("grown_at", [])]
