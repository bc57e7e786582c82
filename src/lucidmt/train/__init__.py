"""Training: the loop, schedules, checkpoints, metrics and data parallelism."""

from .checkpoint import average_checkpoints, load_checkpoint, resolve_checkpoint, save_checkpoint
from .trainer import Trainer, TrainResult, train

__all__ = [
    "TrainResult",
    "Trainer",
    "average_checkpoints",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "train",
]
