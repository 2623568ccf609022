"""The reading path's spill forms and decoder: same events, same bytes, whatever form a page took.

The spool writes a spilled page as the response body it came in (``iter_events``), as marshal data
(pages without a body), or as JSON lines (the export, and pages marshal refuses); each is read back
both ways. The decoder is msgspec with ``json.loads`` behind it, so values and errors are the stdlib's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import API_KEY

from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.jsonl import event_line
from airflow_ftevents.core.responses import decode_json, loads, loads_lines
from airflow_ftevents.core.spool import DEFAULT_MAX_EVENTS_IN_MEMORY, ReverseSpool
from airflow_ftevents.core.window import EventWindow
from airflow_ftevents.errors import FineTuneEventsResponseError
from airflow_ftevents.hooks import FineTuneEventsHook
from airflow_ftevents.simulator import JobSpec


def make_events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "object": "fine_tuning.job.event",
            "id": f"ftevent-{i:06d}",
            "created_at": 1_700_000_000 + i,
            "level": "info",
            "message": f"Step {i} é",
            "data": {"step": i, "loss": 1 / (i + 1)},
            "type": "metrics",
        }
        for i in range(n)
    ]


def page_body(events_newest_first: list[dict[str, Any]]) -> bytes:
    return json.dumps({"object": "list", "data": events_newest_first, "has_more": True}).encode()


class EventDict(dict):
    """A caller's own dict type: marshal refuses it (JSON does not), so its page spills as JSON lines."""


# -- the spool's forms -------------------------------------------------------------------------------


@pytest.mark.parametrize("spill", ["events", "lines"])
def test_pages_with_their_bodies_read_back_the_same_both_ways(spill):
    events = make_events(40)
    pages = [events[i : i + 10][::-1] for i in range(30, -1, -10)]  # newest page first, each newest first
    with ReverseSpool(max_events_in_memory=15, spill=spill) as spool:
        for page in pages:
            spool.add_page(page, page_body(page))
        assert spool.spilled is True
        assert list(spool.iter_events()) == events
        assert b"".join(spool.iter_pages()) == b"".join(event_line(e) for e in events)
        assert [len(p) for p in spool.iter_event_pages()] == [10, 10, 10, 10]


def test_marshal_and_lines_pages_mix_in_one_spool():
    events = make_events(30)
    with ReverseSpool(max_events_in_memory=5) as spool:
        spool.add_page(events[20:][::-1])  # no body: marshal
        spool.add_page([EventDict(e) for e in events[10:20][::-1]])  # marshal refuses it: lines
        spool.add_page(events[:10][::-1], page_body(events[:10][::-1]))  # the body as it came
        assert spool.count == 30
        assert list(spool.iter_events()) == events
        assert b"".join(spool.iter_pages()) == b"".join(event_line(e) for e in events)


def test_events_in_memory_are_new_dicts_and_an_unknown_spill_form_is_refused():
    events = make_events(3)
    with ReverseSpool() as spool:
        spool.add_page(events[::-1])
        out = list(spool.iter_events())
        assert out == events and all(a is not b for a, b in zip(out, events, strict=True))
        assert spool.spilled is False
    with pytest.raises(ValueError, match=r"spill must be one of \['events', 'lines'\], got 'json'"):
        ReverseSpool(spill="json")  # type: ignore[arg-type]


# -- the decoder ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":[1,2.5,"\\u00e9",null,true],"b":{}}',
        b"123456789012345678901234567890",  # bigger than 64 bits
        b'{"a":NaN,"b":Infinity}',  # msgspec refuses these: json.loads decodes them
        b"1e400",
        b'\xef\xbb\xbf{"a":1}',  # byte order mark
        '{"a":"é"}'.encode("utf-16"),
        b'"\\ud800"',  # lone surrogate
        b'{"a":1,"a":2}',
    ],
)
def test_loads_gives_what_json_loads_gives(body):
    assert repr(loads(body)) == repr(json.loads(body))


def test_loads_lines_decodes_a_block_and_falls_back_line_by_line():
    events = make_events(5)
    block = b"".join(event_line(e) for e in events)
    assert loads_lines(block) == events
    assert loads_lines(b"") == []
    assert repr(loads_lines(b'{"x":NaN}\n{"y":1}\n')) == repr([{"x": float("nan")}, {"y": 1}])


def test_a_body_that_is_not_json_is_still_named_as_such():
    with pytest.raises(
        FineTuneEventsResponseError, match=r"GET x returned HTTP 200 with a body that is not JSON"
    ):
        decode_json(200, {"content-type": "text/html"}, b"<html>proxy</html>", "GET x")


# -- the hook, over HTTP ----------------------------------------------------------------------------------


def test_iter_events_past_the_memory_bound_spools_bodies_and_gives_every_event_once(sim, monkeypatch):
    n = DEFAULT_MAX_EVENTS_IN_MEMORY + 2_345
    sim.add_job(JobSpec(job_id="ftjob-spill", n_events=n))
    hook = FineTuneEventsHook.from_config(ApiConfig(base_url=sim.base_url, api_key=API_KEY))
    bodies: list[bytes | None] = []
    add_page = ReverseSpool.add_page

    def recording(self: ReverseSpool, events: Any, body: bytes | None = None) -> None:
        bodies.append(body)
        add_page(self, events, body)

    monkeypatch.setattr(ReverseSpool, "add_page", recording)
    try:
        events = list(hook.iter_events("ftjob-spill"))
    finally:
        hook.close()
    assert events == sim.events("ftjob-spill")
    assert len(bodies) == 74 and all(body is not None for body in bodies)  # each page with its body


def test_a_window_cuts_pages_which_then_spill_without_their_bodies(sim):
    sim.add_job(JobSpec(job_id="ftjob-cut", n_events=7_000))
    every = sim.events("ftjob-cut")
    window = EventWindow(start=every[100]["created_at"], end=every[6_500]["created_at"])
    hook = FineTuneEventsHook.from_config(ApiConfig(base_url=sim.base_url, api_key=API_KEY))
    try:
        events = list(hook.iter_events("ftjob-cut", window=window))
        blocks = b"".join(hook.iter_event_blocks("ftjob-cut", window=window))
    finally:
        hook.close()
    expected = [e for e in every if window.contains(e)]
    assert len(expected) > DEFAULT_MAX_EVENTS_IN_MEMORY  # so both reads spilled
    assert events == expected
    assert blocks == b"".join(event_line(e) for e in expected)


def test_a_page_keeps_the_body_only_when_it_is_exactly_that_bodys_data():
    hook = FineTuneEventsHook.from_config(ApiConfig(base_url="http://127.0.0.1:9/v1", api_key=API_KEY))
    events = make_events(4)
    hook._last_response = (b"body", {"data": events})
    assert hook._body_of(list(events)) == b"body"
    assert hook._body_of(events[1:]) is None  # cut by a window or a stop
    assert hook._body_of([dict(e) for e in events]) is None  # equal, but not the decoded objects
    hook._last_response = (b"body", [events])
    assert hook._body_of(events) is None
