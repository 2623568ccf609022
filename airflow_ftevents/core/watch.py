"""Watching every fine-tuning job of an account for the moment it finishes, sans-I/O.

The jobs list is ordered by creation, newest first, but jobs finish in any order: a job created a week
ago can finish now, so the list is no log of completions. The watch therefore keeps two small pieces
of state and turns each poll into the jobs that *entered* a terminal status since the previous one:

- :class:`JobTracker` (what the account looks like): the newest job seen (the list's front) and the
  jobs seen unfinished (``tracked``), forgotten as soon as they finish. A poll reads the list newest
  first down to the front (everything above it is new), goes on paging while each page still covers
  tracked jobs, and asks for the tracked jobs it did not meet one by one
  (``GET /fine_tuning/jobs/{id}``). The first poll reads the whole list once to find the jobs that were
  already running. Bound, with ``P`` the page size, ``n`` the jobs created since the last poll and
  ``T`` the tracked (unfinished) jobs: a poll costs at most ``floor(n / P) + 2 + T`` requests, however
  long the account's history is, and ``floor(n / P) + 1`` when the unfinished jobs are among the newest
  ``P`` (the usual case).
- :class:`Announcer` (what one watcher has told its DAGs): its filter (statuses, metadata, base model,
  suffix), a watermark (nothing that finished before it is announced: the watcher's start or
  ``since``, moved on to each complete poll's start minus :data:`CLOCK_MARGIN`) and the ids announced
  since the watermark, so a transition seen again after a restart from an older state is not announced
  twice. Bounded too: it holds only what finished after the watermark.

:class:`JobWatch` is both for one watcher; a shared poll runs one tracker and hands its findings to
many announcers. Each is a small JSON-safe dict (``to_dict``) kept in Airflow's asset state store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_ftevents.core.api import CURRENT, job_request
from airflow_ftevents.core.jobstate import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    TERMINAL_STATUSES,
    is_terminal,
    job_status,
)
from airflow_ftevents.core.jobstate import job_summary as base_summary
from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE, Emit, Plan, check_page_size, walk_jobs
from airflow_ftevents.core.responses import require_mapping
from airflow_ftevents.core.window import to_unix_seconds
from airflow_ftevents.errors import FineTuneEventsNotFoundError

STATE_VERSION = 1
# How far the server's clock (``finished_at``) may lag ours: a poll that started at ``t`` has seen
# every job that finished before ``t - CLOCK_MARGIN``, so the watermark moves to that instant.
CLOCK_MARGIN = 120.0
WATCH_STATUSES = (SUCCEEDED, FAILED, CANCELLED)


# -- filters ------------------------------------------------------------------------------------------


def check_statuses(statuses: str | Iterable[str]) -> tuple[str, ...]:
    """The terminal statuses to announce, validated: a job *enters* one of these, once."""
    values = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    if not values or not all(isinstance(s, str) for s in values):
        raise ValueError(f"statuses must be a non-empty list of {list(WATCH_STATUSES)}, got {statuses!r}")
    normalized = tuple(dict.fromkeys(job_status({"status": s}) for s in values))
    unknown = [s for s in normalized if s not in TERMINAL_STATUSES]
    if unknown:
        raise ValueError(
            f"statuses may only hold the terminal statuses {list(WATCH_STATUSES)}, got {unknown!r}: "
            "a watcher announces jobs that finished"
        )
    return normalized


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) and k for k in metadata):
        raise ValueError(f"metadata must be a dict of string keys to string values, got {metadata!r}")
    return {key: str(value) for key, value in metadata.items()} or None


def job_suffix(job: Mapping[str, Any]) -> str | None:
    """The suffix a job was created with: ``user_provided_suffix`` when the service sends it, else the
    fourth part of ``ft:<base>:<org>:<suffix>:<id>`` (only a succeeded job has that name)."""
    suffix = job.get("user_provided_suffix")
    if isinstance(suffix, str) and suffix:
        return suffix
    name = job.get("fine_tuned_model")
    if isinstance(name, str) and name.startswith("ft:"):
        parts = name.split(":")
        if len(parts) >= 5 and parts[3]:
            return parts[3]
    return None


@dataclass(frozen=True)
class JobFilter:
    """Which finished jobs one watcher announces; every given criterion must hold."""

    statuses: tuple[str, ...] = (SUCCEEDED,)
    metadata: dict[str, str] | None = None
    model: str | None = None  # the base model, exact, or a prefix when it ends in "*"
    suffix: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses", check_statuses(self.statuses))
        object.__setattr__(self, "metadata", check_metadata(self.metadata))
        for name in ("model", "suffix"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip("*")):
                raise ValueError(f"{name} must be a non-empty string (or None for any), got {value!r}")

    def matches(self, job: Mapping[str, Any]) -> bool:
        if job_status(job) not in self.statuses:
            return False
        if self.metadata:
            have = job.get("metadata")
            if not isinstance(have, Mapping):
                return False
            if any(str(have.get(k)) != v or k not in have for k, v in self.metadata.items()):
                return False
        if self.model is not None:
            base = job.get("model")
            if not isinstance(base, str):
                return False
            if self.model.endswith("*"):
                if not base.startswith(self.model[:-1]):
                    return False
            elif base != self.model:
                return False
        return self.suffix is None or job_suffix(job) == self.suffix


def watch_payload(job: Mapping[str, Any]) -> dict[str, Any]:
    """The event of one finished job: the sensor's summary keys plus ``model``, ``metadata``, ``error``.

    A watcher reads no events, so ``event_count`` and ``last_event`` are ``None`` (not 0: unknown).
    Small and JSON-safe: the job's ``error`` keeps only ``code``, ``message`` and ``param``.
    """
    job_id = str(job.get("id"))
    payload = base_summary(job_id, job, 0, None)
    payload["event_count"] = None
    error = job.get("error")
    metadata = job.get("metadata")
    payload.update(
        model=job.get("model"),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else None,
        error=(
            {k: error.get(k) for k in ("code", "message", "param")}
            if isinstance(error, Mapping) and (error.get("code") or error.get("message"))
            else None
        ),
    )
    return payload


# -- the tracker (one per poll loop) ------------------------------------------------------------------


@dataclass(frozen=True)
class TrackerPolled:
    """One complete poll: the jobs seen entering a terminal status, and what it cost."""

    finished: tuple[dict[str, Any], ...]
    started_at: float
    requests: int
    listed: int
    checked: int
    tracked: int
    forgotten: tuple[str, ...] = ()  # tracked jobs the API no longer knows (404)


def _created_at(job: Mapping[str, Any]) -> float:
    value = job.get("created_at")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


@dataclass
class JobTracker:
    """The list's front and the unfinished jobs seen; :meth:`poll` finds the jobs that finished.

    ``metadata`` is sent to the list as ``metadata[k]=v`` (a watcher of its own; a shared poll lists
    everything). ``floor`` (unix seconds) keeps jobs that finished before it out of the results of the
    first poll, which reads the whole history.
    """

    page_size: int = DEFAULT_PAGE_SIZE
    metadata: dict[str, str] | None = None
    floor: float | None = None
    front_id: str | None = None
    front_created_at: float | None = None
    tracked: dict[str, float] = field(default_factory=dict)  # job id -> created_at
    scanned: bool = False

    def __post_init__(self) -> None:
        check_page_size(self.page_size)
        self.metadata = check_metadata(self.metadata)

    def to_dict(self) -> dict[str, Any]:
        return {
            "front_id": self.front_id,
            "front_created_at": self.front_created_at,
            "tracked": dict(self.tracked),
            "scanned": self.scanned,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(
        cls,
        value: Mapping[str, Any] | None,
        page_size: int = DEFAULT_PAGE_SIZE,
        metadata: Mapping[str, str] | None = None,
        floor: float | None = None,
    ) -> JobTracker:
        """The tracker ``to_dict`` described; a fresh one (which scans the history) if ``value`` is empty,
        malformed, or was made for a narrower metadata filter than ``metadata`` (it would miss jobs)."""
        tracker = cls(page_size, dict(metadata) if metadata else None, floor)
        if not isinstance(value, Mapping) or not value.get("scanned"):
            return tracker
        stored = value.get("metadata") or {}
        wanted = tracker.metadata or {}
        if not isinstance(stored, Mapping) or any(wanted.get(k) != v for k, v in stored.items()):
            return tracker
        tracked = value.get("tracked")
        if not isinstance(tracked, Mapping):
            return tracker
        tracker.front_id = value.get("front_id") if isinstance(value.get("front_id"), str) else None
        front_created_at = value.get("front_created_at")
        tracker.front_created_at = float(front_created_at) if front_created_at is not None else None
        tracker.tracked = {str(k): float(v or 0) for k, v in tracked.items()}
        tracker.scanned = True
        return tracker

    def _is_front_or_older(self, job: Mapping[str, Any]) -> bool:
        if self.front_id is None:
            return False
        if job.get("id") == self.front_id:
            return True
        return self.front_created_at is not None and _created_at(job) < self.front_created_at

    def _is_fresh(self, job: Mapping[str, Any]) -> bool:
        """Whether a job first seen already finished may count as a transition. Without a
        ``finished_at`` (some cancelled jobs), only when it is new since a previous poll, never in
        the first poll's history."""
        finished_at = job.get("finished_at")
        if not isinstance(finished_at, (int, float)) or isinstance(finished_at, bool):
            return self.scanned
        return self.floor is None or finished_at >= self.floor

    def poll(self, now: float) -> Plan:
        """One look at the account (``now``: when it starts); returns a :class:`TrackerPolled`.

        The state changes only when the whole poll succeeded, so a failed poll is simply repeated
        (nothing is lost or seen twice). Use with ``yield from``; :meth:`poll_emitting` emits it instead.
        """
        tracked = dict(self.tracked)
        finished: list[dict[str, Any]] = []
        covered: set[str] = set()
        front: Mapping[str, Any] | None = None
        new_phase = True  # still above the front: every job here is new since the last poll
        requests = listed = checked = 0
        walker = walk_jobs(self.metadata, self.page_size)
        step = next(walker)
        try:
            while True:
                if not isinstance(step, Emit):
                    requests += 1
                    step = walker.send((yield step))
                    continue
                page: list[dict[str, Any]] = step.value
                listed += len(page)
                hits = 0
                for job in page:
                    job_id = job.get("id")
                    if not isinstance(job_id, str):
                        continue
                    if front is None:
                        front = job
                    if new_phase and self._is_front_or_older(job):
                        new_phase = False
                    if new_phase and job_id not in tracked:
                        if is_terminal(job_status(job)):
                            if self._is_fresh(job):
                                finished.append(dict(job))
                        else:
                            tracked[job_id] = _created_at(job)
                        covered.add(job_id)
                    elif job_id in tracked and job_id not in covered:
                        covered.add(job_id)
                        hits += 1
                        if is_terminal(job_status(job)):
                            finished.append(dict(job))
                            del tracked[job_id]
                remaining = [job_id for job_id in tracked if job_id not in covered]
                # Past the front, another page is worth it only while pages still meet tracked jobs;
                # one request per tracked job (below) is the fallback, so this never costs more.
                if not new_phase and (not remaining or hits == 0):
                    break
                step = next(walker)
        except StopIteration:
            pass
        finally:
            walker.close()
        forgotten: list[str] = []
        for job_id in [j for j in tracked if j not in covered]:
            request = job_request(CURRENT, job_id)
            requests += 1
            checked += 1
            try:
                job = dict(require_mapping((yield request), request.what, ("status",)))
            except FineTuneEventsNotFoundError:
                del tracked[job_id]
                forgotten.append(job_id)
                continue
            if is_terminal(job_status(job)):
                finished.append(job)
                del tracked[job_id]
        if front is not None and (
            self.front_created_at is None or _created_at(front) >= self.front_created_at
        ):
            self.front_id = str(front.get("id"))
            self.front_created_at = _created_at(front)
        self.tracked = tracked
        self.scanned = True
        return TrackerPolled(tuple(finished), now, requests, listed, checked, len(tracked), tuple(forgotten))

    def poll_emitting(self, now: float) -> Plan:
        """:meth:`poll` as a plan that emits its :class:`TrackerPolled` (for a driver's ``run``)."""
        yield Emit((yield from self.poll(now)))


# -- the announcer (one per watcher) ------------------------------------------------------------------


@dataclass
class Announcer:
    """What one watcher announces, and what it already did: exactly one event per transition."""

    filter: JobFilter
    watermark: float
    announced: dict[str, float] = field(default_factory=dict)  # job id -> finished_at (or seen time)

    def to_dict(self) -> dict[str, Any]:
        return {"watermark": self.watermark, "announced": dict(self.announced)}

    @classmethod
    def from_dict(
        cls, value: Mapping[str, Any] | None, job_filter: JobFilter, now: float, since: float | None = None
    ) -> Announcer:
        """The stored announcer, or a fresh one at ``since`` (default ``now``). ``since`` stays a floor
        for a stored one too: nothing that finished before it is announced. The API's timestamps are
        whole seconds, so a fresh start counts from the start of its second."""
        since = None if since is None else float(math.floor(since))
        announcer = cls(job_filter, float(math.floor(now)) if since is None else since)
        if not isinstance(value, Mapping) or not isinstance(value.get("watermark"), (int, float)):
            return announcer
        stored = float(value["watermark"])
        announcer.watermark = stored if since is None else max(stored, since)
        announced = value.get("announced")
        if isinstance(announced, Mapping):
            announcer.announced = {
                str(k): float(v) for k, v in announced.items() if float(v) >= announcer.watermark
            }
        return announcer

    def consider(self, jobs: Iterable[Mapping[str, Any]], seen_at: float) -> list[dict[str, Any]]:
        """The payloads to announce among ``jobs`` (seen entering a terminal status), each once."""
        payloads = []
        for job in jobs:
            job_id = job.get("id")
            if not isinstance(job_id, str) or job_id in self.announced:
                continue
            finished_at = job.get("finished_at")
            when = float(finished_at) if isinstance(finished_at, (int, float)) else seen_at
            if when < self.watermark or not self.filter.matches(job):
                continue
            self.announced[job_id] = when
            payloads.append(watch_payload(job))
        return payloads

    def advance(self, poll_started_at: float) -> None:
        """After a complete poll: everything that finished before its start (less the clock margin) has
        been seen, so the watermark moves there and the ids older than it are forgotten."""
        mark = poll_started_at - CLOCK_MARGIN
        if mark > self.watermark:
            self.watermark = mark
            self.announced = {k: v for k, v in self.announced.items() if v >= mark}


# -- one watcher ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Announce:
    """A job entered one of the watcher's statuses: the trigger event's payload."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class WatchPolled:
    """A complete poll of a watcher: its cost, and how much it holds now."""

    announced: int
    poll: TrackerPolled


@dataclass
class JobWatch:
    """A tracker and an announcer: everything a watcher polling on its own needs, in one dict."""

    tracker: JobTracker
    announcer: Announcer

    @classmethod
    def create(
        cls,
        job_filter: JobFilter,
        now: float,
        since: Any = None,
        state: Mapping[str, Any] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        list_metadata: bool = True,
    ) -> JobWatch:
        """A watcher resuming from ``state`` (``to_dict``) or starting at ``since`` / ``now``.

        ``list_metadata`` sends the filter's metadata to the list (fewer jobs to read and track).
        """
        state = state if isinstance(state, Mapping) and state.get("v") == STATE_VERSION else {}
        announcer = Announcer.from_dict(
            state.get("announcer"), job_filter, now, to_unix_seconds(since, "since")
        )
        metadata = job_filter.metadata if list_metadata else None
        tracker = JobTracker.from_dict(state.get("tracker"), page_size, metadata, announcer.watermark)
        return cls(tracker, announcer)

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "tracker": self.tracker.to_dict(), "announcer": self.announcer.to_dict()}

    def fingerprint(self) -> str:
        """What a stored state must be saved again for: the tracker and the ids announced.

        A watermark that moved alone needs no save: with the same tracker, a watcher resumed from the
        older one finds only jobs that finish later, so it announces nothing twice and misses nothing.
        """
        return json.dumps([self.tracker.to_dict(), sorted(self.announcer.announced)], sort_keys=True)

    def poll(self, now: float) -> Plan:
        """One poll: emits an :class:`Announce` per transition, then a :class:`WatchPolled`."""
        self.tracker.floor = self.announcer.watermark
        result = yield from self.tracker.poll(now)
        payloads = self.announcer.consider(result.finished, now)
        self.announcer.advance(result.started_at)
        for payload in payloads:
            yield Emit(Announce(payload))
        yield Emit(WatchPolled(len(payloads), result))
