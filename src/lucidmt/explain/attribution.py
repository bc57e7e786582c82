"""Which source tokens a translation came from: integrated gradients and ALTI+ contributions.

Two methods, because they answer different questions:

* **Integrated gradients** (Sundararajan et al., 2017) attribute the log-probability of each target token to the
  source token embeddings, by integrating the gradient along the straight path from a baseline (the source token
  embeddings zero, as the model's padding embedding is; positions kept) to the input. Its defining property is
  *completeness*: the attributions of a target token sum to log p(token | input) - log p(token | baseline), so the
  numbers are in log-probability units and can be compared and added. The baseline keeps the end-of-sentence
  embedding (zeroing it too would attribute much of every prediction to "</s>" merely for marking where the
  sentence ends), so "</s>" always gets 0. The integral is computed with Gauss-Legendre
  quadrature (as Captum does); the remaining quadrature error is returned as `delta`, per target token.
  Attributions are signed: a negative one means the source token made the chosen target token less likely.
* **ALTI+** (Ferrando et al., 2022, "Towards Opening the Black Box of Neural Machine Translation: Source and Target
  Contributions in the Transformer"; ALTI: Ferrando et al., 2022, "Measuring the Mixing of Contextual Information
  in the Transformer") follows the residual streams, which raw attention ignores. Every attention block's output
  is split exactly into one vector per input (value vector through the output projection, weighted by attention,
  plus the residual for the token itself); an input's contribution is how much closer the output is to its part
  than to zero (in L1 distance), clipped at zero and normalised. Layers are composed as in attention rollout
  (Abnar & Zuidema, 2020): encoder layers mix source tokens, each decoder layer mixes the target prefix
  (self-attention) and then the residual stream with the encoder output (cross-attention). The result is, per
  target position, a distribution over source tokens and target-prefix tokens: non-negative, summing to 1; its
  source part is the share of the prediction that came from the source at all (low shares go with
  hallucinations, Dale et al., 2023).

Both run on the first model of an ensemble.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.transformer import Memory, Seq2Seq, padding_mask


@dataclass
class IGResult:
    attributions: np.ndarray  # (T, S): target token x source token, log-probability units
    delta: np.ndarray  # (T,): sum of attributions - (f(input) - f(baseline)), the quadrature error
    logprob: np.ndarray  # (T,): f(input), log p(target token)
    baseline_logprob: np.ndarray  # (T,): f(baseline)
    steps: int


def _gauss_legendre(steps: int, device) -> tuple[Tensor, Tensor]:
    """Nodes and weights of Gauss-Legendre quadrature on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(steps)
    return torch.tensor((x + 1) / 2, dtype=torch.float32, device=device), torch.tensor(
        w / 2, dtype=torch.float32, device=device
    )


def _target_logprobs(model: Seq2Seq, token_emb: Tensor, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> Tensor:
    """log p(tgt_out[t] | tgt_in[:t+1], source) for a batch of source token embeddings (B, S, D) -> (B, T).

    The encoder is run from its token embeddings (positions added here), which is `Encoder.forward` with the
    lookup replaced, so that gradients reach the embeddings."""
    enc = model.encoder
    B, S, _ = token_emb.shape
    pos = enc.embed.learned.weight[:S] if enc.embed.learned is not None else enc.embed.table[:S]
    x = token_emb + pos.to(token_emb.dtype)
    mask = padding_mask(src[None], model.cfg.pad_id).expand(B, 1, 1, S)  # (B, 1, 1, S)
    for layer in enc.layers:
        x, _ = layer(x, mask)
    if enc.norm is not None:
        x = enc.norm(x)
    hidden = model.decode(tgt_in[None].expand(B, -1), Memory(x, mask)).hidden  # (B, T, D)
    logp = F.log_softmax(model.project(hidden).float(), dim=-1)  # (B, T, V)
    return logp.gather(2, tgt_out[None, :, None].expand(B, -1, 1))[..., 0]  # (B, T)


def integrated_gradients(
    model: Seq2Seq, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, steps: int = 32, chunk: int = 32
) -> IGResult:
    """Integrated gradients of every target token's log-probability w.r.t. the source token embeddings.

    src: (S,) source ids with eos; tgt_in: (T,) decoder input (bos + tokens); tgt_out: (T,) predicted tokens
    (tokens + eos). Returns attributions (T, S) whose rows sum to f(input) - f(baseline) up to `delta`."""
    if steps < 1:
        from ..errors import ConfigurationError

        raise ConfigurationError(f"integrated gradients needs steps >= 1, got {steps}")
    model.eval()
    enc = model.encoder
    with torch.no_grad():
        full = enc.embed.tokens(src[None]).float() * enc.embed.scale  # (1, S, D)
        keep = (src == model.cfg.eos_id)[None, :, None]  # (1, S, 1): the eos embedding stays in the baseline
        base = torch.where(keep, full, torch.zeros_like(full))
        emb = full - base  # the part that is integrated: real tokens only
        ends = _target_logprobs(model, torch.cat([full, base]), src, tgt_in, tgt_out)  # (2, T)
    alphas, weights = _gauss_legendre(steps, emb.device)
    T, S = tgt_out.numel(), src.numel()
    avg_grad = torch.zeros(T, S, emb.size(-1), device=emb.device)  # (T, S, D): weighted sum of gradients
    with torch.enable_grad():
        for lo in range(0, steps, chunk):
            a, w = alphas[lo : lo + chunk], weights[lo : lo + chunk]
            x = (base + a[:, None, None] * emb).detach().requires_grad_(True)  # (m, S, D) points on the path
            f = _target_logprobs(model, x, src, tgt_in, tgt_out)  # (m, T)
            for t in range(T):
                (g,) = torch.autograd.grad(f[:, t].sum(), x, retain_graph=t < T - 1)  # (m, S, D)
                avg_grad[t] += (w[:, None, None] * g).sum(0)
    attr = (avg_grad * emb[0][None]).sum(-1)  # (T, S): (x - baseline) . integral of the gradient
    fx, fb = ends[0], ends[1]
    delta = attr.sum(1) - (fx - fb)
    return IGResult(attr.cpu().numpy(), delta.cpu().numpy(), fx.cpu().numpy(), fb.cpu().numpy(), steps)


# -- ALTI+ --------------------------------------------------------------------------------------------------------
@dataclass
class AltiResult:
    source: np.ndarray  # (T, S): contribution of each source token to each target position
    prefix: np.ndarray  # (T, T): contribution of each decoder input token (bos + target prefix)
    encoder: np.ndarray  # (S, S): contribution of source tokens to each encoder output
    max_reconstruction_error: float  # |sum of the parts - the block's real output|, over all blocks

    @property
    def source_share(self) -> np.ndarray:
        """(T,): the share of each prediction that comes from the source (the rest from the target prefix)."""
        return self.source.sum(1)


def _alti(parts: Tensor, bias: Tensor, post_norm: torch.nn.LayerNorm | None) -> Tensor:
    """Contributions from the decomposition of one block's outputs.

    parts: (Q, K, D), the part of output q that comes from input k (residual included); bias: (D,) the part
    that comes from no input. With post-norm, LayerNorm(sum) is linearised around the actual output (the
    standard deviation is that of the whole sum), which splits it exactly into per-input parts again.
    Returns (Q, K): c_qk = max(0, |y_q|_1 - |y_q - part_qk|_1), rows normalised to 1."""
    y = parts.sum(1) + bias  # (Q, D)
    if post_norm is not None:
        std = torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + post_norm.eps)  # (Q, 1)
        parts = (parts - parts.mean(-1, keepdim=True)) / std[:, None] * post_norm.weight
        y = post_norm(y)
    dist = (y[:, None, :] - parts).abs().sum(-1)  # (Q, K)
    c = (y.abs().sum(-1, keepdim=True) - dist).clamp(min=0)
    return c / c.sum(-1, keepdim=True).clamp(min=1e-12)


def _value_out(attn, values: Tensor) -> Tensor:
    """values (K, H, Dh) -> each head's value vector through its slice of the output projection: (K, H, D)."""
    D = attn.out.weight.size(0)
    H = values.size(1)
    return torch.einsum("khd,ehd->khe", values, attn.out.weight.view(D, H, D // H))


def _self_attention_parts(attn, block, x: Tensor, mask: Tensor | None, causal: bool) -> tuple[Tensor, Tensor]:
    """Decompose `block(x, self_attn)` of one sequence: x (1, Q, D) -> parts (Q, Q, D), block output (1, Q, D)."""
    h = block.norm(x) if block.pre_norm else x
    _, Q, D = h.shape
    H = attn.n_heads
    _, w = attn(h, mask=mask, causal=causal, need_weights=True)  # w: (1, H, Q, Q)
    v = attn.qkv(h).view(1, Q, 3, H, D // H)[0, :, 2]  # (Q, H, Dh)
    parts = torch.einsum("hqk,khe->qke", w[0], _value_out(attn, v))  # (Q, Q, D)
    parts = parts + torch.diag_embed(torch.ones(Q, device=x.device))[..., None] * x[0][None, :, :]  # residual
    out, _ = block(x, lambda hh: attn(hh, mask=mask, causal=causal))
    return parts, out


def alti_plus(model: Seq2Seq, src: Tensor, tgt_in: Tensor) -> AltiResult:
    """ALTI+ contributions of source and target-prefix tokens to every decoder position (one sentence).

    src: (S,) source ids with eos; tgt_in: (T,) decoder input (bos + tokens)."""
    model.eval()
    enc, dec = model.encoder, model.decoder
    S, T = src.numel(), tgt_in.numel()
    err = 0.0
    with torch.no_grad():
        mask = padding_mask(src[None], model.cfg.pad_id)  # (1, 1, 1, S)
        x = enc.embed(src[None]).float()  # (1, S, D)
        R_enc = torch.eye(S, device=x.device)  # (S, S): rows = encoder states, columns = source tokens
        for layer in enc.layers:
            blk = layer.attn_block
            parts, out = _self_attention_parts(layer.self_attn, blk, x, mask, False)
            err = max(err, _check(parts, layer.self_attn.out.bias, blk, out))
            R_enc = _alti(parts, layer.self_attn.out.bias, None if blk.pre_norm else blk.norm) @ R_enc
            x, _ = layer.ffn_block(out, lambda hh, f=layer.ffn: (f(hh), None))
        memory = enc.norm(x) if enc.norm is not None else x  # (1, S, D)

        y = dec.embed(tgt_in[None]).float()  # (1, T, D)
        R = torch.cat([torch.zeros(T, S, device=y.device), torch.eye(T, device=y.device)], 1)  # (T, S + T)
        R_src = torch.cat([R_enc, torch.zeros(S, T, device=y.device)], 1)  # (S, S + T)
        for layer in dec.layers:
            blk = layer.self_block
            parts, y1 = _self_attention_parts(layer.self_attn, blk, y, None, True)
            err = max(err, _check(parts, layer.self_attn.out.bias, blk, y1))
            R = _alti(parts, layer.self_attn.out.bias, None if blk.pre_norm else blk.norm) @ R

            blk, ca = layer.cross_block, layer.cross_attn
            h = blk.norm(y1) if blk.pre_norm else y1
            k, v = ca.project_memory(memory)  # (1, H, S, Dh)
            _, w = ca(h, (k, v), mask, need_weights=True)  # (1, H, T, S)
            src_parts = torch.einsum("hts,she->tse", w[0], _value_out(ca, v[0].transpose(0, 1)))  # (T, S, D)
            parts = torch.cat([src_parts, y1[0][:, None, :]], 1)  # (T, S + 1, D): source tokens, then residual
            y2, _ = blk(y1, lambda hh, c=ca, kv=(k, v): c(hh, kv, mask))
            err = max(err, _check(parts, ca.out.bias, blk, y2))
            c = _alti(parts, ca.out.bias, None if blk.pre_norm else blk.norm)  # (T, S + 1)
            R = c[:, S : S + 1] * R + c[:, :S] @ R_src
            y, _ = layer.ffn_block(y2, lambda hh, f=layer.ffn: (f(hh), None))
    R = R.cpu().numpy()
    return AltiResult(R[:, :S], R[:, S:], R_enc.cpu().numpy(), err)


def _check(parts: Tensor, bias: Tensor, block, out: Tensor) -> float:
    """How far the parts are from the block's real output (before a post-norm): a test of the decomposition."""
    total = parts.sum(1) + bias
    if not block.pre_norm:
        total = block.norm(total)
    return float((total - out[0]).abs().max())
