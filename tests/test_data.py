import gzip
import hashlib
import json

import numpy as np
import pytest

from conftest import shared_data, toy_corpus
from lucidmt.data.batching import collate, lengths, make_batches, shard
from lucidmt.data.corpus import (
    CleanReport,
    NamedDataset,
    Parallel,
    RemoteFile,
    clean_text,
    fetch,
    load_dataset,
    normalize,
    read_parallel,
    read_tsv,
)
from lucidmt.data.prepare import Prepared, PrepareOptions, holdout, prepare
from lucidmt.errors import DataError


def write(path, text, mode="w"):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
    elif isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_read_parallel_plain_and_gzip(tmp_path):
    s = write(tmp_path / "a.en.gz", "Hello\nWorld\n")
    t = write(tmp_path / "a.de", "Hallo\nWelt\n")
    p = read_parallel(s, t)
    assert p.src == ["Hello", "World"] and p.tgt == ["Hallo", "Welt"]


def test_unequal_line_counts_name_both_files_and_counts(tmp_path):
    s = write(tmp_path / "train.en", "a\nb\nc\n")
    t = write(tmp_path / "train.de", "a\nb\n")
    with pytest.raises(DataError, match=r"train.en has 3 lines but .*train.de has 2"):
        read_parallel(s, t)


def test_invalid_utf8_names_file_and_line(tmp_path):
    s = write(tmp_path / "x.en", b"ok\nfine\nbad \xff byte\n")
    t = write(tmp_path / "x.de", "a\nb\nc\n")
    with pytest.raises(DataError, match=r"x.en:3: invalid UTF-8"):
        read_parallel(s, t)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_parallel(tmp_path / "nope.en", tmp_path / "nope.de")
    s, t = write(tmp_path / "e.en", ""), write(tmp_path / "e.de", "")
    with pytest.raises(DataError, match="empty"):
        read_parallel(s, t)


def test_tsv_reading_and_errors(tmp_path):
    good = write(tmp_path / "p.tsv", "\ufeffHi.\t你好。\tCC-BY\n\nBye.\t再见。\tCC-BY\n")
    p = read_tsv(good)
    assert p.src == ["Hi.", "Bye."] and p.tgt == ["你好。", "再见。"]
    bad = write(tmp_path / "q.tsv", "one\ttwo\nonly-one-column\n")
    with pytest.raises(DataError, match=r"q.tsv:2: expected at least 2"):
        read_tsv(bad)


def test_cleaning_reports_what_each_filter_removed():
    data = Parallel(
        ["a  b", "", "x" * 50, "dup", "dup", "ok\u200b"],
        ["c", "d", "y", "same", "same", "fine"],
    )
    report = CleanReport()
    out = clean_text(data, max_chars=20, dedup=True, report=report)
    assert out.src == ["a b", "dup", "ok\u200b"]
    assert report.removed == {"empty side": 1, "longer than 20 characters": 1, "duplicate pair": 1}
    assert report.input == 6 and report.kept == 3
    assert normalize(" a\tb\x07 ") == "a b"


def test_prepare_writes_a_complete_folder(prepared):
    p = Prepared(prepared)
    m = p.manifest
    assert (m["src_lang"], m["tgt_lang"]) == ("en", "de")
    assert m["sizes"]["train"] == 300 and m["sizes"]["valid"] == 30
    for name, digest in m["files"].items():
        assert hashlib.sha256((prepared / name).read_bytes()).hexdigest() == digest
    src, tgt = p.ids("train")
    assert len(src) == 300 and all(len(s) > 0 for s in src)
    text_src, _ = p.text("train")
    assert p.tokenizer.encode_src([text_src[0]])[0] == src[0].tolist()
    assert p.tokenizer.decode_tgt(tgt[0]) == p.text("train")[1][0]


def test_prepare_failure_leaves_nothing_behind(tmp_path):
    out = tmp_path / "prep"
    empty = Parallel(["", " "], ["a", "b"], "bad.tsv")
    with pytest.raises(DataError, match="no training pairs left"):
        prepare(empty, empty, out, PrepareOptions("en", "de", vocab_size=30), log=lambda *_: None)
    assert not out.exists()
    assert not list(tmp_path.iterdir())  # no temporary folder left either


def test_separate_vocabularies(tmp_path):
    src, tgt = toy_corpus(100)
    data = Parallel(src, tgt)
    prepare(data, data, tmp_path / "p", PrepareOptions("en", "de", vocab_size=40, joint=False), log=lambda *_: None)
    tok = Prepared(tmp_path / "p").tokenizer
    assert not tok.info.joint
    assert (tmp_path / "p" / "tokenizer" / "spm.src.model").exists()
    assert (tmp_path / "p" / "tokenizer" / "spm.tgt.model").exists()


def test_holdout_is_seeded_and_disjoint():
    src, tgt = toy_corpus(50)
    data = Parallel([f"{i} {s}" for i, s in enumerate(src)], tgt)
    train, valid = holdout(data, 10, seed=3)
    again, _ = holdout(data, 10, seed=3)
    assert len(train) == 40 and len(valid) == 10 and train.src == again.src
    assert not set(train.src) & set(valid.src)


def test_batches_respect_the_budget_and_are_deterministic():
    rng = np.random.default_rng(0)
    src = [np.arange(n) for n in rng.integers(1, 40, 500)]
    tgt = [np.arange(n) for n in rng.integers(1, 40, 500)]
    ls, lt = lengths(src), lengths(tgt)
    a = make_batches(ls, lt, 256, seed=5, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(500))  # every sentence exactly once
    for b in a:
        assert len(b) == 1 or len(b) * max(max(ls[i], lt[i]) for i in b) <= 256
    assert a == make_batches(ls, lt, 256, seed=5, epoch=0)
    assert a != make_batches(ls, lt, 256, seed=5, epoch=1)  # reshuffled every epoch
    parts = [shard(a, r, 3) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    flat = [tuple(b) for p in parts for b in p]
    assert len(flat) == len(set(flat))  # disjoint


def test_collate_shifts_target():
    src, tgt = [np.array([5, 6]), np.array([7])], [np.array([8, 9, 10]), np.array([11])]
    b = collate(src, tgt, [0, 1], pad_id=0, bos_id=2, eos_id=3)
    assert b.src.tolist() == [[5, 6, 3], [7, 3, 0]]
    assert b.tgt_in.tolist() == [[2, 8, 9, 10], [2, 11, 0, 0]]
    assert b.tgt_out.tolist() == [[8, 9, 10, 3], [11, 3, 0, 0]]
    assert b.n_tgt_tokens == 6


def test_download_verifies_checksum(tmp_path):
    payload = tmp_path / "remote.txt"
    payload.write_text("hello\n")
    good = hashlib.sha256(payload.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "file.txt"
    dest.parent.mkdir()
    fetch(RemoteFile("file.txt", payload.as_uri(), good), dest)
    assert dest.read_text() == "hello\n"
    bad_dest = tmp_path / "cache" / "other.txt"
    with pytest.raises(DataError, match="sha256 mismatch"):
        fetch(RemoteFile("other.txt", payload.as_uri(), "0" * 64), bad_dest)
    assert not bad_dest.exists() and len(list(dest.parent.iterdir())) == 1


def test_named_dataset_downloads_into_cache_when_no_local_copy(tmp_path, monkeypatch):
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    files = {}
    for split, lines in (("train", "a\nb\n"), ("val", "c\n")):
        for lang in ("en", "de"):
            name = f"{split}.{lang}.gz"
            write(remote_dir / name, lines)
            digest = hashlib.sha256((remote_dir / name).read_bytes()).hexdigest()
            files[name] = RemoteFile(name, (remote_dir / name).as_uri(), digest)
    from lucidmt.data import corpus

    ds = NamedDataset("fake", "fake", ("en", "de"), ("train", "val", "valid"), files, corpus._read_multi30k)
    monkeypatch.setenv("LUCIDMT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LUCIDMT_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.chdir(tmp_path)
    p = ds.load("valid", "en", "de")
    assert p.src == ["c"] and (tmp_path / "cache" / "datasets" / "fake" / "val.en.gz").exists()


def test_multi30k_from_shared_data():
    folder = shared_data("multi30k")
    p = load_dataset("multi30k", "test_2016_flickr", "en", "de", folder.parent)
    assert len(p) == 1000
    assert p.src[0].startswith("A man in an orange hat")


def test_tatoeba_split_is_deterministic_and_disjoint():
    shared_data("tatoeba-cmn-eng")
    parts = {s: load_dataset("tatoeba-zh-en", s, "en", "zh") for s in ("train", "valid", "test")}
    total = sum(len(p) for p in parts.values())
    assert total == 29155
    assert not set(parts["train"].src) & set(parts["test"].src)
    assert not set(parts["valid"].src) & set(parts["test"].src)
    assert load_dataset("tatoeba-zh-en", "test", "en", "zh").src == parts["test"].src
    zh_en = load_dataset("tatoeba-zh-en", "test", "zh", "en")
    assert zh_en.src == parts["test"].tgt


def test_unknown_dataset_language_and_split():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("nope", "train", "en", "de")
    with pytest.raises(DataError, match="languages"):
        load_dataset("multi30k", "train", "en", "xx")
    with pytest.raises(DataError, match="splits"):
        load_dataset("multi30k", "test_2099", "en", "de")


def test_manifest_is_json(prepared):
    assert json.loads((prepared / "manifest.json").read_text())["tokenizer"]["joint"] is True
