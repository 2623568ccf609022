"""The ``/_sim/`` control API, which drives a simulator in another process, and its facade twins."""

from __future__ import annotations

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    add,
    control_url,
    job_url,
)

from airflow_ftevents.simulator import Simulator  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


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


def test_control_api_for_jobs_history_and_fault_counts(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=60, duration=600.0)
    listed = requests.get(control_url(simulator, "jobs"), timeout=5).json()["data"]
    assert listed == simulator.job_ids() and listed[-1] == job_id
    finished = requests.post(
        control_url(simulator, f"jobs/{job_id}/finish"), json={"outcome": "failed"}, timeout=5
    )
    assert finished.status_code == 200 and finished.json() == simulator.job(job_id)
    assert finished.json()["status"] == "failed"
    bad = requests.post(control_url(simulator, f"jobs/{job_id}/finish"), json={"outcome": "done"}, timeout=5)
    assert bad.status_code == 400

    history = requests.post(control_url(simulator, "history"), json={"n": 50, "running": 5}, timeout=5)
    assert history.status_code == 200
    ids = history.json()["ids"]
    assert len(ids) == 50 and simulator.job_ids()[:50] == ids
    assert [simulator.job(i)["status"] for i in ids[-5:]] == ["running"] * 5
    refused = requests.post(control_url(simulator, "history"), json={"n": 2, "running": 3}, timeout=5)
    assert refused.status_code == 400 and "cannot exceed" in refused.json()["error"]["message"]
    typo = requests.post(control_url(simulator, "history"), json={"count": 2}, timeout=5)
    assert typo.status_code == 400 and "count" in typo.json()["error"]["message"]

    simulator.inject("500", count=2, path="/checkpoints")
    for _ in range(2):
        assert http.get(job_url(simulator, job_id, "/checkpoints")).status_code == 500
    faults = requests.get(control_url(simulator, "faults"), timeout=5).json()
    assert faults["pending"] == [] and faults["applied"]["500"] >= 2
    assert faults["applied"] == simulator.applied_faults()
    assert requests.get(control_url(simulator, "nothing"), timeout=5).status_code == 404
    assert requests.post(control_url(simulator, "jobs"), data=b"[1]", timeout=5).status_code == 400
