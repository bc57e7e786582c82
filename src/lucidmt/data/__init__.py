"""Corpora, tokenisation, preparation and batching."""

from .corpus import DATASETS, Parallel, load_dataset, read_parallel, read_tsv
from .prepare import Prepared, PrepareOptions, prepare
from .tokenizer import Tokenizer, train_sentencepiece

__all__ = [
    "DATASETS",
    "Parallel",
    "PrepareOptions",
    "Prepared",
    "Tokenizer",
    "load_dataset",
    "prepare",
    "read_parallel",
    "read_tsv",
    "train_sentencepiece",
]
