"""Load on `lucidmt serve`: N concurrent clients on loopback, dynamic batching on vs off (one request per model call).

    python benchmarks/serve_load.py                               # clients 1 8 32 64, 20 s per level
    python benchmarks/serve_load.py --seconds 3 --warmup 1 --clients 1 32      # a short check

Each batching mode has its own `lucidmt serve` subprocess (both start first; each level runs on one, then the
other); the clients are asyncio tasks in this process, each with its own keep-alive connection and a minimal
HTTP/1.1 client (httpx costs ~3.5 ms of CPU per request here, three times the server's own HTTP work). Each client
sends one request at a time (`--texts-per-request` sentences, taken in turn from `--sentences`) and the next as
soon as the answer arrives; after a 503 it waits for Retry-After, as a polite client does. Each level runs
`--warmup` seconds unrecorded, then `--seconds` recorded; requests still in flight at the end are awaited and
counted. Latency is from sending the request to reading the answer. The server's queue is bounded by
`--server-max-queue` texts (32 by default, so that 64 clients are past capacity and see 503s).
Client and server share this machine's cores, as they would on a one-box deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _common import ROOT, hardware

MODELS = [ROOT / "work" / "models" / "m30k-small"]
SENTENCES = [ROOT / "benchmarks" / "out" / "m30k-en-de" / "valid.src", ROOT / "work" / "m30k-bpe8k" / "valid.src"]


def first_existing(paths: list[Path], what: str) -> Path:
    for p in paths:
        if p.exists():
            return p
    sys.exit(f"serve_load: no {what} found; looked at {', '.join(map(str, paths))} (pass it explicitly)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, mode: str, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "lucidmt",
        "serve",
        str(args.model),
        "--port",
        str(port),
        "--max-queue",
        str(args.server_max_queue),
        "--timeout",
        str(args.server_timeout),
        "--max-texts",
        str(max(args.texts_per_request, 1)),
    ]
    if mode == "off":
        cmd.append("--no-batching")
    if mode.endswith("w"):  # batching on, decoded in worker processes of one thread each
        cmd += ["--workers", mode[:-1], "--threads", "1"]
    elif args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("LUCIDMT_API_KEY", None)
    return subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT, env=env)  # noqa: SIM115


def wait_healthy(httpx, url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve_load: the server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"serve_load: the server did not come up in {timeout:.0f} s")


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: about a tenth of httpx's CPU per request, so that
    on a small machine the clients measure the server rather than themselves (httpx still checks /v1/info)."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        try:
            self.writer.write(head.encode() + body)
            return await asyncio.wait_for(self._read(), self.timeout)
        except BaseException:
            self.close()
            raise

    async def _read(self) -> tuple[int, dict[str, str], bytes]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        data = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run_level(httpx, url: str, n_clients: int, args, sentences: list[str]) -> dict:
    k = args.texts_per_request
    cursor = 0
    host, port = url.removeprefix("http://").split(":")
    conns = [Connection(host, int(port), args.server_timeout + 30) for _ in range(n_clients)]

    async def client(conn: Connection, end: float, results: list | None) -> None:
        nonlocal cursor
        while time.monotonic() < end:
            texts = [sentences[(cursor + j) % len(sentences)] for j in range(k)]
            cursor += k
            body = json.dumps({"texts": texts, "beam_size": args.beam}).encode()
            start = time.monotonic()
            retry = 0.0
            try:
                code, headers, data = await conn.post("/v1/translate", body)
                if code == 503:
                    retry = float(headers.get("retry-after", "1"))
                elif code == 200 and b'"translations"' not in data:
                    code = "bad answer"
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as exc:
                code = type(exc).__name__
            if results is not None:
                results.append((code, time.monotonic() - start, len(texts)))
            if retry:
                await asyncio.sleep(min(retry, max(0.0, end - time.monotonic())))

    if args.warmup > 0:
        end = time.monotonic() + args.warmup
        await asyncio.gather(*(client(c, end, None) for c in conns))
    before = httpx.get(url + "/v1/info", timeout=30).json()["stats"]
    results: list[tuple] = []
    t0 = time.monotonic()
    await asyncio.gather(*(client(c, t0 + args.seconds, results) for c in conns))
    wall = time.monotonic() - t0
    after = httpx.get(url + "/v1/info", timeout=30).json()["stats"]
    for c in conns:
        c.close()
    ok = sorted(dt for code, dt, _ in results if code == 200)
    sentences_ok = sum(n for code, _, n in results if code == 200)
    errors = Counter(str(code) for code, _, _ in results if code != 200)
    batches = after["batches"] - before["batches"]
    return dict(
        clients=n_clients,
        req_s=len(ok) / wall,
        sent_s=sentences_ok / wall,
        p50=percentile(ok, 50) * 1000,
        p99=percentile(ok, 99) * 1000,
        ok=len(ok),
        errors=errors,
        per_batch=(after["requests"] - before["requests"]) / batches if batches else float("nan"),
    )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        type=Path,
        help="run or checkpoint folder (default: work/models/m30k-small)",
    )
    p.add_argument("--sentences", type=Path, help="source sentences, one per line (default: Multi30k valid.src)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--seconds", type=float, default=20.0, help="recorded time per level")
    p.add_argument("--warmup", type=float, default=2.0, help="unrecorded time before each level")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--server-max-queue", type=int, default=32, help="the server's --max-queue (texts)")
    p.add_argument("--server-timeout", type=float, default=30.0, help="the server's --timeout (s)")
    p.add_argument("--threads", type=int, help="the server's PyTorch threads (default: PyTorch's choice)")
    p.add_argument(
        "--modes",
        nargs="+",
        choices=["on", "off", "2w", "4w"],
        default=["on", "off"],
        help="batching on or off in one process; 2w/4w: batching on, 2/4 decoding processes of 1 thread",
    )
    args = p.parse_args()
    import httpx

    args.model = args.model or first_existing(MODELS, "model")
    args.sentences = args.sentences or first_existing(SENTENCES, "sentence file")
    sentences = [s for s in args.sentences.read_text(encoding="utf-8").splitlines() if s.strip()]
    out_dir = ROOT / "work" / "serve"
    out_dir.mkdir(parents=True, exist_ok=True)

    servers = {}
    rows = []
    try:
        # both servers run side by side and the levels alternate between them, so that noise from other work on
        # the machine falls on both modes alike (an idle server costs nothing)
        for mode in args.modes:
            port = free_port()
            log_path = out_dir / f"serve_load-{mode}.log"
            servers[mode] = (f"http://127.0.0.1:{port}", start_server(args, mode, port, log_path), log_path)
        for url, proc, log_path in servers.values():
            wait_healthy(httpx, url, proc, log_path)
        info = httpx.get(next(iter(servers.values()))[0] + "/v1/info", timeout=10).json()
        for n in args.clients:
            for mode, (url, _, _) in servers.items():
                row = asyncio.run(run_level(httpx, url, n, args, sentences))
                row["mode"] = mode
                rows.append(row)
                print(
                    f"  batching {mode:3} clients {n:3}: {row['req_s']:.1f} req/s, p50 {row['p50']:.0f} ms, "
                    f"errors {dict(row['errors']) or 0}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for _, proc, _ in servers.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()

    params = info["parameters"]
    print(
        f"\n`lucidmt serve` under load: {args.model} ({info['source_lang']}->{info['target_lang']}, "
        f"{params / 1e6:.1f}M parameters, engine {info['engine']}), beam {args.beam}, "
        f"{args.texts_per_request} sentence(s) per request from {args.sentences.name}; {hardware()}; "
        f"server queue {args.server_max_queue} texts, batching {info['limits']['batch_tokens']} tokens / "
        f"{info['limits']['max_wait_ms']:g} ms; {args.seconds:g} s per level after {args.warmup:g} s warm-up.\n"
    )
    print("| clients | batching | req/s | sentences/s | p50 ms | p99 ms | requests per model call | ok | errors |")
    print("|---:|:---:|---:|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: (r["clients"], args.modes.index(r["mode"]))):
        errs = ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "0"
        print(
            f"| {r['clients']} | {r['mode']} | {r['req_s']:.1f} | {r['sent_s']:.1f} | {r['p50']:.0f} | "
            f"{r['p99']:.0f} | {r['per_batch']:.1f} | {r['ok']} | {errs} |"
        )
    by = {(r["clients"], r["mode"]): r for r in rows}
    print()
    for n in args.clients:
        if (n, "on") in by and (n, "off") in by and by[(n, "off")]["req_s"] > 0:
            ratio = by[(n, "on")]["req_s"] / by[(n, "off")]["req_s"]
            print(f"{n} clients: batching on / off (one request per model call) = {ratio:.2f}x requests/s")
        for w in ("2w", "4w"):
            if (n, "on") in by and (n, w) in by and by[(n, "on")]["req_s"] > 0:
                ratio = by[(n, w)]["req_s"] / by[(n, "on")]["req_s"]
                print(
                    f"{n} clients: {w[:-1]} decoding processes / one process, both batching = {ratio:.2f}x requests/s"
                )
    if (32, "on") in by and (1, "off") in by and by[(1, "off")]["req_s"] > 0:
        ratio = by[(32, "on")]["req_s"] / by[(1, "off")]["req_s"]
        print(f"32 clients with batching / 1 client one request at a time = {ratio:.2f}x requests/s")


if __name__ == "__main__":
    main()
