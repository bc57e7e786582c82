"""`lucidmt audit`, `lucidmt audit-data`, `lucidmt audit-gender`."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="audit a model on a test set: slices with CIs, robustness, hallucinations, gender probe (HTML+JSON)",
        description="Translate a test set and write OUT.html and OUT.json: BLEU and chrF by slice with bootstrap "
        "confidence intervals, the drop under synthetic source noise, hallucination checks with examples, and "
        "(en->de, en->fr) the gender probe.",
    )
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint folder")
    p.add_argument("--dataset", help="named dataset, e.g. multi30k")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--src", help="source file (instead of --dataset)")
    p.add_argument("--ref", help="reference file")
    p.add_argument("--data-dir")
    p.add_argument("--train-data", help="prepared folder for the rare-word slice (default: the run's data.path)")
    p.add_argument("--out", default="audit.html", help="report path; the JSON goes beside it (default: audit.html)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=0.6)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=1, help="seed of the bootstrap and the typo noise")
    p.add_argument("--typo-rate", type=float, default=0.1, help="share of words given a typo")
    p.add_argument("--rare-max", type=int, default=2, help="a word seen at most this often in training is rare")
    p.add_argument("--no-gender", action="store_true", help="skip the gender probe")
    p.add_argument(
        "--gender-article-fallback",
        action="store_true",
        help="gender probe: read a translation with no known occupation word by its first article",
    )
    p.add_argument("--limit", type=int, help="audit only the first N sentences")
    p.add_argument("--device")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="CPU: translate in N processes (the test set, its noisy copies and the probe are thousands of lines)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser(
        "audit-data",
        help="audit a prepared corpus: gendered words, lengths, duplicates, frequent n-grams (HTML+JSON)",
    )
    p.add_argument("prepared", help="prepared-data folder (from `lucidmt prepare`)")
    p.add_argument("--out", default="audit-data.html", help="report path; the JSON goes beside it")
    p.add_argument("--top", type=int, default=15, help="n-grams listed per order")
    p.set_defaults(func=cmd_audit_data)

    p = sub.add_parser(
        "audit-gender",
        help="score gender in (source, translation) pairs from a TSV file (e.g. an external challenge set)",
        description="Read source<TAB>translation[<TAB>gold gender] lines (English sources; German or French "
        "translations) and print accuracy, ΔG and ΔS. Without a gold column the gender is read from the English "
        "pronouns; the occupation from the probe's occupation list.",
    )
    p.add_argument("tsv")
    p.add_argument("--lang", required=True, choices=["de", "fr"], help="language of the translations")
    p.add_argument("--article-fallback", action="store_true", help="read sentences without an occupation word by "
                   "their first gendered article (right when the occupation is the subject)")  # fmt: skip
    p.add_argument("--json", help="write the scores and every judgement to this JSON file")
    p.set_defaults(func=cmd_audit_gender)


def cmd_audit(a) -> int:
    from ..decode.translator import Translator

    with Translator.load(a.run, device=a.device, workers=a.workers) as tr:
        return _audit(a, tr)


def _audit(a, tr) -> int:
    from ..data.corpus import load_dataset, read_parallel
    from ..data.prepare import Prepared
    from ..errors import DataError
    from .model import audit_model
    from .render import write_audit
    from .slices import word_counts

    cfg = tr.config
    src_lang, tgt_lang = cfg.data.src_lang, cfg.data.tgt_lang
    if a.dataset:
        data = load_dataset(a.dataset, a.split, src_lang, tgt_lang, a.data_dir)
        name = f"{a.dataset} {a.split}"
    elif a.src and a.ref:
        data = read_parallel(a.src, a.ref)
        name = f"{a.src} + {a.ref}"
    else:
        raise DataError("give --dataset (with --split), or --src and --ref")
    src, ref = data.src[: a.limit], data.tgt[: a.limit]
    counts = None
    train_dir = a.train_data or cfg.data.path
    if train_dir and (Path(train_dir) / "manifest.json").exists():
        counts = word_counts(Prepared(train_dir).text("train")[0])
    elif a.train_data:
        raise DataError(f"{a.train_data}: not a prepared-data folder (no manifest.json)")
    else:
        print(
            f"audit: training text not found at {train_dir!r}: no rare-word slice (give --train-data)", file=sys.stderr
        )
    result = audit_model(
        tr, src, ref, src_lang, tgt_lang, counts, beam_size=a.beam, resamples=a.bootstrap, seed=a.seed,
        typo_rate=a.typo_rate, rare_max=a.rare_max, gender=not a.no_gender, progress=not a.no_progress,
        gender_article_fallback=a.gender_article_fallback,
        length_penalty=a.length_penalty,
    )  # fmt: skip
    result["dataset"] = name
    paths = write_audit(result, a.out)
    o = result["overall"]
    print(f"{name}: {result['n']} sentences, BLEU {o['bleu']:.2f}, chrF {o['chrf']:.2f}")
    for s in result["slices"]:
        if "bleu" in s:
            b = s["bleu"]
            print(f"  {s['name']:24} n={s['n']:5}  BLEU {b['score']:6.2f} [{b['low']:.2f}, {b['high']:.2f}]")
    for r in result["robustness"]:
        d = r["drop"]["bleu"]
        print(f"  noise {r['name']:18} BLEU drop {d['score']:6.2f} [{d['low']:.2f}, {d['high']:.2f}]")
    print("  hallucination flags: " + ", ".join(f"{k} {v}" for k, v in result["hallucination"]["counts"].items()))
    g = result.get("gender", {})
    if "accuracy" in g:
        rec = g["accuracy_recognised"]
        print(
            f"  gender probe: accuracy {g['accuracy']:.1f}% (coverage {g['coverage']:.1f}%, accuracy when recognised "
            f"{rec if rec is None else round(rec, 1)}%), ΔG {g['delta_g']:+.1f}, ΔS {g['delta_s']:+.1f}"
        )
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def cmd_audit_data(a) -> int:
    from .corpus import audit_corpus
    from .render import write_corpus_audit

    c = audit_corpus(a.prepared, a.top)
    paths = write_corpus_audit(c, a.out)
    d = c["duplicates"]
    print(f"{a.prepared}: {d['pairs']} pairs, {d['duplicate_pair_rate']:.2f}% duplicate pairs")
    for side in ("source", "target"):
        gc = c["sides"][side]["gender"]
        if gc:
            ratio = f"{gc['ratio']:.2f}" if gc["ratio"] is not None else "n/a"
            print(f"  {side} ({c['sides'][side]['lang']}): male words {gc['male_total']}, female words "
                  f"{gc['female_total']}, ratio {ratio}")  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


def cmd_audit_gender(a) -> int:
    from ..io import write_json
    from .gender import gender_scores, judge, read_pairs_tsv

    src, hyp, gold = read_pairs_tsv(a.tsv)
    judged = judge(src, hyp, a.lang, gold, article_fallback=a.article_fallback)
    s = gender_scores(judged)
    fmt = lambda x: f"{x:.1f}" if x is not None else "n/a"  # noqa: E731
    print(f"{s['n']} pairs with a known gender ({len(src)} read)")
    print(f"accuracy {fmt(s['accuracy'])}  (male {fmt(s['accuracy_male'])}, female {fmt(s['accuracy_female'])}), "
          f"coverage {fmt(s['coverage'])}")  # fmt: skip
    print(f"ΔG {fmt(s['delta_g'])}  ΔS {fmt(s['delta_s'])}")
    if a.json:
        write_json(a.json, s | {"judged": [j.to_dict() for j in judged]})
    return 0
