"""Every kind of response the simulator sends, validated against the official OpenAPI excerpt."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    PAUSED,
    SIM_KEY,
    add,
    job_url,
    jobs_url,
    read_stream,
    schema_properties,
    yaml_schema,
)

from airflow_ftevents.simulator import JobSpec, Simulator  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


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
    listing = http.get(f"{simulator.base_url}/fine_tuning/jobs", params={"limit": 4}).json()
    validators["ListPaginatedFineTuningJobsResponse"].validate(listing)
    assert len(listing["data"]) == 4 and listing["has_more"] is True  # five jobs so far
    assert all(set(job) <= job_props for job in listing["data"])


FULL_REQUEST: dict[str, Any] = {
    "model": "gpt-4o-mini-2024-07-18",
    "training_file": "file-train",
    "validation_file": "file-valid",
    "suffix": "full",
    "seed": 42,
    "metadata": {"team": "search", "sim_events": "300", "sim_seconds": "0"},
    "method": {
        "type": "dpo",
        "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": "auto", "n_epochs": 2}},
    },
    "integrations": [{"type": "wandb", "wandb": {"project": "ft", "name": None, "tags": ["a"]}}],
}


def test_new_endpoints_validate_against_the_official_schema(
    simulator: Simulator, http: requests.Session, validators: dict[str, Any]
) -> None:
    validators["CreateFineTuningJobRequest"].validate(FULL_REQUEST)  # the request itself is a valid one
    job_props = schema_properties("FineTuningJob")
    created = http.post(jobs_url(simulator), json=FULL_REQUEST).json()
    validators["FineTuningJob"].validate(created)
    assert set(job_props) - set(created) == set() and set(created) <= job_props
    checkpoints = http.get(job_url(simulator, created["id"], "/checkpoints")).json()
    validators["ListFineTuningJobCheckpointsResponse"].validate(checkpoints)
    assert len(checkpoints["data"]) == 2  # two epochs
    for checkpoint in checkpoints["data"]:
        validators["FineTuningJobCheckpoint"].validate(checkpoint)
        assert set(checkpoint) == schema_properties("FineTuningJobCheckpoint")
        assert set(checkpoint["metrics"]) == set(
            yaml_schema("FineTuningJobCheckpoint")["properties"]["metrics"]["properties"]
        )
    empty = http.get(job_url(simulator, add(simulator, n_events=6), "/checkpoints")).json()
    validators["ListFineTuningJobCheckpointsResponse"].validate(empty)
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}

    live = add(simulator, n_events=100, duration=30.0)
    while simulator.job(live)["status"] != "running":
        time.sleep(0.05)
    paused = http.post(job_url(simulator, live, "/pause")).json()
    assert paused["status"] == "paused"
    assert not validators["FineTuningJob"].is_valid(paused)  # the excerpt's enum has no `paused`
    validators[PAUSED].validate(paused)
    validators[PAUSED].validate(http.get(job_url(simulator, live)).json())
    resumed = http.post(job_url(simulator, live, "/resume")).json()
    validators["FineTuningJob"].validate(resumed)
    assert resumed["status"] == "running"
    cancelled = http.post(job_url(simulator, live, "/cancel")).json()
    validators["FineTuningJob"].validate(cancelled)
    assert cancelled["status"] == "cancelled"

    error = http.post(jobs_url(simulator), json={"model": "m"}).json()
    assert set(error) == {"error"} and set(error["error"]) == {"message", "type", "param", "code"}


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
