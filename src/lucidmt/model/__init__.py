"""The Transformer encoder-decoder and its incremental-decoding state."""

from .transformer import DecoderState, Memory, Seq2Seq, count_parameters, padding_mask

__all__ = ["DecoderState", "Memory", "Seq2Seq", "count_parameters", "padding_mask"]
