"""The watcher in a real deployment (tests/deployment.py): a job created over HTTP straight in the
simulator, not by Airflow, finishes -> a run of ``example_on_any_fine_tune_finished`` appears whose
triggering asset event carries that job; a second job gives a second run; a triggerer killed and
replaced in between announces nothing twice.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow import __version__ as airflow_version
from conftest import API_KEY, connection_json
from deployment import Deployment, wait_until
from packaging.version import Version

from airflow_ftevents.simulator import Simulator

pytestmark = [pytest.mark.airflow, pytest.mark.timeout(300)]

DAG_ID = "example_on_any_fine_tune_finished"
LIST_PATH = "/v1/fine_tuning/jobs?"
HAS_STATE_STORE = Version(airflow_version) >= Version("3.3.0")  # asset state store and shared streams


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY, keepalive_interval=0.2) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def airflow(
    sim: Simulator, tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path
) -> Iterator[Deployment]:
    deployment = Deployment(
        tmp_path_factory.mktemp("watcher-deployment"),
        connections={"openai_default": connection_json(sim.base_url)},
        env={"FTEVENTS_WATCH_POLL": "1"},
        db_template=migrated_airflow_db,
    )
    with deployment:
        yield deployment


def create_job(sim: Simulator) -> str:
    """A long job, created the way a notebook would: POST /fine_tuning/jobs with the API key."""
    response = requests.post(
        f"{sim.base_url}/fine_tuning/jobs",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={
            "model": "gpt-4o-mini-2024-07-18",
            "training_file": "file-e2e",
            "suffix": "e2e",
            "metadata": {"sim_seconds": "3600", "sim_events": "20"},
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json()["id"]


def finish_job(sim: Simulator, job_id: str) -> None:
    response = requests.post(f"http://127.0.0.1:{sim.port}/_sim/jobs/{job_id}/finish", json={}, timeout=10)
    response.raise_for_status()


def watcher_polls(sim: Simulator, count: int, timeout: float = 120.0) -> None:
    """Until the watcher (the only client listing jobs) has listed them ``count`` more times."""

    def listed() -> int:
        return sum(
            1 for method, path, _ in list(sim.request_log) if method == "GET" and path.startswith(LIST_PATH)
        )

    target = listed() + count
    wait_until(f"{count} polls of the watcher", lambda: listed() >= target or None, timeout)


def payloads(airflow: Deployment, run: dict[str, Any]) -> list[dict[str, Any]]:
    events = airflow.triggering_asset_events(DAG_ID, run["dag_run_id"])
    return [event["extra"]["payload"] for event in events]


def test_runs_once_per_finished_job_across_a_triggerer_restart(airflow: Deployment, sim: Simulator) -> None:
    with airflow.logs_on_failure():
        airflow.unpause(DAG_ID)
        first, second, third = create_job(sim), create_job(sim), create_job(sim)
        watcher_polls(sim, 3)  # the watcher runs in the triggerer and has seen the jobs running
        finish_job(sim, first)
        run_one = airflow.wait_for_new_run(DAG_ID, timeout=120)
        # First wait for the run to finish: Airflow 3.1's upstreamAssetEvents answers 500 for a run
        # that has not started yet (its start_date is None).
        assert airflow.wait_for_run(DAG_ID, run_one["dag_run_id"]) == "success"
        assert [p["job_id"] for p in payloads(airflow, run_one)] == [first]
        model = sim.job(first)["fine_tuned_model"]
        assert payloads(airflow, run_one)[0]["fine_tuned_model"] == model
        assert airflow.xcom(DAG_ID, run_one["dag_run_id"], "finished_jobs") == payloads(airflow, run_one)
        [evaluated] = airflow.xcom(DAG_ID, run_one["dag_run_id"], "evaluate")
        assert (evaluated["job_id"], evaluated["model"]) == (first, model)
        watcher_polls(sim, 3)  # the cursor is saved half a poll after an announcement

        airflow.kill_triggerer(sig=signal.SIGKILL)
        finish_job(sim, third)  # while no triggerer runs the watcher
        restarted = airflow.start_triggerer()
        watcher_polls(sim, 3)  # the new triggerer's watcher is polling
        known = {run_one["dag_run_id"]}
        expected = [first]
        if HAS_STATE_STORE:  # resumed from the asset state store: what finished while down comes now
            run_three = airflow.wait_for_new_run(DAG_ID, known=known, timeout=120)
            assert airflow.wait_for_run(DAG_ID, run_three["dag_run_id"]) == "success"
            assert [p["job_id"] for p in payloads(airflow, run_three)] == [third]
            known.add(run_three["dag_run_id"])
            expected.append(third)
        finish_job(sim, second)
        run_two = airflow.wait_for_new_run(DAG_ID, known=known, timeout=120)
        assert airflow.wait_for_run(DAG_ID, run_two["dag_run_id"]) == "success"
        assert [p["job_id"] for p in payloads(airflow, run_two)] == [second]
        expected.append(second)
        watcher_polls(sim, 5)
        assert len(airflow.runs(DAG_ID)) == len(expected)
        announced = [
            e["extra"]["payload"]["job_id"] for e in airflow.asset_events() if e["extra"].get("payload")
        ]
        assert sorted(announced) == sorted(expected)
        log = restarted.log_path.read_text(errors="replace")
        if HAS_STATE_STORE:
            assert "Caught up from the stored cursor" in log
        else:  # Airflow 3.1/3.2: the cursor lived in memory; the job that finished while down is missed
            assert "keeps its cursor in memory" in log
