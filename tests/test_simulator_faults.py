"""Injected faults, as they look on the wire: statuses, delays, resets, cut bodies and streams, shapes."""

from __future__ import annotations

import json
import re
import socket
import time
from email.utils import parsedate_to_datetime

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    REQUEST_ID,
    SIM_KEY,
    add,
    job_url,
    jobs_url,
    read_stream,
    sse_lines,
)

from airflow_ftevents.simulator import FAULT_KINDS, Simulator  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


def test_rate_limit_fault_headers(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)
    url = job_url(simulator, job_id, "/events")
    simulator.inject("429", retry_after="2")
    simulator.inject("429", retry_after_ms="150")
    simulator.inject("429", retry_after_date=True)
    first, second, third = (http.get(url) for _ in range(3))
    for response in (first, second, third):
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert REQUEST_ID.match(response.headers["x-request-id"])
    assert first.headers["Retry-After"] == "2" and "retry-after-ms" not in first.headers
    assert second.headers["retry-after-ms"] == "150" and "Retry-After" not in second.headers
    when = parsedate_to_datetime(third.headers["Retry-After"]).timestamp()
    assert time.time() - 1.5 <= when <= time.time() + 2.5
    assert http.get(url).status_code == 200
    assert [status for _, _, status in simulator.request_log] == [429, 429, 429, 200]


@pytest.mark.parametrize("kind", ["500", "502", "503", "408", "409"])
def test_status_faults_send_api_error_bodies(simulator: Simulator, http: requests.Session, kind: str) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject(kind, count=2, headers={"x-should-retry": "true"})
    for _ in range(2):
        response = http.get(job_url(simulator, job_id))
        assert response.status_code == int(kind)
        assert response.headers["x-should-retry"] == "true"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == ("server_error" if kind.startswith("5") else "invalid_request_error")
    assert http.get(job_url(simulator, job_id)).status_code == 200


def test_slow_fault_delays_the_response(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject("slow", delay=0.4)
    started = time.monotonic()
    assert http.get(job_url(simulator, job_id)).status_code == 200
    assert time.monotonic() - started >= 0.4
    with pytest.raises(requests.exceptions.ReadTimeout):  # the client gives up before the answer comes
        simulator.inject("slow", delay=1.0)
        http.get(job_url(simulator, job_id), timeout=0.2)


def test_reset_closes_without_a_response(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject("reset", path="/events")
    assert http.get(job_url(simulator, job_id)).status_code == 200  # path filter: not this one
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(job_url(simulator, job_id, "/events"))
    assert http.get(job_url(simulator, job_id, "/events")).status_code == 200
    assert [status for _, _, status in simulator.request_log] == [200, 0, 200]


def test_reset_after_processing_creates_the_job_but_loses_the_answer(
    simulator: Simulator, http: requests.Session
) -> None:
    before = simulator.job_ids()
    simulator.inject("reset_after_processing", path="/fine_tuning/jobs")
    body = {"model": "gpt-4o-mini-2024-07-18", "training_file": "file-lost", "metadata": {"attempt": "1"}}
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(jobs_url(simulator), json=body)
    created = [job_id for job_id in simulator.job_ids() if job_id not in before]
    assert len(created) == 1  # the server did the work
    job = simulator.job(created[0])
    assert (job["training_file"], job["metadata"]) == ("file-lost", {"attempt": "1"})
    assert simulator.request_log == [("POST", "/v1/fine_tuning/jobs", 0)]
    assert simulator.pending_faults() == []
    # The job is there for a client that looks before it tries again.
    listed = http.get(jobs_url(simulator), params={"metadata[attempt]": "1"}).json()["data"]
    assert [j["id"] for j in listed] == created

    # A plain `reset` refuses before the work: nothing is created.
    simulator.inject("reset", path="/fine_tuning/jobs")
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(jobs_url(simulator), json=body)
    assert len(simulator.job_ids()) == len(before) + 1

    # On a cancel: the job is cancelled, the client saw only a reset.
    live = add(simulator, n_events=100, duration=60.0)
    simulator.inject("reset_after_processing", path="/cancel")
    with pytest.raises(requests.exceptions.ConnectionError):
        http.post(job_url(simulator, live, "/cancel"))
    assert simulator.job(live)["status"] == "cancelled"
    assert simulator.applied_faults()["reset_after_processing"] >= 2


def test_reset_after_processing_skips_streams_for_the_next_json_answer(
    simulator: Simulator, http: requests.Session
) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject("reset_after_processing")  # streams are not JSON answers: it waits for the next one
    with http.get(
        job_url(simulator, job_id, "/events", legacy=True), params={"stream": "true"}, stream=True
    ) as r:
        assert r.status_code == 200 and len(read_stream(r)[0]) == 10
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(job_url(simulator, job_id))
    assert [status for _, _, status in simulator.request_log] == [200, 0]


def test_paging_faults_on_checkpoints(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=300)
    url = job_url(simulator, job_id, "/checkpoints")
    whole = http.get(url).json()
    simulator.inject("empty_has_more", path="/checkpoints")
    assert http.get(url).json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": True,
    }
    simulator.inject("repeated_cursor", path="/checkpoints")
    assert http.get(url, params={"after": whole["data"][0]["id"]}).json() == {**whole, "has_more": True}
    simulator.inject("unknown_fields", path="/checkpoints")
    assert all("x_unreleased_field" in c for c in http.get(url).json()["data"])
    simulator.inject("503", path="/checkpoints")
    assert http.get(url).status_code == 503


def test_drop_body_sends_half_of_a_declared_body(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=50)
    simulator.inject("drop_body")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        http.get(job_url(simulator, job_id, "/events"), params={"limit": 50})
    # On the wire: the full Content-Length is declared, half of the body follows, then the close.
    simulator.inject("drop_body")
    path = f"/v1/fine_tuning/jobs/{job_id}/events?limit=50"
    with socket.create_connection(("127.0.0.1", simulator.port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SIM_KEY}\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, received = raw.partition(b"\r\n\r\n")
    declared = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    full = http.get(job_url(simulator, job_id, "/events"), params={"limit": 50}).content
    assert len(full) == declared and len(received) == declared // 2 and full.startswith(received)


def test_drop_stream_closes_mid_stream(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=30)
    url = job_url(simulator, job_id, "/events", legacy=True)
    simulator.inject("drop_stream", after_events=7)
    assert http.get(job_url(simulator, job_id, legacy=True)).status_code == 200  # waits for a stream
    lines: list[str] = []
    with (
        pytest.raises(requests.exceptions.ChunkedEncodingError),
        http.get(url, params={"stream": "true"}, stream=True) as response,
    ):
        lines.extend(sse_lines(response))
    assert [json.loads(line[6:]) for line in lines if line] == simulator.legacy_events(job_id)[:7]
    assert "data: [DONE]" not in lines

    simulator.inject("drop_stream", after_events=2, partial=True)
    with http.get(url, params={"stream": "true"}, stream=True) as response:
        raw = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for chunk in response.iter_content(None):
                raw += chunk
    whole = b"".join(
        b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n"
        for e in simulator.legacy_events(job_id)
    )
    assert whole.startswith(raw) and raw.count(b"\n\n") == 2 and not raw.endswith(b"\n\n")


def test_malformed_json_and_html_faults(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject("malformed_json")
    response = http.get(job_url(simulator, job_id))
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(response.text)
    assert json.dumps(simulator.job(job_id), separators=(",", ":")).startswith(response.text)

    simulator.inject("html", path="stream=true")
    response = http.get(job_url(simulator, job_id, "/events", legacy=True), params={"stream": "true"})
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/html"
    assert response.text.startswith("<html>")


def test_paging_faults(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=60)
    url = job_url(simulator, job_id, "/events")
    newest = http.get(url, params={"limit": 10}).json()
    simulator.inject("empty_has_more")
    assert http.get(url, params={"limit": 10}).json() == {"object": "list", "data": [], "has_more": True}
    simulator.inject("repeated_cursor", count=2)
    first = http.get(url, params={"limit": 10, "after": newest["data"][-1]["id"]}).json()
    second = http.get(url, params={"limit": 10, "after": first["data"][-1]["id"]}).json()
    assert first == second == {**newest, "has_more": True}
    assert (
        http.get(url, params={"limit": 10, "after": newest["data"][-1]["id"]}).json()["data"]
        != newest["data"]
    )

    small = add(simulator, n_events=8)
    simulator.inject("repeated_cursor")
    page = http.get(job_url(simulator, small, "/events"), params={"limit": 50}).json()
    assert len(page["data"]) == 8 and page["has_more"] is True


def test_shape_faults(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=60)
    simulator.inject("unknown_status", count=2)
    assert http.get(job_url(simulator, job_id)).json()["status"] == "paused"
    assert http.get(job_url(simulator, job_id, legacy=True)).json()["status"] == "paused"
    assert http.get(job_url(simulator, job_id)).json()["status"] == "succeeded"

    simulator.inject("data_null")
    page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 30}).json()
    assert [e["data"] for e in page["data"]] == [None] * 30
    assert [e["id"] for e in page["data"]] == [e["id"] for e in reversed(simulator.events(job_id)[-30:])]

    simulator.inject("unknown_fields")
    page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 60}).json()
    assert all("x_unreleased_field" in e for e in page["data"])
    assert {e["type"] for e in page["data"]} == {"checkpoint", "metrics"}
    simulator.inject("unknown_fields")
    listing = http.get(job_url(simulator, job_id, "/events", legacy=True)).json()
    assert all("x_unreleased_field" in e for e in listing["data"])


def test_fault_queue_semantics(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject("503", count=2, path="/events")
    simulator.inject("502")
    statuses = [http.get(job_url(simulator, job_id, "/events")).status_code for _ in range(3)]
    assert statuses == [503, 503, 502]
    assert simulator.pending_faults() == []
    simulator.inject("500", count=5)
    simulator.clear_faults()
    assert http.get(job_url(simulator, job_id)).status_code == 200
    with pytest.raises(ValueError, match="unknown fault kind"):
        simulator.inject("teapot")
    with pytest.raises(ValueError, match="does not take"):
        simulator.inject("slow", dealy=1)
    with pytest.raises(ValueError, match="count"):
        simulator.inject("500", count=0)
    assert set(FAULT_KINDS) >= {
        "429",
        "500",
        "502",
        "503",
        "slow",
        "reset",
        "reset_after_processing",
        "drop_body",
        "drop_stream",
    }


def test_random_faults_are_reproducible(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)

    def run() -> list[int]:
        simulator.set_random_faults(rate=0.5, kinds=["500", "503", "drop_stream"], seed=42)
        return [http.get(job_url(simulator, job_id)).status_code for _ in range(40)]

    first = run()
    assert run() == first
    assert {500, 503, 200} == set(first)
    simulator.set_random_faults(rate=0.0)
    assert {http.get(job_url(simulator, job_id)).status_code for _ in range(10)} == {200}
