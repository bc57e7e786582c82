"""CTranslate2: export a lucidmt checkpoint as a CTranslate2 model folder, and decode with it.

    lucidmt export RUN --to ctranslate2 OUT [--quantization int8|int16|float16]
    Translator.load(OUT_or_RUN, engine="ct2")

The exporter fills CTranslate2's own model specification (`TransformerSpec` of a `TransformerEncoderSpec` and a
`TransformerDecoderSpec`), which declares every weight the C++ runtime expects; `validate()` reports anything
missing before a byte is written, and the folder appears atomically. The layouts already agree: our fused
self-attention `qkv` rows (q, k, v) and cross-attention `kv` rows (k, v) are CTranslate2's fused projections;
position encodings (sinusoidal or learned) are written out as a table, so nothing depends on either side's
formula. The folder:

    model.bin, config.json, shared_vocabulary.json   CTranslate2's files (or source_/target_vocabulary.json)
    tokenizer/                                       lucidmt's tokenizer (SentencePiece model(s) + tokenizer.json)
    lucidmt.yaml                                     the run configuration (languages, max_positions)
    export.json                                      provenance: source checkpoint, quantization, versions

`CT2Engine` plugs into `Translator`, which keeps tokenising, batching and ordering; only the search runs in
CTranslate2. Its beam search is not ours: CTranslate2 normalises by length^alpha and stops after beam_size
finished hypotheses, while ours, with the GNMT penalty, goes on while a live beam could still win. For
`length_penalty > 0` the engine therefore asks for patience x beam_size hypotheses ranked by total log-probability
(length_penalty=0, which CTranslate2 stops exactly, like ours, once the best beam has ended) and re-ranks them with
our GNMT penalty. With the default patience 1 the native winner is sometimes not among them; `patience=2`
(`--patience 2`) lets CTranslate2 go on until 2 x beam_size hypotheses have finished, which agrees more often at
some cost in time (measured figures: README, "Fast inference").
Per-sentence length limits become one limit per batch (the largest).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .. import __version__
from ..config import RunConfig
from ..data.tokenizer import Tokenizer
from ..decode.search import DecodeOptions, Hyp
from ..errors import CheckpointError, ConfigurationError
from ..io import atomic_path, sha256_file, write_json
from ..model.transformer import Seq2Seq, sinusoidal_table

QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "bfloat16", "float32")
# Translator.load(quantize=...) -> CTranslate2 compute_type
COMPUTE_TYPES = {
    None: "default",
    "none": "float32",
    "int8": "int8",
    "int16": "int16",
    "fp16": "float16",
    "bf16": "bfloat16",
}


def _require_ct2():
    try:
        import ctranslate2
    except ImportError:
        raise ConfigurationError(
            "the CTranslate2 bridge needs the ctranslate2 package: pip install 'lucidmt[ct2]'"
        ) from None
    return ctranslate2


def vocabulary(tok: Tokenizer, side: str, size: int) -> list[str]:
    """The piece of every id 0..size-1 on one side, as CTranslate2 stores it (ids past the tokenizer's pieces
    get unique filler names, as a model's vocabulary may be padded)."""
    if tok.pieces is not None:
        pieces = list(tok.pieces)
    else:
        sp = tok.src if side == "source" else tok.tgt
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    if len(pieces) > size:
        raise CheckpointError(f"the tokenizer has {len(pieces)} {side} pieces but the model only {size} embeddings")
    pieces += [f"<lucidmt_unused_{i}>" for i in range(len(pieces), size)]
    seen: dict[str, int] = {}
    for i, p in enumerate(pieces):
        if p == "":
            pieces[i] = p = f"<lucidmt_unused_{i}>"
        if p in seen:
            raise CheckpointError(f"{side} vocabulary: ids {seen[p]} and {i} share the piece {p!r}")
        seen[p] = i
    return pieces


def _linear(spec, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    spec.weight = weight.detach().float().cpu().numpy()
    if bias is not None:
        spec.bias = bias.detach().float().cpu().numpy()


def _module_linear(spec, module: torch.nn.Linear) -> None:
    _linear(spec, module.weight, module.bias)


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma = norm.weight.detach().float().cpu().numpy()
    spec.beta = norm.bias.detach().float().cpu().numpy()


def _positions(embed) -> torch.Tensor:
    if embed.learned is not None:
        return embed.learned.weight
    return sinusoidal_table(embed.max_positions, embed.tokens.weight.size(1))


def build_spec(model: Seq2Seq, tok: Tokenizer):
    """A filled `ctranslate2.specs.TransformerSpec` for the model (not yet validated)."""
    _require_ct2()
    from ctranslate2.specs import common_spec, transformer_spec

    cfg = model.cfg
    activation = {
        "relu": common_spec.Activation.RELU,
        "gelu": common_spec.Activation.GELU,
        "swish": common_spec.Activation.SWISH,
    }[cfg.activation]
    pre = cfg.norm == "pre"
    encoder = transformer_spec.TransformerEncoderSpec(
        cfg.encoder_layers, cfg.n_heads, pre_norm=pre, activation=activation
    )
    decoder = transformer_spec.TransformerDecoderSpec(
        cfg.decoder_layers, cfg.n_heads, pre_norm=pre, activation=activation
    )

    for spec, stack in ((encoder, model.encoder), (decoder, model.decoder)):
        emb = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
        emb.weight = stack.embed.tokens.weight.detach().float().cpu().numpy()
        spec.scale_embeddings = bool(cfg.scale_embeddings)
        spec.position_encodings.encodings = _positions(stack.embed).detach().float().cpu().numpy()
        if pre:
            _norm(spec.layer_norm, stack.norm)

    for ls, layer in zip(encoder.layer, model.encoder.layers, strict=True):
        _module_linear(ls.self_attention.linear[0], layer.self_attn.qkv)
        _module_linear(ls.self_attention.linear[1], layer.self_attn.out)
        _norm(ls.self_attention.layer_norm, layer.attn_block.norm)
        _module_linear(ls.ffn.linear_0, layer.ffn.fc1)
        _module_linear(ls.ffn.linear_1, layer.ffn.fc2)
        _norm(ls.ffn.layer_norm, layer.ffn_block.norm)

    for ls, layer in zip(decoder.layer, model.decoder.layers, strict=True):
        _module_linear(ls.self_attention.linear[0], layer.self_attn.qkv)
        _module_linear(ls.self_attention.linear[1], layer.self_attn.out)
        _norm(ls.self_attention.layer_norm, layer.self_block.norm)
        _module_linear(ls.attention.linear[0], layer.cross_attn.q)
        _module_linear(ls.attention.linear[1], layer.cross_attn.kv)
        _module_linear(ls.attention.linear[2], layer.cross_attn.out)
        _norm(ls.attention.layer_norm, layer.cross_block.norm)
        _module_linear(ls.ffn.linear_0, layer.ffn.fc1)
        _module_linear(ls.ffn.linear_1, layer.ffn.fc2)
        _norm(ls.ffn.layer_norm, layer.ffn_block.norm)

    _linear(decoder.projection, model.output_weight(), model.logits_bias)

    spec = transformer_spec.TransformerSpec(encoder, decoder)
    src_vocab = vocabulary(tok, "source", cfg.src_vocab_size)
    tgt_vocab = vocabulary(tok, "target", cfg.tgt_vocab_size)
    spec.register_source_vocabulary(src_vocab)
    spec.register_target_vocabulary(tgt_vocab)
    c = spec.config
    c.unk_token = tgt_vocab[cfg.unk_id]
    c.bos_token = tgt_vocab[cfg.bos_id]
    c.eos_token = tgt_vocab[cfg.eos_id]
    c.decoder_start_token = tgt_vocab[cfg.bos_id]  # Marian models start from the pad token: that is fine here
    c.add_source_bos = False
    c.add_source_eos = False  # callers append "</s>" (the eos piece) to the source tokens, as lucidmt does
    c.layer_norm_epsilon = cfg.layer_norm_eps
    return spec


def export_ctranslate2(checkpoint: str | Path, out: str | Path, quantization: str | None = None) -> Path:
    """Write a CTranslate2 model folder for a run or checkpoint (see the module docstring for its layout)."""
    from ..train.checkpoint import load_checkpoint, resolve_checkpoint

    ct2 = _require_ct2()
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigurationError(f"--quantization {quantization}: expected one of {', '.join(QUANTIZATIONS)}")
    folder = resolve_checkpoint(checkpoint)
    model, cfg, tok = load_checkpoint(folder, "cpu")
    spec = build_spec(model, tok)
    try:
        spec.validate()
    except ValueError as exc:
        raise CheckpointError(f"{folder}: the CTranslate2 specification is incomplete: {exc}") from None
    spec.optimize(quantization=quantization)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        spec.save(str(tmp))
        tok.save(tmp / "tokenizer")
        cfg.save(tmp / "lucidmt.yaml")
        write_json(
            tmp / "export.json",
            {
                "format": "ctranslate2",
                "source": str(folder),
                "source_sha256": sha256_file(folder / "model.safetensors"),
                "quantization": quantization or "float32",
                "lucidmt_version": __version__,
                "ctranslate2_version": ct2.__version__,
            },
        )
    return out


def is_export(path: str | Path) -> bool:
    path = Path(path)
    return (path / "model.bin").exists() and (path / "tokenizer" / "tokenizer.json").exists()


class CT2Engine:
    """Decodes with a CTranslate2 model folder; `Translator` calls `search` with lists of source ids."""

    def __init__(
        self, folder: str | Path, device: str = "cpu", quantize: str | None = None, threads: int = 0, workers: int = 1
    ):
        """`threads`: intra-op threads per batch (0: torch's threads / workers); `workers` > 1: that many batches
        decoded at once (CTranslate2's inter_threads: model replicas sharing the weights)."""
        from ..runtime import threads_per_worker

        ct2 = _require_ct2()
        folder = Path(folder)
        if quantize not in COMPUTE_TYPES:
            raise ConfigurationError(f"quantize={quantize!r}: expected one of {', '.join(map(str, COMPUTE_TYPES))}")
        self.folder = folder
        self.config = RunConfig.load(folder / "lucidmt.yaml")
        self.tokenizer = Tokenizer(folder / "tokenizer")
        self.compute_type = COMPUTE_TYPES[quantize]
        self.device = device
        self.workers = workers
        intra = threads_per_worker(threads, workers)
        self.translator = ct2.Translator(
            str(folder), device=device, compute_type=self.compute_type, intra_threads=intra, inter_threads=workers
        )
        m = self.config.model
        self.max_positions = m.max_positions
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = m.pad_id, m.bos_id, m.eos_id, m.unk_id
        self.src_vocab = vocabulary(self.tokenizer, "source", m.src_vocab_size)
        self.tgt_vocab = vocabulary(self.tokenizer, "target", m.tgt_vocab_size)
        self.tgt_ids = {p: i for i, p in enumerate(self.tgt_vocab)}
        # never produce padding or the start token, as the native search does
        self.suppress = [[self.tgt_vocab[i]] for i in sorted({m.pad_id, m.bos_id} - {m.eos_id})]

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, quantize: str | None = None, threads: int = 0,
             workers: int = 1):  # fmt: skip
        """An exported folder, or a lucidmt run/checkpoint converted (fp32) on the fly into a temporary folder."""
        import tempfile

        ct2 = _require_ct2()
        device = device or ("cuda" if ct2.get_cuda_device_count() > 0 else "cpu")
        if is_export(path):
            engine = cls(path, device, quantize, threads, workers)
            engine.source = str(path)
            return engine
        from ..train.checkpoint import resolve_checkpoint

        folder = resolve_checkpoint(path)
        tmp = Path(tempfile.mkdtemp(prefix="lucidmt-ct2-"))
        try:
            export_ctranslate2(folder, tmp / "model")
            engine = cls(tmp / "model", device, quantize, threads, workers)
            engine.tokenizer = Tokenizer(folder / "tokenizer")  # the temporary copy goes away
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        engine.source = str(folder)
        return engine

    @property
    def name(self) -> str:
        return f"ct2/{self.compute_type}"

    # -- decoding ---------------------------------------------------------------------------------------------
    def _tokens(self, seqs: list[list[int]]) -> list[list[str]]:
        vocab = self.src_vocab
        return [[vocab[i] for i in s] for s in seqs]

    def _ids(self, pieces: list[str]) -> list[int]:
        get, unk = self.tgt_ids.get, self.unk_id
        return [get(p, unk) for p in pieces]

    def options(self, seqs: list[list[int]], opts: DecodeOptions) -> dict:
        """CTranslate2 `translate_batch` options for one batch (`seqs` end with eos, as for the native search)."""
        longest = max(len(s) for s in seqs)
        max_len = max(1, min(int(opts.max_len_a * longest + opts.max_len_b), self.max_positions))
        kw = dict(
            max_decoding_length=max(1, max_len - 1),  # our limit counts the eos, CTranslate2's does not
            min_decoding_length=0,
            max_input_length=0,
            return_scores=True,
            suppress_sequences=self.suppress or None,
        )
        if opts.sampling:
            return kw | dict(
                beam_size=1,
                num_hypotheses=opts.n_best,
                sampling_topk=opts.top_k if opts.top_k > 0 else 0,
                sampling_topp=opts.top_p,
                sampling_temperature=opts.temperature,
            )
        rerank = opts.length_penalty != 0 and opts.beam_size > 1  # re-ranked with the GNMT penalty (docstring)
        return kw | dict(
            beam_size=opts.beam_size,
            patience=opts.patience,
            num_hypotheses=opts.patience * opts.beam_size if rerank else opts.n_best,
            length_penalty=0.0,
        )

    def search(self, seqs: list[list[int]], opts: DecodeOptions) -> list[list[Hyp]]:
        return self.submit(seqs, opts)()

    def submit(self, seqs: list[list[int]], opts: DecodeOptions):
        """Start decoding one batch; returns a function that waits for its hypotheses. With `workers` > 1 the batch
        runs asynchronously, so that several submitted batches decode at once (seeded sampling runs in order)."""
        if opts.sampling and opts.seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(opts.seed)
        kw = self.options(seqs, opts)
        if self.workers > 1 and not (opts.sampling and opts.seed is not None):
            pending = self.translator.translate_batch(self._tokens(seqs), asynchronous=True, **kw)
            return lambda: self._hypotheses([p.result() for p in pending], opts)
        results = self.translator.translate_batch(self._tokens(seqs), **kw)
        return lambda: self._hypotheses(results, opts)

    def _hypotheses(self, results, opts: DecodeOptions) -> list[list[Hyp]]:
        greedy = opts.sampling or (opts.beam_size == 1 and opts.n_best == 1)
        alpha = 0.0 if greedy else opts.length_penalty  # as the native search ranks
        out = []
        for r in results:
            hyps = []
            for pieces, logprob in zip(r.hypotheses, r.scores, strict=True):
                ids = self._ids(pieces)
                norm = ((5.0 + len(ids) + 1) / 6.0) ** alpha
                hyps.append(Hyp(ids, logprob / norm, logprob, None))
            hyps.sort(key=lambda h: -h.score)
            out.append(hyps[: opts.n_best])
        return out

    def score(self, src: list[list[int]], tgt: list[list[int]]) -> list[list[float]]:
        """Log-probability of each target token, eos included (forced decoding)."""
        tgt_tokens = [[self.tgt_vocab[i] for i in t] for t in tgt]
        results = self.translator.score_batch(self._tokens(src), tgt_tokens, max_input_length=0)
        return [list(r.log_probs) for r in results]
