"""FineTuneJobOperator against the simulator over loopback: start, re-attach, wait, cancel, Assets."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from conftest import API_KEY, CONN_ID, sim_metadata
from task_doubles import FakeTI, capture

from airflow_ftevents._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_ftevents.core.jobtag import TASK_INSTANCE_KEY, compact_checkpoint, task_instance_tag
from airflow_ftevents.operators import FineTuneJobOperator
from airflow_ftevents.simulator import JobSpec
from airflow_ftevents.triggers import FineTuneJobTrigger
from airflow_ftevents.triggers import job as job_trigger

MODEL = "gpt-4o-mini-2024-07-18"


def make(**kwargs: Any) -> FineTuneJobOperator:
    kwargs.setdefault("task_id", "fine_tune")
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("training_file", "file-train")
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("deferrable", False)
    return FineTuneJobOperator(**kwargs)


def posts(sim: Any) -> int:
    return sum(
        1 for method, path, _ in sim.request_log if method == "POST" and path.endswith("/fine_tuning/jobs")
    )


def tag(ti: FakeTI) -> str:
    return task_instance_tag(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)


def test_starts_waits_and_returns_the_model_and_checkpoints(sim, sim_conn) -> None:
    ti = FakeTI(task_id="fine_tune")
    op = make(
        metadata={**sim_metadata(40), "team": "search"},
        validation_file="file-valid",
        suffix="nightly",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    records = capture(op)
    result = op.execute({"ti": ti})

    (job_id,) = sim.job_ids()
    job = sim.job(job_id)
    assert job["metadata"] == {**sim_metadata(40), "team": "search", TASK_INSTANCE_KEY: tag(ti)}
    assert (job["validation_file"], job["seed"], job["method"]["type"]) == ("file-valid", 7, "supervised")
    assert ti.xcoms["job_id"] == job_id
    events = sim.events(job_id)
    checkpoints = sim.checkpoints(job_id)
    assert checkpoints  # the simulator reaches up to 3
    assert result == {
        "job_id": job_id,
        "status": "succeeded",
        "fine_tuned_model": job["fine_tuned_model"],
        "trained_tokens": job["trained_tokens"],
        "finished_at": job["finished_at"],
        "event_count": len(events),
        "last_event": events[-1],
        "model": MODEL,
        "result_files": job["result_files"],
        "checkpoints": [compact_checkpoint(c) for c in checkpoints],
    }
    assert f"Created fine-tuning job {job_id} (validating_files)" in records.lines()
    assert posts(sim) == 1
    assert API_KEY not in "\n".join(records.lines())


def test_a_second_try_reattaches_and_makes_no_post(sim, sim_conn) -> None:
    ti = FakeTI(task_id="fine_tune")
    first = make(metadata=sim_metadata(30, 3.0), wait_for_completion=False)
    job_id = first.execute({"ti": ti})
    assert posts(sim) == 1

    retry = make(metadata=sim_metadata(30, 3.0))  # the next try: a new operator object, same task instance
    records = capture(retry)
    result = retry.execute({"ti": ti})
    assert posts(sim) == 1
    assert sim.job_ids() == [job_id]
    assert result["job_id"] == job_id and result["status"] == "succeeded"
    assert any(line.startswith(f"Re-attaching to fine-tuning job {job_id} (") for line in records.lines())


def test_a_failed_or_cancelled_job_is_not_reattached(sim, sim_conn) -> None:
    ti = FakeTI(task_id="fine_tune")
    with pytest.raises(AirflowFailException, match="failed"):
        make(metadata=sim_metadata(20, 0.2, "failed")).execute({"ti": ti})
    result = make(metadata=sim_metadata(20, 0.2)).execute({"ti": ti})
    assert posts(sim) == 2
    assert len(sim.job_ids()) == 2 and result["status"] == "succeeded"


def test_another_task_instance_gets_its_own_job(sim, sim_conn) -> None:
    make(metadata=sim_metadata(), wait_for_completion=False).execute({"ti": FakeTI(task_id="fine_tune")})
    make(metadata=sim_metadata(), wait_for_completion=False).execute(
        {"ti": FakeTI(task_id="fine_tune", run_id="run-2")}
    )
    assert posts(sim) == 2


def test_a_dropped_create_response_ends_in_one_job(sim, sim_conn) -> None:
    """The POST reached the server (the job exists) but its answer was lost: the operator finds the job
    by its tag instead of creating a second, billed one."""
    sim.inject("reset_after_processing", endpoint="create")
    ti = FakeTI(task_id="fine_tune")
    op = make(metadata=sim_metadata(20, 0.2))
    records = capture(op)
    result = op.execute({"ti": ti})
    (job_id,) = sim.job_ids()
    assert posts(sim) == 1
    assert result["job_id"] == job_id
    assert any(line.startswith("The create request's outcome is unknown") for line in records.lines(30))
    assert f"The job was created after all: {job_id}" in records.lines()


def test_metadata_limits_fail_before_any_request(sim, sim_conn) -> None:
    cases = {
        "metadata has 16 pairs; the API allows 16 and the operator uses one ('airflow_task_instance'), so "
        "at most 15 are yours: drop some": {f"k{i}": "v" for i in range(16)},
        f"metadata key {'k' * 20!r}... has 65 characters; the API allows 64": {"k" * 65: "v"},
        "metadata value of 'k' has 513 characters; the API allows 512": {"k": "v" * 513},
        "metadata value of 'k' must be a string, got int 3; convert it with str() or json.dumps()": {"k": 3},
        f"metadata key {TASK_INSTANCE_KEY!r} is reserved: the operator tags each job with its task instance "
        "there; use another key": {TASK_INSTANCE_KEY: "mine"},
    }
    for message, metadata in cases.items():
        with pytest.raises(AirflowFailException) as info:
            make(metadata=metadata).execute({"ti": FakeTI()})
        assert str(info.value) == message
    make(metadata={f"k{i}": "v" * 512 for i in range(15)}, wait_for_completion=False).execute(
        {"ti": FakeTI()}
    )
    assert posts(sim) == 1
    assert len(sim.request_log) == 2  # the lookup and the POST of the one valid call


def test_a_long_task_instance_tag_is_hashed_to_fit() -> None:
    tag_value = task_instance_tag("d" * 250, "r" * 250, "t" * 250, 3)
    assert tag_value.startswith("sha256:") and len(tag_value) == 71
    assert task_instance_tag("dag", "manual__2024-01-01T00:00:00+00:00", "fine_tune", -1) == (
        "dag/manual__2024-01-01T00:00:00+00:00/fine_tune/-1"
    )


def test_a_failed_job_fails_the_task_or_skips_it_with_soft_fail(sim, sim_conn) -> None:
    with pytest.raises(AirflowFailException) as info:
        make(metadata=sim_metadata(20, 0.2, "failed")).execute({"ti": FakeTI()})
    job_id = sim.job_ids()[0]
    assert str(info.value).startswith(f"Fine-tuning job {job_id} failed; error: ")
    with pytest.raises(AirflowSkipException):
        make(metadata=sim_metadata(20, 0.2, "cancelled"), soft_fail=True).execute({"ti": FakeTI(run_id="r2")})


def test_timeout_cancels_the_job(sim, sim_conn) -> None:
    op = make(metadata=sim_metadata(200, 60.0), timeout=1.0)
    records = capture(op)
    with pytest.raises(AirflowException, match="did not finish before the deadline"):
        op.execute({"ti": FakeTI()})
    (job_id,) = sim.job_ids()
    assert sim.job(job_id)["status"] == "cancelled"
    assert (
        f"Cancelled fine-tuning job {job_id} because the operator's timeout passed; it is now cancelled"
        in records.lines()
    )


def test_killing_the_running_task_cancels_the_job(sim, sim_conn) -> None:
    op = make(metadata=sim_metadata(200, 60.0))
    records = capture(op)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            op.execute({"ti": FakeTI()})
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    for _ in range(100):
        if op.job_id and sim.job(op.job_id)["status"] == "running":
            break
        time.sleep(0.05)
    op.on_kill()  # what Airflow calls when a user marks the running task failed or success
    worker.join(30)
    assert sim.job(op.job_id)["status"] == "cancelled"
    assert isinstance(outcome["error"], AirflowFailException)
    assert f"Cancelled fine-tuning job {op.job_id} because the task was killed; it is now cancelled" in (
        records.lines()
    )


def test_cancel_on_kill_false_leaves_the_job(sim, sim_conn) -> None:
    op = make(metadata=sim_metadata(200, 60.0), cancel_on_kill=False, wait_for_completion=False)
    op.execute({"ti": FakeTI()})
    op.on_kill()
    assert sim.job(op.job_id)["status"] != "cancelled"


def test_deferrable_hands_the_wait_to_the_trigger_then_returns_the_result(sim, sim_conn) -> None:
    op = make(metadata=sim_metadata(40, 1.5), deferrable=True, timeout=120)
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as info:
        op.execute({"ti": ti})
    trigger = info.value.trigger
    assert isinstance(trigger, FineTuneJobTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["cancel_on_kill"] is True and kwargs["job_id"] == ti.xcoms["job_id"]

    async def first() -> dict[str, Any]:
        async for event in FineTuneJobTrigger(**kwargs).run():
            return event.payload
        raise AssertionError("no event")

    payload = asyncio.run(asyncio.wait_for(first(), 30))
    resumed = make(metadata=sim_metadata(40, 1.5), deferrable=True)  # a fresh object, as after deferral
    result = resumed.execute_complete({"ti": ti}, payload)
    job_id = ti.xcoms["job_id"]
    assert result["job_id"] == job_id and result["status"] == "succeeded"
    assert result["checkpoints"] == [compact_checkpoint(c) for c in sim.checkpoints(job_id)]
    assert posts(sim) == 1


def test_a_trigger_timeout_event_cancels_the_job(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-slow", n_events=200, duration=60))
    op = make(deferrable=True)
    records = capture(op)
    event = {
        "status": "timeout",
        "message": "Fine-tuning job ftjob-slow did not finish",
        "job": {"job_id": job_id},
    }
    with pytest.raises(AirflowException, match="did not finish"):
        op.execute_complete({"ti": FakeTI()}, event)
    assert sim.job(job_id)["status"] == "cancelled"
    assert any(line.startswith("Cancelled fine-tuning job ftjob-slow") for line in records.lines())


def _trigger(job_id: str, **kwargs: Any) -> FineTuneJobTrigger:
    return FineTuneJobTrigger(job_id, CONN_ID, poll_interval=0.1, cancel_on_kill=True, **kwargs)


async def removed_by_the_triggerer(trigger: FineTuneJobTrigger, after: float) -> None:
    """What a triggerer does to a trigger it no longer runs: cancel its run, then call cleanup()."""
    task = asyncio.ensure_future(trigger.run().__anext__())
    await asyncio.sleep(after)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await trigger.cleanup()


async def test_the_trigger_cancels_on_a_users_kill(sim, sim_conn) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-kill", n_events=200, duration=60))
    trigger = _trigger(job_id)
    await trigger.on_kill()  # Airflow 3.3 calls it on a user's kill only
    assert sim.job(job_id)["status"] == "cancelled"


async def test_a_triggerer_restart_does_not_cancel(sim, sim_conn, monkeypatch) -> None:
    """The run is cancelled (the triggerer stops) and cleanup runs; the task instance is still deferred."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-restart", n_events=200, duration=60))
    for native in (True, False):  # 3.3 (on_kill) and 3.1/3.2 (the state asked in cleanup)
        monkeypatch.setattr(job_trigger, "NATIVE_ON_KILL", native)

        async def deferred(task_instance: Any) -> str:
            return "deferred"

        monkeypatch.setattr(job_trigger, "task_instance_state", deferred)
        await removed_by_the_triggerer(_trigger(job_id), after=0.5)
        assert sim.job(job_id)["status"] in ("validating_files", "queued", "running")


async def test_on_3_1_a_task_that_left_deferred_cancels_in_cleanup(sim, sim_conn, monkeypatch) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-marked", n_events=200, duration=60))
    monkeypatch.setattr(job_trigger, "NATIVE_ON_KILL", False)

    async def failed(task_instance: Any) -> str:
        return "failed"  # a user marked the deferred task failed

    monkeypatch.setattr(job_trigger, "task_instance_state", failed)
    await removed_by_the_triggerer(_trigger(job_id), after=0.3)
    assert sim.job(job_id)["status"] == "cancelled"


def test_outlet_asset_events_carry_the_model(sim, sim_conn) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from airflow_ftevents.core.jobtag import best_checkpoint

    asset = Asset("ftevents://models/search")
    events = OutletEventAccessors()  # what the task runner hands a task as context["outlet_events"]
    result = make(metadata=sim_metadata(40), outlets=[asset]).execute(
        {"ti": FakeTI(), "outlet_events": events}
    )
    job_id = result["job_id"]
    job = sim.job(job_id)
    assert events[asset].extra == {
        "job_id": job_id,
        "status": "succeeded",
        "fine_tuned_model": job["fine_tuned_model"],
        "model": MODEL,
        "trained_tokens": job["trained_tokens"],
        "finished_at": job["finished_at"],
        "best_checkpoint": best_checkpoint(sim.checkpoints(job_id)),
    }
    assert events[asset].extra["best_checkpoint"] is not None


def test_templated_fields() -> None:
    assert FineTuneJobOperator.template_fields == (
        "model",
        "training_file",
        "validation_file",
        "method",
        "hyperparameters",
        "suffix",
        "metadata",
        "conn_id",
    )
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0 or a timedelta, got 0"):
        make(timeout=0)
