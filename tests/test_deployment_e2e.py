"""The example DAGs in a real Airflow deployment: api-server, scheduler, dag-processor and triggerer as
separate processes (tests/deployment.py), the simulator on loopback.

- The triggerer is SIGKILLed while the job operator is deferred and a new one takes over: the run still
  succeeds (the restart cancels nothing), the export holds every event once, every event reaches the
  task log, and the events logged twice stay within one checkpoint interval.
- The job's model reaches the evaluation DAG through the outlet Asset's event.
- Marking the deferred task failed cancels the job.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, connection_json, sim_metadata
from deployment import Deployment, most_events_within, wait_until

from airflow_ftevents.core.jobstate import format_event
from airflow_ftevents.core.jobtag import asset_extra, compact_checkpoint
from airflow_ftevents.core.jsonl import event_line
from airflow_ftevents.simulator import JobSpec, Simulator

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(240)]

WAIT_DAG = "example_fine_tune_wait_and_export"
HOURLY_DAG = "example_scheduled_export"
EVALUATE_DAG = "example_evaluate_new_model"
SENSOR = "fine_tune"  # the FineTuneJobOperator that starts the job and waits for it, deferred
CHECKPOINT_INTERVAL = 5.0  # FTEVENTS_CHECKPOINT_INTERVAL for the example's wait
POKE_INTERVAL = 2.0  # the example operator's poll_interval (the trigger's poll interval)
HOURLY_JOB = "ftjob-hourly-e2e"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """One simulator for the module; the hourly job's events lie about an hour in the past, so the
    last full hour before now always holds some of them (see the manual-run test)."""
    with Simulator(api_key=API_KEY, keepalive_interval=0.2) as simulator:
        simulator.add_job(JobSpec(job_id=HOURLY_JOB, n_events=6000, created_ago=3900.0))
        yield simulator


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def airflow(
    sim: Simulator, exports: Path, tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path
) -> Iterator[Deployment]:
    home = tmp_path_factory.mktemp("deployment")
    deployment = Deployment(
        home,
        connections={"openai_default": connection_json(sim.base_url)},
        env={
            "FTEVENTS_EXPORT_ROOT": exports.as_uri(),
            "FTEVENTS_CHECKPOINT_INTERVAL": str(CHECKPOINT_INTERVAL),
            "FTEVENTS_JOB_IDS": HOURLY_JOB,
        },
        db_template=migrated_airflow_db,
    )
    with deployment:
        # From the start, so each successful run's Asset event starts an evaluation run of its own.
        deployment.unpause(EVALUATE_DAG)
        yield deployment


def _start_wait_run(airflow: Deployment, events: int, seconds: float, outcome: str = "succeeded") -> str:
    """A run of the wait-and-export example whose job (on the simulator) runs as told; its run id."""
    airflow.unpause(WAIT_DAG)
    return airflow.trigger(WAIT_DAG, conf={"metadata": sim_metadata(events, seconds, outcome)})


def _job_id(airflow: Deployment, run_id: str) -> str:
    job_id = airflow.xcom(WAIT_DAG, run_id, SENSOR, key="job_id")
    assert isinstance(job_id, str) and job_id.startswith("ftjob-"), job_id
    return job_id


def _export_file(exports: Path, run_id: str, job_id: str) -> Path:
    return exports / WAIT_DAG / run_id.replace(":", "_") / f"{job_id}.jsonl"


def _logged_lines(airflow: Deployment, run_id: str, expected: Counter[str]) -> Counter[str]:
    """How often each event's log line appears across the sensor's log files (worker and triggers)."""
    records = airflow.task_log_records(WAIT_DAG, run_id, SENSOR)
    return Counter(r["event"] for r in records if isinstance(r.get("event"), str) and r["event"] in expected)


def _trigger_event_lines(airflow: Deployment, run_id: str, expected: Counter[str]) -> int:
    records = airflow.task_log_records(WAIT_DAG, run_id, SENSOR)
    return sum(1 for r in records if ".trigger." in r["_file"] and r.get("event") in expected)


def test_triggerer_killed_mid_wait_run_succeeds_every_event_exported_once_and_logged(
    airflow: Deployment, sim: Simulator, exports: Path
) -> None:
    with airflow.logs_on_failure():
        run_id = _start_wait_run(airflow, 400, 40)
        airflow.wait_for_task_state(WAIT_DAG, run_id, SENSOR, "deferred")
        job_id = _job_id(airflow, run_id)
        # Kill once the trigger has logged events for longer than a checkpoint interval, mid-job.
        wait_until("the trigger to log events", lambda: sim.event_count(job_id) >= 150, timeout=60)
        all_lines = Counter(format_event(e) for e in sim.events(job_id))
        assert _trigger_event_lines(airflow, run_id, all_lines) > 0
        first = airflow.triggerer
        killed = airflow.kill_triggerer()
        assert len(killed) >= 2  # the triggerer and its trigger runner child (serve-logs too if started)
        assert sim.job(job_id)["status"] == "running"  # really mid-wait
        assert airflow.task_states(WAIT_DAG, run_id)[SENSOR] == "deferred"
        second = airflow.start_triggerer()

        assert airflow.wait_for_run(WAIT_DAG, run_id, timeout=150) == "success"
        assert airflow.task_states(WAIT_DAG, run_id) == {SENSOR: "success", "export_events": "success"}
        events = sim.events(job_id)
        assert len(events) == 400
        assert sim.job(job_id)["status"] == "succeeded"
        assert _export_file(exports, run_id, job_id).read_bytes() == b"".join(event_line(e) for e in events)
        summary = airflow.xcom(WAIT_DAG, run_id, SENSOR)
        assert (summary["job_id"], summary["status"]) == (job_id, "succeeded")

        # Both triggerers wrote the trigger's lines, each to its own file next to the worker's log.
        names = [p.name for p in airflow.task_log_files(WAIT_DAG, run_id, SENSOR)]
        assert sorted(names) == sorted(
            ["attempt=1.log", *(f"attempt=1.log.trigger.{t.job_id}.log" for t in (first, second))]
        )
        expected = Counter(format_event(e) for e in events)
        per_file = Counter(
            r["_file"]
            for r in airflow.task_log_records(WAIT_DAG, run_id, SENSOR)
            if r.get("event") in expected
        )
        assert all(per_file[n] > 0 for n in names), per_file  # the worker and each triggerer logged events
        logged = _logged_lines(airflow, run_id, expected)
        missing = {line: n - logged[line] for line, n in expected.items() if logged[line] < n}
        assert missing == {}
        twice = sum(logged[line] - n for line, n in expected.items() if logged[line] > n)
        print(f"events logged twice after the triggerer restart: {twice}")
        # A restarted trigger resumes from its last checkpoint, saved at most once per interval when it
        # polls: what it logged since then (events created within one interval plus one poll) repeats.
        bound = most_events_within(events, CHECKPOINT_INTERVAL + POKE_INTERVAL)
        assert twice <= bound, f"{twice} events logged twice, more than one checkpoint interval's {bound}"


def test_failed_job_fails_the_run_after_its_events_are_exported(
    airflow: Deployment, sim: Simulator, exports: Path
) -> None:
    with airflow.logs_on_failure():
        run_id = _start_wait_run(airflow, 60, 4, "failed")
        assert airflow.wait_for_run(WAIT_DAG, run_id, timeout=120) == "failed"
        assert airflow.task_states(WAIT_DAG, run_id) == {
            SENSOR: "failed",
            "export_events": "failed",  # fail_on_job_failure: written first, then failed
        }
        job_id = _job_id(airflow, run_id)
        assert sim.job(job_id)["status"] == "failed"
        events = sim.events(job_id)
        assert len(events) == 60
        assert _export_file(exports, run_id, job_id).read_bytes() == b"".join(event_line(e) for e in events)
        log = airflow.task_log_text(WAIT_DAG, run_id, "export_events")
        assert f"Fine-tuning job {job_id} failed" in log and "its events were exported first" in log


def test_manual_hourly_run_without_logical_date_exports_the_last_full_hour(
    airflow: Deployment, sim: Simulator, exports: Path
) -> None:
    with airflow.logs_on_failure():
        airflow.unpause(HOURLY_DAG)
        run_id = airflow.trigger(HOURLY_DAG)
        assert airflow.wait_for_run(HOURLY_DAG, run_id, timeout=120) == "success"
        run = airflow.run(HOURLY_DAG, run_id)
        assert run["logical_date"] is None and run["data_interval_start"] is None
        run_after = dt.datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))
        end = run_after.replace(minute=0, second=0, microsecond=0)
        start = end - dt.timedelta(hours=1)
        window = airflow.xcom(HOURLY_DAG, run_id, "export_window")
        assert window == {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "folder": f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}",
        }
        expected = [
            e for e in sim.events(HOURLY_JOB) if start.timestamp() <= e["created_at"] < end.timestamp()
        ]
        assert len(expected) >= 1000  # the job logged for at least 300 s of that hour, 10 events a second
        got = (exports / "hourly" / window["folder"] / f"{HOURLY_JOB}.jsonl").read_bytes()
        assert got == b"".join(event_line(e) for e in expected)


def test_api_key_is_in_no_log_file_of_the_deployment(airflow: Deployment) -> None:
    with airflow.logs_on_failure():
        run_id = _start_wait_run(airflow, 30, 3)
        assert airflow.wait_for_run(WAIT_DAG, run_id, timeout=120) == "success"
        logs = airflow.all_log_text()
        assert "[metrics] step" in logs  # the task and trigger logs are there
        assert API_KEY not in logs


def test_the_model_reaches_the_evaluation_dag_through_the_asset_event(
    airflow: Deployment, sim: Simulator, exports: Path
) -> None:
    with airflow.logs_on_failure():
        run_id = _start_wait_run(airflow, 80, 6)
        assert airflow.wait_for_run(WAIT_DAG, run_id, timeout=150) == "success"
        job_id = _job_id(airflow, run_id)
        job, checkpoints = sim.job(job_id), sim.checkpoints(job_id)
        assert job["metadata"]["airflow_task_instance"] == f"{WAIT_DAG}/{run_id}/{SENSOR}/-1"
        result = airflow.xcom(WAIT_DAG, run_id, SENSOR)
        assert (result["job_id"], result["status"]) == (job_id, "succeeded")
        assert result["fine_tuned_model"] == job["fine_tuned_model"]
        assert result["checkpoints"] == [compact_checkpoint(c) for c in checkpoints]

        def our_event() -> dict[str, Any] | None:
            # other tests' runs emit events too: this run's is the one with its run id
            events = [e for e in airflow.asset_events(source_dag_id=WAIT_DAG) if e["source_run_id"] == run_id]
            assert len(events) <= 1, events
            return events[0] if events and events[0]["created_dagruns"] else None

        event = wait_until("the Asset event to start the evaluation DAG", our_event, timeout=120)
        assert event["extra"] == asset_extra(result, checkpoints)
        (evaluation,) = [r for r in event["created_dagruns"] if r["dag_id"] == EVALUATE_DAG]
        assert airflow.wait_for_run(EVALUATE_DAG, evaluation["run_id"], timeout=150) == "success"
        (triggering,) = airflow.triggering_asset_events(EVALUATE_DAG, evaluation["run_id"])
        assert (triggering["id"], triggering["extra"]) == (event["id"], event["extra"])
        seen = airflow.xcom(EVALUATE_DAG, evaluation["run_id"], "new_model")
        assert seen == event["extra"] and seen["fine_tuned_model"] == job["fine_tuned_model"]
        events = sim.events(job_id)
        assert _export_file(exports, run_id, job_id).read_bytes() == b"".join(event_line(e) for e in events)


def test_marking_the_deferred_task_failed_cancels_the_job(airflow: Deployment, sim: Simulator) -> None:
    with airflow.logs_on_failure():
        run_id = _start_wait_run(airflow, 600, 600)
        airflow.wait_for_task_state(WAIT_DAG, run_id, SENSOR, "deferred")
        job_id = _job_id(airflow, run_id)
        assert sim.job(job_id)["status"] in ("validating_files", "queued", "running")
        # A user kills a task that waits: by then a triggerer runs its trigger (it has polled).
        wait_until(
            "a triggerer to run the trigger",
            lambda: (
                any(".trigger." in p.name for p in airflow.task_log_files(WAIT_DAG, run_id, SENSOR)) or None
            ),
            timeout=60,
        )
        airflow.api(
            "PATCH", f"/dags/{WAIT_DAG}/dagRuns/{run_id}/taskInstances/{SENSOR}", json={"new_state": "failed"}
        )
        wait_until("the job to be cancelled", lambda: sim.job(job_id)["status"] == "cancelled" or None, 60)
        logs = airflow.task_log_text(WAIT_DAG, run_id, SENSOR)
        assert f"Cancelled fine-tuning job {job_id} because" in logs
