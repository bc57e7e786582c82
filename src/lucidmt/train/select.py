"""Choose the checkpoint to ship on the validation set: the best one, the last one, or an average of the last k.

    lucidmt average RUN --last 5 --select                # -> RUN/averaged, whichever scored best, and why
    select_checkpoint("runs/m30k", last=5)               # the same from Python; returns the scores

Averaging the last checkpoints usually helps once training has settled, and hurts when they are far apart (a short
run whose first checkpoint is still undertrained): rather than guess, every candidate translates the run's own
validation set (the prepared data named in its configuration) and the highest sacreBLEU wins; ties go to the
simpler candidate (best, then last, then the smaller average). Test sets are never looked at.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import CheckpointError, DataError
from ..io import atomic_path, write_json
from .checkpoint import average_checkpoints, list_checkpoints, read_checkpoint


def candidates(run: Path, last: int) -> list[tuple[str, list[Path]]]:
    """(name, checkpoint folders to average) for the best checkpoint, the last one and averages of the last 2..K."""
    steps = list_checkpoints(run)
    if not steps:
        raise CheckpointError(f"{run}: no step checkpoints to choose from")
    out = []
    if (run / "best" / "model.safetensors").exists():
        out.append(("best", [run / "best"]))
    out.append((f"last ({steps[-1].name})", [steps[-1]]))
    for k in range(2, min(last, len(steps)) + 1):
        out.append((f"average of the last {k}", steps[-k:]))
    return out


def select_checkpoint(
    run: str | Path,
    out: str | Path | None = None,
    last: int = 5,
    beam_size: int = 4,
    max_sentences: int = 0,
    log=print,
    device: str | None = None,
) -> dict:
    """Score each candidate on the validation set, write the winner to `out` (default RUN/averaged) as a plain
    checkpoint with `selection.json` beside its weights, and return that report. `device`: as `Translator.load`
    (default: CUDA when available)."""
    from ..data.prepare import Prepared
    from ..decode.translator import Translator
    from ..evaluate import quick_bleu

    run = Path(run)
    out = Path(out) if out is not None else run / "averaged"
    cands = candidates(run, last)
    cfg, _ = read_checkpoint(cands[0][1][0])
    try:
        src, ref = Prepared(cfg.data.path).text("valid")
    except (DataError, OSError) as exc:
        raise DataError(
            f"{run}: its validation set comes from the prepared data {cfg.data.path!r}, which cannot be read ({exc})"
        ) from None
    if max_sentences:
        src, ref = src[:max_sentences], ref[:max_sentences]
    scores = []
    work = Path(tempfile.mkdtemp(prefix=".select-", dir=run))
    try:
        for i, (name, folders) in enumerate(cands):
            folder = folders[0] if len(folders) == 1 else average_checkpoints(folders, work / f"cand-{i}")
            tr = Translator.load(folder, device=device)
            bleu = quick_bleu(tr.translate(src, beam_size=beam_size), ref, cfg.data.tgt_lang)
            scores.append({"candidate": name, "checkpoints": [f.name for f in folders], "valid_bleu": bleu})
            log(f"{name}: valid BLEU {bleu:.2f} ({', '.join(f.name for f in folders)})")
        win = max(range(len(cands)), key=lambda i: (scores[i]["valid_bleu"], -i))  # ties: the simpler one
        report = {
            "chosen": scores[win]["candidate"],
            "beam_size": beam_size,
            "valid_sentences": len(src),
            "candidates": scores,
        }
        name, folders = cands[win]
        with atomic_path(out) as tmp:
            if len(folders) == 1:
                shutil.copytree(folders[0], tmp, ignore=shutil.ignore_patterns("train_state.pt"))
            else:
                shutil.move(work / f"cand-{win}", tmp)
            write_json(tmp / "selection.json", report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"chose {name} -> {out}")
    return report
