"""The command line: every verb once end to end, and bad input gives a clear message and a non-zero exit."""

import json
import subprocess
import sys

import pytest


def cli(*args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "lucidmt", *map(str, args)], capture_output=True, text=True, input=input
    )


def test_prepare_errors_name_the_problem_and_leave_nothing(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    r = cli(
        "prepare",
        "--train-src",
        tmp_path / "a.en",
        "--train-tgt",
        tmp_path / "a.de",
        "--src",
        "en",
        "--tgt",
        "de",
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 1
    assert "a.en has 3 lines but" in r.stderr and "a.de has 2" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "b.de").write_bytes(b"eins\nzw\xc3ei\ndrei\n")
    r = cli(
        "prepare",
        "--train-src",
        tmp_path / "a.en",
        "--train-tgt",
        tmp_path / "b.de",
        "--src",
        "en",
        "--tgt",
        "de",
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 1 and "b.de:2: invalid UTF-8" in r.stderr
    r = cli(
        "prepare",
        "--train-src",
        tmp_path / "missing.en",
        "--train-tgt",
        tmp_path / "a.de",
        "--src",
        "en",
        "--tgt",
        "de",
        "--out",
        tmp_path / "out",
    )
    assert r.returncode == 1 and "missing.en: no such file" in r.stderr


def test_prepare_tsv_with_holdout(tmp_path):
    lines = [f"sentence number {i}\tSatz Nummer {i}" for i in range(200)]
    (tmp_path / "p.tsv").write_text("\n".join(lines) + "\n")
    r = cli(
        "prepare",
        "--train-tsv",
        tmp_path / "p.tsv",
        "--valid-size",
        "20",
        "--src",
        "en",
        "--tgt",
        "de",
        "--vocab-size",
        "40",
        "--out",
        tmp_path / "prep",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert m["sizes"] == {**m["sizes"], "train": 180, "valid": 20}


def test_train_rejects_bad_overrides(prepared, tmp_path):
    r = cli("train", "--data", prepared, "--out", tmp_path / "run", "--preset", "tiny", "dropuot=0.3")
    assert r.returncode == 1 and "did you mean 'dropout'" in r.stderr
    r = cli("train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run")
    assert r.returncode == 1 and "not a prepared-data folder" in r.stderr


def test_translate_stdin_files_nbest_and_evaluate(memorised, tmp_path):
    run, src, tgt = memorised
    r = cli("translate", run, "--beam", "2", input="\n".join(src[:3]) + "\n\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == tgt[:3] + [""]

    (tmp_path / "in.txt").write_text("\n".join(src) + "\n")
    r = cli("translate", run, "-i", tmp_path / "in.txt", "-o", tmp_path / "out.txt")
    assert r.returncode == 0 and (tmp_path / "out.txt").read_text().splitlines() == tgt

    r = cli("translate", run, "--nbest", "3", "--beam", "4", input=src[0] + "\n")
    rows = r.stdout.splitlines()
    assert len(rows) == 3 and rows[0] == f"0 ||| {tgt[0]} ||| {rows[0].split(' ||| ')[2]}"

    (tmp_path / "ref.txt").write_text("\n".join(tgt) + "\n")
    r = cli("evaluate", run, "--src", tmp_path / "in.txt", "--ref", tmp_path / "ref.txt", "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed") and "beam:4" in scores["decoding"]


def test_average_and_curve_verbs(memorised, tmp_path):
    run, _, _ = memorised
    r = cli("average", run, "--last", "2", "--out", tmp_path / "avg")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "avg" / "model.safetensors").exists()
    r = cli("curve", run, "--out", tmp_path / "curve.png")
    assert r.returncode == 0 and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_checkpoint_is_a_clear_error(tmp_path):
    r = cli("translate", tmp_path / "nothing", input="hi\n")
    assert r.returncode == 1 and "no such run or checkpoint" in r.stderr


def test_datasets_listing():
    r = cli("datasets")
    assert "multi30k" in r.stdout and "tatoeba-zh-en" in r.stdout
