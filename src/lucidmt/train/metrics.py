"""Where training numbers go: a JSONL file, TensorBoard, and a learning-curve PNG a person can glance at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
                self.writer = None

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            step = row.get("step", 0)
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float):
                    self.writer.add_scalar(k.replace("_", "/", 1), v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_learning_curve(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Train vs validation loss (per target token, without label smoothing) and validation BLEU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [(r["step"], r["train_nll"]) for r in rows if "train_nll" in r]
    valid = [(r["step"], r["valid_nll"]) for r in rows if "valid_nll" in r]
    bleu = [(r["step"], r["valid_bleu"]) for r in rows if r.get("valid_bleu") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#1f77b4", alpha=0.8)
    if valid:
        ax.plot(*zip(*valid, strict=True), "o-", label="validation loss", color="#d62728")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per target token (nats)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if bleu:
        ax2 = ax.twinx()
        ax2.plot(*zip(*bleu, strict=True), "s--", label="validation BLEU", color="#2ca02c")
        ax2.set_ylabel("BLEU")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper center")
    ax.set_title(f"learning curve: {run_dir.name}")
    fig.tight_layout()
    out = Path(out) if out else run_dir / "learning_curve.png"
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out
