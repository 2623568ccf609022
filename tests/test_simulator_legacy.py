"""The legacy ``/fine-tunes`` family: the whole list, and the server-sent-event stream of a job."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    REQUEST_ID,
    add,
    job_url,
    read_stream,
    sse_lines,
    strip_to_legacy,
)

from airflow_ftevents.simulator import Simulator  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


def test_legacy_list_and_stream_of_a_finished_job(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=45)
    expected = [strip_to_legacy(e) for e in simulator.events(job_id)]
    assert simulator.legacy_events(job_id) == expected
    url = job_url(simulator, job_id, "/events", legacy=True)
    for params in ({}, {"stream": "false"}):
        body = http.get(url, params=params).json()
        assert body == {"object": "list", "data": expected}
    connections = simulator.connections_accepted
    with http.get(url, params={"stream": "true"}, stream=True) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert REQUEST_ID.match(response.headers["x-request-id"])
        lines = list(sse_lines(response))
    assert lines[-2:] == ["data: [DONE]", ""]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert data == expected
    # The stream ended cleanly (chunked), so the session reuses its connection afterwards.
    assert http.get(job_url(simulator, job_id)).status_code == 200
    assert simulator.connections_accepted == connections


def test_legacy_stream_follows_a_live_job_with_keepalives(
    simulator: Simulator, http: requests.Session
) -> None:
    job_id = add(simulator, n_events=6, duration=1.5)  # a 1.2 s gap before the last two events
    started = time.monotonic()
    url = job_url(simulator, job_id, "/events", legacy=True)
    arrivals: list[float] = []
    lines: list[str] = []
    with http.get(url, params={"stream": "true"}, stream=True) as response:
        for line in sse_lines(response):
            lines.append(line)
            if line.startswith("data: {"):
                arrivals.append(time.monotonic() - started)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.45
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert data == simulator.legacy_events(job_id)
    assert lines.count(": keep-alive") >= 3  # 0.2 s interval over a 1.2 s wait
    assert lines[-2:] == ["data: [DONE]", ""]
    assert arrivals[-1] >= 1.45 and arrivals[-1] - arrivals[0] >= 0.9  # events came live, not at the end


def test_legacy_stream_of_a_job_cancelled_meanwhile_ends(
    simulator: Simulator, http: requests.Session
) -> None:
    job_id = add(simulator, n_events=50, duration=30.0)
    url = job_url(simulator, job_id, "/events", legacy=True)
    result: dict[str, Any] = {}

    def read() -> None:
        with requests.get(url, params={"stream": "true"}, headers=http.headers, stream=True, timeout=10) as r:
            result["events"], result["other"] = read_stream(r)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.4)
    response = http.post(job_url(simulator, job_id, "/cancel"))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    reader.join(5)
    assert not reader.is_alive()
    assert result["events"] == simulator.legacy_events(job_id)
    assert result["events"][-1]["message"] == "Job was cancelled"
    again = http.post(job_url(simulator, job_id, "/cancel"))
    assert again.status_code == 400 and again.json()["error"]["code"] == "job_not_cancellable"
