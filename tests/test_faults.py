"""Fault and bad-input suite: under every fault each component finishes exactly or fails clearly.

Real HTTP to the simulator and its fault switches, no mocks. The matrix (which fault on which component,
and what must come of it) is in ``faults_matrix.py``; each case here:

- creates a job, points ``openai_default`` at the simulator (or at a closed port), queues the fault;
- runs the component as Airflow would (the hook's methods, ``FineTuneJobTrigger.run()``, the sensor's
  ``execute`` in poke mode or deferrable then ``execute_complete``, the export operator's ``execute``);
- asserts the exact outcome: the simulator's events exactly (content, order, none lost or repeated), or
  the exact exception (class, ``status_code``, ``code``, message), or the trigger's one event; that every
  queued fault fired; that it ended (a hang guard, ``HANG_GUARD`` times the case's time bound, stops it
  otherwise) and no sooner than a server-requested delay; that an export left a whole file or nothing;
  and that the API key is in no log record, no stdout/stderr line, no exception, return value, XCom or
  serialized trigger.

``FTEVENTS_WRITE_RELIABILITY=1`` writes ``docs/reliability.md`` from what the cases observed; a test checks
that the rows of that file are exactly the cases declared here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import socket
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import faults_matrix as M
import pytest
import requests
from conftest import API_KEY, CONN_ID, connection_json
from hypothesis import given, settings
from hypothesis import strategies as st
from task_doubles import FakeTI, Records, expected_summary

from airflow_ftevents.checkpoints import CHECKPOINT_KEY
from airflow_ftevents.core.jobstate import format_event
from airflow_ftevents.errors import FineTuneEventsError
from airflow_ftevents.hooks import FineTuneEventsHook
from airflow_ftevents.links import FineTuneJobLink, dashboard_url
from airflow_ftevents.simulator import JobSpec, Simulator

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
KEY_TAIL = API_KEY[-16:]  # the random part of the key: a partly masked key is still a leak
PAGE = 100
POLL = 0.05
# A case that has not ended after this many times its time bound hangs. Its wall-clock time is not
# asserted (a loaded machine is no fault of the component); only that a server-requested delay was waited.
HANG_GUARD = 10

OBSERVED: dict[str, str] = {}  # case id -> observed outcome, for docs/reliability.md


# -- helpers ---------------------------------------------------------------------------------------------


_loggers = 0


def capture_logger() -> tuple[logging.Logger, Records]:
    """A plain logger for a sensor or trigger: its records are read here and also reach caplog."""
    global _loggers
    _loggers += 1
    logger = logging.getLogger(f"ftevents.faults.{_loggers}")
    logger.setLevel(logging.DEBUG)
    handler = Records()
    logger.handlers[:] = [handler]
    logger.propagate = True
    return logger, handler


def use_logger(obj: Any, logger: logging.Logger) -> None:
    for attribute in ("_log", "_cached_logger"):  # where LoggingMixin / DAG nodes cache their logger
        object.__setattr__(obj, attribute, logger)
    assert obj.log is logger


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n" for e in events
    )


def with_unknown_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """What the simulator's ``unknown_fields`` fault does to an event or a job (written independently)."""
    obj = dict(obj)
    obj["x_unreleased_field"] = {"nested": [1, 2, 3], "note": "a field this client does not know"}
    if obj.get("type") == "message":
        obj["type"] = "checkpoint"
    return obj


def error_texts(error: BaseException | None) -> list[str]:
    """Everything an exception shows: str, repr, args, the whole traceback, its causes and contexts."""
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts += [str(error), repr(error), repr(error.args), "".join(traceback.format_exception(error))]
        texts += [repr(getattr(error, name, None)) for name in ("message", "code", "hint", "request_id")]
        error = error.__cause__ or error.__context__
    return texts


def leaks(texts: list[str]) -> list[str]:
    """The texts that show the API key, or its random part."""
    return [text for text in texts if API_KEY in text or KEY_TAIL in text]


@dataclass
class Run:
    """One case in progress: the job, the captures and what the component returned."""

    case: M.Case
    sim: Simulator
    job_id: str
    out: Path  # an export's destination folder
    logger: logging.Logger
    records: Records
    texts: list[str] = field(default_factory=list)  # serialized triggers, XComs: scanned for the key
    xcoms: dict[str, Any] = field(default_factory=dict)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    injected: int = 0

    @property
    def fault(self) -> M.Fault:
        return self.case.fault

    def inject(self) -> None:
        for kind, count, path, params in self.case.injections():
            self.sim.inject(kind, count, path, **params)
            self.injected += count

    # -- what the simulator holds ---------------------------------------------------------------------

    def expected_events(self, legacy: bool = False) -> list[dict[str, Any]]:
        events = self.sim.legacy_events(self.job_id) if legacy else self.sim.events(self.job_id)
        if self.fault.transform == "unknown_fields":
            events = [with_unknown_fields(e) for e in events]
        elif self.fault.transform == "data_null":
            events = [{**e, "data": None} for e in events]
        return events

    def expected_job(self) -> dict[str, Any]:
        job = self.sim.job(self.job_id)
        if self.fault.transform == "unknown_fields":
            job = with_unknown_fields(job)
        elif self.fault.transform == "status":
            job["status"] = M.UNKNOWN_STATUS
        return job

    def expected_summary(self) -> dict[str, Any]:
        return expected_summary(self.sim, self.job_id, self.expected_events())

    def event_lines(self) -> list[str]:
        wanted = {format_event(e) for e in self.expected_events()}
        return [line for line in self.records.lines() if line in wanted]


async def collect(trigger: Any) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def run_trigger(r: Run, trigger: Any) -> list[dict[str, Any]]:
    use_logger(trigger, r.logger)
    r.texts.append(json.dumps(trigger.serialize()))
    r.payloads = asyncio.run(collect(trigger))
    r.texts.append(json.dumps(trigger.serialize()))
    assert len(r.payloads) == 1, f"the trigger must yield exactly one event, got {r.payloads}"
    return r.payloads


# -- the components --------------------------------------------------------------------------------------


def do_get_job(r: Run) -> Any:
    with contextlib.closing(FineTuneEventsHook(conn_id=CONN_ID)) as hook:
        return hook.get_job(r.job_id)


def do_list_events(r: Run) -> Any:
    with contextlib.closing(FineTuneEventsHook(conn_id=CONN_ID)) as hook:
        return hook.list_events(r.job_id, limit=PAGE)


def do_iter_events(r: Run) -> Any:
    with contextlib.closing(FineTuneEventsHook(conn_id=CONN_ID)) as hook:
        return list(hook.iter_events(r.job_id, page_size=PAGE))


def do_stream(r: Run) -> Any:
    with contextlib.closing(FineTuneEventsHook(conn_id=CONN_ID)) as hook:
        return list(hook.stream_events(r.job_id, poll_interval=POLL, page_size=PAGE))


def do_stream_legacy(r: Run) -> Any:
    with contextlib.closing(FineTuneEventsHook(conn_id=CONN_ID, api="fine_tunes")) as hook:
        return list(hook.stream_events(r.job_id, poll_interval=POLL))


def do_trigger(r: Run) -> Any:
    from airflow_ftevents.triggers import FineTuneJobTrigger

    trigger = FineTuneJobTrigger(
        r.job_id, conn_id=CONN_ID, poll_interval=POLL, end_time=time.time() + r.fault.deadline
    )
    return run_trigger(r, trigger)[0]


def _sensor(r: Run, deferrable: bool) -> Any:
    from airflow_ftevents.sensors import FineTuneJobSensor

    sensor = FineTuneJobSensor(
        task_id="wait",
        job_id=r.job_id,
        conn_id=CONN_ID,
        deferrable=deferrable,
        mode="poke",
        poke_interval=POLL,
        timeout=r.fault.deadline,
    )
    use_logger(sensor, r.logger)
    return sensor


def do_sensor(r: Run) -> Any:
    sensor = _sensor(r, deferrable=False)
    ti = FakeTI(dag_id="faults", task_id="task")
    r.xcoms = ti.xcoms
    return sensor.execute({"ti": ti})


def do_sensor_deferred(r: Run) -> Any:
    sensor = _sensor(r, deferrable=True)
    ti = FakeTI(dag_id="faults", task_id="task")
    r.xcoms = ti.xcoms
    context = {"ti": ti}
    try:
        sensor.execute(context)
    except TaskDeferred as deferred:
        r.inject()  # the fault hits the trigger, after the sensor deferred
        payload = run_trigger(r, deferred.trigger)[0]
        kwargs = dict(deferred.kwargs or {})
        return getattr(sensor, deferred.method_name)(context, **kwargs, event=payload)
    raise AssertionError("the sensor did not defer although the job was still running")


def do_export(r: Run) -> Any:
    from airflow_ftevents.operators import FineTuneEventsExportOperator

    wait = r.fault.key.startswith("unknown-status")
    op = FineTuneEventsExportOperator(
        task_id="export",
        job_id=r.job_id,
        conn_id=CONN_ID,
        destination=f"file://{r.out}/",
        wait_for_completion=wait,
        poll_interval=POLL,
        timeout=r.fault.deadline,
        deferrable=False,
    )
    ti = FakeTI(dag_id="faults", task_id="task")
    r.xcoms = ti.xcoms
    op.render_template_fields({})
    return op.execute({"ti": ti})


RUNNERS = {
    "get_job": do_get_job,
    "list_events": do_list_events,
    "iter_events": do_iter_events,
    "stream": do_stream,
    "stream_legacy": do_stream_legacy,
    "trigger": do_trigger,
    "sensor": do_sensor,
    "sensor_deferred": do_sensor_deferred,
    "export": do_export,
}
assert set(RUNNERS) == set(M.COMPONENTS)


# -- exactness, per component ---------------------------------------------------------------------------


def dup_and_missing(got: list[Any], want: list[Any]) -> tuple[int, int]:
    """Items delivered more often than the simulator holds them, and items not delivered."""
    have = Counter(json.dumps(x, sort_keys=True) for x in got)
    wanted = Counter(json.dumps(x, sort_keys=True) for x in want)
    return sum((have - wanted).values()), sum((wanted - have).values())


def assert_same_events(got: list[Any], want: list[Any], what: str) -> str:
    duplicates, missing = dup_and_missing(got, want)
    assert (duplicates, missing) == (0, 0), f"{what}: {duplicates} duplicates, {missing} missing"
    assert got == want, f"{what}: same events but not the same order or content"
    return f"{len(want)} events"


def exact(r: Run, value: Any) -> str:
    """Assert that the component delivered exactly what the simulator holds; describe it."""
    component = r.case.component
    if component == "get_job":
        assert value == r.expected_job()
        return f"job object as sent (status {value['status']!r})"
    if component == "list_events":
        if r.fault.transform == "empty_has_more":
            assert value == {"object": "list", "data": [], "has_more": True}
            return "the empty page with has_more=true, as sent"
        newest_first = r.expected_events()[::-1]
        assert value == {"object": "list", "data": newest_first[:PAGE], "has_more": len(newest_first) > PAGE}
        return f"page of {len(value['data'])} events as sent"
    if component in ("iter_events", "stream"):
        return assert_same_events(value, r.expected_events(), component)
    if component == "stream_legacy":
        return assert_same_events(value, r.expected_events(legacy=True), component)
    if component in ("trigger", "sensor_deferred", "sensor"):
        events = r.expected_events()
        described = assert_same_events(r.event_lines(), [format_event(e) for e in events], "logged events")
        summary = r.expected_summary()
        if component == "trigger":
            message = f"Fine-tuning job {r.job_id} succeeded: {summary['fine_tuned_model']}"
            assert value == {"status": "success", "message": message, "job": summary}
        else:
            assert value == summary
            link = {FineTuneJobLink().xcom_key: dashboard_url(r.job_id)}
            if component == "sensor_deferred":  # the trigger's first checkpoint, stored as it deferred
                assert r.xcoms[CHECKPOINT_KEY]["job_id"] == r.job_id
                link[CHECKPOINT_KEY] = r.xcoms[CHECKPOINT_KEY]
            assert r.xcoms == link
        return f"{described} logged once each, exact summary"
    if component == "export":
        events = r.expected_events()
        files = sorted(p.name for p in r.out.iterdir())
        assert len(files) == 1, f"the export folder holds {files}"
        target = r.out / files[0]
        assert not files[0].startswith(".") and files[0].endswith(".jsonl")
        assert target.read_bytes() == jsonl(events)
        assert value == {
            "uri": f"file://{target}",
            "job_id": r.job_id,
            "count": len(events),
            "first_event_id": events[0]["id"],
            "last_event_id": events[-1]["id"],
            "first_created_at": events[0]["created_at"],
            "last_created_at": events[-1]["created_at"],
            "status": "succeeded",
            "bytes": len(jsonl(events)),
        }
        return f"file of {len(events)} events, byte-exact, exact manifest"
    raise AssertionError(component)


# -- the fault cases -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def reliability_report() -> Any:
    """Write docs/reliability.md from the observed outcomes when FTEVENTS_WRITE_RELIABILITY=1."""
    started = time.monotonic()
    yield
    if os.environ.get("FTEVENTS_WRITE_RELIABILITY") != "1":
        return
    missing = [case.id for case in M.CASES if case.id not in OBSERVED]
    if missing:
        raise RuntimeError(
            f"docs/reliability.md not written: {len(missing)} cases did not pass or run: {missing[:10]}"
        )
    import airflow

    environment = (
        f"Python {platform.python_version()}, Apache Airflow {airflow.__version__}, {os.cpu_count()} CPUs"
    )
    DOC.write_text(M.render_doc(OBSERVED, environment, time.monotonic() - started), encoding="utf-8")


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=pytest.mark.timeout(HANG_GUARD * c.fault.bound)) for c in M.CASES],
)
def test_fault(case: M.Case, sim: Simulator, monkeypatch, tmp_path: Path, caplog, capfd) -> None:
    fault = case.fault
    caplog.set_level(logging.DEBUG)
    logger, records = capture_logger()
    job_id = fault.job_id or f"ftjob-{case.id}"
    duration = fault.duration or (M.LIVE_FOR_DEFERRAL if case.component == "sensor_deferred" else 0.0)
    sim.add_job(
        JobSpec(job_id=job_id, n_events=fault.n_events, duration=duration, training_file=fault.training_file)
    )
    sim.raw_utf8 = fault.raw_utf8
    r = Run(case, sim, job_id, tmp_path / "out", logger, records)

    with contextlib.ExitStack() as stack:
        host = sim.base_url
        if fault.refused:  # a bound socket that never listens: connections are refused at once
            closed = stack.enter_context(socket.socket())
            closed.bind(("127.0.0.1", 0))
            host = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(host, **fault.conn))
        if case.component != "sensor_deferred":
            r.inject()
        sim.request_log.clear()
        started = time.monotonic()
        try:
            value, error = RUNNERS[case.component](r), None
        except BaseException as exc:  # the outcome under test
            value, error = None, exc
        elapsed = time.monotonic() - started
    requests_made = len(sim.request_log)
    remaining = sum(p["remaining"] for p in sim.pending_faults())
    fired = r.injected - remaining

    # The outcome.
    expect = case.expect
    if expect.outcome == "exact":
        assert error is None, f"expected exact events, got {error!r}\n" + "".join(
            traceback.format_exception(error)
        )
        observed = f"exact: {exact(r, value)}"
    elif expect.outcome == "event":
        assert error is None, f"expected one trigger event, got {error!r}"
        assert value["status"] == expect.event_status, value
        for fragment in expect.contains:
            assert fragment in value["message"], (fragment, value["message"])
        observed = f"event `{value['status']}`: {value['message'][:120]}"
        observed += "..." if len(value["message"]) > 120 else ""
    else:
        assert error is not None, f"expected {expect.error}, got {value!r}"[:2000]
        assert type(error).__name__ == expect.error, "".join(traceback.format_exception(error))
        if isinstance(error, FineTuneEventsError):
            assert (error.status_code, error.code) == (expect.status_code, expect.code), error
        else:  # Airflow's exceptions carry an HTTP status of their own, not the API's
            assert (expect.status_code, expect.code) == (None, None)
        for fragment in expect.contains:
            assert fragment in str(error), (fragment, str(error))
        attrs = []
        if isinstance(error, FineTuneEventsError):
            attrs = [f"{k}={getattr(error, k)}" for k in ("status_code", "code") if getattr(error, k)]
        text = error.message if isinstance(error, FineTuneEventsError) else str(error)
        observed = f"`{type(error).__name__}`" + (f" ({', '.join(attrs)})" if attrs else "")
        observed += f": {text[:120]}" + ("..." if len(text) > 120 else "")
        if case.component == "export":  # nothing at all was published, not even a temporary file
            assert not r.out.exists() or sorted(p.name for p in r.out.iterdir()) == []
    if case.component == "export":
        assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])

    # The fault really happened, and a server-requested delay was waited (the hang guard bounds the time).
    if fault.leftover_ok:
        assert fired >= 1
    else:
        assert fired == r.injected, sim.pending_faults()
    assert fault.min_elapsed <= elapsed, elapsed
    if fault.no_requests:
        assert requests_made == 0, sim.request_log

    # No secret anywhere: log records, stdout/stderr (Airflow's structlog output), exceptions, values.
    out, err = capfd.readouterr()
    texts = [caplog.text, *(rec.getMessage() for rec in caplog.records), out, err]
    texts += [*error_texts(error), json.dumps(value, default=repr), json.dumps(r.xcoms, default=repr)]
    texts += [*r.texts, json.dumps(r.payloads, default=repr)]
    assert leaks(texts) == []
    if fault.key == "key-echo-500":  # the retries were logged, with the echoed key masked
        shown = out + err + caplog.text
        assert "Internal error for ***" in shown
        observed += "; the retry warnings were logged with the key masked"
    if fault.key == "unknown-status" and case.component in ("sensor", "trigger", "sensor_deferred"):
        warned = [line for line in records.lines() if f"status '{M.UNKNOWN_STATUS}', unknown" in line]
        assert len(warned) == 1, records.lines()
        observed += "; unknown status warned once"

    if fault.raw_utf8:  # the wire really carried raw UTF-8, split wherever the reads fell
        page = requests.get(
            f"{sim.base_url}/fine-tunes/{quote(job_id, safe='')}/events",
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
        assert "日本語-🚀".encode() in page.content and b"\\u" not in page.content

    faults = f"{fired} fault{'s' if fired != 1 else ''} fired" if r.injected else "no fault queued"
    OBSERVED[case.id] = f"{observed} ({faults}, {requests_made} requests, {elapsed:.2f} s)"


# -- bad input and the checks themselves -----------------------------------------------------------------


def test_the_key_scan_catches_a_leak_in_every_capture(capfd, caplog) -> None:
    """The leak check is not vacuous: the key (or its random part) in a record, on stdout or in an
    exception is found; and Airflow's structlog output of the hook does reach capfd."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("ftevents.faults.canary").warning("token %s", API_KEY)
    print("partly masked: sk-***" + KEY_TAIL)
    FineTuneEventsHook(conn_id="nothing").log.warning("structlog canary line")
    out, _ = capfd.readouterr()
    assert "structlog canary line" in out
    assert len(leaks([caplog.text, out])) == 2
    assert leaks(error_texts(RuntimeError(f"with {API_KEY}"))) != []
    assert leaks(["sk-test-ftevents-***", "nothing"]) == []


def test_reliability_doc_lists_exactly_the_cases_of_the_suite() -> None:
    """docs/reliability.md stays true: its rows are the (fault, component) pairs this suite runs."""
    text = DOC.read_text(encoding="utf-8")
    rows = M.doc_rows(text)
    assert len(rows) == len(M.CASES), "docs/reliability.md has duplicate or missing rows"
    assert set(rows) == {case.row for case in M.CASES}, (
        "docs/reliability.md is out of date; regenerate it with "
        "FTEVENTS_WRITE_RELIABILITY=1 pytest tests/test_faults.py"
    )
    assert "| not run |" not in text


# -- paging, property-based, over real HTTP ---------------------------------------------------------------


@pytest.fixture(scope="module")
def paging_sim() -> Any:
    with Simulator(api_key=API_KEY) as simulator, pytest.MonkeyPatch.context() as patch:
        patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(simulator.base_url))
        yield simulator


@settings(max_examples=25, deadline=None)
@given(size=st.integers(6, 400), page_size=st.integers(1, 120))
def test_any_job_size_and_page_size_yield_every_event_once(paging_sim: Simulator, size: int, page_size: int):
    job_id = paging_sim.add_job(JobSpec(n_events=size))
    paging_sim.request_log.clear()
    hook = FineTuneEventsHook(conn_id=CONN_ID)
    try:
        events = list(hook.iter_events(job_id, page_size=page_size))
    finally:
        hook.close()
    assert events == paging_sim.events(job_id)
    assert len({e["id"] for e in events}) == size
    # One request per page and no more: the last page says has_more=false.
    log = paging_sim.request_log
    assert len(log) == math.ceil(size / page_size)
    assert all(status == 200 for _, _, status in log)
