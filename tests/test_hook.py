"""FineTuneEventsHook against requests-mock: paging, auth, retries, errors, streaming and masking.

The connection comes from ``AIRFLOW_CONN_OPENAI_DEFAULT`` (JSON form). ``time.sleep`` is replaced by a
recorder, so retries and polls do not wait and the requested delays can be asserted (tenacity's default
sleep, ``tenacity.nap.sleep``, calls ``time.sleep`` at call time).
"""

from __future__ import annotations

import email.utils
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from api_fakes import T0, events_page, legacy_event, make_events
from conftest import API_KEY, CONN_ID, connection_json

from airflow_ftevents.errors import (
    FineTuneEventsAPIError,
    FineTuneEventsAuthError,
    FineTuneEventsConnectionError,
    FineTuneEventsError,
    FineTuneEventsNotFoundError,
    FineTuneEventsPagingError,
    FineTuneEventsResponseError,
)

BASE = "https://api.test/v1"
JOB = "ftjob-abc123"
LEGACY_JOB = "ft-legacy123"
JOB_URL = f"{BASE}/fine_tuning/jobs/{JOB}"
EVENTS_URL = f"{JOB_URL}/events"
LEGACY_EVENTS_URL = f"{BASE}/fine-tunes/{LEGACY_JOB}/events"
ROOT = Path(__file__).resolve().parent.parent


def query(request) -> dict[str, list[str]]:
    """The exact query of a recorded request (requests-mock's ``qs`` lower-cases values)."""
    return parse_qs(urlsplit(request.url).query, keep_blank_values=True)


class EventsEndpoint:
    """A requests-mock callback for the current events endpoint: newest first, ``after`` walks back."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events

    def __call__(self, request, context):
        q = query(request)
        return events_page(self.events, q.get("after", [None])[0], int(q.get("limit", ["20"])[0]))


def error_body(message: str, code: str | None = None, type_: str = "server_error") -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@pytest.fixture
def conn(monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(BASE))
    return CONN_ID


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


@pytest.fixture
def hook(conn):
    from airflow_ftevents.hooks import FineTuneEventsHook

    h = FineTuneEventsHook(conn)
    yield h
    h.close()


@pytest.fixture
def legacy_hook(conn):
    from airflow_ftevents.hooks import FineTuneEventsHook

    h = FineTuneEventsHook(conn, api="fine_tunes")
    yield h
    h.close()


# -- reads ---------------------------------------------------------------------------------------


def test_get_job(hook, requests_mock):
    job = {"id": JOB, "object": "fine_tuning.job", "status": "running", "error": None}
    requests_mock.get(JOB_URL, json=job)
    assert hook.get_job(JOB) == job
    (request,) = requests_mock.request_history
    assert request.url == JOB_URL
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_get_job_without_status_is_a_response_error(hook, requests_mock):
    requests_mock.get(JOB_URL, json={"data": []})
    with pytest.raises(FineTuneEventsResponseError) as info:
        hook.get_job(JOB)
    assert info.value.code == "unexpected_shape"
    assert requests_mock.call_count == 1  # a wrong shape is not retried


def test_list_events_is_exactly_one_page_with_after_and_limit_passed_through(hook, requests_mock):
    page = {"object": "list", "data": make_events(3, start=2)[::-1], "has_more": True}
    requests_mock.get(EVENTS_URL, json=page)
    assert hook.list_events(JOB, after="ftevent-000005", limit=3) == page
    assert hook.list_events(JOB) == page
    first, second = requests_mock.request_history
    assert query(first) == {"after": ["ftevent-000005"], "limit": ["3"]}
    assert urlsplit(second.url).query == ""


def test_list_events_refuses_bad_limit_without_a_request(hook, requests_mock):
    with pytest.raises(ValueError, match="page_size must be a whole number >= 1, got 0"):
        hook.list_events(JOB, limit=0)
    assert requests_mock.call_count == 0


@pytest.mark.parametrize(("size", "page_size", "requests_made"), [(0, 100, 1), (250, 100, 3), (7, 2, 4)])
def test_iter_events_oldest_first_each_once_across_pages(hook, requests_mock, size, page_size, requests_made):
    events = make_events(size)
    requests_mock.get(EVENTS_URL, json=EventsEndpoint(events))
    assert list(hook.iter_events(JOB, page_size=page_size)) == events
    assert requests_mock.call_count == requests_made
    assert [query(r)["limit"] for r in requests_mock.request_history] == [[str(page_size)]] * requests_made


def test_iter_event_blocks_are_json_lines_oldest_first(hook, requests_mock):
    events = make_events(5)
    requests_mock.get(EVENTS_URL, json=EventsEndpoint(events))
    blob = b"".join(hook.iter_event_blocks(JOB, page_size=2))
    assert [json.loads(line) for line in blob.splitlines()] == events
    assert blob.endswith(b"\n")


def test_legacy_get_job_and_list_events(legacy_hook, requests_mock):
    data = [legacy_event("Created fine-tune"), legacy_event("Epoch 1"), legacy_event("Epoch 1")]
    requests_mock.get(f"{BASE}/fine-tunes/{LEGACY_JOB}", json={"id": LEGACY_JOB, "status": "pending"})
    requests_mock.get(LEGACY_EVENTS_URL, json={"object": "list", "data": data})
    assert legacy_hook.get_job(LEGACY_JOB) == {"id": LEGACY_JOB, "status": "pending"}
    assert legacy_hook.list_events(LEGACY_JOB) == {"object": "list", "data": data}
    assert list(legacy_hook.iter_events(LEGACY_JOB)) == data  # identical consecutive events kept
    assert [query(r) for r in requests_mock.request_history] == [
        {},
        {"stream": ["false"]},
        {"stream": ["false"]},
    ]


def test_legacy_list_events_refuses_after_and_limit(legacy_hook, requests_mock):
    with pytest.raises(ValueError, match="after and limit do not apply to the legacy fine-tunes API"):
        legacy_hook.list_events(LEGACY_JOB, limit=5)
    with pytest.raises(ValueError, match="after and limit do not apply"):
        legacy_hook.list_events(LEGACY_JOB, after="x")
    assert requests_mock.call_count == 0


def test_unknown_api_is_refused():
    from airflow_ftevents.hooks import FineTuneEventsHook

    with pytest.raises(ValueError, match=r"api must be 'fine_tuning' .* got 'v2'"):
        FineTuneEventsHook(api="v2")


# -- auth ----------------------------------------------------------------------------------------


def test_openai_headers(monkeypatch, requests_mock):
    from airflow_ftevents.hooks import FineTuneEventsHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT", connection_json(BASE, organization="org-1", project="proj_1")
    )
    requests_mock.get(JOB_URL, json={"status": "queued"})
    FineTuneEventsHook().get_job(JOB)
    headers = requests_mock.last_request.headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["OpenAI-Organization"] == "org-1"
    assert headers["OpenAI-Project"] == "proj_1"
    assert "api-key" not in headers


def test_azure_headers_and_api_version(monkeypatch, requests_mock):
    from airflow_ftevents.hooks import FineTuneEventsHook

    base = "https://res.openai.azure.com/openai"
    monkeypatch.setenv(
        "AIRFLOW_CONN_AZURE_FT", connection_json(base, api_type="azure", api_version="2024-10-21")
    )
    requests_mock.get(f"{base}/fine_tuning/jobs/{JOB}/events", json={"data": [], "has_more": False})
    FineTuneEventsHook("azure_ft").list_events(JOB, limit=5)
    request = requests_mock.last_request
    assert request.headers["api-key"] == API_KEY
    assert "Authorization" not in request.headers
    assert "OpenAI-Organization" not in request.headers
    assert query(request) == {"limit": ["5"], "api-version": ["2024-10-21"]}


def test_official_provider_connection_just_works(monkeypatch, requests_mock):
    from airflow_ftevents.hooks import FineTuneEventsHook

    conn = {
        "conn_type": "openai",
        "password": API_KEY,
        "extra": {
            "openai_client_kwargs": {
                "base_url": "https://gateway.example.com/openai/v1",
                "organization": "org-official",
                "project": "proj_official",
            }
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_OPENAI_DEFAULT", json.dumps(conn))
    requests_mock.get(
        f"https://gateway.example.com/openai/v1/fine_tuning/jobs/{JOB}", json={"status": "running"}
    )
    hook = FineTuneEventsHook()
    assert hook.get_job(JOB) == {"status": "running"}
    headers = requests_mock.last_request.headers
    assert (headers["Authorization"], headers["OpenAI-Organization"], headers["OpenAI-Project"]) == (
        f"Bearer {API_KEY}",
        "org-official",
        "proj_official",
    )
    assert hook.config.max_retries == 2  # the official client's default


def test_hook_arguments_override_connection_extras(conn):
    from airflow_ftevents.hooks import FineTuneEventsHook

    assert (FineTuneEventsHook(conn).config.timeout, FineTuneEventsHook(conn).config.max_retries) == (5.0, 3)
    hook = FineTuneEventsHook(conn, timeout=1.5, max_retries=0)
    assert (hook.config.timeout, hook.config.max_retries) == (1.5, 0)


def test_request_timeout_is_passed_on_every_request(hook, requests_mock):
    requests_mock.get(JOB_URL, json={"status": "running"})
    hook.get_job(JOB)
    assert requests_mock.last_request.timeout == (5.0, 5.0)  # (connect, read) from the connection


# -- retries -------------------------------------------------------------------------------------

OK_JOB = {"id": JOB, "status": "running"}


def _retry_after_date(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("status", "headers", "delay"),
    [
        (408, {}, None),
        (409, {}, None),
        (429, {"Retry-After": "2"}, (2.0, 2.0)),
        (429, {"retry-after-ms": "1500"}, (1.5, 1.5)),
        (429, {"retry-after-ms": "250", "Retry-After": "9"}, (0.25, 0.25)),
        (429, {"Retry-After": "120"}, None),  # beyond 60 s: ignored, backoff instead
        (500, {}, None),
        (502, {}, None),
        (503, {}, None),
        (504, {}, None),
        (400, {"x-should-retry": "true"}, None),
    ],
)
def test_retryable_status_then_success(hook, requests_mock, sleeps, status, headers, delay):
    requests_mock.get(
        JOB_URL,
        [
            {"status_code": status, "headers": headers, "json": error_body("try again")},
            {"status_code": status, "headers": headers, "json": error_body("try again")},
            {"status_code": 200, "json": OK_JOB},
        ],
    )
    assert hook.get_job(JOB) == OK_JOB
    assert requests_mock.call_count == 3
    if delay is not None:
        assert tuple(sleeps) == delay
    else:  # 0.5 s then 1 s, each times a factor in [0.75, 1]
        assert len(sleeps) == 2
        assert 0.375 <= sleeps[0] <= 0.5
        assert 0.75 <= sleeps[1] <= 1.0


def test_retry_after_http_date_is_honoured(hook, requests_mock, sleeps):
    requests_mock.get(
        JOB_URL,
        [
            {
                "status_code": 429,
                "headers": {"Retry-After": _retry_after_date(30)},
                "json": error_body("slow"),
            },
            {"status_code": 200, "json": OK_JOB},
        ],
    )
    assert hook.get_job(JOB) == OK_JOB
    assert requests_mock.call_count == 2
    (slept,) = sleeps
    assert 28.0 <= slept <= 30.0  # the date has whole-second resolution


def test_retry_after_http_date_in_the_past_retries_at_once(hook, requests_mock, sleeps):
    requests_mock.get(
        JOB_URL,
        [
            {"status_code": 503, "headers": {"Retry-After": _retry_after_date(-30)}, "json": error_body("x")},
            {"status_code": 200, "json": OK_JOB},
        ],
    )
    assert hook.get_job(JOB) == OK_JOB
    assert sleeps == [0.0]


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError,
        requests.exceptions.ReadTimeout,
        requests.exceptions.ConnectTimeout,
    ],
)
def test_transport_failures_then_success(hook, requests_mock, sleeps, exc):
    requests_mock.get(JOB_URL, [{"exc": exc}, {"exc": exc}, {"exc": exc}, {"json": OK_JOB}])
    assert hook.get_job(JOB) == OK_JOB
    assert requests_mock.call_count == 4  # max_retries=3 in the connection: the last allowed attempt
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    ("status", "headers", "cls"),
    [
        (429, {"Retry-After": "1"}, FineTuneEventsAPIError),
        (500, {}, FineTuneEventsAPIError),
        (503, {}, FineTuneEventsAPIError),
        (408, {}, FineTuneEventsAPIError),
    ],
)
def test_retryable_status_exhausted_after_max_retries_plus_one(
    hook, requests_mock, sleeps, status, headers, cls
):
    requests_mock.get(
        JOB_URL,
        status_code=status,
        headers={"x-request-id": "req_abc123", **headers},
        json=error_body("The server had an error while processing your request", "server_busy"),
    )
    with pytest.raises(FineTuneEventsError) as info:
        hook.get_job(JOB)
    exc = info.value
    assert type(exc) is cls
    assert requests_mock.call_count == 4
    assert len(sleeps) == 3
    assert (exc.status_code, exc.code, exc.message, exc.request_id) == (
        status,
        "server_busy",
        "The server had an error while processing your request",
        "req_abc123",
    )
    assert str(exc).startswith(
        f"[HTTP {status}, code=server_busy] The server had an error while processing your request "
        "(request id req_abc123). "
    )


def test_max_retries_zero_means_one_attempt(conn, requests_mock, sleeps):
    from airflow_ftevents.hooks import FineTuneEventsHook

    requests_mock.get(JOB_URL, status_code=503, json=error_body("down"))
    with pytest.raises(FineTuneEventsAPIError):
        FineTuneEventsHook(conn, max_retries=0).get_job(JOB)
    assert (requests_mock.call_count, sleeps) == (1, [])


def test_connection_error_exhausted(hook, requests_mock, sleeps):
    requests_mock.get(JOB_URL, exc=requests.exceptions.ConnectionError("Connection refused"))
    with pytest.raises(FineTuneEventsConnectionError) as info:
        hook.get_job(JOB)
    assert requests_mock.call_count == 4
    assert (info.value.status_code, info.value.code, info.value.request_id) == (
        None,
        "connection_error",
        None,
    )
    assert info.value.message == f"GET fine-tuning job {JOB} failed: ConnectionError: Connection refused"


def test_timeout_exhausted(hook, requests_mock, sleeps):
    requests_mock.get(JOB_URL, exc=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(FineTuneEventsConnectionError) as info:
        hook.get_job(JOB)
    assert requests_mock.call_count == 4
    assert (info.value.code, info.value.message) == (
        "timeout",
        f"GET fine-tuning job {JOB} timed out (ReadTimeout)",
    )
    assert "within 5 s" in str(info.value)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, FineTuneEventsAPIError),
        (401, FineTuneEventsAuthError),
        (403, FineTuneEventsAuthError),
        (404, FineTuneEventsNotFoundError),
        (422, FineTuneEventsAPIError),
    ],
)
def test_client_errors_fail_at_once(hook, requests_mock, sleeps, status, cls):
    requests_mock.get(
        JOB_URL,
        status_code=status,
        headers={"x-request-id": "req_4xx"},
        json=error_body("Nope", "some_code", "invalid_request_error"),
    )
    with pytest.raises(FineTuneEventsError) as info:
        hook.get_job(JOB)
    assert type(info.value) is cls
    assert (requests_mock.call_count, sleeps) == (1, [])
    assert (info.value.status_code, info.value.code, info.value.message, info.value.request_id) == (
        status,
        "some_code",
        "Nope",
        "req_4xx",
    )


def test_x_should_retry_false_stops_a_503_at_once(hook, requests_mock, sleeps):
    requests_mock.get(JOB_URL, status_code=503, headers={"x-should-retry": "false"}, json=error_body("no"))
    with pytest.raises(FineTuneEventsAPIError):
        hook.get_job(JOB)
    assert (requests_mock.call_count, sleeps) == (1, [])


def test_azure_404_error_body(hook, requests_mock):
    requests_mock.get(
        JOB_URL, status_code=404, json={"error": {"code": "404", "message": "Resource not found"}}
    )
    with pytest.raises(FineTuneEventsNotFoundError) as info:
        hook.get_job(JOB)
    assert (info.value.code, info.value.message) == ("404", "Resource not found")


def test_non_json_success_body(hook, requests_mock, sleeps):
    html = "<html><head><title>Gateway</title></head><body>Please sign in</body></html>"
    requests_mock.get(JOB_URL, status_code=200, text=html, headers={"Content-Type": "text/html"})
    with pytest.raises(FineTuneEventsResponseError) as info:
        hook.get_job(JOB)
    assert requests_mock.call_count == 4  # treated as transient, bounded by max_retries
    assert (info.value.status_code, info.value.code) == (200, "invalid_json")
    assert info.value.message == (
        f"GET fine-tuning job {JOB} returned HTTP 200 with a body that is not JSON (text/html): '{html}'"
    )


def test_non_json_success_body_then_json(hook, requests_mock, sleeps):
    requests_mock.get(JOB_URL, [{"text": "<html>oops</html>"}, {"json": OK_JOB}])
    assert hook.get_job(JOB) == OK_JOB
    assert requests_mock.call_count == 2


def test_has_more_with_empty_page_ends_in_error(hook, requests_mock, sleeps):
    requests_mock.get(EVENTS_URL, json={"object": "list", "data": [], "has_more": True})
    with pytest.raises(FineTuneEventsPagingError) as info:
        list(hook.iter_events(JOB))
    assert info.value.code == "empty_page_has_more"
    assert requests_mock.call_count == 1
    assert sleeps == []


def test_repeated_cursor_ends_in_error(hook, requests_mock):
    requests_mock.get(EVENTS_URL, json={"object": "list", "data": make_events(3)[::-1], "has_more": True})
    with pytest.raises(FineTuneEventsPagingError) as info:
        list(hook.iter_events(JOB, page_size=3))
    assert info.value.code == "repeated_cursor"
    assert requests_mock.call_count == 2
    assert [query(r).get("after") for r in requests_mock.request_history] == [None, ["ftevent-000000"]]


def test_nothing_is_yielded_before_the_whole_read_succeeded(hook, requests_mock):
    requests_mock.get(
        EVENTS_URL,
        [
            {"json": {"data": make_events(2, start=2)[::-1], "has_more": True}},
            {"json": {"data": [], "has_more": True}},
        ],
    )
    got = []
    with pytest.raises(FineTuneEventsPagingError):
        for event in hook.iter_events(JOB, page_size=2):
            got.append(event)
    assert got == []


@pytest.mark.parametrize(
    ("job_id", "path"),
    [
        ("../x?y", "/v1/fine_tuning/jobs/..%2Fx%3Fy/events"),
        ("a/b c", "/v1/fine_tuning/jobs/a%2Fb%20c/events"),
        ("x&limit=1#frag", "/v1/fine_tuning/jobs/x%26limit%3D1%23frag/events"),
    ],
)
def test_job_id_is_path_escaped(hook, requests_mock, job_id, path):
    requests_mock.get(requests_mock_any(), json={"object": "list", "data": [], "has_more": False})
    hook.list_events(job_id)
    list(hook.iter_events(job_id, page_size=7))
    first, second = requests_mock.request_history
    assert (urlsplit(first.url).path, urlsplit(first.url).query, urlsplit(first.url).fragment) == (
        path,
        "",
        "",
    )
    assert (urlsplit(second.url).path, query(second)) == (path, {"limit": ["7"]})


@pytest.mark.parametrize("job_id", ["", ".", ".."])
def test_job_id_that_would_change_the_path_is_refused_without_a_request(hook, requests_mock, job_id):
    requests_mock.get(requests_mock_any(), json={"status": "running", "data": [], "has_more": False})
    for call in (hook.get_job, hook.list_events, lambda j: list(hook.iter_events(j))):
        with pytest.raises(ValueError, match="it would change the request path"):
            call(job_id)
    assert requests_mock.call_count == 0


def requests_mock_any():
    import requests_mock

    return requests_mock.ANY


# -- live following (current API) ---------------------------------------------------------------


class LiveJob:
    """A job whose status and events advance each time its status is read."""

    def __init__(self, script: list[tuple[str, int]]) -> None:
        self.script = script  # (status, number of events existing from that poll on)
        self.polls = 0
        self.all_events = make_events(max(n for _, n in script))
        self.events = EventsEndpoint([])

    def job(self, request, context):
        status, count = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        self.events.events = self.all_events[:count]
        return {"id": JOB, "status": status}


def test_stream_events_current_api_yields_each_event_once_and_returns_on_terminal(
    hook, requests_mock, sleeps
):
    live = LiveJob([("validating_files", 2), ("paused", 5), ("running", 9), ("failed", 11)])
    requests_mock.get(JOB_URL, json=live.job)
    requests_mock.get(EVENTS_URL, json=live.events)
    got = list(hook.stream_events(JOB, poll_interval=7.5, page_size=2))
    assert got == live.all_events
    assert live.polls == 4
    # every wait comes from core.polling: poll_interval, shortened by up to 10% (jitter)
    assert len(sleeps) == 3 and all(7.5 * 0.9 <= s <= 7.5 for s in sleeps)
    event_requests = [r for r in requests_mock.request_history if r.url.startswith(EVENTS_URL)]
    # each poll reads the newest page, then further back only until the newest id already seen
    assert [query(r).get("after", [None])[0] for r in event_requests] == [
        None,
        None,
        "ftevent-000003",
        None,
        "ftevent-000007",
        "ftevent-000005",
        None,
        "ftevent-000009",
    ]


def test_stream_events_reads_events_once_more_after_terminal_status(hook, requests_mock, sleeps):
    live = LiveJob([("running", 1), ("succeeded", 4)])  # the last events appear with the terminal status
    requests_mock.get(JOB_URL, json=live.job)
    requests_mock.get(EVENTS_URL, json=live.events)
    assert [e["id"] for e in hook.stream_events(JOB, poll_interval=0)] == [
        "ftevent-000000",
        "ftevent-000001",
        "ftevent-000002",
        "ftevent-000003",
    ]
    assert sleeps == [0]


def test_stream_events_resumes_from_a_state(hook, requests_mock, sleeps):
    from airflow_ftevents.core.paging import TailState

    events = make_events(6)
    requests_mock.get(JOB_URL, json={"status": "cancelled"})
    requests_mock.get(EVENTS_URL, json=EventsEndpoint(events))
    state = TailState.from_dict({"last_id": "ftevent-000003", "last_created_at": T0 + 1, "count": 4})
    assert list(hook.stream_events(JOB, state=state)) == events[4:]
    assert state.to_dict() == {"last_id": "ftevent-000005", "last_created_at": T0 + 1, "count": 6}
    assert sleeps == []


def test_stream_events_refuses_negative_poll_interval(hook):
    with pytest.raises(ValueError, match="poll_interval must be >= 0 seconds, got -1"):
        next(hook.stream_events(JOB, poll_interval=-1))


# -- legacy server-sent events -------------------------------------------------------------------


def sse_body(events: list[dict], done: bool = True, eol: str = "\n") -> bytes:
    text = "".join(f"data: {json.dumps(e)}{eol}{eol}" for e in events)
    if done:
        text += f"data: [DONE]{eol}{eol}"
    return text.encode()


LEGACY_STREAM = [
    legacy_event("Created fine-tune: ft-legacy123"),
    legacy_event("Fine-tune costs $0.01"),
    legacy_event("Fine-tune enqueued"),
    legacy_event("Fine-tune enqueued"),  # identical consecutive events are legitimate
    legacy_event("Completed epoch 1/4", T0 + 1),
    legacy_event("Completed epoch 1/4", T0 + 1),
    legacy_event("Fine-tune succeeded", T0 + 2),
]


def test_legacy_stream_to_done(legacy_hook, requests_mock, sleeps):
    body = b": keep-alive\n\n" + sse_body(LEGACY_STREAM, eol="\r\n") + b"data: ignored after done\n\n"
    requests_mock.get(LEGACY_EVENTS_URL, content=body, headers={"Content-Type": "text/event-stream"})
    assert list(legacy_hook.stream_events(LEGACY_JOB)) == LEGACY_STREAM
    request = requests_mock.last_request
    assert query(request) == {"stream": ["true"]}
    assert request.headers["Accept"] == "text/event-stream"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert (requests_mock.call_count, sleeps) == (1, [])


def test_legacy_stream_reconnects_after_end_without_done(legacy_hook, requests_mock, sleeps):
    requests_mock.get(
        LEGACY_EVENTS_URL,
        [
            {"content": sse_body(LEGACY_STREAM[:3], done=False)},  # dropped in the middle of the run
            {"content": sse_body(LEGACY_STREAM[:5], done=False)},  # replays from the start, then drops
            {"content": sse_body(LEGACY_STREAM)},
        ],
    )
    got = list(legacy_hook.stream_events(LEGACY_JOB))
    assert got == LEGACY_STREAM  # no duplicates, no gaps, repeated identical events all kept
    assert requests_mock.call_count == 3
    assert len(sleeps) == 2
    assert all(0.375 <= s <= 0.5 for s in sleeps)  # progress resets the backoff


def test_legacy_stream_drop_between_identical_events(legacy_hook, requests_mock, sleeps):
    requests_mock.get(
        LEGACY_EVENTS_URL,
        [{"content": sse_body(LEGACY_STREAM[:3], done=False)}, {"content": sse_body(LEGACY_STREAM)}],
    )
    assert list(legacy_hook.stream_events(LEGACY_JOB)) == LEGACY_STREAM


class _DroppingBody(io.RawIOBase):
    """A body that delivers some bytes, then fails like a reset connection."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self._data:
            raise ConnectionResetError("connection reset by peer")
        n = min(len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_legacy_stream_reconnects_after_a_reset_mid_stream(legacy_hook, requests_mock, sleeps):
    requests_mock.get(
        LEGACY_EVENTS_URL,
        [
            {"body": _DroppingBody(sse_body(LEGACY_STREAM[:4], done=False) + b'data: {"obj')},
            {"content": sse_body(LEGACY_STREAM)},
        ],
    )
    assert list(legacy_hook.stream_events(LEGACY_JOB)) == LEGACY_STREAM
    assert requests_mock.call_count == 2


def test_legacy_stream_repeated_drops_without_progress_fail(legacy_hook, requests_mock, sleeps):
    requests_mock.get(LEGACY_EVENTS_URL, content=sse_body(LEGACY_STREAM[:2], done=False))
    got = []
    with pytest.raises(FineTuneEventsConnectionError) as info:
        for event in legacy_hook.stream_events(LEGACY_JOB):
            got.append(event)
    assert got == LEGACY_STREAM[:2]
    # the first connection made progress; then max_retries (3) reconnects without any
    assert requests_mock.call_count == 4
    assert len(sleeps) == 3
    assert info.value.code == "stream_dropped"
    assert info.value.message == (
        f"The event stream of fine-tune {LEGACY_JOB} failed 4 times in a row without new events "
        f"(last: The event stream of fine-tune {LEGACY_JOB} ended before [DONE] after 2 events)"
    )


def test_legacy_stream_retries_5xx_then_streams(legacy_hook, requests_mock, sleeps):
    requests_mock.get(
        LEGACY_EVENTS_URL,
        [
            {"status_code": 503, "headers": {"Retry-After": "4"}, "json": error_body("busy")},
            {"content": sse_body(LEGACY_STREAM)},
        ],
    )
    assert list(legacy_hook.stream_events(LEGACY_JOB)) == LEGACY_STREAM
    assert sleeps == [4.0]


def test_legacy_stream_404_fails_at_once(legacy_hook, requests_mock, sleeps):
    requests_mock.get(
        LEGACY_EVENTS_URL,
        status_code=404,
        headers={"x-request-id": "req_l404"},
        json=error_body("No such fine-tune", "not_found", "invalid_request_error"),
    )
    with pytest.raises(FineTuneEventsNotFoundError) as info:
        list(legacy_hook.stream_events(LEGACY_JOB))
    assert (info.value.message, info.value.request_id, info.value.code) == (
        "No such fine-tune",
        "req_l404",
        "not_found",
    )
    assert (requests_mock.call_count, sleeps) == (1, [])


# -- masking -------------------------------------------------------------------------------------

ECHO_401 = {
    "error": {
        "message": f"Incorrect API key provided: {API_KEY}.",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}
ECHO_500 = {"error": {"message": f"Internal error for key {API_KEY}", "type": "server_error", "code": None}}


@pytest.mark.parametrize(("status", "body", "attempts"), [(401, ECHO_401, 1), (500, ECHO_500, 4)])
def test_api_key_never_appears_in_errors_reprs_or_logs(
    hook, requests_mock, sleeps, caplog, capsys, status, body, attempts
):
    requests_mock.get(JOB_URL, status_code=status, json=body, headers={"x-request-id": f"req_{API_KEY}"[:12]})
    with caplog.at_level(logging.DEBUG), pytest.raises(FineTuneEventsError) as info:
        hook.get_job(JOB)
    exc = info.value
    assert requests_mock.call_count == attempts
    assert "***" in exc.message  # the echoed key was replaced, the rest of the message kept
    captured = capsys.readouterr()
    texts = [
        str(exc),
        repr(exc),
        repr(exc.args),
        exc.message,
        str(exc.code),
        repr(hook),
        repr(hook.config),
        caplog.text,
        captured.out,
        captured.err,
    ]
    for text in texts:
        assert API_KEY not in text
    if status == 500:  # the retries were logged, without the key
        logged = caplog.text + captured.out + captured.err
        assert "retry 1 of 3" in logged
        assert "Internal error for key ***" in logged
    assert repr(hook) == "FineTuneEventsHook(conn_id='openai_default', api='fine_tuning')"


def test_api_key_is_registered_with_the_secrets_masker(hook):
    from airflow.sdk.log import redact

    hook.config  # noqa: B018 - reading the connection registers the key
    assert API_KEY not in str(redact(f"the key is {API_KEY}"))


def test_connection_error_message_is_redacted(hook, requests_mock, sleeps):
    requests_mock.get(JOB_URL, exc=requests.exceptions.ConnectionError(f"proxy refused {API_KEY}"))
    with pytest.raises(FineTuneEventsConnectionError) as info:
        hook.get_job(JOB)
    assert API_KEY not in str(info.value)
    assert "proxy refused ***" in info.value.message


# -- test_connection -----------------------------------------------------------------------------


def test_test_connection_ok(hook, requests_mock):
    requests_mock.get(f"{BASE}/fine_tuning/jobs", json={"object": "list", "data": [], "has_more": False})
    assert hook.test_connection() == (True, f"Connection OK: listed fine-tuning jobs at {BASE}")
    assert query(requests_mock.last_request) == {"limit": ["1"]}
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_test_connection_bad_key(hook, requests_mock, sleeps):
    requests_mock.get(f"{BASE}/fine_tuning/jobs", status_code=401, json=ECHO_401)
    ok, message = hook.test_connection()
    assert ok is False
    assert message == (
        "[HTTP 401, code=invalid_api_key] Incorrect API key provided: ***.. "
        "Check the API key in the connection's password (and extra 'api_type' for Azure)"
    )


def test_test_connection_never_raises(monkeypatch, requests_mock, sleeps):
    from airflow_ftevents.hooks import FineTuneEventsHook

    monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
    assert FineTuneEventsHook("nope").test_connection() == (
        False,
        "AirflowNotFoundException: The conn_id `nope` isn't defined",
    )

    monkeypatch.setenv("AIRFLOW_CONN_NOKEY", json.dumps({"conn_type": "openai_ftevents", "host": BASE}))
    assert FineTuneEventsHook("nokey").test_connection() == (
        False,
        "The connection has no API key. Put the API key in the connection's password field",
    )

    monkeypatch.setenv("AIRFLOW_CONN_DOWN", connection_json(BASE, max_retries=0))
    requests_mock.get(f"{BASE}/fine_tuning/jobs", exc=requests.exceptions.ConnectionError("refused"))
    assert FineTuneEventsHook("down").test_connection() == (
        False,
        "[code=connection_error] GET fine-tuning jobs failed: ConnectionError: refused. "
        f"Check that {BASE} is reachable; the connection failed on every retry",
    )
    assert requests_mock.call_count == 1


# -- import hygiene ------------------------------------------------------------------------------


def test_hooks_import_without_warnings():
    venv_python = ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    result = subprocess.run(
        [python, "-W", "error", "-c", "import airflow_ftevents.hooks"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
