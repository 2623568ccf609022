"""ReverseSpool: newest-first pages in, oldest-first events out, in memory or spilled to a file."""

from __future__ import annotations

from api_fakes import JOB, FakeEventsApi, make_events, read_oldest_first

from airflow_ftevents.core.paging import walk_back
from airflow_ftevents.core.spool import ReverseSpool, event_line


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
