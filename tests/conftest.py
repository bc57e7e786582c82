"""Shared fixtures: a tiny synthetic language pair, prepared once per session, and a tiny trained model."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# A toy "English -> German" lexicon: translation is word-by-word with a verb-final word order, so a model has
# something real to learn, and 30 pairs can be memorised exactly.
LEX = {
    "the": "der",
    "a": "ein",
    "man": "mann",
    "woman": "frau",
    "dog": "hund",
    "cat": "katze",
    "child": "kind",
    "sees": "sieht",
    "likes": "mag",
    "finds": "findet",
    "red": "rote",
    "small": "kleine",
    "big": "große",
    "ball": "ball",
    "house": "haus",
    "car": "auto",
    "in": "im",
    "park": "park",
    "garden": "garten",
}
SUBJ = ["the man", "the woman", "a dog", "a cat", "the child", "a small dog", "the big cat"]
VERB = ["sees", "likes", "finds"]
OBJ = ["the red ball", "a house", "the car", "a small ball", "the big house"]
PLACE = ["", "in the park", "in the garden"]


def toy_pair(rng: random.Random) -> tuple[str, str]:
    s, v, o, p = rng.choice(SUBJ), rng.choice(VERB), rng.choice(OBJ), rng.choice(PLACE)
    src = " ".join(x for x in (s, v, o, p) if x)
    tgt_words = [LEX[w] for w in s.split()] + [LEX[w] for w in o.split()] + [LEX[w] for w in p.split()] + [LEX[v]]
    return src.capitalize() + ".", " ".join(tgt_words).capitalize() + "."


def toy_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    pairs = [toy_pair(rng) for _ in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def write_corpus(folder: Path, n_train: int = 300, n_valid: int = 30, seed: int = 0) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    src, tgt = toy_corpus(n_train + n_valid, seed)
    files = {}
    for name, lines in (
        ("train.en", src[:n_train]),
        ("train.de", tgt[:n_train]),
        ("valid.en", src[n_train:]),
        ("valid.de", tgt[n_train:]),
    ):
        files[name] = folder / name
        files[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return files


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, toy_files) -> Path:
    from lucidmt.data.corpus import read_parallel
    from lucidmt.data.prepare import PrepareOptions, prepare

    out = tmp_path_factory.mktemp("prep") / "toy"
    train = read_parallel(toy_files["train.en"], toy_files["train.de"])
    valid = read_parallel(toy_files["valid.en"], toy_files["valid.de"])
    prepare(train, valid, out, PrepareOptions("en", "de", vocab_size=60), log=lambda *_: None)
    return out


def tiny_config(**train):
    from lucidmt.config import preset

    cfg = preset("tiny")
    cfg.model.dropout = 0.0
    t = cfg.train
    t.lr, t.warmup_steps, t.max_tokens, t.valid_every, t.log_every = 3e-3, 20, 2000, 100, 10
    t.valid_bleu, t.label_smoothing, t.keep_last = True, 0.0, 2
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


@pytest.fixture(scope="session")
def memorised(tmp_path_factory) -> tuple[Path, list[str], list[str]]:
    """A tiny model trained (in this test session) to reproduce 30 sentence pairs exactly."""
    from lucidmt.data.corpus import Parallel
    from lucidmt.data.prepare import PrepareOptions, prepare
    from lucidmt.train.trainer import train

    root = tmp_path_factory.mktemp("memo")
    src, tgt = toy_corpus(30, seed=7)
    data = Parallel(src, tgt, "memorise")
    prepare(data, data, root / "prep", PrepareOptions("en", "de", vocab_size=60), log=lambda *_: None)
    cfg = tiny_config(max_steps=800, valid_every=400, lr=5e-3)
    train(root / "prep", root / "run", cfg, progress=False, log=lambda *_: None)
    return root / "run", src, tgt


def shared_data(*parts: str) -> Path:
    path = Path(os.environ.get("LUCIDMT_DATA", SHARED)).joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path
