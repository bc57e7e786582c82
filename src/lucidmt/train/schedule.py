"""Learning-rate schedules as pure functions of the step (nothing to save or restore on resume)."""

from __future__ import annotations

import math

from ..config import TrainConfig


def learning_rate(step: int, cfg: TrainConfig, elapsed_s: float = 0.0, warmup_s: float = 0.0) -> float:
    """lr at optimizer step `step` (1-based), `elapsed_s` seconds into training, the warm-up having taken
    `warmup_s` seconds (the trainer records it when the warm-up ends).

    warm-up:       lr * step / warmup                                   (linear, all schedules)
    inverse_sqrt:  lr * sqrt(warmup / step)                             (Vaswani et al.; fairseq)
    cosine:        min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2, where p is the fraction of the budget used
                   after warm-up: of max_steps - warmup, or of the time left after the warm-up within
                   max_minutes (whichever is further along), so that a time-budgeted run starts its decay at
                   the peak and anneals exactly when its time runs out. A time-based p depends on the clock,
                   so such runs do not resume bit-exactly; step-based ones do.
    constant:      lr
    """
    warmup = last_warmup_step(cfg)
    if step < warmup:
        return cfg.lr * step / warmup
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(warmup / step)
    if cfg.schedule == "cosine":
        p = 0.0
        if cfg.max_steps > warmup:
            p = (step - warmup) / (cfg.max_steps - warmup)
        if cfg.max_minutes > 0:
            left = cfg.max_minutes * 60 - warmup_s  # seconds of the budget after the warm-up
            p = max(p, (elapsed_s - warmup_s) / left if left > 0 else 1.0)
        p = min(1.0, max(0.0, p))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    return cfg.lr


def last_warmup_step(cfg: TrainConfig) -> int:
    """The step at which the learning rate reaches its peak (a warm-up of 0 steps peaks at step 1)."""
    return max(1, cfg.warmup_steps)
