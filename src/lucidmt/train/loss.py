"""Label-smoothed cross-entropy fused with the output projection.

For N target positions with decoder states h (N, D), output matrix W (V, D) and gold tokens y:

    z = h W^T + b                                  logits, (N, V)
    lse = log sum_v exp z_v
    nll = lse - z_y                                = -log p(y)
    smooth = lse - mean_v z_v                      = mean_v -log p(v)
    loss = (1 - eps) * nll + eps * smooth          (Szegedy et al., 2016; the fairseq formulation)

    dloss/dz = softmax(z) - (1 - eps) * onehot(y) - eps / V

The fused path works through the positions in chunks: each chunk's logits are formed, reduced to the loss, turned
in place into dloss/dz and multiplied straight into the gradients of h, W and b. The (N, V) logits are never
stored and autograd never builds the five (N, V) temporaries of log_softmax -> gather -> mean; on a 2-core CPU
that is about a third of a small model's training step.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, eps: float, chunk: int):
        N, V = hidden.size(0), weight.size(0)
        dev = hidden.device
        # matmuls follow autocast (bf16 on GPU); the softmax and the accumulated gradients stay in fp32
        mm_dtype = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else weight.dtype
        w = weight.to(mm_dtype)
        grad_h = torch.empty(hidden.shape, dtype=mm_dtype, device=dev)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=dev)
        grad_b = torch.zeros(V, dtype=torch.float32, device=dev) if bias is not None else None
        loss = torch.zeros((), dtype=torch.float32, device=dev)
        nll_total = torch.zeros((), dtype=torch.float32, device=dev)
        for s in range(0, N, chunk):
            h, y = hidden[s : s + chunk].to(mm_dtype), target[s : s + chunk]
            rows = torch.arange(h.size(0), device=dev)
            z = torch.nn.functional.linear(h, w, bias).float()  # (c, V) logits
            z_y, z_mean = z[rows, y], z.mean(dim=-1)
            m = z.amax(dim=-1, keepdim=True)
            e = z.sub_(m).exp_()  # in place: exp(z - max)
            total = e.sum(dim=-1)
            lse = m[:, 0] + total.log()
            nll = lse - z_y
            loss += ((1.0 - eps) * nll + eps * (lse - z_mean)).sum()
            nll_total += nll.sum()
            g = e.mul_((1.0 / total)[:, None]).sub_(eps / V)  # softmax - eps/V, still in place
            g[rows, y] -= 1.0 - eps
            g = g.to(mm_dtype)
            torch.mm(g, w, out=grad_h[s : s + chunk])
            if mm_dtype == torch.float32:
                grad_w.addmm_(g.t(), h)
            else:
                grad_w += (g.t() @ h).float()
            if grad_b is not None:
                grad_b += g.float().sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b if grad_b is not None else torch.empty(0))
        ctx.has_bias, ctx.dtypes = bias is not None, (hidden.dtype, weight.dtype)
        return loss, nll_total

    @staticmethod
    def backward(ctx, g_loss: Tensor, g_nll: Tensor):
        # nll is returned for logging only; gradients flow through the smoothed loss alone.
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        gh = (grad_h * g_loss.to(grad_h.dtype)).to(h_dtype)
        gw = (grad_w * g_loss).to(w_dtype)
        gb = (grad_b * g_loss).to(w_dtype) if ctx.has_bias else None
        return gh, gw, gb, None, None, None


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, eps: float = 0.0, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed loss and summed NLL over N positions. hidden (N, D), weight (V, D), target (N,).

    With gradients enabled this is the fused chunked path above; otherwise a plain chunked reduction."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(hidden, weight, bias, target, eps, chunk)
    loss = hidden.new_zeros((), dtype=torch.float32)
    nll_total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.size(0), chunk):
        z = torch.nn.functional.linear(hidden[s : s + chunk], weight, bias).float()
        lse = torch.logsumexp(z, dim=-1)
        nll = lse - z.gather(1, target[s : s + chunk, None])[:, 0]
        loss += ((1.0 - eps) * nll + eps * (lse - z.mean(dim=-1))).sum()
        nll_total += nll.sum()
    return loss, nll_total


class Seq2SeqLoss(torch.nn.Module):
    """Wraps a Seq2Seq so that one `forward` goes from a batch to (summed loss, summed NLL, token count).

    This is the module DDP and torch.compile wrap: the loss is part of the forward pass."""

    def __init__(self, model, label_smoothing: float, chunk: int = 1024):
        super().__init__()
        self.model, self.eps, self.chunk = model, label_smoothing, chunk

    def forward(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        hidden = m.decode(tgt_in, m.encode(src)).hidden  # (B, T, D)
        select = tgt_out != m.cfg.pad_id  # only real target tokens reach the output layer
        weight, bias = m.output_weight(), m.logits_bias
        return linear_cross_entropy(hidden[select], weight, bias, tgt_out[select], self.eps, self.chunk)
