"""Resuming the legacy event stream by position.

Legacy events have no id and a reconnected stream replays from the start, so the only cursor is the
number of events already delivered. Identical consecutive events are legitimate and are all kept:
skipping is by position, never by content.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_ftevents.core.retry_rules import backoff_delay
from airflow_ftevents.core.sse import ServerSentEvent
from airflow_ftevents.errors import (
    FineTuneEventsConnectionError,
    FineTuneEventsError,
    FineTuneEventsResponseError,
)

DONE = "[DONE]"


class LegacyStreamResume:
    """Counts events per connection and says which ones are new."""

    def __init__(self, position: int = 0) -> None:
        self.position = position
        self._index = 0
        self.done = False

    def new_connection(self) -> None:
        self._index = 0

    def accept(self, sse: ServerSentEvent, job_id: str) -> dict[str, Any] | None:
        """The event to deliver for this message, or ``None`` (a replay, or the end marker)."""
        if sse.data == DONE:
            self.done = True
            return None
        self._index += 1
        if self._index <= self.position:
            return None
        try:
            event = json.loads(sse.data)
        except ValueError:
            raise FineTuneEventsResponseError(
                f"The event stream of fine-tune {job_id} sent a message that is not JSON: {sse.data[:120]!r}",
                code="invalid_json",
                hint="A proxy may be rewriting the stream; check the connection's base URL",
                retryable=True,
            ) from None
        if not isinstance(event, dict):
            raise FineTuneEventsResponseError(
                f"The event stream of fine-tune {job_id} sent {type(event).__name__} "
                "instead of an event object",
                code="unexpected_shape",
            )
        self.position += 1
        return event


class ReconnectBudget:
    """How often a legacy stream may fail before the follower gives up.

    Not tenacity: the budget starts afresh whenever a connection delivered new events, so a long stream
    that drops every hour is followed to the end, while one that fails repeatedly without progress
    stops after ``max_retries`` reconnects with a clear error.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries
        self.failures = 0

    def after_failure(self, exc: FineTuneEventsError, progressed: bool, job_id: str) -> float:
        """Seconds to wait before reconnecting, or raise when no reconnect may help any more."""
        if not exc.retryable:
            raise exc
        self.failures = 1 if progressed else self.failures + 1
        if self.failures > self.max_retries:
            raise FineTuneEventsConnectionError(
                f"The event stream of fine-tune {job_id} failed {self.failures} times in a row without "
                f"new events (last: {exc.message})",
                status_code=exc.status_code,
                code=exc.code,
                request_id=exc.request_id,
                hint="Raise the connection's extra 'max_retries' or try again later",
            ) from None
        return exc.retry_after if exc.retry_after is not None else backoff_delay(self.failures)
