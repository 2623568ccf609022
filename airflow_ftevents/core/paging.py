"""Plans for reading events: newest-first walk-back, tailing a live job, the legacy list.

A plan is a generator that yields :class:`ApiRequest` (and receives the decoded JSON of its response
through ``send``) or :class:`Emit` (a result for the caller). It does no I/O itself, so the same plan
runs under the sync hook and the async trigger (see ``drivers.py``) and is tested with plain lists.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from airflow_ftevents.core.api import (
    ApiRequest,
    checkpoints_request,
    events_request,
    jobs_request,
    legacy_events_request,
)
from airflow_ftevents.core.responses import require_mapping
from airflow_ftevents.core.window import EventWindow
from airflow_ftevents.errors import FineTuneEventsPagingError, FineTuneEventsResponseError

DEFAULT_PAGE_SIZE = 100
MIN_TAIL_PAGE = 10  # first page of a tail read: a poll usually finds a handful of new events


@dataclass(frozen=True)
class Emit:
    """A value handed to the plan's caller (a page of events, newest first, a job, an outcome)."""

    value: Any


@dataclass(frozen=True)
class Sleep:
    """Wait this many seconds before the plan goes on (``time.sleep`` or ``asyncio.sleep``, by driver)."""

    seconds: float


Plan = Generator["ApiRequest | Emit | Sleep", Any, Any]


def relay(plan: Plan, on_emit: Callable[[Any], Any]) -> Plan:
    """Run ``plan`` inside another plan: its requests go out as they are, and each value it emits goes
    through ``on_emit``, whose result is emitted unless it is ``None`` (then it is kept from the caller).
    Returns the inner plan's return value."""
    step = next(plan)
    while True:
        if isinstance(step, Emit):
            value = on_emit(step.value)
            if value is not None:
                yield Emit(value)
            sent: Any = None
        else:
            sent = yield step
        try:
            step = plan.send(sent)
        except StopIteration as stop:
            return stop.value


def check_page_size(page_size: int) -> int:
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise ValueError(f"page_size must be a whole number >= 1, got {page_size!r}")
    return page_size


def _page_items(page: Any, what: str, kind: str = "event") -> tuple[list[dict[str, Any]], bool | None]:
    page = require_mapping(page, what, ("data",))
    data = page["data"]
    # Plain dicts (every decoded page) are checked without a Python call per item.
    if not isinstance(data, list) or not (
        all(map(isinstance, data, repeat(dict))) or all(isinstance(e, Mapping) for e in data)
    ):
        raise FineTuneEventsResponseError(
            f"{what} returned 'data' that is not a list of {kind} objects",
            code="unexpected_shape",
            hint="Check that the connection's base URL points at an OpenAI-compatible API",
        )
    has_more = page.get("has_more")
    return data, (None if has_more is None else bool(has_more))


def walk_list(
    make_request: Callable[[str | None, int], ApiRequest],
    owner: str,
    page_size: int = DEFAULT_PAGE_SIZE,
    *,
    kind: str = "event",
    window: EventWindow | None = None,
    stop: Callable[[Mapping[str, Any]], bool] | None = None,
    first_page_size: int | None = None,
) -> Plan:
    """Read a cursor-paged list (newest first) page by page; emit each page (newest first) as a list.

    ``make_request(after, limit)`` builds each request; errors name the list as the ``kind`` items of
    ``owner`` (``"events of job ftjob-1"``). Stops at the
    last page, at the first item older than ``window`` (newest-first order makes this cheap), or at the
    first item for which ``stop`` is true (that item is not emitted). Refuses to loop: a cursor seen
    before, or ``has_more`` with an empty page, raises FineTuneEventsPagingError. When ``has_more`` is
    missing, a full page is taken to mean "maybe more" and a short one "no more".
    ``first_page_size`` (default ``page_size``) sizes the first request only.
    """
    check_page_size(page_size)
    limit = check_page_size(first_page_size) if first_page_size is not None else page_size
    label = f"{kind}s of {owner}"
    after: str | None = None
    seen: set[str] = set()
    while True:
        request = make_request(after, limit)
        data, has_more = _page_items((yield request), request.what, kind)
        if has_more is None:
            has_more = len(data) >= limit
        cut = len(data)
        finished = False
        for index, item in enumerate(data):
            if (stop is not None and stop(item)) or (window is not None and window.is_before_start(item)):
                cut, finished = index, True
                break
        kept = data[:cut]
        if window is not None and window.end is not None:
            kept = [e for e in kept if window.contains(e)]
        if kept:
            yield Emit(kept)
        if finished or not has_more:
            return
        if not data:
            raise FineTuneEventsPagingError(
                f"The {label} came back empty with has_more=true after cursor {after!r}; "
                "stopping instead of asking for the same page forever",
                code="empty_page_has_more",
                hint="The server's paging is broken; retry later or report it to the API provider",
            )
        cursor = data[-1].get("id")
        if not isinstance(cursor, str) or not cursor:
            raise FineTuneEventsResponseError(
                f"An {kind} of {owner} has no 'id', so paging cannot continue",
                code=f"{kind}_without_id",
                hint="Use api='fine_tunes' for legacy jobs, whose events have no id",
            )
        if cursor in seen:
            raise FineTuneEventsPagingError(
                f"The {label} repeated cursor {cursor!r}: the server returned a page it "
                "returned before; stopping instead of looping forever",
                code="repeated_cursor",
                hint="The server ignores the 'after' parameter; retry later or report it to the API provider",
            )
        seen.add(cursor)
        after, limit = cursor, page_size


def walk_back(
    job_id: str,
    page_size: int = DEFAULT_PAGE_SIZE,
    *,
    window: EventWindow | None = None,
    stop: Callable[[Mapping[str, Any]], bool] | None = None,
    first_page_size: int | None = None,
) -> Plan:
    """The events of a job from the newest back in time (see :func:`walk_list`)."""
    return walk_list(
        lambda after, limit: events_request(job_id, after, limit),
        f"job {job_id}",
        page_size,
        window=window,
        stop=stop,
        first_page_size=first_page_size,
    )


def walk_jobs(metadata: Mapping[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Plan:
    """Every fine-tuning job of the account (matching ``metadata``), newest created first."""
    return walk_list(
        lambda after, limit: jobs_request(after, limit, metadata), "the account", page_size, kind="job"
    )


def walk_checkpoints(job_id: str, page_size: int = DEFAULT_PAGE_SIZE) -> Plan:
    """Every checkpoint of a job, newest first."""
    return walk_list(
        lambda after, limit: checkpoints_request(job_id, after, limit),
        f"job {job_id}",
        page_size,
        kind="checkpoint",
    )


@dataclass
class TailState:
    """Where a follower of a live job stands; a small JSON-safe dict survives reschedules and restarts.

    ``count`` is the number of events seen so far; for the legacy API (no event ids) it is also the
    position to resume from.
    """

    last_id: str | None = None
    last_created_at: int | None = None
    count: int = 0
    # New events found by the last read, to size the next first page; kept in memory only.
    last_new: int = field(default=0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"last_id": self.last_id, "last_created_at": self.last_created_at, "count": self.count}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> TailState:
        if not value:
            return cls()
        return cls(value.get("last_id"), value.get("last_created_at"), int(value.get("count") or 0))

    def is_known(self, event: Mapping[str, Any]) -> bool:
        """True for the newest event already seen, or anything older than it."""
        if self.last_id is None:
            return False
        if event.get("id") == self.last_id:
            return True
        return self.last_created_at is not None and event.get("created_at", 0) < self.last_created_at


def tail_new(job_id: str, state: TailState, page_size: int = DEFAULT_PAGE_SIZE) -> Plan:
    """Read only what is new since ``state`` (newest page first, stop at the newest id seen).

    Emits the new events page by page, newest first, and updates ``state`` once the whole read
    completed, so a read interrupted by an error is simply repeated by the next poll. Once the
    reader has caught up, the first page asks for about twice what the last read found (at least
    ``MIN_TAIL_PAGE``), so a steady poll moves a few events, not ``page_size`` of them.
    """
    newest: Mapping[str, Any] | None = None
    new = 0

    def count(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal newest, new
        if newest is None and page:
            newest = page[0]
        new += len(page)
        return page

    first = page_size
    if state.last_id is not None:
        first = min(page_size, max(MIN_TAIL_PAGE, 2 * state.last_new))
    yield from relay(walk_back(job_id, page_size, stop=state.is_known, first_page_size=first), count)
    if newest is not None:
        state.last_id = newest.get("id")
        state.last_created_at = newest.get("created_at")
    state.count += new
    state.last_new = new
    return new


def legacy_events(job_id: str, skip: int = 0) -> Plan:
    """The legacy ``stream=false`` list from position ``skip`` on, emitted as one page (newest first,
    like every emitted page, although the legacy API sends it oldest first)."""
    request = legacy_events_request(job_id)
    data, _ = _page_items((yield request), request.what)
    if len(data) < skip:
        raise FineTuneEventsResponseError(
            f"The legacy event list of job {job_id} has {len(data)} events, fewer than the {skip} already "
            "seen; the server lost events",
            code="events_lost",
        )
    if len(data) > skip:
        yield Emit(data[skip:][::-1])
    return len(data) - skip


def legacy_tail_plan(job_id: str, state: TailState) -> Plan:
    """Legacy tailing: the whole list again, skipping by position (events have no id)."""
    new = yield from legacy_events(job_id, state.count)
    state.count += new
    state.last_new = new
    return new
