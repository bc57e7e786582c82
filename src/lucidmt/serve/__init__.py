"""`lucidmt serve`: an HTTP translation service (FastAPI) with dynamic batching, and a web page.

    from lucidmt.serve import Limits, create_app
    app = create_app(Translator.load("work/run"), Limits(max_chars=500))   # an ASGI app for uvicorn

FastAPI is imported only when `create_app` is used, so `lucidmt --help` does not pay for it.
"""

from __future__ import annotations

from .limits import Limits

__all__ = ["Batcher", "Limits", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Batcher":
        from .batching import Batcher

        return Batcher
    raise AttributeError(f"module 'lucidmt.serve' has no attribute {name!r}")
