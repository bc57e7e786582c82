"""Test-set slices: which sentences a score is computed on.

Each slice is a named subset of sentence indices, decided from the source side alone (so that the slices of two
models on one test set are the same sentences):

* source length in words, in buckets (default edges 8, 12, 16: 1-8, 9-12, 13-16, 17+ words);
* rare words: a source word seen at most `rare_max` times (default 2) in the training source text;
* numbers: a digit, or an English cardinal number word from two to twenty (Multi30k writes "Two men ...");
* capitalised names: a capitalised word (or an acronym) that is not the first word and not "I" (sentence-initial
  capitals carry no information).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

WORD = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)
NUMBER_WORDS = {
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen",
    "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "hundred", "thousand",
}  # fmt: skip


def words(text: str) -> list[str]:
    return WORD.findall(text)


def word_counts(lines: Iterable[str]) -> Counter:
    """Lowercased word frequencies (the vocabulary that "rare" is judged against)."""
    c: Counter = Counter()
    for line in lines:
        c.update(w.lower() for w in words(line))
    return c


@dataclass
class Slice:
    name: str
    description: str
    indices: list[int]


def length_buckets(sources: list[str], edges: tuple[int, ...] = (8, 12, 16)) -> list[Slice]:
    lengths = [len(words(s)) for s in sources]
    bounds = [0, *edges, None]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        name = f"{lo + 1}-{hi} words" if hi is not None else f"{lo + 1}+ words"
        idx = [i for i, n in enumerate(lengths) if n > lo and (hi is None or n <= hi)]
        out.append(Slice(f"length {name}", f"source length {name}", idx))
    return out


def has_number(text: str) -> bool:
    return any(ch.isdigit() for ch in text) or any(w.lower() in NUMBER_WORDS for w in words(text))


def has_name(text: str) -> bool:
    ws = words(text)
    return any(w[0].isupper() and w != "I" and not w.isupper() or (w.isupper() and len(w) > 1) for w in ws[1:])


def rare_word_slice(sources: list[str], train_counts: Counter, rare_max: int = 2) -> Slice:
    idx = [i for i, s in enumerate(sources) if any(train_counts[w.lower()] <= rare_max for w in words(s))]
    return Slice(
        "rare words",
        f"a source word seen at most {rare_max} times in the training source text",
        idx,
    )


def standard_slices(
    sources: list[str], train_counts: Counter | None = None, rare_max: int = 2, edges: tuple[int, ...] = (8, 12, 16)
) -> list[Slice]:
    out = [Slice("all", "every sentence", list(range(len(sources))))]
    out += length_buckets(sources, edges)
    if train_counts is not None:
        out.append(rare_word_slice(sources, train_counts, rare_max))
    out.append(
        Slice(
            "numbers",
            "a digit or a number word (two..twenty, hundred, thousand)",
            [i for i, s in enumerate(sources) if has_number(s)],
        )
    )
    out.append(
        Slice(
            "capitalised names",
            "a capitalised word after the first one (not 'I')",
            [i for i, s in enumerate(sources) if has_name(s)],
        )
    )
    return out
