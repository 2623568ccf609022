"""Resuming the legacy event stream by position.

Legacy events have no id and a reconnected stream replays from the start, so the only cursor is the
number of events already delivered. Identical consecutive events are legitimate and are all kept:
skipping is by position, never by content.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_ftevents.core.sse import ServerSentEvent
from airflow_ftevents.errors import FineTuneEventsResponseError

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
