"""Every bound the service enforces, in one place, so that the CLI, the app and the OpenAPI schema agree."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigurationError


@dataclass
class Limits:
    # per request (violations are the client's fault: 413 for the body, 422 for fields)
    max_chars: int = 1000  # characters per text
    max_texts: int = 64  # texts per request
    max_body_bytes: int = 256 * 1024  # request body, checked on Content-Length and while reading
    max_beam: int = 8  # beam_size and n_best
    max_len_b: int = 64  # the output length limit max_len_a * source + max_len_b stays bounded
    max_len_a: float = 2.0
    max_attribution_subwords: int = 64  # attributions (integrated gradients, ALTI+): per side, </s> included
    # capacity (violations are the server's: 503 with Retry-After)
    max_queue: int = 1024  # texts waiting for the model worker
    timeout_s: float = 30.0  # from arrival to answer; past it the request is dropped with 503
    # dynamic batching
    batching: bool = True  # False: one request per model call (the baseline of the load benchmark)
    batch_tokens: int = 4096  # source subwords gathered into one model call
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for company

    def validate(self) -> None:
        names = ("max_chars", "max_texts", "max_body_bytes", "max_beam", "max_queue", "batch_tokens")
        for name in (*names, "max_attribution_subwords"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"serve limit {name} must be >= 1, got {getattr(self, name)}")
        if self.max_texts > self.max_queue:
            raise ConfigurationError(
                f"max_texts ({self.max_texts}) cannot exceed max_queue ({self.max_queue}): such a request "
                "could never be queued"
            )
        if self.timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_wait_ms < 0:
            raise ConfigurationError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_len_a < 0 or self.max_len_b < 1:
            raise ConfigurationError("max_len_a must be >= 0 and max_len_b >= 1")

    def to_dict(self) -> dict:
        return asdict(self)
