"""Cheap detectors of pathological translations (hallucination symptoms), reference-free.

The same detectors run on the references, as a baseline: a rate means something only next to the rate of
human translations of the same sentences.

* copy: at least `copy_min` (default 0.6) of the output's words (3+ words) also occur in the source: the source
  was passed through rather than translated (names and numbers alone do not reach that share);
* length ratio: output characters / source characters outside [`low`, `high`] (default 0.5, 2.0): truncated
  or run-on outputs (Lee et al., 2019; Raunak et al., 2021);
* repetition: a word n-gram (n = 1..4) immediately repeated ("Hund Hund", "ein Mann ein Mann"), or a word
  3-gram that occurs twice: the decoder looping, the most common hallucination of small models.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .slices import words


def copy_share(src: str, hyp: str) -> float:
    h = [w.lower() for w in words(hyp)]
    s = {w.lower() for w in words(src)}
    return sum(w in s for w in h) / len(h) if h else 0.0


def is_copy(src: str, hyp: str, copy_min: float = 0.6) -> bool:
    return len(words(hyp)) >= 3 and copy_share(src, hyp) >= copy_min


def length_ratio(src: str, hyp: str) -> float:
    return len(hyp) / max(len(src), 1)


def repetition(hyp: str) -> str | None:
    """The repeated n-gram, or None."""
    w = [x.lower() for x in words(hyp)]
    for n in range(1, 5):
        for i in range(len(w) - 2 * n + 1):
            if w[i : i + n] == w[i + n : i + 2 * n]:
                return " ".join(w[i : i + n])
    grams = Counter(tuple(w[i : i + 3]) for i in range(len(w) - 2))
    rep = [g for g, c in grams.items() if c >= 2]
    return " ".join(rep[0]) if rep else None


@dataclass
class Flags:
    copy: list[int]
    length: list[int]
    repetition: list[int]

    def counts(self) -> dict[str, int]:
        return {"copy": len(self.copy), "length ratio": len(self.length), "repetition": len(self.repetition)}


def detect(sources: list[str], outputs: list[str], low: float = 0.5, high: float = 2.0, copy_min: float = 0.6) -> Flags:
    copy, length, rep = [], [], []
    for i, (s, h) in enumerate(zip(sources, outputs, strict=True)):
        if is_copy(s, h, copy_min):
            copy.append(i)
        r = length_ratio(s, h)
        if s.strip() and not low <= r <= high:
            length.append(i)
        if repetition(h):
            rep.append(i)
    return Flags(copy, length, rep)
