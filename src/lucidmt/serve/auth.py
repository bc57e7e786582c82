"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time."""

from __future__ import annotations

import hmac
import os

ENV_VAR = "LUCIDMT_API_KEY"

# Paths that never need the key: the health probe (load balancers) and the page shell with its static files,
# which hold no data (a browser cannot add a header when it opens a page; the page sends the key on API calls).
PUBLIC_PATHS = ("/health", "/", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)


def resolve_api_key(cli_value: str | None) -> str | None:
    """The `--api-key` value, else $LUCIDMT_API_KEY; empty means none."""
    key = cli_value if cli_value is not None else os.environ.get(ENV_VAR)
    return key or None


def presented_key(headers) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


def key_matches(expected: str, given: str | None) -> bool:
    """hmac.compare_digest on bytes: the time taken does not depend on where the strings first differ."""
    if given is None:
        given = ""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8", "surrogateescape"))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
