"""Models made ready for decoding: packed fp32 or int8 linear layers on CPU, bf16/fp16 weights on GPU.

    model = for_inference(model, None)         # CPU fp32: decoder weights also kept in MKL's packed layout
    model = for_inference(model, "int8")       # every nn.Linear and the output projection become int8

fp32 on CPU: the decoder's linear layers and the output projection run once per step on the same weights, and
a plain GEMM re-packs its weight matrix into the kernel's layout on every call. `PackedLinear` packs once
(MKL's packed-GEMM format, the one TorchInductor's frozen graphs use) and gives bit-identical results 10-20%
faster at decoding sizes, for 1.7-3.4x the memory of those weights. Gradients (explanations) take the
ordinary path. Off with `for_inference(..., prepack=False)` or when PyTorch is built without MKL.

int8 is PyTorch's dynamic quantization: weights are stored int8 with one scale per output row, activations are
quantized on the fly per call, and the products accumulate in int32. Where this PyTorch has oneDNN's int8 kernels,
every layer is packed twice, for fbgemm (torch's default) and for oneDNN, and `Int8Linear` runs each call with the
faster for its number of rows (oneDNN's are about twice as fast at 128 rows). With a ReLU model, each feed-forward's
first layer and its activation are one fused int8 LinearReLU. The tied output
projection is not an nn.Linear (decoding multiplies by the target embedding matrix), so it gets its own int8
copy, attached as `decode_projection`, which `Seq2Seq.step_projection` picks up. Embeddings, layer norms,
attention and the softmax stay fp32. On CUDA, "bf16" and "fp16" cast the weights instead (log-probabilities
are still computed in fp32 by the search).
"""

from __future__ import annotations

import copy
import os
import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigurationError
from ..model.transformer import FeedForward, Seq2Seq

QUANTIZE_CHOICES = ("none", "int8", "bf16", "fp16")


def check_quantize(quantize: str | None) -> str:
    """`quantize` as `for_inference` takes it ("none" for None), or a ConfigurationError naming the choices."""
    quantize = quantize or "none"
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigurationError(f"quantize={quantize!r}: expected one of {', '.join(QUANTIZE_CHOICES)}")
    return quantize


def for_inference(model: Seq2Seq, quantize: str | None, copy_model: bool = False, prepack: bool = True) -> Seq2Seq:
    """`model` in eval mode with the requested precision (None or "none": fp32, packed on CPU when `prepack`).

    With `copy_model`, the given model is left untouched (its fp32 weights are still needed, e.g. by a trainer).
    """
    quantize = check_quantize(quantize)
    first = next(model.parameters())
    device, fp32_cpu = first.device, first.device.type == "cpu" and first.dtype == torch.float32
    if quantize == "none" and not (prepack and fp32_cpu and packing_available()):
        return model.eval()
    if copy_model:
        model = copy.deepcopy(model)
    model.eval()
    if quantize == "none":
        return _prepack(model)
    if quantize in ("bf16", "fp16"):
        return model.to(torch.bfloat16 if quantize == "bf16" else torch.float16)
    if device.type != "cpu":
        raise ConfigurationError("quantize=int8 uses PyTorch's CPU int8 kernels; on CUDA use bf16 or fp16")
    return _int8(model)


def packing_available() -> bool:
    """Whether this PyTorch has MKL's packed GEMM (x86 builds with MKL)."""
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class PackedLinear(nn.Module):
    """An nn.Linear whose weight is also stored in MKL's packed GEMM layout, for inference on CPU.

    `weight` and `bias` stay the original parameters (state dicts, exports and explanations see an nn.Linear);
    the packed copy is neither (it is rebuilt on deepcopy). When autograd needs the product (integrated gradients), the
    ordinary `F.linear` runs instead, since the packed kernel has no backward."""

    def __init__(self, linear: nn.Linear, rows: int = 128):
        super().__init__()
        self.in_features, self.out_features, self.rows = linear.in_features, linear.out_features, rows
        self.weight, self.bias = linear.weight, linear.bias
        # an opaque MKL tensor: a plain attribute (not a buffer), rebuilt on copy
        self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight.detach(), rows)

    def linear(self) -> nn.Linear:
        """The plain nn.Linear over the same parameters."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def __deepcopy__(self, memo: dict) -> PackedLinear:
        return PackedLinear(copy.deepcopy(self.linear(), memo), self.rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkl._mkl_linear(x, self.packed, self.weight, self.bias, self.rows)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def _prepack(model: Seq2Seq) -> Seq2Seq:
    """Pack the linear layers that run at every decoding step: the decoder's (except the cross-attention
    key/value projection, run once per source) and the output projection."""
    for layer in model.decoder.layers:
        for parent in (layer.self_attn, layer.cross_attn, layer.ffn):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and not (parent is layer.cross_attn and name == "kv"):
                    setattr(parent, name, PackedLinear(child))
    model.decode_projection = PackedLinear(_output_linear(model))
    return model


def _unpack(model: Seq2Seq) -> None:
    """Undo `_prepack`: plain nn.Linear layers again (which dynamic quantization recognises)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackedLinear):
                setattr(parent, name, child.linear())
    if isinstance(getattr(model, "decode_projection", None), PackedLinear):
        del model.decode_projection


def _output_linear(model: Seq2Seq) -> nn.Linear:
    """The output projection of decoding (the target embedding when tied, and final_logits_bias) as an
    nn.Linear over the model's own tensors: the tied projection is not a module of the model."""
    output = nn.Linear(model.cfg.d_model, model.cfg.tgt_vocab_size, bias=model.logits_bias is not None)
    output.weight = nn.Parameter(model.output_weight().detach(), requires_grad=False)
    if model.logits_bias is not None:
        output.bias = nn.Parameter(model.logits_bias.detach(), requires_grad=False)
    return output


ENGINE_ENV = "LUCIDMT_INT8_ENGINE"
MANY_ROWS = 64  # from this many rows per call, oneDNN's int8 products beat fbgemm's (see `Int8Linear`)


def int8_engines() -> tuple[str, ...]:
    """The quantized engines whose kernels int8 layers are packed for.

    `$LUCIDMT_INT8_ENGINE` names one (from `torch.backends.quantized.supported_engines`); otherwise torch's current
    engine (x86/fbgemm) and, where this PyTorch has it, oneDNN: `Int8Linear` then picks per call."""
    supported = torch.backends.quantized.supported_engines
    wanted = os.environ.get(ENGINE_ENV)
    if wanted:
        if wanted not in supported:
            raise ConfigurationError(f"{ENGINE_ENV}={wanted!r}: this PyTorch has {', '.join(supported)}")
        return (wanted,)
    default = torch.backends.quantized.engine
    return (default, "onednn") if "onednn" in supported and default != "onednn" else (default,)


class Int8Linear(nn.Module):
    """One int8 linear layer (the same int8 weights) packed for two engines, run by the faster for the call's size.

    fbgemm's dynamic int8 kernels have the smaller fixed cost per call (on 2 threads of an AVX-512 VNNI CPU:
    27-46 vs 40-83 us at 4-8 rows), oneDNN's are about twice as fast from ~64 rows (128 rows x 512 -> 2048: 207 vs
    413 us; 2,000 rows: 1.8 vs 5.0 ms): a beam of 4 over 32 sentences is 128 rows, and its rows fall as
    sentences finish."""

    def __init__(self, few: nn.Module, many: nn.Module, many_rows: int = MANY_ROWS):
        super().__init__()
        self.few, self.many, self.many_rows = few, many, many_rows
        from torch.ao.nn.intrinsic.quantized.dynamic import LinearReLU as DynamicLinearReLU

        relu = isinstance(few, DynamicLinearReLU)
        # the modules' own kernels, called directly (as their forward does, with reduce_range=True)
        self.op = torch.ops.quantized.linear_relu_dynamic if relu else torch.ops.quantized.linear_dynamic

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.many if x.numel() >= self.many_rows * x.size(-1) else self.few
        return self.op(x, layer._packed_params._packed_params, True)


@contextmanager
def quantized_engine(name: str):
    """Pack for `name`; the process-wide setting is restored after (packed weights keep their engine's kernels)."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def _fuse_relu(model: Seq2Seq) -> None:
    """Feed-forward layers with a ReLU: fc1 and the activation as one LinearReLU module (one int8 kernel)."""
    from torch.ao.nn.intrinsic import LinearReLU

    for ffn in model.modules():
        if isinstance(ffn, FeedForward) and ffn.act is F.relu and type(ffn.fc1) is nn.Linear:
            ffn.fc1, ffn.act = LinearReLU(ffn.fc1, nn.ReLU()), nn.Identity()


def _int8(model: Seq2Seq) -> Seq2Seq:
    from torch.ao.nn.intrinsic import LinearReLU
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import quantize_dynamic
    from torch.ao.quantization.qconfig import per_channel_dynamic_qconfig

    _unpack(model)
    engines = int8_engines()
    model.decode_projection = nn.Sequential(_output_linear(model))  # quantized below like the other layers
    _fuse_relu(model)
    # by name, so that an untied `output` Linear stays fp32 for `Seq2Seq.project` (scoring, explaining)
    fused = {id(m[0]) for m in model.modules() if isinstance(m, LinearReLU)}  # quantized with their LinearReLU
    spec = {
        n: per_channel_dynamic_qconfig
        for n, m in model.named_modules()
        if type(m) in (nn.Linear, LinearReLU) and id(m) not in fused and n != "output"
    }
    parts = [copy.deepcopy(model) for _ in engines[1:]] + [model]  # `model` is packed for the last engine
    for engine, part in zip(engines, parts, strict=True):
        with warnings.catch_warnings(), quantized_engine(engine):
            warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao; the kernels are here
            quantize_dynamic(part, spec, inplace=True)
        part.decode_projection = part.decode_projection[0]
    if len(parts) == 2:
        few = dict(parts[0].named_modules())
        for name, many in list(model.named_modules()):
            if isinstance(many, DynamicLinear):
                parent, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent), attr, Int8Linear(few[name], many))
    model.quantized, model.int8_engines = "int8", engines
    return model


def precision(model: Seq2Seq) -> str:
    """What `for_inference` made of the model: int8, bf16, fp16 or fp32 (for signatures and logs)."""
    if getattr(model, "quantized", None) == "int8":
        return "int8"
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(next(model.parameters()).dtype, "fp32")
