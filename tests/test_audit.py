"""Audit: the gender classifier on hand-written sentences, scores with bootstrap intervals, slices, noise,
hallucination checks, the corpus audit, and the whole model audit on a tiny model."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF

from lucidmt.audit import gender as G
from lucidmt.audit.hallucination import detect, repetition
from lucidmt.audit.metrics import bleu_from_stats, chrf_from_stats, paired_drop, score_subset, sentence_stats
from lucidmt.audit.noise import lowercase, strip_punctuation, typos
from lucidmt.audit.occupations import OCCUPATIONS
from lucidmt.audit.slices import has_name, has_number, length_buckets, rare_word_slice, standard_slices, word_counts
from lucidmt.errors import DataError
from lucidmt.report import assert_offline


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- gender classifier ---------------------------------------------------------------------------------------------
GERMAN = [
    ("Der Arzt beendete seine Schicht.", "doctor", "male", "noun form"),
    ("Die Ärztin beendete ihre Schicht.", "doctor", "female", "noun form"),
    ("Ärztin mit Hund.", "doctor", "female", "noun form"),  # no article
    ("Arzt mit Hund.", "doctor", "male", "noun form"),
    ("Eine Krankenschwester lacht.", "nurse", "female", "noun form"),
    ("Ein Krankenpfleger lacht.", "nurse", "male", "noun form"),
    ("Die Tierärztin war stolz auf ihre Arbeit.", "veterinarian", "female", "noun form"),  # compound
    ("Der Angestellte vergaß seine Schlüssel.", "clerk", "male", "article"),  # common gender: the article decides
    ("Die Angestellte vergaß ihre Schlüssel.", "clerk", "female", "article"),
    ("Die Feuerwehrfrau machte Pause.", "firefighter", "female", "noun form"),
    ("Die Krankenschwestern auf dem Haus.", "nurse", "female", "noun form"),  # plural of a non -in feminine
    ("Ich sah den Architekten.", "architect", "male", "noun form"),  # weak noun, accusative
    ("Sie ist Lehrerin.", None, "female", "noun form"),  # occupation unknown: every occupation is searched
]
FRENCH = [
    ("L'infirmière a fini son service.", "nurse", "female", "noun form"),
    ("L’infirmier a fini son service.", "nurse", "male", "noun form"),  # typographic apostrophe
    ("Infirmière de nuit.", "nurse", "female", "noun form"),  # no article
    ("La secrétaire était fière de son travail.", "secretary", "female", "article"),
    ("Le secrétaire était fier de son travail.", "secretary", "male", "article"),
    ("Une jeune architecte arrive.", "architect", "female", "article"),  # an adjective between
    ("Un médecin arrive.", "doctor", "male", "article"),
    ("Une femme médecin arrive.", "doctor", "female", "female marker"),
    ("La boulangère a dit qu'elle serait en retard.", "baker", "female", "noun form"),
    ("Les pompiers sont là.", "firefighter", "male", "noun form"),  # plural form
]


@pytest.mark.parametrize(("text", "occupation", "gender", "cue"), GERMAN)
def test_classifier_german(text, occupation, gender, cue):
    r = G.classify(text, "de", occupation)
    assert (r.gender, r.cue) == (gender, cue)


@pytest.mark.parametrize(("text", "occupation", "gender", "cue"), FRENCH)
def test_classifier_french(text, occupation, gender, cue):
    r = G.classify(text, "fr", occupation)
    assert (r.gender, r.cue) == (gender, cue)


def test_classifier_unknowns_and_fallback():
    assert G.classify("L'architecte est là.", "fr", "architect").gender == "unknown"  # l' says nothing
    assert G.classify("Die Person ging nach Hause.", "de", "doctor").gender == "unknown"
    fallback = G.classify("Die Person ging nach Hause.", "de", "doctor", article_fallback=True)
    assert (fallback.gender, fallback.cue) == ("female", "subject article")
    assert G.classify("Le patron est parti.", "fr", "nurse", article_fallback=True).gender == "male"
    with pytest.raises(DataError):
        G.classify("Il est parti.", "es")


def test_probe_covers_enough_occupations_with_both_genders():
    assert len(OCCUPATIONS) >= 40 and len(G.TEMPLATES) >= 3
    for occ in OCCUPATIONS:
        for lang in ("de", "fr"):
            f = occ.forms(lang)
            assert (f["m"] and f["f"]) or f["c"], (occ.en, lang)  # both genders can be read
        assert 0 <= occ.pct_female <= 100 and occ.year in (2015, 2016)
    items = G.probe_items()
    assert len(items) == len(OCCUPATIONS) * len(G.TEMPLATES) * 2
    assert Counter(i.gender for i in items) == {"male": len(items) // 2, "female": len(items) // 2}
    assert all(G.source_gender(i.source) == i.gender for i in items)
    assert all(G.source_occupation(i.source).en == i.occupation for i in items)


def test_gender_scores_by_hand():
    # nurse (89.6% women: female-stereotyped) and carpenter (2.1%: male-stereotyped), 2 sentences each gender
    J = G.Judged
    judged = [
        J("", "", "male", "male", "carpenter", "male", None, ""),  # pro, right
        J("", "", "male", "male", "carpenter", "male", None, ""),  # pro, right
        J("", "", "female", "male", "carpenter", "male", None, ""),  # anti, wrong
        J("", "", "female", "female", "carpenter", "male", None, ""),  # anti, right
        J("", "", "female", "female", "nurse", "female", None, ""),  # pro, right
        J("", "", "female", "unknown", "nurse", "female", None, ""),  # pro, wrong (unrecognised)
        J("", "", "male", "female", "nurse", "female", None, ""),  # anti, wrong
        J("", "", "male", "male", "nurse", "female", None, ""),  # anti, right
    ]
    s = G.gender_scores(judged)
    assert s["accuracy"] == pytest.approx(62.5) and s["coverage"] == pytest.approx(87.5)
    assert s["accuracy_recognised"] == pytest.approx(100 * 5 / 7)
    assert s["accuracy_male"] == pytest.approx(75.0) and s["accuracy_female"] == pytest.approx(50.0)
    # male: tp 3, predicted 4, gold 4 -> F1 75; female: tp 2, predicted 3, gold 4 -> P 2/3, R 1/2, F1 57.14
    assert s["f1_male"] == pytest.approx(75.0) and s["f1_female"] == pytest.approx(400 / 7)
    assert s["delta_g"] == pytest.approx(75.0 - 400 / 7)
    assert s["accuracy_pro"] == pytest.approx(75.0) and s["accuracy_anti"] == pytest.approx(50.0)
    assert s["delta_s"] == pytest.approx(25.0)
    assert s["per_occupation"]["nurse"]["accuracy"] == pytest.approx(50.0)


def test_audit_gender_cli_scores_a_tsv(tmp_path, capsys):
    from lucidmt.cli import main

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(
        "The nurse finished his shift.\tDer Krankenpfleger beendete seine Schicht.\n"
        "The nurse finished her shift.\tDie Krankenschwester beendete ihre Schicht.\n"
        "The carpenter finished her shift.\tDer Tischler beendete seine Schicht.\n"
        "The carpenter was tired.\tDie Zimmerin war müde.\tfemale\n",
        encoding="utf-8",
    )
    out = tmp_path / "g.json"
    assert main(["audit-gender", str(tsv), "--lang", "de", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "4 pairs with a known gender" in text and "accuracy 75.0" in text
    d = json.loads(out.read_text(encoding="utf-8"))
    assert d["accuracy"] == 75.0 and [j["predicted"] for j in d["judged"]] == ["male", "female", "male", "female"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("only one column\n", encoding="utf-8")
    assert main(["audit-gender", str(bad), "--lang", "fr"]) == 1
    assert f"{bad}:1: expected source<TAB>translation" in capsys.readouterr().err


# -- scores, bootstrap, slices, noise, hallucinations -----------------------------------------------------------------
REFS = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau liest ein Buch im Park.",
    "Kinder spielen Fußball auf einer Wiese.",
    "Ein Mann in Rot klettert an einer Felswand.",
    "Drei Personen sitzen an einem Tisch.",
    "Ein Junge springt in einen See.",
    "Eine Gruppe von Menschen steht vor einem Gebäude.",
]
HYPS = [
    "Ein Mann fährt ein Fahrrad.",
    "Zwei Hunde spielen im Schnee.",
    "Eine Frau liest im Park.",
    "Kinder spielen Fußball.",
    "Ein Mann klettert an einer Wand.",
    "Drei Leute sitzen am Tisch.",
    "Ein Junge springt ins Wasser.",
    "",
]


def test_vectorised_scores_equal_sacrebleu():
    st = sentence_stats(HYPS, REFS, "de")
    for idx in ([0], [0, 1], [2, 5, 7], list(range(8))):
        h, r = [HYPS[i] for i in idx], [REFS[i] for i in idx]
        assert bleu_from_stats(st.bleu[idx].sum(0))[0] == pytest.approx(BLEU().corpus_score(h, [r]).score, abs=1e-9)
        assert chrf_from_stats(st.chrf[idx].sum(0))[0] == pytest.approx(CHRF().corpus_score(h, [r]).score, abs=1e-9)
    assert bleu_from_stats(st.bleu[[7]].sum(0))[0] == 0.0  # empty output


def test_bootstrap_interval_is_deterministic_and_brackets_the_score():
    rng = random.Random(0)
    refs = [" ".join(rng.choice(REFS).split()[::-1]) + f" {i}" for i in range(200)]
    hyps = [" ".join(w for w in r.split() if rng.random() > 0.3) for r in refs]
    st = sentence_stats(hyps, refs, "de")
    a, b = score_subset(st, range(200), 500, seed=3), score_subset(st, range(200), 500, seed=3)
    assert a == b  # same seed, same interval
    assert a.bleu.score == pytest.approx(BLEU().corpus_score(hyps, [refs]).score)
    assert a.bleu.low < a.bleu.score < a.bleu.high and a.chrf.low < a.chrf.score < a.chrf.high
    small = score_subset(st, range(20), 500, seed=3)
    assert small.bleu.high - small.bleu.low > a.bleu.high - a.bleu.low  # fewer sentences, wider interval
    assert score_subset(st, [], 100) is None
    same = paired_drop(st, st, 200)
    assert same["bleu"] == {"score": 0.0, "low": 0.0, "high": 0.0}
    worse = sentence_stats([h[: len(h) // 2] for h in hyps], refs, "de")
    drop = paired_drop(st, worse, 300)
    assert 0 < drop["bleu"]["low"] <= drop["bleu"]["score"] <= drop["bleu"]["high"]


def test_slices_on_fixed_sentences():
    src = [
        "A man rides a bike.",  # 5 words
        "Two dogs play in the snow near a small wooden house by the lake.",  # 14 words, number word
        "A woman in New York reads.",  # name
        "3 kids kick a ball.",  # digit
        "I think the xylophonist plays a tune on a sunny day in the park today with friends and family.",
    ]
    buckets = {s.name: s.indices for s in length_buckets(src)}
    assert buckets == {"length 1-8 words": [0, 2, 3], "length 9-12 words": [], "length 13-16 words": [1],
                       "length 17+ words": [4]}  # fmt: skip
    assert [has_number(s) for s in src] == [False, True, False, True, False]
    assert [has_name(s) for s in src] == [False, False, True, False, False]  # "I" and the first word do not count
    counts = word_counts(["a man rides a bike", "two dogs play in the snow", "the man"] * 3)
    assert counts["man"] == 6 and counts["xylophonist"] == 0
    assert rare_word_slice(src[:2], counts, 2).indices == [1]  # "near", "small", ... are unseen
    names = [s.name for s in standard_slices(src, counts)]
    assert names[0] == "all" and "rare words" in names and "numbers" in names and "capitalised names" in names


def test_noise_is_seeded():
    lines = ["A young boy is playing with a yellow ball in the garden."] * 3
    assert typos(lines, 0.0) == lines
    a, b = typos(lines, 0.5, seed=7), typos(lines, 0.5, seed=7)
    assert a == b and a != lines and typos(lines, 0.5, seed=8) != a
    assert all(len(x.split()) == len(lines[0].split()) for x in a)  # one edit inside a word, never a new word
    assert lowercase(["A Dog."]) == ["a dog."]
    assert strip_punctuation(["A dog, a cat - and (a) bird!"]) == ["A dog a cat and a bird"]


def test_hallucination_detectors():
    src = ["A man rides a bike.", "Two dogs play in the snow.", "A woman reads a book in the park.", "Hi."]
    out = [
        "A man rides a bike.",  # copied
        "Zwei Hunde spielen im Schnee im Schnee im Schnee.",  # loops
        "Eine Frau.",  # far too short
        "Hallo.",
    ]
    f = detect(src, out)
    assert f.copy == [0] and f.repetition == [1] and f.length == [2]
    assert repetition("ein Mann und ein Mann") is None and repetition("der Hund Hund bellt") == "hund"
    assert repetition("ein Mann mit Hut, ein Mann mit Hut") == "ein mann mit hut"


# -- corpus audit -------------------------------------------------------------------------------------------------
def test_audit_data_counts_and_report(prepared, tmp_path, capsys):
    from lucidmt.audit.corpus import audit_corpus
    from lucidmt.cli import main

    c = audit_corpus(prepared)
    src = (prepared / "train.src").read_text(encoding="utf-8").splitlines()
    tgt = (prepared / "train.tgt").read_text(encoding="utf-8").splitlines()
    en = {p["male"]: p["male_count"] for p in c["sides"]["source"]["gender"]["pairs"]}
    de = {p["female"]: p["female_count"] for p in c["sides"]["target"]["gender"]["pairs"]}
    assert en["man"] == sum(s.lower().split().count("man") for s in src) > 0
    assert de["frau"] == sum(t.lower().rstrip(".").split().count("frau") for t in tgt) > 0
    assert c["duplicates"]["duplicate_pairs"] == len(src) - len(set(zip(src, tgt, strict=True)))
    assert c["sides"]["source"]["ngrams"]["1"][0][1] >= c["sides"]["source"]["ngrams"]["1"][-1][1]
    assert main(["audit-data", str(prepared), "--out", str(tmp_path / "d.html")]) == 0
    assert "ratio" in capsys.readouterr().out
    page = (tmp_path / "d.html").read_text(encoding="utf-8")
    assert_offline(page)
    assert "Gendered words" in page and json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))["sides"]
    assert main(["audit-data", str(tmp_path)]) == 1  # not a prepared folder


# -- model audit ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(prepared, tmp_path_factory):
    """An untrained tiny en->de model saved as a checkpoint: its translations are poor, which is what an audit must
    be able to show."""
    from conftest import tiny_config
    from lucidmt.data.prepare import Prepared
    from lucidmt.model.transformer import Seq2Seq
    from lucidmt.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    p = Prepared(prepared)
    cfg = tiny_config()
    cfg.model.src_vocab_size = cfg.model.tgt_vocab_size = p.tokenizer.info.src_vocab_size
    cfg.data.path, cfg.data.src_lang, cfg.data.tgt_lang = str(prepared), "en", "de"
    folder = tmp_path_factory.mktemp("tiny") / "ckpt"
    save_checkpoint(folder, Seq2Seq(cfg.model), cfg, p.tokenizer)
    return folder


def test_model_audit_end_to_end(tiny_run, prepared, tmp_path, capsys):
    from lucidmt.cli import main

    src = (prepared / "valid.src").read_text(encoding="utf-8").splitlines()[:12]
    ref = (prepared / "valid.tgt").read_text(encoding="utf-8").splitlines()[:12]
    (tmp_path / "t.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "t.de").write_text("\n".join(ref) + "\n", encoding="utf-8")
    args = ["audit", str(tiny_run), "--src", str(tmp_path / "t.en"), "--ref", str(tmp_path / "t.de")]
    args += ["--out", str(tmp_path / "a.html"), "--beam", "1", "--bootstrap", "200", "--no-progress", "--limit", "10"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "BLEU" in out and "gender probe: accuracy" in out
    a = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert a["n"] == 10 and a["slices"][0]["name"] == "all" and a["slices"][0]["n"] == 10  # --limit 10 of 12
    assert {s["name"] for s in a["slices"]} >= {"all", "rare words", "numbers", "capitalised names"}
    assert [r["name"] for r in a["robustness"]] == ["typos", "lowercase", "no punctuation"]
    assert set(a["hallucination"]["counts"]) == {"copy", "length ratio", "repetition"}
    g = a["gender"]
    assert g["n"] == len(G.probe_items()) and len(g["judged"]) == g["n"]
    assert g["accuracy"] == pytest.approx(100 * sum(j["gold"] == j["predicted"] for j in g["judged"]) / g["n"])
    page = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert_offline(page)
    assert "Scores by slice" in page and "Gender probe" in page and "Hallucination checks" in page
    assert main(["audit", str(tiny_run), "--src", str(tmp_path / "t.en")]) == 1  # no references
    args[args.index("--out") + 1] = str(tmp_path / "w.html")
    assert main([*args, "--workers", "2"]) == 0  # translated in 2 processes: the same audit
    w = json.loads((tmp_path / "w.json").read_text(encoding="utf-8"))
    assert w["slices"] == a["slices"] and w["robustness"] == a["robustness"] and w["gender"] == a["gender"]


def test_audit_report_renders_in_chromium(tiny_run, prepared, tmp_path):
    pytest.importorskip("playwright")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium")
    from lucidmt.audit import audit_model, write_audit
    from lucidmt.decode.translator import Translator
    from lucidmt.report import screenshot

    tr = Translator.load(tiny_run, device="cpu")
    src = (prepared / "valid.src").read_text(encoding="utf-8").splitlines()[:6]
    ref = (prepared / "valid.tgt").read_text(encoding="utf-8").splitlines()[:6]
    a = audit_model(tr, src, ref, "en", "de", None, beam_size=1, resamples=100, gender=False, progress=False, log=None)
    assert any(s["name"] == "rare words" and s["description"].startswith("not computed") for s in a["slices"])
    paths = write_audit(a, tmp_path / "a")
    seen = screenshot(str(paths["html"]))
    assert seen["requests"] == [] and seen["errors"] == [] and "Robustness to source noise" in seen["text"]
    assert np.isfinite(a["overall"]["bleu"])


def test_probe_article_fallback_only_adds_readings(tiny_run):
    from lucidmt.decode.translator import Translator

    tr = Translator.load(tiny_run, device="cpu")
    strict = G.run_probe(tr, "de", beam_size=1, max_len_a=0.0, max_len_b=6)
    loose = G.run_probe(tr, "de", beam_size=1, article_fallback=True, max_len_a=0.0, max_len_b=6)
    assert strict["article_fallback"] is False and loose["article_fallback"] is True
    assert loose["coverage"] >= strict["coverage"]
    for a, b in zip(strict["judged"], loose["judged"], strict=True):  # same outputs; fallback reads only unknowns
        assert a["translation"] == b["translation"]
        assert a["predicted"] == b["predicted"] or (a["predicted"] == "unknown" and b["cue"] == "subject article")
