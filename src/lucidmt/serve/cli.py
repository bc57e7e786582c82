"""`lucidmt serve RUN`: the HTTP service and web page. FastAPI and uvicorn are imported only when it runs."""

from __future__ import annotations

import ipaddress
import sys

from .limits import Limits

_D = Limits()


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP (JSON API + web page)",
        description="Serve RUN (a run folder or checkpoint) with FastAPI/uvicorn: POST /v1/translate, /v1/explain, "
        "GET /v1/info, GET /health, OpenAPI at /openapi.json, a web page at /. Concurrent requests are batched.",
    )
    p.add_argument("run", help="run folder (its best checkpoint) or checkpoint folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        help="require this key (Bearer or X-API-Key) on all but /health and the page; default: $LUCIDMT_API_KEY",
    )
    p.add_argument("--model-name", help="name reported to clients (default: the checkpoint folder's name)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--engine", help="decoding engine, passed to Translator.load (e.g. ct2)")
    p.add_argument("--quantize", help="weight quantisation, passed to Translator.load (e.g. int8)")
    p.add_argument("--no-prepack", action="store_true", help="CPU fp32: no packed decoder weights (less memory)")
    p.add_argument("--threads", type=int, help="PyTorch intra-op threads (default: PyTorch's choice; with --workers: "
                   "per worker, default PyTorch's threads / N)")  # fmt: skip
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="CPU: decode N batches at a time (native engine: N processes, N copies of the model; ct2: N "
        "inter_threads)",
    )
    g = p.add_argument_group("bounds")
    g.add_argument("--max-chars", type=int, default=_D.max_chars, help="characters per text")
    g.add_argument("--max-texts", type=int, default=_D.max_texts, help="texts per request")
    g.add_argument("--max-body-bytes", type=int, default=_D.max_body_bytes, help="request body size")
    g.add_argument("--max-beam", type=int, default=_D.max_beam, help="largest beam_size and n_best")
    g.add_argument("--max-queue", type=int, default=_D.max_queue, help="texts waiting for the model; more -> 503")
    g.add_argument("--timeout", type=float, default=_D.timeout_s, help="seconds per request; past it -> 503")
    g.add_argument(
        "--max-connections", type=int, default=1024, help="open connections; more -> uvicorn's own 503 (a backstop)"
    )
    b = p.add_argument_group("dynamic batching")
    b.add_argument("--batch-tokens", type=int, default=_D.batch_tokens, help="source subwords per model call")
    b.add_argument("--max-wait-ms", type=float, default=_D.max_wait_ms, help="how long a batch waits for company")
    b.add_argument("--no-batching", action="store_true", help="one request per model call (for comparison)")
    p.add_argument(
        "--keep-alive",
        type=float,
        default=65.0,
        help="seconds an idle connection stays open; above the longest Retry-After (60), so that a client that "
        "waits as told keeps its connection",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(a) -> int:
    from ..decode.translator import Translator
    from ..errors import ConfigurationError

    limits = Limits(
        max_chars=a.max_chars,
        max_texts=a.max_texts,
        max_body_bytes=a.max_body_bytes,
        max_beam=a.max_beam,
        max_queue=a.max_queue,
        timeout_s=a.timeout,
        batching=not a.no_batching,
        batch_tokens=a.batch_tokens,
        max_wait_ms=a.max_wait_ms,
    )
    limits.validate()
    if a.threads and a.workers == 1:
        import torch

        torch.set_num_threads(a.threads)
    # engine/quantize only when given, so this works with Translators that predate them
    extra = {k: v for k, v in (("engine", a.engine), ("quantize", a.quantize)) if v is not None}
    if a.no_prepack:
        extra["prepack"] = False
    if a.workers != 1:
        extra.update(workers=a.workers, threads=a.threads or 0)
    try:
        translator = Translator.load(a.run, device=a.device, **extra)
    except TypeError as exc:
        if extra and any(k in str(exc) for k in extra):
            raise ConfigurationError(f"this lucidmt build does not support --{'/--'.join(extra)} ({exc})") from None
        raise
    try:
        return _serve(a, translator, limits)
    finally:
        translator.close()  # stops the decoding worker processes, if any


def _serve(a, translator, limits: Limits) -> int:
    import uvicorn

    from .app import create_app
    from .auth import resolve_api_key

    api_key = resolve_api_key(a.api_key)
    app = create_app(translator, limits, api_key=api_key, model_name=a.model_name)
    cfg = translator.config
    langs = f"{cfg.data.src_lang}->{cfg.data.tgt_lang}" if cfg is not None else "?"
    if not _is_loopback(a.host) and api_key is None:
        print(f"lucidmt: warning: serving on {a.host} without an API key", file=sys.stderr)
    batching = "off" if a.no_batching else f"{a.batch_tokens} tokens / {a.max_wait_ms:g} ms"
    if a.workers > 1:
        batching += f"; {a.workers} batches at a time"
    print(
        f"lucidmt: serving {translator.source} ({langs}) on http://{a.host}:{a.port}/ "
        f"(batching {batching}; API key {'required' if api_key else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app,
        host=a.host,
        port=a.port,
        log_level="warning",
        access_log=a.access_log,
        limit_concurrency=a.max_connections,
        timeout_keep_alive=a.keep_alive,
        timeout_graceful_shutdown=5,
    )
    return 0
