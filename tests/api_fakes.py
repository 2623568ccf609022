"""Pure stand-ins for the API, shared by the tests: event factories, the events endpoint's paging,
in-memory fetchers for the core's plans, and a scripted live job.

No network: a plan's requests are answered in memory, the way the API would answer them. The hook's and
the async client's tests answer their mocked HTTP with the same pages (``events_page``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_ftevents.core.api import ApiRequest
from airflow_ftevents.core.drivers import run_sync
from airflow_ftevents.core.paging import Plan
from airflow_ftevents.core.spool import ReverseSpool
from airflow_ftevents.errors import FineTuneEventsError

T0 = 1_721_692_800  # 2024-07-23T00:00:00Z
JOB = "ftjob-abc123"  # the job the core's paging tests page through


def make_events(
    n: int, start: int = 0, per_second: int = 3, *, null_data: bool = False
) -> list[dict[str, Any]]:
    """``n`` current-API events, oldest first; ``per_second`` of them share each ``created_at`` second.

    ``null_data``: ``"data": null`` as some events carry it, instead of an empty object.
    """
    return [
        {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{i:06d}",
            "created_at": T0 + i // per_second,
            "level": "info",
            "message": f"Step {i}",
            "data": None if null_data else {},
            "type": "message",
        }
        for i in range(start, start + n)
    ]


def legacy_event(message: str, created_at: int = T0) -> dict[str, Any]:
    """One event of the legacy fine-tunes API: no id, so only its position tells it apart."""
    return {"object": "fine-tune-event", "created_at": created_at, "level": "info", "message": message}


def ids(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in events]


def events_page(
    events: Sequence[dict[str, Any]], after: str | None, limit: int | None, *, send_has_more: bool = True
) -> dict[str, Any]:
    """The events endpoint's answer for a job whose events (oldest first) are ``events``: newest first,
    starting after the event ``after`` (``None``: the newest), at most ``limit`` (default 20) of them."""
    newest_first = list(events)[::-1]
    limit = limit or 20
    start = 0 if after is None else ids(newest_first).index(after) + 1
    page: dict[str, Any] = {"object": "list", "data": newest_first[start : start + limit]}
    if send_has_more:
        page["has_more"] = start + limit < len(newest_first)
    return page


class FakeEventsApi:
    """The current events endpoint of ``job_id`` in memory, answering a plan's requests."""

    def __init__(
        self, events: list[dict[str, Any]], *, send_has_more: bool = True, job_id: str = JOB
    ) -> None:
        self.events = events  # oldest first, like the job's history
        self.send_has_more = send_has_more
        self.job_id = job_id
        self.requests: list[ApiRequest] = []

    def __call__(self, request: ApiRequest) -> dict[str, Any]:
        self.requests.append(request)
        assert request.segments == ("fine_tuning", "jobs", self.job_id, "events")
        params = request.params
        return events_page(
            self.events, params.get("after"), params.get("limit"), send_has_more=self.send_has_more
        )

    @property
    def afters(self) -> list[Any]:
        return [r.params.get("after") for r in self.requests]


class ScriptedPages:
    """Answers requests with a fixed list of bodies, in order, recording each request."""

    def __init__(self, *bodies: object) -> None:
        self.bodies = list(bodies)
        self.requests: list[ApiRequest] = []

    def __call__(self, request: ApiRequest) -> object:
        self.requests.append(request)
        return self.bodies[len(self.requests) - 1]


def read_oldest_first(plan: Plan, fetch: Callable[[ApiRequest], Any]) -> list[dict[str, Any]]:
    """Run a paging plan and turn its pages (newest first) oldest first, as the hook does."""
    with ReverseSpool(max_events_in_memory=12) as spool:  # small, so big runs also spill to the file
        for page in run_sync(plan, fetch):
            spool.add_page(page)
        return list(spool.iter_events())


class LiveApi:
    """A job whose status and visible events move on each time its status is read.

    ``script`` lists, per poll, ``(status, number of events existing from that poll on)``; the last
    entry repeats. ``fail`` maps a request number (1-based, counting every request) to an error to raise.
    """

    def __init__(
        self,
        script: list[tuple[str, int]],
        events: list[dict[str, Any]] | None = None,
        fail: dict[int, FineTuneEventsError] | None = None,
        job_id: str = "ftjob-live",
    ) -> None:
        self.script = script
        self.job_id = job_id
        self.all_events = events if events is not None else make_events(max(n for _, n in script))
        self.visible: list[dict[str, Any]] = []
        self.polls = 0
        self.fail = fail or {}
        self.requests: list[ApiRequest] = []

    def __call__(self, request: ApiRequest) -> Any:
        self.requests.append(request)
        error = self.fail.get(len(self.requests))
        if error is not None:
            raise error
        if request.segments[-1] == "events":
            return self._page(request)
        status, count = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        self.visible = self.all_events[:count]
        return {"id": self.job_id, "status": status, "fine_tuned_model": None}

    def _page(self, request: ApiRequest) -> dict[str, Any]:
        return events_page(self.visible, request.params.get("after"), request.params.get("limit"))
