"""Synthetic source noise for robustness checks, deterministic for a seed.

* typos: each word of 3+ letters is, with probability `rate`, changed by one edit (swap of two neighbouring
  letters, deletion, duplication, or substitution by a neighbouring key on a QWERTY keyboard), as in
  Belinkov & Bisk (2018) and Karpukhin et al. (2019);
* lowercase: the whole sentence lowercased;
* no punctuation: every Unicode punctuation character removed (spaces collapsed).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable

_KEYBOARD = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGHBOURS: dict[str, str] = {}
for r, row in enumerate(_KEYBOARD):
    for c, ch in enumerate(row):
        near = [row[c - 1] if c > 0 else "", row[c + 1] if c + 1 < len(row) else ""]
        for rr in (r - 1, r + 1):
            if 0 <= rr < len(_KEYBOARD):
                near += [_KEYBOARD[rr][k] for k in (c - 1, c, c + 1) if 0 <= k < len(_KEYBOARD[rr])]
        _NEIGHBOURS[ch] = "".join(n for n in near if n)


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    kind = rng.choice(("swap", "delete", "repeat", "key"))
    if kind == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    if kind == "repeat":
        return word[: i + 1] + word[i] + word[i + 1 :]
    low = word[i].lower()
    if low in _NEIGHBOURS:
        sub = rng.choice(_NEIGHBOURS[low])
        return word[:i] + (sub.upper() if word[i].isupper() else sub) + word[i + 1 :]
    return word[:i] + word[i + 1 :]


def typos(lines: list[str], rate: float = 0.1, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    out = []
    for line in lines:
        toks = line.split(" ")
        out.append(
            " ".join(_typo(t, rng) if sum(ch.isalpha() for ch in t) >= 3 and rng.random() < rate else t for t in toks)
        )
    return out


def lowercase(lines: list[str]) -> list[str]:
    return [line.lower() for line in lines]


def strip_punctuation(lines: list[str]) -> list[str]:
    strip = lambda s: re.sub(r"\s+", " ", "".join(ch for ch in s if not unicodedata.category(ch).startswith("P")))  # noqa: E731
    return [strip(line).strip() for line in lines]


def variants(typo_rate: float = 0.1, seed: int = 1) -> dict[str, tuple[str, Callable[[list[str]], list[str]]]]:
    """name -> (description, function): the noise the audit applies."""
    return {
        "typos": (
            f"one-character typos in {typo_rate:.0%} of words (seed {seed})",
            lambda x: typos(x, typo_rate, seed),
        ),
        "lowercase": ("source lowercased", lowercase),
        "no punctuation": ("punctuation removed", strip_punctuation),
    }
