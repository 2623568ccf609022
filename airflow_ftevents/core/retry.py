"""The retry rules of ``retry_rules.py`` wired into tenacity, for the sync and the async driver alike.

The one module of the core that imports a third-party package (tenacity, which Airflow ships): the
rules themselves stay importable without it, so paging and response decoding never load it.
"""

from __future__ import annotations

import logging
from typing import Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt

from airflow_ftevents.core.retry_rules import (
    INITIAL_DELAY,
    MAX_DELAY,
    MAX_SERVER_DELAY,
    RETRYABLE_STATUSES,
    backoff_delay,
    header,
    is_retryable_status,
    server_delay,
)

__all__ = [
    "INITIAL_DELAY",
    "MAX_DELAY",
    "MAX_SERVER_DELAY",
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "header",
    "is_retryable_status",
    "retry_settings",
    "server_delay",
]


def _is_retryable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retryable", False))


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    requested = getattr(exc, "retry_after", None)
    if requested is not None:
        return float(requested)
    return backoff_delay(state.attempt_number)


def _request_label(state: RetryCallState) -> str:
    """What a retried call was doing: the ``what`` of its first argument (an ``ApiRequest``)."""
    return str(getattr(state.args[0], "what", "request")) if state.args else "request"


def retry_settings(
    max_retries: int, log: logging.Logger | None = None, what: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` and ``tenacity.AsyncRetrying`` alike.

    Without ``what``, retry messages name the request the retried call was given, so one policy
    object can serve every request of a client.
    """

    def before_sleep(state: RetryCallState) -> None:
        if log is None:
            return
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s failed (%s); retry %d of %d in %.2f s",
            what if what is not None else _request_label(state),
            exc,
            state.attempt_number,
            max_retries,
            delay,
        )

    return {
        "retry": retry_if_exception(_is_retryable),
        "wait": _wait,
        "stop": stop_after_attempt(max_retries + 1),
        "reraise": True,
        "before_sleep": before_sleep,
    }
