"""Training throughput: lucidmt vs Hugging Face MarianMTModel of the same size, same batches, same process.

    python benchmarks/train_speed.py                      # CPU, 2 threads, small and base, 4k-token batches
    python benchmarks/train_speed.py --device cuda --sizes base big --max-tokens 25000   # GPU, bf16

Both models take identical token-budget batches of Multi30k en-de (joint 8k BPE), fused AdamW, gradient clipping and
label-smoothed cross-entropy (0.1). Each timed round runs `--steps` optimizer steps per model, alternating the
two models so that machine noise hits both; the table reports target tokens per second over all rounds.
On CUDA both use bf16 autocast, and model FLOPs utilisation is 6 * parameters * tokens/s / peak.

On CPU the glibc allocator matters: by default it returns every freed block above 128 KiB to the OS, so each
large temporary page-faults afresh. The lucidmt CLI raises those thresholds (`lucidmt.runtime.tune_allocator`).
`--allocator both` (the default on CPU) measures both libraries twice, in two processes: once with glibc's
defaults and once with the tuned allocator, so that each row compares the two libraries under one setting.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from _common import hardware, hf_marian, out_dir, prepared_multi30k
from lucidmt.config import preset
from lucidmt.data.batching import collate, lengths, make_batches
from lucidmt.data.prepare import Prepared
from lucidmt.model import Seq2Seq, count_parameters
from lucidmt.train.loss import Seq2SeqLoss
from lucidmt.train.trainer import adamw

PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16, FLOP/s


class Runner:
    def __init__(self, name, model, loss_fn, device, amp):
        self.name, self.model, self.loss_fn, self.device, self.amp = (
            name,
            model.to(device).train(),
            loss_fn,
            device,
            amp,
        )
        self.opt = adamw(list(model.parameters()), lr=1e-4, betas=(0.9, 0.98))  # fused, as lucidmt's trainer
        self.tokens = 0
        self.seconds = 0.0

    def step(self, b) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.loss_fn(self.model, b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def run(self, batches, timed: bool) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in batches:
            self.step(b)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            self.seconds += time.perf_counter() - t0
            self.tokens += sum(b.n_tgt_tokens for b in batches)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def lucid_loss(model, b):
    loss, _ = model(b.src, b.tgt_in, b.tgt_out)  # a Seq2SeqLoss: fused output projection + loss
    return loss / b.n_tgt_tokens


def hf_loss(model, b):
    labels = b.tgt_out.masked_fill(b.tgt_out == 0, -100)
    out = model(input_ids=b.src, attention_mask=(b.src != 0).long(), decoder_input_ids=b.tgt_in)
    return F.cross_entropy(out.logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=0.1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=["small", "base"])
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and model")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also torch.compile lucidmt")
    ap.add_argument("--allocator", choices=["default", "tuned", "both"], default=None)
    ap.add_argument("--json", action="store_true", help="print rows as JSON (used by --allocator both)")
    a = ap.parse_args()
    if a.allocator is None:
        a.allocator = "both" if a.device == "cpu" else "default"
    if a.allocator == "both":
        return run_both(a)
    if a.allocator == "tuned":
        from lucidmt.runtime import tune_allocator

        tune_allocator()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    amp = device.type == "cuda"
    data = Prepared(prepared_multi30k(out_dir() / "m30k-en-de"))
    src, tgt = data.ids("train")
    idx = make_batches(lengths(src), lengths(tgt), a.max_tokens, seed=1, epoch=0)
    need = a.warmup + a.rounds * a.steps
    batches = [collate(src, tgt, i, 0, 2, 3).to(device) for i in idx[:need]]
    vocab = data.tokenizer.info.src_vocab_size

    rows = []
    for size in a.sizes:
        cfg = preset(size).model
        cfg.src_vocab_size = cfg.tgt_vocab_size = vocab
        torch.manual_seed(0)
        ours = Seq2SeqLoss(Seq2Seq(cfg), label_smoothing=0.1)
        if a.compile:
            ours = torch.compile(ours, dynamic=True)
        runners = [
            Runner("lucidmt", ours, lucid_loss, device, amp),
            Runner("HF Marian", hf_marian(cfg, vocab, cfg.dropout, attention_dropout=0.0), hf_loss, device, amp),
        ]
        params = count_parameters(ours)
        for r in runners:
            r.run(batches[: a.warmup], timed=False)
        for k in range(a.rounds):
            chunk = batches[a.warmup + k * a.steps : a.warmup + (k + 1) * a.steps]
            for r in runners if k % 2 == 0 else runners[::-1]:
                r.run(chunk, timed=True)
        ours_tps, hf_tps = runners[0].tokens_per_s, runners[1].tokens_per_s
        row = {"size": size, "params": params, "ours": ours_tps, "hf": hf_tps}
        if device.type == "cuda":
            row["mfu_ours"] = 6 * params * ours_tps / PEAK_BF16
            row["mfu_hf"] = 6 * params * hf_tps / PEAK_BF16
        row["allocator"] = a.allocator
        rows.append(row)
        del runners
    if a.json:
        print("ROWS " + json.dumps(rows))
        return
    print_table(rows, a, device)


def run_both(a) -> None:
    """Run this script once per allocator setting, in fresh processes, and print one table."""
    rows = []
    for alloc in ("default", "tuned"):
        args = [sys.executable, __file__, "--allocator", alloc, "--json", "--device", a.device,
                "--threads", str(a.threads), "--max-tokens", str(a.max_tokens), "--steps", str(a.steps),
                "--rounds", str(a.rounds), "--warmup", str(a.warmup), "--sizes", *a.sizes]  # fmt: skip
        if a.compile:
            args.append("--compile")
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        rows += json.loads(next(line for line in out.splitlines() if line.startswith("ROWS "))[5:])
    print_table(rows, a, torch.device(a.device))


def print_table(rows, a, device) -> None:
    amp = device.type == "cuda"

    prec = "bf16 autocast" if amp else "fp32"
    print(
        f"\nTraining throughput, target tokens/s ({hardware()}, {prec}, max_tokens {a.max_tokens}, "
        f"{a.rounds}x{a.steps} timed steps per model, Multi30k en-de batches)\n"
    )
    mfu = device.type == "cuda"
    head = "| size | parameters | allocator | lucidmt tok/s | HF Marian tok/s | ratio |" + (
        " MFU lucidmt | MFU HF |" if mfu else ""
    )
    print(head)
    print("|---|---:|---|---:|---:|---:|" + ("---:|---:|" if mfu else ""))
    for r in rows:
        ratio = r["ours"] / r["hf"]
        line = f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['allocator']} | {r['ours']:,.0f} | {r['hf']:,.0f} |"
        line += f" {ratio:.2f}x |"
        if mfu:
            line += f" {r['mfu_ours']:.1%} | {r['mfu_hf']:.1%} |"
        print(line)


if __name__ == "__main__":
    main()
