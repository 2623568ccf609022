"""FineTuneJobSensor: poke, defer and complete paths against the simulator, then end to end in Airflow.

The unit tests call the sensor the way the task runner does (``execute``, ``poke``, ``resume_execution``)
with a small stand-in context; the end-to-end tests run real DAGs with ``dag.test()`` in subprocesses, on
every Airflow venv of the checkout (3.3 uses ``task_state_store``, 3.1 the Variable fallback).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, CONN_ID, connection_json
from task_doubles import FakeTI, MemoryStore, Records, capture, expected_summary

from airflow_ftevents import sensors
from airflow_ftevents.core.jobstate import format_event
from airflow_ftevents.core.paging import MIN_TAIL_PAGE
from airflow_ftevents.errors import FineTuneEventsError
from airflow_ftevents.links import FineTuneJobLink
from airflow_ftevents.sensors import FineTuneJobSensor
from airflow_ftevents.simulator import JobSpec, Simulator

try:
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )

ROOT = Path(__file__).resolve().parent.parent
LINK_KEY = FineTuneJobLink().xcom_key


# -- helpers ---------------------------------------------------------------------------------------


def context(store: MemoryStore | None = None, ti: FakeTI | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": ti or FakeTI()}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def event_lines(records: Records, events: list[dict[str, Any]]) -> list[str]:
    """The logged lines that are event lines, in order (other lines are status messages)."""
    wanted = {format_event(e) for e in events}
    return [line for line in records.lines() if line in wanted]


def make(**kwargs: Any) -> FineTuneJobSensor:
    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("poke_interval", 0)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("deferrable", False)
    return FineTuneJobSensor(**kwargs)


def expected_failure(sim: Any, job_id: str) -> str:
    job = sim.job(job_id)
    error = job["error"]
    detail = f"{error['message']} (code {error['code']}" + (
        f", param {error['param']})" if error["param"] else ")"
    )
    errors = [e["message"] for e in sim.events(job_id) if e["level"] == "error"]
    return f"Fine-tuning job {job_id} failed; error: {detail}; error events: " + " | ".join(errors)


def poke_until_done(sensor: FineTuneJobSensor, ctx: dict[str, Any], limit: int = 60) -> tuple[Any, int]:
    for pokes in range(1, limit + 1):
        result = sensor.poke(ctx)
        if result.is_done:
            return result.xcom_value, pokes
        time.sleep(0.15)
    raise AssertionError("the job never finished")


# -- construction ----------------------------------------------------------------------------------


def test_job_id_is_templated_and_arguments_are_checked() -> None:
    sensor = make(job_id="{{ params.job }}-{{ ds_nodash }}")
    assert FineTuneJobSensor.template_fields == ("job_id", "conn_id")
    sensor.render_template_fields({"params": {"job": "ftjob-abc"}, "ds_nodash": "20240101"})
    assert sensor.job_id == "ftjob-abc-20240101"
    assert [type(link) for link in FineTuneJobSensor.operator_extra_links] == [FineTuneJobLink]
    with pytest.raises(ValueError, match="api must be 'fine_tuning'"):
        make(job_id="j", api="fine-tuning")
    with pytest.raises(ValueError, match="page_size must be a whole number >= 1, got 0"):
        make(job_id="j", page_size=0)


def test_import_is_warning_free_and_does_not_load_the_hook_or_trigger() -> None:
    code = (
        "import sys, airflow_ftevents.sensors; "
        "print(sorted(m for m in ('airflow_ftevents.hooks', 'airflow_ftevents.triggers', "
        "'airflow_ftevents.async_client') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- poke --------------------------------------------------------------------------------------------


def test_poke_logs_each_new_event_once_and_reads_only_new_ones(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-live", n_events=30, duration=2.0))
    sensor = make(job_id=job_id)
    records = capture(sensor)
    ctx = context()
    summary, pokes = poke_until_done(sensor, ctx)

    events = sim.events(job_id)
    assert len(events) == 30
    assert pokes >= 3
    assert event_lines(records, events) == [format_event(e) for e in events]
    assert records.lines()[0] == f"[info] Created fine-tuning job: {job_id}"
    assert summary == expected_summary(sim, job_id)

    # Steady state: a further poke reads the job and one small page (the last poke found nothing
    # new, so the first page asks for MIN_TAIL_PAGE events), nothing else, and logs no event.
    before = len(sim.request_log)
    assert sensor.poke(ctx).xcom_value == summary
    assert sim.request_log[before:] == [
        ("GET", f"/v1/fine_tuning/jobs/{job_id}", 200),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}/events?limit={MIN_TAIL_PAGE}", 200),
    ]
    assert event_lines(records, events) == [format_event(e) for e in events]


def test_execute_returns_the_exact_summary_and_persists_the_link(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-done", n_events=12, outcome="succeeded"))
    ti = FakeTI()
    result = make(job_id=job_id).execute(context(ti=ti))
    job = sim.job(job_id)
    last = sim.events(job_id)[-1]
    assert result == {
        "job_id": job_id,
        "status": "succeeded",
        "fine_tuned_model": job["fine_tuned_model"],
        "trained_tokens": job["trained_tokens"],
        "finished_at": job["finished_at"],
        "event_count": 12,
        "last_event": last,
    }
    assert result["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert result["last_event"]["message"] == "The job has successfully completed"
    assert ti.xcoms == {LINK_KEY: f"https://platform.openai.com/finetune/{job_id}"}


def test_failed_job_fails_at_once_with_the_error_and_error_events(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-bad", n_events=10, outcome="failed"))
    sensor = make(job_id=job_id, retries=3)
    records = capture(sensor)
    with pytest.raises(AirflowFailException) as info:
        sensor.execute(context())
    assert str(info.value) == expected_failure(sim, job_id)
    assert str(info.value).endswith(" | The job has failed")
    errors = [e for e in sim.events(job_id) if e["level"] == "error"]
    assert len(errors) == 2
    assert records.lines(logging.ERROR) == [format_event(e) for e in errors]


def test_cancelled_job_fails_with_its_status(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-cancelled", n_events=10, outcome="cancelled"))
    with pytest.raises(AirflowFailException) as info:
        make(job_id=job_id).execute(context())
    assert str(info.value) == f"Fine-tuning job {job_id} cancelled"


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_soft_fail_skips_a_failed_or_cancelled_job(sim, sim_conn, outcome) -> None:
    job_id = sim.add_job(JobSpec(job_id=f"ftjob-{outcome}", n_events=10, outcome=outcome))
    with pytest.raises(AirflowSkipException) as info:
        make(job_id=job_id, soft_fail=True).execute(context())
    expected = expected_failure(sim, job_id) if outcome == "failed" else f"Fine-tuning job {job_id} cancelled"
    assert str(info.value) == expected


def test_unknown_status_keeps_waiting_and_warns_once(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-odd", n_events=10))
    sim.inject("unknown_status", count=3, path=f"/fine_tuning/jobs/{job_id}", status="on_hold")
    sensor = make(job_id=job_id)
    records = capture(sensor)
    ctx = context()
    assert [sensor.poke(ctx).is_done for _ in range(4)] == [False, False, False, True]
    assert records.lines(logging.WARNING) == [
        f"Job {job_id} has status 'on_hold', unknown to this provider; still waiting"
    ]
    assert len(event_lines(records, sim.events(job_id))) == 10


def test_unknown_job_is_an_ordinary_failure_even_with_soft_fail(sim, sim_conn) -> None:
    with pytest.raises(FineTuneEventsError) as info:
        make(job_id="ftjob-missing", soft_fail=True).execute(context())
    assert info.value.status_code == 404
    assert not isinstance(info.value, (AirflowFailException, AirflowSkipException))


def test_api_errors_after_the_hook_retries_propagate(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-flaky", n_events=10))
    sim.inject("503", count=4, path=f"/fine_tuning/jobs/{job_id}", retry_after=0)
    with pytest.raises(FineTuneEventsError) as info:
        make(job_id=job_id).execute(context())
    assert info.value.status_code == 503
    assert sim.request_log == [("GET", f"/v1/fine_tuning/jobs/{job_id}", 503)] * 4  # 1 try + 3 retries


def test_legacy_api_polls_and_logs_each_event_once(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ft-legacy", n_events=20, duration=1.5))
    sensor = make(job_id=job_id, api="fine_tunes")
    records = capture(sensor)
    summary, pokes = poke_until_done(sensor, context())
    events = sim.legacy_events(job_id)
    assert pokes >= 2
    assert event_lines(records, events) == [format_event(e) for e in events]
    job = sim.legacy_job(job_id)
    assert summary == {
        "job_id": job_id,
        "status": "succeeded",
        "fine_tuned_model": job["fine_tuned_model"],
        "trained_tokens": None,
        "finished_at": None,
        "event_count": 20,
        "last_event": events[-1],
    }
    assert events[-1]["message"] == "The job has successfully completed"


# -- reschedule mode: the cursor survives the restart of the task ---------------------------------


def run_rescheduled(sim: Any, job_id: str, ctx_factory: Any, **kwargs: Any) -> tuple[Any, list[str], int]:
    """Restart the sensor (a new instance, as a new task process) until it stops rescheduling."""
    lines: list[str] = []
    for restarts in range(1, 80):
        sensor = make(job_id=job_id, mode="reschedule", **kwargs)
        records = capture(sensor)
        try:
            result = sensor.execute(ctx_factory())
        except AirflowRescheduleException:
            lines += records.lines()
            time.sleep(0.15)
            continue
        lines += records.lines()
        return result, lines, restarts
    raise AssertionError("the sensor never finished")


def test_reschedule_mode_keeps_the_cursor_in_task_state_store(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-resched", n_events=30, duration=2.0))
    store = MemoryStore()
    result, lines, restarts = run_rescheduled(sim, job_id, lambda: context(store))
    events = sim.events(job_id)
    assert restarts >= 3
    assert [line for line in lines if line in {format_event(e) for e in events}] == [
        format_event(e) for e in events
    ]
    assert any(line.startswith("Resuming after ") for line in lines)
    assert result == expected_summary(sim, job_id)
    assert store.data == {}  # deleted when the sensor's try ended
    assert 1 <= store.writes <= restarts


def test_reschedule_mode_falls_back_to_a_variable_without_task_state_store(
    sim, sim_conn, monkeypatch
) -> None:
    from airflow.sdk import Variable

    variables: dict[str, str] = {}
    seen_keys: set[str] = set()

    def fake_get(key: str, default: Any = None, deserialize_json: bool = False) -> Any:
        assert deserialize_json
        return json.loads(variables[key]) if key in variables else default

    def fake_set(key: str, value: Any, description: str | None = None, serialize_json: bool = False) -> None:
        assert serialize_json
        seen_keys.add(key)
        variables[key] = json.dumps(value)

    monkeypatch.setattr(Variable, "get", staticmethod(fake_get))
    monkeypatch.setattr(Variable, "set", staticmethod(fake_set))
    monkeypatch.setattr(Variable, "delete", staticmethod(lambda key: variables.pop(key, None)))

    job_id = sim.add_job(JobSpec(job_id="ftjob-resched-var", n_events=20, duration=1.5))
    result, lines, restarts = run_rescheduled(sim, job_id, context)
    events = sim.events(job_id)
    assert restarts >= 2
    assert [line for line in lines if line in {format_event(e) for e in events}] == [
        format_event(e) for e in events
    ]
    assert seen_keys == {"ftevents_cursor__dag__run__wait__-1"}
    assert variables == {}
    assert result["event_count"] == 20


def test_reschedule_cursor_of_another_job_is_ignored_and_timeout_cleans_up(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-slow", n_events=10, duration=60))
    store = MemoryStore()
    store.set("ftevents_cursor", {"job_id": "ftjob-other", "tail": {"last_id": "x", "count": 99}})
    sensor = make(job_id=job_id, mode="reschedule", timeout=0)
    records = capture(sensor)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute(context(store))
    assert event_lines(records, sim.events(job_id)) == [format_event(e) for e in sim.events(job_id)]
    assert store.data == {}


# -- deferrable: check once, then defer --------------------------------------------------------------


def test_finished_job_never_defers(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-early", n_events=10))
    assert make(job_id=job_id, deferrable=True).execute(context()) == expected_summary(sim, job_id)


def test_failed_job_fails_before_deferring(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-early-bad", n_events=10, outcome="failed"))
    with pytest.raises(AirflowFailException) as info:
        make(job_id=job_id, deferrable=True).execute(context())
    assert str(info.value) == expected_failure(sim, job_id)


def test_running_job_defers_with_exact_trigger_kwargs(sim, sim_conn, monkeypatch) -> None:
    from airflow_ftevents.triggers import FineTuneJobTrigger

    monkeypatch.setattr(sensors, "wall_clock", lambda: 1_700_000_000.0)
    job_id = sim.add_job(JobSpec(job_id="ftjob-running", n_events=30, duration=60))
    ti = FakeTI()
    sensor = make(job_id=job_id, deferrable=True, poke_interval=5, timeout=600, page_size=50)
    records = capture(sensor)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(context(ti=ti))
    first = sim.events(job_id)[:2]  # validating_files: the first two events are visible
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=600 + sensors.DEFER_GRACE_SECONDS)
    classpath, kwargs = deferred.trigger.serialize()
    assert classpath == "airflow_ftevents.triggers.FineTuneJobTrigger"
    assert kwargs == {
        "job_id": job_id,
        "conn_id": CONN_ID,
        "api": "fine_tuning",
        "poll_interval": 5.0,
        "end_time": 1_700_000_600.0,
        "progress": {
            "v": 1,
            "job_id": job_id,
            "tail": {"last_id": first[1]["id"], "last_created_at": first[1]["created_at"], "count": 2},
            "last_event": first[1],
            "error_events": [],
            "warned": [],
        },
        "log_events": True,
        "page_size": 50,
        "checkpoint_interval": 60.0,
        "read_events": True,
        "cancel_on_kill": False,  # a sensor only watches: killing it leaves the job alone
    }
    text = json.dumps(kwargs)
    assert API_KEY not in text
    assert FineTuneJobTrigger(**json.loads(text)).serialize() == (classpath, kwargs)
    assert event_lines(records, first) == [format_event(e) for e in first]
    assert ti.xcoms == {
        LINK_KEY: f"https://platform.openai.com/finetune/{job_id}",
        # the trigger's first checkpoint: the state it starts from, so it always finds one
        "ftevents_trigger_checkpoint": kwargs["progress"],
    }


def test_outlet_asset_events_carry_the_model_the_summary_stays_the_sensors(sim, sim_conn) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from airflow_ftevents.core.jobtag import asset_extra, job_result

    job_id = sim.add_job(JobSpec(job_id="ftjob-outlets", n_events=40))
    asset = Asset("ftevents_sensor_model")
    events = OutletEventAccessors()
    summary = make(job_id=job_id, outlets=[asset]).execute({"ti": FakeTI(), "outlet_events": events})
    assert summary == expected_summary(sim, job_id)  # the XCom keeps the sensor's shape
    checkpoints = sim.checkpoints(job_id)
    assert checkpoints
    assert events[asset].extra == asset_extra(job_result(summary, sim.job(job_id), checkpoints), checkpoints)
    assert events[asset].extra["fine_tuned_model"] == sim.job(job_id)["fine_tuned_model"]


# -- execute_complete, entered the way the task runner does (resume_execution) ----------------------

SUMMARY = {
    "job_id": "ftjob-x",
    "status": "succeeded",
    "fine_tuned_model": "ft:m",
    "trained_tokens": 10,
    "finished_at": 1,
    "event_count": 7,
    "last_event": None,
}


def resume(event: Any, **kwargs: Any) -> Any:
    sensor = make(job_id="ftjob-x", deferrable=True, **kwargs)
    return sensor.resume_execution("execute_complete", {"event": event}, context())


def chain(exc: BaseException | None) -> list[str]:
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__
    return out


def test_complete_success_returns_the_summary() -> None:
    assert resume({"status": "success", "message": "ok", "job": SUMMARY}) == SUMMARY


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_complete_failed_or_cancelled(status) -> None:
    event = {"status": status, "message": f"Fine-tuning job ftjob-x {status}", "job": SUMMARY}
    with pytest.raises(AirflowFailException) as info:
        resume(event)
    assert str(info.value) == f"Fine-tuning job ftjob-x {status}"
    with pytest.raises(AirflowSkipException) as skipped:
        resume(event, soft_fail=True)
    assert f"Fine-tuning job ftjob-x {status}" in chain(skipped.value)


def test_complete_timeout() -> None:
    event = {"status": "timeout", "message": "did not finish before the deadline", "job": SUMMARY}
    with pytest.raises(AirflowSensorTimeout) as info:
        resume(event)
    assert str(info.value) == "did not finish before the deadline"
    with pytest.raises(AirflowSkipException) as skipped:
        resume(event, soft_fail=True)
    assert "did not finish before the deadline" in chain(skipped.value)


@pytest.mark.parametrize("soft_fail", [False, True])
def test_complete_error_is_an_ordinary_failure(soft_fail) -> None:
    with pytest.raises(FineTuneEventsError) as info:
        resume({"status": "error", "message": "HTTP 401 invalid key", "job": None}, soft_fail=soft_fail)
    assert str(info.value) == "HTTP 401 invalid key"


def test_complete_error_raises_the_triggers_own_exception_again() -> None:
    """What the trigger met (class, status code, code, request id) is what the task raises."""
    from airflow_ftevents.errors import FineTuneEventsNotFoundError
    from airflow_ftevents.triggers import trigger_event_payload

    met = FineTuneEventsNotFoundError(
        "No such job: ftjob-x", status_code=404, code="not_found", request_id="req_9", hint="Check the id"
    )
    with pytest.raises(FineTuneEventsNotFoundError) as info:
        resume(trigger_event_payload("error", str(met), None, met))
    got = info.value
    assert (got.message, got.status_code, got.code, got.request_id, got.hint) == (
        "No such job: ftjob-x",
        404,
        "not_found",
        "req_9",
        "Check the id",
    )
    assert (
        str(got)
        == str(met)
        == "[HTTP 404, code=not_found] No such job: ftjob-x (request id req_9). Check the id"
    )
    forged = {"status": "error", "message": "m", "job": None, "error": {"class": "KeyError", "message": "x"}}
    with pytest.raises(FineTuneEventsError) as plain:
        resume(forged)
    assert type(plain.value) is FineTuneEventsError and str(plain.value) == "m"


@pytest.mark.parametrize(
    "event",
    [
        None,
        "success",
        {"status": "done", "message": "m", "job": SUMMARY},
        {"status": "success", "job": SUMMARY},
        {"status": "success", "message": "m", "job": None},
        {"status": "failed", "message": "m", "job": {"status": "failed"}},
    ],
)
@pytest.mark.parametrize("soft_fail", [False, True])
def test_complete_rejects_malformed_payloads_loudly(event, soft_fail) -> None:
    with pytest.raises(ValueError, match="rigger event"):
        resume(event, soft_fail=soft_fail)


# -- end to end: real DAGs, dag.test(), a real metadata DB, in a subprocess ---------------------------
#
# One subprocess (so this process's Airflow configuration is untouched) creates a fresh sqlite DB,
# then runs the DAGs one after the other with dag.test(). First (unless FTEVENTS_E2E_TRIGGERER=0) one
# DAG whose trigger runs in a real `airflow triggerer` process started by the runner, not in line.

DAG_FILE = '''
from __future__ import annotations

import datetime
import json
import os

import airflow
import requests
from airflow.sdk import DAG, task

from airflow_ftevents.sensors import FineTuneJobSensor

# Airflow 3.1's dag.test() spends seconds per task start, so its jobs must last longer for the sensor to
# find them still running (and to be rescheduled a few times).
_VERSION = tuple(int(p) for p in airflow.__version__.split(".")[:2])
JOB_SECONDS = "4" if _VERSION >= (3, 3) else "12"


class DagTestSafeSensor(FineTuneJobSensor):
    """Works around apache/airflow#58777 (3.1.x dag.test: get_first_reschedule_date returns a str, which
    breaks every reschedule-mode sensor there); the sensor itself is unchanged."""

    def execute(self, context):
        ti = context["ti"]
        original = ti.get_first_reschedule_date

        def first_reschedule_date(ctx):
            value = original(ctx)
            if isinstance(value, str):
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value

        object.__setattr__(ti, "get_first_reschedule_date", first_reschedule_date)
        return super().execute(context)


def make(dag_id: str, outcome: str, sensor_class=FineTuneJobSensor, **sensor_kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:

        @task
        def start() -> str:
            """Create the fine-tune (on the simulator) and hand its id to the sensor."""
            conn = json.loads(os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"])
            resp = requests.post(
                conn["host"] + "/fine_tuning/jobs",
                headers={"Authorization": "Bearer " + conn["password"]},
                json={
                    "model": "gpt-4o-mini-2024-07-18",
                    "training_file": "file-e2e",
                    "metadata": {"sim_events": "30", "sim_seconds": JOB_SECONDS, "sim_outcome": outcome},
                },
                timeout=10,
            )
            resp.raise_for_status()
            return resp.json()["id"]

        wait = sensor_class(
            task_id="wait", job_id="{{ ti.xcom_pull(task_ids='start') }}", poke_interval=1, timeout=120,
            **sensor_kwargs,
        )

        @task
        def after(summary: dict) -> str:
            return summary["fine_tuned_model"]

        start() >> wait
        after(wait.output)
    return dag


external_triggerer = make("e2e_triggerer", "succeeded", deferrable=True)
deferred_ok = make("e2e_deferred_ok", "succeeded", deferrable=True)
deferred_failed = make("e2e_deferred_failed", "failed", deferrable=True)
rescheduled = make(
    "e2e_rescheduled", "succeeded", DagTestSafeSensor, mode="reschedule", deferrable=False
)
'''

RUNNER = """
import json, os, signal, subprocess, sys
from pathlib import Path

import airflow
import airflow.sdk.definitions.dag as dag_module
from airflow.models.variable import Variable as VariableModel
from airflow.models.xcom import XComModel
from airflow.utils import db
from airflow.utils.cli import get_bagged_dag
from airflow.utils.session import create_session
from sqlalchemy import select, text

db.initdb()  # a fresh sqlite DB, created in this process so that Airflow is imported once
external = os.environ.get("FTEVENTS_E2E_TRIGGERER") == "1"
triggerer = None
if external:
    triggerer = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "triggerer"],
        stdout=open("triggerer.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )


def stop_triggerer():
    global triggerer
    if triggerer is not None:
        os.killpg(triggerer.pid, signal.SIGKILL)
        triggerer.wait()
        triggerer = None


def on_alarm(signum, frame):
    stop_triggerer()
    print("=== TIMEOUT", flush=True)
    os._exit(3)


signal.signal(signal.SIGALRM, on_alarm)
signal.alarm(240)
inline = dag_module._run_task


def without_inline_trigger(*, ti, task, run_triggerer=False):
    return inline(ti=ti, task=task, run_triggerer=False)


def trigger_log_events(dag_id):
    events = []
    for path in sorted(Path(os.environ["AIRFLOW_HOME"], "logs", "dag_id=" + dag_id).rglob("*trigger*")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            # 3.3 names the trigger's logger; 3.1 writes no logger name, only the emitting file
            logger = record.get("logger")
            if logger == "airflow_ftevents.triggers.FineTuneJobTrigger" or (
                logger is None and record.get("filename") == "jobstate.py"
            ):
                events.append(record["event"])
    return events


results = {}
order = ["e2e_triggerer"] if external else []
order += ["e2e_deferred_ok", "e2e_deferred_failed", "e2e_rescheduled"]
for dag_id in order:
    dag = get_bagged_dag(bundle_names=None, dag_id=dag_id)  # parsed and serialized, as `dags test` does
    print("=== BEGIN " + dag_id, flush=True)
    if dag_id == "e2e_triggerer":
        dag_module._run_task = without_inline_trigger  # the deferred task waits for the real triggerer
    try:
        dr = dag.test()
    finally:
        dag_module._run_task = inline
        if dag_id == "e2e_triggerer":
            stop_triggerer()
    print("=== END " + dag_id, flush=True)
    with create_session() as session:
        tis = {t.task_id: getattr(t.state, "value", t.state) for t in dr.get_task_instances(session=session)}
        rows = session.scalars(XComModel.get_many(run_id=dr.run_id, dag_ids=dag_id)).all()
        xcoms = {r.task_id + "." + r.key: XComModel.deserialize_value(r) for r in rows}
        cursors = [k for k in session.scalars(select(VariableModel.key)) if k.startswith("ftevents_cursor")]
        try:
            cursors += [k for (k,) in session.execute(text("SELECT key FROM task_state_store"))]
        except Exception:
            session.rollback()
    results[dag_id] = {"dag_run": getattr(dr.state, "value", dr.state), "tis": tis, "xcoms": xcoms,
                       "cursors": cursors, "airflow_version": airflow.__version__,
                       "trigger_log": trigger_log_events(dag_id)}
with open(sys.argv[1], "w") as f:
    json.dump(results, f)
"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")
WITH_TRIGGERER = os.environ.get("FTEVENTS_E2E_TRIGGERER", "1") != "0"  # about 25 s; 0 skips it


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> dict[str, Any]:
    """Run the DAGs in one Airflow subprocess against a simulator in this process; collect the outcome."""
    home = tmp_path_factory.mktemp("airflow-e2e")
    (home / "dags").mkdir()
    (home / "dags" / "e2e_dags.py").write_text(textwrap.dedent(DAG_FILE))
    (home / "runner.py").write_text(textwrap.dedent(RUNNER))
    with Simulator(api_key=API_KEY) as sim:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW_CONN_OPENAI_DEFAULT=connection_json(sim.base_url),
            FTEVENTS_E2E_TRIGGERER="1" if WITH_TRIGGERER else "0",
            PYTHONUNBUFFERED="1",
        )
        with open(home / "run.log", "w") as log:
            proc = subprocess.run(
                [sys.executable, "runner.py", "results.json"],
                cwd=home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
        run_log = ANSI.sub("", (home / "run.log").read_text())
        assert proc.returncode == 0, run_log[-8000:]
        results = json.loads((home / "results.json").read_text())
        for dag_id, result in results.items():
            result["log"] = run_log[run_log.index(f"=== BEGIN {dag_id}") : run_log.index(f"=== END {dag_id}")]
            job_id = result["xcoms"]["start.return_value"]
            result["job"] = sim.job(job_id)
            result["events"] = sim.events(job_id)
            result["expected_summary"] = expected_summary(sim, job_id)
            result["expected_failure"] = expected_failure(sim, job_id) if dag_id.endswith("failed") else None
        return results


def logged_counts(result: dict[str, Any]) -> dict[str, int]:
    """How often each event of the job was logged by the sensor or its trigger (expected: once each)."""
    lines = [ln for ln in result["log"].splitlines() if "Sensor]" in ln or "FineTuneJobTrigger" in ln]
    lines += result["trigger_log"]  # what the real triggerer wrote to the task's trigger log file
    return {format_event(e): sum(format_event(e) in ln for ln in lines) for e in result["events"]}


@pytest.mark.airflow
def test_e2e_deferrable_sensor_success(e2e) -> None:
    result = e2e["e2e_deferred_ok"]
    job_id = result["xcoms"]["start.return_value"]
    assert result["dag_run"] == "success"
    assert result["tis"] == {"start": "success", "wait": "success", "after": "success"}
    assert result["xcoms"]["wait.return_value"] == result["expected_summary"]
    assert result["xcoms"]["wait.return_value"]["event_count"] == 30
    assert result["xcoms"]["after.return_value"] == result["job"]["fine_tuned_model"]
    assert result["xcoms"][f"wait.{LINK_KEY}"] == f"https://platform.openai.com/finetune/{job_id}"
    assert "[DAG TEST] running trigger in line" in result["log"]  # it really deferred
    assert set(logged_counts(result).values()) == {1}


@pytest.mark.airflow
def test_e2e_failed_job_fails_the_sensor_and_blocks_downstream(e2e) -> None:
    result = e2e["e2e_deferred_failed"]
    assert result["dag_run"] == "failed"
    assert result["tis"] == {"start": "success", "wait": "failed", "after": "upstream_failed"}
    assert "wait.return_value" not in result["xcoms"]
    assert f"AirflowFailException: {result['expected_failure']}" in result["log"]
    assert set(logged_counts(result).values()) == {1}


@pytest.mark.airflow
def test_e2e_reschedule_mode_logs_each_event_once(e2e) -> None:
    result = e2e["e2e_rescheduled"]
    assert result["dag_run"] == "success"
    assert result["tis"] == {"start": "success", "wait": "success", "after": "success"}
    assert result["xcoms"]["wait.return_value"] == result["expected_summary"]
    assert set(logged_counts(result).values()) == {1}
    resumed = re.findall(
        r"Resuming after \d+ events already logged \(from (task_state_store|Variable)", result["log"]
    )
    assert resumed, "the sensor was never rescheduled"
    version = tuple(int(part) for part in result["airflow_version"].split(".")[:2])
    assert set(resumed) == {"task_state_store" if version >= (3, 3) else "Variable"}
    assert result["cursors"] == []  # the stored cursor is deleted when the sensor finishes


@pytest.mark.airflow
@pytest.mark.skipif(not WITH_TRIGGERER, reason="FTEVENTS_E2E_TRIGGERER=0")
def test_e2e_trigger_runs_in_a_real_triggerer_process(e2e) -> None:
    result = e2e["e2e_triggerer"]
    assert result["dag_run"] == "success"
    assert result["tis"] == {"start": "success", "wait": "success", "after": "success"}
    assert result["xcoms"]["wait.return_value"] == result["expected_summary"]
    assert "[DAG TEST] running trigger in line" not in result["log"]
    assert result["trigger_log"], "the triggerer logged none of the job's events"
    assert set(logged_counts(result).values()) == {1}
