"""The jobs API: create (every field, the API's 400s), list (order, ``after``, metadata filters, history),
cancel, pause/resume, checkpoints, and jobs finishing out of creation order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    CHECKPOINT_ID,
    JOB_ID,
    SIM_KEY,
    add,
    control_url,
    job_url,
    jobs_url,
)

from airflow_ftevents.simulator import JobSpec, Simulator  # noqa: E402
from airflow_ftevents.simulator.jobs import JobStore  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


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


@pytest.fixture
def own_sim() -> Iterator[tuple[Simulator, requests.Session]]:
    """A simulator of its own (the jobs list sees only this test's jobs) and a session with its key."""
    with Simulator(api_key=SIM_KEY, default_events=40, default_duration=0.0) as sim, requests.Session() as s:
        s.headers["Authorization"] = f"Bearer {SIM_KEY}"
        yield sim, s


def list_ids(session: requests.Session, sim: Simulator, **params: Any) -> tuple[list[str], list[bool]]:
    """Every job id of the jobs list, walking ``after``; (ids, has_more of each page)."""
    ids: list[str] = []
    more: list[bool] = []
    after = None
    while True:
        page = session.get(jobs_url(sim), params={**params, **({"after": after} if after else {})}).json()
        ids += [job["id"] for job in page["data"]]
        more.append(page["has_more"])
        if not page["has_more"]:
            return ids, more
        after = page["data"][-1]["id"]


def test_create_echoes_every_field(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    body = {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "validation_file": "file-valid",
        "suffix": "echo",
        "seed": 42,
        "metadata": {"team": "search", "sim_events": "120"},
        "method": {
            "type": "supervised",
            "supervised": {
                "hyperparameters": {"batch_size": "auto", "learning_rate_multiplier": 0.3, "n_epochs": 4}
            },
        },
        "integrations": [{"type": "wandb", "wandb": {"project": "ft", "entity": None, "tags": ["x"]}}],
    }
    job = session.post(jobs_url(sim), json=body).json()
    hyper = {"batch_size": (1, 2, 4, 8)[42 % 4], "learning_rate_multiplier": 0.3, "n_epochs": 4}
    assert JOB_ID.match(job["id"])
    assert {
        k: job[k] for k in ("model", "training_file", "validation_file", "seed", "metadata", "integrations")
    } == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-train",
        "validation_file": "file-valid",
        "seed": 42,
        "metadata": {"team": "search", "sim_events": "120"},
        "integrations": [{"type": "wandb", "wandb": {"project": "ft", "entity": None, "tags": ["x"]}}],
    }
    assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    assert job["hyperparameters"] == hyper
    # sim_events=120 and a finished job (default_duration=0): 120 - 6 events of training, every 20th a note.
    steps = 114 - 114 // 20
    assert job["status"] == "succeeded" and job["trained_tokens"] == steps * 4 * 512
    assert re.fullmatch(
        r"ft:gpt-4o-mini-2024-07-18:ftevents-sim:echo:[A-Za-z0-9]{8}", job["fine_tuned_model"]
    )
    assert len(job["result_files"]) == 1 and job["result_files"][0].startswith("file-")
    assert job["error"] is None and isinstance(job["finished_at"], int)
    assert (
        sim.events(job["id"])[1]["message"]
        == "Validating training file: file-train and validation file: file-valid"
    )
    assert sim.job(job["id"]) == job
    assert len(sim.checkpoints(job["id"])) == 3  # the last three of four epochs

    # The deprecated top-level form, and the other methods with "auto" resolved.
    legacy_form = session.post(
        jobs_url(sim),
        json={"model": "m", "training_file": "f", "seed": 1, "hyperparameters": {"n_epochs": 2}},
    ).json()
    assert legacy_form["method"] == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"batch_size": 2, "learning_rate_multiplier": 0.5, "n_epochs": 2}},
    }
    assert legacy_form["metadata"] is None and legacy_form["integrations"] == []
    dpo = session.post(
        jobs_url(sim),
        json={
            "model": "m",
            "training_file": "f",
            "seed": 3,
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": "auto"}}},
        },
    ).json()
    assert dpo["method"] == {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {"beta": 0.1, "batch_size": 8, "learning_rate_multiplier": 0.5, "n_epochs": 3}
        },
    }
    grader = {
        "type": "string_check",
        "name": "g",
        "input": "{{sample.output_text}}",
        "reference": "a",
        "operation": "eq",
    }
    rft = session.post(
        jobs_url(sim),
        json={
            "model": "m",
            "training_file": "f",
            "seed": 0,
            "method": {"type": "reinforcement", "reinforcement": {"grader": grader}},
        },
    ).json()
    assert rft["method"] == {
        "type": "reinforcement",
        "reinforcement": {
            "grader": grader,
            "hyperparameters": {
                "batch_size": 1,
                "learning_rate_multiplier": 0.5,
                "n_epochs": 3,
                "compute_multiplier": 1.0,
                "eval_interval": 1,
                "eval_samples": 1,
                "reasoning_effort": "default",
            },
        },
    }


LONG = "x" * 65
BAD_BODIES: list[tuple[Any, str | None, str, str | None]] = [
    # (body, param, code, exact message or None)
    ({}, "model", "missing_required_parameter", "Missing required parameter: 'model'."),
    (
        {"model": "m"},
        "training_file",
        "missing_required_parameter",
        "Missing required parameter: 'training_file'.",
    ),
    (
        {"model": 5, "training_file": "f"},
        "model",
        "invalid_type",
        "Invalid type for 'model': expected a string, but got an integer instead.",
    ),
    (
        {"model": "m", "training_file": "f", "epochs": 3},
        "epochs",
        "unknown_parameter",
        "Unknown parameter: 'epochs'.",
    ),
    ({"model": "m", "training_file": "f", "suffix": LONG}, "suffix", "string_above_max_length", None),
    ({"model": "m", "training_file": "f", "suffix": ""}, "suffix", "string_below_min_length", None),
    ({"model": "m", "training_file": "f", "validation_file": 3}, "validation_file", "invalid_type", None),
    ({"model": "m", "training_file": "f", "seed": -1}, "seed", "integer_below_min_value", None),
    (
        {"model": "m", "training_file": "f", "seed": 2**31},
        "seed",
        "integer_above_max_value",
        "Invalid 'seed': integer above maximum value. Expected a value less than or equal to 2147483647, "
        "but got 2147483648 instead.",
    ),
    ({"model": "m", "training_file": "f", "seed": True}, "seed", "invalid_type", None),
    (
        {"model": "m", "training_file": "f", "metadata": {f"k{i}": "v" for i in range(17)}},
        "metadata",
        "object_above_max_properties",
        "Invalid 'metadata': too many properties. Expected an object with at most 16 properties, but got an "
        "object with 17 properties instead.",
    ),
    ({"model": "m", "training_file": "f", "metadata": {"k": 1}}, "metadata.k", "invalid_type", None),
    (
        {"model": "m", "training_file": "f", "metadata": {"k": "v" * 513}},
        "metadata.k",
        "string_above_max_length",
        None,
    ),
    ({"model": "m", "training_file": "f", "metadata": {LONG: "v"}}, "metadata", "invalid_value", None),
    ({"model": "m", "training_file": "f", "metadata": []}, "metadata", "invalid_type", None),
    (
        {"model": "m", "training_file": "f", "metadata": {"sim_events": "3"}},
        "metadata",
        "invalid_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "metadata": {"sim_outcome": "maybe"}},
        "metadata",
        "invalid_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "metadata": {"sim_seconds": "soon"}},
        "metadata",
        "invalid_value",
        None,
    ),
    ({"model": "m", "training_file": "f", "method": {}}, "method.type", "missing_required_parameter", None),
    (
        {"model": "m", "training_file": "f", "method": {"type": "magic"}},
        "method.type",
        "invalid_value",
        "Invalid value: 'magic'. Supported values are: 'supervised', 'dpo', and 'reinforcement'.",
    ),
    (
        {"model": "m", "training_file": "f", "method": {"type": "supervised", "dpo": {}}},
        "method.dpo",
        "invalid_value",
        None,
    ),
    (
        {
            "model": "m",
            "training_file": "f",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}},
        },
        "method.supervised.hyperparameters.n_epochs",
        "integer_below_min_value",
        None,
    ),
    (
        {
            "model": "m",
            "training_file": "f",
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}},
        },
        "method.dpo.hyperparameters.beta",
        "invalid_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "method": {"type": "reinforcement", "reinforcement": {}}},
        "method.reinforcement.grader",
        "missing_required_parameter",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "hyperparameters": {"batch_size": 257}},
        "hyperparameters.batch_size",
        "integer_above_max_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "hyperparameters": {"learning_rate_multiplier": 0}},
        "hyperparameters.learning_rate_multiplier",
        "invalid_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "hyperparameters": {"epochs": 3}},
        "hyperparameters.epochs",
        "unknown_parameter",
        None,
    ),
    (
        {
            "model": "m",
            "training_file": "f",
            "hyperparameters": {"n_epochs": 2},
            "method": {"type": "supervised"},
        },
        "hyperparameters",
        "invalid_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "integrations": [{"type": "slack", "wandb": {}}]},
        "integrations[0].type",
        "invalid_value",
        None,
    ),
    (
        {"model": "m", "training_file": "f", "integrations": [{"type": "wandb", "wandb": {}}]},
        "integrations[0].wandb.project",
        "missing_required_parameter",
        None,
    ),
    (
        {
            "model": "m",
            "training_file": "f",
            "integrations": [{"type": "wandb", "wandb": {"project": "p"}}] * 6,
        },
        "integrations",
        "array_above_max_length",
        None,
    ),
    ([], None, "invalid_json", "The request body must be a JSON object."),
]


@pytest.mark.parametrize(("body", "param", "code", "message"), BAD_BODIES, ids=lambda v: None)
def test_create_refuses_bad_bodies_like_the_api(
    own_sim: tuple[Simulator, requests.Session], body: Any, param: str | None, code: str, message: str | None
) -> None:
    sim, session = own_sim
    response = session.post(jobs_url(sim), json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    if message is not None:
        assert error["message"] == message
    elif param is not None:
        assert f"'{param}" in error["message"]
    assert sim.job_ids() == []  # nothing was created


def test_create_refuses_a_body_that_is_not_json(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    response = session.post(jobs_url(sim), data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "The request body must be a JSON object.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_json",
    }


def test_jobs_list_is_newest_first_with_after_and_limit(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    created = [sim.add_job(JobSpec(job_id=f"ftjob-list{i}", n_events=20)) for i in range(7)]
    newest_first = created[::-1]
    for limit in (1, 3, 7, 20):
        ids, more = list_ids(session, sim, limit=limit)
        assert ids == newest_first
        pages = -(-7 // limit)
        assert more == [True] * (pages - 1) + [False]
    default = session.get(jobs_url(sim)).json()
    assert [job["id"] for job in default["data"]] == newest_first and default["has_more"] is False
    for index, after in enumerate(newest_first):
        page = session.get(jobs_url(sim), params={"after": after, "limit": 2}).json()
        assert [job["id"] for job in page["data"]] == newest_first[index + 1 : index + 3]
        assert page["has_more"] is (index + 3 < 7)
    refused = session.get(jobs_url(sim), params={"after": "ftjob-nope"})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Invalid 'after': no fine-tuning job 'ftjob-nope'.",
        "type": "invalid_request_error",
        "param": "after",
        "code": "invalid_cursor",
    }
    assert session.get(jobs_url(sim), params={"limit": "0"}).json()["error"]["param"] == "limit"


def test_jobs_list_metadata_filters_need_every_pair(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    metas = [
        {"team": "a", "env": "prod"},
        {"team": "a", "env": "dev"},
        None,
        {"team": "b", "env": "prod"},
        {"team": "a", "env": "prod", "run": "7"},
        {},
    ]
    ids = [
        sim.add_job(JobSpec(job_id=f"ftjob-meta{i}", n_events=20, metadata=m)) for i, m in enumerate(metas)
    ]

    def listed(**params: Any) -> list[str]:
        return list_ids(session, sim, **params)[0]

    assert listed(**{"metadata[team]": "a"}) == [ids[4], ids[1], ids[0]]
    assert listed(**{"metadata[team]": "a", "metadata[env]": "prod"}) == [ids[4], ids[0]]
    assert listed(**{"metadata[team]": "a", "metadata[env]": "prod", "limit": 1}) == [ids[4], ids[0]]
    assert listed(**{"metadata[env]": "prod", "metadata[run]": "7"}) == [ids[4]]
    assert listed(**{"metadata[team]": "c"}) == []
    assert listed(metadata="null") == [ids[5], ids[2]]
    page = session.get(jobs_url(sim), params={"metadata[team]": "a", "limit": 2}).json()
    assert [job["id"] for job in page["data"]] == [ids[4], ids[1]] and page["has_more"] is True
    assert all(job["metadata"]["team"] == "a" for job in page["data"])
    page = session.get(jobs_url(sim), params={"metadata[team]": "a", "limit": 2, "after": ids[1]}).json()
    assert [job["id"] for job in page["data"]] == [ids[0]] and page["has_more"] is False


def test_cancel_a_running_job_and_a_finished_one(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    live = sim.add_job(JobSpec(job_id="ftjob-cancel", n_events=200, duration=10.0))
    while sim.job(live)["status"] != "running":
        time.sleep(0.05)
    before = sim.events(live)
    cancelled = session.post(job_url(sim, live, "/cancel")).json()
    assert cancelled["status"] == "cancelled" and isinstance(cancelled["finished_at"], int)
    assert cancelled["fine_tuned_model"] is None and cancelled["estimated_finish"] is None
    after = sim.events(live)
    assert after[: len(before)] == before
    assert [e["message"] for e in after[len(before) :]] == ["Job cancellation requested", "Job was cancelled"]
    assert session.get(job_url(sim, live)).json() == cancelled

    again = session.post(job_url(sim, live, "/cancel"))
    assert again.status_code == 400
    assert again.json()["error"] == {
        "message": "Job ftjob-cancel has already completed with status 'cancelled' and cannot be cancelled.",
        "type": "invalid_request_error",
        "param": None,
        "code": "job_not_cancellable",
    }
    with pytest.raises(ValueError, match="already finished"):
        sim.cancel_job(live)
    assert session.post(job_url(sim, "ftjob-none", "/cancel")).status_code == 404

    finished = sim.add_job(JobSpec(job_id="ftjob-done", n_events=20))
    with Simulator(api_key=SIM_KEY, cancel_finished="unchanged") as lenient:
        lenient.add_job(JobSpec(job_id="ftjob-done", n_events=20))
        response = session.post(job_url(lenient, "ftjob-done", "/cancel"))
        assert response.status_code == 200 and response.json() == lenient.job("ftjob-done")
        assert response.json()["status"] == "succeeded"
    assert session.post(job_url(sim, finished, "/cancel")).json()["error"]["code"] == "job_not_cancellable"
    with pytest.raises(ValueError, match="cancel_finished"):
        Simulator(cancel_finished="ignore")


def test_pause_and_resume_over_http(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    job_id = sim.add_job(JobSpec(job_id="ftjob-pause", n_events=400, duration=10.0))
    queued = session.post(job_url(sim, job_id, "/pause"))
    assert queued.status_code == 400
    assert queued.json()["error"] == {
        "message": "Job ftjob-pause is 'validating_files'; only a running job can be paused.",
        "type": "invalid_request_error",
        "param": None,
        "code": "job_not_pausable",
    }
    while sim.job(job_id)["status"] != "running":
        time.sleep(0.05)
    not_paused = session.post(job_url(sim, job_id, "/resume"))
    assert not_paused.status_code == 400 and not_paused.json()["error"]["code"] == "job_not_resumable"
    estimate = sim.job(job_id)["estimated_finish"]
    paused = session.post(job_url(sim, job_id, "/pause")).json()
    assert (paused["status"], paused["estimated_finish"], paused["finished_at"]) == ("paused", None, None)
    frozen = sim.events(job_id)
    time.sleep(1.0)  # ~40 events would have appeared meanwhile
    assert sim.events(job_id) == frozen
    assert session.get(job_url(sim, job_id)).json()["status"] == "paused"
    resumed = session.post(job_url(sim, job_id, "/resume")).json()
    assert (
        resumed["status"] == "running" and resumed["estimated_finish"] >= estimate + 1
    )  # moved by the pause
    assert sim.events(job_id)[: len(frozen)] == frozen
    assert sim.pause_job(job_id)["status"] == "paused"
    assert sim.resume_job(job_id)["status"] == "running"
    assert sim.finish_job(job_id, "succeeded")["status"] == "succeeded"
    assert session.post(job_url(sim, job_id, "/pause")).json()["error"]["code"] == "job_not_pausable"


def test_checkpoints_are_cursor_paged_newest_first(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    job_id = sim.add_job(JobSpec(job_id="ftjob-ckpt", n_events=500, seed=5))
    expected = sim.checkpoints(job_id)
    assert [c["step_number"] for c in expected] == sorted((c["step_number"] for c in expected), reverse=True)
    assert len(expected) == 3 and all(CHECKPOINT_ID.match(c["id"]) for c in expected)
    url = job_url(sim, job_id, "/checkpoints")
    whole = session.get(url).json()
    assert whole == {
        "object": "list",
        "data": expected,
        "first_id": expected[0]["id"],
        "last_id": expected[-1]["id"],
        "has_more": False,
    }
    pages, after = [], None
    while True:
        page = session.get(url, params={"limit": 1, **({"after": after} if after else {})}).json()
        pages.append(page)
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [p["data"] for p in pages] == [[c] for c in expected]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert session.get(url, params={"after": expected[0]["id"], "limit": 5}).json()["data"] == expected[1:]
    last = session.get(url, params={"after": expected[-1]["id"]}).json()
    assert last == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    for params, param in (({"after": "ftckpt_nope"}, "after"), ({"limit": "-2"}, "limit")):
        response = session.get(url, params=params)
        assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert session.get(job_url(sim, "ftjob-none", "/checkpoints")).status_code == 404

    live = sim.add_job(JobSpec(job_id="ftjob-ckpt-live", n_events=400, duration=60.0))
    assert session.get(job_url(sim, live, "/checkpoints")).json()["data"] == []
    sim.cancel_job(live)
    assert session.get(job_url(sim, live, "/checkpoints")).json()["data"] == []


def test_jobs_finish_out_of_creation_order(own_sim: tuple[Simulator, requests.Session]) -> None:
    sim, session = own_sim
    first, second, third = (
        sim.add_job(JobSpec(job_id=f"ftjob-race{i}", n_events=60, duration=600.0)) for i in range(3)
    )
    assert sim.finish_job(third, "succeeded")["status"] == "succeeded"
    control = requests.post(control_url(sim, f"jobs/{first}/finish"), json={"outcome": "failed"}, timeout=5)
    assert control.status_code == 200 and control.json()["status"] == "failed"
    statuses = {job["id"]: job["status"] for job in session.get(jobs_url(sim)).json()["data"]}
    # Newest created first, whatever the order they finished in; the middle one has not started yet.
    assert list(statuses.items()) == [(third, "succeeded"), (second, "validating_files"), (first, "failed")]
    assert sim.events(third)[-1]["message"] == "The job has successfully completed"
    assert sim.events(first)[-1]["message"] == "The job has failed"
    assert len(sim.events(third)) == 60  # every remaining event at once
    assert sim.finish_job(second, "cancelled")["status"] == "cancelled"
    assert [m["message"] for m in sim.events(second)[-2:]] == [
        "Job cancellation requested",
        "Job was cancelled",
    ]
    again = requests.post(control_url(sim, f"jobs/{third}/finish"), json={"outcome": "failed"}, timeout=5)
    assert (
        again.status_code == 400
        and "already completed with status 'succeeded'" in again.json()["error"]["message"]
    )
    with pytest.raises(ValueError, match="already completed"):
        sim.finish_job(second, "succeeded")
    with pytest.raises(KeyError, match="ftjob-none"):
        sim.finish_job("ftjob-none")
    unknown = requests.post(control_url(sim, "jobs/ftjob-none/finish"), json={}, timeout=5)
    assert unknown.status_code == 404


def test_a_history_of_ten_thousand_jobs_lists_one_page_at_a_time(
    own_sim: tuple[Simulator, requests.Session], validators: dict[str, Any]
) -> None:
    sim, session = own_sim
    mine = sim.add_job(JobSpec(job_id="ftjob-mine", n_events=20, metadata={"team": "new"}))
    ids = sim.add_history(10_000, running=100, metadata={"team": "old"})
    assert len(ids) == 10_000 and len(set(ids)) == 10_000
    assert sim.job_ids() == [*ids, mine]  # history is older than every job added before it
    first = session.get(jobs_url(sim), params={"limit": 101}).json()
    validators["ListPaginatedFineTuningJobsResponse"].validate(first)
    assert [job["id"] for job in first["data"]] == [mine, *ids[::-1][:100]]
    assert [job["status"] for job in first["data"][1:]] == ["running"] * 100
    assert first["has_more"] is True
    after = session.get(jobs_url(sim), params={"limit": 100, "after": ids[-100]}).json()
    assert [job["id"] for job in after["data"]] == ids[::-1][100:200]
    assert {job["status"] for job in after["data"]} == {"succeeded", "failed", "cancelled"}
    oldest = session.get(jobs_url(sim), params={"limit": 100, "after": ids[1]}).json()
    assert [job["id"] for job in oldest["data"]] == [ids[0]] and oldest["has_more"] is False
    filtered = session.get(jobs_url(sim), params={"metadata[team]": "new"}).json()
    assert [job["id"] for job in filtered["data"]] == [mine] and filtered["has_more"] is False


def test_the_store_builds_history_jobs_only_when_touched() -> None:
    store = JobStore()
    ids = store.add_history(10_000, running=100)
    assert store.built() == 0
    jobs, has_more = store.page(None, 20)
    assert [job.job_id for job in jobs] == ids[::-1][:20] and has_more is True
    assert store.built() == 20
    jobs, has_more = store.page(None, 20, [("team", "x")])  # scans every job's metadata, builds none
    assert (jobs, has_more, store.built()) == ([], False, 20)
    assert store.get(ids[0]) is not None and store.built() == 21
