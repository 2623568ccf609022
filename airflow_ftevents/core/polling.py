"""When a poller should look again: its interval, a little jitter, and a wall-clock deadline.

Triggers that woke together (a triggerer that was busy or restarted, many DAG runs deferring at the
same minute) would otherwise poll in lockstep for hours: bursts of requests against the API and
bursts of work on the triggerer's event loop. Each wait is shortened by up to ``POLL_JITTER`` of the
interval, at random, so the herd spreads out again; a job is never checked later than asked.
"""

from __future__ import annotations

import random
from collections.abc import Callable

POLL_JITTER = 0.1


def next_poll_delay(
    poll_interval: float,
    end_time: float | None,
    now: float,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before the next poll, or ``None`` when the deadline (unix seconds) has passed."""
    delay = poll_interval * (1 - POLL_JITTER * rng())
    if end_time is None:
        return delay
    remaining = end_time - now
    if remaining <= 0:
        return None
    return min(delay, remaining)
