"""Checkpoint folders: written atomically, loaded without pickle.

    config.yaml          the fully resolved RunConfig
    model.safetensors    weights (a shared embedding is stored once)
    tokenizer/           tokenizer.json + SentencePiece model(s)
    train_state.pt       optimizer, step, data position, RNG states; tensors and plain types only,
                         read with torch.load(weights_only=True). Absent from `best/` and averaged folders.

A run folder keeps `checkpoints/step-NNNNNNN/` (the last K) and `best/` (a copy of the best one).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import RunConfig
from ..data.tokenizer import Tokenizer
from ..errors import CheckpointError
from ..io import atomic_path
from ..model import Seq2Seq

STEP_DIR = re.compile(r"^step-(\d+)$")


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without aliases: a tensor shared by several names is stored under its first name."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride()) if t.numel() else (name,)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach().to("cpu").contiguous()
    return out


def save_checkpoint(
    folder: str | Path,
    model: Seq2Seq,
    cfg: RunConfig,
    tokenizer: Tokenizer,
    train_state: dict[str, Any] | None = None,
) -> Path:
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        cfg.save(tmp / "config.yaml")
        save_file(unique_state_dict(model), tmp / "model.safetensors", metadata={"lucidmt_version": __version__})
        tokenizer.save(tmp / "tokenizer")
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
    return folder


def load_weights(model: Seq2Seq, path: str | Path) -> None:
    """Load safetensors weights; every missing name must be an alias of a loaded tensor."""
    load_state(model, load_file(str(path)), str(path))


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """`model.load_state_dict(state)` where names of shared tensors may be missing (one name suffices)."""
    result = model.load_state_dict(state, strict=False)
    aliases = set(model.state_dict()) - set(unique_state_dict(model))
    missing = [k for k in result.missing_keys if k not in aliases]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{where}: weights do not match the configuration (missing: {missing[:5]}, "
            f"unexpected: {result.unexpected_keys[:5]})"
        )


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> tuple[Seq2Seq, RunConfig, Tokenizer]:
    cfg, tok = read_checkpoint(folder)
    return load_model(folder, cfg, device), cfg, tok


def read_checkpoint(folder: str | Path) -> tuple[RunConfig, Tokenizer]:
    """A checkpoint's configuration and tokenizer, without its weights."""
    folder = Path(folder)
    for name in ("config.yaml", "model.safetensors", "tokenizer"):
        if not (folder / name).exists():
            raise CheckpointError(f"{folder}: not a checkpoint (missing {name})")
    return RunConfig.load(folder / "config.yaml"), Tokenizer(folder / "tokenizer")


def load_model(folder: str | Path, cfg: RunConfig, device: str | torch.device = "cpu") -> Seq2Seq:
    """The model of a checkpoint whose configuration `read_checkpoint` returned, in eval mode."""
    model = Seq2Seq(cfg.model)
    load_weights(model, Path(folder) / "model.safetensors")
    return model.to(device).eval()


def load_train_state(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "train_state.pt"
    if not path.exists():
        raise CheckpointError(f"{folder}: no train_state.pt, cannot resume from it")
    return torch.load(path, map_location="cpu", weights_only=True)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its `best/`, else its latest step checkpoint)."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path
    if (path / "best" / "model.safetensors").exists():
        return path / "best"
    steps = list_checkpoints(path)
    if steps:
        return steps[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint folder")
    raise CheckpointError(f"{path}: no checkpoint found (expected model.safetensors, best/ or checkpoints/step-*)")


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` (at least 1, which is what `--resume` needs) step checkpoints."""
    ckpts = list_checkpoints(run_dir)
    for p in ckpts[: max(0, len(ckpts) - max(1, keep_last))]:
        shutil.rmtree(p, ignore_errors=True)


def average_checkpoints(folders: list[str | Path], out: str | Path) -> Path:
    """Average the weights of several checkpoints of one architecture into a new checkpoint folder."""
    if not folders:
        raise CheckpointError("no checkpoints to average")
    folders = [Path(f) for f in folders]
    model, cfg, tok = load_checkpoint(folders[0])
    first = unique_state_dict(model)
    total = {k: v.double().clone() for k, v in first.items()}
    for f in folders[1:]:
        other = load_file(str(Path(f) / "model.safetensors"))
        if set(other) != set(total):
            raise CheckpointError(f"{f}: different parameters from {folders[0]}, cannot average")
        for k in total:
            if other[k].shape != total[k].shape:
                raise CheckpointError(f"{f}: {k} has shape {tuple(other[k].shape)}, expected {tuple(total[k].shape)}")
            total[k] += other[k].double()
    avg = {k: (v / len(folders)).to(first[k].dtype) for k, v in total.items()}
    model.load_state_dict(avg, strict=False)
    return save_checkpoint(out, model, cfg, tok)
