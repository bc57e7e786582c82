"""Learning-rate schedules as pure functions of the step (nothing to save or restore on resume)."""

from __future__ import annotations

import math

from ..config import TrainConfig


def learning_rate(step: int, cfg: TrainConfig, total_steps: int = 0) -> float:
    """lr at optimizer step `step` (1-based).

    warm-up:       lr * step / warmup                                   (linear, all schedules)
    inverse_sqrt:  lr * sqrt(warmup / step)                             (Vaswani et al.; fairseq)
    cosine:        min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2  over max_steps
    constant:      lr
    """
    warmup = max(1, cfg.warmup_steps)
    if step < warmup:
        return cfg.lr * step / warmup
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(warmup / step)
    if cfg.schedule == "cosine":
        total = total_steps or cfg.max_steps
        if total <= warmup:
            return cfg.lr
        progress = min(1.0, (step - warmup) / (total - warmup))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr
