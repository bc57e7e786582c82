"""From SentencePiece pieces to words, and from piece-level matrices to word-level ones.

A word starts at a piece that begins with "▁" (SentencePiece's whitespace marker), so the words are the
whitespace-separated tokens of the detokenised text: the unit that Pharaoh alignments and readers use.
For languages written without spaces (Chinese, Japanese, Korean) every piece is its own word, since one "word"
per sentence would make alignments useless. The end-of-sentence token "</s>" is kept as a word of its own (the
model attends to it a lot), and alignments leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.tokenizer import CJK_LANGS

EOS = "</s>"
MARK = "\u2581"  # ▁


@dataclass
class Words:
    words: list[str]  # word strings; "</s>" last when the pieces end with it
    of_piece: list[int]  # piece index -> word index
    special: list[bool]  # per word: True for "</s>"

    @property
    def real(self) -> list[int]:
        """Indices of the words that are not specials."""
        return [i for i, s in enumerate(self.special) if not s]


def group_pieces(pieces: list[str], lang: str = "") -> Words:
    by_piece = lang in CJK_LANGS
    words: list[str] = []
    special: list[bool] = []
    of_piece: list[int] = []
    for p in pieces:
        if p == EOS:
            words.append(EOS)
            special.append(True)
        elif by_piece or p.startswith(MARK) or not words or special[-1]:
            words.append(p.replace(MARK, ""))
            special.append(False)
        else:
            words[-1] += p.replace(MARK, "")
        of_piece.append(len(words) - 1)
    # a piece that is only "▁" (before punctuation or a digit) starts a word with an empty string: fine, the
    # following pieces complete it
    return Words(words, of_piece, special)


def pool(matrix, rows: Words, cols: Words, row_reduce: str = "mean") -> np.ndarray:
    """Piece-level (T, S) -> word-level (T_words, S_words).

    Columns are summed: attention weights and attributions are additive over the source pieces of a word.
    Rows are averaged (`mean`: each target piece's row is a distribution, and so is their mean) or summed
    (`sum`: for attributions to log-probabilities, because a word's log-probability is the sum of its pieces')."""
    m = np.asarray(matrix, dtype=np.float64)
    col_map = np.zeros((m.shape[1], len(cols.words)))
    col_map[np.arange(m.shape[1]), cols.of_piece[: m.shape[1]]] = 1.0
    row_map = np.zeros((len(rows.words), m.shape[0]))
    row_map[rows.of_piece[: m.shape[0]], np.arange(m.shape[0])] = 1.0
    if row_reduce == "mean":
        row_map /= np.maximum(row_map.sum(1, keepdims=True), 1.0)
    elif row_reduce != "sum":
        raise ValueError(f"row_reduce must be mean or sum, not {row_reduce!r}")
    return row_map @ m @ col_map
