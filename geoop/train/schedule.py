"""Learning-rate schedule: linear warm-up, then cosine decay.

.. math::

    \\eta(t) = \\eta_0 \\frac{t + 1}{T_w}                         \\quad (t < T_w)

    \\eta(t) = \\eta_{min} + (\\eta_0 - \\eta_{min}) \\frac{1 + \\cos(\\pi\\, p)}{2},
    \\quad p = \\frac{t - T_w}{\\max(1, T - T_w)}                 \\quad (t \\ge T_w)

with ``t`` the optimizer step, ``T_w`` the warm-up steps, ``T`` the total steps and
``η_min = min_lr_ratio * η_0``. The scheduler is stepped once per optimizer step; its state is
plain numbers (``state_dict`` loads with ``torch.load(weights_only=True)``).
"""
from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupCosine"]


class WarmupCosine(LRScheduler):
    """Linear warm-up over ``warmup_steps`` then cosine decay to ``min_lr_ratio * lr`` at
    ``total_steps`` (constant afterwards)."""

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0, last_epoch: int = -1):
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.min_lr_ratio = float(min_lr_ratio)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        p = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))

    def get_lr(self):
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
