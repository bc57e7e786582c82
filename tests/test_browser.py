"""A live `lucidmt serve` of the tiny test model on loopback, used over HTTP and through the web page in Debian's
Chromium driven headless by Playwright (skipped, with the reason, when /usr/bin/chromium is missing).

The screenshot goes to the test's tmp folder; with LUCIDMT_UPDATE_DOCS=1 it is also written to docs/images/serve.png
(the README's picture), so that ordinary runs leave the working tree untouched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(memorised, tmp_path_factory):
    """`python -m lucidmt serve RUN --port P` as a subprocess; yields its base URL, stops it afterwards."""
    run = memorised[0]
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    log = open(log_path, "w")  # noqa: SIM115 - kept open for the server's lifetime
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("LUCIDMT_API_KEY", None)
    cmd = [sys.executable, "-m", "lucidmt", "serve", str(run), "--port", str(port), "--max-chars", "300"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"lucidmt serve exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"lucidmt serve did not come up in 60 s:\n{log_path.read_text()}")
        time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean exit
    assert proc.returncode in (0, -15), log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def test_live_server_answers_concurrent_clients(live_server, memorised):
    _, src, tgt = memorised

    def one(i: int) -> str:
        r = httpx.post(live_server + "/v1/translate", json={"texts": [src[i]]}, timeout=30)
        r.raise_for_status()
        return r.json()["translations"][0]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(16))) == tgt[:16]
    info = httpx.get(live_server + "/v1/info", timeout=10).json()
    assert info["stats"]["texts"] >= 16 and info["limits"]["max_chars"] == 300
    r = httpx.post(live_server + "/v1/translate", json={"texts": ["x" * 301]}, timeout=10)
    assert r.status_code == 422 and "texts[0]" in r.json()["message"]


def test_page_translates_and_draws_the_heatmap(live_server, memorised, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install -y --no-install-recommends chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    expect = sync_api.expect
    _, src, tgt = memorised

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on(
                "request",
                lambda r: None if r.url.startswith((live_server, "data:")) else problems.append(f"external: {r.url}"),
            )
            page.goto(live_server + "/")
            expect(page.locator("#model-info")).to_contain_text("en → de")

            # type, click, read the translation
            page.locator("#source").fill(src[0])
            page.get_by_role("button", name="Translate").click()
            expect(page.locator("#output p")).to_have_text([tgt[0]])

            # the toggle: translation coloured by confidence and the word-level attention heatmap
            page.get_by_label("Show attention and confidence").check()
            table = page.locator("table.heatmap")
            expect(table).to_be_visible()
            n_src, n_tgt = len(src[0].split()) + 1, len(tgt[0].split()) + 1  # words and </s>
            expect(table.locator("thead th")).to_have_count(n_src + 1)
            expect(table.locator("tbody tr")).to_have_count(n_tgt)
            expect(table.locator("tbody td")).to_have_count(n_src * n_tgt)
            words = page.locator(".sentence .target .word")
            expect(words).to_have_count(len(tgt[0].split()))
            confidences = [float(x) for x in words.evaluate_all("els => els.map(e => e.dataset.confidence)")]
            assert all(0.5 < c <= 1 for c in confidences)
            assert words.first.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
            expect(table.locator("td.aligned")).to_have_count(n_tgt - 1)  # one source word per real target word

            # attributions from the explain module: integrated gradients and ALTI+ tables follow the attention
            page.get_by_label("with attributions (slower)").check()
            expect(page.locator("table.heatmap")).to_have_count(3)
            names = page.locator("table.heatmap").evaluate_all("ts => ts.map(t => t.dataset.name)")
            assert names == ["cross-attention", "integrated gradients", "ALTI+"]
            shot = tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            page.get_by_label("with attributions (slower)").uncheck()

            # keyboard only: Ctrl+Enter translates two lines
            page.locator("#source").fill(f"{src[1]}\n{src[2]}")
            page.locator("#source").press("Control+Enter")
            expect(page.locator("#output p")).to_have_text(tgt[1:3])
            expect(page.locator("table.heatmap")).to_have_count(2)

            assert problems == []

            # overload and input errors get clear messages
            page.get_by_label("Show attention and confidence").uncheck()
            page.route(
                "**/v1/translate",
                lambda route: route.fulfill(
                    status=503,
                    headers={"Retry-After": "7", "Content-Type": "application/json"},
                    body='{"error": "queue_full", "message": "at capacity"}',
                ),
            )
            page.get_by_role("button", name="Translate").click()
            expect(page.get_by_role("alert")).to_have_text(
                "The server is busy (its queue is full). Please try again in 7 s."
            )
            page.unroute("**/v1/translate")
            page.locator("#source").fill("x" * 301)
            page.get_by_role("button", name="Translate").click()
            expect(page.get_by_role("alert")).to_contain_text("the limit is 300")
            expected = "console error: Failed to load resource: the server responded with a status of 503"
            assert [x[: len(expected)] for x in problems] == [expected]
        finally:
            browser.close()
    if os.environ.get("LUCIDMT_UPDATE_DOCS") == "1":  # a 256-colour copy keeps the committed picture small
        from PIL import Image

        (ROOT / "docs" / "images").mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(256).save(ROOT / "docs" / "images" / "serve.png", optimize=True)
