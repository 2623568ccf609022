"""Following one fine-tuning job, sans-I/O: the one follower behind the sensor, the trigger, the job
operator's wait, the export operator's wait, ``hook.stream_events`` and the ``ftevents follow`` command.

Like h11, it does no I/O: :meth:`JobFollower.poll` and :meth:`JobFollower.follow` are plans (see
``paging.py``) that ask for requests, receive their decoded bodies, and emit typed outcomes:

- :class:`NewEvent` for each event not seen before, oldest first;
- :class:`UnknownStatus` the first time a status unknown to this package is seen (``paused``...);
- :class:`Polled` after each complete poll, with the status and the number of new events;
- :class:`Finished` once the job is terminal (after the last events were read);
- :class:`PollFailed` when a poll met a transient error and ``follow`` will poll again;
- :class:`TimedOut` when ``follow``'s wall-clock deadline passed first.

What a follower has seen (the tail cursor, the newest event, the error-level events, the statuses
already warned about) is a small JSON-safe dict (:meth:`to_dict`), so a rescheduled sensor, a deferred
trigger or a restarted triggerer resumes where it stopped. The status is read before the events, so
the read that follows a terminal status holds the job's last events.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_ftevents.core.api import CURRENT, LEGACY, check_api, events_request, job_request
from airflow_ftevents.core.jobstate import (
    MAX_ERROR_EVENTS,
    SUCCEEDED,
    failure_message,
    is_known,
    is_terminal,
    job_status,
    job_summary,
    remember_error_event,
)
from airflow_ftevents.core.paging import (
    DEFAULT_PAGE_SIZE,
    Emit,
    Plan,
    Sleep,
    TailState,
    check_page_size,
    legacy_events,
    legacy_tail_plan,
    relay,
    tail_new,
)
from airflow_ftevents.core.polling import next_poll_delay
from airflow_ftevents.core.responses import require_mapping
from airflow_ftevents.core.spool import ReverseSpool
from airflow_ftevents.errors import FineTuneEventsError

STATE_VERSION = 1


@dataclass(frozen=True)
class NewEvent:
    event: dict[str, Any]


@dataclass(frozen=True)
class UnknownStatus:
    status: str


@dataclass(frozen=True)
class Polled:
    status: str
    new_events: int
    event_count: int


@dataclass(frozen=True)
class Finished:
    """The job is terminal: ``succeeded`` says whether the caller should succeed."""

    status: str
    job: dict[str, Any]
    summary: dict[str, Any]
    message: str

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


@dataclass(frozen=True)
class PollFailed:
    error: FineTuneEventsError


@dataclass(frozen=True)
class TimedOut:
    summary: dict[str, Any]
    message: str


Outcome = NewEvent | UnknownStatus | Polled | Finished | PollFailed | TimedOut


@dataclass
class JobFollower:
    """What a follower of one job has seen, and the plans that move it on.

    :param read_events: ``False`` follows the status only (the export operator's wait, which reads
        every event afterwards anyway).
    """

    job_id: str
    api: str = CURRENT
    page_size: int = DEFAULT_PAGE_SIZE
    read_events: bool = True
    tail: TailState = field(default_factory=TailState)
    last_event: dict[str, Any] | None = None
    error_events: list[dict[str, Any]] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    job: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.api = check_api(self.api)
        check_page_size(self.page_size)

    # -- state ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe state (no job object, no secret): what a trigger row or a checkpoint carries."""
        return {
            "v": STATE_VERSION,
            "job_id": self.job_id,
            "tail": self.tail.to_dict(),
            "last_event": self.last_event,
            "error_events": self.error_events,
            "warned": self.warned,
        }

    @classmethod
    def from_dict(
        cls,
        value: Mapping[str, Any] | None,
        job_id: str,
        api: str = CURRENT,
        page_size: int = DEFAULT_PAGE_SIZE,
        read_events: bool = True,
    ) -> JobFollower:
        """The follower ``to_dict`` described; a fresh one if ``value`` is empty or another job's."""
        follower = cls(job_id, api, page_size, read_events)
        if not isinstance(value, Mapping) or value.get("job_id") != job_id:
            return follower
        follower.tail = TailState.from_dict(value.get("tail"))
        follower.last_event = dict(value["last_event"]) if value.get("last_event") else None
        follower.error_events = [dict(e) for e in value.get("error_events") or []][-MAX_ERROR_EVENTS:]
        follower.warned = [str(s) for s in value.get("warned") or []]
        return follower

    @property
    def event_count(self) -> int:
        return self.tail.count

    def is_ahead_of(self, other: JobFollower) -> bool:
        """True when this state has seen more of the job than ``other`` (the newer checkpoint)."""
        return self.job_id == other.job_id and self.tail.count > other.tail.count

    def summary(self, job: Mapping[str, Any] | None = None) -> dict[str, Any]:
        job = job if job is not None else (self.job or {})
        return job_summary(self.job_id, job, self.tail.count, self.last_event)

    # -- plans ------------------------------------------------------------------------------------

    def poll(self) -> Plan:
        """One look at the job: its status, then (unless ``read_events`` is off) only its new events."""
        request = job_request(self.api, self.job_id)
        job = dict(require_mapping((yield request), request.what, ("status",)))
        status = job_status(job)
        new = 0
        if self.read_events:
            reader = (
                legacy_tail_plan(self.job_id, self.tail)
                if self.api == LEGACY
                else tail_new(self.job_id, self.tail, self.page_size)
            )
            with ReverseSpool() as spool:
                yield from relay(reader, spool.add_page)
                for event in spool.iter_events():
                    new += 1
                    self.last_event = event
                    self.error_events = remember_error_event(self.error_events, event)
                    yield Emit(NewEvent(event))
        self.job = job
        if not is_terminal(status) and not is_known(status) and status not in self.warned:
            self.warned.append(status)
            yield Emit(UnknownStatus(status))
        yield Emit(Polled(status, new, self.tail.count))
        if is_terminal(status):
            yield Emit(self._finished(status, job))

    def follow(
        self,
        poll_interval: float,
        end_time: float | None = None,
        *,
        tolerate_errors: bool = False,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> Plan:
        """Poll until the job is terminal or the wall-clock ``end_time`` (unix seconds) has passed.

        With ``tolerate_errors``, a poll that fails with a retryable error (one that outlasted the
        driver's own retries) emits :class:`PollFailed` and the next poll comes at the usual time;
        any other error ends the plan by propagating. Every wait comes from ``core.polling``.
        """
        if poll_interval < 0:
            raise ValueError(f"poll_interval must be >= 0 seconds, got {poll_interval!r}")
        while True:
            try:
                for outcome in (yield from self._poll_collecting()):
                    yield Emit(outcome)
                    if isinstance(outcome, Finished):
                        return
            except FineTuneEventsError as exc:
                if not (tolerate_errors and exc.retryable):
                    raise
                yield Emit(PollFailed(exc))
            delay = next_poll_delay(poll_interval, end_time, clock(), rng)
            if delay is None:
                yield Emit(self._timed_out())
                return
            yield Sleep(delay)

    def _poll_collecting(self) -> Plan:
        """``poll`` whose events are emitted at once, and whose closing outcomes come back as the
        return value, so ``follow`` can act on a finished job after handing them out."""
        closing: list[Outcome] = []

        def keep(outcome: Outcome) -> Outcome | None:
            if isinstance(outcome, NewEvent):
                return outcome
            closing.append(outcome)
            return None

        yield from relay(self.poll(), keep)
        return closing

    def start_at_newest(self) -> Plan:
        """Mark everything already logged as seen, so the first poll reads only what comes next.

        For a wait that does not log the job's history (the export operator reads it all afterwards).
        """
        if self.api == LEGACY:
            self.tail.count += yield from relay(legacy_events(self.job_id, self.tail.count), lambda _: None)
            return
        request = events_request(self.job_id, limit=1)
        page = require_mapping((yield request), request.what, ("data",))
        newest = page["data"][0] if page["data"] else None
        if isinstance(newest, Mapping):
            self.tail.last_id = newest.get("id")
            self.tail.last_created_at = newest.get("created_at")

    def _finished(self, status: str, job: Mapping[str, Any]) -> Finished:
        if status == SUCCEEDED:
            model = job.get("fine_tuned_model")
            message = f"Fine-tuning job {self.job_id} succeeded" + (f": {model}" if model else "")
        else:
            message = failure_message(self.job_id, job, self.error_events)
        return Finished(status, dict(job), self.summary(job), message)

    def _timed_out(self) -> TimedOut:
        last = job_status(self.job) if self.job else "unknown"
        return TimedOut(
            self.summary(),
            f"Fine-tuning job {self.job_id} did not finish before the deadline (last status {last!r})",
        )
