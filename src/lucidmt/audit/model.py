"""`audit_model`: one model on one test set — scores by slice with confidence intervals, robustness to noise,
hallucination symptoms and the gender probe — as one JSON-ready dict (rendered by `audit.render`)."""

from __future__ import annotations

import sys
from collections import Counter

from ..evaluate import score
from .gender import LANGS as GENDER_LANGS
from .gender import run_probe
from .hallucination import copy_share, detect, length_ratio, repetition
from .metrics import paired_drop, score_subset, sentence_stats
from .noise import variants
from .slices import standard_slices


def _log(msg: str) -> None:
    print(f"audit: {msg}", file=sys.stderr, flush=True)


def audit_model(
    translator,
    sources: list[str],
    references: list[str],
    src_lang: str,
    tgt_lang: str,
    train_counts: Counter | None = None,
    beam_size: int = 4,
    resamples: int = 1000,
    seed: int = 1,
    typo_rate: float = 0.1,
    rare_max: int = 2,
    gender: bool = True,
    gender_article_fallback: bool = False,
    examples: int = 5,
    progress: bool = True,
    log=_log,
    **options,
) -> dict:
    """Translate the test set (and its noisy variants, and the gender probe) and measure.

    `train_counts`: word frequencies of the training source text (for the rare-word slice; None skips it)."""
    from ..decode.search import DecodeOptions
    from ..errors import DataError

    if len(sources) != len(references):
        raise DataError(f"{len(sources)} sources but {len(references)} references")
    if not sources:
        raise DataError("nothing to audit: the test set is empty")
    log = log or (lambda *_: None)
    log(f"translating {len(sources)} sentences")
    hyps = translator.translate(sources, beam_size, progress=progress, **options)
    stats = sentence_stats(hyps, references, tgt_lang)
    overall = score(hyps, references, tgt_lang)

    slices = []
    for sl in standard_slices(sources, train_counts, rare_max):
        s = score_subset(stats, sl.indices, resamples, seed)
        slices.append({"name": sl.name, "description": sl.description, "n": len(sl.indices)} | (
            {"bleu": s.bleu.to_dict(), "chrf": s.chrf.to_dict()} if s else {}))  # fmt: skip
    if train_counts is None:
        slices.append({"name": "rare words", "description": "not computed: the training text was not found", "n": 0})

    robustness = []
    for name, (description, fn) in variants(typo_rate, seed).items():
        noisy = fn(sources)
        log(f"translating the '{name}' variant")
        noisy_hyps = translator.translate(noisy, beam_size, progress=progress, **options)
        nstats = sentence_stats(noisy_hyps, references, tgt_lang)
        whole = score_subset(nstats, range(len(sources)), resamples, seed)
        changed = [i for i in range(len(sources)) if noisy_hyps[i] != hyps[i]]
        robustness.append(
            {
                "name": name,
                "description": description,
                "bleu": whole.bleu.to_dict(),
                "chrf": whole.chrf.to_dict(),
                "drop": paired_drop(stats, nstats, resamples, seed),
                "changed_outputs": len(changed),
                "examples": [
                    {"source": noisy[i], "clean_output": hyps[i], "output": noisy_hyps[i]} for i in changed[:examples]
                ],
            }
        )

    flags, ref_flags = detect(sources, hyps), detect(sources, references)
    hallucination = {
        "counts": flags.counts(),
        "reference_counts": ref_flags.counts(),
        "n": len(sources),
        "definitions": {
            "copy": "3+ output words, at least 60% of them also in the source",
            "length ratio": "output/source characters outside [0.5, 2.0]",
            "repetition": "a word n-gram (n<=4) repeated back to back, or a word 3-gram occurring twice",
        },
        "examples": {},
    }
    for kind, idx in (("copy", flags.copy), ("length ratio", flags.length), ("repetition", flags.repetition)):
        rows = []
        for i in idx[:examples]:
            detail = {
                "copy": f"{copy_share(sources[i], hyps[i]):.0%} of words in the source",
                "length ratio": f"ratio {length_ratio(sources[i], hyps[i]):.2f}",
                "repetition": f"repeats '{repetition(hyps[i])}'",
            }[kind]
            rows.append({"source": sources[i], "output": hyps[i], "reference": references[i], "why": detail})
        hallucination["examples"][kind] = rows

    out = {
        "model": getattr(translator, "source", ""),
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "n": len(sources),
        "decoding": DecodeOptions(beam_size=beam_size, **options).signature(),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
        "overall": overall.to_dict(),
        "slices": slices,
        "robustness": robustness,
        "hallucination": hallucination,
    }
    if gender and src_lang == "en" and tgt_lang in GENDER_LANGS:
        log("translating the gender probe")
        out["gender"] = run_probe(
            translator, tgt_lang, beam_size, progress=progress, article_fallback=gender_article_fallback, **options
        )
    elif gender:
        out["gender"] = {"skipped": f"the gender probe covers en->de and en->fr, not {src_lang}->{tgt_lang}"}
    return out
