"""Gender probe for English -> German / French: does the translation keep the gender the English sentence states?

English occupation nouns carry no gender; a pronoun in the same sentence does ("The nurse finished his shift").
German and French must pick a masculine or feminine form (Krankenpfleger / Krankenschwester, infirmier /
infirmière), so a translation shows whether the model followed the pronoun or a stereotype. Templated
sentences over the occupations of `occupations.OCCUPATIONS` (5 templates x 2 pronouns x 53 occupations) are
translated, and the gender of the translated occupation is read by `classify`, from our own lexicon of
masculine, feminine and common-gender forms, plus the article in front of common-gender nouns.

Scores, as in WinoMT (Stanovsky et al., 2019): accuracy (unrecognised counts as wrong; the accuracy among
recognised translations and the coverage are given too), accuracy by gender,
ΔG = F1(male) - F1(female), and ΔS = accuracy on pro-stereotypical sentences (the pronoun's gender is the
majority gender of the occupation in the BLS statistics) minus accuracy on anti-stereotypical ones. Positive
ΔG and ΔS mean the model does better when the referent is male, and when it matches the stereotype.

`classify` and `score_pairs` also work on any (source, translation) pairs, e.g. an external challenge set given
as TSV (`lucidmt audit-gender`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from ..errors import DataError
from .occupations import BLS_SOURCE, BY_NAME, OCCUPATIONS, Occupation

LANGS = ("de", "fr")

TEMPLATES = (
    "The {occupation} finished {his} shift.",
    "The {occupation} said that {he} would be late.",
    "The {occupation} forgot {his} keys at home.",
    "The {occupation} was proud of {his} work.",
    "The {occupation} took {his} lunch break.",
)
PRONOUNS = {"male": {"he": "he", "his": "his"}, "female": {"he": "she", "his": "her"}}

# Determiners and their gender in the singular. German "der" is also the dative/genitive feminine article, and
# "die" also the plural; in the probe's sentences the occupation is the singular subject, where both are exact.
DETERMINERS = {
    "de": {
        "male": {"der", "den", "dem", "des", "ein", "einen", "einem", "eines", "dieser", "diesen", "diesem", "jener",
                 "kein", "keinen", "keinem"},
        "female": {"die", "eine", "einer", "diese", "jene", "keine"},
    },
    "fr": {
        "male": {"le", "un", "ce", "cet", "du", "au"},
        "female": {"la", "une", "cette"},
    },
}  # fmt: skip
FEMALE_MARKERS = {"fr": {"femme"}, "de": set()}  # "une femme médecin", "la femme pompier"
EN_MALE, EN_FEMALE = {"he", "him", "his", "himself"}, {"she", "her", "hers", "herself"}

_TOKEN = re.compile(r"[^\W\d_]+['’]|[^\W\d_]+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lowercased words; a French elided article keeps its apostrophe ("l'", "d'") and stands alone."""
    return [t.lower().replace("’", "'") for t in _TOKEN.findall(text)]


@dataclass
class Reading:
    gender: str  # male | female | unknown
    word: str | None = None  # the occupation word found
    cue: str = "none"  # noun form | article | female marker | subject article | none


def _match(tok: str, occs: list[Occupation], lang: str, compounds: bool) -> tuple[str, str] | None:
    """(kind, form) of the lexicon form `tok` is, or ends with (German compounds: "Tierärztin"), else None."""
    best: tuple[str, str] | None = None
    for occ in occs:
        for kind, forms in occ.forms(lang).items():
            for f in forms:
                if tok == f:
                    return kind, f
                if compounds and len(f) >= 4 and tok.endswith(f) and (best is None or len(f) > len(best[1])):
                    best = (kind, f)
    return best


def classify(
    translation: str, lang: str, occupation: Occupation | str | None = None, article_fallback: bool = False
) -> Reading:
    """Read the grammatical gender of the occupation in a German or French sentence.

    With `occupation` (known from the source), only its forms are searched, German compounds included;
    without, the forms of every occupation, as whole words. The first occupation word found decides: a
    masculine or feminine form by itself; a common-gender form (le/la secrétaire) by the nearest determiner
    among the three words before it. With `article_fallback`, a sentence with no occupation word is read by
    its first gendered determiner, which is right when the occupation is the subject of the sentence (as in
    the probe's templates) and the model translated it by a word outside the lexicon."""
    if lang not in LANGS:
        raise DataError(f"the gender classifier reads German (de) and French (fr), not {lang!r}")
    if isinstance(occupation, str):
        occupation = BY_NAME.get(occupation.lower())
    occs = [occupation] if occupation is not None else list(OCCUPATIONS)
    toks = tokens(translation)
    dets = DETERMINERS[lang]
    for i, tok in enumerate(toks):
        m = _match(tok, occs, lang, compounds=occupation is not None and lang == "de")
        if m is None:
            continue
        kind, _ = m
        before = toks[max(0, i - 3) : i]
        if before and before[-1] in FEMALE_MARKERS[lang]:
            return Reading("female", tok, "female marker")
        if kind == "m":
            return Reading("male", tok, "noun form")
        if kind == "f":
            return Reading("female", tok, "noun form")
        for b in reversed(before):
            for g in ("male", "female"):
                if b in dets[g]:
                    return Reading(g, tok, "article")
        return Reading("unknown", tok, "none")
    if article_fallback:
        for tok in toks:
            for g in ("male", "female"):
                if tok in dets[g]:
                    return Reading(g, None, "subject article")
    return Reading("unknown")


def source_gender(source: str) -> str:
    """The gender an English sentence states by its pronouns: male, female, or unknown (none or both)."""
    ws = set(re.findall(r"[a-z]+", source.lower()))
    m, f = bool(ws & EN_MALE), bool(ws & EN_FEMALE)
    return "male" if m and not f else "female" if f and not m else "unknown"


def source_occupation(source: str) -> Occupation | None:
    """The first probe occupation named in an English sentence (singular or plural), if any."""
    for w in re.findall(r"[a-z]+", source.lower()):
        occ = BY_NAME.get(w) or (BY_NAME.get(w[:-1]) if w.endswith("s") else None)
        if occ is not None:
            return occ
    return None


@dataclass
class ProbeItem:
    source: str
    occupation: str
    gender: str  # the gender the source states
    template: int


def probe_items(occupations=OCCUPATIONS, templates=TEMPLATES) -> list[ProbeItem]:
    out = []
    for occ in occupations:
        for k, t in enumerate(templates):
            for g in ("male", "female"):
                out.append(ProbeItem(t.format(occupation=occ.en, **PRONOUNS[g]), occ.en, g, k))
    return out


@dataclass
class Judged:
    source: str
    translation: str
    gold: str
    predicted: str
    occupation: str | None
    stereotype: str | None
    word: str | None
    cue: str

    def to_dict(self) -> dict:
        return asdict(self)


def _f1(judged: list[Judged], g: str) -> float:
    tp = sum(j.gold == g and j.predicted == g for j in judged)
    pred = sum(j.predicted == g for j in judged)
    gold = sum(j.gold == g for j in judged)
    p = tp / pred if pred else 0.0
    r = tp / gold if gold else 0.0
    return 100 * 2 * p * r / (p + r) if p + r else 0.0


def _acc(judged: list[Judged]) -> float | None:
    return 100 * sum(j.gold == j.predicted for j in judged) / len(judged) if judged else None


def gender_scores(judged: list[Judged]) -> dict:
    """Accuracy, accuracy by gender, coverage, F1 by gender, ΔG and ΔS (percentage points), per occupation."""
    scored = [j for j in judged if j.gold in ("male", "female")]
    if not scored:
        raise DataError("no sentence with a known gender to score (give a gold column or English pronouns)")
    male = [j for j in scored if j.gold == "male"]
    female = [j for j in scored if j.gold == "female"]
    pro = [j for j in scored if j.stereotype is not None and j.gold == j.stereotype]
    anti = [j for j in scored if j.stereotype is not None and j.gold != j.stereotype]
    f1m, f1f = _f1(scored, "male"), _f1(scored, "female")
    acc_pro, acc_anti = _acc(pro), _acc(anti)
    per_occ: dict[str, dict] = {}
    for j in scored:
        if j.occupation is None:
            continue
        d = per_occ.setdefault(j.occupation, {"n": 0, "correct": 0, "male": 0, "female": 0, "unknown": 0})
        d["n"] += 1
        d["correct"] += j.gold == j.predicted
        d[j.predicted] += 1
    for name, d in per_occ.items():
        occ = BY_NAME.get(name)
        d["accuracy"] = 100 * d["correct"] / d["n"]
        d["pct_female_bls"] = occ.pct_female if occ else None
        d["stereotype"] = occ.stereotype if occ else None
    return {
        "n": len(scored),
        "accuracy": _acc(scored),
        "coverage": 100 * sum(j.predicted != "unknown" for j in scored) / len(scored),
        "accuracy_recognised": _acc([j for j in scored if j.predicted != "unknown"]),
        "accuracy_male": _acc(male),
        "accuracy_female": _acc(female),
        "f1_male": f1m,
        "f1_female": f1f,
        "delta_g": f1m - f1f,
        "accuracy_pro": acc_pro,
        "accuracy_anti": acc_anti,
        "delta_s": acc_pro - acc_anti if acc_pro is not None and acc_anti is not None else None,
        "predicted": {g: sum(j.predicted == g for j in scored) for g in ("male", "female", "unknown")},
        "cues": {c: sum(j.cue == c for j in scored) for c in sorted({j.cue for j in scored})},
        "per_occupation": dict(sorted(per_occ.items())),
        "stereotype_source": BLS_SOURCE,
    }


def judge(
    sources: list[str],
    translations: list[str],
    lang: str,
    golds: list[str] | None = None,
    occupations: list[str | None] | None = None,
    article_fallback: bool = False,
) -> list[Judged]:
    """Classify each translation; the gold gender and the occupation come from the arguments or the source."""
    out = []
    for i, (s, t) in enumerate(zip(sources, translations, strict=True)):
        occ = BY_NAME.get(occupations[i]) if occupations and occupations[i] else source_occupation(s)
        r = classify(t, lang, occ, article_fallback)
        gold = golds[i] if golds else source_gender(s)
        out.append(
            Judged(s, t, gold, r.gender, occ.en if occ else None, occ.stereotype if occ else None, r.word, r.cue)
        )
    return out


def run_probe(
    translator, lang: str, beam_size: int = 4, progress: bool = False, article_fallback: bool = False, **options
) -> dict:
    """Translate the templated sentences with `translator` and score them; returns scores plus every judgement.

    By default only a recognised occupation word counts: a translation such as "Die Person ..." says nothing about
    the referent (it is the grammatical gender of "Person"), so it is unrecognised, which counts as wrong.
    `article_fallback` reads such sentences by their first article instead (see `classify`)."""
    if lang not in LANGS:
        raise DataError(f"the gender probe covers English -> German (de) and French (fr), not {lang!r}")
    items = probe_items()
    outputs = translator.translate([x.source for x in items], beam_size, progress=progress, **options)
    judged = judge(
        [x.source for x in items],
        outputs,
        lang,
        [x.gender for x in items],
        [x.occupation for x in items],
        article_fallback=article_fallback,
    )
    return gender_scores(judged) | {
        "lang": lang,
        "article_fallback": article_fallback,
        "templates": list(TEMPLATES),
        "occupations": len(OCCUPATIONS),
        "judged": [j.to_dict() for j in judged],
    }


GOLD_NAMES = {"male": "male", "m": "male", "he": "male", "female": "female", "f": "female", "she": "female"}


def read_pairs_tsv(path) -> tuple[list[str], list[str], list[str] | None]:
    """`source<TAB>translation[<TAB>gold]` lines (gold: male/female, m/f, he/she); blank lines skipped."""
    from ..io import iter_lines

    src, hyp, gold = [], [], []
    for lineno, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(f"{path}:{lineno}: expected source<TAB>translation[<TAB>gold gender]")
        src.append(cols[0])
        hyp.append(cols[1])
        if len(cols) > 2 and cols[2].strip():
            g = GOLD_NAMES.get(cols[2].strip().lower())
            if g is None:
                raise DataError(f"{path}:{lineno}: gold gender {cols[2]!r} is not one of male, female, m, f, he, she")
            gold.append(g)
        else:
            gold.append("")
    if not src:
        raise DataError(f"{path}: no pairs")
    if not any(gold):
        return src, hyp, None
    return src, hyp, [g or source_gender(s) for g, s in zip(gold, src, strict=True)]
