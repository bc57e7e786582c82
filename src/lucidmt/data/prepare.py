"""`lucidmt prepare`: parallel text -> cleaned corpus + SentencePiece + cached ids + manifest, in one folder.

Folder layout (written to a temporary folder and renamed into place only when complete):

    manifest.json               languages, sizes, filters and their counts, tokenizer settings, sha256 of files
    train.src / train.tgt       cleaned training text (one sentence per line)
    valid.src / valid.tgt       validation text (normalised, only empty pairs removed)
    train.npz / valid.npz       cached subword ids (flat int32 arrays + offsets), so training starts at once
    tokenizer/                  tokenizer.json + SentencePiece model(s)
"""

from __future__ import annotations

import datetime as _dt
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DataError
from ..io import atomic_path, sha256_file, write_lines
from .corpus import CleanReport, Parallel, clean_text, length_filter, normalize
from .tokenizer import Tokenizer, find_tokenizer, train_sentencepiece


@dataclass
class PrepareOptions:
    src_lang: str = "src"
    tgt_lang: str = "tgt"
    vocab_size: int = 8000
    model_type: str = "bpe"  # bpe | unigram (unigram allows subword regularisation)
    joint: bool = True
    character_coverage: float | None = None  # None: chosen from the languages
    max_chars: int = 1000
    max_len: int = 250  # subwords per side
    max_ratio: float = 3.0  # longer side / shorter side, in subwords
    dedup: bool = False
    seed: int = 1
    tokenizer: str | None = None  # reuse this tokenizer (a pretrained model's, to fine-tune it) instead of training one


def save_ids(path: Path, src: list[list[int]], tgt: list[list[int]]) -> None:
    def flat(seqs):
        lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        data = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(offsets[-1]))
        return data, offsets

    s, so = flat(src)
    t, to = flat(tgt)
    with open(path, "wb") as fh:
        np.savez(fh, src=s, src_offsets=so, tgt=t, tgt_offsets=to)


def load_ids(path: str | Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """-> (source id arrays, target id arrays), one array per sentence (views into one buffer)."""
    with np.load(path) as z:
        s, so, t, to = z["src"], z["src_offsets"], z["tgt"], z["tgt_offsets"]
    return [s[so[i] : so[i + 1]] for i in range(len(so) - 1)], [t[to[i] : to[i + 1]] for i in range(len(to) - 1)]


def prepare(train: Parallel, valid: Parallel, out: str | Path, opts: PrepareOptions, log=print) -> dict:
    """Clean, train SentencePiece, encode and write the prepared folder; returns the manifest."""
    out = Path(out)
    report = CleanReport()
    train = clean_text(train, opts.max_chars, opts.dedup, report)
    if not len(train):
        raise DataError(f"{train.origin}: no training pairs left after cleaning ({report.summary()})")
    valid_report = CleanReport(input=len(valid))
    vs, vt = [], []
    for s, t in zip(valid.src, valid.tgt, strict=True):
        s, t = normalize(s), normalize(t)
        if s and t:
            vs.append(s)
            vt.append(t)
        else:
            valid_report.drop("empty side")
    valid_report.kept = len(vs)
    if not vs:
        raise DataError(f"{valid.origin}: the validation set is empty")

    with atomic_path(out) as tmp:
        tmp.mkdir()
        if opts.tokenizer:
            given = find_tokenizer(opts.tokenizer)
            log(f"using the tokenizer of {opts.tokenizer} (no SentencePiece training)")
            Tokenizer(given).save(tmp / "tokenizer")
            tok = Tokenizer(tmp / "tokenizer")
        else:
            kind = "joint" if opts.joint else "separate"
            log(f"training SentencePiece ({opts.model_type}, {opts.vocab_size} pieces, {kind})")
            tok = train_sentencepiece(
                tmp / "tokenizer",
                train.src,
                train.tgt,
                opts.vocab_size,
                opts.model_type,
                opts.joint,
                opts.character_coverage,
                (opts.src_lang, opts.tgt_lang),
                opts.seed,
            )
        src_ids, tgt_ids = tok.encode_src(train.src), tok.encode_tgt(train.tgt)
        keep = length_filter(src_ids, tgt_ids, opts.max_len, opts.max_ratio, report)
        train = Parallel([train.src[i] for i in keep], [train.tgt[i] for i in keep], train.origin, train.paths)
        src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
        log(f"train: {report.summary()}")

        write_lines(tmp / "train.src", train.src)
        write_lines(tmp / "train.tgt", train.tgt)
        write_lines(tmp / "valid.src", vs)
        write_lines(tmp / "valid.tgt", vt)
        save_ids(tmp / "train.npz", src_ids, tgt_ids)
        save_ids(tmp / "valid.npz", tok.encode_src(vs), tok.encode_tgt(vt))

        manifest = {
            "lucidmt_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "src_lang": opts.src_lang,
            "tgt_lang": opts.tgt_lang,
            "sizes": {
                "train": len(train),
                "valid": len(vs),
                "train_src_subwords": int(sum(map(len, src_ids))),
                "train_tgt_subwords": int(sum(map(len, tgt_ids))),
            },
            "cleaning": {"train": asdict(report), "valid": asdict(valid_report)},
            "options": asdict(opts),
            "tokenizer": asdict(tok.info) | {"joint": tok.info.joint},
            "inputs": {p: sha256_file(p) for p in dict.fromkeys(train.paths + valid.paths)},
            "files": {},
        }
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                manifest["files"][str(f.relative_to(tmp))] = sha256_file(f)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def holdout(data: Parallel, n: int, seed: int) -> tuple[Parallel, Parallel]:
    """Split off n random pairs as a validation set (when the user gives none)."""
    if n >= len(data):
        raise DataError(f"{data.origin}: cannot hold out {n} validation pairs from {len(data)}")
    idx = list(range(len(data)))
    random.Random(seed).shuffle(idx)
    v, t = sorted(idx[:n]), sorted(idx[n:])
    pick = lambda ids: Parallel([data.src[i] for i in ids], [data.tgt[i] for i in ids], data.origin, data.paths)
    return pick(t), pick(v)


class Prepared:
    """A prepared-data folder opened for training."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        mf = self.folder / "manifest.json"
        if not mf.exists():
            raise DataError(
                f"{self.folder}: not a prepared-data folder (no manifest.json); run `lucidmt prepare` first"
            )
        self.manifest = json.loads(mf.read_text(encoding="utf-8"))
        self.tokenizer = Tokenizer(self.folder / "tokenizer")

    def ids(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return load_ids(self.folder / f"{split}.npz")

    def text(self, split: str) -> tuple[list[str], list[str]]:
        read = lambda p: (self.folder / p).read_text(encoding="utf-8").splitlines()
        return read(f"{split}.src"), read(f"{split}.tgt")
