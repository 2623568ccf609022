"""Time windows of events (EventWindow) and the time bounds they are made of (to_unix_seconds)."""

from __future__ import annotations

import datetime as dt

import pytest
from api_fakes import JOB, T0, FakeEventsApi, ids, make_events, read_oldest_first

from airflow_ftevents.core.paging import walk_back
from airflow_ftevents.core.window import EventWindow, to_unix_seconds

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
