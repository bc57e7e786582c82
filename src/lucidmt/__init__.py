"""lucidmt: Transformer encoder-decoder models for machine translation, from two text files to a served model.

import lucidmt
lucidmt.train("work/m30k", "work/run", lucidmt.preset("small"))
tr = lucidmt.Translator.load("work/run")
tr.translate(["A dog runs through the snow."])
"""

from __future__ import annotations

__version__ = "0.1.0"

# Heavy modules (torch) load on first use, so that `lucidmt --help` stays fast.
_LAZY = {
    "Translator": ("lucidmt.decode.translator", "Translator"),
    "DecodeOptions": ("lucidmt.decode.search", "DecodeOptions"),
    "load": ("lucidmt.decode.translator", "load"),
    "train": ("lucidmt.train.trainer", "train"),
    "select_checkpoint": ("lucidmt.train.select", "select_checkpoint"),
    "RunConfig": ("lucidmt.config", "RunConfig"),
    "preset": ("lucidmt.config", "preset"),
    "finetune_config": ("lucidmt.train.trainer", "finetune_config"),
    "prepare": ("lucidmt.data.prepare", "prepare"),
    "load_dataset": ("lucidmt.data.corpus", "load_dataset"),
    "score": ("lucidmt.evaluate", "score"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lucidmt' has no attribute {name!r}")
