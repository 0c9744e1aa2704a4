"""Training: :class:`Trainer` (relative L2, AdamW, warm-up + cosine, AMP, DDP), atomic
checkpoints loadable with ``weights_only=True``, run configs, torchrun set-up."""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import load_config, resolve_config
from .distributed import DistInfo, cleanup_distributed, init_distributed
from .losses import relative_l2, relative_l2_loss
from .schedule import WarmupCosine
from .specs import CheckpointSpec, OptimSpec, PrecisionSpec, ScheduleSpec
from .trainer import Trainer, TrainingInterrupted

__all__ = [
    "Trainer",
    "TrainingInterrupted",
    "save_checkpoint",
    "load_checkpoint",
    "load_config",
    "resolve_config",
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "relative_l2",
    "relative_l2_loss",
    "WarmupCosine",
    "OptimSpec",
    "ScheduleSpec",
    "CheckpointSpec",
    "PrecisionSpec",
]
