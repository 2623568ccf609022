"""Retry decisions, pure: which failures are worth another try and how long to wait.

Rules (as the official client applies them): 408, 409, 429, 5xx, connection errors and timeouts are
retried; a server's ``x-should-retry`` header overrides; the delay is the server's ``retry-after-ms`` or
``Retry-After`` (seconds or HTTP date) when it lies within 0..60 s, otherwise 0.5 s doubling up to 8 s,
times a random factor in [0.75, 1]. ``max_retries`` counts the retries after the first try.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping

RETRYABLE_STATUSES = frozenset({408, 409, 429})
INITIAL_DELAY = 0.5
MAX_DELAY = 8.0
MAX_SERVER_DELAY = 60.0


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup that works for requests, httpx and plain dicts."""
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def is_retryable_status(status: int, headers: Mapping[str, str] | None = None) -> bool:
    """Whether an error status is worth another try; the server may say otherwise via ``x-should-retry``."""
    override = header(headers, "x-should-retry")
    if override is not None and override.strip().lower() in ("true", "false"):
        return override.strip().lower() == "true"
    return status in RETRYABLE_STATUSES or status >= 500


def server_delay(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """The delay the server asked for, in seconds, or ``None`` when it asked for none we honour."""
    delay: float | None = None
    raw_ms = header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            delay = float(raw_ms) / 1000.0
        except ValueError:
            delay = None
    if delay is None:
        raw = header(headers, "retry-after")
        if raw is not None:
            raw = raw.strip()
            try:
                delay = float(raw)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(raw)
                except (TypeError, ValueError, IndexError):
                    when = None
                if when is not None:
                    delay = when.timestamp() - (time.time() if now is None else now)
                    delay = max(delay, 0.0)
    if delay is None or not (0 <= delay <= MAX_SERVER_DELAY):
        return None
    return delay


def backoff_delay(retry_number: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with jitter for the n-th retry (1-based)."""
    base = min(INITIAL_DELAY * (2 ** (retry_number - 1)), MAX_DELAY)
    return base * (1 - 0.25 * rng())
