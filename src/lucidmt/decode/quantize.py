"""Reduced-precision copies of a model for decoding: int8 linear layers on CPU, bf16/fp16 weights on GPU.

    model = for_inference(model, "int8")       # every nn.Linear and the output projection become int8

int8 is PyTorch's dynamic quantization (fbgemm/x86 kernels): weights are stored int8 with one scale per output
row, activations are quantized on the fly per call, and the products accumulate in int32. The tied output
projection is not an nn.Linear (decoding multiplies by the target embedding matrix), so it gets its own int8
copy, attached as `decode_projection`, which `Seq2Seq.step_projection` picks up. Embeddings, layer norms,
attention and the softmax stay fp32. On CUDA, "bf16" and "fp16" cast the weights instead (log-probabilities
are still computed in fp32 by the search).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from ..errors import ConfigurationError
from ..model.transformer import Seq2Seq

QUANTIZE_CHOICES = ("none", "int8", "bf16", "fp16")


def for_inference(model: Seq2Seq, quantize: str | None, copy_model: bool = False) -> Seq2Seq:
    """`model` in eval mode with the requested precision (None or "none": unchanged).

    With `copy_model`, the given model is left untouched (its fp32 weights are still needed, e.g. by a trainer).
    """
    quantize = quantize or "none"
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigurationError(f"quantize={quantize!r}: expected one of {', '.join(QUANTIZE_CHOICES)}")
    if quantize == "none":
        return model.eval()
    device = next(model.parameters()).device
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    if quantize in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if quantize == "bf16" else torch.float16)
    if device.type != "cpu":
        raise ConfigurationError("quantize=int8 uses PyTorch's CPU int8 kernels; on CUDA use bf16 or fp16")
    return _int8(model)


def _int8(model: Seq2Seq) -> Seq2Seq:
    from torch.ao.quantization import quantize_dynamic
    from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; the kernels are here
        warnings.simplefilter("ignore")
        output = nn.Linear(model.cfg.d_model, model.cfg.tgt_vocab_size, bias=model.logits_bias is not None)
        with torch.no_grad():
            output.weight.copy_(model.output_weight())
            if model.logits_bias is not None:
                output.bias.copy_(model.logits_bias)
        # by name, so that an untied `output` Linear stays fp32 for `Seq2Seq.project` (scoring, explaining)
        spec = {n: per_channel_dynamic_qconfig for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        spec.pop("output", None)
        quantize_dynamic(model, spec, inplace=True)
        model.decode_projection = quantize_dynamic(
            nn.Sequential(output), {nn.Linear: per_channel_dynamic_qconfig}, inplace=True
        )[0]
    model.quantized = "int8"
    return model


def precision(model: Seq2Seq) -> str:
    """What `for_inference` made of the model: int8, bf16, fp16 or fp32 (for signatures and logs)."""
    if getattr(model, "quantized", None):
        return model.quantized
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(model.parameters()).dtype, "fp32")
