"""The FastAPI application: endpoints, request schemas built from `Limits`, error mapping, the page.

    POST /v1/translate   {"texts": [...], "beam_size": 4, ...} -> {"translations": [...], "model", "elapsed_ms", ...}
    POST /v1/explain     {"text": "...", "beam_size": 4}       -> words, confidence, cross-attention heatmap
    GET  /v1/info        languages, parameters, engine, limits, batching statistics
    GET  /health         liveness of the model worker (never needs the API key)
    GET  /               the web page (static files under /static)

Status codes: 401 missing or wrong API key; 413 body over `max_body_bytes`; 422 malformed JSON, a wrong type or a value
out of bounds (the message names the field, e.g. `texts[3]`); 503 with Retry-After when the queue is full or a
request was not answered within `timeout_s` (the `error` field says which); 500 only for a bug.
"""

import contextlib
import logging
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException

from .. import __version__
from ..decode.search import DecodeOptions
from ..errors import ConfigurationError, LucidError
from .auth import is_public, key_matches, presented_key
from .batching import Batcher, BatchResult, Overloaded
from .limits import Limits
from .views import explain_from_explanation, explain_from_translation, nbest_json

log = logging.getLogger("lucidmt")
STATIC = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    # everything the page uses comes from this server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}


# -- response schemas (fixed) ---------------------------------------------------------------------------------
class ErrorResponse(BaseModel):
    error: str = Field(description="unauthorized | too_large | invalid_request | queue_full | timeout | ...")
    message: str


class BatchInfo(BaseModel):
    requests: int = Field(description="requests that shared this model call")
    texts: int = Field(description="texts in this model call")
    queue_ms: float
    model_ms: float


class Scored(BaseModel):
    text: str
    score: float


class NBest(BaseModel):
    hypotheses: list[Scored]


class TranslateResponse(BaseModel):
    translations: list[str]
    model: str
    elapsed_ms: float = Field(description="from the request's arrival to the answer")
    decoding: str = Field(description="signature of the decoding settings")
    truncated: list[int] = Field(description="indices of texts cut to the model's maximum length")
    batch: BatchInfo | None = Field(description="how the request was batched; null when nothing needed the model")
    nbest: list[NBest] | None = Field(None, description="the n-best lists, when n_best > 1")


class Word(BaseModel):
    text: str
    pieces: list[int] = Field(description="indices into source_tokens / target_tokens")
    confidence: float | None = Field(None, description="target words: probability of the word, exp(sum logprob)")


class Heatmap(BaseModel):
    name: str
    note: str
    values: list[list[float]] = Field(description="target words (rows) x source words (columns)")
    signed: bool = Field(description="values may be negative (attributions); otherwise in [0, 1]")


class ExplainResponse(BaseModel):
    model_config = ConfigDict(extra="allow")  # richer analyses add fields

    source: str
    translation: str
    score: float
    truncated: bool
    source_tokens: list[str]
    target_tokens: list[str]
    token_confidence: list[float]
    attention: list[list[float]] | None
    source_words: list[Word]
    target_words: list[Word]
    heatmaps: list[Heatmap]
    alignments: list[list[int]] | None = Field(description="Pharaoh pairs [source word, target word], </s> left out")
    pharaoh: str | None
    attributions: dict[str, Any] | None = Field(description="raw attribution data, when `methods` asked for it")
    methods: list[str]
    model: str
    elapsed_ms: float
    decoding: str


class Health(BaseModel):
    status: str
    worker: bool
    queued_texts: int


ERRORS = {
    401: {"model": ErrorResponse, "description": "API key missing or wrong (only when the server has one)"},
    413: {"model": ErrorResponse, "description": "request body larger than max_body_bytes"},
    422: {"model": ErrorResponse, "description": "malformed JSON, wrong type or value out of bounds"},
    503: {"model": ErrorResponse, "description": "queue full or request timed out; see Retry-After"},
}


# -- request schemas (bounded by Limits) -----------------------------------------------------------------------
def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate (not valid Unicode)") from None
    return text


def _integral(value: Any) -> Any:
    """JSON has one number type: 4.0 is the integer 4 (as JSON Schema says); 4.5, "4" and true stay errors."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]


Method = Literal["integrated_gradients", "alti"]


def _request_models(limits: Limits) -> tuple[type[BaseModel], type[BaseModel]]:
    Text = Annotated[str, StringConstraints(max_length=limits.max_chars), AfterValidator(_valid_unicode)]
    strict = ConfigDict(strict=True, extra="forbid")

    class SearchOptions(BaseModel):
        model_config = strict
        beam_size: Int = Field(4, ge=1, le=limits.max_beam, description="1: greedy")
        length_penalty: float = Field(0.6, ge=0, le=10, description="GNMT alpha")
        max_len_a: float = Field(1.5, ge=0, le=limits.max_len_a, description="output length <= a * source + b")
        max_len_b: Int = Field(10, ge=1, le=limits.max_len_b)
        patience: Int = Field(1, ge=1, le=4, description="ct2 engine: 2 agrees with the native search more often")

    class TranslateRequest(SearchOptions):
        texts: list[Text] = Field(max_length=limits.max_texts, description="raw sentences; empty ones stay empty")
        n_best: Int = Field(1, ge=1, le=limits.max_beam, description="hypotheses per text (<= beam_size)")
        sampling: bool = False
        # API bounds; the search itself stays finite below them (the best token survives any top_p/temperature)
        temperature: float = Field(1.0, ge=0.01, le=100)
        top_k: Int = Field(0, ge=0, le=1_000_000)
        top_p: float = Field(1.0, ge=0.001, le=1)
        seed: Int | None = Field(None, ge=0, le=2**53 - 1, description="sampling: makes it reproducible")

    class ExplainRequest(SearchOptions):
        text: Text = Field(description="one sentence")
        methods: list[Method] = Field(
            [],
            max_length=2,
            description="attributions to compute besides attention: integrated_gradients, alti (slower: one "
            "sentence at a time, tens of forward and backward passes)",
        )

    return TranslateRequest, ExplainRequest


# -- error helpers --------------------------------------------------------------------------------------------
def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


def _field_name(loc: tuple | list) -> str:
    """("body", "texts", 3) -> "texts[3]"; the body itself -> "body"."""
    parts = [p for p in loc if p != "body"]
    name = ""
    for p in parts:
        name += f"[{p}]" if isinstance(p, int) else (f".{p}" if name else str(p))
    return name or "body"


def _validation_message(errors: list[dict]) -> str:
    out = []
    for e in errors[:5]:
        if e.get("type") == "json_invalid":
            out.append(f"body: invalid JSON ({e.get('ctx', {}).get('error', 'decode error')})")
        elif e.get("type") == "missing":
            out.append(f"{_field_name(e['loc'])}: field required")
        elif tuple(e.get("loc", ())) == ("body",) and e.get("type") in ("model_attributes_type", "dict_type"):
            out.append("body: expected a JSON object (with Content-Type: application/json)")
        elif e.get("type") == "extra_forbidden":
            out.append(f"{_field_name(e['loc'])}: unknown field")
        else:
            msg = e.get("msg", "invalid").removeprefix("Value error, ")
            out.append(f"{_field_name(e['loc'])}: {msg}")
    if len(errors) > 5:
        out.append(f"and {len(errors) - 5} more")
    return "; ".join(out)


class _Guard:
    """ASGI middleware: the API key and the body-size bound, checked before the body is read."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope.setdefault("state", {})["t0"] = time.monotonic()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        needs_key = self.api_key is not None and not is_public(scope["path"])
        if needs_key and not key_matches(self.api_key, presented_key(headers)):
            response = _error(
                401,
                "unauthorized",
                "this server needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                {"WWW-Authenticate": "Bearer"},
            )
            return await response(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _error(413, "too_large", self._too_large())(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counting_receive, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body} bytes"


# -- the app ------------------------------------------------------------------------------------------------------
def create_app(
    translator: Any,
    limits: Limits | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
) -> FastAPI:
    """An ASGI app serving `translator` (a lucidmt `Translator`) within `limits`; `api_key` protects all but
    /health and the page. The model worker thread starts with the app's lifespan (or on the first request)."""
    limits = limits or Limits()
    limits.validate()
    batcher = Batcher(translator, limits)
    name = model_name or Path(getattr(translator, "source", "") or "model").name
    TranslateRequest, ExplainRequest = _request_models(limits)
    cfg = getattr(translator, "config", None)
    langs = (cfg.data.src_lang, cfg.data.tgt_lang) if cfg is not None else ("", "")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(
        title="lucidmt translation service",
        version=__version__,
        description=__doc__.split("\n\n")[0],
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.batcher = batcher
    app.state.limits = limits
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    # -- errors ---------------------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError):
        return _error(422, "invalid_request", _validation_message(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException):
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. invalid UTF-8): malformed JSON
            return _error(422, "invalid_request", f"body: not valid UTF-8 JSON ({exc.detail})")
        kinds = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return _error(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail), exc.headers)

    @app.exception_handler(Overloaded)
    async def on_overloaded(request: Request, exc: Overloaded):
        return _error(503, exc.reason, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(LucidError)
    async def on_lucid_error(request: Request, exc: LucidError):
        if exc.users_to_fix:
            return _error(422, "invalid_request", str(exc))
        # a decoding worker failed (WorkerError, the one such error): not the client's doing; the batcher logged it
        return _error(500, "internal", "a decoding worker failed (details are in the server log)")

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal", "internal server error (details are in the server log)")

    @app.exception_handler(NotImplementedError)
    async def on_unsupported(request: Request, exc: NotImplementedError):
        return _error(501, "not_supported", str(exc) or "not supported by this engine")

    # -- helpers ----------------------------------------------------------------------------------------------
    def elapsed_ms(request: Request) -> float:
        return (time.monotonic() - request.state.t0) * 1000

    def decode_options(req: BaseModel, exclude: set[str]) -> tuple[dict[str, Any], str]:
        opts = req.model_dump(exclude=exclude)
        d = DecodeOptions(**opts)
        d.validate()  # e.g. n_best > beam_size: a ConfigurationError naming the field -> 422
        return opts, d.signature()

    def batch_info(r: BatchResult) -> dict[str, Any]:
        return dict(requests=r.batch_requests, texts=r.batch_texts, queue_ms=r.queue_ms, model_ms=r.model_ms)

    # -- endpoints ------------------------------------------------------------------------------------------
    @app.post("/v1/translate", response_model=TranslateResponse, responses=ERRORS, tags=["translation"])
    async def translate(req: TranslateRequest, request: Request):  # type: ignore[valid-type]
        """Translate a list of raw sentences; concurrent requests share model calls (dynamic batching)."""
        opts, signature = decode_options(req, {"texts"})
        texts: list[str] = req.texts
        if not any(t.strip() for t in texts):  # nothing for the model to do
            empty = ["" for _ in texts]
            return dict(
                translations=empty,
                model=name,
                elapsed_ms=elapsed_ms(request),
                decoding=signature,
                truncated=[],
                batch=None,
            )
        result = await batcher.submit(texts, opts)
        out = result.translations
        body: dict[str, Any] = dict(
            translations=[t.best.text if t.hypotheses else "" for t in out],
            model=name,
            elapsed_ms=elapsed_ms(request),
            decoding=signature,
            truncated=[i for i, t in enumerate(out) if t.truncated],
            batch=batch_info(result),
        )
        if req.n_best > 1:
            body["nbest"] = [nbest_json(t, req.n_best) for t in out]
        return body

    unsupported = {501: {"model": ErrorResponse, "description": "the engine cannot return attention"}}

    @app.post("/v1/explain", response_model=ExplainResponse, responses={**ERRORS, **unsupported}, tags=["translation"])
    async def explain(req: ExplainRequest, request: Request):  # type: ignore[valid-type]
        """Translate one sentence: its words, per-word confidence, word-level cross-attention and alignment, and
        on request attributions (integrated gradients, ALTI+) from `lucidmt.explain`."""
        opts, signature = decode_options(req, {"text", "methods"})
        methods = list(dict.fromkeys(req.methods))
        if methods and req.text.strip():
            if getattr(translator, "model", None) is None or not hasattr(translator, "explain"):
                raise ConfigurationError("attributions need the native engine (this server decodes with another)")
            # translate first (batched with others), then attribute that translation: the cost of attributions
            # grows with both lengths, so they are bounded before the worker is committed to them
            first = (await batcher.submit([req.text], opts, mode="translate")).translations[0]
            longest = max(len(first.source_tokens), len(first.best.tokens))
            if longest > limits.max_attribution_subwords:
                raise ConfigurationError(
                    f"methods: attributions are computed for sentences of at most {limits.max_attribution_subwords} "
                    f"subwords per side; this one has {longest} (ask without methods for attention only)"
                )
            job = {**opts, "methods": methods, "target": first.best.text}
            body = explain_from_explanation((await batcher.submit([req.text], job, mode="analyse")).translations[0])
        else:
            result = await batcher.submit([req.text], opts, mode="attention")
            body = explain_from_translation(result.translations[0], *langs)
        return {**body, "methods": methods, "model": name, "elapsed_ms": elapsed_ms(request), "decoding": signature}

    @app.get("/v1/info", tags=["service"])
    async def info() -> dict[str, Any]:
        """Languages, model size, engine, limits and batching statistics."""
        return _info(translator, name, limits, batcher)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}}, tags=["service"])
    async def health():
        """200 while the model worker runs; 503 when it is gone (restart the server)."""
        body = {"status": "ok", "worker": batcher.alive, "queued_texts": batcher.pending_texts}
        if not batcher.alive:
            return JSONResponse({**body, "status": "unavailable"}, status_code=503, headers={"Retry-After": "5"})
        return body

    # -- the page -------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if api_key is not None:
        _declare_api_key(app)
    return app


def _declare_api_key(app: FastAPI) -> None:
    """State the key in the OpenAPI document, so that clients, /docs and fuzzers know which operations need it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            for path, operations in schema["paths"].items():
                if not is_public(path):
                    for op in operations.values():
                        op["security"] = [{"bearer": []}, {"apiKeyHeader": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def engine_name(translator: Any) -> str:
    """What decodes: the Translator's `backend` (e.g. native/fp32, ct2/int8) where it has one, else pytorch."""
    backend = getattr(translator, "backend", None)
    return str(backend) if isinstance(backend, str) and backend else "pytorch"


def _info(translator: Any, name: str, limits: Limits, batcher: Batcher) -> dict[str, Any]:
    cfg = getattr(translator, "config", None)
    parameters = getattr(translator, "parameter_count", None)  # a Translator counts without loading its model
    if parameters is None:
        model = getattr(translator, "model", None)
        if model is not None and hasattr(model, "parameters"):
            from ..model import count_parameters

            parameters = count_parameters(model)
    architecture = None
    if cfg is not None:
        m = cfg.model
        architecture = dict(
            d_model=m.d_model,
            encoder_layers=m.encoder_layers,
            decoder_layers=m.decoder_layers,
            heads=m.n_heads,
            ffn_dim=m.ffn_dim,
        )
    return {
        "model": name,
        "source_lang": cfg.data.src_lang if cfg is not None else None,
        "target_lang": cfg.data.tgt_lang if cfg is not None else None,
        "parameters": parameters,
        "architecture": architecture,
        "engine": engine_name(translator),
        "device": str(getattr(translator, "device", "cpu")),
        "max_source_subwords": getattr(translator, "max_positions", 0) - 1 or None,
        "version": __version__,
        "limits": limits.to_dict(),
        "stats": dict(batcher.stats, queued_texts=batcher.pending_texts),
    }
