"""The training loop: token-budget batches -> Seq2Seq -> label-smoothed loss -> AdamW; validate, checkpoint.

One loop serves one CPU process, one GPU, and N processes under `torchrun` (DDP, or FSDP with
`train.parallel=fsdp`). Only rank 0 writes files; every decision that changes control flow (stop, early stop) is
broadcast from rank 0 so ranks never diverge. Under FSDP each rank holds a shard of every parameter, gradient and
optimizer state; at each validation the full weights are gathered into a plain copy on rank 0, which validates,
decodes and saves them.
A run can be killed at any moment and `--resume` continues bit-exactly from its last checkpoint: the
checkpoint holds the optimizer, the step, the position in the epoch's batch list and every rank's RNG state,
and the batch list itself is a pure function of (seed, epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..data.batching import collate, lengths, make_batches, shard
from ..data.prepare import Prepared
from ..data.tokenizer import Tokenizer, tokenizer_fingerprint
from ..errors import ConfigurationError
from ..io import write_json
from ..model import Seq2Seq, count_parameters
from . import distributed
from .checkpoint import (
    list_checkpoints,
    load_state,
    load_train_state,
    load_weights,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from .loss import Seq2SeqLoss
from .metrics import MetricsLog, plot_learning_curve
from .schedule import last_warmup_step, learning_rate


@dataclass
class TrainResult:
    run_dir: str
    steps: int
    epochs_completed: int
    elapsed_minutes: float
    stopped_by: str
    best_step: int
    best_metric: float | None
    metric: str
    last_valid_nll: float | None
    last_valid_bleu: float | None
    parameters: int


FINETUNE_FREE = {"dropout", "attention_dropout", "activation_dropout"}  # what fine-tuning may change in the model


def finetune_config(checkpoint: str | Path, recipe: str = "small") -> RunConfig:
    """A configuration that fine-tunes `checkpoint`: its model section, the training recipe of preset `recipe`."""
    from ..config import preset

    folder = resolve_checkpoint(checkpoint)
    cfg = preset(recipe)
    cfg.model = RunConfig.load(folder / "config.yaml").model
    cfg.train.init_from = str(checkpoint)
    return cfg


def adamw(groups, **kwargs) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel (one pass over each parameter; on CPU 2.9x faster than the default
    multi-tensor path, 32 against 92 ms per step for the base preset), or the default where fused is not
    supported (CPU before PyTorch 2.4, other devices)."""
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, **kwargs)


def _rekey(state: dict, key: dict) -> dict:
    """An optimizer state dict with each parameter key k replaced by key[k] (position <-> name)."""
    return {
        "state": {key[k]: v for k, v in state["state"].items()},
        "param_groups": [dict(g, params=[key[k] for k in g["params"]]) for g in state["param_groups"]],
    }


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        data: Prepared,
        run_dir: str | Path,
        resume: bool = False,
        device: str | None = None,
        log=print,
        progress: bool = True,
        between_steps: Callable[[int], None] | None = None,
    ):
        self.dist = distributed.setup(device)
        self.between_steps = between_steps
        self.device = self.dist.device
        self.data, self.run_dir, self.log = data, Path(run_dir), (log if self.dist.main else (lambda *a: None))
        self.progress = progress and self.dist.main
        tok = data.tokenizer
        self.tok = tok

        if resume:
            ckpts = list_checkpoints(self.run_dir)
            if not ckpts:
                raise ConfigurationError(f"{self.run_dir}: nothing to resume (no checkpoints/step-*)")
            self.resume_from = ckpts[-1]
        else:
            self.resume_from = None
            if self.run_dir.exists() and any(self.run_dir.iterdir()) and self.dist.main:
                raise ConfigurationError(
                    f"{self.run_dir} already holds a run; pass --resume to continue it or choose a new --out"
                )

        # what the data decides
        m = cfg.model
        m.src_vocab_size, m.tgt_vocab_size = tok.info.src_vocab_size, tok.info.tgt_vocab_size
        m.pad_id, m.unk_id, m.bos_id, m.eos_id = tok.info.pad_id, tok.info.unk_id, tok.info.bos_id, tok.info.eos_id
        if not tok.info.shared_vocab and m.share_embeddings:
            self.log("separate vocabularies: source and target embeddings are not shared")
            m.share_embeddings = False
        cfg.data.path = str(data.folder)
        cfg.data.src_lang = cfg.data.src_lang or data.manifest.get("src_lang", "")
        cfg.data.tgt_lang = cfg.data.tgt_lang or data.manifest.get("tgt_lang", "")
        cfg.validate()
        self.cfg = cfg
        t = cfg.train
        if t.schedule == "cosine" and not (t.max_steps or t.max_minutes):
            raise ConfigurationError("train.schedule=cosine needs a budget to anneal over: max_steps or max_minutes")
        self.metric = t.early_stop_metric
        if self.metric == "bleu" and not t.valid_bleu:
            self.log("train.valid_bleu is off: the best checkpoint is chosen by validation loss")
            self.metric = "loss"
        if t.threads:
            torch.set_num_threads(t.threads)

        torch.manual_seed(t.seed)
        self.model = Seq2Seq(cfg.model).to(self.device)
        if t.init_from and self.resume_from is None:
            self._init_from(Path(t.init_from))
        self.n_params = count_parameters(self.model)
        self.fsdp = t.parallel == "fsdp" and self.dist.enabled
        if t.parallel == "fsdp" and not self.dist.enabled:
            self.log("train.parallel=fsdp shards over the processes of `torchrun`; in one process it trains as usual")
        self.loss = Seq2SeqLoss(self.model, t.label_smoothing)
        self.eval_model = self.model  # what validates and what is saved: under FSDP a full copy on rank 0
        if self.fsdp:
            if self.resume_from is not None:  # weights go in before sharding; the optimizer state after
                load_weights(self.model, self.resume_from / "model.safetensors")
            dec = self.model.decoder.layers  # cross-attention K/V run before the decoder layers: units of their own
            units = [*(layer.cross_attn.kv for layer in dec), *self.model.encoder.layers, *dec]
            distributed.fsdp_shard(self.loss, units)
            self.eval_model = Seq2Seq(cfg.model).to(self.device) if self.dist.main else None
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        self.optimizer = adamw(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr,
            betas=tuple(t.betas),
            eps=1e-8 if self.device.type == "cuda" else 1e-9,
        )
        self.train_model: nn.Module = self.loss
        if self.dist.enabled and not self.fsdp:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.loss, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if t.compile:
            self.train_model = torch.compile(self.train_model, dynamic=True)
        amp = t.amp if t.amp != "auto" else ("bf16" if self.device.type == "cuda" else "fp32")
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16))
            if amp == "bf16"
            else contextlib.nullcontext
        )

        self.train_src, self.train_tgt = data.ids("train")
        self.valid_src, self.valid_tgt = data.ids("valid")
        self.valid_text = data.text("valid")
        self.step = self.epoch = self.batch_pos = 0
        self.elapsed = 0.0
        self.warmup_s = 0.0  # seconds the warm-up took (set when it ends): a time-budgeted cosine decays after it
        self.best_metric: float | None = None
        self.best_step = 0
        self.bad_validations = 0
        self.last_valid: dict = {}
        torch.manual_seed(t.seed * 1000 + self.dist.rank)  # dropout stream of this rank
        if self.resume_from is not None:
            self._restore(self.resume_from)

    def _init_from(self, path: Path) -> None:
        """Fine-tuning: the weights of a trained (or imported) model, checked against the data and the config."""
        folder = resolve_checkpoint(path)
        base = RunConfig.load(folder / "config.yaml").model
        ours, theirs = tokenizer_fingerprint(self.tok), tokenizer_fingerprint(Tokenizer(folder / "tokenizer"))
        if ours != theirs:
            raise ConfigurationError(
                f"{self.data.folder} was tokenized differently from {folder}: prepare the data with "
                f"`lucidmt prepare ... --tokenizer {path}` to fine-tune that model"
            )
        differ = [
            f"model.{f.name}: {getattr(base, f.name)!r} there, {getattr(self.cfg.model, f.name)!r} here"
            for f in dataclasses.fields(base)
            if f.name not in FINETUNE_FREE and getattr(base, f.name) != getattr(self.cfg.model, f.name)
        ]
        if differ:
            raise ConfigurationError(f"train.init_from={path}: the architecture differs; " + "; ".join(differ))
        load_weights(self.model, folder / "model.safetensors")
        self.log(f"fine-tuning from {folder}")

    # -- state ----------------------------------------------------------------------------------------------
    def _rng_states(self) -> list[torch.Tensor]:
        mine = torch.get_rng_state()
        if not self.dist.enabled:
            return [mine]
        gathered: list = [None] * self.dist.world
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    def local_parameters(self) -> int:
        """Parameter elements this rank stores: all of them, or under FSDP its shard of each."""
        from torch.distributed.tensor import DTensor

        return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in self.model.parameters())

    def _parameter_order(self) -> list[str]:
        """The optimizer's parameters by name, in the order of their positions in its state dict."""
        names = {p: n for n, p in self.model.named_parameters()}
        return [names[p] for g in self.optimizer.param_groups for p in g["params"]]

    def _names(self, state: dict) -> dict:
        """An optimizer state keyed by position -> keyed by parameter name (a one-process run resumed by FSDP)."""
        return _rekey(state, dict(enumerate(self._parameter_order())))

    def _positions(self, state: dict) -> dict:
        """An optimizer state keyed by parameter name -> keyed by position (an FSDP run resumed without FSDP)."""
        return _rekey(state, {n: i for i, n in enumerate(self._parameter_order())})

    def _snapshot(self) -> tuple[list[torch.Tensor], dict | None]:
        """What a checkpoint needs from every rank (collective): the RNG states and, under FSDP, the full
        optimizer state, with the full weights loaded into rank 0's `eval_model`."""
        rng = self._rng_states()
        if not self.fsdp:
            return rng, None
        weights, optimizer = distributed.fsdp_full_state(self.model, self.optimizer)
        if self.dist.main:
            load_state(self.eval_model, weights, "the gathered FSDP weights")
        return rng, optimizer

    def _train_state(self, rng: list[torch.Tensor], optimizer: dict | None = None) -> dict:
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_pos": self.batch_pos,
            "elapsed": self.elapsed,
            "warmup_s": self.warmup_s,
            "optimizer": self.optimizer.state_dict() if optimizer is None else optimizer,
            "optimizer_by_name": optimizer is not None,  # FSDP: keyed by parameter name, not position
            "rng": rng,
            "world": self.dist.world,
            "best_metric": self.best_metric if self.best_metric is not None else float("nan"),
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _restore(self, folder: Path) -> None:
        st = load_train_state(folder)
        optimizer = st["optimizer"]  # keyed by position (one process, DDP) or by parameter name (FSDP)
        by_name = bool(st.get("optimizer_by_name", False))
        if self.fsdp:
            by_name_state = optimizer if by_name else self._names(optimizer)
            distributed.fsdp_load_optimizer(self.model, self.optimizer, by_name_state)
        else:
            load_weights(self.model, folder / "model.safetensors")
            self.optimizer.load_state_dict(self._positions(optimizer) if by_name else optimizer)
        self.step, self.epoch, self.batch_pos = int(st["step"]), int(st["epoch"]), int(st["batch_pos"])
        self.elapsed = float(st["elapsed"])
        self.warmup_s = float(st.get("warmup_s", 0.0))  # states from before it was recorded: decay from the start
        bm = float(st["best_metric"])
        self.best_metric = None if math.isnan(bm) else bm
        self.best_step, self.bad_validations = int(st["best_step"]), int(st["bad_validations"])
        rng = st["rng"]
        if int(st["world"]) == self.dist.world:
            torch.set_rng_state(rng[self.dist.rank])
        else:
            self.log(f"resuming with {self.dist.world} processes instead of {st['world']}: dropout RNG re-seeded")
        if "cuda_rng" in st and self.device.type == "cuda":
            torch.cuda.set_rng_state(st["cuda_rng"], self.device)
        self.log(f"resumed from {folder} at step {self.step} (epoch {self.epoch}, batch {self.batch_pos})")

    # -- data -----------------------------------------------------------------------------------------------
    def _epoch_data(self, epoch: int):
        src, tgt = self.train_src, self.train_tgt
        t = self.cfg.train
        if t.subword_alpha > 0:  # subword regularisation: a fresh sampled segmentation every epoch
            rng = np.random.default_rng([t.seed, epoch, 7919])
            s_text, t_text = self.data.text("train")
            cap = self.cfg.model.max_positions - 1
            enc = lambda seqs: [np.asarray(x[:cap], dtype=np.int32) for x in seqs]
            src = enc(self.tok.sample_src(s_text, t.subword_alpha, rng))
            tgt = enc(self.tok.sample_tgt(t_text, t.subword_alpha, rng))
        batches = make_batches(lengths(src), lengths(tgt), t.max_tokens, t.seed, epoch)
        return src, tgt, shard(batches, self.dist.rank, self.dist.world)

    # -- loop -----------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        t, cfg = self.cfg.train, self.cfg
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / "config.yaml")
        metrics = MetricsLog(self.run_dir) if self.dist.main else None
        self.log(
            f"model: {self.n_params:,} parameters | device {self.device} x{self.dist.world} | "
            f"{len(self.train_src):,} training pairs | max_tokens {t.max_tokens} x accum {t.accum_steps}"
        )
        if self.fsdp:
            mine = self.local_parameters()
            share = mine / self.n_params
            self.log(f"fsdp: rank 0 holds {mine:,} parameter elements ({share:.0%}), their gradients and Adam state")
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.max_steps or None, initial=self.step, unit="step", dynamic_ncols=True, mininterval=1)
        self.model.train()
        start = time.perf_counter() - self.elapsed
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0.0, "time": 0.0}
        stopped_by = ""
        last_validated = self.step if self.resume_from else -1
        first_step = self.step
        try:
            while not stopped_by:
                src, tgt, batches = self._epoch_data(self.epoch)
                while self.batch_pos < len(batches) and not stopped_by:
                    if self.between_steps is not None and self.step > first_step:  # so never after the last step
                        paused = time.perf_counter()
                        self.between_steps(self.step)
                        start += time.perf_counter() - paused  # the run's clock stands still meanwhile
                    group = batches[self.batch_pos : self.batch_pos + t.accum_steps]
                    t0 = time.perf_counter()
                    loss, nll, ntok = self._train_step(src, tgt, group)
                    self.batch_pos += len(group)
                    self.step += 1
                    window["time"] += time.perf_counter() - t0
                    window["loss"] += loss
                    window["nll"] += nll
                    window["tokens"] += ntok
                    self.elapsed = time.perf_counter() - start
                    if self.step % t.log_every == 0 and metrics is not None:
                        row = self._log_row(window)
                        metrics.write(row)
                        if bar is not None:
                            bar.set_postfix(
                                loss=f"{row['train_loss']:.3f}",
                                lr=f"{row['lr']:.2e}",
                                tok_s=f"{row['tgt_tokens_per_s']:.0f}",
                            )
                        window = {k: 0.0 for k in window}
                    if bar is not None:
                        bar.update(1)
                    stopped_by = self._budget_reason(self.elapsed)
                    if self.step % t.valid_every == 0 or stopped_by:
                        stop_early = self._validate_and_save(metrics)
                        last_validated = self.step
                        stopped_by = stopped_by or ("early stopping" if stop_early else "")
                if self.batch_pos >= len(batches):
                    self.epoch += 1
                    self.batch_pos = 0
                    if t.max_epochs and self.epoch >= t.max_epochs and not stopped_by:
                        stopped_by = "max_epochs"
                        if last_validated != self.step:
                            self._validate_and_save(metrics)
                            last_validated = self.step
        except KeyboardInterrupt:
            stopped_by = "interrupted"
            self.log("interrupted: saving a checkpoint so that --resume can continue")
            if last_validated != self.step:
                snapshot = self._snapshot()
                if self.dist.main:
                    self._save(*snapshot)
        finally:
            if bar is not None:
                bar.close()
        result = TrainResult(
            run_dir=str(self.run_dir),
            steps=self.step,
            epochs_completed=self.epoch,
            elapsed_minutes=self.elapsed / 60,
            stopped_by=stopped_by,
            best_step=self.best_step,
            best_metric=self.best_metric,
            metric=self.metric,
            last_valid_nll=self.last_valid.get("valid_nll"),
            last_valid_bleu=self.last_valid.get("valid_bleu"),
            parameters=self.n_params,
        )
        if self.dist.main:
            write_json(self.run_dir / "train_summary.json", asdict(result))
            if metrics is not None:
                metrics.close()
        self.dist.barrier()
        return result

    def _train_step(self, src, tgt, group: list[list[int]]) -> tuple[float, float, float]:
        t = self.cfg.train
        batches = [collate(src, tgt, idx, self.tok.pad_id, self.tok.bos_id, self.tok.eos_id) for idx in group]
        local_tokens = float(sum(b.n_tgt_tokens for b in batches))
        # rank 0's clock sets the learning rate of every rank (replicas must take identical steps)
        global_tokens, clock = self.dist.all_sum([local_tokens, self.elapsed if self.dist.main else 0.0])
        if self.step + 1 == last_warmup_step(t):  # the last warm-up step: the decay is timed from here
            self.warmup_s = clock
        lr = learning_rate(self.step + 1, t, clock, self.warmup_s)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss_total = nll_total = 0.0
        for i, b in enumerate(batches):
            b = b.to(self.device)
            sync = not self.dist.enabled or i == len(batches) - 1
            if self.fsdp:
                self.loss.set_requires_gradient_sync(sync)
            ctx = contextlib.nullcontext() if sync or self.fsdp else self.train_model.no_sync()
            with ctx, self.autocast():
                loss, nll = self.train_model(b.src, b.tgt_in, b.tgt_out)
            # DDP averages gradients over ranks; scaling by world/global_tokens makes the result a per-token mean
            (loss * (self.dist.world / global_tokens)).backward()
            loss_total += float(loss.detach())
            nll_total += float(nll.detach())
        if t.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_total, nll_total, local_tokens

    def _log_row(self, window: dict) -> dict:
        tokens = max(window["tokens"], 1.0)
        return {
            "step": self.step,
            "epoch": self.epoch,
            "train_loss": window["loss"] / tokens,
            "train_nll": window["nll"] / tokens,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tgt_tokens_per_s": window["tokens"] * self.dist.world / max(window["time"], 1e-9),
            "step_seconds": window["time"],  # time inside training steps in this window (validation excluded)
            "elapsed_min": self.elapsed / 60,
        }

    def _budget_reason(self, elapsed: float) -> str:
        t = self.cfg.train
        reasons = ["", "max_steps", "max_minutes"]
        code = 0
        if t.max_steps and self.step >= t.max_steps:
            code = 1
        elif t.max_minutes and elapsed >= t.max_minutes * 60:
            code = 2
        (code,) = self.dist.broadcast([code])  # rank 0's clock decides for every rank
        return reasons[int(code)]

    # -- validation -------------------------------------------------------------------------------------------
    def _validate_and_save(self, metrics: MetricsLog | None) -> bool:
        """Validate on rank 0, checkpoint, update the best model; returns the (shared) early-stop decision."""
        rng, optimizer = self._snapshot()  # collective: every rank takes part
        stop = 0.0
        if self.dist.main:
            t = self.cfg.train
            row = self.validate()
            value = row["valid_bleu"] if self.metric == "bleu" else row["valid_nll"]
            improved = self.best_metric is None or (
                value > self.best_metric if self.metric == "bleu" else value < self.best_metric
            )
            if improved:
                self.best_metric, self.best_step, self.bad_validations = value, self.step, 0
            else:
                self.bad_validations += 1
            row["best_step"] = self.best_step
            self.last_valid = row
            if metrics is not None:
                metrics.write(row)
            folder = self._save(rng, optimizer)
            if improved:
                save_checkpoint(self.run_dir / "best", self.eval_model, self.cfg, self.tok)
            prune_checkpoints(self.run_dir, t.keep_last)
            plot_learning_curve(self.run_dir)
            bleu = f" | BLEU {row['valid_bleu']:.2f}" if row.get("valid_bleu") is not None else ""
            self.log(
                f"step {self.step} | valid loss {row['valid_nll']:.3f} (ppl {row['valid_ppl']:.2f}){bleu} | "
                f"best step {self.best_step} | {folder.name}"
            )
            stop = 1.0 if t.patience and self.bad_validations >= t.patience else 0.0
        (stop,) = self.dist.broadcast([stop])
        return bool(stop)

    def _save(self, rng: list[torch.Tensor], optimizer: dict | None = None) -> Path:
        folder = self.run_dir / "checkpoints" / f"step-{self.step:07d}"
        return save_checkpoint(folder, self.eval_model, self.cfg, self.tok, self._train_state(rng, optimizer))

    @torch.inference_mode()
    def validate(self) -> dict:
        """Validation NLL per target token and (optionally) greedy BLEU on the validation set."""
        from ..decode.translator import Translator
        from ..evaluate import quick_bleu

        t, pad = self.cfg.train, self.tok.pad_id
        model = self.eval_model  # under FSDP, the full copy just gathered
        loss = self.loss if model is self.model else Seq2SeqLoss(model, t.label_smoothing)
        model.eval()
        nll_sum = tokens = 0.0
        batches = make_batches(lengths(self.valid_src), lengths(self.valid_tgt), t.max_tokens, 0, 0)
        for idx in batches:
            b = collate(self.valid_src, self.valid_tgt, idx, pad, self.tok.bos_id, self.tok.eos_id).to(self.device)
            with self.autocast():
                _, nll = loss(b.src, b.tgt_in, b.tgt_out)
            nll_sum += float(nll)
            tokens += b.n_tgt_tokens
        row = {"step": self.step, "epoch": self.epoch, "valid_nll": nll_sum / tokens}
        row["valid_ppl"] = math.exp(min(row["valid_nll"], 50))
        row["valid_bleu"] = None
        if t.valid_bleu:
            src_text, ref_text = self.valid_text
            n = t.valid_max_sentences or len(src_text)
            tr = Translator(model, self.tok, self.cfg, self.device)
            with self.autocast():
                hyps = tr.translate(src_text[:n], beam_size=1)
            row["valid_bleu"] = quick_bleu(hyps, ref_text[:n], self.cfg.data.tgt_lang)
        row["elapsed_min"] = self.elapsed / 60
        model.train()
        return row


def train(
    data: str | Path,
    out: str | Path,
    cfg: RunConfig | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    log=print,
    between_steps: Callable[[int], None] | None = None,
) -> TrainResult:
    """Python API of `lucidmt train`.

    `between_steps(step)`, if given, is called after every training step (and its validation, if any) but the one
    that ends the run, on every rank, and the time it takes is not counted: neither in the run's clock
    (`elapsed_min`, `max_minutes`, a time-annealed schedule) nor in tokens/s. It lets another job share the machine
    in turns without eating into this run's budget, e.g. a peer trained in alternating slices
    (benchmarks/quality_multi30k.py --interleave)."""
    from ..config import preset

    trainer = Trainer(
        cfg or preset("small"),
        Prepared(data),
        out,
        resume=resume,
        device=device,
        progress=progress,
        log=log,
        between_steps=between_steps,
    )
    try:
        return trainer.fit()
    finally:
        trainer.dist.close()
