"""JSON views for the API and the web page: the explain payload, built on `lucidmt.explain` (words, pooling,
alignments), so that the server and `lucidmt explain` agree on every number.

The payload is shaped for drawing: `heatmaps` is a list of word-level matrices (rows: target words, columns:
source words), each with a name, a note and whether it is signed; `alignments` are Pharaoh pairs
[source word, target word]; `attributions` carries the explain module's raw attribution data when asked for.
The page draws whatever `heatmaps` holds, so a new analysis needs no change there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..explain.alignment import align, pharaoh
from ..explain.words import Words, group_pieces, pool


def _finite(x: float) -> float:
    """JSON has no infinity: a -inf log-probability becomes a very negative number."""
    x = float(x)
    return x if math.isfinite(x) else (-1e30 if x < 0 else (1e30 if x > 0 else 0.0))


def _words(words: Words, confidence: list[float] | None = None) -> list[dict[str, Any]]:
    out = []
    for k, text in enumerate(words.words):
        w: dict[str, Any] = {"text": text, "pieces": [i for i, j in enumerate(words.of_piece) if j == k]}
        if confidence is not None:
            w["confidence"] = confidence[k]
        out.append(w)
    return out


def _word_confidence(words: Words, logprobs: list[float]) -> list[float]:
    """The probability of each whole word given what precedes it: exp of the sum of its pieces' log-probabilities."""
    lp = np.zeros(len(words.words))
    np.add.at(lp, words.of_piece[: len(logprobs)], np.asarray(logprobs, dtype=np.float64))
    return [_finite(x) for x in np.exp(lp)]


def _matrix(m: np.ndarray, digits: int = 4) -> list[list[float]]:
    return np.round(np.nan_to_num(np.asarray(m, dtype=np.float64)), digits).tolist()


def _heatmap(name: str, note: str, values: np.ndarray, signed: bool = False) -> dict[str, Any]:
    return {"name": name, "note": note, "values": _matrix(values), "signed": signed}


ATTENTION_NOTE = "mean over layers and heads; a target word's row sums to 1"


def nbest_json(tr: Any, n_best: int) -> dict[str, Any]:
    """The n-best list of one Translation (only sent when n_best > 1)."""
    return {"hypotheses": [{"text": h.text, "score": _finite(h.score)} for h in tr.hypotheses[:n_best]]}


def explain_from_translation(tr: Any, src_lang: str = "", tgt_lang: str = "") -> dict[str, Any]:
    """Payload from a `Translation` decoded with return_attention=True: words, confidence, attention, alignment."""
    hyp = tr.best
    src_pieces, tgt_pieces = list(tr.source_tokens), list(hyp.tokens)
    lps = [_finite(x) for x in (hyp.token_logprobs or [])]
    src_w, tgt_w = group_pieces(src_pieces, src_lang), group_pieces(tgt_pieces, tgt_lang)
    out = {
        "source": tr.source,
        "translation": hyp.text,
        "score": _finite(hyp.score),
        "truncated": bool(tr.truncated),
        "source_tokens": src_pieces,
        "target_tokens": tgt_pieces,
        "token_confidence": [math.exp(x) for x in lps],
        "attention": None,
        "source_words": _words(src_w),
        "target_words": _words(tgt_w, _word_confidence(tgt_w, lps)),
        "heatmaps": [],
        "alignments": None,
        "pharaoh": None,
        "attributions": None,
    }
    if hyp.attention and src_pieces and tgt_pieces:
        att = np.asarray(hyp.attention, dtype=np.float64)
        pairs = align(att, src_w, tgt_w)
        out["attention"] = _matrix(att)
        out["heatmaps"].append(_heatmap("cross-attention", ATTENTION_NOTE, pool(att, tgt_w, src_w, "mean")))
        out["alignments"] = [list(p) for p in pairs]
        out["pharaoh"] = pharaoh(pairs)
    return out


def explain_from_explanation(ex: Any) -> dict[str, Any]:
    """Payload from a `lucidmt.explain.Explanation` (attributions included)."""
    src_w, tgt_w = ex.src_words, ex.tgt_words
    lps = [_finite(x) for x in ex.token_logprobs]
    pairs = ex.alignment
    out = {
        "source": ex.source,
        "translation": ex.translation,
        "score": _finite(sum(lps)),
        "truncated": False,
        "source_tokens": list(ex.source_tokens),
        "target_tokens": list(ex.target_tokens),
        "token_confidence": [math.exp(x) for x in lps],
        "attention": _matrix(ex.attention),
        "source_words": _words(src_w),
        "target_words": _words(tgt_w, _word_confidence(tgt_w, lps)),
        "heatmaps": [_heatmap("cross-attention", ATTENTION_NOTE, pool(ex.attention, tgt_w, src_w, "mean"))],
        "alignments": [list(p) for p in pairs],
        "pharaoh": pharaoh(pairs),
        "attributions": {},
    }
    if ex.integrated_gradients is not None:
        ig = pool(ex.integrated_gradients, tgt_w, src_w, "sum")
        note = "log-probability each source word adds to the target word (signed); baseline: zero embeddings"
        out["heatmaps"].append(_heatmap("integrated gradients", note, ig, signed=True))
        out["attributions"]["integrated_gradients"] = {
            "tokens": _matrix(ex.integrated_gradients),
            "delta": _matrix(np.asarray(ex.ig_delta)[None])[0],
        }
    if ex.alti is not None:
        alti = pool(ex.alti, tgt_w, src_w, "mean")
        note = "share of the prediction that comes from each source word (the rest from the target prefix)"
        out["heatmaps"].append(_heatmap("ALTI+", note, alti))
        out["attributions"]["alti"] = {"tokens": _matrix(ex.alti), "source_share": _matrix(ex.alti.sum(1)[None])[0]}
    return out
