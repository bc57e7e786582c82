import pytest
import torch
import torch.nn.functional as F

from lucidmt.train.loss import linear_cross_entropy


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_loss_and_gradients_equal_autograd_reference(eps, with_bias):
    torch.manual_seed(0)
    h = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(29, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(29, dtype=torch.float64, requires_grad=True) if with_bias else None
    y = torch.randint(0, 29, (37,))
    loss, nll = linear_cross_entropy(h, w, b, y, eps, chunk=8)  # several chunks, one partial
    (2.5 * loss).backward()
    got = [h.grad.clone(), w.grad.clone()] + ([b.grad.clone()] if with_bias else [])
    for p in (h, w, b):
        if p is not None:
            p.grad = None
    z = F.linear(h, w, b)
    ref = F.cross_entropy(z, y, label_smoothing=eps, reduction="sum")
    (2.5 * ref).backward()
    want = [h.grad, w.grad] + ([b.grad] if with_bias else [])
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(nll.double(), F.cross_entropy(z, y, reduction="sum"), rtol=1e-5, atol=1e-4)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_no_grad_path_gives_the_same_numbers():
    torch.manual_seed(1)
    h, w, y = torch.randn(20, 8), torch.randn(11, 8), torch.randint(0, 11, (20,))
    with torch.no_grad():
        a = linear_cross_entropy(h, w, None, y, 0.1, chunk=6)
    b = linear_cross_entropy(h.requires_grad_(), w, None, y, 0.1, chunk=6)
    torch.testing.assert_close(a[0], b[0].detach())
    torch.testing.assert_close(a[1], b[1].detach())
