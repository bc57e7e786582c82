"""Scores with signatures: sacreBLEU BLEU and chrF, plus lowercased Moses-tokenised BLEU for the literature.

Papers on Multi30k report BLEU on lowercased, Moses-tokenised text; sacreBLEU's detokenised, cased BLEU is the
reproducible number. Both are reported, each with the signature that says how it was computed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

from .errors import DataError

CJK_TOKENIZERS = {"zh": "zh", "ja": "char", "ko": "char"}  # no word spaces: score characters


@dataclass
class Scores:
    bleu: float
    chrf: float
    tok_bleu: float  # lowercased, Moses-tokenised (character-tokenised for Chinese)
    bleu_signature: str
    chrf_signature: str
    tok_bleu_signature: str
    n: int

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        return (
            "| metric | score | signature |\n|---|---:|---|\n"
            f"| BLEU | {self.bleu:.2f} | `{self.bleu_signature}` |\n"
            f"| chrF | {self.chrf:.2f} | `{self.chrf_signature}` |\n"
            f"| tokenised BLEU (lc) | {self.tok_bleu:.2f} | `{self.tok_bleu_signature}` |\n"
        )


def _bleu_tokenizer(lang: str) -> str:
    return CJK_TOKENIZERS.get(lang, "13a")


def moses_tokenize(lines: list[str], lang: str) -> list[str]:
    from sacremoses import MosesTokenizer

    mt = MosesTokenizer(lang=lang)
    return [mt.tokenize(line, escape=False, return_str=True).lower() for line in lines]


def score(hyps: list[str], refs: list[str], tgt_lang: str = "en") -> Scores:
    if len(hyps) != len(refs):
        raise DataError(f"{len(hyps)} translations but {len(refs)} references")
    if not refs:
        raise DataError("nothing to score: no references")
    bleu = BLEU(tokenize=_bleu_tokenizer(tgt_lang))
    chrf = CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    if tgt_lang in CJK_TOKENIZERS:
        tok = BLEU(tokenize=_bleu_tokenizer(tgt_lang), lowercase=True)
        t = tok.corpus_score(hyps, [refs])
        tok_sig = str(tok.get_signature())
    else:
        tok = BLEU(tokenize="none", lowercase=True, force=True)
        t = tok.corpus_score(moses_tokenize(hyps, tgt_lang), [moses_tokenize(refs, tgt_lang)])
        tok_sig = f"moses-{tgt_lang}+{tok.get_signature()}"
    return Scores(b.score, c.score, t.score, str(bleu.get_signature()), str(chrf.get_signature()), tok_sig, len(refs))


def quick_bleu(hyps: list[str], refs: list[str], tgt_lang: str = "en") -> float:
    """sacreBLEU BLEU alone (training validation)."""
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize=_bleu_tokenizer(tgt_lang)).score
