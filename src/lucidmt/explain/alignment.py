"""Word alignments from cross-attention, in Pharaoh format (`source-target` word indices, 0-based).

Each target word is linked to the source word it attends to most (argmax over source words, "</s>" excluded),
as fairseq's `--print-alignment` does. The attention row used for a target token is the one of the decoder step
that predicts it. Which attention: the mean over all layers and heads by default, or the mean over the heads of
one layer (`layer=`), since a middle or upper layer is often the sharpest (Garg et al., 2019).
"""

from __future__ import annotations

import numpy as np

from .words import Words, group_pieces, pool


def attention_for(hypothesis, layer: int | None = None) -> np.ndarray:
    """(T, S) piece-level attention of a `Hypothesis`: mean over heads and layers, or over the heads of one layer."""
    if layer is None:
        if hypothesis.attention is None:
            raise ValueError("the hypothesis carries no attention: translate with return_attention=True")
        return np.asarray(hypothesis.attention, dtype=np.float64)
    if hypothesis.attention_layers is None:
        raise ValueError("the hypothesis carries no per-layer attention: translate with return_attention_layers=True")
    layers = hypothesis.attention_layers
    if not -len(layers) <= layer < len(layers):
        from ..errors import ConfigurationError

        raise ConfigurationError(f"alignment layer {layer} does not exist: the model has {len(layers)} decoder layers")
    return np.asarray(layers[layer], dtype=np.float64).mean(axis=0)


def align(attention, src: Words, tgt: Words) -> list[tuple[int, int]]:
    """Hard alignment: for every real target word, (argmax source word, target word). Indices count real words."""
    word_att = pool(attention, tgt, src, "mean")
    s_real, t_real = src.real, tgt.real
    if not s_real or not t_real:
        return []
    sub = word_att[np.ix_(t_real, s_real)]
    return [(int(sub[j].argmax()), j) for j in range(len(t_real))]


def pharaoh(pairs: list[tuple[int, int]]) -> str:
    return " ".join(f"{s}-{t}" for s, t in sorted(pairs, key=lambda p: (p[1], p[0])))


def parse_pharaoh(text: str) -> list[tuple[int, int]]:
    """`"0-0 1-2"` -> [(0, 0), (1, 2)]; possible links (`0?1`) count as links."""
    out = []
    for item in text.split():
        s, t = item.replace("?", "-").split("-")
        out.append((int(s), int(t)))
    return out


def hypothesis_alignment(
    translation, k: int = 0, layer: int | None = None, src_lang: str = "", tgt_lang: str = ""
) -> str:
    """Pharaoh alignment of the k-th hypothesis of a `Translation` (empty for an empty input or output)."""
    hyp = translation.hypotheses[k]
    if not hyp.token_ids or not translation.source_tokens:
        return ""
    att = attention_for(hyp, layer)
    return pharaoh(align(att, group_pieces(translation.source_tokens, src_lang), group_pieces(hyp.tokens, tgt_lang)))


def translation_alignment(translation, layer: int | None = None, src_lang: str = "", tgt_lang: str = "") -> str:
    """Pharaoh alignment of the best hypothesis."""
    return hypothesis_alignment(translation, 0, layer, src_lang, tgt_lang)
