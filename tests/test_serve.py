"""The HTTP service through FastAPI's TestClient: every endpoint, every bound, every error, the batcher.

Capacity and batching are tested deterministically with a translator whose model calls wait on a gate: while the
first call is held, the test knows exactly what is queued.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from lucidmt.decode.translator import Translator  # noqa: E402
from lucidmt.serve import Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def translator(memorised) -> Translator:
    return Translator.load(memorised[0], device="cpu")


@pytest.fixture
def make_client():
    """make_client(translator, limits=..., api_key=...) -> a started TestClient; all are closed afterwards."""
    clients = []

    def make(tr, limits: Limits | None = None, api_key: str | None = None, **kw) -> TestClient:
        client = TestClient(create_app(tr, limits or Limits(), api_key=api_key), **kw)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client, translator) -> TestClient:
    return make_client(translator)


class Gated:
    """Wraps a Translator; each model call waits until `release()` so that requests pile up behind it."""

    def __init__(self, inner: Translator, fail: bool = False):
        self.inner, self.fail = inner, fail
        self.gate = threading.Event()
        self.started = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def translate_batch(self, texts, beam_size=4, **options):
        self.calls.append(list(texts))
        self.started.set()
        assert self.gate.wait(20), "test gate never released"
        if self.fail:
            raise RuntimeError("model exploded")
        return self.inner.translate_batch(texts, beam_size, **options)

    def release(self) -> None:
        self.gate.set()


def wait_until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def post_json(client: TestClient, path: str, raw: bytes | str, **headers):
    return client.post(path, content=raw, headers={"content-type": "application/json", **headers})


# -- endpoints -------------------------------------------------------------------------------------------------
def test_translate_returns_the_memorised_translations_in_order(client, memorised):
    _, src, tgt = memorised
    r = client.post("/v1/translate", json={"texts": src[:6][::-1], "beam_size": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["translations"] == tgt[:6][::-1]
    assert body["model"] == "best"
    assert body["elapsed_ms"] > 0 and body["decoding"].startswith("beam:4|")
    assert body["batch"]["texts"] == 6 and body["truncated"] == [] and body["nbest"] is None
    greedy = client.post("/v1/translate", json={"texts": src[:3], "beam_size": 1.0}).json()  # JSON's 1.0 is 1
    assert greedy["translations"] == tgt[:3] and greedy["decoding"].startswith("greedy|")


def test_empty_strings_give_empty_translations(client, memorised):
    _, src, tgt = memorised
    r = client.post("/v1/translate", json={"texts": ["", src[0], "   "]})
    assert r.status_code == 200 and r.json()["translations"] == ["", tgt[0], ""]
    only_empty = client.post("/v1/translate", json={"texts": ["", " "]}).json()
    assert only_empty["translations"] == ["", ""] and only_empty["batch"] is None  # the model is not called
    assert client.post("/v1/translate", json={"texts": []}).json()["translations"] == []
    assert client.post("/v1/explain", json={"text": ""}).json()["translation"] == ""


def test_nbest_returns_scored_hypotheses(client, memorised):
    _, src, tgt = memorised
    body = client.post("/v1/translate", json={"texts": src[:2], "beam_size": 4, "n_best": 3}).json()
    assert body["translations"] == tgt[:2]
    for nb, best in zip(body["nbest"], tgt[:2], strict=True):
        scores = [h["score"] for h in nb["hypotheses"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and nb["hypotheses"][0]["text"] == best


def test_explain_returns_words_confidence_and_a_word_level_heatmap(client, memorised):
    _, src, tgt = memorised
    r = client.post("/v1/explain", json={"text": src[0], "beam_size": 4})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["translation"] == tgt[0] and e["source"] == src[0]
    assert [w["text"] for w in e["source_words"]] == src[0].split() + ["</s>"]
    assert [w["text"] for w in e["target_words"]] == tgt[0].split() + ["</s>"]
    assert len(e["token_confidence"]) == len(e["target_tokens"])
    assert all(0 < w["confidence"] <= 1 for w in e["target_words"])
    assert min(w["confidence"] for w in e["target_words"]) > 0.5  # a memorised pair is translated confidently
    (heat,) = e["heatmaps"]
    assert heat["name"] == "cross-attention"
    assert len(heat["values"]) == len(e["target_words"])
    assert all(len(row) == len(e["source_words"]) for row in heat["values"])
    assert all(abs(sum(row) - 1) < 1e-3 for row in heat["values"])  # each target word's attention sums to 1
    assert len(e["attention"]) == len(e["target_tokens"]) and len(e["attention"][0]) == len(e["source_tokens"])
    assert e["attributions"] is None and e["methods"] == []


def test_explain_alignment_agrees_with_the_explain_module(client, translator, memorised):
    from lucidmt.explain.alignment import parse_pharaoh, translation_alignment

    _, src, _ = memorised
    e = client.post("/v1/explain", json={"text": src[3]}).json()
    expected = translation_alignment(translator.translate_batch([src[3]], 4, return_attention=True)[0])
    assert e["pharaoh"] == expected and e["pharaoh"]
    assert sorted(map(tuple, e["alignments"])) == sorted(parse_pharaoh(expected))
    assert len(e["alignments"]) == len(e["target_words"]) - 1  # every real target word, </s> left out


def test_explain_with_attributions(client, memorised):
    _, src, tgt = memorised
    r = client.post("/v1/explain", json={"text": src[0], "methods": ["integrated_gradients", "alti"]})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["translation"] == tgt[0] and e["methods"] == ["integrated_gradients", "alti"]
    names = [(h["name"], h["signed"]) for h in e["heatmaps"]]
    assert names == [("cross-attention", False), ("integrated gradients", True), ("ALTI+", False)]
    rows, cols = len(e["target_words"]), len(e["source_words"])
    assert all(len(h["values"]) == rows and all(len(v) == cols for v in h["values"]) for h in e["heatmaps"])
    ig = e["attributions"]["integrated_gradients"]
    assert len(ig["tokens"]) == len(e["target_tokens"]) and len(ig["delta"]) == len(e["target_tokens"])
    assert all(0 <= x <= 1 + 1e-6 for x in e["attributions"]["alti"]["source_share"])
    bad = client.post("/v1/explain", json={"text": src[0], "methods": ["lime"]})
    assert bad.status_code == 422 and bad.json()["message"].startswith("methods[0]:")


def test_attributions_are_bounded_by_sentence_length(make_client, translator, memorised):
    _, src, tgt = memorised
    c = make_client(translator, Limits(max_attribution_subwords=8))
    r = c.post("/v1/explain", json={"text": src[0], "methods": ["alti"]})
    assert r.status_code == 422 and "at most 8 subwords" in r.json()["message"], r.text
    assert c.post("/v1/explain", json={"text": src[0]}).json()["translation"] == tgt[0]  # attention only: fine


def test_attributions_need_the_native_model(make_client, translator, memorised):
    class NoModel(Gated):  # an external engine: it decodes, but there is no PyTorch model to differentiate
        model = None

    engine = NoModel(translator)
    engine.release()
    r = make_client(engine).post("/v1/explain", json={"text": memorised[1][0], "methods": ["alti"]})
    assert r.status_code == 422 and "native engine" in r.json()["message"]


def test_info_reports_languages_model_size_engine_and_limits(client, translator):
    info = client.get("/v1/info").json()
    assert (info["source_lang"], info["target_lang"]) == ("en", "de")
    assert info["parameters"] == sum(p.numel() for p in translator.model.parameters() if p.requires_grad)
    assert (
        info["engine"] == getattr(translator, "backend", "pytorch")
        and info["architecture"]["d_model"] == translator.config.model.d_model
    )
    assert info["limits"]["max_chars"] == Limits().max_chars and "queue_full" in info["stats"]


def test_health_openapi_and_docs(client):
    assert client.get("/health").json() == {"status": "ok", "worker": True, "queued_texts": 0}
    schema = client.get("/openapi.json").json()
    assert {"/v1/translate", "/v1/explain", "/v1/info", "/health"} <= set(schema["paths"])
    beam = schema["components"]["schemas"]["TranslateRequest"]["properties"]["beam_size"]
    assert beam["maximum"] == Limits().max_beam  # the bounds are visible to clients and fuzzers
    assert client.get("/docs").status_code == 200


def test_page_is_served_locally_with_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    static = Path(__file__).resolve().parents[1] / "src" / "lucidmt" / "serve" / "static"
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.text == (static / name).read_text(encoding="utf-8")
    for f in static.iterdir():
        text = f.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name
    html = page.text
    for control in ('for="source"', 'id="translate"', 'id="show-explain"', 'role="alert"'):
        assert control in html


# -- bounds and errors ---------------------------------------------------------------------------------------------
def test_each_limit_is_enforced_with_a_message_naming_the_field(make_client, translator):
    c = make_client(translator, Limits(max_chars=20, max_texts=3, max_beam=4, max_len_b=50, max_body_bytes=2000))
    cases = [
        ({"texts": ["ok", "x" * 21]}, "texts[1]"),
        ({"texts": ["a", "b", "c", "d"]}, "texts"),
        ({"texts": ["a"], "beam_size": 5}, "beam_size"),
        ({"texts": ["a"], "beam_size": 0}, "beam_size"),
        ({"texts": ["a"], "beam_size": 2, "n_best": 3}, "n_best"),
        ({"texts": ["a"], "max_len_b": 51}, "max_len_b"),
        ({"texts": ["a"], "patience": 5}, "patience"),
        ({"texts": ["a"], "top_p": 0}, "top_p"),
        ({"texts": ["a"], "temperature": -1}, "temperature"),
        ({"texts": ["a"], "sampling": True, "top_p": 2.2250738585e-313}, "top_p"),  # found by schemathesis
    ]
    for body, field in cases:
        r = c.post("/v1/translate", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"] == "invalid_request" and field in r.json()["message"], (body, r.json())
    r = c.post("/v1/explain", json={"text": "y" * 21})
    assert r.status_code == 422 and r.json()["message"].startswith("text:")
    assert c.post("/v1/translate", json={"texts": ["x" * 20] * 3}).status_code == 200  # at the limits: fine


def test_body_size_is_bounded_by_content_length_and_while_streaming(make_client, translator):
    c = make_client(translator, Limits(max_body_bytes=1000))
    big = json.dumps({"texts": ["a"] * 400})
    r = post_json(c, "/v1/translate", big)
    assert r.status_code == 413 and r.json()["error"] == "too_large" and "1000 bytes" in r.json()["message"]

    def chunks():  # no Content-Length: the limit is applied while the body is read
        for _ in range(4):
            yield big[:400].encode()

    r = c.post("/v1/translate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"texts": ["a"', "body: invalid JSON"),
        (b'["a", "b"]', "body: expected a JSON object"),
        (b'{"texts": "a sentence"}', "texts: Input should be a valid list"),
        (b'{"texts": [1, 2]}', "texts[0]: Input should be a valid string"),
        (b'{"texts": ["a"], "beam_size": "4"}', "beam_size: Input should be a valid integer"),
        (b'{"texts": ["a"], "beam_size": 2.5}', "beam_size: Input should be a valid integer"),
        (b'{"texts": ["a"], "beam_size": true}', "beam_size: Input should be a valid integer"),
        (b'{"texts": ["a"], "sampling": "yes"}', "sampling: Input should be a valid boolean"),
        (b'{"text": ["a"]}', "texts: field required"),
        (b'{"texts": ["a"], "beam": 4}', "beam: unknown field"),
        (b'{"texts": ["\\ud800"]}', "texts[0]"),
        (b'{"texts": ["\xff\xfe"]}', "body: not valid UTF-8 JSON"),
    ],
)
def test_malformed_requests_get_422_naming_the_field(client, raw, expected):
    r = post_json(client, "/v1/translate", raw)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_request" and expected in r.json()["message"], r.json()


def test_unknown_paths_and_methods(client):
    assert client.get("/v1/nothing").status_code == 404
    r = client.get("/v1/translate")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_a_full_queue_answers_503_with_retry_after(make_client, translator, memorised):
    _, src, tgt = memorised
    gated = Gated(translator)
    c = make_client(gated, Limits(max_queue=4, max_texts=4, max_wait_ms=0))
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(c.post, "/v1/translate", json={"texts": src[:2]})
        gated.started.wait(10)  # the worker holds the first request
        second = pool.submit(c.post, "/v1/translate", json={"texts": src[2:6]})
        wait_until(lambda: c.app.state.batcher.pending_texts == 4)  # the queue is now full
        r = c.post("/v1/translate", json={"texts": src[6:7]})
        assert r.status_code == 503 and r.json()["error"] == "queue_full"
        assert int(r.headers["retry-after"]) >= 1 and "capacity" in r.json()["message"]
        assert c.get("/health").status_code == 200  # the probe still answers while the queue is full
        gated.release()
        assert first.result().json()["translations"] == tgt[:2]
        assert second.result().json()["translations"] == tgt[2:6]
    assert c.post("/v1/translate", json={"texts": src[6:7]}).json()["translations"] == tgt[6:7]
    assert c.get("/v1/info").json()["stats"]["queue_full"] == 1


def test_a_request_not_answered_in_time_gets_503_and_leaves_the_queue(make_client, translator, memorised):
    _, src, tgt = memorised
    gated = Gated(translator)
    c = make_client(gated, Limits(timeout_s=0.5, max_wait_ms=0))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(c.post, "/v1/translate", json={"texts": src[:1]})
        gated.started.wait(10)
        queued = c.post("/v1/translate", json={"texts": src[1:3]})  # waits behind the held call, then times out
        assert queued.status_code == 503 and queued.json()["error"] == "timeout" and "retry-after" in queued.headers
        assert c.app.state.batcher.pending_texts == 0  # dropped from the queue, never decoded
        assert first.result().status_code == 503  # the held request timed out as well
    gated.release()
    wait_until(lambda: len(gated.calls) == 1 and not c.app.state.batcher._queue)
    ok = c.post("/v1/translate", json={"texts": src[3:4]})
    assert ok.status_code == 200 and ok.json()["translations"] == tgt[3:4]  # the worker lives on
    assert [len(call) for call in gated.calls] == [1, 1]  # the timed-out queued request never reached the model


def test_concurrent_requests_are_gathered_into_one_model_call(make_client, translator, memorised):
    _, src, tgt = memorised
    gated = Gated(translator)
    c = make_client(gated, Limits(max_wait_ms=5))
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(c.post, "/v1/translate", json={"texts": [src[0]]})
        gated.started.wait(10)
        rest = [pool.submit(c.post, "/v1/translate", json={"texts": [src[i]]}) for i in range(1, 8)]
        wait_until(lambda: c.app.state.batcher.pending_texts == 7)
        gated.release()
        answers = [first.result().json()] + [f.result().json() for f in rest]
    assert [a["translations"][0] for a in answers] == tgt[:8]  # each request gets its own translation back
    assert len(gated.calls) == 2 and sorted(gated.calls[1]) == sorted(src[1:8])
    assert [a["batch"]["requests"] for a in answers[1:]] == [7] * 7


def test_without_batching_each_request_is_its_own_model_call(make_client, translator, memorised):
    _, src, tgt = memorised
    gated = Gated(translator)
    c = make_client(gated, Limits(batching=False))
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(c.post, "/v1/translate", json={"texts": [src[0]]})
        gated.started.wait(10)
        rest = [pool.submit(c.post, "/v1/translate", json={"texts": [src[i]]}) for i in range(1, 4)]
        wait_until(lambda: c.app.state.batcher.pending_texts == 3)
        gated.release()
        assert [f.result().json()["translations"][0] for f in [first, *rest]] == tgt[:4]
    assert [len(call) for call in gated.calls] == [1, 1, 1, 1]


def test_requests_with_different_options_are_not_mixed(make_client, translator, memorised):
    _, src, tgt = memorised
    gated = Gated(translator)
    c = make_client(gated, Limits(max_wait_ms=5))
    bodies = [
        {"texts": [src[1]], "beam_size": 1},
        {"texts": [src[2]], "beam_size": 4},
        {"texts": [src[3]], "beam_size": 1},
        {"texts": [src[4]], "sampling": True, "seed": 1, "n_best": 1},
    ]
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(c.post, "/v1/translate", json={"texts": [src[0]]})
        gated.started.wait(10)
        futures = []
        for b in bodies:  # queued in this order
            futures.append(pool.submit(c.post, "/v1/translate", json=b))
            queued = len(futures)
            wait_until(lambda q=queued: c.app.state.batcher.pending_texts == q)
        gated.release()
        answers = [f.result().json() for f in [first, *futures]]
    assert [a["translations"][0] for a in answers[:4]] == tgt[:4]
    assert gated.calls[1:] == [[src[1], src[3]], [src[2]], [src[4]]]  # oldest first; greedy pair shares a call


def test_a_failing_model_call_answers_500_and_the_worker_lives_on(make_client, translator, memorised):
    _, src, tgt = memorised
    gated = Gated(translator, fail=True)
    gated.release()
    c = make_client(gated, raise_server_exceptions=False)
    r = c.post("/v1/translate", json={"texts": src[:1]})
    assert r.status_code == 500 and r.json()["error"] == "internal" and "model exploded" not in r.text
    gated.fail = False
    assert c.post("/v1/translate", json={"texts": src[:1]}).json()["translations"] == tgt[:1]
    assert c.get("/health").json()["worker"] is True


# -- API key ------------------------------------------------------------------------------------------------------
def test_api_key_is_required_everywhere_but_health_and_the_page(make_client, translator, memorised, monkeypatch):
    import lucidmt.serve.auth as auth

    compared = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    _, src, tgt = memorised
    c = make_client(translator, api_key="s3cret-key")
    protected = ["POST /v1/translate", "POST /v1/explain", "GET /v1/info", "GET /openapi.json", "GET /docs"]
    for method, path in (x.split() for x in protected):
        r = c.request(method, path, json={"texts": src[:1]} if method == "POST" else None)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
        assert r.headers["www-authenticate"] == "Bearer"
    for wrong in ({"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-ke"}, {"Authorization": "s3cret-key"}):
        assert c.post("/v1/translate", json={"texts": src[:1]}, headers=wrong).status_code == 401, wrong
    ok = c.post("/v1/translate", json={"texts": src[:1]}, headers={"Authorization": "Bearer s3cret-key"})
    assert ok.status_code == 200 and ok.json()["translations"] == tgt[:1]
    assert c.get("/v1/info", headers={"X-API-Key": "s3cret-key"}).status_code == 200
    schema = c.get("/openapi.json", headers={"X-API-Key": "s3cret-key"}).json()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKeyHeader"}
    assert schema["paths"]["/v1/translate"]["post"]["security"] and "security" not in schema["paths"]["/health"]["get"]
    assert c.get("/health").status_code == 200 and c.get("/").status_code == 200
    assert c.get("/static/app.js").status_code == 200
    assert compared  # the comparison went through hmac.compare_digest


def test_api_key_from_the_environment(monkeypatch):
    from lucidmt.serve.auth import ENV_VAR, resolve_api_key

    monkeypatch.setenv(ENV_VAR, "from-env")
    assert resolve_api_key(None) == "from-env"
    assert resolve_api_key("from-cli") == "from-cli"
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_api_key(None) is None


# -- CLI ------------------------------------------------------------------------------------------------------------
def test_cli_passes_engine_and_limits_through(monkeypatch, memorised):
    import uvicorn

    from lucidmt.cli import main

    seen = {}
    real_load = Translator.load

    def fake_load(path, device=None, **kw):
        seen["load"] = kw
        return real_load(path, device="cpu")

    monkeypatch.setattr(Translator, "load", staticmethod(fake_load))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, run=kw))
    run = str(memorised[0])
    assert main(["serve", run, "--port", "8123", "--max-chars", "50", "--no-batching"]) == 0
    assert seen["load"] == {}  # nothing the Translator may not know
    assert seen["run"]["host"] == "127.0.0.1" and seen["run"]["port"] == 8123
    assert seen["run"]["timeout_keep_alive"] > 60  # longer than any Retry-After the server gives
    limits = seen["app"].state.limits
    assert limits.max_chars == 50 and limits.batching is False
    assert main(["serve", run, "--engine", "ct2", "--quantize", "int8"]) == 0
    assert seen["load"] == {"engine": "ct2", "quantize": "int8"}
    assert main(["serve", run, "--no-prepack"]) == 0
    assert seen["load"] == {"prepack": False}


def test_cli_rejects_impossible_limits(memorised, capsys):
    from lucidmt.cli import main

    assert main(["serve", str(memorised[0]), "--max-texts", "10", "--max-queue", "5"]) == 1
    assert "max_texts (10) cannot exceed max_queue (5)" in capsys.readouterr().err


def test_serving_with_worker_processes(make_client, memorised):
    """--workers 2: two model worker threads feed two decoding processes; concurrent requests get the answers of
    in-process decoding, the parent loads no model for translation, and a dead worker process shows on /health."""
    run, src, tgt = memorised
    tr = Translator.load(run, device="cpu", workers=2, threads=1)
    try:
        c = make_client(tr, Limits(max_wait_ms=20))
        with ThreadPoolExecutor(8) as ex:
            answers = list(ex.map(lambda i: c.post("/v1/translate", json={"texts": [src[i % 6]]}), range(24)))
        assert [a.status_code for a in answers] == [200] * 24
        assert [a.json()["translations"][0] for a in answers] == [tgt[i % 6] for i in range(24)]
        assert c.app.state.batcher.model_threads == 2 and len(c.app.state.batcher._threads) == 2
        assert tr._model is None  # translation never needed the parent's own copy
        info = c.get("/v1/info").json()
        assert info["engine"] == "native/fp32" and info["parameters"] > 0 and tr._model is None
        for w in tr.pool.workers:
            w.proc.kill()
        failed = c.post("/v1/translate", json={"texts": [src[0]]})
        assert failed.status_code == 500 and "decoding worker" in failed.json()["message"]
        assert c.get("/health").status_code == 503
    finally:
        tr.close()


def test_cli_serve_workers(monkeypatch, memorised):
    import uvicorn

    from lucidmt.cli import main

    seen = {}
    real_load = Translator.load

    def fake_load(path, device=None, **kw):
        seen["load"] = kw
        seen["tr"] = real_load(path, device="cpu", **kw)
        return seen["tr"]

    monkeypatch.setattr(Translator, "load", staticmethod(fake_load))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    assert main(["serve", str(memorised[0]), "--workers", "2", "--threads", "1"]) == 0
    assert seen["load"] == {"workers": 2, "threads": 1}
    assert seen["tr"].pool is None  # the worker processes stop with the server
