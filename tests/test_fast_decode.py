"""Fast native decoding: the preallocated KV cache, int8/bf16 inference copies and ensembles."""

import numpy as np
import pytest
import torch

from lucidmt.config import preset
from lucidmt.decode.quantize import for_inference, precision
from lucidmt.decode.search import DecodeOptions, EnsembleScorer, ModelScorer, beam_search, greedy_search
from lucidmt.decode.translator import Translator
from lucidmt.errors import ConfigurationError
from lucidmt.model import Seq2Seq
from lucidmt.model.transformer import BufferPool, LayerCache


def random_model(seed=0, vocab=40, **model):
    torch.manual_seed(seed)
    cfg = preset("tiny").model
    cfg.src_vocab_size = cfg.tgt_vocab_size = vocab
    for k, v in model.items():
        setattr(cfg, k, v)
    m = Seq2Seq(cfg).eval()
    with torch.no_grad():  # make eos likely enough that hypotheses end at different lengths
        m.decoder.embed.tokens.weight[3] *= 3
    return m


def sources(n=6, seed=1, vocab=40, max_len=9):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, max_len, (n,), generator=g)
    src = torch.zeros(n, int(lens.max()) + 1, dtype=torch.long)
    for i, n_i in enumerate(lens.tolist()):
        src[i, :n_i] = torch.randint(4, vocab, (n_i,), generator=g)
        src[i, n_i] = 3
    return src


class ReferenceCache:
    """The simplest correct cache: concatenate, index_select."""

    def __init__(self):
        self.k = self.v = None

    def append(self, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], 2)
        self.v = v if self.v is None else torch.cat([self.v, v], 2)
        return self.k, self.v

    def index(self, idx):
        self.k, self.v = self.k.index_select(0, idx), self.v.index_select(0, idx)


def test_layer_cache_matches_concatenation_through_growth_reorders_and_selections():
    g = torch.Generator().manual_seed(0)
    pool = BufferPool()
    fast, ref, other = LayerCache(pool, capacity=3), ReferenceCache(), LayerCache(pool, capacity=3)
    B = 6
    for step in range(9):  # capacity 3 grows twice
        k, v = torch.randn(B, 2, 1, 4, generator=g), torch.randn(B, 2, 1, 4, generator=g)
        fk, fv = fast.append(k, v)
        other.append(k + 1, v + 1)  # a second layer sharing the pool
        rk, rv = ref.append(k, v)
        assert fk.shape == rk.shape == (B, 2, step + 1, 4)
        assert torch.equal(fk, rk) and torch.equal(fv, rv)
        if step % 3 == 1:  # beam reorder (a permutation with repeats)
            idx = torch.randint(0, B, (B,), generator=g)
        elif step == 5:  # a sentence leaves the batch
            B -= 2
            idx = torch.tensor([0, 2, 3, 5])
        elif step == 6:  # rows repeated (more rows than before)
            B *= 2
            idx = torch.arange(B // 2).repeat_interleave(2)
        else:
            continue
        fast.index(idx)
        other.index(idx)
        ref.index(idx)
        assert torch.equal(fast.k, ref.k) and torch.equal(fast.v, ref.v)
        assert torch.equal(other.k, ref.k + 1)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_beams_equal_recomputed_beams_past_the_initial_capacity(norm):
    m = random_model(3, norm=norm)
    src = sources(8, seed=4)
    opts = DecodeOptions(beam_size=4, n_best=2, max_len_a=0.0, max_len_b=45)  # longer than the 32-slot start
    cached = beam_search(ModelScorer(m, use_cache=True), src, opts, 512)
    recomputed = beam_search(ModelScorer(m, use_cache=False), src, opts, 512)
    assert [[h.tokens for h in hs] for hs in cached] == [[h.tokens for h in hs] for hs in recomputed]
    assert max(len(hs[0].tokens) for hs in cached) > 32
    for hs, rs in zip(cached, recomputed, strict=True):
        assert hs[0].score == pytest.approx(rs[0].score, abs=1e-4)


def test_step_projection_equals_the_training_projection():
    m = random_model(1, final_logits_bias=True)
    with torch.no_grad():
        m.logits_bias.normal_()
    h = torch.randn(5, m.cfg.d_model)
    assert torch.allclose(m.step_projection()(h), m.project(h), atol=1e-5)


def test_int8_copy_quantizes_every_linear_and_the_tied_output(memorised):
    run, src, tgt = memorised
    tr = Translator.load(run, device="cpu")
    q = for_inference(tr.model, "int8", copy_model=True)
    assert precision(q) == "int8" and precision(tr.model) == "fp32"
    assert isinstance(tr.model.encoder.layers[0].self_attn.qkv, torch.nn.Linear)  # the original is untouched
    kinds = {type(mod).__name__ for mod in q.modules()}
    assert "Linear" in kinds  # the dynamic quantized Linear class is also called Linear
    assert not any(type(mod) is torch.nn.Linear for mod in q.modules())
    assert q.step_projection() is q.decode_projection
    with torch.inference_mode():
        s = torch.tensor([tr.tokenizer.encode_src([src[0]])[0] + [3]])
        t = torch.tensor([[2] + tr.tokenizer.encode_tgt([tgt[0]])[0]])
        ref = torch.log_softmax(tr.model(s, t), -1)
        state = q.start(q.encode(s))
        lps = []
        for tok in t[0]:
            logits, _ = q.step(tok[None], state)
            lps.append(torch.log_softmax(logits, -1)[0])
    lps = torch.stack(lps)  # (T, V)
    assert torch.equal(lps.argmax(-1), ref[0].argmax(-1))
    diff = (lps.exp() - ref[0].exp()).abs().max()
    assert 0 < diff < 0.05  # quantized, so not identical, but close


def test_int8_translator_reproduces_the_memorised_pairs(memorised):
    run, src, tgt = memorised
    tr = Translator.load(run, device="cpu", quantize="int8")
    assert tr.backend == "native/int8"
    assert tr.translate(src, beam_size=4) == tgt
    assert tr.translate(src, beam_size=1) == tgt


def test_bf16_translator_runs_and_reports_its_precision(memorised):
    run, src, tgt = memorised
    tr = Translator.load(run, device="cpu", quantize="bf16")
    assert tr.backend == "native/bf16"
    out = tr.translate(src[:10], beam_size=2)
    assert sum(a == b for a, b in zip(out, tgt[:10], strict=True)) >= 8


def test_unknown_precision_is_rejected(memorised):
    with pytest.raises(ConfigurationError, match="quantize"):
        Translator.load(memorised[0], device="cpu", quantize="int4")


def test_ensemble_averages_probabilities_of_different_models():
    a, b = random_model(0), random_model(1)
    src = sources(4)
    ens = EnsembleScorer([ModelScorer(a), ModelScorer(b)])
    sa, sb, se = ModelScorer(a).start(src), ModelScorer(b).start(src), ens.start(src)
    tokens = torch.full((4,), 2)
    with torch.inference_mode():
        la, lb = ModelScorer(a).log_probs(tokens, sa), ModelScorer(b).log_probs(tokens, sb)
        le = ens.log_probs(tokens, se)
    assert torch.allclose(le.exp(), (la.exp() + lb.exp()) / 2, atol=1e-6)
    one = beam_search(ModelScorer(a), src, DecodeOptions(beam_size=3), 512)
    two = beam_search(ens, src, DecodeOptions(beam_size=3), 512)
    assert [h[0].tokens for h in two] != [h[0].tokens for h in one]  # the second model matters


def test_int8_ensemble_of_checkpoints(memorised):
    run, src, tgt = memorised
    tr = Translator.load(run, device="cpu", checkpoints=[run], quantize="int8")
    assert tr.translate(src[:8]) == tgt[:8]


def test_greedy_and_beam_one_agree_after_the_cache_rewrite():
    m = random_model(5, norm="post", activation="swish")
    src = sources(10, seed=2)
    g = greedy_search(ModelScorer(m), src, DecodeOptions(beam_size=1), 512)
    b = beam_search(ModelScorer(m), src, DecodeOptions(beam_size=1), 512)
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]


def _step_logits(m, state, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        tokens = torch.randint(4, m.cfg.tgt_vocab_size, (state.memory_mask.size(0) * state.group,), generator=g)
        logits, _ = m.step(tokens, state)
        out.append(logits)
    return torch.stack(out)


def test_beams_share_their_source_in_cross_attention_without_copies():
    """repeat(K) keeps one copy of each source for its K beams; the logits equal those of per-row copies, also
    after a selection that splits groups (sampled rows finishing one by one) gives rows their own copy back."""
    m = random_model(2, norm="post")
    src = sources(5)
    with torch.inference_mode():
        grouped = m.start(m.encode(src))
        grouped.repeat(4)
        assert grouped.group == 4 and grouped.memory_kv[0][0].size(0) == 5
        copied = m.start(m.encode(src))
        copied.select(torch.arange(5).repeat_interleave(4))  # the old way: one memory row per beam
        assert copied.group == 1 and copied.memory_kv[0][0].size(0) == 20
        assert torch.allclose(_step_logits(m, grouped), _step_logits(m, copied), atol=1e-5)
        keep = torch.tensor([0, 1, 2, 3, 12, 13, 14, 15])  # whole sentences: groups survive
        grouped.select(keep)
        copied.select(keep)
        assert grouped.group == 4 and grouped.memory_kv[0][0].size(0) == 2
        assert torch.allclose(_step_logits(m, grouped, seed=1), _step_logits(m, copied, seed=1), atol=1e-5)
        split = torch.tensor([0, 2, 5, 6, 7])  # rows of groups dropped one by one
        grouped.select(split)
        copied.select(split)
        assert grouped.group == 1 and grouped.memory_kv[0][0].size(0) == 5
        assert torch.allclose(_step_logits(m, grouped, seed=2), _step_logits(m, copied, seed=2), atol=1e-5)


def test_reordering_a_few_rows_equals_gathering_all():
    m = random_model(4)
    src = sources(4)
    with torch.inference_mode():
        a, b = m.start(m.encode(src)), m.start(m.encode(src))
        a.repeat(4)
        b.repeat(4)
        _step_logits(m, a, steps=5)
        _step_logits(m, b, steps=5)
        few = torch.arange(16)
        few[[3, 9]] = torch.tensor([1, 8])  # 2 of 16 rows change: copied in place
        many = torch.arange(16).flip(0)  # all change: gathered into the spare buffer
        for idx in (few, many):
            a.reorder(idx)
            for c in b.caches:
                c.index(idx)
            for ca, cb in zip(a.caches, b.caches, strict=True):
                assert torch.equal(ca.k, cb.k) and torch.equal(ca.v, cb.v)


@pytest.mark.skipif(not __import__("lucidmt.decode.quantize").decode.quantize.packing_available(), reason="no MKL")
def test_packed_fp32_decoding_is_bit_identical_and_int8_still_quantizes_everything():
    from lucidmt.decode.quantize import PackedLinear

    m = random_model(5, final_logits_bias=True)
    with torch.no_grad():
        m.logits_bias.normal_()
    packed = for_inference(m, None, copy_model=True)
    assert precision(packed) == "fp32" and isinstance(packed.decode_projection, PackedLinear)
    assert isinstance(packed.decoder.layers[0].ffn.fc1, PackedLinear)
    assert type(m.decoder.layers[0].ffn.fc1) is torch.nn.Linear  # copy_model leaves the original alone
    assert type(packed.decoder.layers[0].cross_attn.kv) is torch.nn.Linear  # run once per source: not packed
    src = sources(7, seed=6)
    opts = DecodeOptions(beam_size=3, n_best=2, max_len_a=0.0, max_len_b=12)
    a, b = beam_search(ModelScorer(m), src, opts, 512), beam_search(ModelScorer(packed), src, opts, 512)
    assert [[(h.tokens, h.score) for h in hs] for hs in a] == [[(h.tokens, h.score) for h in hs] for hs in b]
    # gradients take the ordinary path (integrated gradients run through the decoder)
    h = torch.randn(4, m.cfg.d_model, requires_grad=True)
    packed.decode_projection(h).sum().backward()
    assert h.grad is not None and torch.allclose(h.grad, m.output_weight().sum(0).expand(4, -1), atol=1e-5)
    q = for_inference(packed, "int8", copy_model=True)  # from a packed model: every Linear still becomes int8
    assert not any(type(mod) in (PackedLinear, torch.nn.Linear) for mod in q.modules())
    assert precision(q) == "int8"


def test_chunked_topk_equals_torch_topk():
    from lucidmt.decode.search import topk

    g = torch.Generator().manual_seed(0)
    for n in (5000, 32000, 32001):  # below the threshold, a multiple of the chunk, padded
        x = torch.randn(6, n, generator=g)
        x[0, : n - 3] = float("-inf")  # fewer finite values than k
        x[1] = float("-inf")
        v, i = topk(x, 8)
        rv, ri = x.topk(8, dim=1)
        assert torch.equal(v, rv)
        finite = v > float("-inf")  # a -inf value may come with any valid index, as with torch.topk
        assert bool((i < n).all()) and torch.equal(x.gather(1, i)[finite], v[finite])
        assert torch.equal(i[2:], ri[2:])  # distinct values: the same indices


def test_translate_cli_with_and_without_packed_weights(memorised, tmp_path, capsys):
    from lucidmt.cli import main

    run, src, tgt = memorised
    (tmp_path / "in.txt").write_text("\n".join(src[:5]) + "\n")
    outs = []
    for extra in ([], ["--no-prepack"]):
        assert main(["translate", str(run), "-i", str(tmp_path / "in.txt"), "--device", "cpu", *extra]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].splitlines() == tgt[:5]
    plain = Translator.load(run, device="cpu", prepack=False).model
    assert type(plain.decoder.layers[0].ffn.fc1) is torch.nn.Linear


def test_worker_processes_give_the_outputs_of_one_process(memorised, tmp_path, capsys):
    """workers=2: batches decoded in two child processes come back in input order with the same hypotheses,
    scores and attention as in-process decoding; the CLI's --workers gives the same lines."""
    from lucidmt.cli import main

    run, src, tgt = memorised
    texts = src[::-1] + [""] + src[:4]
    one = Translator.load(run, device="cpu", max_batch_size=4)
    kw = dict(beam_size=3, n_best=2, return_attention=True)
    with Translator.load(run, device="cpu", max_batch_size=4, workers=2, threads=1) as tr:
        assert len(tr.pool.workers) == 2
        many = tr.translate_batch(texts, **kw)
        again = tr.translate(src[:3])  # the pool serves several calls
    assert tr.pool is None  # closed on leaving the `with`
    ref = one.translate_batch(texts, **kw)
    assert [t.best.text for t in many] == [t.best.text for t in ref] == tgt[::-1] + [""] + tgt[:4]
    assert again == tgt[:3]
    for a, b in zip(many, ref, strict=True):
        assert [h.token_ids for h in a.hypotheses] == [h.token_ids for h in b.hypotheses]
        assert [h.score for h in a.hypotheses] == pytest.approx([h.score for h in b.hypotheses], abs=1e-4)
        assert (a.best.attention is None) == (b.best.attention is None) == (not b.best.token_ids)
        if b.best.attention is not None:
            assert np.allclose(a.best.attention, b.best.attention, atol=1e-4)
    (tmp_path / "in.txt").write_text("\n".join(src[:6]) + "\n")
    assert main(["translate", str(run), "-i", str(tmp_path / "in.txt"), "--device", "cpu", "--workers", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == tgt[:6]


def test_workers_errors_are_clear(memorised, tmp_path):
    from lucidmt.decode.workers import WorkerError, WorkerPool

    run, _, _ = memorised
    with pytest.raises(ConfigurationError, match="workers"):
        Translator.load(run, device="cpu", workers=0)
    with pytest.raises(WorkerError, match="could not load the model"):  # the child's traceback is in the message
        WorkerPool({"path": str(tmp_path / "no-such-run"), "device": "cpu"}, 1, 1)
    tr = Translator.load(run, device="cpu", workers=2, threads=1, max_batch_size=2)
    for w in tr.pool.workers:  # workers die: the call fails instead of waiting for their batches forever
        w.proc.kill()
    with pytest.raises(WorkerError, match="exited"):
        tr.translate(["a b c"] * 8)
    with pytest.raises(WorkerError, match="closed"):
        tr.translate(["a b c"] * 8)
    tr.close()


def test_worker_pool_serves_concurrent_calls_and_survives_a_failed_batch(memorised):
    """Two threads share one pool, each gets its own answers; a batch that raises in a worker fails only its call;
    the parent process loads its model copy only when `score` needs it."""
    from concurrent.futures import ThreadPoolExecutor

    from lucidmt.decode.workers import WorkerError

    run, src, tgt = memorised
    with Translator.load(run, device="cpu", workers=2, threads=1, max_batch_size=2) as tr:
        assert tr._model is None and tr.backend == "native/fp32"
        with ThreadPoolExecutor(2) as ex:
            outs = list(ex.map(lambda k: tr.translate(src[k : k + 5]), range(6)))
        assert outs == [tgt[k : k + 5] for k in range(6)]
        bad = DecodeOptions(beam_size=2)
        with pytest.raises(WorkerError, match="failed"):  # a source id past the vocabulary: an IndexError there
            list(tr.pool.map([([[10**6, 2]], bad, False)]))
        assert tr.pool.alive and tr.translate(src[:2]) == tgt[:2]
        assert tr._model is None
        lp = tr.score(src[:1], tgt[:1])[0]
        assert tr._model is not None and len(lp) == len(tr.tokenizer.encode_tgt(tgt[:1])[0]) + 1


def test_int8_layers_run_the_faster_engine_for_their_rows_and_fuse_the_relu(monkeypatch):
    from lucidmt.decode.quantize import ENGINE_ENV, Int8Linear, int8_engines

    m = random_model(8, activation="relu")
    before = torch.backends.quantized.engine
    q = for_inference(m, "int8", copy_model=True)
    assert torch.backends.quantized.engine == before  # packing for oneDNN leaves the process setting alone
    ffn = q.decoder.layers[0].ffn
    assert isinstance(ffn.act, torch.nn.Identity)  # the ReLU runs inside the int8 fc1 kernel
    x = torch.randn(5, m.cfg.d_model)
    with torch.inference_mode():
        h = ffn.fc1(x)
        assert (h >= 0).all() and (h == 0).any()
        ref = torch.relu(m.decoder.layers[0].ffn.fc1(x))
        assert (h - ref).abs().max() < 0.05 * ref.abs().max()
    engines = int8_engines()
    assert q.int8_engines == engines
    if len(engines) == 2:  # torch's default kernels and oneDNN's: every int8 layer holds both
        fc2 = ffn.fc2
        assert isinstance(fc2, Int8Linear) and isinstance(q.decode_projection, Int8Linear)
        packs, kernel = [], fc2.op
        fc2.op = lambda x, packed, reduce_range: packs.append(packed) or kernel(x, packed, reduce_range)
        few, many = torch.randn(3, fc2.few.in_features), torch.randn(2, 40, fc2.few.in_features)  # 3 and 80 rows
        with torch.inference_mode():
            out = fc2(few), fc2(many)
            expected = [layer._packed_params._packed_params for layer in (fc2.few, fc2.many)]
            assert packs[0] is expected[0] and packs[1] is expected[1]
            assert torch.equal(out[0], fc2.few(few)) and torch.equal(out[1], fc2.many(many))
            a, b = fc2.few(many), fc2.many(many)  # the same int8 weights, two kernels
        assert (a - b).abs().max() < 0.02 * a.abs().max()
    monkeypatch.setenv(ENGINE_ENV, before)  # one named engine: plain dynamic int8 layers
    one = for_inference(m, "int8", copy_model=True)
    assert one.int8_engines == (before,) and not any(isinstance(x, Int8Linear) for x in one.modules())
    monkeypatch.setenv(ENGINE_ENV, "abacus")
    with pytest.raises(ConfigurationError, match=ENGINE_ENV):
        for_inference(m, "int8", copy_model=True)
