"""Pure stand-ins for the API, shared by the core's tests: event factories and a scripted live job.

No network: a plan's requests are answered in memory, the way the API would answer them.
"""

from __future__ import annotations

from typing import Any

from airflow_ftevents.core.api import ApiRequest
from airflow_ftevents.errors import FineTuneEventsError

T0 = 1_721_692_800  # 2024-07-23T00:00:00Z


def make_events(n: int, start: int = 0, per_second: int = 3) -> list[dict[str, Any]]:
    """``n`` current-API events, oldest first; ``per_second`` of them share each ``created_at`` second."""
    return [
        {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{i:06d}",
            "created_at": T0 + i // per_second,
            "level": "info",
            "message": f"Step {i}",
            "data": {},
            "type": "message",
        }
        for i in range(start, start + n)
    ]


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
        newest_first = self.visible[::-1]
        after = request.params.get("after")
        if after is not None:
            index = next(i for i, e in enumerate(newest_first) if e["id"] == after)
            newest_first = newest_first[index + 1 :]
        limit = request.params.get("limit") or 20
        page = newest_first[:limit]
        return {"object": "list", "data": page, "has_more": len(newest_first) > limit}
