"""Self-contained HTML reports: one stylesheet, tables, figures as data URIs, and the data embedded as JSON.

Every report lucidmt writes (explain, audit, audit-data) goes through `page`, so they look alike and share one
guarantee: the page loads nothing from the network (no external scripts, fonts, stylesheets or images), so it
can be mailed, archived or opened offline and still show everything. `assert_offline` checks that.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
:root { --fg:#1d2433; --muted:#5b6478; --line:#d9dde6; --bg:#ffffff; --soft:#f4f6fa; --accent:#2f5fb3;
        --bad:#b3261e; --good:#1e7b34; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; max-width: 1180px; padding: 18px 24px 40px; }
h1 { font-size: 22px; margin: 4px 0 2px; } h2 { font-size: 17px; margin: 26px 0 8px; border-bottom: 1px solid
var(--line); padding-bottom: 4px; } h3 { font-size: 14px; margin: 16px 0 6px; }
.meta { color: var(--muted); font-size: 12px; margin-bottom: 10px; word-break: break-all; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px;
        min-width: 130px; }
.card .v { font-size: 20px; font-weight: 600; } .card .k { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: var(--bad); } .good { color: var(--good); } .muted { color: var(--muted); }
.note { color: var(--muted); font-size: 12px; max-width: 900px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
img.fig { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
.tok { display: inline-block; padding: 1px 4px; margin: 1px; border-radius: 3px; cursor: pointer;
       border: 1px solid transparent; }
.tok.sel { border-color: var(--fg); } .tok.low { text-decoration: underline wavy var(--bad); }
.grid td.h { width: 26px; height: 22px; padding: 0; text-align: center; font-size: 10px; }
.grid th.r { text-align: right; white-space: nowrap; }
.grid th.c { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; font-weight: 500; }
select { font: inherit; }
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None) -> str:
    """An HTML table; cells are escaped unless they are `Raw`."""
    numeric = numeric or [False] * len(headers)
    out = ["<table><tr>", *(f"<th>{esc(h)}</th>" for h in headers), "</tr>"]
    for row in rows:
        out.append("<tr>")
        for cell, num in zip(row, numeric, strict=False):
            text = cell if isinstance(cell, Raw) else esc(fmt(cell))
            out.append(f'<td class="n">{text}</td>' if num else f"<td>{text}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


class Raw(str):
    """A string already escaped (HTML), passed through `table` untouched."""


def cards(items: Iterable[tuple[str, Any]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="v">{esc(fmt(v))}</div><div class="k">{esc(k)}</div></div>' for k, v in items
        )
        + "</div>"
    )


def figure_data_uri(fig, dpi: int = 110) -> str:
    """A matplotlib figure as a `data:image/png;base64,...` URI."""
    return png_data_uri(figure_png(fig, dpi))


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def write_bytes(path, data: bytes) -> None:
    """Atomic binary write (a PNG next to its report)."""
    from .io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def figure_png(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def new_figure(width: float, height: float):
    """A matplotlib Figure that never touches pyplot's global state or an interactive backend."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def img(uri: str, alt: str) -> str:
    return f'<img class="fig" alt="{esc(alt)}" src="{uri}">'


def embed_json(obj: Any, element_id: str = "data") -> str:
    """Data for the page's script, in a JSON script block (`</` is escaped so the text cannot close the tag)."""
    text = json.dumps(obj, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def page(title: str, body: str, meta: str = "", script: str = "") -> str:
    """A complete HTML document: inline CSS, inline script, nothing fetched from anywhere."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        + (f'<div class="meta">{meta}</div>' if meta else "")
        + body
        + (f"<script>{script}</script>" if script else "")
        + "</body></html>\n"
    )


_REMOTE = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}|(?:src|href)\s*=\s*["'](?!data:|#)""", re.IGNORECASE)


def assert_offline(text: str) -> None:
    """Raise if the page could reach the network: a URL, or a src/href that is not a data URI or an anchor."""
    m = _REMOTE.search(text)
    if m:
        near = text[max(0, m.start() - 40) : m.end() + 40]
        raise AssertionError(f"report refers to an external resource near: {near!r}")


CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def screenshot(
    html_path: str,
    png_path: str | None = None,
    width: int = 1200,
    height: int = 900,
    full_page: bool = False,
    executable: str = "/usr/bin/chromium",
) -> dict:
    """Open a report in headless Chromium (Playwright), with every network request blocked and recorded.

    Returns {"requests": URLs the page tried to fetch (data: URIs excluded), "errors": script errors,
    "text": the rendered text}; saves a PNG when `png_path` is given. Used by the tests (a report must render
    with no request at all) and to make the README screenshots."""
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    errors: list[str] = []
    url = Path(html_path).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            pg.on("pageerror", lambda e: errors.append(str(e)))

            def route(r):
                if r.request.url != url and not r.request.url.startswith("data:"):
                    requests.append(r.request.url)
                    return r.abort()
                return r.continue_()

            pg.route("**/*", route)
            pg.goto(url)
            pg.wait_for_load_state("load")
            if png_path:
                pg.screenshot(path=png_path, full_page=full_page)
            text = pg.inner_text("body")
        finally:
            browser.close()
    return {"requests": requests, "errors": errors, "text": text}
