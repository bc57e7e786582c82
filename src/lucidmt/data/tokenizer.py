"""SentencePiece tokenisation for both sides of a translation model.

A tokenizer folder holds `tokenizer.json` (which models, special ids) and one joint SentencePiece model or one
per side. Imported Marian models keep their own SentencePiece models plus a shared piece-to-id `vocab.json`;
the same class covers both, so nothing downstream tokenises on its own.

Sequences follow one convention: a source is `pieces + [eos]`; a target is fed as `[bos] + pieces` and
predicted as `pieces + [eos]` (Marian starts the decoder with its pad id; `bos_id` says which).
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import sentencepiece as spm

from ..errors import CheckpointError, ConfigurationError
from ..io import sha256_file

CJK_LANGS = {"zh", "ja", "ko", "cmn", "yue"}


@dataclass
class TokenizerInfo:
    src_model: str = "spm.model"
    tgt_model: str = "spm.model"  # same file as src_model when the vocabulary is joint
    vocab: str | None = None  # piece -> id table (Marian); None: SentencePiece ids are the model ids
    model_type: str = "unigram"  # unigram | bpe
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    src_vocab_size: int = 0
    tgt_vocab_size: int = 0

    @property
    def joint(self) -> bool:
        return self.src_model == self.tgt_model

    @property
    def shared_vocab(self) -> bool:
        """One id space for both sides: a joint SentencePiece model, or Marian's one vocab.json for two models."""
        return self.joint or self.vocab is not None


class Tokenizer:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        meta = folder / "tokenizer.json"
        if not meta.exists():
            raise CheckpointError(f"{folder}: no tokenizer.json (is this a prepared-data or checkpoint folder?)")
        self.folder = folder
        self.info = TokenizerInfo(**json.loads(meta.read_text(encoding="utf-8")))
        self.src = spm.SentencePieceProcessor(model_file=str(folder / self.info.src_model))
        self.tgt = (
            self.src if self.info.joint else spm.SentencePieceProcessor(model_file=str(folder / self.info.tgt_model))
        )
        self.vocab: dict[str, int] | None = None
        self.pieces: list[str] | None = None
        if self.info.vocab:
            self.vocab = json.loads((folder / self.info.vocab).read_text(encoding="utf-8"))
            self.pieces = [""] * (max(self.vocab.values()) + 1)
            for p, i in self.vocab.items():
                self.pieces[i] = p

    # -- ids --------------------------------------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.info.pad_id

    @property
    def eos_id(self) -> int:
        return self.info.eos_id

    @property
    def bos_id(self) -> int:
        return self.info.bos_id

    def _encode(self, sp: spm.SentencePieceProcessor, texts: list[str]) -> list[list[int]]:
        if self.vocab is None:
            return sp.encode(texts, out_type=int)
        unk = self.info.unk_id
        return [[self.vocab.get(p, unk) for p in pieces] for pieces in sp.encode(texts, out_type=str)]

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        """Subword ids without specials."""
        return self._encode(self.src, texts)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return self._encode(self.tgt, texts)

    def sample_src(self, texts: list[str], alpha: float, rng, nbest: int = 8) -> list[list[int]]:
        """Subword regularisation (Kudo, 2018): a segmentation drawn from the unigram model's `nbest` best ones,
        with probability proportional to P(segmentation)^alpha. Drawn with `rng` (a numpy Generator), so it is
        reproducible, which SentencePiece's own sampler is not."""
        return self._sample(self.src, texts, alpha, rng, nbest)

    def sample_tgt(self, texts: list[str], alpha: float, rng, nbest: int = 8) -> list[list[int]]:
        return self._sample(self.tgt, texts, alpha, rng, nbest)

    def _sample(self, sp, texts: list[str], alpha: float, rng, nbest: int) -> list[list[int]]:
        if self.info.model_type != "unigram":
            raise ConfigurationError(
                "subword regularisation samples from a unigram model's segmentations; "
                f"this tokenizer is {self.info.model_type} (prepare with --model-type unigram)"
            )
        import numpy as np

        log_p = np.array([sp.get_score(i) for i in range(sp.get_piece_size())], dtype=np.float64)
        out = []
        for cands in sp.nbest_encode(texts, out_type=str if self.vocab is not None else int, nbest_size=nbest):
            ids = cands if self.vocab is None else [[self.vocab.get(p, self.info.unk_id) for p in c] for c in cands]
            if len(cands) > 1:
                piece_ids = cands if self.vocab is None else [[sp.piece_to_id(p) for p in c] for c in cands]
                score = alpha * np.array([log_p[c].sum() for c in piece_ids])
                prob = np.exp(score - score.max())
                out.append(ids[int(rng.choice(len(ids), p=prob / prob.sum()))])
            else:
                out.append(ids[0] if ids else [])
        return out

    def decode_tgt(self, ids: Iterable[int]) -> str:
        """Target ids (specials are dropped) -> detokenised text."""
        specials = {self.info.pad_id, self.info.bos_id, self.info.eos_id}
        ids = [int(i) for i in ids if int(i) not in specials]
        if self.vocab is None:
            return self.tgt.decode(ids)
        return self.tgt.decode_pieces([self.pieces[i] for i in ids])

    def src_pieces(self, text: str) -> list[str]:
        return self.src.encode(text, out_type=str)

    def tgt_id_to_piece(self, ids: Iterable[int]) -> list[str]:
        return self._id_to_piece(ids, self.tgt)

    def src_id_to_piece(self, ids: Iterable[int]) -> list[str]:
        return self._id_to_piece(ids, self.src)

    def _id_to_piece(self, ids: Iterable[int], spm) -> list[str]:
        """Pieces of ids: "</s>" for eos, the shared vocabulary's piece where there is one, else `spm`'s."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.info.eos_id:
                out.append("</s>")
            elif self.pieces is not None:
                out.append(self.pieces[i])
            else:
                out.append(spm.id_to_piece(i))
        return out

    # -- files ------------------------------------------------------------------------------------------
    def files(self) -> list[str]:
        names = {"tokenizer.json", self.info.src_model, self.info.tgt_model}
        if self.info.vocab:
            names.add(self.info.vocab)
        return sorted(names)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self.files():
            if (self.folder / name).resolve() != (folder / name).resolve():
                shutil.copyfile(self.folder / name, folder / name)


def find_tokenizer(path: str | Path) -> Path:
    """The tokenizer folder of a tokenizer folder, a prepared-data folder, a checkpoint or a run (as
    `resolve_checkpoint` picks its checkpoint)."""
    from ..train.checkpoint import resolve_checkpoint  # here: the checkpoint module imports this one

    path = Path(path)
    for cand in (path, path / "tokenizer"):
        if (cand / "tokenizer.json").exists():
            return cand
    return resolve_checkpoint(path) / "tokenizer"


def tokenizer_fingerprint(tok: Tokenizer) -> dict[str, str]:
    """sha256 of every file that decides the ids: two tokenizers with equal fingerprints encode alike."""
    return {name: sha256_file(tok.folder / name) for name in tok.files()}


def train_sentencepiece(
    out_dir: str | Path,
    src_lines: list[str],
    tgt_lines: list[str],
    vocab_size: int = 8000,
    model_type: str = "unigram",
    joint: bool = True,
    character_coverage: float | None = None,
    langs: tuple[str, str] = ("", ""),
    seed: int = 1,
) -> Tokenizer:
    """Train SentencePiece on the training text and write a tokenizer folder.

    Ids 0..3 are pad, unk, bos, eos. Character coverage defaults to 1.0 for alphabetic scripts and 0.9995 when a
    CJK language is involved (rare characters become <unk> instead of bloating the vocabulary); for CJK pairs
    the text is not NFKC-normalised, so full-width punctuation survives into the output.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cjk = bool(CJK_LANGS & set(langs))
    coverage = character_coverage if character_coverage is not None else (0.9995 if cjk else 1.0)

    def train(lines: list[str], name: str) -> int:
        spm.set_random_generator_seed(seed)
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=coverage,
            normalization_rule_name="identity" if cjk else "nmt_nfkc",
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            num_threads=2,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        (out_dir / name).write_bytes(model.getvalue())
        return spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()

    if joint:
        n = train(src_lines + tgt_lines, "spm.model")
        info = TokenizerInfo("spm.model", "spm.model", model_type=model_type, src_vocab_size=n, tgt_vocab_size=n)
    else:
        ns, nt = train(src_lines, "spm.src.model"), train(tgt_lines, "spm.tgt.model")
        info = TokenizerInfo(
            "spm.src.model", "spm.tgt.model", model_type=model_type, src_vocab_size=ns, tgt_vocab_size=nt
        )
    (out_dir / "tokenizer.json").write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return Tokenizer(out_dir)
