"""Time windows over events: ``created_after <= created_at < created_before``.

Half-open, so consecutive data intervals partition a job's events exactly. Bounds may be datetimes,
ISO-8601 strings or unix seconds; a naive datetime or string is taken as UTC.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def to_unix_seconds(value: Any, name: str) -> float | None:
    """Convert one bound to unix seconds, or say clearly what was wrong with it."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a datetime, an ISO-8601 string or unix seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of unix seconds, got {value!r}")
        return float(value)
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return moment.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc).timestamp()
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return to_unix_seconds(number, name)  # same finiteness check as a number
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{name} must be a datetime, an ISO-8601 string (e.g. 2024-07-23T00:00:00Z) or unix "
                f"seconds, got {value!r}"
            ) from None
        return to_unix_seconds(moment, name)
    raise ValueError(
        f"{name} must be a datetime, an ISO-8601 string or unix seconds, got {type(value).__name__} {value!r}"
    )


@dataclass(frozen=True)
class EventWindow:
    """The half-open interval ``[start, end)`` of ``created_at`` values to keep; ``None`` means unbounded."""

    start: float | None = None
    end: float | None = None

    @classmethod
    def from_bounds(cls, created_after: Any = None, created_before: Any = None) -> EventWindow:
        start = to_unix_seconds(created_after, "created_after")
        end = to_unix_seconds(created_before, "created_before")
        if start is not None and end is not None and end < start:
            raise ValueError(
                f"created_before ({created_before!r}) is earlier than created_after ({created_after!r}); "
                "swap them or widen the window"
            )
        return cls(start, end)

    @property
    def unbounded(self) -> bool:
        return self.start is None and self.end is None

    def contains(self, event: Mapping[str, Any]) -> bool:
        ts = event.get("created_at", 0)
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)

    def is_before_start(self, event: Mapping[str, Any]) -> bool:
        """True for an event older than the window: in newest-first paging, nothing after it matters."""
        return self.start is not None and event.get("created_at", 0) < self.start
