"""AsyncFineTuneEventsClient (httpx) against an ``httpx.MockTransport``: the trigger's I/O."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

import httpx
import pytest
from api_fakes import T0, events_page, make_events
from conftest import API_KEY

from airflow_ftevents.async_client import AsyncFineTuneEventsClient
from airflow_ftevents.core.api import job_request
from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.paging import TailState
from airflow_ftevents.errors import (
    FineTuneEventsAPIError,
    FineTuneEventsConnectionError,
    FineTuneEventsNotFoundError,
)

BASE = "https://api.test/v1"
JOB = "ftjob-async1"
JOB_PATH = f"/v1/fine_tuning/jobs/{JOB}"
EVENTS_PATH = f"{JOB_PATH}/events"


def query(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query.decode(), keep_blank_values=True)


class Server:
    """Records requests and answers them with ``self.respond(request)``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.events: list[dict] = []
        self.job_responses: list[httpx.Response | Exception] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == EVENTS_PATH:
            q = query(request)
            page = events_page(self.events, q.get("after", [None])[0], int(q.get("limit", ["20"])[0]))
            return httpx.Response(200, json=page)
        if path == JOB_PATH:
            outcome = self.job_responses.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        if path == "/v1/fine-tunes/ft-legacy1/events":
            return httpx.Response(200, json={"object": "list", "data": self.events})
        return httpx.Response(500, json={"error": {"message": f"unexpected path {path}"}})


@pytest.fixture
def server() -> Server:
    return Server()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    calls: list[float] = []

    async def fake_sleep(seconds: float, result=None):
        calls.append(seconds)
        return result

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return calls


class RecordingTransport(httpx.MockTransport):
    """A mock transport that remembers being closed."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def make_client(server: Server, config: ApiConfig | None = None, api: str = "fine_tuning"):
    config = config or ApiConfig(api_key=API_KEY, base_url=BASE, max_retries=2)
    return AsyncFineTuneEventsClient(config, api, transport=RecordingTransport(server.handler))


async def test_get_job(server):
    job = {"id": JOB, "status": "running", "error": None}
    server.job_responses.append(httpx.Response(200, json=job))
    async with await make_client(server) as client:
        assert await client.get_job(JOB) == job
    (request,) = server.requests
    assert str(request.url) == f"{BASE}/fine_tuning/jobs/{JOB}"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Accept-Encoding"] == "gzip, deflate"
    assert request.extensions["timeout"] == httpx.Timeout(600.0, connect=5.0).as_dict()
    assert client._transport.closed


async def test_read_new_events_oldest_first_and_only_new(server):
    state = TailState()
    server.events = make_events(5, null_data=True)
    async with await make_client(server) as client:
        got = [e async for e in client.read_new_events(JOB, state, page_size=2)]
        assert got == make_events(5, null_data=True)
        assert [query(r).get("after") for r in server.requests] == [
            None,
            ["ftevent-000003"],
            ["ftevent-000001"],
        ]
        assert state.to_dict() == {"last_id": "ftevent-000004", "last_created_at": T0 + 1, "count": 5}

        server.requests.clear()
        server.events = make_events(8, null_data=True)
        got = [e async for e in client.read_new_events(JOB, state, page_size=2)]
        assert [e["id"] for e in got] == ["ftevent-000005", "ftevent-000006", "ftevent-000007"]
        assert [query(r).get("after") for r in server.requests] == [None, ["ftevent-000006"]]
        assert state.to_dict() == {"last_id": "ftevent-000007", "last_created_at": T0 + 2, "count": 8}

        server.requests.clear()
        assert [e async for e in client.read_new_events(JOB, state, page_size=2)] == []
        assert len(server.requests) == 1
        assert state.count == 8


async def test_read_new_events_legacy_skips_by_position(server):
    same = {"object": "fine-tune-event", "created_at": T0, "level": "info", "message": "Epoch done"}
    server.events = [same, dict(same), dict(same)]
    state = TailState(count=1)
    async with await make_client(server, api="fine_tunes") as client:
        assert [e async for e in client.read_new_events("ft-legacy1", state)] == [same, same]
    assert state.count == 3
    assert query(server.requests[0]) == {"stream": ["false"]}


async def test_retry_on_503_then_success(server, sleeps):
    busy = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
    server.job_responses += [
        httpx.Response(503, json=busy, headers={"Retry-After": "1"}),
        httpx.Response(503, json=busy, headers={"retry-after-ms": "200"}),
        httpx.Response(200, json={"id": JOB, "status": "succeeded"}),
    ]
    async with await make_client(server) as client:
        assert await client.get_job(JOB) == {"id": JOB, "status": "succeeded"}
    assert len(server.requests) == 3
    assert sleeps == [1.0, 0.2]


async def test_503_exhausted_after_max_retries_plus_one(server, sleeps):
    body = {"error": {"message": "overloaded", "type": "server_error", "code": "busy"}}
    server.job_responses += [
        httpx.Response(503, json=body, headers={"x-request-id": "req_a1"}) for _ in range(5)
    ]
    async with await make_client(server) as client:
        with pytest.raises(FineTuneEventsAPIError) as info:
            await client.get_job(JOB)
    assert len(server.requests) == 3
    assert len(sleeps) == 2
    assert (info.value.status_code, info.value.code, info.value.message, info.value.request_id) == (
        503,
        "busy",
        "overloaded",
        "req_a1",
    )


async def test_404_fails_at_once(server, sleeps):
    server.job_responses.append(
        httpx.Response(
            404,
            json={"error": {"message": f"No such job: {JOB}", "type": "invalid_request_error", "code": None}},
            headers={"x-request-id": "req_404"},
        )
    )
    async with await make_client(server) as client:
        with pytest.raises(FineTuneEventsNotFoundError) as info:
            await client.get_job(JOB)
    assert len(server.requests) == 1
    assert sleeps == []
    assert (info.value.status_code, info.value.code, info.value.message, info.value.request_id) == (
        404,
        "invalid_request_error",
        f"No such job: {JOB}",
        "req_404",
    )


async def test_connection_errors_and_timeouts_are_retried(server, sleeps):
    server.job_responses += [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"status": "running"}),
    ]
    async with await make_client(server) as client:
        assert await client.get_job(JOB) == {"status": "running"}
    assert len(server.requests) == 3
    assert len(sleeps) == 2


async def test_timeout_exhausted_is_a_connection_error(server, sleeps):
    server.job_responses += [httpx.ReadTimeout("slow") for _ in range(3)]
    async with await make_client(server) as client:
        with pytest.raises(FineTuneEventsConnectionError) as info:
            await client.get_job(JOB)
    assert (info.value.code, info.value.message) == (
        "timeout",
        f"GET fine-tuning job {JOB} timed out (ReadTimeout)",
    )
    assert len(server.requests) == 3


async def test_azure_headers_and_escaped_job_id(server):
    config = ApiConfig(api_key=API_KEY, base_url=BASE, api_type="azure", api_version="2024-10-21")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "queued"})

    async with AsyncFineTuneEventsClient(config, transport=httpx.MockTransport(handler)) as client:
        await client.get_job("../x?y")
    (request,) = seen
    assert request.url.raw_path == b"/v1/fine_tuning/jobs/..%2Fx%3Fy?api-version=2024-10-21"
    assert request.headers["api-key"] == API_KEY
    assert "authorization" not in request.headers


async def test_repr_and_errors_hide_the_key(server, sleeps):
    body = {"error": {"message": f"Incorrect API key provided: {API_KEY}", "code": "invalid_api_key"}}
    server.job_responses.append(httpx.Response(401, content=json.dumps(body).encode()))
    async with await make_client(server) as client:
        with pytest.raises(FineTuneEventsAPIError) as info:
            await client.get_job(JOB)
        assert repr(client) == f"AsyncFineTuneEventsClient(base_url='{BASE}', api='fine_tuning')"
    assert info.value.message == "Incorrect API key provided: ***"
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)


async def test_from_connection_reads_the_airflow_connection(monkeypatch):
    from conftest import CONN_ID, connection_json

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(BASE, organization="org-a"))
    async with await AsyncFineTuneEventsClient.from_connection(CONN_ID, timeout=3, max_retries=1) as client:
        assert (client.config.base_url, client.config.organization) == (BASE, "org-a")
        assert (client.config.timeout, client.config.max_retries) == (3.0, 1)
        request = client.build_request(job_request("fine_tuning", JOB))
        assert request.extensions["timeout"] == httpx.Timeout(3.0, connect=5.0).as_dict()
        assert request.headers["Authorization"] == f"Bearer {API_KEY}"
        assert request.headers["OpenAI-Organization"] == "org-a"
        assert str(request.url) == f"{BASE}/fine_tuning/jobs/{JOB}"


async def test_one_client_serves_concurrent_calls_each_with_its_own_retries(server, sleeps, caplog):
    """The retry policy is built once per client; concurrent calls must not share their attempts."""
    busy = {"error": {"message": "overloaded", "type": "server_error", "code": None}}
    answers = {
        "ftjob-a": [httpx.Response(503, json=busy), httpx.Response(200, json={"status": "running"})],
        "ftjob-b": [httpx.Response(200, json={"status": "queued"})],
    }

    b_answered = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        job = request.url.path.rsplit("/", 1)[1]
        server.requests.append(request)
        if job == "ftjob-a" and len(answers[job]) == 2:
            await b_answered.wait()  # a's first attempt is still in flight while b runs and ends
        if job == "ftjob-b":
            b_answered.set()
        return answers[job].pop(0)

    caplog.set_level("WARNING", logger="airflow_ftevents.async_client")
    config = ApiConfig(api_key=API_KEY, base_url=BASE, max_retries=1)
    async with AsyncFineTuneEventsClient(config, transport=httpx.MockTransport(handler)) as client:
        a, b = await asyncio.gather(client.get_job("ftjob-a"), client.get_job("ftjob-b"))
    assert (a, b) == ({"status": "running"}, {"status": "queued"})
    assert [r.url.path for r in server.requests] == [
        "/v1/fine_tuning/jobs/ftjob-a",
        "/v1/fine_tuning/jobs/ftjob-b",
        "/v1/fine_tuning/jobs/ftjob-a",
    ]
    assert len(sleeps) == 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("GET fine-tuning job ftjob-a failed (")
    assert line.endswith(f"); retry 1 of 1 in {sleeps[0]:.2f} s")


def test_proxy_comes_from_the_environment_as_for_the_sync_hook(monkeypatch):
    from airflow_ftevents.async_client import environment_proxy

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.internal.test")
    assert environment_proxy("https://api.test/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert environment_proxy("https://api.test/v1") == "http://proxy.test:3128"
    assert environment_proxy("http://127.0.0.1:8000/v1") is None
    assert environment_proxy("https://llm.internal.test/v1") is None
    monkeypatch.setenv("ALL_PROXY", "socks5://proxy.test:1080")
    assert environment_proxy("http://api.test/v1") == "socks5://proxy.test:1080"


async def test_release_idle_closes_the_connection_only_before_a_long_sleep(sim) -> None:
    """Between polls the client drops its prepared requests; its connection only before a sleep of
    CLOSE_IDLE_AFTER_SECONDS or more (one TCP connection per poll then, the same one otherwise)."""
    from airflow_ftevents.async_client import CLOSE_IDLE_AFTER_SECONDS
    from airflow_ftevents.simulator import JobSpec

    job_id = sim.add_job(JobSpec(job_id="ftjob-idle", n_events=6, duration=0.0))
    config = ApiConfig(api_key=API_KEY, base_url=sim.base_url, max_retries=0)
    async with AsyncFineTuneEventsClient(config) as client:
        before = sim.connections_accepted
        assert (await client.get_job(job_id))["id"] == job_id
        await client.release_idle(CLOSE_IDLE_AFTER_SECONDS / 2)
        assert client._requests == {}
        assert (await client.get_job(job_id))["id"] == job_id
        assert sim.connections_accepted - before == 1
        await client.release_idle(CLOSE_IDLE_AFTER_SECONDS)
        assert client._transport is None
        assert (await client.get_job(job_id))["id"] == job_id
        assert sim.connections_accepted - before == 2
        await client.release_idle(CLOSE_IDLE_AFTER_SECONDS)
    assert client.is_closed
    with pytest.raises(RuntimeError, match="is closed and cannot send requests"):
        _ = client.transport
