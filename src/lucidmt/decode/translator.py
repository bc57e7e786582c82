"""`Translator`: a trained model, its tokenizer and its decoding, behind a batch-first API on raw strings.

    tr = Translator.load("runs/m30k")                 # a run folder (its best checkpoint) or a checkpoint
    tr.translate(["A dog runs."])                    # -> ["Ein Hund rennt."]
    tr.translate_batch(texts, beam_size=5, n_best=3, return_attention=True)   # scores, ids, attention
    Translator.load("runs/m30k", quantize="int8")     # int8 linear layers (CPU); bf16/fp16 on CUDA
    Translator.load("runs/m30k", engine="ct2")        # decode with CTranslate2 (or load an exported folder)
    Translator.load("runs/m30k", workers=2)           # batches decoded in 2 processes (CPU throughput)

Sentences are sorted by length and cut into batches by a token budget; outputs come back in input order.
Empty lines give empty outputs; over-long inputs are truncated with a warning. The search runs natively
(`decode.search` over the model) or in an external engine (`engine.search(source_ids, options)`); everything
around it (tokenisation, batching, ordering, results) is the same for both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunConfig
from ..data.tokenizer import Tokenizer
from ..model.transformer import Seq2Seq, count_parameters
from .search import DecodeOptions, Hyp, ModelScorer, search

log = logging.getLogger("lucidmt")


@dataclass
class Hypothesis:
    text: str
    token_ids: list[int]  # target subword ids, eos excluded
    tokens: list[str]  # target subword pieces, "</s>" last
    score: float  # ranking score (length-normalised log-probability under beam search)
    logprob: float  # total log-probability
    token_logprobs: list[float] | None = None  # one per token in `tokens`
    attention: list[list[float]] | None = None  # (len(tokens), len(source_tokens)), mean over heads and layers
    attention_layers: list | None = None  # per layer (H, len(tokens), len(source_tokens)), when asked for


@dataclass
class Translation:
    source: str
    source_tokens: list[str]  # source pieces, "</s>" last
    hypotheses: list[Hypothesis] = field(default_factory=list)
    truncated: bool = False

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]


class Translator:
    def __init__(
        self,
        model: Seq2Seq,
        tokenizer: Tokenizer,
        config: RunConfig | None = None,
        device: str | torch.device = "cpu",
        max_batch_tokens: int = 6000,
        max_batch_size: int = 64,
        scorer_factory=None,
        engine=None,
        model_loader=None,
    ):
        self._model = model  # None when an external engine decodes, or until `model_loader` builds it
        self._model_loader = model_loader  # () -> (model, scorer_factory): loads the model on first use
        self.tokenizer = tokenizer
        self.config = config
        self.device = torch.device(device)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.scorer_factory = scorer_factory or (lambda: ModelScorer(self.model))
        self.engine = engine
        if model is not None:
            self.max_positions = model.cfg.max_positions
        elif engine is not None:
            self.max_positions = engine.max_positions
        else:
            self.max_positions = config.model.max_positions
        self.precision = None  # what `for_inference` will make of a model not loaded yet (int8, fp32, ...)
        self.source = ""  # where it was loaded from
        self.pool = None  # a `workers.WorkerPool` when batches are decoded in worker processes

    @property
    def model(self) -> Seq2Seq | None:
        """The decoding model (None with an external engine). With worker processes the parent process loads
        its own copy only when something other than translation needs it (`score`, `explain`)."""
        if self._model is None and self._model_loader is not None:
            loader, self._model_loader = self._model_loader, None
            self._model, factory = loader()
            if factory is not None:
                self.scorer_factory = factory
        return self._model

    @model.setter
    def model(self, model: Seq2Seq | None) -> None:
        self._model, self._model_loader = model, None

    @property
    def parameter_count(self) -> int | None:
        """Parameters of the model (shared tensors once), without loading it when it is not loaded yet."""
        if self.engine is not None:
            return None
        if self._model is None and self.config is not None:
            with torch.device("meta"):
                return count_parameters(Seq2Seq(self.config.model))
        return count_parameters(self.model) if self.model is not None else None

    @property
    def parallel(self) -> int:
        """How many batches decode at once: worker processes, CTranslate2's inter_threads, or 1."""
        if self.pool is not None:
            return self.pool.size
        return max(1, getattr(self.engine, "workers", 1))

    def close(self) -> None:
        """Stop the decoding worker processes, if any (`workers` > 1)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> Translator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """Which engine and precision decode: native/fp32, native/int8, ct2/int8, ... (for signatures)."""
        if self.engine is not None:
            return self.engine.name
        from .quantize import precision

        if self._model is None and self.precision is not None:
            return f"native/{self.precision}"
        return f"native/{precision(self.model)}"

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        checkpoints: list[str | Path] | None = None,
        quantize: str | None = None,
        engine: str = "native",
        threads: int = 0,
        prepack: bool = True,
        workers: int = 1,
        **kwargs,
    ) -> Translator:
        """Load a run folder (its best checkpoint) or a checkpoint folder.

        `checkpoints` adds ensemble members whose log-probabilities are averaged with the first model's.
        `quantize`: "int8" (dynamic int8 linear layers, CPU), "bf16" or "fp16" (CUDA); None keeps fp32.
        `engine="ct2"` decodes with CTranslate2: `path` is then a folder from `lucidmt export --to ctranslate2`
        or a checkpoint, converted on the fly; `quantize` picks CTranslate2's compute type (also "int16"), and
        `threads` its intra-op threads (0: as many as torch uses). `prepack` (CPU fp32): keep the decoder's
        weights in MKL's packed GEMM layout, 10-20% faster for extra memory. `workers` > 1 (native engine, CPU):
        decode batches in that many processes, each with `threads` torch threads (0: torch's threads / workers),
        for throughput (see `lucidmt.decode.workers`); `close()` stops them. With `engine="ct2"`, `workers` is
        CTranslate2's inter_threads (that many batches at once in one process). `kwargs` go to the constructor.
        """
        from ..errors import ConfigurationError
        from ..train.checkpoint import load_checkpoint, load_model, read_checkpoint, resolve_checkpoint
        from .quantize import check_quantize, for_inference

        if workers < 1:
            raise ConfigurationError(f"workers must be >= 1, got {workers}")
        if engine == "ct2":
            if checkpoints:
                raise ConfigurationError("ensembles (--checkpoints) need the native engine")
            from ..interop.ctranslate2 import CT2Engine

            eng = CT2Engine.load(path, None if device is None else str(device), quantize, threads, workers)
            tr = cls(None, eng.tokenizer, eng.config, "cpu", engine=eng, **kwargs)
            tr.source = eng.source
            return tr
        if engine != "native":
            raise ConfigurationError(f"engine={engine!r}: expected native or ct2")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if workers > 1 and device.type != "cpu":
            raise ConfigurationError("workers > 1 is for CPU decoding (a GPU runs one process)")
        quantize = check_quantize(quantize)
        folder = resolve_checkpoint(path)
        cfg, tok = read_checkpoint(folder)

        def build():
            model = for_inference(load_model(folder, cfg, device), quantize, prepack=prepack)
            if not checkpoints:
                return model, None
            from .search import EnsembleScorer

            members = [model] + [
                for_inference(load_checkpoint(resolve_checkpoint(p), device)[0], quantize, prepack=prepack)
                for p in checkpoints
            ]
            return model, lambda: EnsembleScorer([ModelScorer(m) for m in members])

        if workers == 1:
            model, factory = build()
            tr = cls(model, tok, cfg, device, scorer_factory=factory, **kwargs)
        else:  # the workers decode; this process loads its copy only if `score` or `explain` need it
            from ..runtime import threads_per_worker
            from .workers import WorkerPool

            tr = cls(None, tok, cfg, device, model_loader=build, **kwargs)
            tr.precision = "fp32" if quantize == "none" else quantize
            load_kwargs = dict(path=str(folder), device="cpu", checkpoints=checkpoints, quantize=quantize,
                               prepack=prepack)  # fmt: skip
            tr.pool = WorkerPool(load_kwargs, workers, threads_per_worker(threads, workers))
        tr.source = str(folder)
        return tr

    # -- public API -----------------------------------------------------------------------------------------
    def translate(self, texts: list[str], beam_size: int = 4, **options) -> list[str]:
        """Raw strings in, best translations out (same order)."""
        return [t.best.text if t.hypotheses else "" for t in self.translate_batch(texts, beam_size, **options)]

    def translate_batch(
        self,
        texts: list[str],
        beam_size: int = 4,
        return_attention: bool = False,
        return_attention_layers: bool = False,
        progress: bool = False,
        **options,
    ) -> list[Translation]:
        """Per input, the n-best hypotheses with scores, ids, per-token log-probabilities and, on request,
        cross-attention (from one teacher-forced pass over the chosen hypotheses)."""
        if isinstance(texts, str):
            raise TypeError("translate_batch expects a list of strings, not a string")
        opts = DecodeOptions(beam_size=beam_size, **options)
        opts.validate()
        if self.engine is not None and (return_attention or return_attention_layers):
            from ..errors import ConfigurationError

            raise ConfigurationError(f"attention weights need the native engine (this translator uses {self.backend})")
        src_ids, truncated = self._encode_sources(texts)
        results: list[Translation | None] = [None] * len(texts)
        for i, text in enumerate(texts):
            if not src_ids[i]:  # empty input -> empty output, no decoding
                results[i] = Translation(text, [], [Hypothesis("", [], [], 0.0, 0.0, [], None)])
        todo = [i for i in range(len(texts)) if results[i] is None]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), unit="sent", desc="translate")
        batches = list(self._batches(todo, src_ids, opts.beam_size if not opts.sampling else opts.n_best))
        want_att = return_attention or return_attention_layers
        jobs = [([src_ids[i] + [self.tokenizer.eos_id] for i in batch], opts, want_att) for batch in batches]
        if self.pool is not None and jobs:
            done = self.pool.map(jobs)  # decoded in the worker processes, in whatever order they finish
        elif self.parallel > 1:  # CTranslate2 with inter_threads
            waits = [self.engine.submit(seqs, o) for seqs, o, _ in jobs]  # all batches queued at once
            done = ((k, (wait(), None)) for k, wait in enumerate(waits))
        else:
            done = ((k, self._decode(*job)) for k, job in enumerate(jobs))
        for k, (hyps, att) in done:
            for j, i in enumerate(batches[k]):
                a = att[j] if att else None
                results[i] = self._result(texts[i], src_ids[i], hyps[j], a, truncated[i], return_attention,
                                          return_attention_layers)  # fmt: skip
            if bar is not None:
                bar.update(len(batches[k]))
        if bar is not None:
            bar.close()
        return results  # type: ignore[return-value]

    def _decode(self, seqs: list[list[int]], opts: DecodeOptions, want_attention: bool):
        """One batch of source ids (eos included) -> per sentence its hypotheses, and cross-attention if asked."""
        if self.engine is not None:
            return self.engine.search(seqs, opts), None
        with torch.inference_mode():
            src = self._pad(seqs)
            hyps = search(self.scorer_factory(), src, opts, self.max_positions)
            return hyps, (self._attention(src, hyps) if want_attention else None)

    def score(self, sources: list[str], targets: list[str]) -> list[list[float]]:
        """Forced decoding: log-probability of each target token (eos included) given its source."""
        out: list[list[float]] = []
        if self.engine is not None:
            src = [ids + [self.tokenizer.eos_id] for ids in self._encode_sources(list(sources))[0]]
            tgt = [t[: self.max_positions - 1] for t in self.tokenizer.encode_tgt(list(targets))]
            return self.engine.score(src, tgt)
        with torch.inference_mode():
            for s, t in zip(sources, targets, strict=True):
                src = self._pad([self._encode_sources([s])[0][0] + [self.tokenizer.eos_id]])
                tgt = self.tokenizer.encode_tgt([t])[0][: self.max_positions - 1]
                tgt_in = torch.tensor([[self.tokenizer.bos_id] + tgt], device=self.device)
                tgt_out = torch.tensor([tgt + [self.tokenizer.eos_id]], device=self.device)
                lp = torch.log_softmax(self.model(src, tgt_in).float(), -1).gather(2, tgt_out[..., None])
                out.append(lp[0, :, 0].tolist())
        return out

    # -- internals --------------------------------------------------------------------------------------------
    def _encode_sources(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        ids = self.tokenizer.encode_src([t.strip() for t in texts])
        limit = self.max_positions - 1  # room for eos
        truncated = [len(x) > limit for x in ids]
        if any(truncated):
            n = sum(truncated)
            log.warning("%d input(s) longer than %d subwords were truncated", n, limit)
        return [x[:limit] for x in ids], truncated

    def _batches(self, todo: list[int], src_ids: list[list[int]], rows_per_sentence: int):
        order = sorted(todo, key=lambda i: len(src_ids[i]))
        batch: list[int] = []
        longest = 0
        for i in order:
            n = len(src_ids[i]) + 1
            too_many = (len(batch) + 1) * max(longest, n) * rows_per_sentence > self.max_batch_tokens
            if batch and (too_many or len(batch) >= self.max_batch_size):
                yield batch
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, n)
        if batch:
            yield batch

    def _pad(self, seqs: list[list[int]]) -> torch.Tensor:
        S = max(len(s) for s in seqs)
        out = torch.full((len(seqs), S), self.tokenizer.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return out.to(self.device)

    def _attention(self, src: torch.Tensor, hyps: list[list[Hyp]]) -> list[list[list[torch.Tensor]]]:
        """Cross-attention per hypothesis: list over layers of (H, T, S), from one teacher-forced pass."""
        flat = [(b, h) for b, hs in enumerate(hyps) for h in hs]
        tgt_in = self._pad([[self.tokenizer.bos_id] + h.tokens for _, h in flat])
        rows = torch.tensor([b for b, _ in flat], device=self.device)
        memory = self.model.encode(src.index_select(0, rows))
        out = self.model.decode(tgt_in, memory, need_weights=True)
        src_len = (src != self.tokenizer.pad_id).sum(1).tolist()
        per_hyp = []
        for k, (b, h) in enumerate(flat):
            T = len(h.tokens) + 1
            per_hyp.append([w[k, :, :T, : src_len[b]].float().cpu() for w in out.cross_attention])
        grouped, k = [], 0
        for hs in hyps:
            grouped.append(per_hyp[k : k + len(hs)])
            k += len(hs)
        return grouped

    def _result(self, text, src_ids, hyps, att, truncated, want_mean, want_layers) -> Translation:
        tok = self.tokenizer
        out = Translation(text, tok.src_id_to_piece(src_ids + [tok.eos_id]), truncated=truncated)
        for k, h in enumerate(hyps):
            hyp = Hypothesis(
                text=tok.decode_tgt(h.tokens),
                token_ids=list(h.tokens),
                tokens=tok.tgt_id_to_piece(h.tokens + [tok.eos_id]),
                score=h.score,
                logprob=h.logprob,
                token_logprobs=None if h.token_logprobs is None else list(h.token_logprobs),
            )
            if att is not None:
                layers = att[k]
                if want_mean:
                    hyp.attention = torch.stack(layers).mean(dim=(0, 1)).tolist()
                if want_layers:
                    hyp.attention_layers = [w.tolist() for w in layers]
            out.hypotheses.append(hyp)
        return out

    def explain(self, text: str, target: str | None = None, beam_size: int = 4, **options):
        """Translate one sentence (or take `target`) and explain it: cross-attention, word alignment, integrated
        gradients and ALTI+ attributions, token probabilities. See `lucidmt.explain.explain` for the options."""
        from ..explain import explain

        return explain(self, text, target=target, beam_size=beam_size, **options)


def load(path: str | Path, device: str | torch.device | None = None, **kwargs) -> Translator:
    """`lucidmt.load(run_or_checkpoint)`: shorthand for `Translator.load`."""
    return Translator.load(path, device=device, **kwargs)
