"""The sans-I/O core: paging plans, tailing, windows, legacy positions, time bounds and job state.

Plans are driven with ``drivers.run_sync`` against in-memory fake pages (no HTTP), and the pages they
emit (newest first) are turned oldest first through ``ReverseSpool``, as the hook does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_ftevents.core import jobstate
from airflow_ftevents.core.drivers import run_sync
from airflow_ftevents.core.paging import (
    MIN_TAIL_PAGE,
    ApiRequest,
    TailState,
    check_page_size,
    legacy_events,
    legacy_tail_plan,
    tail_new,
    walk_back,
)
from airflow_ftevents.core.spool import ReverseSpool, event_line
from airflow_ftevents.core.window import EventWindow, to_unix_seconds
from airflow_ftevents.errors import FineTuneEventsPagingError, FineTuneEventsResponseError

JOB = "ftjob-abc123"
T0 = 1_721_692_800  # 2024-07-23T00:00:00Z


def make_events(n: int, start: int = 0, per_second: int = 3) -> list[dict]:
    """``n`` events, oldest first; ``per_second`` of them share each ``created_at`` second."""
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


class FakeEventsApi:
    """The current events endpoint in memory: newest first, ``after`` walks back, ``limit`` per page."""

    def __init__(self, events: list[dict], *, send_has_more: bool = True) -> None:
        self.events = events  # oldest first, like the job's history
        self.send_has_more = send_has_more
        self.requests: list[ApiRequest] = []

    def __call__(self, request: ApiRequest) -> dict:
        self.requests.append(request)
        assert request.segments == ("fine_tuning", "jobs", JOB, "events")
        newest_first = self.events[::-1]
        after, limit = request.params.get("after"), request.params.get("limit") or 20
        start = 0 if after is None else [e["id"] for e in newest_first].index(after) + 1
        page = {"object": "list", "data": newest_first[start : start + limit]}
        if self.send_has_more:
            page["has_more"] = start + limit < len(newest_first)
        return page

    @property
    def afters(self) -> list:
        return [r.params.get("after") for r in self.requests]


class ScriptedPages:
    """Answers requests with a fixed list of bodies, in order, recording each request."""

    def __init__(self, *bodies: object) -> None:
        self.bodies = list(bodies)
        self.requests: list[ApiRequest] = []

    def __call__(self, request: ApiRequest) -> object:
        self.requests.append(request)
        return self.bodies[len(self.requests) - 1]


def read_oldest_first(plan, fetch) -> list[dict]:
    with ReverseSpool(max_events_in_memory=12) as spool:  # small, so big runs also spill to the file
        for page in run_sync(plan, fetch):
            spool.add_page(page)
        return list(spool.iter_events())


def ids(events: list[dict]) -> list[str]:
    return [e["id"] for e in events]


# -- walk_back -----------------------------------------------------------------------------------


def test_walk_back_emits_pages_newest_first_and_cursor_is_oldest_id_of_previous_page():
    events = make_events(5)
    api = FakeEventsApi(events)
    pages = list(run_sync(walk_back(JOB, 2), api))
    assert [ids(p) for p in pages] == [
        ["ftevent-000004", "ftevent-000003"],
        ["ftevent-000002", "ftevent-000001"],
        ["ftevent-000000"],
    ]
    assert api.afters == [None, "ftevent-000003", "ftevent-000001"]
    assert [r.params["limit"] for r in api.requests] == [2, 2, 2]
    assert api.requests[1].what == f"GET events of fine-tuning job {JOB} after ftevent-000003"


def test_spool_turns_newest_first_pages_into_oldest_first_events():
    events = make_events(7)
    assert read_oldest_first(walk_back(JOB, 3), FakeEventsApi(events)) == events


def test_spool_keeps_bytes_and_count_and_spills_to_file():
    events = make_events(50)
    with ReverseSpool(max_events_in_memory=30) as spool:
        spool.add_page(events[25:][::-1])
        spool.add_page([])
        assert spool.spilled is False  # 25 events: held in memory as they are
        assert list(spool.iter_events()) == events[25:]
        spool.add_page(events[:25][::-1])
        assert spool.count == 50
        assert spool.spilled is True  # past the limit: on disk, not in memory
        assert b"".join(spool.iter_pages()) == b"".join(event_line(e) for e in events)
        assert list(spool.iter_events()) == events
    assert event_line({"message": "é", "data": None}) == '{"message":"é","data":null}\n'.encode()


@pytest.mark.parametrize("size", [0, 1, 2, 3, 99, 100, 101, 250])
@pytest.mark.parametrize("page_size", [1, 2, 7, 100])
def test_walk_back_every_event_once_in_order(size, page_size):
    events = make_events(size)
    api = FakeEventsApi(events)
    assert read_oldest_first(walk_back(JOB, page_size), api) == events
    # one request per page, and one for an empty job; never an extra one when has_more says no
    assert len(api.requests) == max(1, -(-size // page_size))


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 500), page_size=st.integers(1, 60), send_has_more=st.booleans())
def test_property_any_size_and_page_size_yields_every_event_once_in_order(size, page_size, send_has_more):
    events = make_events(size)
    api = FakeEventsApi(events, send_has_more=send_has_more)
    assert read_oldest_first(walk_back(JOB, page_size), api) == events
    full_pages = -(-size // page_size)
    if send_has_more:
        assert len(api.requests) == max(1, full_pages)
    else:  # without has_more a full last page costs one more (empty) request
        assert len(api.requests) == full_pages + (1 if size % page_size == 0 else 0)


def test_walk_back_empty_job_makes_one_request_and_emits_nothing():
    api = FakeEventsApi([])
    assert list(run_sync(walk_back(JOB, 10), api)) == []
    assert api.afters == [None]


def test_repeated_cursor_raises_paging_error_instead_of_looping():
    page = {"object": "list", "data": make_events(3)[::-1], "has_more": True}
    fetch = ScriptedPages(page, page, page, page)
    with pytest.raises(FineTuneEventsPagingError) as info:
        list(run_sync(walk_back(JOB, 3), fetch))
    assert len(fetch.requests) == 2
    assert info.value.code == "repeated_cursor"
    assert info.value.status_code is None
    assert info.value.message == (
        f"The events of job {JOB} repeated cursor 'ftevent-000000': the server returned a page it "
        "returned before; stopping instead of looping forever"
    )


def test_repeated_cursor_further_back_is_also_caught():
    p1 = {"data": make_events(2, start=4)[::-1], "has_more": True}  # cursor ftevent-000004
    p2 = {"data": make_events(2, start=2)[::-1], "has_more": True}  # cursor ftevent-000002
    fetch = ScriptedPages(p1, p2, p1, p2)
    with pytest.raises(FineTuneEventsPagingError, match="repeated cursor 'ftevent-000004'"):
        list(run_sync(walk_back(JOB, 2), fetch))
    assert [r.params["after"] for r in fetch.requests] == [None, "ftevent-000004", "ftevent-000002"]


def test_has_more_with_empty_page_raises_paging_error():
    fetch = ScriptedPages(
        {"data": make_events(2, start=2)[::-1], "has_more": True},
        {"data": [], "has_more": True},
        {"data": [], "has_more": True},
    )
    emitted = []
    with pytest.raises(FineTuneEventsPagingError) as info:
        for page in run_sync(walk_back(JOB, 2), fetch):
            emitted.append(ids(page))
    assert len(fetch.requests) == 2
    assert emitted == [["ftevent-000003", "ftevent-000002"]]
    assert info.value.code == "empty_page_has_more"
    assert "came back empty with has_more=true after cursor 'ftevent-000002'" in str(info.value)


def test_missing_has_more_full_page_means_maybe_more_short_page_means_done():
    api = FakeEventsApi(make_events(4), send_has_more=False)
    assert ids(read_oldest_first(walk_back(JOB, 2), api)) == [f"ftevent-00000{i}" for i in range(4)]
    assert api.afters == [None, "ftevent-000002", "ftevent-000000"]  # the third page is empty: done

    api = FakeEventsApi(make_events(3), send_has_more=False)
    assert len(read_oldest_first(walk_back(JOB, 2), api)) == 3
    assert api.afters == [None, "ftevent-000001"]


def test_has_more_false_on_full_page_stops():
    fetch = ScriptedPages({"data": make_events(2)[::-1], "has_more": False})
    assert len(read_oldest_first(walk_back(JOB, 2), fetch)) == 2
    assert len(fetch.requests) == 1


def test_event_without_id_cannot_be_a_cursor():
    events = make_events(2)[::-1]
    del events[-1]["id"]
    fetch = ScriptedPages({"data": events, "has_more": True})
    with pytest.raises(FineTuneEventsResponseError) as info:
        list(run_sync(walk_back(JOB, 2), fetch))
    assert info.value.code == "event_without_id"
    assert info.value.message == f"An event of job {JOB} has no 'id', so paging cannot continue"
    assert len(fetch.requests) == 1


def test_event_without_id_on_last_page_is_fine():
    events = make_events(2)[::-1]
    del events[-1]["id"]
    fetch = ScriptedPages({"data": events, "has_more": False})
    assert [e["message"] for e in read_oldest_first(walk_back(JOB, 2), fetch)] == ["Step 0", "Step 1"]


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ([1, 2], "list"),
        ({"object": "list"}, "keys ['object']"),
    ],
)
def test_page_without_data_is_a_response_error(body, shown):
    with pytest.raises(FineTuneEventsResponseError) as info:
        list(run_sync(walk_back(JOB, 2), ScriptedPages(body)))
    assert info.value.code == "unexpected_shape"
    assert f"unexpected JSON shape ({shown}); expected an object with ['data']" in info.value.message


def test_page_with_data_not_a_list_of_objects():
    with pytest.raises(FineTuneEventsResponseError, match="'data' that is not a list of event objects"):
        list(run_sync(walk_back(JOB, 2), ScriptedPages({"data": ["x"], "has_more": False})))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_bad_page_size_is_refused(bad):
    with pytest.raises(ValueError, match=r"page_size must be a whole number >= 1, got"):
        check_page_size(bad)
    with pytest.raises(ValueError, match=r"page_size must be a whole number >= 1"):
        next(walk_back(JOB, bad))


# -- windows -------------------------------------------------------------------------------------


def test_window_is_half_open_and_stops_paging_once_older_than_window():
    events = make_events(30)  # 3 per second: created_at T0+0 .. T0+9
    api = FakeEventsApi(events)
    window = EventWindow(start=T0 + 5, end=T0 + 7)
    got = read_oldest_first(walk_back(JOB, 4, window=window), api)
    # created_at T0+5 (start, included) and T0+6; T0+7 (end) excluded
    assert ids(got) == [f"ftevent-0000{i}" for i in range(15, 21)]
    assert [e["created_at"] for e in got] == [T0 + 5] * 3 + [T0 + 6] * 3
    # pages of 4 newest first: 29-26, 25-22, 21-18, 17-14 (14 is at T0+4: older, stop); none after
    assert api.afters == [None, "ftevent-000026", "ftevent-000022", "ftevent-000018"]


def test_window_boundary_on_page_edge_needs_no_further_request():
    events = make_events(12)  # T0+0 .. T0+3
    api = FakeEventsApi(events)
    window = EventWindow(start=T0 + 2)
    # pages of 3: 11-9 (T0+3), 8-6 (T0+2, all in), 5-3 (T0+1: first event older -> stop)
    assert ids(read_oldest_first(walk_back(JOB, 3, window=window), api)) == ids(events[6:])
    assert len(api.requests) == 3


def test_window_with_only_an_end_reads_back_to_the_first_event():
    events = make_events(9)
    api = FakeEventsApi(events)
    got = read_oldest_first(walk_back(JOB, 2, window=EventWindow(end=T0 + 1)), api)
    assert got == events[:3]
    assert len(api.requests) == 5


def test_empty_window_equal_bounds_keeps_nothing():
    window = EventWindow.from_bounds(T0 + 1, T0 + 1)
    assert read_oldest_first(walk_back(JOB, 100, window=window), FakeEventsApi(make_events(9))) == []


def test_window_contains_and_is_before_start():
    window = EventWindow.from_bounds("2024-07-23T00:00:01Z", T0 + 2)
    assert (window.start, window.end) == (T0 + 1.0, T0 + 2.0)
    assert [window.contains({"created_at": T0 + d}) for d in (0, 1, 1.5, 2, 3)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert [window.is_before_start({"created_at": T0 + d}) for d in (0, 1, 2)] == [True, False, False]
    assert EventWindow().unbounded is True
    assert EventWindow(end=1).unbounded is False
    assert EventWindow().contains({"created_at": 5}) is True
    assert EventWindow().is_before_start({"created_at": 5}) is False


def test_window_end_before_start_is_refused():
    with pytest.raises(ValueError) as info:
        EventWindow.from_bounds(T0 + 10, T0 + 5)
    assert str(info.value) == (
        f"created_before ({T0 + 5!r}) is earlier than created_after ({T0 + 10!r}); "
        "swap them or widen the window"
    )


def test_walk_back_stop_predicate_excludes_the_stop_event():
    api = FakeEventsApi(make_events(10))
    pages = list(run_sync(walk_back(JOB, 4, stop=lambda e: e["id"] == "ftevent-000005"), api))
    assert [ids(p) for p in pages] == [
        ["ftevent-000009", "ftevent-000008", "ftevent-000007", "ftevent-000006"],
    ]
    assert len(api.requests) == 2  # the second page held the stop event at its top


# -- tailing -------------------------------------------------------------------------------------


def test_tail_state_round_trip_through_json():
    state = TailState("ftevent-000009", T0 + 3, 10)
    data = json.loads(json.dumps(state.to_dict()))
    assert data == {"last_id": "ftevent-000009", "last_created_at": T0 + 3, "count": 10}
    assert TailState.from_dict(data) == state
    assert TailState.from_dict(None) == TailState(None, None, 0)
    assert TailState.from_dict({}) == TailState()
    assert TailState.from_dict({"count": "7"}) == TailState(None, None, 7)


def test_tail_reads_everything_first_then_only_new_pages():
    events = make_events(10)
    api = FakeEventsApi(events)
    state = TailState()

    assert read_oldest_first(tail_new(JOB, state, 3), api) == events
    assert len(api.requests) == 4
    assert state == TailState("ftevent-000009", T0 + 3, 10)

    api.events = make_events(14)
    api.requests.clear()
    assert ids(read_oldest_first(tail_new(JOB, state, 3), api)) == [f"ftevent-0000{i}" for i in range(10, 14)]
    # newest page (13, 12, 11) then one more (10, 9): stops at the newest id seen
    assert api.afters == [None, "ftevent-000011"]
    assert state == TailState("ftevent-000013", T0 + 4, 14)

    api.requests.clear()
    assert read_oldest_first(tail_new(JOB, state, 3), api) == []
    assert api.afters == [None]
    assert state == TailState("ftevent-000013", T0 + 4, 14)


def test_tail_first_page_is_sized_by_what_the_last_read_found():
    """Catching up reads full pages; afterwards a poll asks for ~2x the last read's new events."""
    api = FakeEventsApi(make_events(250))
    state = TailState()
    assert len(read_oldest_first(tail_new(JOB, state), api)) == 250
    assert [r.params["limit"] for r in api.requests] == [100, 100, 100]
    assert state.last_new == 250

    api.events = make_events(253)  # 3 new: the first page is capped by page_size and ends the read
    api.requests.clear()
    assert ids(read_oldest_first(tail_new(JOB, state), api)) == [
        "ftevent-000250",
        "ftevent-000251",
        "ftevent-000252",
    ]
    assert [r.params["limit"] for r in api.requests] == [100]
    assert state.last_new == 3

    api.events = make_events(265)  # 12 new, more than the MIN_TAIL_PAGE first page: one more page
    api.requests.clear()
    assert ids(read_oldest_first(tail_new(JOB, state), api)) == [f"ftevent-000{i}" for i in range(253, 265)]
    assert [r.params["limit"] for r in api.requests] == [MIN_TAIL_PAGE, 100]
    assert api.afters == [None, "ftevent-000255"]
    assert state.last_new == 12

    api.requests.clear()  # nothing new: one page of 24 (2 x 12)
    assert read_oldest_first(tail_new(JOB, state), api) == []
    assert [r.params["limit"] for r in api.requests] == [24]
    assert state.last_new == 0

    api.requests.clear()  # and after a quiet poll, the smallest first page
    assert read_oldest_first(tail_new(JOB, state), api) == []
    assert [r.params["limit"] for r in api.requests] == [MIN_TAIL_PAGE]
    assert TailState.from_dict(state.to_dict()) == state  # last_new is not part of the saved cursor
    assert "last_new" not in state.to_dict()


def test_walk_back_first_page_size_only_sizes_the_first_request():
    api = FakeEventsApi(make_events(7), send_has_more=False)  # has_more inferred from each page's limit
    assert ids(read_oldest_first(walk_back(JOB, 3, first_page_size=2), api)) == ids(make_events(7))
    assert [r.params["limit"] for r in api.requests] == [2, 3, 3]
    with pytest.raises(ValueError, match="page_size must be a whole number >= 1, got 0"):
        list(run_sync(walk_back(JOB, 3, first_page_size=0), api))


def test_tail_dedups_when_newest_seen_id_is_mid_page():
    api = FakeEventsApi(make_events(10))
    state = TailState("ftevent-000007", T0 + 2, 8)
    pages = list(run_sync(tail_new(JOB, state, 5), api))
    assert [ids(p) for p in pages] == [["ftevent-000009", "ftevent-000008"]]
    assert len(api.requests) == 1
    assert state == TailState("ftevent-000009", T0 + 3, 10)


def test_tail_same_second_events_are_not_lost_or_repeated():
    # all events share one created_at second: ids decide, timestamps do not
    api = FakeEventsApi(make_events(6, per_second=100))
    state = TailState("ftevent-000002", T0, 3)
    assert ids(read_oldest_first(tail_new(JOB, state, 2), api)) == [
        "ftevent-000003",
        "ftevent-000004",
        "ftevent-000005",
    ]
    assert api.afters == [None, "ftevent-000004"]


def test_tail_stops_at_anything_older_than_last_seen_timestamp_when_id_is_gone():
    api = FakeEventsApi(make_events(9))  # T0+0 .. T0+2
    state = TailState("ftevent-deleted", T0 + 2, 5)
    assert ids(read_oldest_first(tail_new(JOB, state, 2), api)) == [
        "ftevent-000006",
        "ftevent-000007",
        "ftevent-000008",
    ]
    assert api.afters == [None, "ftevent-000007"]
    assert state.count == 8


def test_tail_state_unchanged_when_read_fails_midway():
    state = TailState("ftevent-000001", T0, 2)
    fetch = ScriptedPages(
        {"data": make_events(2, start=6)[::-1], "has_more": True}, {"data": [], "has_more": True}
    )
    with pytest.raises(FineTuneEventsPagingError):
        list(run_sync(tail_new(JOB, state, 2), fetch))
    assert state == TailState("ftevent-000001", T0, 2)


# -- legacy --------------------------------------------------------------------------------------


def legacy_event(message: str, created_at: int = T0) -> dict:
    return {"object": "fine-tune-event", "created_at": created_at, "level": "info", "message": message}


def test_legacy_events_request_and_oldest_first():
    data = [legacy_event("Created"), legacy_event("Uploaded"), legacy_event("Done", T0 + 1)]
    fetch = ScriptedPages({"object": "list", "data": data})
    plan = legacy_events("ft-legacy1")
    assert read_oldest_first(plan, fetch) == data
    assert fetch.requests == [
        ApiRequest(
            ("fine-tunes", "ft-legacy1", "events"), {"stream": False}, "GET events of fine-tune ft-legacy1"
        )
    ]


def test_legacy_skip_by_position_keeps_identical_consecutive_events():
    a, b = legacy_event("Epoch done"), legacy_event("Epoch done")
    data = [legacy_event("Created"), a, b, dict(a), legacy_event("Uploaded")]
    state = TailState(count=2)  # "Created" and the first "Epoch done" were delivered already
    got = read_oldest_first(legacy_tail_plan("ft-1", state), ScriptedPages({"data": data}))
    assert got == [legacy_event("Epoch done"), legacy_event("Epoch done"), legacy_event("Uploaded")]
    assert state.count == 5

    more = [*data, legacy_event("Uploaded"), legacy_event("Uploaded")]
    got = read_oldest_first(legacy_tail_plan("ft-1", state), ScriptedPages({"data": more}))
    assert got == [legacy_event("Uploaded"), legacy_event("Uploaded")]
    assert state.count == 7

    fetch = ScriptedPages({"data": more})
    assert read_oldest_first(legacy_tail_plan("ft-1", state), fetch) == []
    assert state.count == 7
    assert len(fetch.requests) == 1


def test_legacy_list_shorter_than_position_is_an_error():
    with pytest.raises(FineTuneEventsResponseError) as info:
        list(run_sync(legacy_events("ft-1", skip=3), ScriptedPages({"data": [legacy_event("x")]})))
    assert info.value.code == "events_lost"
    assert info.value.message == (
        "The legacy event list of job ft-1 has 1 events, fewer than the 3 already seen; "
        "the server lost events"
    )


# -- time bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 7, 23, tzinfo=dt.timezone.utc), T0),
        (dt.datetime(2024, 7, 23, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))), T0),
        (dt.datetime(2024, 7, 23), T0),  # naive: UTC
        (dt.date(2024, 7, 23), T0),
        ("2024-07-23T00:00:00Z", T0),
        ("2024-07-23T00:00:00z", T0),
        ("2024-07-23T00:00:01.5Z", T0 + 1.5),
        ("2024-07-23T02:00:00+02:00", T0),
        ("2024-07-23T00:00:00", T0),  # naive string: UTC
        ("2024-07-23", T0),
        (T0, T0),
        (T0 + 0.25, T0 + 0.25),
        (str(T0), T0),
        (" 12.5 ", 12.5),
        (0, 0),
    ],
)
def test_to_unix_seconds_accepts(value, expected):
    result = to_unix_seconds(value, "created_after")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize("value", [None, ""])
def test_to_unix_seconds_empty_is_unbounded(value):
    assert to_unix_seconds(value, "created_after") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "yesterday",
            "created_after must be a datetime, an ISO-8601 string (e.g. 2024-07-23T00:00:00Z) or unix "
            "seconds, got 'yesterday'",
        ),
        (
            "2024-13-01",
            "created_after must be a datetime, an ISO-8601 string (e.g. 2024-07-23T00:00:00Z) or unix "
            "seconds, got '2024-13-01'",
        ),
        (True, "created_after must be a datetime, an ISO-8601 string or unix seconds, got True"),
        (float("nan"), "created_after must be a finite number of unix seconds, got nan"),
        (float("inf"), "created_after must be a finite number of unix seconds, got inf"),
        ("nan", "created_after must be a finite number of unix seconds, got nan"),
        ("-inf", "created_after must be a finite number of unix seconds, got -inf"),
        ([1], "created_after must be a datetime, an ISO-8601 string or unix seconds, got list [1]"),
    ],
)
def test_to_unix_seconds_rejects_with_clear_message(value, message):
    with pytest.raises(ValueError) as info:
        to_unix_seconds(value, "created_after")
    assert str(info.value) == message


# -- job state -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        ("succeeded", True),
        ("failed", True),
        ("cancelled", True),
        ("Canceled", True),
        ("validating_files", False),
        ("queued", False),
        ("running", False),
        ("paused", False),
        ("pending", False),
        ("something_new", False),
        (None, False),
    ],
)
def test_terminal_statuses(status, terminal):
    assert jobstate.is_terminal(jobstate.job_status({"status": status})) is terminal


def test_job_status_normalizes_and_tolerates_unknown():
    assert jobstate.job_status({"status": " Canceled "}) == "cancelled"
    assert jobstate.job_status({"status": "SUCCEEDED"}) == "succeeded"
    assert jobstate.job_status({}) == "unknown"
    assert jobstate.job_status({"status": None}) == "unknown"
    assert jobstate.job_status({"status": "paused"}) == "paused"
    assert jobstate.is_known("paused") is True
    assert jobstate.is_known("pending") is True
    assert jobstate.is_known("something_new") is False


def test_job_summary_keys_and_values():
    job = {
        "id": "ftjob-1",
        "status": "succeeded",
        "fine_tuned_model": "ft:gpt-4o-mini:org::abc",
        "trained_tokens": 1234,
        "finished_at": T0 + 60,
        "hyperparameters": {"n_epochs": 3},
    }
    last = {**make_events(1)[0], "extra": "kept"}
    summary = jobstate.job_summary("ftjob-1", job, 42, last)
    assert summary == {
        "job_id": "ftjob-1",
        "status": "succeeded",
        "fine_tuned_model": "ft:gpt-4o-mini:org::abc",
        "trained_tokens": 1234,
        "finished_at": T0 + 60,
        "event_count": 42,
        "last_event": last,  # the event exactly as the API sent it, unknown fields included
    }
    assert summary["last_event"] is not last  # a copy: the summary does not alias the follower's state
    assert json.loads(json.dumps(summary)) == summary
    assert jobstate.job_summary("j", {"status": "running"}, 0, None) == {
        "job_id": "j",
        "status": "running",
        "fine_tuned_model": None,
        "trained_tokens": None,
        "finished_at": None,
        "event_count": 0,
        "last_event": None,
    }


def test_failure_message_with_error_and_error_events():
    job = {
        "status": "failed",
        "error": {
            "code": "invalid_n_examples",
            "message": "Training file has 5 example(s), but must have at least 10 examples",
            "param": "training_file",
        },
    }
    error_events = [
        {"level": "error", "message": "Training file has 5 example(s), but must have at least 10 examples"},
        {"level": "error", "message": "Job failed."},
    ]
    assert jobstate.failure_message("ftjob-1", job, error_events) == (
        "Fine-tuning job ftjob-1 failed; error: Training file has 5 example(s), but must have at least "
        "10 examples (code invalid_n_examples, param training_file); error events: Training file has 5 "
        "example(s), but must have at least 10 examples | Job failed."
    )


def test_failure_message_variants():
    assert jobstate.failure_message("j", {"status": "cancelled", "error": None}) == (
        "Fine-tuning job j cancelled"
    )
    assert jobstate.failure_message("j", {"status": "failed", "error": {"code": "server_error"}}) == (
        "Fine-tuning job j failed; error: (code server_error)"
    )
    assert jobstate.failure_message("j", {"status": "failed", "error": {"message": "Boom"}}) == (
        "Fine-tuning job j failed; error: Boom"
    )
    many = [{"message": f"e{i}"} for i in range(12)]
    assert jobstate.failure_message("j", {"status": "failed"}, many) == (
        "Fine-tuning job j failed; error events: " + " | ".join(f"e{i}" for i in range(2, 12))
    )


def test_format_event_metrics_error_and_null_data():
    metrics = {
        "level": "info",
        "type": "metrics",
        "message": "Step 10/100: training loss=1.23",
        "data": {"step": 10, "train_loss": 1.23456789, "total_steps": 100, "train_mean_token_accuracy": 0.5},
    }
    assert (
        jobstate.format_event(metrics)
        == "[metrics] step 10/100 train_loss=1.235 train_mean_token_accuracy=0.5"
    )
    assert jobstate.format_event({"type": "metrics", "data": {"step": 3}}) == "[metrics] step 3"
    error = {
        "level": "error",
        "type": "message",
        "message": "Training file has 5 example(s), but must have at least 10 examples",
        "data": {"error_code": "invalid_n_examples", "error_param": "training_file"},
    }
    assert jobstate.format_event(error) == (
        "[error] Training file has 5 example(s), but must have at least 10 examples"
    )
    assert (
        jobstate.format_event({"level": "info", "type": "metrics", "message": "m", "data": None})
        == "[info] m"
    )
    assert (
        jobstate.format_event({"type": "metrics", "message": "no step", "data": {"x": 1}}) == "[info] no step"
    )
    assert jobstate.format_event({"message": "Fine-tuning job started", "data": None}) == (
        "[info] Fine-tuning job started"
    )
    assert jobstate.format_event({}) == "[info] "


def test_log_event_uses_the_event_level(caplog):
    logger = logging.getLogger("test.ftevents.jobstate")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        jobstate.log_event(logger, {"level": "error", "message": "bad"})
        jobstate.log_event(logger, {"level": "warn", "message": "careful"})
        jobstate.log_event(logger, {"level": "info", "message": "fine"})
        jobstate.log_event(logger, {"message": "no level"})
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "[error] bad"),
        (logging.WARNING, "[warn] careful"),
        (logging.INFO, "[info] fine"),
        (logging.INFO, "[info] no level"),
    ]
