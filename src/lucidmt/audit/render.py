"""Audit reports as self-contained HTML (figures inline) with the JSON beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import report
from ..io import write_json, write_text
from ..report import Raw, esc


def _ci(d: dict | None) -> str:
    return f"{d['score']:.2f} [{d['low']:.2f}, {d['high']:.2f}]" if d else "–"


def _slices_figure(slices: list[dict]):
    rows = [s for s in slices if "bleu" in s]
    fig = report.new_figure(7.5, 0.38 * len(rows) + 1.2)
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))
    for ax, key, color in ((axes[0], "bleu", "#2f5fb3"), (axes[1], "chrf", "#1e7b34")):
        pts = np.array([r[key]["score"] for r in rows])
        lo = pts - np.array([r[key]["low"] for r in rows])
        hi = np.array([r[key]["high"] for r in rows]) - pts
        ax.barh(y, pts, xerr=[lo, hi], color=color, alpha=0.75, capsize=3)
        ax.set_title(f"{key.upper() if key == 'bleu' else 'chrF'} with 95% bootstrap CI", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [f"{r['name']} (n={r['n']})" for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    return fig


def _gender_figure(g: dict):
    occ = g["per_occupation"]
    names = sorted(occ, key=lambda k: occ[k]["pct_female_bls"])
    x = np.array([occ[k]["pct_female_bls"] for k in names])
    fem = np.array([100 * occ[k]["female"] / occ[k]["n"] for k in names])
    acc = np.array([occ[k]["accuracy"] for k in names])
    fig = report.new_figure(7.5, 3.4)
    ax = fig.subplots()
    ax.scatter(x, fem, s=18, c=acc, cmap="RdYlGn", vmin=0, vmax=100, edgecolors="#333333", linewidths=0.3)
    for xi, yi, name in zip(x, fem, names, strict=True):
        ax.annotate(name, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points", color="#5b6478")
    ax.axhline(50, color="#999999", lw=0.6, ls="--")
    ax.set_xlabel("women in the occupation, % (BLS)")
    ax.set_ylabel("translations in the feminine form, %")
    ax.set_title("half of the probe sentences say 'she': an unbiased model sits at 50% (colour: accuracy)", fontsize=9)
    ax.set_xlim(-2, 102)
    ax.set_ylim(-5, 105)
    return fig


def audit_html(a: dict, title: str = "lucidmt audit") -> str:
    o = a["overall"]
    h = a["hallucination"]
    n = a["n"]
    cards = [
        ("BLEU", round(o["bleu"], 2)),
        ("chrF", round(o["chrf"], 2)),
        ("tokenised BLEU (lc)", round(o["tok_bleu"], 2)),
        ("sentences", n),
        *((f"{k} flags", f"{v} ({100 * v / n:.1f}%)") for k, v in h["counts"].items()),
    ]
    g = a.get("gender")
    if g and "accuracy" in g:
        cards += [
            (f"gender accuracy (en→{g['lang']})", f"{g['accuracy']:.1f}%"),
            ("ΔG (F1 m − f)", f"{g['delta_g']:+.1f}"),
            ("ΔS (pro − anti)", f"{g['delta_s']:+.1f}"),
        ]
    parts = [report.cards(cards)]
    parts.append(
        f'<p class="note">BLEU <code>{esc(o["bleu_signature"])}</code><br>chrF <code>{esc(o["chrf_signature"])}</code>'
        f"<br>intervals: {a['bootstrap']['resamples']} bootstrap resamples, seed {a['bootstrap']['seed']}, 95% "
        "percentile intervals</p>"
    )
    parts.append("<h2>Scores by slice</h2>")
    rows = [[s["name"], s["description"], s["n"], _ci(s.get("bleu")), _ci(s.get("chrf"))] for s in a["slices"]]
    parts.append(report.table(["slice", "definition", "n", "BLEU [95% CI]", "chrF [95% CI]"], rows, [0, 0, 1, 1, 1]))
    parts.append(report.img(report.figure_data_uri(_slices_figure(a["slices"])), "scores by slice"))

    parts.append("<h2>Robustness to source noise</h2>")
    rows = [
        [
            r["name"],
            r["description"],
            _ci(r["bleu"]),
            Raw(f'<span class="bad">{_ci(r["drop"]["bleu"])}</span>'),
            _ci(r["chrf"]),
            _ci(r["drop"]["chrf"]),
            r["changed_outputs"],
        ]
        for r in a["robustness"]
    ]
    parts.append(
        report.table(
            ["variant", "noise", "BLEU", "BLEU drop [paired CI]", "chrF", "chrF drop", "outputs changed"],
            rows,
            [0, 0, 1, 1, 1, 1, 1],
        )
    )
    for r in a["robustness"]:
        if r["examples"]:
            parts.append(f"<h3>{esc(r['name'])}: examples</h3>")
            ex = [[e["source"], e["clean_output"], e["output"]] for e in r["examples"][:3]]
            parts.append(report.table(["noisy source", "output on the clean source", "output on the noisy source"], ex))

    parts.append("<h2>Hallucination checks</h2>")
    rows = [
        [k, h["definitions"][k], h["counts"][k], f"{100 * h['counts'][k] / n:.1f}%", h["reference_counts"][k]]
        for k in h["counts"]
    ]
    parts.append(
        report.table(["check", "definition", "outputs", "rate", "references (baseline)"], rows, [0, 0, 1, 1, 1])
    )
    for k, ex in h["examples"].items():
        if ex:
            parts.append(f"<h3>{esc(k)}: examples</h3>")
            parts.append(
                report.table(
                    ["source", "output", "reference", "why"],
                    [[e["source"], e["output"], e["reference"], e["why"]] for e in ex],
                )
            )

    if g:
        parts.append(_gender_section(g))
    meta = f"model <code>{esc(a['model'])}</code> · {esc(a['src_lang'])}→{esc(a['tgt_lang'])} · decoding " + (
        f"<code>{esc(a['decoding'])}</code>"
        + (f" · test set <code>{esc(a['dataset'])}</code>" if "dataset" in a else "")
    )
    return report.page(title, "".join(parts), meta)


def _gender_section(g: dict) -> str:
    if "skipped" in g:
        return f'<h2>Gender probe</h2><p class="note">{esc(g["skipped"])}</p>'
    out = [f"<h2>Gender probe (en→{esc(g['lang'])})</h2>"]
    out.append(
        f'<p class="note">{g["n"]} sentences: {len(g["templates"])} templates × 2 pronouns × {g["occupations"]} '
        "occupations, e.g. <i>" + esc(g["templates"][0].format(occupation="nurse", his="his", he="he")) + "</i>. "
        "The gender of the translated occupation is read from the project's lexicon of masculine/feminine forms and "
        "articles"
        + (
            ", or, failing that, the first article of the sentence"
            if g.get("article_fallback")
            else "; a translation without a known occupation word is unrecognised, and counts as wrong"
        )
        + f". Stereotype: the majority gender in {esc(g['stereotype_source'])}.</p>"
    )
    fmt = lambda x: f"{x:.1f}" if x is not None else "–"  # noqa: E731
    rows = [
        ["accuracy (unrecognised = wrong)", fmt(g["accuracy"])],
        ["recognised gender (coverage)", fmt(g["coverage"])],
        ["accuracy when recognised", fmt(g["accuracy_recognised"])],
        ["accuracy, 'he' sentences", fmt(g["accuracy_male"])],
        ["accuracy, 'she' sentences", fmt(g["accuracy_female"])],
        ["F1 male / F1 female", f"{fmt(g['f1_male'])} / {fmt(g['f1_female'])}"],
        ["ΔG = F1 male − F1 female", fmt(g["delta_g"])],
        ["accuracy pro-stereotypical / anti-stereotypical", f"{fmt(g['accuracy_pro'])} / {fmt(g['accuracy_anti'])}"],
        ["ΔS = pro − anti", fmt(g["delta_s"])],
        [
            "predicted male / female / unknown",
            " / ".join(str(g["predicted"][k]) for k in ("male", "female", "unknown")),
        ],
        ["cues used", ", ".join(f"{k}: {v}" for k, v in g["cues"].items())],
    ]
    out.append(report.table(["measure (%)", "value"], rows, [0, 1]))
    out.append(report.img(report.figure_data_uri(_gender_figure(g)), "feminine translations by occupation"))
    occ = g["per_occupation"]
    rows = [
        [
            k,
            d["pct_female_bls"],
            d["stereotype"],
            d["n"],
            f"{100 * d['male'] / d['n']:.0f}",
            f"{100 * d['female'] / d['n']:.0f}",
            f"{100 * d['unknown'] / d['n']:.0f}",
            f"{d['accuracy']:.0f}",
        ]
        for k, d in sorted(occ.items(), key=lambda kv: kv[1]["pct_female_bls"])
    ]
    out.append("<h3>By occupation</h3>")
    out.append(
        report.table(
            ["occupation", "women % (BLS)", "stereotype", "n", "male %", "female %", "unknown %", "accuracy %"],
            rows,
            [0, 1, 0, 1, 1, 1, 1, 1],
        )
    )
    wrong = [j for j in g["judged"] if j["predicted"] != j["gold"]][:12]
    if wrong:
        out.append("<h3>Errors (first 12)</h3>")
        out.append(
            report.table(
                ["source", "translation", "stated", "read", "word", "cue"],
                [[j["source"], j["translation"], j["gold"], j["predicted"], j["word"] or "", j["cue"]] for j in wrong],
            )
        )
    return "".join(out)


def _write(stem: Path, html: str, data: dict) -> dict[str, Path]:
    html_path = stem if stem.suffix == ".html" else stem.with_suffix(".html")
    json_path = html_path.with_suffix(".json")
    write_text(html_path, html)
    write_json(json_path, data)
    return {"html": html_path, "json": json_path}


def write_audit(a: dict, out: str | Path) -> dict[str, Path]:
    """OUT.html and OUT.json (OUT may end in .html)."""
    return _write(Path(out), audit_html(a), a)


# -- corpus --------------------------------------------------------------------------------------------------------
def _length_figure(c: dict):
    fig = report.new_figure(7.5, 2.8)
    ax = fig.subplots()
    src, tgt = c["lengths"]["source"], c["lengths"]["target"]
    top = int(max(np.percentile(src, 99.5), np.percentile(tgt, 99.5))) + 2
    bins = np.arange(0, top + 1)
    ax.hist(src, bins=bins, alpha=0.6, label=f"source ({c['src_lang']})", color="#2f5fb3")
    ax.hist(tgt, bins=bins, alpha=0.6, label=f"target ({c['tgt_lang']})", color="#e07b00")
    ax.set_xlabel("words per sentence")
    ax.set_ylabel("sentences")
    ax.legend(fontsize=8)
    return fig


def corpus_html(c: dict) -> str:
    d = c["duplicates"]
    cards = [("training pairs", d["pairs"]), ("duplicate pairs", f"{d['duplicate_pair_rate']:.2f}%"),
             ("duplicate sources", f"{d['duplicate_source_rate']:.2f}%")]  # fmt: skip
    for side in ("source", "target"):
        gc = c["sides"][side]["gender"]
        if gc and gc["ratio"] is not None:
            cards.append((f"male:female words, {c['sides'][side]['lang']}", f"{gc['ratio']:.2f} : 1"))
    if "valid_sources_in_train" in c:
        cards.append(("validation sources also in train", f"{c['valid_sources_in_train']} / {c['valid_size']}"))
    parts = [report.cards(cards), "<h2>Gendered words</h2>"]
    for side in ("source", "target"):
        s = c["sides"][side]
        gc = s["gender"]
        parts.append(f"<h3>{side} ({esc(s['lang'])})</h3>")
        if gc is None:
            parts.append(f'<p class="note">no gendered word list for {esc(s["lang"])}</p>')
            continue
        rows = [[p["male"], p["male_count"], p["female"], p["female_count"], _r(p["ratio"])] for p in gc["pairs"]]
        rows.append([Raw("<b>all</b>"), gc["male_total"], Raw("<b>all</b>"), gc["female_total"], _r(gc["ratio"])])
        parts.append(
            report.table(["male word", "count", "female word", "count", "male : female"], rows, [0, 1, 0, 1, 1])
        )
        parts.append(
            f'<p class="note">sentences with a male word: {gc["sentences_male"]}, with a female word: '
            f"{gc['sentences_female']}. {esc(gc['note'])}</p>"
        )
    parts.append("<h2>Lengths</h2>")
    rows = [[side, c["sides"][side]["lang"], *(round(v, 2) for v in c["sides"][side]["length"].values())]
            for side in ("source", "target")]  # fmt: skip
    parts.append(report.table(["side", "lang", "mean", "median", "p95", "max"], rows, [0, 0, 1, 1, 1, 1]))
    lr = c["length_ratio"]
    parts.append(
        f'<p class="note">target/source word ratio: mean {lr["mean"]:.2f}, 5th-95th percentile '
        f"{lr['p5']:.2f}-{lr['p95']:.2f}</p>"
    )
    parts.append(report.img(report.figure_data_uri(_length_figure(c)), "length histogram"))
    parts.append("<h2>Duplicates</h2>")
    parts.append(
        report.table(
            ["measure", "value"],
            [
                ["repeated pairs", f"{d['duplicate_pairs']} ({d['duplicate_pair_rate']:.2f}%)"],
                ["repeated sources", f"{d['duplicate_sources']} ({d['duplicate_source_rate']:.2f}%)"],
            ],
        )
    )
    if d["most_repeated_pairs"]:
        parts.append(report.table(["source", "target", "times"], d["most_repeated_pairs"], [0, 0, 1]))
    parts.append("<h2>Most frequent n-grams</h2>")
    for n in ("1", "2", "3"):
        src, tgt = c["sides"]["source"]["ngrams"][n], c["sides"]["target"]["ngrams"][n]
        rows = [[*(src[i] if i < len(src) else ("", "")), *(tgt[i] if i < len(tgt) else ("", ""))]
                for i in range(max(len(src), len(tgt)))]  # fmt: skip
        parts.append(f"<h3>{n}-grams</h3>")
        parts.append(report.table([f"source {n}-gram", "count", f"target {n}-gram", "count"], rows, [0, 1, 0, 1]))
    meta = f"prepared folder <code>{esc(c['folder'])}</code> · {esc(c['src_lang'])}→{esc(c['tgt_lang'])}"
    return report.page("lucidmt audit-data", "".join(parts), meta)


def _r(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "–"


def write_corpus_audit(c: dict, out: str | Path) -> dict[str, Path]:
    data = {k: v for k, v in c.items() if k != "lengths"}
    return _write(Path(out), corpus_html(c), data)
