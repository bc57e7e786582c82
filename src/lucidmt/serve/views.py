"""JSON views of a `Translation` for the API and the web page: subword pieces merged into words.

The explain payload is built so that the page can draw what later analyses add without changing its code:
`heatmaps` is a list of (rows: target words) x (columns: source words) matrices, each with a name and a note;
`alignments` (pairs of word indices) and `attributions` are null until an analysis provides them.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Any

EOS = "</s>"
WORD_START = "\u2581"  # SentencePiece's "▁": this piece begins a new word


def _is_cjk(piece: str) -> bool:
    """Chinese, Japanese and Korean script has no spaces: each such piece counts as a word of its own."""
    return any(unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalpha() for ch in piece)


def group_pieces(pieces: list[str]) -> list[list[int]]:
    """Indices of the pieces of each word. A word starts at a "▁" piece, at "</s>", and at or after CJK script."""
    groups: list[list[int]] = []
    for i, p in enumerate(pieces):
        starts = (
            not groups
            or p.startswith(WORD_START)
            or p == EOS
            or pieces[i - 1] == EOS
            or _is_cjk(p)
            or _is_cjk(pieces[i - 1])
        )
        if starts:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


def word_text(pieces: list[str], group: list[int]) -> str:
    text = "".join(pieces[i] for i in group).replace(WORD_START, " ").strip()
    return text or pieces[group[0]]


def merge_attention(att: list[list[float]], rows: list[list[int]], cols: list[list[int]]) -> list[list[float]]:
    """Piece attention (T x S) -> word attention: mean over a target word's pieces (so rows still sum to 1),
    sum over a source word's pieces (the attention mass the word receives)."""
    out = []
    for r in rows:
        row = []
        for c in cols:
            row.append(sum(att[i][j] for i in r for j in c) / len(r))
        out.append(row)
    return out


def translation_json(tr: Any, n_best: int, clean=float) -> dict[str, Any]:
    """The n-best list of one Translation (only asked for when n_best > 1); `clean` makes scores JSON-safe."""
    return {"hypotheses": [{"text": h.text, "score": clean(h.score)} for h in tr.hypotheses[:n_best]]}


def explain_json(tr: Any) -> dict[str, Any]:
    """Source and target words, per-word confidence and the word-level cross-attention of the best hypothesis."""
    hyp = tr.best
    src_pieces, tgt_pieces = list(tr.source_tokens), list(hyp.tokens)
    lps = list(hyp.token_logprobs or [])
    conf = [math.exp(lp) for lp in lps]
    src_groups, tgt_groups = group_pieces(src_pieces), group_pieces(tgt_pieces)
    src_words = [{"text": word_text(src_pieces, g), "pieces": g} for g in src_groups]
    tgt_words = [
        {
            "text": word_text(tgt_pieces, g),
            "pieces": g,
            # the probability of the whole word given what precedes it: the product over its pieces
            "confidence": math.exp(sum(lps[i] for i in g)) if lps else None,
        }
        for g in tgt_groups
    ]
    heatmaps = []
    if hyp.attention:
        heatmaps.append(
            {
                "name": "cross-attention",
                "note": "mean over layers and heads; target words are rows, source words columns",
                "values": merge_attention(hyp.attention, tgt_groups, src_groups),
            }
        )
    return {
        "source": tr.source,
        "translation": hyp.text,
        "score": hyp.score,
        "truncated": tr.truncated,
        "source_tokens": src_pieces,
        "target_tokens": tgt_pieces,
        "token_confidence": conf,
        "attention": hyp.attention,  # pieces: len(target_tokens) x len(source_tokens)
        "source_words": src_words,
        "target_words": tgt_words,
        "heatmaps": heatmaps,
        "alignments": None,
        "attributions": None,
    }
