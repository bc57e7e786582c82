"""Quality on Multi30k en-de: lucidmt's recommended recipe vs Hugging Face MarianMTModel, same budget.

    python benchmarks/quality_multi30k.py                       # 60 minutes each, this CPU (2 threads)
    python benchmarks/quality_multi30k.py --minutes 3 --device cuda --preset base --max-tokens 25000
    python benchmarks/quality_multi30k.py --skip-peer           # lucidmt only
    python benchmarks/quality_multi30k.py --lucidmt-run RUN     # the peer, beside a lucidmt run made earlier
    python benchmarks/quality_multi30k.py --lucidmt-run RUN --peer-recipe same   # the peer with lucidmt's recipe
    python benchmarks/quality_multi30k.py --peer-recipe same --interleave 60   # both in alternating 1-minute turns
    python benchmarks/quality_multi30k.py --recipe recipes/multi30k-small-short.yaml --minutes 10 --skip-peer

Both systems get the same prepared data (joint 8k BPE), the same wall-clock training budget, label smoothing 0.1 and
AdamW. lucidmt trains with its recipe (`--recipe`, default `recipes/multi30k-small.yaml`: residual dropout 0.3,
1,024-token batches, peak lr 2.5e-3, 1,600-step warm-up, cosine schedule annealed over the time budget;
`--max-tokens`, `--warmup`, `--valid-every`, `--lr` override it). The peer is HF `MarianMTModel` of the same size,
trained by a plain loop on the same batches, with `--peer-recipe plain` (the default, the issue's: dropout 0.3,
4,096-token batches or `--max-tokens`, inverse-sqrt schedule with a 400-step warm-up or `--warmup`, peak `--peer-lr`
1e-3) or `same` (lucidmt's recipe, schedule included: only the toolkit differs, and the toolkit's speed shows as
more updates in the budget). Every choice is made on the validation set: for lucidmt best vs averaged checkpoints,
then beam size and length penalty; for the peer (whose last weights are used) beam size and length penalty.
test_2016_flickr is decoded once per system at the end. Prints one markdown table, with each system's target tokens/s
inside training steps (and by quarter of the budget: by default the systems train one after the other, so a drift
in the machine's pace between their hours shows there rather than passing for the toolkit's speed). With
`--interleave SECONDS` they train in one process in alternating turns of that many seconds of their own clocks (each
clock stands still while the other system trains, each keeps its own random stream), so that both see the same
minutes of the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import hardware, hf_marian, out_dir, prepared_multi30k
from lucidmt.config import preset, read_config_dict
from lucidmt.data.batching import collate, lengths, make_batches
from lucidmt.data.corpus import load_dataset
from lucidmt.data.prepare import Prepared
from lucidmt.decode.translator import Translator
from lucidmt.evaluate import quick_bleu, score
from lucidmt.runtime import tune_allocator
from lucidmt.train.checkpoint import average_checkpoints, list_checkpoints
from lucidmt.train.metrics import read_metrics
from lucidmt.train.schedule import last_warmup_step, learning_rate
from lucidmt.train.trainer import adamw, train

ROOT = Path(__file__).resolve().parents[1]


def recipe_config(a):
    """lucidmt's training configuration: the preset, the recipe, then this script's overrides."""
    cfg = preset(a.preset)
    cfg.update(read_config_dict(a.recipe), str(a.recipe))
    cfg.train.schedule, cfg.train.max_minutes = "cosine", a.minutes
    for name, value in (("max_tokens", a.max_tokens), ("warmup_steps", a.warmup), ("valid_every", a.valid_every)):
        if value:  # the recipe's own value otherwise
            setattr(cfg.train, name, value)
    if a.lr:
        cfg.train.lr = a.lr
    cfg.validate()
    return cfg


def train_lucidmt(prep: Path, run: Path, a, peer: Peer | None = None) -> tuple[Path, dict]:
    """Train with the recipe (with `peer`, the peer trains in turns between lucidmt's steps), then choose."""
    hook = Interleave(peer, a.interleave) if peer is not None else None
    result = train(prep, run, recipe_config(a), device=a.device, progress=False, log=print, between_steps=hook)
    if peer is not None:
        print(f"interleaved: {hook.turns} peer turns of {a.interleave:g} s; the peer trains out its budget")
        peer.train_for(float("inf"))  # the remainder (about one turn), before any decoding
    return choose(prep, run, a, result.elapsed_minutes, result.steps)


def choose(prep: Path, run: Path, a, minutes: float, steps: int) -> tuple[Path, dict]:
    """Choose on the validation set: best checkpoint vs average of the last k, then beam and length penalty."""
    data = Prepared(prep)
    vsrc, vref = data.text("valid")
    candidates = {"best": run / "best"}
    ckpts = list_checkpoints(run)
    for k in (3, 5):
        if len(ckpts) >= k:
            candidates[f"avg{k}"] = average_checkpoints(ckpts[-k:], run / f"avg{k}")
    scores = {}
    for name, path in candidates.items():
        tr = Translator.load(path, device=a.device)
        scores[name] = quick_bleu(tr.translate(vsrc, beam_size=4), vref, "de")
    chosen = max(scores, key=scores.get)
    tr = Translator.load(candidates[chosen], device=a.device)
    search = choose_search(lambda beam, lp: tr.translate(vsrc, beam_size=beam, length_penalty=lp), vref)
    info = {"train_minutes": minutes, "steps": steps, "checkpoint": chosen, "valid_bleu_by_checkpoint": scores}
    return candidates[chosen], {**info, **search}


def choose_search(translate, vref: list[str]) -> dict:
    """Beam size and length penalty with the best validation BLEU; `translate(beam, lp)` decodes the validation
    sources (each system with its own length-penalty formula)."""
    grid = {(beam, lp): quick_bleu(translate(beam, lp), vref, "de") for beam in (4, 5) for lp in (0.6, 1.0)}
    beam, lp = max(grid, key=grid.get)
    return {"beam": beam, "length_penalty": lp, "valid_bleu": grid[(beam, lp)]}


def rng_state() -> tuple:
    """The CPU random generator's state, and every CUDA device's where there are any."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def swap_rng(state: tuple) -> tuple:
    """Install `state` (from `rng_state`) and return the one it replaces."""
    old = rng_state()
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])
    return old


class Peer:
    """The peer: HF MarianMTModel trained with a plain loop (what Seq2SeqTrainer does) on the same batches.

    `--peer-recipe plain`: dropout 0.3, `--max-tokens` or 4,096-token batches, inverse-sqrt schedule peaking at
    `--peer-lr` after `--warmup` or 400 steps. `same`: lucidmt's recipe (dropout, batch size, peak rate, warm-up,
    the cosine schedule annealed over the time budget, weight decay off norms and biases), so that only the
    toolkit differs. The peer keeps its own clock and its own random stream, so that it can train in slices
    (`train_for`) between lucidmt's steps without either disturbing the other."""

    def __init__(self, prep: Path, a) -> None:
        self.data, self.a = Prepared(prep), a
        self.tok = self.data.tokenizer
        self.src, self.tgt = self.data.ids("train")
        self.dev = torch.device(a.device)
        outer = rng_state()
        torch.manual_seed(1)
        cfg = recipe_config(a)
        t, m = cfg.train, cfg.model
        if a.peer_recipe == "plain":  # inverse-sqrt at --peer-lr, 4,096 tokens and 400 warm-up steps unless given
            t.schedule, t.lr, t.warmup_steps, t.max_tokens = (
                "inverse_sqrt",
                a.peer_lr,
                a.warmup or 400,
                a.max_tokens or 4096,
            )
            m.dropout, m.attention_dropout, m.activation_dropout = 0.3, 0.0, 0.0
        self.t = t
        model = hf_marian(
            m,
            self.tok.info.src_vocab_size,
            m.dropout,
            attention_dropout=m.attention_dropout,
            activation_dropout=m.activation_dropout,
            forced_eos_token_id=3,
        )
        self.model = model.to(self.dev).train()
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.opt = adamw(groups, lr=t.lr, betas=tuple(t.betas))  # fused where PyTorch has it, as lucidmt's
        self.rng = swap_rng(outer)  # the peer's own dropout stream from here on
        self.step, self.epoch, self.warmup_s, self.elapsed = 0, 0, 0.0, 0.0  # elapsed: the peer's own clock (s)
        self.batches = iter(())
        self.speed = StepSpeed()

    def done(self) -> bool:
        return self.elapsed >= self.a.minutes * 60

    def train_for(self, seconds: float) -> None:
        """Train until `seconds` more of the peer's clock have passed or its budget is spent."""
        t, dev = self.t, self.dev
        outer = swap_rng(self.rng)
        began, base = time.perf_counter(), self.elapsed
        amp = dev.type == "cuda"
        while not self.done() and self.elapsed - base < seconds:
            idx = next(self.batches, None)
            if idx is None:
                self.batches = iter(make_batches(lengths(self.src), lengths(self.tgt), t.max_tokens, 1, self.epoch))
                self.epoch += 1
                continue
            ts = time.perf_counter()
            b = collate(self.src, self.tgt, idx, 0, 2, 3).to(dev)
            self.step += 1
            clock = base + ts - began
            if self.step == last_warmup_step(t):
                self.warmup_s = clock
            for g in self.opt.param_groups:
                g["lr"] = learning_rate(self.step, t, clock, self.warmup_s)
            labels = b.tgt_out.masked_fill(b.tgt_out == 0, -100)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                out = self.model(input_ids=b.src, attention_mask=(b.src != 0).long(), decoder_input_ids=b.tgt_in)
                logits = out.logits.float().flatten(0, 1)
                loss = F.cross_entropy(logits, labels.flatten(), label_smoothing=t.label_smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            now = time.perf_counter()
            self.elapsed = base + now - began
            self.speed.add(self.elapsed, now - ts, b.n_tgt_tokens)
        self.rng = swap_rng(outer)

    def finish(self) -> tuple[object, dict]:
        """Train out the rest of the budget, then choose beam and length penalty on the validation set."""
        self.train_for(float("inf"))
        minutes = self.elapsed / 60
        self.model.eval()
        vsrc, vref = self.data.text("valid")
        search = choose_search(lambda beam, lp: hf_translate(self.model, self.tok, vsrc, self.a.device, beam, lp), vref)
        info = {"train_minutes": minutes, "steps": self.step, "recipe": self.a.peer_recipe}
        return self.model, info | self.speed.summary(minutes) | search


class Interleave:
    """`between_steps` hook for lucidmt's trainer: whenever lucidmt's clock has advanced by `slice_s` since the
    peer's last turn, the peer trains for the same `slice_s` of its own clock (lucidmt's clock stands still
    meanwhile). Both systems thus train through the same minutes of the machine's drifting pace."""

    def __init__(self, peer: Peer, slice_s: float) -> None:
        self.peer, self.slice_s = peer, slice_s
        self.turns = 0
        self.last = time.perf_counter()  # lucidmt's clock runs while the hook is not running

    def __call__(self, step: int) -> None:
        if time.perf_counter() - self.last >= self.slice_s:
            self.peer.train_for(self.slice_s)
            self.turns += 1
            self.last = time.perf_counter()


class StepSpeed:
    """Target tokens per second inside training steps (validation and checkpoints excluded), over the whole budget
    and by quarter of it, so that the table shows where the difference in updates comes from: the step itself, or
    the machine's pace drifting between the two systems' hours (they train one after the other)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, float]] = []  # (elapsed s at the end, step seconds, target tokens)

    def add(self, elapsed_s: float, step_s: float, tokens: float) -> None:
        self.rows.append((elapsed_s, step_s, tokens))

    @classmethod
    def of_run(cls, run: Path) -> StepSpeed:
        """From a lucidmt run's metrics.jsonl (a row per logging window)."""
        speed = cls()
        for row in read_metrics(run / "metrics.jsonl"):
            if "tgt_tokens_per_s" in row:
                # runs logged before `step_seconds` existed: windows weighted as if equal in tokens (a harmonic mean)
                seconds = row.get("step_seconds", 1.0 / row["tgt_tokens_per_s"])
                speed.add(row["elapsed_min"] * 60, seconds, row["tgt_tokens_per_s"] * seconds)
        return speed

    def summary(self, minutes: float) -> dict:
        """Over all steps and by quarter of `minutes` (the training time, by the steps' end times)."""

        def rate(rows: list[tuple[float, float, float]]) -> float:
            seconds = sum(r[1] for r in rows)
            return sum(r[2] for r in rows) / seconds if seconds else 0.0

        if not self.rows:
            return {}
        quarter = minutes * 60 / 4
        by_quarter = [rate([r for r in self.rows if q * quarter <= r[0] < (q + 1) * quarter]) for q in range(4)]
        return {"step_tok_s": rate(self.rows), "step_tok_s_by_quarter": by_quarter}


def hf_translate(
    model, tok, lines: list[str], device: str, beam: int = 4, length_penalty: float = 1.0, batch: int = 64
) -> list[str]:
    out: list[str] = []
    order = sorted(range(len(lines)), key=lambda i: len(lines[i]))
    res: dict[int, str] = {}
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            ids = [tok.encode_src([lines[i]])[0][:254] + [3] for i in idx]
            S = max(map(len, ids))
            x = torch.zeros(len(ids), S, dtype=torch.long)
            for r, seq in enumerate(ids):
                x[r, : len(seq)] = torch.tensor(seq)
            x = x.to(device)
            gen = model.generate(
                input_ids=x,
                attention_mask=(x != 0).long(),
                num_beams=beam,
                length_penalty=length_penalty,
                max_new_tokens=int(1.5 * S + 10),
            )
            for r, i in enumerate(idx):
                res[i] = tok.decode_tgt(gen[r].tolist())
    out = [res[i] for i in range(len(lines))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "multi30k-small.yaml", help="lucidmt's recipe")
    ap.add_argument("--max-tokens", type=int, help="target tokens per batch (default: the recipe's; peer 4096)")
    ap.add_argument("--warmup", type=int, help="warm-up steps (default: the recipe's; peer 400)")
    ap.add_argument("--valid-every", type=int, help="lucidmt's validation interval (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, help="lucidmt's peak learning rate (default: the recipe's)")
    ap.add_argument("--peer-lr", type=float, default=1e-3, help="the plain peer recipe's peak learning rate")
    ap.add_argument(
        "--peer-recipe",
        choices=("plain", "same"),
        default="plain",
        help="the peer's recipe: plain (the issue's) or same (lucidmt's --recipe: only the toolkit differs)",
    )
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument(
        "--interleave",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="train the two systems in alternating turns of this many seconds of their own clocks (each clock "
        "stands still while the other trains), so that a drift in the machine's pace hits both alike; "
        "default 0: one after the other",
    )
    ap.add_argument("--lucidmt-run", help="score this finished lucidmt run (from this script or lucidmt train)")
    ap.add_argument("--out", default=str(out_dir() / "quality"))
    a = ap.parse_args()
    if a.interleave and (a.skip_peer or a.lucidmt_run):
        ap.error("--interleave trains both systems: not with --skip-peer or --lucidmt-run")
    torch.set_num_threads(a.threads)
    tune_allocator()  # the same process-wide allocator settings for both systems
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = prepared_multi30k(out_dir() / "m30k-en-de")
    test = load_dataset("multi30k", "test_2016_flickr", "en", "de")
    run = out / f"lucidmt-{a.preset}-{int(a.minutes)}min-{int(time.time())}"

    rows, peer = [], None
    if a.lucidmt_run:  # a run trained earlier: by this script (its choices are in selection.json) or by `lucidmt train`
        run = Path(a.lucidmt_run)
        if (run / "selection.json").exists():
            info = json.loads((run / "selection.json").read_text())
            ckpt = run / info["checkpoint"]
        else:
            summary = json.loads((run / "train_summary.json").read_text())
            ckpt, info = choose(prep, run, a, summary["elapsed_minutes"], summary["steps"])
            (run / "selection.json").write_text(json.dumps(info, indent=2))
    else:
        if a.interleave:
            peer = Peer(prep, a)
        ckpt, info = train_lucidmt(prep, run, a, peer)
        (run / "selection.json").write_text(json.dumps(info, indent=2))
    tr = Translator.load(ckpt, device=a.device)
    hyps = tr.translate(test.src, beam_size=info["beam"], length_penalty=info["length_penalty"])
    (run / "test_2016_flickr.hyp.de").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    s = score(hyps, test.tgt, "de")
    info.update(StepSpeed.of_run(run).summary(info["train_minutes"]))
    rows.append(("lucidmt " + a.preset, info, s))
    if not a.skip_peer:
        model, pinfo = (peer or Peer(prep, a)).finish()
        hyps = hf_translate(model, Prepared(prep).tokenizer, test.src, a.device, pinfo["beam"], pinfo["length_penalty"])
        rows.append((f"HF MarianMTModel {a.preset}, {a.peer_recipe} recipe", pinfo, score(hyps, test.tgt, "de")))

    print(f"\nMulti30k en-de, test_2016_flickr (1,000 sentences), {hardware()}, budget {a.minutes:g} min of training\n")
    print(
        "| system | train min | steps | step tok/s | checkpoint | beam / lp | valid BLEU | sacreBLEU | chrF "
        "| tok. BLEU (lc) |"
    )
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for name, i, sc in rows:
        print(
            f"| {name} | {i['train_minutes']:.1f} | {i['steps']:,} | {i.get('step_tok_s', 0):,.0f} | "
            f"{i.get('checkpoint', 'last')} | "
            f"{i['beam']} / {i['length_penalty']} | {i['valid_bleu']:.2f} | "
            f"{sc.bleu:.2f} | {sc.chrf:.2f} | {sc.tok_bleu:.2f} |"
        )
    if len(rows) == 2:
        print(f"\nsacreBLEU difference: {rows[0][2].bleu - rows[1][2].bleu:+.2f}")
    print("\ntarget tokens/s inside training steps, by quarter of the budget (the machine's pace drifts too):")
    for name, i, _ in rows:
        print(f"- {name}: " + " / ".join(f"{v:,.0f}" for v in i.get("step_tok_s_by_quarter", [])))
    print(
        f"\nsignatures: BLEU `{rows[0][2].bleu_signature}`, chrF `{rows[0][2].chrf_signature}`, "
        f"tokenised `{rows[0][2].tok_bleu_signature}`"
    )
    summary = {"rows": [{"system": n, **i, **sc.to_dict()} for n, i, sc in rows], "machine": platform.node()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
