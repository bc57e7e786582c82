"""The encoder-decoder Transformer (Vaswani et al., 2017), readable top to bottom.

Shapes use B = batch, S = source length, T = target length, D = d_model, H = heads, Dh = D / H, V = vocabulary.

Masks are booleans where True means "may attend", built only by `padding_mask` below:
  * source padding mask: (B, 1, 1, S), broadcast over heads and queries;
  * decoder self-attention uses the causal mask alone: sequences are right-padded, so a real target position t
    only ever sees positions <= t, which are real tokens. Padded query rows produce values that the loss ignores.
The encoder does not compute padded positions at all: its stream is packed to the real tokens (see `Packing`).

Every block is written for both layer-norm placements:
  pre-norm  (default):  x = x + Dropout(Sublayer(LayerNorm(x)));   a final LayerNorm closes each stack
  post-norm (Marian):   x = LayerNorm(x + Dropout(Sublayer(x)))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, S) token ids -> (B, 1, 1, S) boolean, True on real tokens."""
    return (ids != pad_id)[:, None, None, :]


@dataclass
class Packing:
    """Where the real tokens of a right-padded batch are, so that position-wise work skips the padding.

    The encoder keeps its residual stream packed, (N, D) for the N real tokens, through embeddings, layer norms,
    projections, feed-forward layers and dropout; only attention sees the padded (B, S, ...) layout. With
    length-bucketed batches the source side is ~12% padding (Multi30k, 4k-token batches), all of it skipped.
    """

    index: Tensor  # (N,) flat positions b * S + s of the real tokens
    batch: int
    length: int

    @staticmethod
    def of(mask: Tensor) -> Packing | None:
        """From a (B, 1, 1, S) padding mask; None when nothing is padded."""
        B, S = mask.size(0), mask.size(-1)
        keep = mask.reshape(B * S)
        if bool(keep.all()):
            return None
        return Packing(keep.nonzero()[:, 0], B, S)

    def pack(self, x: Tensor) -> Tensor:
        """(B, S, C) -> (N, C)."""
        return x.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, C) -> (B, S, C), zeros at padding."""
        full = x.new_zeros(self.batch * self.length, x.size(-1))
        return full.index_copy(0, self.index, x).view(self.batch, self.length, -1)


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """PE[pos, k] = sin(pos * w_k) for k < D/2 and cos(pos * w_(k - D/2)) after, with w_k = 10000^(-2k/D).

    The sin and cos halves are concatenated rather than interleaved; this is the layout of Marian and fairseq
    (so imported Marian models need no permutation), and it is the same function as the paper's up to a fixed
    permutation of the features.
    """
    half = dim // 2
    inv_freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) * 2.0 / dim)  # (D/2,)
    angles = torch.arange(n_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (P, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()  # (P, D)


_COUNTER: dict[torch.device, Tensor] = {}


def _keep_mask(shape: torch.Size, p: float, device: torch.device) -> Tensor:
    """A float32 mask of 0 and 1/(1-p) for inverted dropout on CPU.

    PyTorch's CPU dropout draws one Mersenne-Twister number per element, about 10% of a small model's training
    step. Here the mask is a counter-based hash (two rounds of a 32-bit integer mix) of the element index and a
    seed drawn from torch's generator, so runs stay reproducible under `torch.manual_seed` and resumable from the
    saved RNG state. Two int32 buffers are allocated and everything else happens in place."""
    n = shape.numel()
    counter = _COUNTER.get(device)
    if counter is None or counter.numel() < n:
        counter = _COUNTER[device] = torch.arange(max(n, 1 << 20), dtype=torch.int32, device=device)
    seed = int(torch.randint(-(2**31), 2**31 - 1, ()).item())
    h = torch.mul(counter[:n], -1640531535).add_(seed)  # int32 arithmetic wraps modulo 2^32
    t = torch.bitwise_right_shift(h, 16)
    h.bitwise_xor_(t.bitwise_and_(0xFFFF))  # mask after the arithmetic shift: a logical shift
    h.mul_(0x45D9F3B)
    torch.bitwise_right_shift(h, 16, out=t)
    h.bitwise_xor_(t.bitwise_and_(0xFFFF)).bitwise_and_(0xFFFF)
    mask = t.view(torch.float32)  # reuse the buffer
    torch.mul(torch.ge(h, int(round(p * 65536))), 1.0 / (1.0 - p), out=mask)
    return mask.view(shape)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout: `F.dropout` on accelerators, the hashed mask above on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    return x * _keep_mask(x.shape, p, x.device).to(x.dtype)


def add_dropout(x: Tensor, y: Tensor, p: float, training: bool) -> Tensor:
    """x + dropout(y) in one pass on CPU (addcmul), the residual connection of every block."""
    if not training or p == 0.0:
        return x + y
    if y.device.type != "cpu":
        return x + F.dropout(y, p, True)
    return torch.addcmul(x, y, _keep_mask(y.shape, p, y.device).to(y.dtype))


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, dropout: float, need_weights: bool):
    """softmax(Q K^T / sqrt(Dh)) V.  q: (B, H, Tq, Dh), k/v: (B, H, Tk, Dh) -> (B, H, Tq, Dh), weights or None.

    The fast path is PyTorch's fused `scaled_dot_product_attention`; the explainable path computes the same
    thing by hand and also returns the attention weights (B, H, Tq, Tk).
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal), None
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if causal:
        tq, tk = q.size(-2), k.size(-2)
        keep = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(diagonal=tk - tq)
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return F.dropout(weights, p=dropout, training=dropout > 0) @ v, weights


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused Q/K/V projection, and an optional growing K/V cache."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        packing: Packing | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D), or (N, D) real tokens only when `packing` says where they sit (the encoder)."""
        qkv = self.qkv(x) if packing is None else packing.unpack(self.qkv(x))
        B, T, D = qkv.size(0), qkv.size(1), qkv.size(2) // 3
        q, k, v = qkv.view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 x (B,H,T,Dh)
        if cache is not None:  # incremental decoding: append this step's keys/values, attend to all so far
            k, v = cache.append(k, v)
            causal = causal and T > 1
        p = self.dropout if self.training else 0.0
        y, w = attend(q, k, v, mask, causal, p, need_weights)  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.out(y if packing is None else packing.pack(y)), w


class CrossAttention(nn.Module):
    """Multi-head attention from decoder queries to encoder states; keys/values are computed once per source."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def project_memory(self, memory: Tensor, packing: Packing | None = None) -> tuple[Tensor, Tensor]:
        """(B, S, D) encoder states, or (N, D) real positions with `packing` -> keys, values (B, H, S, Dh)."""
        kv = self.kv(memory) if packing is None else packing.unpack(self.kv(memory))
        B, S, D = kv.size(0), kv.size(1), kv.size(2) // 2
        k, v = kv.view(B, S, 2, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self, x: Tensor, kv: tuple[Tensor, Tensor], mask: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) queries; kv: (Bm, H, S, Dh) with Bm = B, or B / g when g consecutive rows share a source
        (the beams of one sentence while decoding): their queries then attend as one group of g*T positions."""
        B, T, D = x.shape
        Bm, g = kv[0].size(0), B // kv[0].size(0)
        q = self.q(x).view(Bm, g * T, self.n_heads, D // self.n_heads).transpose(1, 2)  # (Bm, H, g*T, Dh)
        p = self.dropout if self.training else 0.0
        y, w = attend(q, kv[0], kv[1], mask, False, p, need_weights)
        if w is not None and g > 1:  # (Bm, H, g*T, S) -> (B, H, T, S)
            w = w.view(Bm, -1, g, T, w.size(-1)).transpose(1, 2).reshape(B, -1, T, w.size(-1))
        return self.out(y.transpose(1, 2).reshape(B, T, D)), w


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}


class FeedForward(nn.Module):
    """FFN(x) = W2 Dropout(act(W1 x + b1)) + b2."""

    def __init__(self, d_model: int, ffn_dim: int, activation: str, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, ffn_dim), nn.Linear(ffn_dim, d_model)
        self.act, self.dropout = ACTIVATIONS[activation], dropout

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(dropout(self.act(self.fc1(x)), self.dropout, self.training))


class Residual(nn.Module):
    """Wraps one sublayer with dropout, the residual connection and a LayerNorm (pre or post)."""

    def __init__(self, d_model: int, pre_norm: bool, dropout: float, eps: float):
        super().__init__()
        self.norm, self.pre_norm, self.dropout = nn.LayerNorm(d_model, eps=eps), pre_norm, dropout

    def forward(self, x: Tensor, sublayer) -> tuple[Tensor, Tensor | None]:
        y, w = sublayer(self.norm(x) if self.pre_norm else x)
        x = add_dropout(x, y, self.dropout, self.training)
        return (x if self.pre_norm else self.norm(x)), w


def _no_weights(module):
    return lambda x: (module(x), None)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        pre = cfg.norm == "pre"
        self.self_attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.activation_dropout)
        self.attn_block = Residual(cfg.d_model, pre, cfg.dropout, cfg.layer_norm_eps)
        self.ffn_block = Residual(cfg.d_model, pre, cfg.dropout, cfg.layer_norm_eps)

    def forward(
        self, x: Tensor, mask: Tensor, need_weights: bool = False, packing: Packing | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, S, D), or (N, D) with `packing` (see `Packing`)."""
        x, w = self.attn_block(x, lambda h: self.self_attn(h, mask=mask, need_weights=need_weights, packing=packing))
        x, _ = self.ffn_block(x, _no_weights(self.ffn))
        return x, w


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        pre = cfg.norm == "pre"
        self.self_attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.cross_attn = CrossAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.activation_dropout)
        self.self_block = Residual(cfg.d_model, pre, cfg.dropout, cfg.layer_norm_eps)
        self.cross_block = Residual(cfg.d_model, pre, cfg.dropout, cfg.layer_norm_eps)
        self.ffn_block = Residual(cfg.d_model, pre, cfg.dropout, cfg.layer_norm_eps)

    def forward(
        self,
        x: Tensor,
        memory_kv: tuple[Tensor, Tensor],
        memory_mask: Tensor,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        x, _ = self.self_block(x, lambda h: self.self_attn(h, causal=True, cache=cache))
        x, w = self.cross_block(x, lambda h: self.cross_attn(h, memory_kv, memory_mask, need_weights))
        x, _ = self.ffn_block(x, _no_weights(self.ffn))
        return x, w


class Embedding(nn.Module):
    """Token embedding x sqrt(D) (when scaled) + position encoding, then dropout."""

    def __init__(self, tokens: nn.Embedding, cfg: ModelConfig):
        super().__init__()
        self.tokens = tokens
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        self.dropout = cfg.dropout
        self.max_positions = cfg.max_positions
        if cfg.positions == "learned":
            self.learned = nn.Embedding(cfg.max_positions, cfg.d_model)
            nn.init.normal_(self.learned.weight, std=cfg.d_model**-0.5)
        else:
            self.learned = None
            self.register_buffer("table", sinusoidal_table(cfg.max_positions, cfg.d_model), persistent=False)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        """(B, T) ids at positions offset..offset+T-1 -> (B, T, D)."""
        T = ids.size(1)
        if offset + T > self.max_positions:
            raise ValueError(f"sequence of {offset + T} positions exceeds model.max_positions={self.max_positions}")
        pos = self.learned.weight[offset : offset + T] if self.learned is not None else self.table[offset : offset + T]
        x = self.tokens(ids) * self.scale + pos.to(self.tokens.weight.dtype)
        return dropout(x, self.dropout, self.training)


@dataclass
class Memory:
    """Encoder output: states (B, S, D) and the source padding mask (B, 1, 1, S).

    When the encoder packed its stream (see `Packing`), it hands over `packed`, the (N, D) states of the real
    positions, which is all the decoder's key/value projections need; the padded `states` (zeros at padding)
    are then built only if something asks for them.
    """

    _states: Tensor | None
    mask: Tensor
    self_attention: list[Tensor] | None = None  # per layer (B, H, S, S), only when asked for
    packed: Tensor | None = None  # (N, D) the states of the real positions, when the encoder packed them
    packing: Packing | None = None

    @property
    def states(self) -> Tensor:
        if self._states is None:
            self._states = self.packing.unpack(self.packed)
        return self._states


@dataclass
class DecoderOutput:
    hidden: Tensor  # (B, T, D), after the final norm
    cross_attention: list[Tensor] | None = None  # per layer (B, H, T, S), only when asked for


class BufferPool:
    """One spare flat buffer shared by all the caches of a decoder state.

    Reordering a cache gathers its rows into a spare buffer, and the old buffer becomes the next spare; with one
    spare for all layers, reordering allocates nothing and costs one extra cache tensor of memory, not twelve.
    """

    def __init__(self):
        self.spare: Tensor | None = None

    def take(self, numel: int, like: Tensor) -> Tensor:
        spare, self.spare = self.spare, None
        if spare is None or spare.numel() < numel or spare.dtype != like.dtype or spare.device != like.device:
            return torch.empty(numel, dtype=like.dtype, device=like.device)
        return spare

    def give(self, flat: Tensor) -> None:
        if self.spare is None or flat.numel() > self.spare.numel():
            self.spare = flat


class LayerCache:
    """Self-attention keys/values of one decoder layer, written in place into a preallocated buffer.

    Storage is time-major, (capacity, B, H, Dh) over a flat tensor, so that the filled prefix [:t] is contiguous:
    appending writes one slice, reordering beams gathers only the filled prefix (into the pool's spare buffer),
    and attention reads a (B, H, t, Dh) strided view without copying. Capacity doubles when full.
    """

    def __init__(self, pool: BufferPool | None = None, capacity: int = 32):
        self.pool = pool or BufferPool()
        self.capacity = capacity
        self.length = 0
        self.k_flat: Tensor | None = None  # flat storage; viewed as (capacity, B, H, Dh)
        self.v_flat: Tensor | None = None
        self.shape: tuple[int, int, int] = (0, 0, 0)  # B, H, Dh

    def _view(self, flat: Tensor, t: int) -> Tensor:
        B, H, Dh = self.shape
        return flat[: t * B * H * Dh].view(t, B, H, Dh)

    def _grow(self, need: int) -> None:
        cap = max(self.capacity, 2 * self.length, need)
        B, H, Dh = self.shape
        for name in ("k_flat", "v_flat"):
            old = getattr(self, name)
            new = torch.empty(cap * B * H * Dh, dtype=old.dtype, device=old.device)
            if self.length:
                self._view(new, self.length).copy_(self._view(old, self.length))
            setattr(self, name, new)
        self.capacity = cap

    @property
    def k(self) -> Tensor | None:
        """Keys so far, (B, H, t, Dh)."""
        return None if self.k_flat is None else self._view(self.k_flat, self.length).permute(1, 2, 0, 3)

    @property
    def v(self) -> Tensor | None:
        return None if self.v_flat is None else self._view(self.v_flat, self.length).permute(1, 2, 0, 3)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v: (B, H, T, Dh) for T new positions -> all keys and values so far, (B, H, t + T, Dh)."""
        B, H, T, Dh = k.shape
        if self.k_flat is None:
            self.shape = (B, H, Dh)
            self.capacity = max(self.capacity, T)
            self.k_flat = torch.empty(self.capacity * B * H * Dh, dtype=k.dtype, device=k.device)
            self.v_flat = torch.empty_like(self.k_flat)
        elif self.length + T > self.capacity:
            self._grow(self.length + T)
        end = self.length + T
        self._view(self.k_flat, end)[self.length :] = k.permute(2, 0, 1, 3)  # (T, B, H, Dh)
        self._view(self.v_flat, end)[self.length :] = v.permute(2, 0, 1, 3)
        self.length = end
        return self.k, self.v

    def index(self, idx: Tensor) -> None:
        """Keep rows `idx` (a permutation, a subset or a repetition of rows), in that order."""
        if self.k_flat is None:
            return
        B, H, Dh = self.shape
        n, t = idx.numel(), self.length
        cap = self.capacity if n <= B else max(self.capacity, t)
        for name in ("k_flat", "v_flat"):
            old = getattr(self, name)
            new = self.pool.take(cap * n * H * Dh, old)
            torch.index_select(self._view(old, t), 1, idx, out=new[: t * n * H * Dh].view(t, n, H, Dh))
            setattr(self, name, new)
            self.pool.give(old)
        self.shape = (n, H, Dh)
        self.capacity = min(self.k_flat.numel(), self.v_flat.numel()) // (n * H * Dh)

    def move(self, dst: Tensor, src: Tensor) -> None:
        """Rows dst take the contents of rows src (the other rows stay): a beam reorder that changes few rows
        copies just those, reading the sources first."""
        if self.k_flat is not None:
            for flat in (self.k_flat, self.v_flat):
                view = self._view(flat, self.length)  # (t, B, H, Dh)
                view.index_copy_(1, dst, view.index_select(1, src))


@dataclass
class DecoderState:
    """Everything incremental decoding carries between steps.

    Cross-attention keys/values are projected once from the encoder output. With the cache, self-attention
    keys/values grow by one position per step; without it (`caches is None`), the whole prefix is kept and
    re-run every step, which is slow and only exists to check the cache. `reorder` permutes rows among
    hypotheses of the same sentences (beam search) and leaves cross-attention keys alone; `select` keeps a
    subset of rows (dropping finished sentences). `project` maps final hidden states (B, D) to logits (B, V).

    After `repeat(n)`, each source (memory row) serves `group` consecutive rows and is not copied: cross-attention
    reads each source's keys/values once for all its beams. A selection that splits a group (sampling, where rows
    finish one by one) gives every row its own copy again.
    """

    memory_kv: list[tuple[Tensor, Tensor]]
    memory_mask: Tensor  # (Bm, 1, 1, S), Bm = rows / group
    caches: list[LayerCache] | None
    prefix: Tensor | None = None  # (B, t) tokens fed so far, only without caches
    length: int = 0  # positions decoded so far
    project: Callable[[Tensor], Tensor] | None = None
    group: int = 1  # consecutive rows per memory row

    def reorder(self, idx: Tensor) -> None:
        """Rows `idx` of the self-attention state, in that order (within groups: memory is left alone)."""
        if self.prefix is not None:
            self.prefix = self.prefix.index_select(0, idx)
        if not self.caches or self.caches[0].k_flat is None:
            return
        rows = self.caches[0].shape[0]
        if idx.numel() == rows:  # a permutation with repeats, where beams often keep their own row
            dst = (idx != torch.arange(rows, device=idx.device)).nonzero()[:, 0]
            if dst.numel() <= 0.4 * rows:  # copying a few rows twice beats gathering all of them once
                src = idx.index_select(0, dst)
                for c in self.caches:
                    c.move(dst, src)
                return
        for c in self.caches:
            c.index(idx)

    def select(self, idx: Tensor) -> None:
        self.reorder(idx)
        g = self.group
        mem = idx
        if g > 1:
            first = idx[::g]
            whole = idx.numel() % g == 0 and bool(
                (first % g == 0).all()
                and (idx.view(-1, g) == first[:, None] + torch.arange(g, device=idx.device)).all()
            )
            mem, self.group = (first // g, g) if whole else (idx // g, 1)
        self.select_memory(mem)

    def repeat(self, n: int) -> None:
        """Repeat every row n times (row b becomes rows b*n .. b*n+n-1), e.g. to start a beam of size n."""
        rows = self.memory_mask.size(0) * self.group
        self.reorder(torch.arange(rows, device=self.memory_mask.device).repeat_interleave(n))
        if self.group == 1:
            self.group = n
        else:  # rows of a group become n consecutive copies each: give every row its own source
            idx = torch.arange(self.memory_mask.size(0), device=self.memory_mask.device).repeat_interleave(self.group)
            self.group = 1
            self.select_memory(idx.repeat_interleave(n))

    def select_memory(self, mem: Tensor) -> None:
        self.memory_kv = [(k.index_select(0, mem), v.index_select(0, mem)) for k, v in self.memory_kv]
        self.memory_mask = self.memory_mask.index_select(0, mem)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig, tokens: nn.Embedding):
        super().__init__()
        self.embed = Embedding(tokens, cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else None

    def forward(self, src: Tensor, mask: Tensor, need_weights: bool = False) -> Memory:
        x = self.embed(src)  # (B, S, D)
        packing = None if need_weights else Packing.of(mask)  # attention weights come in the padded layout
        if packing is not None:
            x = packing.pack(x)  # (N, D): padding positions are skipped by every layer
        weights = []
        for layer in self.layers:
            x, w = layer(x, mask, need_weights, packing)
            weights.append(w)
        if self.norm is not None:
            x = self.norm(x)
        if packing is None:
            return Memory(x, mask, weights if need_weights else None)
        return Memory(None, mask, None, x, packing)


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig, tokens: nn.Embedding):
        super().__init__()
        self.embed = Embedding(tokens, cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps) if cfg.norm == "pre" else None

    def forward(
        self,
        tgt_in: Tensor,
        memory_kv: list[tuple[Tensor, Tensor]],
        memory_mask: Tensor,
        caches: list[LayerCache] | None = None,
        offset: int = 0,
        need_weights: bool = False,
    ) -> DecoderOutput:
        x = self.embed(tgt_in, offset)  # (B, T, D)
        weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, memory_kv[i], memory_mask, caches[i] if caches else None, need_weights)
            weights.append(w)
        if self.norm is not None:
            x = self.norm(x)
        return DecoderOutput(x, weights if need_weights else None)


class Seq2Seq(nn.Module):
    """Encoder, decoder and output projection.

    Training:   logits = model(src, tgt[:, :-1]), compared with tgt[:, 1:]
    Decoding:   memory = model.encode(src); state = model.start(memory); logits = model.step(tokens, state)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        src_tokens = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        tgt_tokens = (
            src_tokens
            if cfg.share_embeddings
            else nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        )
        self.encoder = Encoder(cfg, src_tokens)
        self.decoder = Decoder(cfg, tgt_tokens)
        self.output = None if cfg.tie_output else nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        self.logits_bias = nn.Parameter(torch.zeros(cfg.tgt_vocab_size)) if cfg.final_logits_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linear weights, zero biases, N(0, 1/D) embeddings with a zero padding row."""
        for name, p in self.named_parameters():
            if name.endswith("tokens.weight") or name == "output.weight":
                nn.init.normal_(p, std=self.cfg.d_model**-0.5)
            elif name.endswith("bias") or name == "logits_bias":
                nn.init.zeros_(p)
            elif p.dim() == 2 and "learned" not in name:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.encoder.embed.tokens.weight[self.cfg.pad_id].zero_()
            self.decoder.embed.tokens.weight[self.cfg.pad_id].zero_()

    # -- pieces ------------------------------------------------------------------------------------------
    def encode(self, src: Tensor, need_weights: bool = False) -> Memory:
        """(B, S) source ids -> Memory."""
        return self.encoder(src, padding_mask(src, self.cfg.pad_id), need_weights)

    def memory_kv(self, memory: Memory) -> list[tuple[Tensor, Tensor]]:
        states = memory.states if memory.packed is None else memory.packed  # packed: the real positions only
        return [layer.cross_attn.project_memory(states, memory.packing) for layer in self.decoder.layers]

    def decode(self, tgt_in: Tensor, memory: Memory, need_weights: bool = False) -> DecoderOutput:
        """(B, T) decoder input ids (starting with bos) -> hidden states (B, T, D), all positions at once."""
        return self.decoder(tgt_in, self.memory_kv(memory), memory.mask, need_weights=need_weights)

    def output_weight(self) -> Tensor:
        """(V, D) output projection: the target embedding when tied."""
        return self.decoder.embed.tokens.weight if self.output is None else self.output.weight

    def project(self, hidden: Tensor) -> Tensor:
        """(..., D) -> (..., V) logits."""
        return F.linear(hidden, self.output_weight(), self.logits_bias)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V). (Training goes through `train.loss.Seq2SeqLoss`, which never
        materialises them.)"""
        return self.project(self.decode(tgt_in, self.encode(src)).hidden)

    # -- incremental decoding ---------------------------------------------------------------------------
    def start(self, memory: Memory, cache: bool = True) -> DecoderState:
        B = memory.mask.size(0)
        pool = BufferPool()
        return DecoderState(
            memory_kv=self.memory_kv(memory),
            memory_mask=memory.mask,
            caches=[LayerCache(pool) for _ in self.decoder.layers] if cache else None,
            prefix=None if cache else memory.mask.new_zeros((B, 0), dtype=torch.long),
            project=self.step_projection(),
        )

    def step_projection(self) -> Callable[[Tensor], Tensor]:
        """The output projection of decoding: `project` with the (V, D) weight transposed once per decoding
        state, because multiplying by a row-major (D, V) matrix is ~1.6x faster on CPU than by its transpose;
        or the packed / int8 module that `lucidmt.decode.quantize` attaches as `decode_projection`."""
        attached = getattr(self, "decode_projection", None)
        if attached is not None:
            return attached
        w_t = self.output_weight().t().contiguous()  # (D, V)
        bias = self.logits_bias
        if bias is None:
            return lambda h: h @ w_t
        return lambda h: torch.addmm(bias, h, w_t)

    def step(self, tokens: Tensor, state: DecoderState, need_weights: bool = False) -> tuple[Tensor, list | None]:
        """Feed one token per row (B,) at position state.length -> logits (B, V) and, when asked,
        the cross-attention of this position per layer, each (B, H, S)."""
        if state.caches is not None:
            out = self.decoder(
                tokens[:, None], state.memory_kv, state.memory_mask, state.caches, state.length, need_weights
            )
        else:
            state.prefix = torch.cat([state.prefix, tokens[:, None]], dim=1)
            out = self.decoder(state.prefix, state.memory_kv, state.memory_mask, need_weights=need_weights)
        state.length += 1
        attn = [w[:, :, -1] for w in out.cross_attention] if need_weights else None
        hidden = out.hidden[:, -1]  # (B, D)
        return (state.project(hidden) if state.project is not None else self.project(hidden)), attn


def count_parameters(model: nn.Module) -> int:
    """Distinct trainable parameters (a shared embedding counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
