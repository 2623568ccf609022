"""The simulator's jobs: a thread-safe registry in creation order, paged newest first.

An account's history (thousands of old jobs) is kept as specs and built into :class:`Job` objects only
when a request touches them, so adding 10,000 jobs is cheap and a page of the jobs list costs O(page)
JSON whatever the number of jobs (a metadata filter only compares dicts while it looks for matches).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from airflow_ftevents.simulator.model import DEFAULT_MODEL, Job, JobSpec, hashed_id, random_alnum

NO_METADATA = "null"  # the jobs list's ``metadata=null``: only jobs created without metadata

# History: one job every HISTORY_SPACING seconds, the newest HISTORY_NEWEST seconds ago.
HISTORY_SPACING = 600.0
HISTORY_NEWEST = 3600.0
RUNNING_PROGRESS = 0.4  # a running history job is this far through its (long) lifecycle


class JobStore:
    """Jobs by id, in creation order; history jobs are built on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._order: list[str] = []  # oldest first
        self._position: dict[str, int] = {}
        self._jobs: dict[str, Job] = {}
        self._lazy: dict[str, tuple[JobSpec, tuple[float, float]]] = {}  # id -> (spec, clock origin)
        self._histories = 0

    def add(self, spec: JobSpec) -> Job:
        """Add a job (its lifecycle starts now); a random id when ``spec.job_id`` is None."""
        with self._lock:
            job_id = spec.job_id
            while job_id is None or (spec.job_id is None and job_id in self._position):
                job_id = "ftjob-" + random_alnum(24)
            job = Job(spec, job_id, clock=self._clock, wall=self._wall)
            if job_id not in self._position:
                self._position[job_id] = len(self._order)
                self._order.append(job_id)
            self._lazy.pop(job_id, None)
            self._jobs[job_id] = job
            return job

    def add_history(
        self,
        n: int,
        running: int = 0,
        metadata: dict[str, str] | None = None,
        n_events: int = 60,
        model: str = DEFAULT_MODEL,
    ) -> list[str]:
        """``n`` old jobs, older than every job so far, of which the newest ``running`` still run.

        One job every 10 minutes, the newest an hour ago. Finished ones mostly succeeded (every 10th
        failed, every 25th was cancelled); running ones are 40% through a lifecycle of hours. Returns
        their ids, oldest first.
        """
        for name, value in (("n", n), ("running", running)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if running > n:
            raise ValueError(f"running ({running}) cannot exceed n ({n})")
        JobSpec(n_events=n_events, model=model, metadata=metadata)  # validates them once
        origin = (self._clock(), self._wall())
        with self._lock:
            batch = self._histories
            self._histories += 1
            ids: list[str] = []
            for k in range(n):
                job_id = "ftjob-" + hashed_id(f"history:{batch}:{k}")
                if job_id in self._position or job_id in self._lazy:
                    continue
                ago = HISTORY_NEWEST + (n - 1 - k) * HISTORY_SPACING
                if k >= n - running:
                    spec = JobSpec(
                        job_id=job_id,
                        n_events=n_events,
                        duration=ago / RUNNING_PROGRESS,
                        created_ago=ago,
                        model=model,
                        metadata=metadata,
                    )
                else:
                    outcome = "cancelled" if k % 25 == 24 else "failed" if k % 10 == 9 else "succeeded"
                    spec = JobSpec(
                        job_id=job_id,
                        n_events=n_events,
                        outcome=outcome,
                        created_ago=ago,
                        model=model,
                        metadata=metadata,
                    )
                self._lazy[job_id] = (spec, origin)
                ids.append(job_id)
            self._order[:0] = ids
            self._position = {job_id: i for i, job_id in enumerate(self._order)}
        return ids

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._materialize(job_id)

    def _materialize(self, job_id: str) -> Job | None:
        """The job, built now if it is a history job not used before; call with ``_lock`` held."""
        job = self._jobs.get(job_id)
        if job is None and job_id in self._lazy:
            spec, origin = self._lazy.pop(job_id)
            job = Job(spec, job_id, clock=self._clock, wall=self._wall, origin=origin)
            self._jobs[job_id] = job
        return job

    def built(self) -> int:
        """How many jobs exist as :class:`Job` objects (history jobs are built on first use)."""
        with self._lock:
            return len(self._jobs)

    def ids(self) -> list[str]:
        """Ids of all jobs, oldest first."""
        with self._lock:
            return list(self._order)

    def jobs(self) -> list[Job]:
        """Every job, oldest first (builds history jobs: for small stores and the legacy list)."""
        with self._lock:
            return [job for job_id in self._order if (job := self._materialize(job_id)) is not None]

    def spec(self, job_id: str) -> JobSpec | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return job.spec
            lazy = self._lazy.get(job_id)
            return replace(lazy[0]) if lazy else None

    def _metadata(self, job_id: str) -> dict[str, str] | None:
        job = self._jobs.get(job_id)
        return job.spec.metadata if job is not None else self._lazy[job_id][0].metadata

    def page(
        self, after: str | None, limit: int, metadata: list[tuple[str, str]] | str | None = None
    ) -> tuple[list[Job], bool]:
        """Newest-first page of the jobs created before ``after`` that match ``metadata``.

        ``metadata`` is a list of (key, value) pairs that must all match, or :data:`NO_METADATA`.
        ``KeyError`` when ``after`` is no job's id. ``has_more`` is exact: one more match was looked for.
        """
        with self._lock:
            start = len(self._order) - 1
            if after is not None:
                start = self._position[after] - 1
            picked: list[str] = []
            has_more = False
            for position in range(start, -1, -1):
                job_id = self._order[position]
                if metadata is not None and not _matches(self._metadata(job_id), metadata):
                    continue
                if len(picked) == limit:
                    has_more = True
                    break
                picked.append(job_id)
            jobs = [job for job_id in picked if (job := self._materialize(job_id)) is not None]
        return jobs, has_more


def _matches(have: dict[str, str] | None, wanted: list[tuple[str, str]] | str) -> bool:
    if wanted == NO_METADATA:
        return not have
    return have is not None and all(have.get(key) == value for key, value in wanted)


def parse_metadata_filter(query: list[tuple[str, Any]]) -> list[tuple[str, str]] | str | None:
    """``metadata[k]=v`` pairs of a query (deepObject style), :data:`NO_METADATA`, or None (no filter)."""
    pairs: list[tuple[str, str]] = []
    for key, value in query:
        if key == "metadata" and value == NO_METADATA:
            return NO_METADATA
        if key.startswith("metadata[") and key.endswith("]"):
            pairs.append((key[len("metadata[") : -1], value))
    return pairs or None
