"""The core's paging plans: walking back through the events, tailing new ones, the legacy positions.

Plans are driven with ``drivers.run_sync`` against in-memory fake pages (no HTTP, ``api_fakes``), and
the pages they emit (newest first) are turned oldest first through ``ReverseSpool``, as the hook does.
"""

from __future__ import annotations

import json

import pytest
from api_fakes import (
    JOB,
    T0,
    FakeEventsApi,
    ScriptedPages,
    ids,
    legacy_event,
    make_events,
    read_oldest_first,
)
from hypothesis import given, settings
from hypothesis import strategies as st

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
from airflow_ftevents.errors import FineTuneEventsPagingError, FineTuneEventsResponseError

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


def test_walk_back_stop_predicate_excludes_the_stop_event():
    api = FakeEventsApi(make_events(10))
    pages = list(run_sync(walk_back(JOB, 4, stop=lambda e: e["id"] == "ftevent-000005"), api))
    assert [ids(p) for p in pages] == [
        ["ftevent-000009", "ftevent-000008", "ftevent-000007", "ftevent-000006"],
    ]
    assert len(api.requests) == 2  # the second page held the stop event at its top


def test_walk_back_first_page_size_only_sizes_the_first_request():
    api = FakeEventsApi(make_events(7), send_has_more=False)  # has_more inferred from each page's limit
    assert ids(read_oldest_first(walk_back(JOB, 3, first_page_size=2), api)) == ids(make_events(7))
    assert [r.params["limit"] for r in api.requests] == [2, 3, 3]
    with pytest.raises(ValueError, match="page_size must be a whole number >= 1, got 0"):
        list(run_sync(walk_back(JOB, 3, first_page_size=0), api))


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
