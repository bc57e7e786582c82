"""Memory per rank of data-parallel training: FSDP (train.parallel=fsdp) next to DDP, 2 CPU processes (gloo).

    python benchmarks/train_memory.py                         # big preset, 2 steps of 1k-token batches per mode
    python benchmarks/train_memory.py --preset base --steps 3

For each mode this script starts `torchrun --nproc-per-node 2` on itself; every rank builds lucidmt's `Trainer` on
Multi30k en-de (joint 8k BPE), runs `--steps` optimizer steps (fused AdamW, fp32) and reports what it holds:
parameter, gradient (when the optimizer steps) and AdamW-state bytes (the tensors it owns, counted exactly) and
its peak resident memory (ru_maxrss: everything, Python and PyTorch included). DDP replicates all three on every
rank; FSDP keeps 1/N of each and gathers one layer's weights at a time. The markdown table puts FSDP beside DDP
with the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, hardware, out_dir, prepared_multi30k


def rank_main(args) -> None:
    import torch
    from torch.distributed.tensor import DTensor

    from lucidmt.config import preset
    from lucidmt.data.prepare import Prepared
    from lucidmt.train.trainer import Trainer

    cfg = preset(args.preset)
    cfg.train.parallel, cfg.train.max_tokens, cfg.train.valid_bleu = args.mode, args.max_tokens, False
    run = Path(tempfile.mkdtemp()) / "run"
    tr = Trainer(cfg, Prepared(args.data), run, progress=False, log=lambda *_: None)
    src, tgt, batches = tr._epoch_data(0)

    def local(t) -> int:
        return (t.to_local() if isinstance(t, DTensor) else t).nbytes

    grads = []  # the gradients this rank holds when the optimizer steps (they are freed after it)
    tr.optimizer.register_step_pre_hook(
        lambda *_: grads.append(sum(local(p.grad) for p in tr.model.parameters() if p.grad is not None))
    )
    t0 = time.perf_counter()
    tokens = 0.0
    for i in range(args.steps):
        tokens += tr._train_step(src, tgt, batches[i : i + 1])[2]
    seconds = time.perf_counter() - t0
    params = sum(local(p) for p in tr.model.parameters())
    adam = sum(local(v) for st in tr.optimizer.state.values() for v in st.values() if torch.is_tensor(v))
    report = dict(
        rank=tr.dist.rank,
        params=params,
        grads=max(grads),
        adam=adam,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        n_params=tr.n_params,
        tokens_per_s=tokens * tr.dist.world / seconds,
    )
    (args.report_dir / f"rank{tr.dist.rank}.json").write_text(json.dumps(report))
    tr.dist.close()


def launch(args, mode: str, port: int) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    cmd += [__file__, "--rank-of", mode, "--preset", args.preset, "--steps", str(args.steps)]
    reports = Path(tempfile.mkdtemp())
    cmd += ["--max-tokens", str(args.max_tokens), "--data", str(args.data), "--report-dir", str(reports)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"train_memory: {mode} failed:\n{proc.stderr[-4000:]}")
    return [json.loads(f.read_text()) for f in sorted(reports.glob("rank*.json"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="big")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=1000)
    p.add_argument("--data", type=Path)
    p.add_argument("--rank-of", choices=["ddp", "fsdp"], help=argparse.SUPPRESS)
    p.add_argument("--report-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rank_of:
        args.mode = args.rank_of
        rank_main(args)
        return
    args.data = args.data or prepared_multi30k(out_dir() / "m30k-en-de")
    rows = {mode: launch(args, mode, 29650 + k) for k, mode in enumerate(("ddp", "fsdp"))}
    mb = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
    n = rows["ddp"][0]["n_params"]
    cpu = hardware().rsplit(",", 1)[0]  # the CPU's name (each rank runs 1 thread, said below)
    print(
        f"\nMemory per rank, `{args.preset}` preset ({n / 1e6:.0f}M parameters), 2 processes on {cpu} "
        f"(gloo, 1 thread each), fp32, fused AdamW, {args.steps} steps of {args.max_tokens}-token batches; "
        "rank 0 shown (rank 1 alike).\n"
    )
    print("| mode | parameters MiB | gradients MiB | AdamW state MiB | owned total MiB | peak RSS MiB | tokens/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total = {}
    for mode in ("ddp", "fsdp"):
        r = min(rows[mode], key=lambda r: r["rank"])
        total[mode] = (r["params"] + r["grads"] + r["adam"], r["peak_rss"])
        print(
            f"| {mode.upper()} | {mb(r['params'])} | {mb(r['grads'])} | {mb(r['adam'])} | {mb(total[mode][0])} | "
            f"{mb(r['peak_rss'])} | {r['tokens_per_s']:,.0f} |"
        )
    owned = total["fsdp"][0] / total["ddp"][0]
    rss = total["fsdp"][1] / total["ddp"][1]
    print(f"\nFSDP / DDP per rank: owned tensors {owned:.2f}x, peak resident memory {rss:.2f}x")


if __name__ == "__main__":
    main()
