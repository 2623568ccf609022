"""Faults the simulator can inject, so clients are tested against the failures the real service shows.

A fault is queued for the next ``count`` requests whose raw path (with query) contains ``path`` and to
whose endpoint it applies (a ``drop_stream`` waits for a legacy stream, an ``empty_has_more`` for a
paged list). A random mode picks faults with a seeded generator for soak tests. ``reset`` resets the
connection before the request is carried out; ``reset_after_processing`` carries it out (a POST creates
or cancels the job) and then resets instead of answering, the failure that makes a retried POST unsafe.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

# Endpoint names used by the server's router.
JOB = "job"
EVENTS = "events"
JOBS_LIST = "jobs_list"
CREATE = "create"
CANCEL = "cancel"
PAUSE = "pause"
RESUME = "resume"
CHECKPOINTS = "checkpoints"
LEGACY_JOB = "legacy_job"
LEGACY_EVENTS = "legacy_events"
LEGACY_STREAM = "legacy_stream"
LEGACY_LIST = "legacy_list"
ROUTES = (
    JOB,
    EVENTS,
    JOBS_LIST,
    CREATE,
    CANCEL,
    PAUSE,
    RESUME,
    CHECKPOINTS,
    LEGACY_JOB,
    LEGACY_EVENTS,
    LEGACY_STREAM,
    LEGACY_LIST,
)
JSON_ROUTES = frozenset(ROUTES) - {LEGACY_STREAM}
PAGED_ROUTES = frozenset({EVENTS, JOBS_LIST, CHECKPOINTS})

_COMMON = frozenset({"headers", "message", "endpoint"})  # endpoint: one route only, e.g. "create"
# kind -> (endpoints it applies to, parameters it accepts besides headers/message)
_KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "429": (frozenset(ROUTES), frozenset({"retry_after", "retry_after_ms", "retry_after_date"})),
    "500": (frozenset(ROUTES), frozenset()),
    "502": (frozenset(ROUTES), frozenset()),
    "503": (frozenset(ROUTES), frozenset({"retry_after"})),
    "slow": (frozenset(ROUTES), frozenset({"delay"})),
    "reset": (frozenset(ROUTES), frozenset()),
    # The request is carried out (a job is created, cancelled, ...), then the answer is lost to a reset.
    "reset_after_processing": (JSON_ROUTES, frozenset()),
    "drop_body": (JSON_ROUTES, frozenset()),
    "drop_stream": (frozenset({LEGACY_STREAM}), frozenset({"after_events", "partial"})),
    "malformed_json": (JSON_ROUTES, frozenset()),
    "html": (frozenset(ROUTES), frozenset()),
    "empty_has_more": (PAGED_ROUTES, frozenset()),
    "repeated_cursor": (PAGED_ROUTES, frozenset()),
    "unknown_status": (frozenset({JOB, LEGACY_JOB, JOBS_LIST, LEGACY_LIST}), frozenset({"status"})),
    "data_null": (frozenset({EVENTS}), frozenset()),
    "unknown_fields": (
        frozenset(
            {JOB, EVENTS, JOBS_LIST, CHECKPOINTS, LEGACY_JOB, LEGACY_EVENTS, LEGACY_STREAM, LEGACY_LIST}
        ),
        frozenset(),
    ),
}
FAULT_KINDS: tuple[str, ...] = tuple(_KINDS)
RANDOM_DEFAULT_KINDS: tuple[str, ...] = ("429", "500", "502", "503", "reset", "drop_body")


def _is_status(kind: str) -> bool:
    return kind.isdigit() and len(kind) == 3 and 400 <= int(kind) <= 599


def applies(kind: str, route: str) -> bool:
    """Whether a fault of ``kind`` can happen on endpoint ``route``."""
    if kind in _KINDS:
        return route in _KINDS[kind][0]
    return _is_status(kind)


def allowed_params(kind: str) -> frozenset[str]:
    """Parameters a fault of ``kind`` accepts."""
    if kind in _KINDS:
        return _KINDS[kind][1] | _COMMON
    if _is_status(kind):
        return _COMMON | {"retry_after"}
    raise ValueError(
        f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)} or any HTTP status 400-599"
    )


def check(kind: str, params: dict[str, Any]) -> None:
    """Refuse unknown kinds and misspelt or ill-typed parameters early, where the test wrote them."""
    allowed = allowed_params(kind)
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"fault {kind!r} does not take {sorted(unknown)}; it takes {sorted(allowed)}")
    if "delay" in params and (not isinstance(params["delay"], (int, float)) or params["delay"] < 0):
        raise ValueError(f"delay must be a number of seconds >= 0, got {params['delay']!r}")
    after = params.get("after_events")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
        raise ValueError(f"after_events must be an int >= 0, got {after!r}")
    endpoint = params.get("endpoint")
    if endpoint is not None and (endpoint not in ROUTES or not applies(kind, endpoint)):
        raise ValueError(
            f"fault {kind!r} cannot happen on endpoint {endpoint!r}; endpoints: {sorted(ROUTES)}"
        )
    headers = params.get("headers")
    if headers is not None and not (
        isinstance(headers, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    ):
        raise ValueError("headers must be a dict of str to str")


@dataclass
class Fault:
    """One queued fault: what to do, to how many more requests, and which paths it matches."""

    kind: str
    remaining: int
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, raw_path: str, route: str) -> bool:
        return (
            (self.path is None or self.path in raw_path)
            and applies(self.kind, route)
            and self.params.get("endpoint", route) == route
        )


@dataclass(frozen=True)
class Applied:
    """The fault chosen for one request."""

    kind: str
    params: dict[str, Any]


class FaultPlan:
    """Thread-safe queue of faults plus the optional random mode."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._rate = 0.0
        self._kinds: tuple[str, ...] = ()
        self._rng = random.Random(0)
        self._random_path: str | None = None
        self._random_params: dict[str, Any] = {}
        self._applied: dict[str, int] = {}

    def inject(
        self, kind: str, count: int = 1, path: str | None = None, params: dict[str, Any] | None = None
    ) -> None:
        kind = str(kind)
        params = dict(params or {})
        check(kind, params)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        if path is not None and not isinstance(path, str):
            raise ValueError(f"path must be a string, got {path!r}")
        with self._lock:
            self._queue.append(Fault(kind, count, path or None, params))

    def set_random(
        self,
        rate: float,
        kinds: list[str] | tuple[str, ...] | None = None,
        seed: int | None = None,
        path: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {rate!r}")
        chosen = tuple(str(k) for k in (kinds or RANDOM_DEFAULT_KINDS))
        for kind in chosen:
            check(kind, {k: v for k, v in (params or {}).items() if k in allowed_params(kind)})
        with self._lock:
            self._rate = float(rate)
            self._kinds = chosen
            self._rng = random.Random(seed)
            self._random_path = path or None
            self._random_params = dict(params or {})

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._rate = 0.0
            self._kinds = ()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"kind": f.kind, "remaining": f.remaining, "path": f.path, "params": dict(f.params)}
                for f in self._queue
            ]

    def applied(self) -> dict[str, int]:
        """How many requests each fault kind has hit so far (queued and random alike)."""
        with self._lock:
            return dict(self._applied)

    def take(self, raw_path: str, route: str) -> Applied | None:
        """The fault for this request, if any; consumes one use of a queued fault."""
        applied = self._choose(raw_path, route)
        if applied is not None:
            with self._lock:
                self._applied[applied.kind] = self._applied.get(applied.kind, 0) + 1
        return applied

    def _choose(self, raw_path: str, route: str) -> Applied | None:
        with self._lock:
            for fault in self._queue:
                if fault.matches(raw_path, route):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._queue.remove(fault)
                    return Applied(fault.kind, dict(fault.params))
            if self._rate <= 0.0 or (self._random_path is not None and self._random_path not in raw_path):
                return None
            if self._rng.random() >= self._rate:
                return None
            options = [kind for kind in self._kinds if applies(kind, route)]
            if not options:
                return None
            kind = self._rng.choice(options)
            allowed = allowed_params(kind)
            return Applied(kind, {k: v for k, v in self._random_params.items() if k in allowed})
