"""Trigger checkpoints: the policy alone, and a trigger against the simulator with an in-memory store
standing in for the task instance's XCom (the real XCom path runs in tests/test_deployment_e2e.py)."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from test_trigger import lines, make, run

from airflow_ftevents.core.checkpoint import CheckpointPolicy
from airflow_ftevents.core.follow import JobFollower
from airflow_ftevents.core.jobstate import format_event
from airflow_ftevents.simulator import JobSpec
from airflow_ftevents.triggers import job as job_trigger


def test_policy_saves_only_moved_state_at_most_once_per_interval() -> None:
    policy = CheckpointPolicy(60, {"tail": 1}, now=1000.0)
    assert not policy.due({"tail": 2}, 1059.9)  # moved, but the interval has not passed
    assert policy.due({"tail": 2}, 1060.0)
    policy.saved({"tail": 2}, 1060.0)
    assert not policy.due({"tail": 2}, 5000.0)  # nothing moved: no write, however long it has been
    assert not policy.due({"tail": 3}, 1100.0)
    assert policy.due({"tail": 3}, 1120.0)


def test_policy_off_and_bad_interval() -> None:
    assert not CheckpointPolicy(0, None, 0).due({"tail": 1}, 10**9)
    with pytest.raises(ValueError, match="checkpoint_interval must be a number of seconds >= 0, got -5"):
        CheckpointPolicy(-5, None, 0)


class MemoryCheckpoints:
    """The trigger's store, in memory: what was saved, and when."""

    def __init__(self, stored: Any = None) -> None:
        self.stored = stored
        self.writes: list[tuple[float, dict[str, Any]]] = []

    def __call__(self, task_instance: Any) -> MemoryCheckpoints:
        return self

    available = True

    async def load(self) -> Any:
        return self.stored

    async def save(self, value: Any) -> None:
        json.dumps(value)  # what the XCom backend will do with it
        self.stored = value
        self.writes.append((time.monotonic(), value))


@pytest.fixture
def store(monkeypatch) -> MemoryCheckpoints:
    memory = MemoryCheckpoints()
    monkeypatch.setattr(job_trigger, "TriggerCheckpointStore", memory)
    return memory


async def test_a_new_trigger_resumes_from_the_newest_checkpoint(sim, sim_conn, caplog, store) -> None:
    """The restart case: the kwargs are from deferral time, the checkpoint is newer and wins."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-resume", n_events=30))
    events = sim.events(job_id)
    checkpointed = JobFollower(job_id)
    checkpointed.tail.last_id, checkpointed.tail.last_created_at = events[19]["id"], events[19]["created_at"]
    checkpointed.tail.count = 20
    checkpointed.last_event = events[19]
    store.stored = checkpointed.to_dict()
    at_deferral = JobFollower(job_id)
    at_deferral.tail.last_id, at_deferral.tail.last_created_at = events[4]["id"], events[4]["created_at"]
    at_deferral.tail.count = 5
    trigger = make(job_id, caplog, progress=at_deferral.to_dict(), checkpoint_interval=60)
    (payload,) = await run(trigger)
    assert [m for m in lines(caplog, trigger) if m.startswith("[")] == [format_event(e) for e in events[20:]]
    assert f"Resuming job {job_id} from its checkpoint: 20 events already logged" in lines(caplog, trigger)
    assert payload["status"] == "success" and payload["job"]["event_count"] == 30


async def test_an_older_checkpoint_than_the_kwargs_is_ignored(sim, sim_conn, caplog, store) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-old-checkpoint", n_events=12))
    events = sim.events(job_id)
    store.stored = JobFollower(job_id).to_dict()  # nothing seen: behind the kwargs
    ahead = JobFollower(job_id)
    ahead.tail.last_id, ahead.tail.last_created_at, ahead.tail.count = (
        events[7]["id"],
        events[7]["created_at"],
        8,
    )
    trigger = make(job_id, caplog, progress=ahead.to_dict())
    await run(trigger)
    assert [m for m in lines(caplog, trigger) if m.startswith("[")] == [format_event(e) for e in events[8:]]


async def test_checkpoints_are_written_at_most_once_per_interval(sim, sim_conn, caplog, store) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-checkpoints", n_events=60, duration=2.5))
    trigger = make(job_id, caplog, poll_interval=0.05, checkpoint_interval=0.5)
    started = time.monotonic()
    (payload,) = await run(trigger)
    assert payload["status"] == "success"
    times = [started] + [t for t, _ in store.writes]
    assert 2 <= len(store.writes) <= (time.monotonic() - started) / 0.5 + 1
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(times))
    counts = [value["tail"]["count"] for _, value in store.writes]
    assert counts == sorted(set(counts))  # every write moved the state on


async def test_no_checkpoint_when_nothing_moved(sim, sim_conn, caplog, store) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-still", n_events=6, duration=1.5))
    trigger = make(job_id, caplog, poll_interval=0.05, checkpoint_interval=0.01)
    (payload,) = await run(trigger)
    polls = sum(1 for _, path, _ in sim.request_log if path.endswith(job_id))
    counts = [value["tail"]["count"] for _, value in store.writes]
    assert polls > len(store.writes) + 5  # most polls found nothing new ...
    assert counts == sorted(set(counts))  # ... and wrote nothing: never the same state twice
    assert payload["job"]["event_count"] == 6


async def test_checkpoint_interval_zero_keeps_none(sim, sim_conn, caplog, store) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-none", n_events=20, duration=0.5))
    trigger = make(job_id, caplog, poll_interval=0.05, checkpoint_interval=0)
    await run(trigger)
    assert store.writes == []
