"""When a deferred follower saves its state: at most once per interval, and only when it moved.

A triggerer that restarts rebuilds each trigger from the kwargs it was deferred with; without a
newer checkpoint, the new trigger would read (and log) again every event since deferral. Saving after
every poll would cost one metadata-database write per trigger per poll, so the rule is: the state is
saved when it differs from the last saved one and at least ``interval`` seconds have passed since the
last save. After a restart, at most one interval's events are logged again; none are lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_CHECKPOINT_INTERVAL = 60.0


class CheckpointPolicy:
    """Decides when to save; ``saved`` records what was saved and when (unix seconds)."""

    def __init__(self, interval: float, saved_state: Mapping[str, Any] | None, now: float) -> None:
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
            raise ValueError(f"checkpoint_interval must be a number of seconds >= 0, got {interval!r}")
        self.interval = float(interval)
        self._saved = dict(saved_state) if saved_state is not None else None
        self._saved_at = now

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def due(self, state: Mapping[str, Any], now: float) -> bool:
        return self.enabled and state != self._saved and now - self._saved_at >= self.interval

    def saved(self, state: Mapping[str, Any], now: float) -> None:
        self._saved = dict(state)
        self._saved_at = now
