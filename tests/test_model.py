import pytest
import torch

from lucidmt.config import preset
from lucidmt.model import Seq2Seq, count_parameters
from lucidmt.model.transformer import Memory, dropout, padding_mask, sinusoidal_table


def make(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = preset("tiny").model
    cfg.src_vocab_size = cfg.tgt_vocab_size = 50
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return Seq2Seq(cfg).eval()


def batch(B=3, S=7, T=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 50, (B, S), generator=g)
    src[0, 5:] = 0  # padded row
    src[:, -1] = torch.where(src[:, -1] == 0, 0, 3)
    tgt = torch.randint(4, 50, (B, T), generator=g)
    tgt[:, 0] = 2
    return src, tgt


VARIANTS = [
    {},
    {"norm": "post"},
    {"positions": "learned"},
    {"share_embeddings": False, "tie_output": False, "final_logits_bias": True},
    {"activation": "swish"},
    {"activation": "gelu", "norm": "post", "scale_embeddings": False},
]


@pytest.mark.parametrize("overrides", VARIANTS)
def test_incremental_logits_equal_full_sequence(overrides):
    model = make(**overrides)
    src, tgt = batch()
    with torch.no_grad():
        full = model(src, tgt)  # (B, T, V)
        state = model.start(model.encode(src))
        inc = torch.stack([model.step(tgt[:, i], state)[0] for i in range(tgt.size(1))], dim=1)
    assert full.shape == (3, 6, 50)
    torch.testing.assert_close(inc, full, atol=1e-5, rtol=0)


def test_incremental_attention_equals_full_attention():
    model = make()
    src, tgt = batch()
    with torch.no_grad():
        memory = model.encode(src)
        full = model.decode(tgt, memory, need_weights=True).cross_attention  # per layer (B, H, T, S)
        state = model.start(memory)
        steps = [model.step(tgt[:, i], state, need_weights=True)[1] for i in range(tgt.size(1))]
    for layer in range(len(full)):
        inc = torch.stack([s[layer] for s in steps], dim=2)
        torch.testing.assert_close(inc, full[layer], atol=1e-5, rtol=0)
        torch.testing.assert_close(inc.sum(-1), torch.ones_like(inc.sum(-1)))
        assert float(inc[0, :, :, 5:].abs().max()) == 0.0  # padding gets no attention


@pytest.mark.parametrize("overrides", [{}, {"norm": "post"}])
def test_padding_does_not_change_a_sentence(overrides):
    model = make(**overrides)
    src, tgt = batch()
    alone_src = src[1:2, :5]  # a sentence of 5 tokens
    alone_src = alone_src.clone()
    alone_src[0, -1] = 3
    alone_tgt = tgt[1:2, :4]
    long_src = torch.cat([alone_src, torch.zeros(1, 9, dtype=torch.long)], 1)  # padded to 14
    long_tgt = torch.cat([alone_tgt, torch.zeros(1, 3, dtype=torch.long)], 1)
    other_src = torch.randint(4, 50, (1, 14))
    other_tgt = torch.randint(4, 50, (1, 7))
    with torch.no_grad():
        ref = model(alone_src, alone_tgt)
        mixed = model(torch.cat([long_src, other_src]), torch.cat([long_tgt, other_tgt]))
    torch.testing.assert_close(mixed[0:1, :4], ref, atol=1e-5, rtol=0)


def padded_encoder(model, src):
    """The encoder run in the padded (B, S, D) layout throughout, as before packing existed."""
    enc, mask = model.encoder, padding_mask(src, model.cfg.pad_id)
    x = enc.embed(src)
    for layer in enc.layers:
        x, _ = layer(x, mask)
    return Memory(enc.norm(x) if enc.norm is not None else x, mask)


@pytest.mark.parametrize("overrides", [{}, {"norm": "post", "activation": "swish"}])
def test_packed_encoder_equals_padded_layout_values_and_gradients(overrides):
    """The encoder skips padding positions (its stream is (N, D) for the N real tokens): states at real positions,
    the decoder's logits and every parameter gradient equal those of the padded layout; padding states are 0."""
    src, tgt = batch()
    assert (src == 0).any()  # the batch has padding, so packing is used
    grads, outs = [], []
    for packed in (True, False):
        model = make(**overrides)
        memory = model.encode(src) if packed else padded_encoder(model, src)
        if packed:
            assert memory.packing is not None and memory.packed.size(0) == int((src != 0).sum())
            assert float(memory.states.detach()[src == 0].abs().max()) == 0.0
        logits = model.project(model.decode(tgt, memory).hidden)
        (logits.square().mean() + memory.states[src != 0].sum()).backward()
        outs.append((memory.states[src != 0].detach(), logits.detach()))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], atol=1e-5, rtol=0)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_future_target_tokens_do_not_change_earlier_logits():
    model = make()
    src, tgt = batch()
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 7) % 46 + 4
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)
    assert not torch.allclose(a[:, 5], b[:, 5])


def test_cache_free_state_matches_cached_state():
    model = make()
    src, tgt = batch()
    with torch.no_grad():
        memory = model.encode(src)
        s1, s2 = model.start(memory), model.start(memory, cache=False)
        for i in range(tgt.size(1)):
            torch.testing.assert_close(model.step(tgt[:, i], s1)[0], model.step(tgt[:, i], s2)[0], atol=1e-5, rtol=0)


def test_preset_parameter_counts():
    # joint 8k vocabulary, tied embeddings: pinned so that an architecture change is a conscious one
    counts = {}
    for name in ("small", "base", "big"):
        cfg = preset(name).model
        counts[name] = count_parameters(Seq2Seq(cfg))
    assert counts == {"small": 7_578_624, "base": 48_236_544, "big": 184_553_472}
    small = preset("small").model
    assert (small.d_model, small.encoder_layers, small.decoder_layers, small.n_heads, small.ffn_dim) == (
        256,
        3,
        3,
        4,
        1024,
    )


def test_shared_embedding_is_one_tensor_and_padding_row_is_zero():
    model = make()
    assert model.encoder.embed.tokens is model.decoder.embed.tokens
    assert model.output_weight() is model.encoder.embed.tokens.weight
    assert float(model.encoder.embed.tokens.weight[0].detach().abs().sum()) == 0.0


def test_masks_and_positions():
    ids = torch.tensor([[5, 6, 3, 0], [5, 3, 0, 0]])
    m = padding_mask(ids, 0)
    assert m.shape == (2, 1, 1, 4) and m.dtype == torch.bool
    assert m[:, 0, 0].tolist() == [[True, True, True, False], [True, True, False, False]]
    pe = sinusoidal_table(10, 8)
    assert pe.shape == (10, 8)
    torch.testing.assert_close(pe[0], torch.tensor([0, 0, 0, 0, 1, 1, 1, 1.0]))  # sin half, then cos half
    torch.testing.assert_close(pe[3, 0], torch.tensor(3.0).sin())


def test_sequence_longer_than_max_positions_is_an_error():
    model = make(max_positions=8)
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(torch.ones(1, 9, dtype=torch.long))


def test_cpu_dropout_keeps_rate_scales_and_is_reproducible():
    x = torch.ones(200_000)
    torch.manual_seed(3)
    a = dropout(x, 0.3, True)
    torch.manual_seed(3)
    b = dropout(x, 0.3, True)
    c = dropout(x, 0.3, True)
    assert torch.equal(a, b) and not torch.equal(b, c)
    kept = (a > 0).float().mean().item()
    assert abs(kept - 0.7) < 0.01
    assert abs(a.mean().item() - 1.0) < 0.02  # inverted dropout keeps the expectation
    assert torch.equal(dropout(x, 0.3, False), x)
