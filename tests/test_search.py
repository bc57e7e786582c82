import pytest
import torch

from lucidmt.config import preset
from lucidmt.decode.search import (
    DecodeOptions,
    EnsembleScorer,
    ModelScorer,
    beam_search,
    greedy_search,
    sample,
)
from lucidmt.errors import ConfigurationError
from lucidmt.model import Seq2Seq


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = preset("tiny").model
    cfg.src_vocab_size = cfg.tgt_vocab_size = 40
    m = Seq2Seq(cfg).eval()
    with torch.no_grad():  # make eos likely enough that hypotheses end at different lengths
        m.decoder.embed.tokens.weight[3] *= 3
    return m


def sources(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, 9, (n,), generator=g)
    src = torch.zeros(n, int(lens.max()) + 1, dtype=torch.long)
    for i, n_i in enumerate(lens.tolist()):
        src[i, :n_i] = torch.randint(4, 40, (n_i,), generator=g)
        src[i, n_i] = 3
    return src


def test_beam_of_one_equals_greedy(model):
    src = sources()
    g = greedy_search(ModelScorer(model), src, DecodeOptions(beam_size=1), 512)
    b = beam_search(ModelScorer(model), src, DecodeOptions(beam_size=1), 512)
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]


def test_nbest_is_sorted_and_scores_are_consistent(model):
    opts = DecodeOptions(beam_size=5, n_best=5, length_penalty=0.6)
    for hyps in beam_search(ModelScorer(model), sources(), opts, 512):
        assert len(hyps) == 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            assert len(h.token_logprobs) == len(h.tokens) + 1
            assert abs(sum(h.token_logprobs) - h.logprob) < 1e-4
            assert abs(h.score - h.logprob / ((5 + len(h.tokens) + 1) / 6) ** 0.6) < 1e-4


def test_kv_cache_gives_the_same_beams_as_recomputing_the_prefix(model):
    src = sources()
    opts = DecodeOptions(beam_size=4, n_best=4)
    cached = beam_search(ModelScorer(model, use_cache=True), src, opts, 512)
    recomputed = beam_search(ModelScorer(model, use_cache=False), src, opts, 512)
    assert [[h.tokens for h in hs] for hs in cached] == [[h.tokens for h in hs] for hs in recomputed]


def test_batch_composition_does_not_change_a_translation(model):
    src = sources(8)
    opts = DecodeOptions(beam_size=4)
    together = beam_search(ModelScorer(model), src, opts, 512)
    for i in range(8):
        row = src[i : i + 1, : int((src[i] != 0).sum())]
        alone = beam_search(ModelScorer(model), row, opts, 512)
        assert alone[0][0].tokens == together[i][0].tokens


def test_max_length_is_respected(model):
    src = sources()
    opts = DecodeOptions(beam_size=3, max_len_a=0.0, max_len_b=2)
    for hyps in beam_search(ModelScorer(model), src, opts, 512):
        assert len(hyps[0].tokens) <= 1  # 2 positions: at most one token, then eos


def test_sampling_is_reproducible_with_a_seed(model):
    src = sources()
    opts = DecodeOptions(sampling=True, n_best=3, seed=11, top_k=10, top_p=0.9, temperature=1.2)
    a = sample(ModelScorer(model), src, opts, 512)
    b = sample(ModelScorer(model), src, opts, 512)
    assert [[h.tokens for h in hs] for hs in a] == [[h.tokens for h in hs] for hs in b]
    assert all(len(hs) == 3 for hs in a)


def test_top_k_one_sampling_is_greedy(model):
    src = sources()
    s = sample(ModelScorer(model), src, DecodeOptions(sampling=True, top_k=1, seed=0), 512)
    g = greedy_search(ModelScorer(model), src, DecodeOptions(beam_size=1), 512)
    assert [h[0].tokens for h in s] == [h[0].tokens for h in g]


@pytest.mark.parametrize("extreme", [dict(temperature=1e-30), dict(top_p=1e-30), dict(temperature=1e-30, top_p=1e-30)])
def test_extreme_sampling_settings_fall_back_to_greedy(model, extreme):
    # a vanishing temperature or nucleus leaves only the best token: no NaN probabilities, the greedy output
    src = sources()
    s = sample(ModelScorer(model), src, DecodeOptions(sampling=True, seed=0, **extreme), 512)
    g = greedy_search(ModelScorer(model), src, DecodeOptions(beam_size=1), 512)
    assert [h[0].tokens for h in s] == [h[0].tokens for h in g]


def test_ensemble_of_identical_models_equals_one_model(model):
    src = sources()
    opts = DecodeOptions(beam_size=3)
    one = beam_search(ModelScorer(model), src, opts, 512)
    two = beam_search(EnsembleScorer([ModelScorer(model), ModelScorer(model)]), src, opts, 512)
    assert [h[0].tokens for h in one] == [h[0].tokens for h in two]


def test_option_validation():
    with pytest.raises(ConfigurationError):
        DecodeOptions(beam_size=2, n_best=3).validate()
    with pytest.raises(ConfigurationError):
        DecodeOptions(temperature=0).validate()
    with pytest.raises(ConfigurationError, match="patience"):
        DecodeOptions(patience=0).validate()
    assert DecodeOptions(beam_size=5).signature().startswith("beam:5|lp:0.6")
    assert DecodeOptions(beam_size=5, patience=2).signature().startswith("beam:5|patience:2|lp:0.6")
