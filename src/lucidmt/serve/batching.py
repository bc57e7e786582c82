"""Dynamic batching: many concurrent requests, one model worker, one `translate_batch` call per gathered batch.

    HTTP handlers (asyncio) ──submit──▶ bounded queue ──▶ worker thread (owns the Translator) ──▶ futures

With `lucidmt serve --workers N` (a Translator with N decoding processes, or CTranslate2 with N inter_threads)
there are N such threads, each gathering its own batches, so N batches decode at once.

A request joins the queue only if the texts already waiting plus its own fit in `Limits.max_queue`; otherwise it is
refused at once (`Overloaded`, shown as 503 with Retry-After), so the queue can never grow without bound.
The worker takes the oldest request and every later one with the same decoding options, until `batch_tokens` source
subwords are gathered or the oldest request has waited `max_wait_ms`; while the model is busy, requests pile up and
the next batch starts without waiting, except that after a call that served several requests the wait also runs
from the end of that call (the clients it answered tend to send again at once: with 32 such clients this took
batches from ~16 to ~19 requests). When the last model call served a single request and only one is queued,
nothing suggests company is coming, so it starts at once (a lone client pays no wait). Requests whose options
differ wait for a later batch (first come, first served by the oldest request). Sampling requests always run alone,
so that a seed gives the same output whatever else arrives at the same time. A request that is not answered within
`timeout_s` of its arrival is dropped from the queue (or its result discarded) and answered 503 too.

The model runs in a thread rather than the event loop, so that HTTP parsing, validation and rejections continue
while a batch decodes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import LucidError
from .limits import Limits

log = logging.getLogger("lucidmt")


class Overloaded(Exception):
    """The service cannot take (or finish) this request now; the client should retry after `retry_after` s."""

    def __init__(self, reason: str, retry_after: int, message: str):
        super().__init__(message)
        self.reason = reason  # queue_full | timeout | shutting_down
        self.retry_after = retry_after


@dataclass
class BatchResult:
    """What one request gets back: its translations and how it was served."""

    translations: list[Any]  # lucidmt.decode.translator.Translation, one per text
    batch_requests: int  # requests that shared the model call
    batch_texts: int  # texts in that model call
    queue_ms: float  # from submission to the start of the model call
    model_ms: float  # the model call itself


_ids = itertools.count()


@dataclass
class _Job:
    texts: list[str]
    options: dict[str, Any]
    mode: str  # translate | attention (translate_batch with attention) | analyse (Translator.explain, one text)
    tokens: int
    enqueued: float
    key: tuple = ()
    taken: bool = False  # set by the worker, under the lock, when the job leaves the queue
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def __post_init__(self) -> None:
        opts = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in self.options.items()))
        # sampling draws from one generator per call: a seeded request must not share it with strangers;
        # an analysis (attributions) is one sentence's own computation
        alone = self.options.get("sampling") or self.mode == "analyse"
        self.key = (self.mode, opts, next(_ids) if alone else None)


class Batcher:
    """A bounded queue in front of the model worker thread that owns the `Translator` (one per decoding process
    when the Translator has a pool of them)."""

    def __init__(self, translator: Any, limits: Limits, count_tokens: Callable[[str], int] | None = None):
        self.translator = translator
        self.limits = limits
        self.count_tokens = count_tokens or _token_counter(translator)
        self._queue: deque[_Job] = deque()
        self._pending_texts = 0
        self._cond = threading.Condition()
        self.model_threads = max(1, int(getattr(translator, "parallel", 1)))  # batches decoded at once
        self._threads: list[threading.Thread] = []
        self._parent_model = threading.Lock()  # analyses run on this process's model copy, one at a time
        self._stopping = False
        self._rate = 0.0  # texts per second of model time, smoothed; 0 until the first batch
        self._last_batch = 0  # requests in the previous model call
        self._free_since = 0.0  # when the previous model call ended (time.monotonic)
        self.stats = dict(requests=0, texts=0, batches=0, max_batch_requests=0, queue_full=0, timeouts=0, errors=0)

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._threads and all(t.is_alive() for t in self._threads):
                return
            self._stopping = False
            self._threads = [t for t in self._threads if t.is_alive()]
            for k in range(len(self._threads), self.model_threads):
                t = threading.Thread(target=self._run, name=f"lucidmt-model-worker-{k}", daemon=True)
                t.start()
                self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new work, fail what is still queued, let the running batch finish."""
        with self._cond:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            self._pending_texts = 0
            self._cond.notify_all()
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(Overloaded("shutting_down", 5, "the server is shutting down"))
        for t in self._threads:
            t.join(timeout)

    @property
    def alive(self) -> bool:
        """The model worker threads run (and the Translator's decoding processes, if it has them)."""
        pool = getattr(self.translator, "pool", None)
        threads_ok = bool(self._threads) and all(t.is_alive() for t in self._threads)
        return threads_ok and (pool is None or getattr(pool, "alive", True))

    @property
    def pending_texts(self) -> int:
        return self._pending_texts

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: queued texts / recent model throughput, in [1, 60]."""
        if self._rate <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._pending_texts / (self._rate * self.model_threads)))))

    # -- front (event loop) -----------------------------------------------------------------------------------
    async def submit(
        self, texts: list[str], options: dict[str, Any], mode: str = "translate", timeout: float | None = None
    ) -> BatchResult:
        """Queue `texts` for translation with decoding `options` (DecodeOptions fields, beam_size included).

        `mode`: "translate"; "attention" (the same, with cross-attention); "analyse" (`Translator.explain` on
        each text, with `options["methods"]` as its attribution methods and `options["target"]` as the
        translation to explain, None to translate; never batched).

        Raises `Overloaded` when the queue is full, the server stops, or `timeout` (default `Limits.timeout_s`)
        passes first; errors of the model call itself (e.g. ConfigurationError) are raised as they are.
        """
        if not self.alive and not self._stopping:
            self.start()  # an app used without its lifespan (mounted elsewhere) still works
        tokens = sum(self.count_tokens(t) for t in texts)
        if mode not in ("translate", "attention", "analyse"):
            raise ValueError(f"unknown mode {mode!r}")
        job = _Job(list(texts), dict(options), mode, tokens, time.monotonic())
        with self._cond:
            if self._stopping:
                raise Overloaded("shutting_down", 5, "the server is shutting down")
            if self._pending_texts + len(texts) > self.limits.max_queue:
                self.stats["queue_full"] += 1
                raise Overloaded(
                    "queue_full",
                    self.retry_after(),
                    f"the server is at capacity ({self._pending_texts} texts queued, limit {self.limits.max_queue})",
                )
            self._queue.append(job)
            self._pending_texts += len(texts)
            self._cond.notify()
        waited = asyncio.wrap_future(job.future)
        try:
            return await asyncio.wait_for(waited, self.limits.timeout_s if timeout is None else timeout)
        except TimeoutError:
            self.stats["timeouts"] += 1
            raise Overloaded(
                "timeout",
                self.retry_after(),
                f"the request was not answered within {self.limits.timeout_s:g} s; the server is busy",
            ) from None
        finally:
            if not job.taken:  # timed out or cancelled while queued: free its place
                self._discard(job)

    def _discard(self, job: _Job) -> None:
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # already taken by the worker; its result will be ignored
            self._pending_texts -= len(job.texts)
        job.future.cancel()

    # -- worker (thread) --------------------------------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        """Block until a batch is ready; None when stopping."""
        lim = self.limits
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if not self._queue:
                    self._cond.wait()
                    continue
                head = self._queue[0]
                if not lim.batching:
                    break
                if self._last_batch <= 1 and len(self._queue) == 1:
                    break  # no sign of concurrent clients: a lone client should not wait for company
                ready = sum(j.tokens for j in self._queue if j.key == head.key)
                # the wait runs from the later of the oldest request's arrival and the end of the previous model
                # call: the clients just answered by a large batch are likely to send again within it
                since = max(head.enqueued, self._free_since) if self._last_batch > 1 else head.enqueued
                left = since + lim.max_wait_ms / 1000 - time.monotonic()
                if ready >= lim.batch_tokens or left <= 0:
                    break
                self._cond.wait(left)
            taken: list[_Job] = [self._queue.popleft()]
            if lim.batching:
                budget = lim.batch_tokens - head.tokens
                rest: deque[_Job] = deque()
                while self._queue:
                    job = self._queue.popleft()
                    if job.key == head.key and job.tokens <= budget:
                        taken.append(job)
                        budget -= job.tokens
                    else:
                        rest.append(job)
                    if budget <= 0:
                        break
                rest.extend(self._queue)
                self._queue = rest
            for j in taken:
                j.taken = True
            self._pending_texts -= sum(len(j.texts) for j in taken)
            return taken

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if live:
                self._serve(live)

    def _serve(self, jobs: list[_Job]) -> None:
        texts = [t for j in jobs for t in j.texts]
        opts = dict(jobs[0].options)
        beam = opts.pop("beam_size", 4)
        mode = jobs[0].mode
        start = time.monotonic()
        try:
            if mode == "analyse":
                methods, target = tuple(opts.pop("methods", ())), opts.pop("target", None)
                with self._parent_model:
                    out = [self.translator.explain(t, target, beam_size=beam, methods=methods, **opts) for t in texts]
            else:
                out = self.translator.translate_batch(texts, beam, return_attention=mode == "attention", **opts)
        except Exception as exc:  # handed to every waiting request; the worker lives on
            with self._cond:
                self.stats["errors"] += 1
            if not (isinstance(exc, LucidError) and exc.users_to_fix):  # the client's mistakes are not logged
                log.exception("model call failed for a batch of %d texts", len(texts))
            for j in jobs:
                j.future.set_exception(exc)
            return
        seconds = time.monotonic() - start
        k = 0
        for j in jobs:
            n = len(j.texts)
            j.future.set_result(
                BatchResult(out[k : k + n], len(jobs), len(texts), (start - j.enqueued) * 1000, seconds * 1000)
            )
            k += n
        rate = len(texts) / max(seconds, 1e-6)  # of one model worker thread
        with self._cond:
            self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate
            s = self.stats
            s["requests"] += len(jobs)
            s["texts"] += len(texts)
            s["batches"] += 1
            s["max_batch_requests"] = max(s["max_batch_requests"], len(jobs))
            self._last_batch = len(jobs)
            self._free_since = time.monotonic()


def _token_counter(translator: Any) -> Callable[[str], int]:
    """Source subwords (+ eos) per text, from the translator's own tokenizer; a character estimate without one."""
    tok = getattr(translator, "tokenizer", None)
    if tok is not None and hasattr(tok, "encode_src"):
        return lambda text: len(tok.encode_src([text.strip()])[0]) + 1 if text.strip() else 0
    return lambda text: len(text) // 4 + 1
