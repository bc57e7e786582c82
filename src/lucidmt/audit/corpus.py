"""`lucidmt audit-data PREPARED`: the corpus side of bias and quality, before any model is trained.

* gendered words on each side: counts of male and female words in pairs (he/she, man/woman, ... and their German
  and French counterparts), with the male:female ratio. Words that are ambiguous are left out or named: German
  "sie" is also "they" and formal "you", "ihr" also "their"/"you"; French possessives (son/sa) agree with the
  possessed noun, not the possessor, so they say nothing about gender and are not counted.
* length distributions (words per sentence, each side) and the target/source length ratio;
* duplicates: repeated pairs, repeated sources, and validation sources that also occur in training (leakage);
* the most frequent word n-grams (n = 1, 2, 3) of each side.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..data.prepare import Prepared
from .slices import words

# (male, female) pairs per language; every word lower case.
GENDER_PAIRS: dict[str, list[tuple[str, str]]] = {
    "en": [("he", "she"), ("his", "her"), ("himself", "herself"), ("man", "woman"), ("men", "women"),
           ("boy", "girl"), ("boys", "girls"), ("father", "mother"), ("son", "daughter"), ("brother", "sister"),
           ("husband", "wife"), ("gentleman", "lady"), ("gentlemen", "ladies"), ("male", "female")],
    "de": [("er", "sie"), ("mann", "frau"), ("männer", "frauen"), ("junge", "mädchen"), ("vater", "mutter"),
           ("sohn", "tochter"), ("bruder", "schwester"), ("herr", "dame"), ("herren", "damen"),
           ("männlich", "weiblich")],
    "fr": [("il", "elle"), ("ils", "elles"), ("homme", "femme"), ("hommes", "femmes"), ("garçon", "fille"),
           ("garçons", "filles"), ("père", "mère"), ("frère", "sœur"), ("mari", "épouse"), ("monsieur", "madame"),
           ("masculin", "féminin")],
}  # fmt: skip
AMBIGUOUS = {
    "en": "'her' is object and possessive; it is paired with 'his' (its more frequent use), and 'him' is left out",
    "de": "'sie' is also 'they' and formal 'you', so the er/sie pair overstates 'sie'; 'mädchen' is singular and "
    "plural; 'jungen' (boys, but also 'young') and 'ihm'/'ihr' are left out; 'frau' is also 'wife' and 'Mrs'",
    "fr": "'fille' is both 'girl' and 'daughter', 'femme' also 'wife'; possessives (son/sa) are not counted: they "
    "agree with the possessed noun, not the possessor",
}


def gender_counts(lines: list[str], lang: str) -> dict | None:
    pairs = GENDER_PAIRS.get(lang)
    if pairs is None:
        return None
    c: Counter = Counter()
    for line in lines:
        c.update(w.lower() for w in words(line))
    rows, male, female = [], set(), set()
    for m, f in pairs:
        rows.append({"male": m, "female": f, "male_count": c[m], "female_count": c[f], "ratio": _ratio(c[m], c[f])})
        male.add(m)
        female.add(f)
    tm, tf = sum(c[w] for w in male), sum(c[w] for w in female)
    sent_m = sum(any(w.lower() in male for w in words(x)) for x in lines)
    sent_f = sum(any(w.lower() in female for w in words(x)) for x in lines)
    return {
        "pairs": rows,
        "male_total": tm,
        "female_total": tf,
        "ratio": _ratio(tm, tf),
        "sentences_male": sent_m,
        "sentences_female": sent_f,
        "note": AMBIGUOUS.get(lang, ""),
    }


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def length_stats(lines: list[str]) -> dict:
    n = np.array([len(words(x)) for x in lines], dtype=np.float64)
    if n.size == 0:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    return {
        "mean": float(n.mean()),
        "median": float(np.median(n)),
        "p95": float(np.percentile(n, 95)),
        "max": int(n.max()),
    }


def top_ngrams(lines: list[str], n: int, k: int = 15) -> list[tuple[str, int]]:
    c: Counter = Counter()
    for line in lines:
        w = [x.lower() for x in words(line)]
        c.update(" ".join(w[i : i + n]) for i in range(len(w) - n + 1))
    return c.most_common(k)


def duplicates(src: list[str], tgt: list[str]) -> dict:
    pairs = Counter(zip(src, tgt, strict=True))
    sources = Counter(src)
    n = len(src)
    return {
        "pairs": n,
        "duplicate_pairs": n - len(pairs),
        "duplicate_pair_rate": 100 * (n - len(pairs)) / n if n else 0.0,
        "duplicate_sources": n - len(sources),
        "duplicate_source_rate": 100 * (n - len(sources)) / n if n else 0.0,
        "most_repeated_pairs": [[s, t, c] for (s, t), c in pairs.most_common(5) if c > 1],
    }


def audit_corpus(folder: str | Path, top_k: int = 15) -> dict:
    """Everything `audit-data` reports, as one JSON-ready dict."""
    prep = Prepared(folder)
    m = prep.manifest
    src_lang, tgt_lang = m.get("src_lang", "src"), m.get("tgt_lang", "tgt")
    src, tgt = prep.text("train")
    out: dict = {
        "folder": str(folder),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "sizes": m.get("sizes", {}),
        "cleaning": m.get("cleaning", {}),
        "sides": {},
        "duplicates": duplicates(src, tgt),
    }
    lengths = {}
    for side, lang, lines in (("source", src_lang, src), ("target", tgt_lang, tgt)):
        lengths[side] = [len(words(x)) for x in lines]
        out["sides"][side] = {
            "lang": lang,
            "gender": gender_counts(lines, lang),
            "length": length_stats(lines),
            "ngrams": {str(n): top_ngrams(lines, n, top_k) for n in (1, 2, 3)},
        }
    ratio = np.array(lengths["target"], dtype=np.float64) / np.maximum(np.array(lengths["source"]), 1)
    out["length_ratio"] = {"mean": float(ratio.mean()), "p5": float(np.percentile(ratio, 5)),
                           "p95": float(np.percentile(ratio, 95))}  # fmt: skip
    out["lengths"] = lengths  # for the histogram; dropped from the JSON file
    valid_path = Path(folder) / "valid.src"
    if valid_path.exists():
        vsrc, _ = prep.text("valid")
        train_set = set(src)
        out["valid_sources_in_train"] = sum(s in train_set for s in vsrc)
        out["valid_size"] = len(vsrc)
    return out
