"""`explain(translator, sentence)`: a translation with everything needed to see why it came out that way.

    ex = translator.explain("A dog runs through the snow.")
    ex.translation, ex.pharaoh, ex.low_confidence_words()
    ex.to_dict()          # the JSON the explain page and the server's web page draw
    write_report(ex, "work/explain/dog")   # dog.html, dog.json, dog.png

One teacher-forced pass over the translation (the beam-search output, or a given `target`) yields per-token
probabilities, entropies and cross-attention; integrated gradients and ALTI+ (see `attribution`) add source
attributions. Everything is kept per subword piece and pooled to words for display and alignments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .alignment import align, pharaoh
from .attribution import alti_plus, integrated_gradients
from .words import Words, group_pieces, pool

JSON_VERSION = 1


@dataclass
class Explanation:
    source: str
    translation: str
    source_tokens: list[str]  # pieces, "</s>" last
    target_tokens: list[str]  # pieces, "</s>" last
    src_words: Words
    tgt_words: Words
    token_logprobs: np.ndarray  # (T,)
    token_entropy: np.ndarray  # (T,) entropy of the next-token distribution, nats
    attention_layers: np.ndarray  # (L, H, T, S)
    integrated_gradients: np.ndarray | None = None  # (T, S)
    ig_delta: np.ndarray | None = None  # (T,)
    ig_logprob_gain: np.ndarray | None = None  # (T,) f(input) - f(baseline)
    alti: np.ndarray | None = None  # (T, S)
    alti_prefix: np.ndarray | None = None  # (T, T)
    low_confidence_threshold: float = 0.5
    alignment_layer: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------------------------------------
    @property
    def attention(self) -> np.ndarray:
        """(T, S) mean over layers and heads."""
        return self.attention_layers.mean(axis=(0, 1))

    @property
    def token_probs(self) -> np.ndarray:
        return np.exp(self.token_logprobs)

    @property
    def low_confidence(self) -> list[bool]:
        """Per target token: probability below the threshold."""
        return [bool(p < self.low_confidence_threshold) for p in self.token_probs]

    def alignment_attention(self) -> np.ndarray:
        if self.alignment_layer is None:
            return self.attention
        return self.attention_layers[self.alignment_layer].mean(axis=0)

    @property
    def alignment(self) -> list[tuple[int, int]]:
        return align(self.alignment_attention(), self.src_words, self.tgt_words)

    @property
    def pharaoh(self) -> str:
        return pharaoh(self.alignment)

    def alignment_by(self, method: str = "attention") -> list[tuple[int, int]]:
        """Hard alignment from cross-attention (the default, as fairseq), or from the argmax of an attribution:
        `alti` or `integrated_gradients` (these follow the residual streams too, and often align better)."""
        m = {
            "attention": self.alignment_attention(),
            "alti": self.alti,
            "integrated_gradients": self.integrated_gradients,
        }
        if method not in m:
            from ..errors import ConfigurationError

            raise ConfigurationError(f"unknown alignment method {method!r}; use one of {', '.join(m)}")
        if m[method] is None:
            from ..errors import ConfigurationError

            raise ConfigurationError(f"no {method} in this explanation (it was not among the methods computed)")
        return align(m[method], self.src_words, self.tgt_words)

    def alignments(self) -> dict[str, str]:
        """Pharaoh alignments by every method this explanation has."""
        out = {"attention": self.pharaoh}
        for name, m in (("alti", self.alti), ("integrated_gradients", self.integrated_gradients)):
            if m is not None:
                out[name] = pharaoh(self.alignment_by(name))
        return out

    def word_probs(self) -> list[float]:
        """Per target word: product of its pieces' probabilities."""
        lp = np.zeros(len(self.tgt_words.words))
        np.add.at(lp, self.tgt_words.of_piece, self.token_logprobs)
        return np.exp(lp).tolist()

    def low_confidence_words(self) -> list[str]:
        low = set()
        for piece, flag in enumerate(self.low_confidence):
            if flag:
                low.add(self.tgt_words.of_piece[piece])
        return [self.tgt_words.words[i] for i in sorted(low)]

    def to_dict(self) -> dict:
        """The JSON document (schema version 1) that the HTML page and the server's web page draw.

        Matrices are lists of rows: rows are target tokens (or words), columns source tokens (or words)."""
        sw, tw = self.src_words, self.tgt_words
        r = lambda a, d=5: np.round(np.asarray(a, dtype=np.float64), d).tolist()  # noqa: E731
        out: dict[str, Any] = {
            "version": JSON_VERSION,
            "source": self.source,
            "translation": self.translation,
            "source_tokens": self.source_tokens,
            "target_tokens": self.target_tokens,
            "source_words": sw.words,
            "target_words": tw.words,
            "source_word_of_token": sw.of_piece,
            "target_word_of_token": tw.of_piece,
            "confidence": {
                "prob": r(self.token_probs),
                "logprob": r(self.token_logprobs),
                "entropy": r(self.token_entropy),
                "low": self.low_confidence,
                "threshold": self.low_confidence_threshold,
                "word_prob": r(self.word_probs()),
            },
            "attention": {
                "mean": r(self.attention, 4),
                "words": r(pool(self.attention, tw, sw, "mean"), 4),
                "layers": r(self.attention_layers, 3),
            },
            "alignment": {
                "pairs": [list(p) for p in self.alignment],
                "pharaoh": self.pharaoh,
                "layer": self.alignment_layer,
                "by_method": self.alignments(),
            },
            "attributions": {},
            "settings": self.settings,
        }
        if self.integrated_gradients is not None:
            out["attributions"]["integrated_gradients"] = {
                "tokens": r(self.integrated_gradients),
                "words": r(pool(self.integrated_gradients, tw, sw, "sum")),
                "delta": r(self.ig_delta, 6),
                "logprob_gain": r(self.ig_logprob_gain),
                "baseline": "source token embeddings zero (the padding embedding) except </s>; positions kept",
                "steps": self.settings.get("ig_steps"),
                "units": "log-probability; a row sums to logprob_gain up to delta",
            }
        if self.alti is not None:
            out["attributions"]["alti"] = {
                "tokens": r(self.alti),
                "words": r(pool(self.alti, tw, sw, "mean")),
                "source_share": r(self.alti.sum(1)),
                "prefix": r(self.alti_prefix),
                "units": "share of the prediction; a row of tokens plus prefix sums to 1",
            }
        return out


def explain(
    translator,
    text: str,
    target: str | None = None,
    beam_size: int = 4,
    ig_steps: int = 64,
    methods: tuple[str, ...] = ("integrated_gradients", "alti"),
    low_confidence: float = 0.5,
    alignment_layer: int | None = None,
    **options,
) -> Explanation:
    """Translate `text` (or take `target` as the translation) and explain the result.

    `methods` picks the attributions to compute (integrated gradients cost `ig_steps` forward passes and one
    backward pass per target token); `low_confidence` is the probability under which a token is flagged;
    `options` go to the decoder (length_penalty, max_len_a, ...)."""
    if not isinstance(text, str) or not text.strip():
        raise DataError("nothing to explain: the sentence is empty")
    unknown = set(methods) - {"integrated_gradients", "alti"}
    if unknown:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"unknown attribution method(s) {sorted(unknown)}; use integrated_gradients, alti")
    if not 0.0 < low_confidence <= 1.0:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"the low-confidence threshold is a probability in (0, 1], got {low_confidence}")
    tok, model, dev = translator.tokenizer, translator.model, translator.device
    cfg = translator.config
    src_lang = cfg.data.src_lang if cfg is not None else ""
    tgt_lang = cfg.data.tgt_lang if cfg is not None else ""
    limit = translator.max_positions - 1
    src_ids = tok.encode_src([text.strip()])[0][:limit] + [tok.eos_id]
    if target is None:
        hyp = translator.translate_batch([text], beam_size=beam_size, **options)[0].best
        tgt_ids = list(hyp.token_ids)
        decoding = _signature(beam_size, options)
    else:
        tgt_ids = tok.encode_tgt([target.strip()])[0][:limit]
        decoding = "forced (given target)"
    src = torch.tensor(src_ids, device=dev)
    tgt_in = torch.tensor([tok.bos_id] + tgt_ids, device=dev)
    tgt_out = torch.tensor(tgt_ids + [tok.eos_id], device=dev)

    model.eval()
    with torch.no_grad():
        memory = model.encode(src[None])
        out = model.decode(tgt_in[None], memory, need_weights=True)
        logp = F.log_softmax(model.project(out.hidden[0]).float(), dim=-1)  # (T, V)
        token_lp = logp.gather(1, tgt_out[:, None])[:, 0]
        entropy = -(logp.exp() * logp).sum(-1)
        layers = torch.stack([w[0] for w in out.cross_attention]).float()  # (L, H, T, S)

    source_tokens = tok.src_id_to_piece(src_ids)
    target_tokens = tok.tgt_id_to_piece(tgt_ids + [tok.eos_id])
    if alignment_layer is not None and not -layers.size(0) <= alignment_layer < layers.size(0):
        from ..errors import ConfigurationError

        raise ConfigurationError(f"alignment layer {alignment_layer} does not exist: the model has {layers.size(0)}")
    ex = Explanation(
        source=text,
        translation=tok.decode_tgt(tgt_ids),
        source_tokens=source_tokens,
        target_tokens=target_tokens,
        src_words=group_pieces(source_tokens, src_lang),
        tgt_words=group_pieces(target_tokens, tgt_lang),
        token_logprobs=token_lp.cpu().numpy(),
        token_entropy=entropy.cpu().numpy(),
        attention_layers=layers.cpu().numpy(),
        low_confidence_threshold=low_confidence,
        alignment_layer=alignment_layer,
        settings={
            "model": getattr(translator, "source", ""),
            "decoding": decoding,
            "methods": list(methods),
            "ig_steps": ig_steps if "integrated_gradients" in methods else None,
            "src_lang": src_lang,
            "tgt_lang": tgt_lang,
        },
    )
    if "integrated_gradients" in methods:
        ig = integrated_gradients(model, src, tgt_in, tgt_out, steps=ig_steps)
        ex.integrated_gradients, ex.ig_delta, ex.ig_logprob_gain = (
            ig.attributions,
            ig.delta,
            ig.logprob - ig.baseline_logprob,
        )
    if "alti" in methods:
        al = alti_plus(model, src, tgt_in)
        ex.alti, ex.alti_prefix = al.source, al.prefix
    return ex


def _signature(beam_size: int, options: dict) -> str:
    from ..decode.search import DecodeOptions

    return DecodeOptions(beam_size=beam_size, **options).signature()
