"""The local API simulator, over real HTTP on loopback: shapes, lifecycle, paging, streams, errors, faults.

Clients of this package are tested against the simulator, so the simulator itself is held to the
official schema, to exact paging arithmetic and to faults that really happen on the wire.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import SIM_KEY, job_url, schema_properties, sse_lines, walk_pages  # noqa: E402

from airflow_ftevents.simulator import FAULT_KINDS, JobSpec, Simulator  # noqa: E402
from airflow_ftevents.simulator.model import BLOCK, MIN_EVENTS, EventIdCodec, Job  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http
ROOT = Path(__file__).resolve().parents[1]
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
JOB_ID = re.compile(r"^ftjob-[A-Za-z0-9]{24}$")
EVENT_ID = re.compile(r"^ftevent-[A-Za-z0-9]{24}$")


def unique_id(prefix: str = "ftjob-t") -> str:
    """Jobs live in a module-wide simulator: give each test its own ids."""
    unique_id.counter += 1  # type: ignore[attr-defined]
    return f"{prefix}{unique_id.counter}"  # type: ignore[attr-defined]


unique_id.counter = 0  # type: ignore[attr-defined]


def add(sim: Simulator, **kwargs: Any) -> str:
    kwargs.setdefault("job_id", unique_id())
    return sim.add_job(JobSpec(**kwargs))


def strip_to_legacy(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "fine-tune-event",
        "created_at": event["created_at"],
        "level": event["level"],
        "message": event["message"],
    }


def read_stream(response: requests.Response) -> tuple[list[dict[str, Any]], list[str]]:
    """(data events, other lines) of a legacy stream read to its end."""
    events, other = [], []
    for line in sse_lines(response):
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[len("data: ") :]))
        elif line:
            other.append(line)
    return events, other


class FakeClock:
    """A monotonic clock the test moves by hand, for exact lifecycle arithmetic."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------------- the model


def test_event_ids_are_opaque_reversible_and_job_specific() -> None:
    codec = EventIdCodec("ftjob-a\x001")
    indexes = [0, 1, 2, 19, 20, 999_999, 2**40, 2**63 - 1]
    ids = [codec.encode(i) for i in indexes]
    assert all(EVENT_ID.match(event_id) for event_id in ids)
    assert [codec.decode(event_id) for event_id in ids] == indexes
    assert len(set(ids)) == len(ids)
    other = EventIdCodec("ftjob-b\x001")
    assert [other.decode(event_id) for event_id in ids] == [None] * len(ids)
    assert codec.decode("ftevent-" + "A" * 24) is None
    assert codec.decode("ftevent-short") is None
    assert codec.decode("ftevent-" + "!" * 24) is None
    # Consecutive events do not share a visible prefix or suffix that would reveal their order.
    assert len({event_id[8:12] for event_id in ids}) == len(ids)
    assert len({event_id[-4:] for event_id in ids}) == len(ids)


def test_lifecycle_arithmetic_with_a_fake_clock() -> None:
    clock = FakeClock()
    job = Job(JobSpec(job_id="ftjob-clock", n_events=106, duration=10.0), "ftjob-clock", clock=clock)
    middle = 106 - MIN_EVENTS
    expected = [
        (0.0, 2, "validating_files"),
        (0.99, 2, "validating_files"),
        (1.0, 3, "queued"),
        (1.99, 3, "queued"),
        (2.0, 4, "running"),
        (9.99, 4 + math.floor(7.99 / 8.0 * (middle + 1)), "running"),
        (10.0, 106, "succeeded"),
        (99.0, 106, "succeeded"),
    ]
    for offset, visible, status in expected:
        clock.now = 1000.0 + offset
        snap = job.snapshot()
        assert (snap.visible, snap.status) == (visible, status), offset
        assert snap.terminal is (status == "succeeded")
    # Visibility only grows, and next_in says exactly when the next event appears.
    clock.now, previous = 1000.0, 0
    while clock.now < 1010.5:
        snap = job.snapshot()
        assert snap.visible >= previous
        previous = snap.visible
        if snap.next_in is not None:
            later = clock.now
            clock.now = later + snap.next_in + 1e-6
            assert job.snapshot().visible > snap.visible
            clock.now = later
        clock.now += 0.013
    # Realistic mode shows a short `paused` moment while running (beyond the schema's enum).
    clock.now = 1000.0 + 5.2
    assert job.snapshot(realistic=True).status == "paused"
    assert job.snapshot(realistic=False).status == "running"


def test_cancel_cuts_the_events_where_the_job_stands() -> None:
    clock = FakeClock()
    job = Job(JobSpec(job_id="ftjob-cut", n_events=50, duration=10.0), "ftjob-cut", clock=clock)
    clock.now += 5.0
    before = job.snapshot()
    seen = [job.event(i) for i in range(before.visible)]
    assert job.cancel() is True
    after = job.snapshot()
    assert (after.visible, after.status, after.terminal) == (before.visible + 2, "cancelled", True)
    assert [job.event(i) for i in range(before.visible)] == seen
    assert [job.event(i)["message"] for i in range(before.visible, after.visible)] == [
        "Job cancellation requested",
        "Job was cancelled",
    ]
    assert job.cancel() is False
    clock.now += 100
    assert job.snapshot().visible == before.visible + 2


def test_job_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="outcome"):
        JobSpec(outcome="done")
    with pytest.raises(ValueError, match="n_events"):
        JobSpec(n_events=MIN_EVENTS - 1)
    with pytest.raises(ValueError, match="duration"):
        JobSpec(duration=-1)
    with pytest.raises(ValueError, match="job_id"):
        JobSpec(job_id="")


def test_event_sequence_reads_like_a_real_job(simulator: Simulator) -> None:
    job_id = add(simulator, n_events=2000, seed=7)
    events = simulator.events(job_id)
    assert len(events) == 2000
    training_file = simulator.job(job_id)["training_file"]
    assert [e["message"] for e in events[:4]] == [
        f"Created fine-tuning job: {job_id}",
        f"Validating training file: {training_file}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    fine_tuned = simulator.job(job_id)["fine_tuned_model"]
    assert [e["message"] for e in events[-2:]] == [
        f"New fine-tuned model created: {fine_tuned}",
        "The job has successfully completed",
    ]
    assert all(e["object"] == "fine_tuning.job.event" and EVENT_ID.match(e["id"]) for e in events)
    assert len({e["id"] for e in events}) == len(events)
    times = [e["created_at"] for e in events]
    assert times == sorted(times)
    assert len(set(times)) < len(times) / 2  # many events share one second
    assert {e["level"] for e in events} == {"info", "warn"}
    assert any(e["message"].startswith("Checkpoint created at step ") for e in events)

    metrics = [e for e in events if e["type"] == "metrics"]
    total = 2000 - MIN_EVENTS - (2000 - MIN_EVENTS) // BLOCK
    assert [m["data"]["step"] for m in metrics] == list(range(1, total + 1))
    assert all(m["data"]["total_steps"] == total for m in metrics)
    for m in metrics:
        data = m["data"]
        assert m["message"].startswith(f"Step {data['step']}/{total}: training loss={data['train_loss']:.4f}")
        has_valid = data["step"] % 10 == 0 or data["step"] == total
        assert ("valid_loss" in data) is has_valid
        assert ("valid_mean_token_accuracy" in data) is has_valid
        assert ("full_valid_loss" in data) is (data["step"] == total)
        assert 0.0 <= data["train_mean_token_accuracy"] <= 1.0
    losses = [m["data"]["train_loss"] for m in metrics]
    tenth = len(losses) // 10
    assert sum(losses[:tenth]) / tenth > 3 * sum(losses[-tenth:]) / tenth  # it learns
    ups = sum(1 for a, b in itertools.pairwise(losses) if b > a)
    assert 0.2 * len(losses) < ups < 0.5 * len(losses)  # noisily
    assert all(e["data"] == {} for e in events if e["type"] == "message")


def test_failed_and_cancelled_jobs(simulator: Simulator, http: requests.Session) -> None:
    failed = add(simulator, n_events=40, outcome="failed")
    job = http.get(job_url(simulator, failed)).json()
    assert job["status"] == "failed"
    assert set(job["error"]) == {"code", "message", "param"}
    assert job["fine_tuned_model"] is None and job["trained_tokens"] is None
    assert isinstance(job["finished_at"], int)
    last_two = simulator.events(failed)[-2:]
    assert [e["level"] for e in last_two] == ["error", "error"]
    assert last_two[0]["message"] == job["error"]["message"]
    assert last_two[0]["data"] == {"error_code": job["error"]["code"], "error_param": job["error"]["param"]}

    cancelled = add(simulator, n_events=40, outcome="cancelled")
    job = http.get(job_url(simulator, cancelled)).json()
    assert (job["status"], job["error"], job["fine_tuned_model"]) == ("cancelled", None, None)
    assert simulator.events(cancelled)[-1]["message"] == "Job was cancelled"
    assert http.get(job_url(simulator, cancelled, legacy=True)).json()["status"] == "cancelled"

    succeeded = add(simulator, n_events=40)
    job = http.get(job_url(simulator, succeeded)).json()
    assert job["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert job["trained_tokens"] > 0 and len(job["result_files"]) == 1


# ----------------------------------------------------------------------------------- schema


def test_every_response_kind_validates_against_the_official_schema(
    simulator: Simulator, http: requests.Session, validators: dict[str, Any]
) -> None:
    job_props, event_props = schema_properties("FineTuningJob"), schema_properties("FineTuningJobEvent")
    legacy_props, legacy_event_props = schema_properties("FineTune"), schema_properties("FineTuneEvent")

    def check_all(job_id: str) -> str:
        job = http.get(job_url(simulator, job_id)).json()
        validators["FineTuningJob"].validate(job)
        assert set(job) <= job_props
        page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
        validators["ListFineTuningJobEventsResponse"].validate(page)
        assert all(set(e) <= event_props for e in page["data"])
        legacy = http.get(job_url(simulator, job_id, legacy=True)).json()
        validators["FineTune"].validate(legacy)
        assert set(legacy) <= legacy_props
        listing = http.get(
            job_url(simulator, job_id, "/events", legacy=True), params={"stream": "false"}
        ).json()
        validators["ListFineTuneEventsResponse"].validate(listing)
        assert all(set(e) <= legacy_event_props for e in listing["data"])
        return job["status"]

    for outcome in ("succeeded", "failed", "cancelled"):
        assert check_all(add(simulator, n_events=60, outcome=outcome)) == outcome

    live = add(simulator, n_events=30, duration=1.2)
    statuses = []
    while not statuses or statuses[-1] != "succeeded":
        status = check_all(live)
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        time.sleep(0.03)
    assert statuses[-2:] == ["running", "succeeded"]

    with http.get(
        job_url(simulator, live, "/events", legacy=True), params={"stream": "true"}, stream=True
    ) as r:
        streamed, _ = read_stream(r)
    assert len(streamed) == 30
    for event in streamed:
        validators["FineTuneEvent"].validate(event)

    created = http.post(
        f"{simulator.base_url}/fine_tuning/jobs",
        json={"model": "gpt-4o-mini-2024-07-18", "training_file": "file-x"},
    ).json()
    validators["FineTuningJob"].validate(created)
    cancelled = http.post(job_url(simulator, created["id"], "/cancel")).json()
    validators["FineTuningJob"].validate(cancelled)
    listing = http.get(f"{simulator.base_url}/fine_tuning/jobs", params={"limit": 5}).json()
    assert listing["object"] == "list" and isinstance(listing["has_more"], bool)
    for job in listing["data"]:
        validators["FineTuningJob"].validate(job)


def test_realistic_mode_sends_shapes_beyond_the_schema(validators: dict[str, Any]) -> None:
    with Simulator(api_key=SIM_KEY, realistic=True) as sim, requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {SIM_KEY}"
        sim.add_job(JobSpec(job_id="ftjob-real", n_events=30))
        events = session.get(job_url(sim, "ftjob-real", "/events"), params={"limit": 100}).json()["data"]
        started = [e for e in events if e["message"] == "Fine-tuning job started"]
        assert len(started) == 1 and started[0]["data"] is None
        assert not validators["FineTuningJobEvent"].is_valid(started[0])
        assert all("metadata" in e for e in events)
        assert list(reversed(events)) == sim.events("ftjob-real")


# ----------------------------------------------------------------------------------- lifecycle


def test_lifecycle_over_time(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=60, duration=2.0)
    order = ["validating_files", "queued", "running", "succeeded"]
    seen: list[str] = []
    counts: list[int] = []
    started = time.monotonic()
    while True:
        # Events first, then the job: the status seen second is at least as far as the events say.
        page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
        job = http.get(job_url(simulator, job_id)).json()
        status = job["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        counts.append(len(page["data"]))
        newest = page["data"][0]
        if newest["message"] == "Files validated, moving job to queued state":
            assert status != "validating_files"
        if newest["message"] == "Fine-tuning job started" or newest["type"] == "metrics":
            assert status in ("running", "succeeded")
        if newest["message"] == "The job has successfully completed":
            assert status == "succeeded"
        if status in ("validating_files", "queued", "running"):
            assert job["finished_at"] is None and job["fine_tuned_model"] is None
            assert job["estimated_finish"] == job["created_at"] + 2
        if status == "succeeded":
            # The job may have finished between the two reads: a read after it holds every event.
            final = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
            counts.append(len(final["data"]))
            break
        assert time.monotonic() - started < 10
        time.sleep(0.02)
    assert [s for s in order if s in seen] == seen  # only forward
    assert seen[-2:] == ["running", "succeeded"] and seen[0] in ("validating_files", "queued")
    assert counts == sorted(counts) and counts[-1] == 60
    assert time.monotonic() - started >= 1.9
    assert job["finished_at"] is not None and job["trained_tokens"] > 0


# ----------------------------------------------------------------------------------- paging


@pytest.mark.parametrize("n_events", [6, 7, 21, 57, 200])
def test_newest_first_paging_is_exact(simulator: Simulator, http: requests.Session, n_events: int) -> None:
    job_id = add(simulator, n_events=n_events)
    expected = list(reversed(simulator.events(job_id)))
    for limit in (1, 3, 20, 100, None):
        simulator.request_log.clear()
        events, pages = walk_pages(http, simulator, job_id, limit)
        size = 20 if limit is None else limit
        assert events == expected
        assert len(pages) == max(1, math.ceil(n_events / size))
        remaining = n_events
        for page in pages:
            assert len(page["data"]) == min(size, remaining)
            remaining -= len(page["data"])
            assert page["has_more"] is (remaining > 0)
        assert len(simulator.request_log) == len(pages)
    assert len({e["id"] for e in expected}) == n_events
    # `after` continues exactly after any event, and the oldest event ends the walk.
    for index in range(0, n_events, 1 if n_events < 60 else 7):
        after = expected[index]["id"]
        page = http.get(job_url(simulator, job_id, "/events"), params={"after": after, "limit": 5}).json()
        assert page["data"] == expected[index + 1 : index + 6]
        assert page["has_more"] is (index + 6 < n_events)


def test_bad_cursors_and_limits_are_refused(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=30)
    other = add(simulator, n_events=30)
    url = job_url(simulator, job_id, "/events")
    for after in (simulator.events(other)[5]["id"], "ftevent-" + "0" * 24, "garbage"):
        response = http.get(url, params={"after": after})
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "after",
            "invalid_cursor",
        )
    for limit in ("0", "-1", "x"):
        response = http.get(url, params={"limit": limit})
        assert response.status_code == 400 and response.json()["error"]["param"] == "limit"
    # An id of an event that is not visible yet is not a valid cursor either.
    live = add(simulator, n_events=30, duration=30.0)
    future = simulator.event_at(live, 20)["id"]
    assert http.get(job_url(simulator, live, "/events"), params={"after": future}).status_code == 400


def test_million_event_job_pages_fast_at_start_middle_and_end(
    simulator: Simulator, http: requests.Session
) -> None:
    started = time.perf_counter()
    job_id = add(simulator, n_events=1_000_000, seed=11)
    assert time.perf_counter() - started < 0.05  # nothing is built up front
    assert simulator.event_count(job_id) == 1_000_000
    url = job_url(simulator, job_id, "/events")
    started = time.perf_counter()
    after = None
    newest = []
    for _ in range(3):
        page = http.get(url, params={"limit": 100, **({"after": after} if after else {})}).json()
        assert page["has_more"] is True and len(page["data"]) == 100
        newest.extend(page["data"])
        after = page["data"][-1]["id"]
    assert newest == [simulator.event_at(job_id, i) for i in range(999_999, 999_699, -1)]
    assert newest[0]["message"] == "The job has successfully completed"

    page = http.get(url, params={"limit": 100, "after": simulator.event_at(job_id, 500_000)["id"]}).json()
    assert page["data"] == [simulator.event_at(job_id, i) for i in range(499_999, 499_899, -1)]
    assert page["has_more"] is True

    page = http.get(url, params={"limit": 100, "after": simulator.event_at(job_id, 150)["id"]}).json()
    assert [e["id"] for e in page["data"]] == [
        simulator.event_at(job_id, i)["id"] for i in range(149, 49, -1)
    ]
    page = http.get(url, params={"limit": 100, "after": page["data"][-1]["id"]}).json()
    assert len(page["data"]) == 50 and page["has_more"] is False
    assert page["data"][-1]["message"] == f"Created fine-tuning job: {job_id}"
    assert time.perf_counter() - started < 5.0  # a page costs O(limit), not O(events)
    legacy = http.get(job_url(simulator, job_id, legacy=True)).json()
    assert legacy["status"] == "succeeded"


# ----------------------------------------------------------------------------------- legacy


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
    assert arrivals[0] < 0.5 and arrivals[-1] >= 1.45  # events came live, not at the end


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


# ----------------------------------------------------------------------------------- auth, errors


def test_auth_errors_never_echo_the_key(simulator: Simulator) -> None:
    job_id = add(simulator, n_events=10)
    url = job_url(simulator, job_id, "/events")
    wrong = "sk-wrong-Kq93hZ7vXb2LmA0c"
    cases = {
        "missing": {},
        "wrong bearer": {"Authorization": f"Bearer {wrong}"},
        "wrong azure": {"api-key": wrong},
        "not bearer": {"Authorization": SIM_KEY},
    }
    for name, headers in cases.items():
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401, name
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            None,
            "invalid_api_key",
        )
        text = response.text + json.dumps(dict(response.headers))
        for secret in (wrong, SIM_KEY):
            assert secret not in text and secret[-6:] not in text and secret[3:9] not in text, name
        assert REQUEST_ID.match(response.headers["x-request-id"])
    assert (
        requests.get(url, headers=cases["wrong bearer"], timeout=5)
        .json()["error"]["message"]
        .startswith("Incorrect API key provided.")
    )
    assert requests.get(url, headers={"Authorization": f"Bearer {SIM_KEY}"}, timeout=5).status_code == 200
    assert requests.get(url, headers={"api-key": SIM_KEY}, timeout=5).status_code == 200


def test_azure_prefixes_and_api_version(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=25)
    root = simulator.base_url[: -len("/v1")]
    expected = list(reversed(simulator.events(job_id)))[:20]
    for prefix in ("/openai/v1", "/openai"):
        response = requests.get(
            f"{root}{prefix}/fine_tuning/jobs/{job_id}/events",
            params={"api-version": "2024-10-21"},
            headers={"api-key": SIM_KEY},
            timeout=5,
        )
        assert response.status_code == 200 and response.json()["data"] == expected
        legacy = requests.get(f"{root}{prefix}/fine-tunes/{job_id}", headers={"api-key": SIM_KEY}, timeout=5)
        assert legacy.json()["id"] == job_id


def test_not_found_bodies(simulator: Simulator, http: requests.Session) -> None:
    for legacy in (False, True):
        for tail in ("", "/events"):
            response = http.get(job_url(simulator, "ftjob-nope", tail, legacy=legacy))
            assert response.status_code == 404
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "fine_tune_not_found")
            assert "ftjob-nope" in error["message"]
            assert REQUEST_ID.match(response.headers["x-request-id"])
    response = http.get(f"{simulator.base_url}/fine_tuning/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Invalid URL (GET /v1/fine_tuning/nothing)",
        "type": "invalid_request_error",
        "param": None,
        "code": "unknown_url",
    }


def test_job_ids_are_percent_decoded_path_segments(simulator: Simulator, http: requests.Session) -> None:
    for job_id in ("ftjob-../x?y z", "ftjob-ü/%2F#..", "ftjob-a+b&limit=1"):
        simulator.add_job(JobSpec(job_id=job_id, n_events=8))
        assert http.get(job_url(simulator, job_id)).json()["id"] == job_id
        page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
        assert page["data"] == list(reversed(simulator.events(job_id)))
        assert http.get(job_url(simulator, job_id, legacy=True)).json()["id"] == job_id
        listing = http.get(job_url(simulator, job_id, "/events", legacy=True)).json()
        assert listing["data"] == simulator.legacy_events(job_id)
    assert f"{simulator.base_url}/fine_tuning/jobs/ftjob-..%2Fx%3Fy%20z/events" == job_url(
        simulator, "ftjob-../x?y z", "/events"
    )
    # Raw paths (no client-side normalization): `..` and `%2E%2E` are the job "..", never a step up;
    # an unescaped `/` splits the id.
    simulator.add_job(JobSpec(job_id="..", n_events=8))
    connection = HTTPConnection("127.0.0.1", simulator.port, timeout=5)
    try:
        for path, status in (
            ("/v1/fine_tuning/jobs/%2E%2E/events", 200),
            ("/v1/fine_tuning/jobs/%2e%2e", 200),
            ("/v1/fine_tuning/jobs/ftjob-../x/events", 404),
            ("/v1/fine_tuning/jobs/../events", 200),  # not normalized to /v1/fine_tuning/events
        ):
            connection.request("GET", path, headers={"Authorization": f"Bearer {SIM_KEY}"})
            response = connection.getresponse()
            body = json.loads(response.read())
            assert response.status == status, path
            if status == 404:
                assert body["error"]["type"] == "invalid_request_error"
            elif path.endswith("/events"):
                assert body["data"] == list(reversed(simulator.events("..")))
            else:
                assert body["id"] == ".."
    finally:
        connection.close()


# ----------------------------------------------------------------------------------- faults


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
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        simulator.inject("slow", delay=1.0)
        http.get(job_url(simulator, job_id), timeout=0.2)
    assert time.monotonic() - started < 0.8


def test_reset_closes_without_a_response(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=10)
    simulator.inject("reset", path="/events")
    assert http.get(job_url(simulator, job_id)).status_code == 200  # path filter: not this one
    with pytest.raises(requests.exceptions.ConnectionError):
        http.get(job_url(simulator, job_id, "/events"))
    assert http.get(job_url(simulator, job_id, "/events")).status_code == 200
    assert [status for _, _, status in simulator.request_log] == [200, 0, 200]


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
    assert set(FAULT_KINDS) >= {"429", "500", "502", "503", "slow", "reset", "drop_body", "drop_stream"}


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


def test_control_endpoints_drive_an_out_of_process_simulator(
    simulator: Simulator, http: requests.Session
) -> None:
    root = simulator.base_url[: -len("/v1")]
    created = requests.post(f"{root}/_sim/jobs", json={"job_id": "ftjob-ctl", "n_events": 12}, timeout=5)
    assert created.status_code == 200 and created.json()["id"] == "ftjob-ctl"
    fault = {"kind": "429", "count": 1, "path": "/events", "params": {"retry_after": "1"}}
    assert requests.post(f"{root}/_sim/faults", json=fault, timeout=5).status_code == 200
    assert requests.get(f"{root}/_sim/faults", timeout=5).json()["pending"][0]["kind"] == "429"
    response = http.get(job_url(simulator, "ftjob-ctl", "/events"))
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    bad = requests.post(f"{root}/_sim/faults", json={"kind": "nope"}, timeout=5)
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["error"]["message"]
    log = requests.get(f"{root}/_sim/requests", timeout=5).json()["data"]
    assert log == [["GET", "/v1/fine_tuning/jobs/ftjob-ctl/events", 429]]
    requests.post(f"{root}/_sim/faults", json={"kind": "500", "count": 3}, timeout=5)
    assert requests.delete(f"{root}/_sim/faults", timeout=5).json() == {"pending": []}
    assert http.get(job_url(simulator, "ftjob-ctl")).status_code == 200


# ----------------------------------------------------------------------------------- jobs API


def test_create_list_and_cancel_jobs_over_http(validators: dict[str, Any]) -> None:
    with (
        Simulator(api_key=SIM_KEY, default_events=12, default_duration=0.0, default_outcome="failed") as sim,
        requests.Session() as session,
    ):
        session.headers["Authorization"] = f"Bearer {SIM_KEY}"
        url = f"{sim.base_url}/fine_tuning/jobs"
        plain = session.post(url, json={"model": "gpt-4o-mini-2024-07-18", "training_file": "file-t"}).json()
        assert JOB_ID.match(plain["id"]) and plain["status"] == "failed"
        assert len(sim.events(plain["id"])) == 12 and plain["training_file"] == "file-t"

        shaped = session.post(
            url,
            json={
                "model": "gpt-4o-mini-2024-07-18",
                "training_file": "file-t",
                "suffix": "demo",
                "metadata": {
                    "sim_events": "30",
                    "sim_seconds": "0.5",
                    "sim_outcome": "succeeded",
                    "team": "a",
                },
            },
        ).json()
        assert shaped["status"] == "validating_files" and shaped["metadata"]["team"] == "a"
        time.sleep(0.6)
        done = session.get(f"{url}/{shaped['id']}").json()
        assert done["status"] == "succeeded" and ":demo:" in done["fine_tuned_model"]
        assert len(sim.events(shaped["id"])) == 30

        live = session.post(
            url,
            json={"model": "m", "training_file": "f", "metadata": {"sim_events": "40", "sim_seconds": "30"}},
        ).json()
        cancelled = session.post(f"{url}/{live['id']}/cancel").json()
        validators["FineTuningJob"].validate(cancelled)
        assert (
            cancelled["status"] == "cancelled"
            and sim.events(live["id"])[-1]["message"] == "Job was cancelled"
        )

        ids, after = [], None
        while True:
            page = session.get(url, params={"limit": 2, **({"after": after} if after else {})}).json()
            ids += [job["id"] for job in page["data"]]
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        assert ids == [live["id"], shaped["id"], plain["id"]]  # newest first
        assert session.get(url, params={"after": "ftjob-unknown"}).status_code == 400

        for body, param in (
            ({"training_file": "f"}, "model"),
            ({"model": "m"}, "training_file"),
            ({"model": "m", "training_file": "f", "metadata": {"sim_events": "3"}}, "metadata"),
            ({"model": "m", "training_file": "f", "metadata": {"sim_outcome": "maybe"}}, "metadata"),
        ):
            response = session.post(url, json=body)
            assert response.status_code == 400 and response.json()["error"]["param"] == param
        assert session.post(url, data=b"not json").status_code == 400
        assert session.post(f"{url}/ftjob-none/cancel").status_code == 404


def test_official_client_auto_paging_matches(simulator: Simulator) -> None:
    openai = pytest.importorskip("openai")
    job_id = add(simulator, n_events=57)
    client = openai.OpenAI(api_key=SIM_KEY, base_url=simulator.base_url, max_retries=0)
    try:
        events = [e.to_dict() for e in client.fine_tuning.jobs.list_events(job_id, limit=7)]
        assert events == list(reversed(simulator.events(job_id)))
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert (job.id, job.status) == (job_id, "succeeded")
        listed = [job.id for job in client.fine_tuning.jobs.list(limit=3)]
        assert listed == list(reversed(simulator.job_ids()))
    finally:
        client.close()


# ----------------------------------------------------------------------------------- the server


def test_keep_alive_reuses_one_connection(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=30)
    before = simulator.connections_accepted
    for _ in range(15):
        assert http.get(job_url(simulator, job_id, "/events")).status_code == 200
    assert simulator.connections_accepted - before == 1


def _sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ftevents-sim")]


def test_stop_ends_streams_and_threads_promptly() -> None:
    before = set(_sim_threads())
    sim = Simulator(api_key=SIM_KEY).start()
    sim.add_job(JobSpec(job_id="ftjob-long", n_events=100, duration=60.0))
    idle = requests.Session()
    idle.headers["Authorization"] = f"Bearer {SIM_KEY}"
    assert idle.get(job_url(sim, "ftjob-long")).status_code == 200  # leaves an idle keep-alive connection
    outcome: dict[str, Any] = {}

    def follow() -> None:
        try:
            with idle.get(job_url(sim, "ftjob-long", "/events?stream=true", legacy=True), stream=True) as r:
                outcome["lines"] = list(sse_lines(r))
        except requests.exceptions.RequestException as exc:
            outcome["error"] = exc

    streamer = threading.Thread(target=follow)
    streamer.start()
    time.sleep(0.3)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2.0
    streamer.join(2.0)
    assert not streamer.is_alive()
    assert "data: [DONE]" not in outcome.get("lines", [])
    assert set(_sim_threads()) <= before
    sim.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(job_url(sim, "ftjob-long"), timeout=2)
    idle.close()


def _run_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http://"):
        proc.kill()
        proc.wait(5)
        pytest.fail(f"simulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, line


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_starts_serves_and_stops(stop_signal: signal.Signals) -> None:
    proc, base_url = _run_cli(
        "--api-key",
        "sk-cli",
        "--job",
        "ftjob-cli:30:0:failed",
        "--fault",
        "500:1:/events",
        "--keepalive",
        "1",
    )
    try:
        assert re.match(r"^http://127\.0\.0\.1:\d+/v1$", base_url)
        headers = {"Authorization": "Bearer sk-cli"}
        events_url = f"{base_url}/fine_tuning/jobs/ftjob-cli/events"
        assert requests.get(events_url, headers=headers, timeout=5).status_code == 500
        page = requests.get(events_url, headers=headers, params={"limit": 100}, timeout=5).json()
        assert len(page["data"]) == 30 and page["data"][0]["level"] == "error"
        job = requests.get(f"{base_url}/fine_tuning/jobs/ftjob-cli", headers=headers, timeout=5).json()
        assert job["status"] == "failed"
    finally:
        proc.send_signal(stop_signal)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def test_cli_demo_job_and_bad_arguments() -> None:
    proc, base_url = _run_cli("--api-key", "k")
    try:
        job = requests.get(f"{base_url}/fine_tuning/jobs/ftjob-demo", headers={"api-key": "k"}, timeout=5)
        assert job.status_code == 200 and job.json()["status"] in ("validating_files", "queued", "running")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    bad = subprocess.run(
        [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", "--job", "ftjob-x:2:0:succeeded"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2 and "n_events must be at least" in bad.stderr
