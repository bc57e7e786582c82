import logging

import pytest

from lucidmt.decode.translator import Translator


@pytest.fixture(scope="module")
def translator(memorised):
    run, _, _ = memorised
    return Translator.load(run, device="cpu")


def test_memorised_pairs_are_reproduced_by_greedy_and_beam(memorised, translator):
    _, src, tgt = memorised
    assert translator.translate(src, beam_size=1) == tgt
    assert translator.translate(src, beam_size=4) == tgt


def test_order_is_kept_and_batches_do_not_matter(memorised, translator):
    _, src, tgt = memorised
    mixed = src[::-1] + src[:5]
    small_batches = Translator.load(memorised[0], device="cpu", max_batch_size=3)
    assert translator.translate(mixed) == tgt[::-1] + tgt[:5]
    assert small_batches.translate(mixed) == tgt[::-1] + tgt[:5]


def test_empty_lines_give_empty_outputs(memorised, translator):
    _, src, tgt = memorised
    assert translator.translate(["", src[0], "   "]) == ["", tgt[0], ""]


def test_translate_batch_returns_nbest_scores_logprobs_and_attention(memorised, translator):
    _, src, _ = memorised
    out = translator.translate_batch(src[:2], beam_size=4, n_best=3, return_attention=True)
    assert len(out) == 2
    for tr in out:
        assert len(tr.hypotheses) == 3
        assert [h.score for h in tr.hypotheses] == sorted((h.score for h in tr.hypotheses), reverse=True)
        best = tr.best
        assert best.tokens[-1] == "</s>" and len(best.token_logprobs) == len(best.tokens)
        assert len(best.attention) == len(best.tokens)
        assert all(len(row) == len(tr.source_tokens) for row in best.attention)
        assert all(abs(sum(row) - 1) < 1e-4 for row in best.attention)


def test_score_matches_search_logprobs(memorised, translator):
    _, src, _ = memorised
    hyp = translator.translate_batch(src[:1], beam_size=1)[0].best
    forced = translator.score(src[:1], [hyp.text])[0]
    assert forced == pytest.approx(hyp.token_logprobs, abs=1e-4)


def test_overlong_input_is_truncated_with_a_warning(memorised, translator, caplog):
    _, src, _ = memorised
    with caplog.at_level(logging.WARNING, logger="lucidmt"):
        out = translator.translate_batch([" ".join([src[0]] * 200)], beam_size=2)
    assert out[0].truncated and "truncated" in caplog.text


def test_ensemble_of_the_same_checkpoint(memorised):
    run, src, tgt = memorised
    ens = Translator.load(run, device="cpu", checkpoints=[run])
    assert ens.translate(src[:5]) == tgt[:5]


def test_string_instead_of_list_is_rejected(translator):
    with pytest.raises(TypeError):
        translator.translate_batch("a sentence")
