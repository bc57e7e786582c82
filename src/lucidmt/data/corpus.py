"""Parallel corpora: reading and validating files, cleaning, and the named datasets lucidmt knows.

Named datasets are read from a local folder (`--data-dir`, `$LUCIDMT_DATA`, or `../shared/data` when present)
or downloaded once from their official source into `$LUCIDMT_CACHE` (default `~/.cache/lucidmt`) and checked
against a pinned sha256 before use.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import unicodedata
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..io import iter_lines, sha256_file


@dataclass
class Parallel:
    """Aligned source/target sentences with where they came from (for error messages and manifests)."""

    src: list[str]
    tgt: list[str]
    origin: str = ""
    paths: list[str] = field(default_factory=list)  # files read, for checksums in manifests

    def __len__(self) -> int:
        return len(self.src)


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> Parallel:
    """Read two line-aligned files (plain or .gz); both must exist, decode as UTF-8 and have equal lengths."""
    src, tgt = list(iter_lines(src_path)), list(iter_lines(tgt_path))
    if len(src) != len(tgt):
        raise DataError(f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}")
    if not src:
        raise DataError(f"{src_path} and {tgt_path} are empty")
    return Parallel(src, tgt, f"{src_path} + {tgt_path}", [str(src_path), str(tgt_path)])


def read_tsv(path: str | os.PathLike, src_col: int = 0, tgt_col: int = 1) -> Parallel:
    """Read `src<TAB>tgt[<TAB>...]` lines; blank lines are skipped, a line with too few columns is an error."""
    src, tgt = [], []
    for lineno, line in enumerate(iter_lines(path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) <= max(src_col, tgt_col):
            raise DataError(f"{path}:{lineno}: expected at least {max(src_col, tgt_col) + 1} tab-separated columns")
        src.append(cols[src_col])
        tgt.append(cols[tgt_col])
    if not src:
        raise DataError(f"{path} is empty")
    return Parallel(src, tgt, str(path), [str(path)])


# -- cleaning --------------------------------------------------------------------------------------------
_SPACES = re.compile(r"\s+")


def normalize(line: str) -> str:
    """Unicode NFC, control characters (Cc) removed, runs of whitespace collapsed to one space.

    Format characters (Cf) such as the zero-width non-joiner stay: Persian and Indic scripts need them."""
    line = unicodedata.normalize("NFC", line)
    line = "".join(ch for ch in line if ch in "\t " or unicodedata.category(ch) != "Cc")
    return _SPACES.sub(" ", line).strip()


@dataclass
class CleanReport:
    """How many pairs each filter removed, in the order the filters ran."""

    input: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    kept: int = 0

    def drop(self, reason: str, n: int = 1) -> None:
        self.removed[reason] = self.removed.get(reason, 0) + n

    def summary(self) -> str:
        parts = ", ".join(f"{k}: {v}" for k, v in self.removed.items() if v) or "nothing removed"
        return f"{self.input} pairs in, {self.kept} kept ({parts})"


def clean_text(data: Parallel, max_chars: int, dedup: bool, report: CleanReport) -> Parallel:
    """Text-level filters: normalise, drop pairs with an empty side, overly long lines and (optionally) duplicates."""
    report.input = len(data)
    seen: set[tuple[str, str]] = set()
    src, tgt = [], []
    for s, t in zip(data.src, data.tgt, strict=True):
        s, t = normalize(s), normalize(t)
        if not s or not t:
            report.drop("empty side")
        elif max_chars and (len(s) > max_chars or len(t) > max_chars):
            report.drop(f"longer than {max_chars} characters")
        elif dedup and (s, t) in seen:
            report.drop("duplicate pair")
        else:
            if dedup:
                seen.add((s, t))
            src.append(s)
            tgt.append(t)
    report.kept = len(src)
    return Parallel(src, tgt, data.origin, data.paths)


def length_filter(
    src_ids: list[list[int]], tgt_ids: list[list[int]], max_len: int, max_ratio: float, report: CleanReport
) -> list[int]:
    """Subword-level filters; returns the indices to keep."""
    keep = []
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)):
        ls, lt = len(s), len(t)
        if ls > max_len or lt > max_len:
            report.drop(f"longer than {max_len} subwords")
        elif max_ratio and max(ls, lt) > max_ratio * max(1, min(ls, lt)):
            report.drop(f"length ratio above {max_ratio}")
        else:
            keep.append(i)
    report.kept = len(keep)
    return keep


# -- named datasets ----------------------------------------------------------------------------------------
@dataclass
class RemoteFile:
    name: str  # file name on disk
    url: str
    sha256: str


@dataclass
class NamedDataset:
    """A dataset lucidmt can find locally or download; `load(split, src, tgt)` returns a Parallel."""

    name: str
    folder: str  # sub-folder name under the data directory
    languages: tuple[str, ...]
    splits: tuple[str, ...]
    files: dict[str, RemoteFile]
    reader: Callable[[NamedDataset, Path, str, str, str], Parallel]
    description: str = ""

    def check(self, split: str, src: str, tgt: str) -> None:
        if src not in self.languages or tgt not in self.languages or src == tgt:
            raise DataError(
                f"dataset {self.name} has languages {', '.join(self.languages)}; got --src {src} --tgt {tgt}"
            )
        if split not in self.splits:
            raise DataError(f"dataset {self.name} has splits {', '.join(self.splits)}; got {split!r}")

    def load(self, split: str, src: str, tgt: str, data_dir: str | os.PathLike | None = None) -> Parallel:
        self.check(split, src, tgt)
        return self.reader(self, self.locate(data_dir), split, src, tgt)

    def locate(self, data_dir: str | os.PathLike | None = None) -> Path:
        """The folder holding this dataset's files: local if found, else downloaded (and verified)."""
        for base in _candidate_dirs(data_dir):
            for d in (base / self.folder, base):
                if d.is_dir() and any((d / f.name).exists() for f in self.files.values()):
                    return d
        if data_dir is not None:
            raise DataError(f"{data_dir}: no {self.name} files found (looked for {self.folder}/ and the folder itself)")
        return self.download()

    def cache_dir(self) -> Path:
        cache = Path(os.environ.get("LUCIDMT_CACHE", Path.home() / ".cache" / "lucidmt")) / "datasets" / self.folder
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def download(self) -> Path:
        """Fetch every downloadable file into the cache (verified by sha256) and return the cache folder."""
        cache = self.cache_dir()
        for f in self.files.values():
            if f.url:
                fetch(f, cache / f.name)
        return cache


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = []
    if os.environ.get("LUCIDMT_DATA"):
        dirs.append(Path(os.environ["LUCIDMT_DATA"]))
    dirs.append(Path.cwd() / ".." / "shared" / "data")
    dirs.append(Path(__file__).resolve().parents[4] / "shared" / "data")  # beside a source checkout
    return dirs


def fetch(remote: RemoteFile, dest: Path) -> Path:
    """Download `remote` to `dest` unless a verified copy is there; the sha256 must match before it is kept."""
    if dest.exists() and sha256_file(dest) == remote.sha256:
        return dest
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        try:
            with urllib.request.urlopen(remote.url, timeout=60) as r, open(tmp, "wb") as out:
                shutil.copyfileobj(r, out)
        except OSError as exc:
            raise DataError(f"cannot download {remote.url}: {exc}") from None
        got = sha256_file(tmp)
        if got != remote.sha256:
            raise DataError(f"{remote.url}: sha256 mismatch (expected {remote.sha256}, got {got}); file not kept")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


# Multi30k Task 1, raw text, pinned to a commit of the official repository.
_M30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
_M30K_SHA = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
}
_M30K_URL = f"https://raw.githubusercontent.com/multi30k/dataset/{_M30K_COMMIT}/data/task1/raw/"
SPLIT_ALIASES = {"valid": "val", "dev": "val", "test": "test_2016_flickr"}


def _read_multi30k(ds: NamedDataset, folder: Path, split: str, src: str, tgt: str) -> Parallel:
    split = SPLIT_ALIASES.get(split, split)
    paths = []
    for lang in (src, tgt):
        remote = ds.files[f"{split}.{lang}.gz"]
        path = folder / remote.name
        if not path.exists():  # a partial local copy: fetch the missing file into the cache
            path = fetch(remote, ds.cache_dir() / remote.name)
        paths.append(path)
    return read_parallel(*paths)


# Tatoeba English-Mandarin pairs (manythings.org cmn-eng export), pinned to a commit of a public mirror.
_TATOEBA_URL = (
    "https://raw.githubusercontent.com/13luoyu/Transformer-machine-translation/"
    "b172d4aa468126c16f51dbf75797aaff77cf787e/cmn.txt"
)
TATOEBA_SPLIT_SEED = 20261130
TATOEBA_HELDOUT = 1000  # distinct English sentences in each of valid and test


def _read_tatoeba(ds: NamedDataset, folder: Path, split: str, src: str, tgt: str) -> Parallel:
    """Deterministic split: the distinct English sentences are shuffled with a fixed seed; the first 1,000
    go to test, the next 1,000 to valid, the rest to train, each with all of its Chinese translations.
    Grouping by the English side keeps a sentence and its alternative translations in one split."""
    split = {"val": "valid", "dev": "valid"}.get(split, split)
    gz, plain = folder / "cmn.txt.gz", folder / "cmn.txt"
    if gz.exists():
        path = gz
    elif plain.exists():
        path = plain
    else:
        path = fetch(ds.files["cmn.txt"], ds.cache_dir() / "cmn.txt")
    pairs = read_tsv(path)
    english = sorted(set(pairs.src))
    random.Random(TATOEBA_SPLIT_SEED).shuffle(english)
    n = TATOEBA_HELDOUT
    which = {e: "test" for e in english[:n]} | {e: "valid" for e in english[n : 2 * n]}
    en, zh = [], []
    for e, z in zip(pairs.src, pairs.tgt, strict=True):
        if which.get(e, "train") == split:
            en.append(e)
            zh.append(z)
    side = {"en": en, "zh": zh}
    return Parallel(side[src], side[tgt], f"{path} ({split} split)", [str(path)])


DATASETS: dict[str, NamedDataset] = {
    "multi30k": NamedDataset(
        name="multi30k",
        folder="multi30k",
        languages=("en", "de", "fr", "cs"),
        splits=("train", "val", "valid", "dev", "test_2016_flickr", "test"),
        files={n: RemoteFile(n, _M30K_URL + n, h) for n, h in _M30K_SHA.items()},
        reader=_read_multi30k,
        description="Multi30k Task 1 (image captions): 29,000 train, 1,014 val, 1,000 test_2016_flickr",
    ),
    "tatoeba-zh-en": NamedDataset(
        name="tatoeba-zh-en",
        folder="tatoeba-cmn-eng",
        languages=("en", "zh"),
        splits=("train", "valid", "val", "dev", "test"),
        files={
            "cmn.txt": RemoteFile(
                "cmn.txt", _TATOEBA_URL, "aa264a2447b26ab7c9d413f8321f9e2a779fd134b5118306b6e26a3499b3926e"
            ),
            # the gzip copy in ../shared/data (recognised locally; the download is the plain file above)
            "cmn.txt.gz": RemoteFile(
                "cmn.txt.gz", "", "135bb10b227837a5c4ebc765bcccfc21a3a812db5ef919fa4c6c18cf161c38b3"
            ),
        },
        reader=_read_tatoeba,
        description="Tatoeba English-Chinese pairs (29,155); seeded split by English sentence",
    ),
}


def get_dataset(name: str) -> NamedDataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, split: str, src: str, tgt: str, data_dir: str | os.PathLike | None = None) -> Parallel:
    return get_dataset(name).load(split, src, tgt, data_dir)
