"""Shared helpers for the benchmark scripts (not part of the package or the tests)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def prepared_multi30k(out: Path, src: str = "en", tgt: str = "de", vocab: int = 8000) -> Path:
    """A prepared Multi30k folder (built once, then reused)."""
    from lucidmt.data.corpus import load_dataset
    from lucidmt.data.prepare import PrepareOptions, prepare

    if not (out / "manifest.json").exists():
        train = load_dataset("multi30k", "train", src, tgt)
        valid = load_dataset("multi30k", "valid", src, tgt)
        prepare(train, valid, out, PrepareOptions(src, tgt, vocab_size=vocab), log=lambda *_: None)
    return out


def out_dir() -> Path:
    d = Path(os.environ.get("LUCIDMT_BENCH_DIR", ROOT / "benchmarks" / "out"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def hf_marian(m, vocab: int, dropout: float, **extra):
    """A randomly initialised Hugging Face MarianMTModel of lucidmt model-config `m`'s size, our special ids,
    a tied joint vocabulary and relu: the peer every benchmark compares with."""
    from transformers import MarianConfig, MarianMTModel

    hc = MarianConfig(
        vocab_size=vocab,
        decoder_vocab_size=vocab,
        d_model=m.d_model,
        encoder_layers=m.encoder_layers,
        decoder_layers=m.decoder_layers,
        encoder_attention_heads=m.n_heads,
        decoder_attention_heads=m.n_heads,
        encoder_ffn_dim=m.ffn_dim,
        decoder_ffn_dim=m.ffn_dim,
        dropout=dropout,
        activation_function="relu",
        max_position_embeddings=m.max_positions,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=2,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        **extra,
    )
    return MarianMTModel(hc)
