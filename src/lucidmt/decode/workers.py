"""Decoding in several processes: inter-op parallelism for throughput on multi-core CPUs.

One decoding step of one batch is a chain of small operations (beam bookkeeping, layer norms, attention over a
cache, matrix products of ~128 rows) that PyTorch's intra-op threads share out poorly: on 2 cores, one process with
2 threads decodes the base model at 804 (fp32) / 1,263 (int8) target tokens/s, two workers with 1 thread each at
876 / 1,590 (benchmarks/decode_speed.py). This is what Marian's `--cpu-threads` and CTranslate2's `inter_threads`
do. Each worker is a `python -m lucidmt.decode.workers` process that loads the model once (`Translator.load` with
the same arguments) and decodes whole batches; the parent tokenises, forms the batches, hands them out as workers
free up and puts the results back in input order, so the outputs are those of one process (the same batches; float
results can differ in the last bits between thread counts). Workers talk to the parent over their stdin/stdout
pipes (pickles, between the parent and the children it started); what they print goes to stderr.

    tr = Translator.load("runs/m30k", quantize="int8", workers=2)   # 2 processes x (torch threads / 2)
    tr.translate_batch(lines)
    tr.close()                                                      # or `with Translator.load(...) as tr:`
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LucidError


class WorkerError(LucidError):
    """A decoding worker failed (its traceback is in the message): not the user's to fix."""

    users_to_fix = False


class _Call:
    """One `map` call: where its answers go, and whether it gave up (its jobs not yet sent are then skipped)."""

    def __init__(self):
        self.results: queue.Queue = queue.Queue()
        self.cancelled = False


class _Worker:
    """One child process and the parent-side thread that feeds it jobs and collects its answers."""

    def __init__(self, load_kwargs: dict, threads: int):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        package_root = str(Path(__file__).resolve().parents[2])  # so that the child imports this same lucidmt
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lucidmt.decode.workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        with contextlib.suppress(OSError):  # the child is already gone: `ready` reports how it ended
            self._send((load_kwargs, threads))

    def _send(self, obj) -> None:
        pickle.dump(obj, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()

    def _receive(self):
        try:
            return pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            return ("died", None, self._exit_message())

    def _exit_message(self) -> str:
        return f"the worker process exited (exit code {self.proc.wait()})"

    def ready(self) -> None:
        kind, _, detail = self._receive()
        if kind != "ready":
            raise WorkerError(f"a decoding worker could not load the model:\n{detail}")

    def run(self, jobs: queue.Queue) -> None:
        """Parent-side loop (a thread): take a job, send it, wait for its answer and hand it to its call; None
        stops. A job of a cancelled call is skipped."""
        while True:
            job = jobs.get()
            if job is None:
                return
            call, task = job[0], job[1:]
            if call.cancelled:
                continue
            try:
                self._send(task)
            except OSError:
                call.results.put(("died", task[0], self._exit_message()))
                return
            answer = self._receive()
            call.results.put(answer)
            if answer[0] == "died":
                return

    def stop(self) -> None:
        try:
            self._send(None)
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class WorkerPool:
    """`workers` processes, each with `threads` torch threads and its own copy of the model. `map` may be called
    from several threads at once (the server does): each call gets its own answers."""

    def __init__(self, load_kwargs: dict, workers: int, threads: int):
        self.jobs: queue.Queue = queue.Queue()
        self.workers: list[_Worker] = []
        self.threads: list[threading.Thread] = []
        self.size = workers
        self._lock = threading.Lock()
        try:
            for _ in range(workers):
                self.workers.append(_Worker(load_kwargs, threads))
            for w in self.workers:  # they load in parallel; wait for each
                w.ready()
        except BaseException:
            self.close()
            raise
        for w in self.workers:
            t = threading.Thread(target=w.run, args=(self.jobs,), daemon=True)
            t.start()
            self.threads.append(t)

    @property
    def alive(self) -> bool:
        """False once the pool was closed (by `close`, or because a worker died)."""
        return bool(self.workers)

    def map(self, jobs: list[tuple]) -> Iterator[tuple[int, Any]]:
        """Decode (seqs, options, want_attention) jobs; yields (job index, result) as they finish. A batch that
        fails in a worker raises its traceback (the pool serves on); a worker that dies closes the pool (this
        and later calls raise)."""
        call = _Call()
        with self._lock:
            if not self.workers:
                raise WorkerError("the decoding workers were closed")
            for i, job in enumerate(jobs):
                self.jobs.put((call, i, *job))
        try:
            for _ in jobs:
                kind, i, payload = call.results.get()
                if kind == "done":
                    yield i, payload
                    continue
                if kind == "died":
                    self.close()
                raise WorkerError(f"a decoding worker failed:\n{payload}")
        finally:
            call.cancelled = True  # on an error or an abandoned iteration, its remaining batches are skipped

    def close(self) -> None:
        """Stop the workers: batches not started are dropped (their calls raise), a batch in progress is finished
        (or, after 30 s, its worker is killed)."""
        with self._lock:
            workers, self.workers = self.workers, []
            threads, self.threads = self.threads, []
            while True:
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].results.put(("closed", job[1], "the decoding workers were closed"))
            for _ in threads:
                self.jobs.put(None)
        for t in threads:
            if t is not threading.current_thread():
                t.join(timeout=30)
        for i, w in enumerate(workers):
            if i < len(threads) and threads[i].is_alive():  # still talking to its worker: do not write to the pipe
                w.proc.kill()
                w.proc.wait()
            else:
                w.stop()


def _main() -> None:
    """Worker process: load the model, then decode batches from stdin until a None arrives."""
    proto_in = sys.stdin.buffer
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the pickle stream
    load_kwargs, threads = pickle.load(proto_in)

    def answer(obj) -> None:
        pickle.dump(obj, proto_out, protocol=pickle.HIGHEST_PROTOCOL)
        proto_out.flush()

    try:
        import torch

        from ..runtime import tune_allocator
        from .translator import Translator

        torch.set_num_threads(threads)
        tune_allocator()
        tr = Translator.load(**load_kwargs)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        answer(("failed", None, traceback.format_exc()))
        return
    answer(("ready", None, None))
    while True:
        try:
            task = pickle.load(proto_in)
        except EOFError:
            return
        if task is None:
            return
        job, seqs, opts, want_attention = task
        try:
            answer(("done", job, tr._decode(seqs, opts, want_attention)))
        except BaseException:  # noqa: BLE001
            answer(("error", job, traceback.format_exc()))


if __name__ == "__main__":
    _main()
