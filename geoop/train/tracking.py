"""TensorBoard logging of a training run (optional extra: ``pip install geoop[tensorboard]``).

:class:`TensorBoardLogger` writes, through :class:`torch.utils.tensorboard.SummaryWriter`:

* ``train/loss_step`` every ``step_every`` optimizer steps (x axis: optimizer step);
* after every epoch (x axis: epoch): ``train/loss``, ``train/lr``, ``train/samples_per_s``
  and every validation metric, ``val/rel_l2/<field>``, ``val/rel_l2`` and the coefficient
  metrics ``val/<c>/mae``, ``val/<c>/r2`` (NaN values are skipped);
* ``val/prediction`` every ``image_every`` evaluations: a picture of the first target on the
  first validation item, prediction | truth | error at its query points.

Read the curves with ``tensorboard --logdir DIR``.
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Union

import numpy as np

from ..errors import BackendUnavailableError

__all__ = ["TensorBoardLogger", "scalar_tags"]


def scalar_tags(metrics: Mapping) -> dict:
    """Epoch metrics (``Trainer.history`` entries) -> ``{tag: value}`` of the finite numbers."""
    rename = {"train_loss": "train/loss", "lr": "train/lr", "samples_per_s": "train/samples_per_s", "time_s": "train/epoch_time_s"}
    out = {}
    for k, v in metrics.items():
        if k == "epoch" or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        out[rename.get(k, k)] = float(v)
    return out


class TensorBoardLogger:
    """Event files in ``log_dir`` (created); see the module docstring for the tags."""

    def __init__(self, log_dir: Union[str, os.PathLike], image_every: int = 1, step_every: int = 10):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch raises ImportError when the tensorboard package is missing
            raise BackendUnavailableError(
                f"TensorBoard logging needs the 'tensorboard' package ({e}); install it with pip install tensorboard "
                f"(or pip install geoop[tensorboard])") from None
        self.log_dir = str(log_dir)
        self.writer = SummaryWriter(log_dir=self.log_dir)
        self.image_every = max(0, int(image_every))
        self.step_every = max(1, int(step_every))
        self.evaluations = 0

    def step(self, global_step: int, loss: float) -> None:
        if global_step % self.step_every == 0:
            self.writer.add_scalar("train/loss_step", float(loss), global_step)

    def epoch(self, epoch: int, metrics: Mapping, picture: Optional[np.ndarray] = None) -> None:
        """Scalars of one epoch (1-based ``epoch`` as the step) and an optional (H, W, 3)
        uint8 picture."""
        for tag, v in scalar_tags(metrics).items():
            self.writer.add_scalar(tag, v, epoch)
        if picture is not None:
            self.writer.add_image("val/prediction", picture, epoch, dataformats="HWC")
        self.writer.flush()

    def wants_picture(self) -> bool:
        """Count one evaluation; True every ``image_every`` evaluations (first one included)."""
        self.evaluations += 1
        return self.image_every > 0 and (self.evaluations - 1) % self.image_every == 0

    def close(self) -> None:
        self.writer.close()


def prediction_picture(points: np.ndarray, pred: np.ndarray, true: np.ndarray, title: str) -> np.ndarray:
    """(H, W, 3) uint8 picture: prediction | truth | |error| of a scalar at points (Q, d)
    (a scatter over the two widest coordinate axes), matplotlib Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = np.asarray(points, dtype=np.float64)
    ext = pts.max(0) - pts.min(0)
    a, b = sorted(np.argsort(ext)[-2:]) if pts.shape[1] > 2 else (0, 1)
    fig = Figure(figsize=(10, 3.2), dpi=80)
    canvas = FigureCanvasAgg(fig)
    lo, hi = np.percentile(np.concatenate([pred, true]), [1, 99])
    err = np.abs(pred - true)
    for i, (v, name, lim, cmap) in enumerate(((pred, "prediction", (lo, hi), "viridis"), (true, "truth", (lo, hi), "viridis"),
                                              (err, "|error|", (0, max(float(np.percentile(err, 99)), 1e-12)), "magma"))):
        ax = fig.add_subplot(1, 3, i + 1)
        sc = ax.scatter(pts[:, a], pts[:, b], c=v, s=3, cmap=cmap, vmin=lim[0], vmax=lim[1])
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        fig.colorbar(sc, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
