"""FineTuneJobTrigger.run() against the simulator: outcomes, faults, legacy API, clean-up, a free event loop.

The trigger runs outside any task here, as the connection lookup of a triggerer would see it: the
``sim_conn`` fixture defines the connection as an ``AIRFLOW_CONN_`` variable, which
``BaseHook.aget_connection`` reads (through the async client's fallback on Airflow 3.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import API_KEY, CONN_ID, connection_json
from task_doubles import expected_summary

from airflow_ftevents.async_client import AsyncFineTuneEventsClient
from airflow_ftevents.core import follow
from airflow_ftevents.core.jobstate import format_event
from airflow_ftevents.core.paging import TailState
from airflow_ftevents.core.polling import next_poll_delay
from airflow_ftevents.errors import FineTuneEventsNotFoundError
from airflow_ftevents.simulator import JobSpec
from airflow_ftevents.triggers import FineTuneJobTrigger, error_from_event

_loggers = 0


def make(job_id: str, caplog: pytest.LogCaptureFixture | None = None, **kwargs: Any) -> FineTuneJobTrigger:
    """A trigger polling fast, whose log lines go to caplog (a plain logger instead of structlog)."""
    global _loggers
    kwargs.setdefault("conn_id", CONN_ID)
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("end_time", time.time() + 60)
    trigger = FineTuneJobTrigger(job_id, **kwargs)
    _loggers += 1
    logger = logging.getLogger(f"test.trigger.{_loggers}")
    logger.setLevel(logging.DEBUG)
    trigger._log = logger
    assert trigger.log is logger
    if caplog is not None:
        caplog.set_level(logging.DEBUG, logger=logger.name)
    return trigger


async def run(trigger: FineTuneJobTrigger) -> list[dict[str, Any]]:
    """Every event the trigger yields (exactly one is expected), as payloads."""
    return [event.payload async for event in trigger.run()]


def lines(
    caplog: pytest.LogCaptureFixture, trigger: FineTuneJobTrigger, level: int | None = None
) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == trigger.log.name and (level is None or r.levelno == level)
    ]


def error_detail(error: dict[str, Any]) -> str:
    """How a failure message shows the job's ``error`` object (written here independently)."""
    return f"{error['message']} (code {error['code']}" + (
        f", param {error['param']})" if error["param"] else ")"
    )


@pytest.fixture
def clients(monkeypatch) -> list[AsyncFineTuneEventsClient]:
    """Every async client the triggers create, to check that each was closed."""
    made: list[AsyncFineTuneEventsClient] = []
    original = AsyncFineTuneEventsClient.from_connection.__func__

    async def from_connection(cls, *args: Any, **kwargs: Any) -> AsyncFineTuneEventsClient:
        client = await original(cls, *args, **kwargs)
        made.append(client)
        return client

    monkeypatch.setattr(AsyncFineTuneEventsClient, "from_connection", classmethod(from_connection))
    return made


# -- outcomes --------------------------------------------------------------------------------------


async def test_success_logs_each_event_once_and_closes_the_client(sim, sim_conn, caplog, clients) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-ok", n_events=40, duration=1.0))
    trigger = make(job_id, caplog)
    payloads = await run(trigger)
    model = sim.job(job_id)["fine_tuned_model"]
    assert payloads == [
        {
            "status": "success",
            "message": f"Fine-tuning job {job_id} succeeded: {model}",
            "job": expected_summary(sim, job_id),
        }
    ]
    assert payloads[0]["job"]["event_count"] == 40
    assert lines(caplog, trigger) == [format_event(e) for e in sim.events(job_id)]
    assert len(clients) == 1 and clients[0].is_closed


async def test_failed_job(sim, sim_conn, caplog) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-failed", n_events=12, outcome="failed"))
    trigger = make(job_id, caplog)
    (payload,) = await run(trigger)
    job = sim.job(job_id)
    error = job["error"]
    errors = [e for e in sim.events(job_id) if e["level"] == "error"]
    detail = error_detail(error)
    assert payload == {
        "status": "failed",
        "message": f"Fine-tuning job {job_id} failed; error: {detail}; error events: "
        + " | ".join(e["message"] for e in errors),
        "job": expected_summary(sim, job_id),
    }
    assert payload["job"]["fine_tuned_model"] is None
    assert lines(caplog, trigger, logging.ERROR) == [format_event(e) for e in errors]


async def test_failure_message_keeps_the_error_events_seen_before_deferring(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-failed2", n_events=12, outcome="failed"))
    seen = {"created_at": 1, "level": "error", "message": "Seen by the sensor before it deferred"}
    (payload,) = await run(make(job_id, error_events=[seen]))
    job = sim.job(job_id)
    error = job["error"]
    errors = [seen["message"]] + [e["message"] for e in sim.events(job_id) if e["level"] == "error"]
    detail = error_detail(error)
    assert payload["status"] == "failed"
    assert payload["message"] == (
        f"Fine-tuning job {job_id} failed; error: {detail}; error events: " + " | ".join(errors)
    )


async def test_cancelled_job(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-cancelled", n_events=12, outcome="cancelled"))
    assert await run(make(job_id)) == [
        {
            "status": "cancelled",
            "message": f"Fine-tuning job {job_id} cancelled",
            "job": expected_summary(sim, job_id),
        }
    ]


async def test_deadline_in_the_past_ends_with_timeout_after_one_poll(sim, sim_conn, clients) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-slow", n_events=12, duration=120))
    first = sim.events(job_id)
    (payload,) = await run(make(job_id, end_time=time.time() - 1))
    assert payload == {
        "status": "timeout",
        "message": f"Fine-tuning job {job_id} did not finish before the deadline "
        "(last status 'validating_files')",
        "job": {
            "job_id": job_id,
            "status": "validating_files",
            "fine_tuned_model": None,
            "trained_tokens": None,
            "finished_at": None,
            "event_count": 2,
            "last_event": first[1],
        },
    }
    assert clients[0].is_closed


async def test_short_deadline_is_kept_even_when_shorter_than_the_poll_interval(
    sim, sim_conn, monkeypatch
) -> None:
    """Every wait is cut to what is left before the deadline (never the 30 s interval), and the wait
    ends only once the deadline has passed: asserted on the waits asked for, not on the wall clock."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-slow2", n_events=12, duration=120))
    decisions: list[tuple[float, float | None]] = []  # (now, the delay asked for; None: deadline passed)

    def recording(poll_interval: float, end_time: float | None, now: float, *args: Any) -> float | None:
        delay = next_poll_delay(poll_interval, end_time, now, *args)
        decisions.append((now, delay))
        return delay

    monkeypatch.setattr(follow, "next_poll_delay", recording)
    end_time = time.time() + 0.4
    (payload,) = await run(make(job_id, poll_interval=30, end_time=end_time))
    assert payload["status"] == "timeout"
    *waits, (last_now, last_delay) = decisions
    assert waits and all(0 < delay <= 0.4 for _, delay in waits)
    assert last_delay is None and last_now >= end_time


# -- faults ----------------------------------------------------------------------------------------


async def test_transient_errors_are_ridden_out_with_an_exact_count(sim, sim_conn, caplog) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-flaky", n_events=250, duration=1.0))
    # 5 x 503 on the job: more than the connection's 3 retries, so one whole poll fails and the trigger
    # polls again; then a reset, a 503 and a 429 on an event page, which the client's retries absorb.
    sim.inject("503", count=5, path=f"/fine_tuning/jobs/{job_id}", retry_after=0)
    sim.inject("reset", count=1, path="/events")
    sim.inject("503", count=1, path="/events", retry_after=0)
    sim.inject("429", count=1, path="/events", retry_after_ms=10)
    trigger = make(job_id, caplog)
    (payload,) = await run(trigger)
    events = sim.events(job_id)
    assert payload["status"] == "success"
    assert payload["job"] == expected_summary(sim, job_id)
    assert payload["job"]["event_count"] == 250
    wanted = {format_event(e) for e in events}
    assert [ln for ln in lines(caplog, trigger) if ln in wanted] == [format_event(e) for e in events]
    statuses = [status for _, _, status in sim.request_log]
    assert (statuses.count(503), statuses.count(429)) == (6, 1)
    assert sim.pending_faults() == []
    polls_failed = [ln for ln in lines(caplog, trigger, logging.WARNING) if ln.startswith("Polling job")]
    assert len(polls_failed) == 1
    assert polls_failed[0].startswith(f"Polling job {job_id} failed, will poll again: [HTTP 503")


async def test_unknown_job_ends_with_an_error_event(sim, sim_conn, clients) -> None:
    (payload,) = await run(make("ftjob-missing"))
    assert payload["status"] == "error"
    assert payload["message"].startswith("[HTTP 404")
    assert "ftjob-missing" in payload["message"]
    assert API_KEY not in payload["message"]
    assert payload["job"] == {
        "job_id": "ftjob-missing",
        "status": "unknown",
        "fine_tuned_model": None,
        "trained_tokens": None,
        "finished_at": None,
        "event_count": 0,
        "last_event": None,
    }
    assert sim.request_log == [("GET", "/v1/fine_tuning/jobs/ftjob-missing", 404)]  # not retried
    assert clients[0].is_closed
    assert (payload["error"]["class"], payload["error"]["status_code"]) == (
        "FineTuneEventsNotFoundError",
        404,
    )
    rebuilt = error_from_event(payload)  # what the task raises again
    assert type(rebuilt) is FineTuneEventsNotFoundError
    assert str(rebuilt) == payload["message"]


async def test_missing_connection_ends_with_an_error_event(sim, sim_conn) -> None:
    (payload,) = await run(make("ftjob-x", conn_id="no_such_connection"))
    assert payload["status"] == "error"
    assert payload["message"].startswith("Cannot use connection 'no_such_connection': ")
    assert payload["job"] is None


# -- legacy API, resuming, serialization -----------------------------------------------------------


async def test_legacy_api(sim, sim_conn, caplog) -> None:
    job_id = sim.add_job(JobSpec(job_id="ft-legacy", n_events=30, duration=0.8))
    trigger = make(job_id, caplog, api="fine_tunes")
    (payload,) = await run(trigger)
    events = sim.legacy_events(job_id)
    assert payload == {
        "status": "success",
        "message": f"Fine-tuning job {job_id} succeeded: {sim.legacy_job(job_id)['fine_tuned_model']}",
        "job": {
            "job_id": job_id,
            "status": "succeeded",
            "fine_tuned_model": sim.legacy_job(job_id)["fine_tuned_model"],
            "trained_tokens": None,
            "finished_at": None,
            "event_count": 30,
            "last_event": events[-1],
        },
    }
    assert lines(caplog, trigger) == [format_event(e) for e in events]


async def test_resumes_from_the_sensors_cursor(sim, sim_conn, caplog) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-resume", n_events=30))
    events = sim.events(job_id)
    state = TailState(events[9]["id"], events[9]["created_at"], 10)
    trigger = make(job_id, caplog, tail_state=state.to_dict(), last_event=events[9])
    (payload,) = await run(trigger)
    assert payload["job"] == expected_summary(sim, job_id)
    assert lines(caplog, trigger) == [format_event(e) for e in events[10:]]


# The kwargs a 0.1.0 sensor wrote into its trigger row: a row still in the database after an upgrade
# must deserialize and resume from where it stood.
KWARGS_0_1_0 = {
    "job_id": "ftjob-x",
    "conn_id": CONN_ID,
    "api": "fine_tunes",
    "poll_interval": 7.0,
    "end_time": 1_700_000_000.5,
    "tail_state": {"last_id": None, "last_created_at": None, "count": 3},
    "last_event": {"created_at": 1, "level": "info", "message": "m"},
    "log_events": False,
    "page_size": 20,
    "error_events": [{"created_at": 2, "level": "error", "message": "bad file"}],
}


def test_serialize_round_trip_is_plain_json_without_the_key() -> None:
    trigger = FineTuneJobTrigger(**KWARGS_0_1_0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_ftevents.triggers.FineTuneJobTrigger"
    assert kwargs == {
        "job_id": "ftjob-x",
        "conn_id": CONN_ID,
        "api": "fine_tunes",
        "poll_interval": 7.0,
        "end_time": 1_700_000_000.5,
        "progress": {
            "v": 1,
            "job_id": "ftjob-x",
            "tail": {"last_id": None, "last_created_at": None, "count": 3},
            "last_event": {"created_at": 1, "level": "info", "message": "m"},
            "error_events": [{"created_at": 2, "level": "error", "message": "bad file"}],
            "warned": [],
        },
        "log_events": False,
        "page_size": 20,
        "checkpoint_interval": 60.0,
        "read_events": True,
        "cancel_on_kill": False,
    }
    text = json.dumps(kwargs)
    assert API_KEY not in text and "sk-" not in text
    assert FineTuneJobTrigger(**json.loads(text)).serialize() == (classpath, kwargs)


async def test_trigger_row_of_0_1_0_resumes_after_an_upgrade(sim, sim_conn, caplog) -> None:
    """A row written by 0.1.0 (tail_state/last_event/error_events kwargs, no progress) logs only the
    events after its cursor and keeps its error events for the failure message."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-upgrade", n_events=24, outcome="failed"))
    events = sim.events(job_id)
    seen = events[9]
    old = {
        **KWARGS_0_1_0,
        "job_id": job_id,
        "api": "fine_tuning",
        "poll_interval": 0.05,
        "end_time": None,
        "log_events": True,
        "tail_state": {"last_id": seen["id"], "last_created_at": seen["created_at"], "count": 10},
        "last_event": seen,
        "error_events": [{"created_at": 2, "level": "error", "message": "seen before the upgrade"}],
    }
    kwargs = json.loads(json.dumps(old))  # as the triggerer reads the row
    trigger = make(kwargs.pop("job_id"), caplog, **kwargs)
    (payload,) = await run(trigger)
    assert [m for m in lines(caplog, trigger) if m.startswith("[")] == [format_event(e) for e in events[10:]]
    assert payload["status"] == "failed"
    assert payload["job"]["event_count"] == 24
    assert "seen before the upgrade" in payload["message"]


async def test_log_events_false_logs_no_event(sim, sim_conn, caplog) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-quiet", n_events=12))
    trigger = make(job_id, caplog, log_events=False)
    (payload,) = await run(trigger)
    assert payload["job"]["event_count"] == 12
    assert lines(caplog, trigger) == []


async def test_cancelled_trigger_closes_its_client(sim, sim_conn, clients) -> None:
    """The triggerer cancels a trigger whose task was cleared or timed out: the client must still close."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-long", n_events=12, duration=120))
    task = asyncio.ensure_future(run(make(job_id, poll_interval=30)))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len(sim.request_log) >= 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(clients) == 1 and clients[0].is_closed


# -- the event loop stays free -----------------------------------------------------------------------


@contextlib.contextmanager
def simulator_process(monkeypatch: pytest.MonkeyPatch, *args: str) -> Iterator[str]:
    """A simulator in its own process, ``openai_default`` pointing at it: in this process its threads
    would compete for the GIL and add their own garbage to what a test measures."""
    command = [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", "--api-key", API_KEY]
    proc = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://"), base_url
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(base_url))
        yield base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def slow_sim(monkeypatch) -> Iterator[str]:
    """Every answer takes 150 ms: an HTTP call that blocked the event loop would show as a 150 ms stall."""
    jobs = [f"ftjob-busy-{n}:1000:{1.0 + n * 0.05:.2f}:succeeded" for n in range(10)]
    faults = ["--fault", "503:3:/events:retry_after=0", "--fault", "slow:100000::delay=0.15"]
    with simulator_process(monkeypatch, *[a for job in jobs for a in ("--job", job)], *faults) as base_url:
        yield base_url


async def test_polling_leaves_no_cyclic_garbage(monkeypatch) -> None:
    """Whatever the number of polls, a trigger leaves the same few objects to the cycle collector.

    Cyclic garbage is what makes the collector run full passes over the triggerer's heap (each a
    stall of the loop); per poll it must be none. What is left is the standard library's (asyncio's
    closed socket transport): how much of it depends on the Python version, so it is not counted here
    (bench/bench_triggers.py reports the garbage the collector finds).
    """
    import gc

    jobs = ["ftjob-warm:6:0:succeeded", "ftjob-short:100:1.0:succeeded", "ftjob-long:300:3.0:succeeded"]
    with simulator_process(monkeypatch, *[a for job in jobs for a in ("--job", job)]):
        sink = logging.StreamHandler(io.StringIO())
        garbage: dict[str, list[str]] = {}
        modules: dict[str, set[str]] = {}  # the modules of the leftover objects' types
        counts: dict[str, int] = {}
        for job_id in ("ftjob-warm", "ftjob-short", "ftjob-long"):
            trigger = make(job_id, poll_interval=0.02)
            trigger.log.propagate = False
            trigger.log.addHandler(sink)
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                (payload,) = await run(trigger)
                gc.collect()
                garbage[job_id] = sorted(type(o).__name__ for o in gc.garbage)
                modules[job_id] = {type(o).__module__.partition(".")[0] for o in gc.garbage}
            finally:
                gc.garbage.clear()
                gc.set_debug(0)
                gc.enable()
            assert payload["status"] == "success"
            counts[job_id] = payload["job"]["event_count"]
    assert counts == {"ftjob-warm": 6, "ftjob-short": 100, "ftjob-long": 300}
    assert sink.stream.getvalue().count("\n") == 406
    assert garbage["ftjob-short"] == garbage["ftjob-long"]  # ~50 polls vs ~150: no per-poll garbage
    ours = ("AsyncRetrying", "RetryCallState", "Response", "Request", "URL", "Headers", "frame", "traceback")
    assert [name for name in garbage["ftjob-long"] if name in ours] == []
    stack = {"airflow_ftevents", "httpx", "httpcore", "h11", "anyio", "tenacity", "airflow", "structlog"}
    assert modules["ftjob-long"] & stack == set(), modules["ftjob-long"]


async def test_the_event_loop_is_never_blocked(slow_sim, monkeypatch) -> None:
    """10 triggers on 1,000-event jobs, slow answers, retries: the loop runs other work during every request.

    Each answer takes 150 ms: a request that blocked the event loop would let nothing else run until it
    returned. So a ticker coroutine counts its wake-ups, and every answered request must see it wake
    while the request was in flight. How late the loop wakes (its longest stall) is a speed:
    bench/bench_triggers.py measures it, this test does not. The objects the test process already holds
    (pytest, Airflow) are frozen out of the garbage collector first: a full collection of them takes
    150-300 ms here whatever runs on the loop, and it is the trigger's own work that this test watches.
    """
    import gc

    sink = logging.StreamHandler(io.StringIO())  # every event is logged and formatted, as in a triggerer
    sink.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    triggers = []
    for n in range(10):
        trigger = make(f"ftjob-busy-{n}")
        trigger.log.propagate = False
        trigger.log.addHandler(sink)
        triggers.append(trigger)
    stop = asyncio.Event()
    ticks = 0
    in_flight: list[int] = []  # per answered request: the ticker's wake-ups while it was in flight
    fetch_once = AsyncFineTuneEventsClient._fetch_once

    async def counted(client: AsyncFineTuneEventsClient, request: Any) -> Any:
        before = ticks
        answer = await fetch_once(client, request)  # the three 503s come at once, not slowly: they raise
        in_flight.append(ticks - before)
        return answer

    monkeypatch.setattr(AsyncFineTuneEventsClient, "_fetch_once", counted)

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0.005)
            ticks += 1

    gc.collect()
    gc.freeze()
    try:
        tick = asyncio.ensure_future(ticker())
        results = await asyncio.gather(*(run(trigger) for trigger in triggers))
        stop.set()
        await tick
    finally:
        gc.unfreeze()
    assert [payloads[0]["job"]["event_count"] for payloads in results] == [1000] * 10
    assert all(len(payloads) == 1 and payloads[0]["status"] == "success" for payloads in results)
    assert sink.stream.getvalue().count(" INFO ") >= 10 * 900
    assert len(in_flight) >= 10 * 11  # per trigger at least its job and ten pages of 100 events
    assert 0 not in in_flight, (
        f"{in_flight.count(0)} of {len(in_flight)} requests saw the loop do nothing else"
    )
