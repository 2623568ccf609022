"""The simulator's model of a job: ids, lifecycle arithmetic, events, cancel/finish/pause, checkpoints.

The model is what every client test compares against, so it is held to exact arithmetic (a fake clock
where time matters) and to the shapes a real job shows.
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    CHECKPOINT_ID,
    EVENT_ID,
    JOB_ID,
    FakeClock,
    add,
    job_url,
)

from airflow_ftevents.simulator import JobSpec, Simulator  # noqa: E402
from airflow_ftevents.simulator.model import BLOCK, MIN_EVENTS, EventIdCodec, Job, NotAllowed  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


def test_event_ids_are_opaque_reversible_and_job_specific() -> None:
    codec = EventIdCodec("ftjob-a\x001")
    indexes = [0, 1, 2, 19, 20, 999_999, 2**40, 2**63 - 1]
    ids = [codec.encode(i) for i in indexes]
    assert all(EVENT_ID.match(event_id) for event_id in ids)
    assert [codec.decode(event_id) for event_id in ids] == indexes
    assert len(set(ids)) == len(ids)
    other = EventIdCodec("ftjob-b\x001")
    assert [other.decode(event_id) for event_id in ids] == [None] * len(ids)
    assert codec.decode("ftevent-" + "A" * 24) is None
    assert codec.decode("ftevent-short") is None
    assert codec.decode("ftevent-" + "!" * 24) is None
    # Consecutive events do not share a visible prefix or suffix that would reveal their order.
    assert len({event_id[8:12] for event_id in ids}) == len(ids)
    assert len({event_id[-4:] for event_id in ids}) == len(ids)


def test_lifecycle_arithmetic_with_a_fake_clock() -> None:
    clock = FakeClock()
    job = Job(JobSpec(job_id="ftjob-clock", n_events=106, duration=10.0), "ftjob-clock", clock=clock)
    middle = 106 - MIN_EVENTS
    expected = [
        (0.0, 2, "validating_files"),
        (0.99, 2, "validating_files"),
        (1.0, 3, "queued"),
        (1.99, 3, "queued"),
        (2.0, 4, "running"),
        (9.99, 4 + math.floor(7.99 / 8.0 * (middle + 1)), "running"),
        (10.0, 106, "succeeded"),
        (99.0, 106, "succeeded"),
    ]
    for offset, visible, status in expected:
        clock.now = 1000.0 + offset
        snap = job.snapshot()
        assert (snap.visible, snap.status) == (visible, status), offset
        assert snap.terminal is (status == "succeeded")
    # Visibility only grows, and next_in says exactly when the next event appears.
    clock.now, previous = 1000.0, 0
    while clock.now < 1010.5:
        snap = job.snapshot()
        assert snap.visible >= previous
        previous = snap.visible
        if snap.next_in is not None:
            later = clock.now
            clock.now = later + snap.next_in + 1e-6
            assert job.snapshot().visible > snap.visible
            clock.now = later
        clock.now += 0.013
    # Realistic mode shows a short `paused` moment while running (beyond the schema's enum).
    clock.now = 1000.0 + 5.2
    assert job.snapshot(realistic=True).status == "paused"
    assert job.snapshot(realistic=False).status == "running"


def test_cancel_cuts_the_events_where_the_job_stands() -> None:
    clock = FakeClock()
    job = Job(JobSpec(job_id="ftjob-cut", n_events=50, duration=10.0), "ftjob-cut", clock=clock)
    clock.now += 5.0
    before = job.snapshot()
    seen = [job.event(i) for i in range(before.visible)]
    job.cancel()
    after = job.snapshot()
    assert (after.visible, after.status, after.terminal) == (before.visible + 2, "cancelled", True)
    assert [job.event(i) for i in range(before.visible)] == seen
    assert [job.event(i)["message"] for i in range(before.visible, after.visible)] == [
        "Job cancellation requested",
        "Job was cancelled",
    ]
    with pytest.raises(NotAllowed, match="already completed with status 'cancelled'") as refused:
        job.cancel()
    assert refused.value.status == "cancelled"
    clock.now += 100
    assert job.snapshot().visible == before.visible + 2
    assert job.total() == before.visible + 2


def test_job_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="outcome"):
        JobSpec(outcome="done")
    with pytest.raises(ValueError, match="n_events"):
        JobSpec(n_events=MIN_EVENTS - 1)
    with pytest.raises(ValueError, match="duration"):
        JobSpec(duration=-1)
    with pytest.raises(ValueError, match="job_id"):
        JobSpec(job_id="")


def test_event_sequence_reads_like_a_real_job(simulator: Simulator) -> None:
    job_id = add(simulator, n_events=2000, seed=7)
    events = simulator.events(job_id)
    assert len(events) == 2000
    training_file = simulator.job(job_id)["training_file"]
    assert [e["message"] for e in events[:4]] == [
        f"Created fine-tuning job: {job_id}",
        f"Validating training file: {training_file}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    fine_tuned = simulator.job(job_id)["fine_tuned_model"]
    assert [e["message"] for e in events[-2:]] == [
        f"New fine-tuned model created: {fine_tuned}",
        "The job has successfully completed",
    ]
    assert all(e["object"] == "fine_tuning.job.event" and EVENT_ID.match(e["id"]) for e in events)
    assert len({e["id"] for e in events}) == len(events)
    times = [e["created_at"] for e in events]
    assert times == sorted(times)
    assert len(set(times)) < len(times) / 2  # many events share one second
    assert {e["level"] for e in events} == {"info", "warn"}
    assert any(e["message"].startswith("Checkpoint created at step ") for e in events)

    metrics = [e for e in events if e["type"] == "metrics"]
    total = 2000 - MIN_EVENTS - (2000 - MIN_EVENTS) // BLOCK
    assert [m["data"]["step"] for m in metrics] == list(range(1, total + 1))
    assert all(m["data"]["total_steps"] == total for m in metrics)
    for m in metrics:
        data = m["data"]
        assert m["message"].startswith(f"Step {data['step']}/{total}: training loss={data['train_loss']:.4f}")
        has_valid = data["step"] % 10 == 0 or data["step"] == total
        assert ("valid_loss" in data) is has_valid
        assert ("valid_mean_token_accuracy" in data) is has_valid
        assert ("full_valid_loss" in data) is (data["step"] == total)
        assert 0.0 <= data["train_mean_token_accuracy"] <= 1.0
    losses = [m["data"]["train_loss"] for m in metrics]
    tenth = len(losses) // 10
    assert sum(losses[:tenth]) / tenth > 3 * sum(losses[-tenth:]) / tenth  # it learns
    ups = sum(1 for a, b in itertools.pairwise(losses) if b > a)
    assert 0.2 * len(losses) < ups < 0.5 * len(losses)  # noisily
    assert all(e["data"] == {} for e in events if e["type"] == "message")


def test_failed_and_cancelled_jobs(simulator: Simulator, http: requests.Session) -> None:
    failed = add(simulator, n_events=40, outcome="failed")
    job = http.get(job_url(simulator, failed)).json()
    assert job["status"] == "failed"
    assert set(job["error"]) == {"code", "message", "param"}
    assert job["fine_tuned_model"] is None and job["trained_tokens"] is None
    assert isinstance(job["finished_at"], int)
    last_two = simulator.events(failed)[-2:]
    assert [e["level"] for e in last_two] == ["error", "error"]
    assert last_two[0]["message"] == job["error"]["message"]
    assert last_two[0]["data"] == {"error_code": job["error"]["code"], "error_param": job["error"]["param"]}

    cancelled = add(simulator, n_events=40, outcome="cancelled")
    job = http.get(job_url(simulator, cancelled)).json()
    assert (job["status"], job["error"], job["fine_tuned_model"]) == ("cancelled", None, None)
    assert simulator.events(cancelled)[-1]["message"] == "Job was cancelled"
    assert http.get(job_url(simulator, cancelled, legacy=True)).json()["status"] == "cancelled"

    succeeded = add(simulator, n_events=40)
    job = http.get(job_url(simulator, succeeded)).json()
    assert job["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:")
    assert job["trained_tokens"] > 0 and len(job["result_files"]) == 1


def test_lifecycle_over_time(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=60, duration=2.0)
    order = ["validating_files", "queued", "running", "succeeded"]
    seen: list[str] = []
    counts: list[int] = []
    started = time.monotonic()
    while True:
        # Events first, then the job: the status seen second is at least as far as the events say.
        page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
        job = http.get(job_url(simulator, job_id)).json()
        status = job["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        counts.append(len(page["data"]))
        newest = page["data"][0]
        if newest["message"] == "Files validated, moving job to queued state":
            assert status != "validating_files"
        if newest["message"] == "Fine-tuning job started" or newest["type"] == "metrics":
            assert status in ("running", "succeeded")
        if newest["message"] == "The job has successfully completed":
            assert status == "succeeded"
        if status in ("validating_files", "queued", "running"):
            assert job["finished_at"] is None and job["fine_tuned_model"] is None
            assert job["estimated_finish"] == job["created_at"] + 2
        if status == "succeeded":
            # The job may have finished between the two reads: a read after it holds every event.
            final = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
            counts.append(len(final["data"]))
            break
        assert time.monotonic() - started < 10
        time.sleep(0.02)
    assert [s for s in order if s in seen] == seen  # only forward
    assert seen[-2:] == ["running", "succeeded"] and seen[0] in ("validating_files", "queued")
    assert counts == sorted(counts) and counts[-1] == 60
    assert time.monotonic() - started >= 1.9
    assert job["finished_at"] is not None and job["trained_tokens"] > 0


def clocked_job(n_events: int = 106, duration: float = 10.0, **spec: Any) -> tuple[Job, FakeClock, FakeClock]:
    """A live job on a hand-moved monotonic clock and wall clock (moved together by ``tick``)."""
    clock, wall = FakeClock(), FakeClock()
    wall.now = 1_700_000_000.0
    job = Job(
        JobSpec(job_id="ftjob-clocked", n_events=n_events, duration=duration, **spec),
        "ftjob-clocked",
        clock=clock,
        wall=wall,
    )
    return job, clock, wall


def tick(clock: FakeClock, wall: FakeClock, seconds: float) -> None:
    clock.now += seconds
    wall.now += seconds


def test_pause_stops_the_clock_and_resume_shifts_what_is_still_to_come() -> None:
    job, clock, wall = clocked_job()
    untouched, _, _ = clocked_job()
    tick(clock, wall, 5.0)
    with pytest.raises(NotAllowed, match="only a paused job can be resumed"):
        job.resume()
    running = job.snapshot()
    assert running.status == "running"
    job.pause()
    with pytest.raises(NotAllowed, match="only a running job can be paused"):
        job.pause()
    tick(clock, wall, 3.0)
    paused = job.snapshot()
    assert (paused.visible, paused.status, paused.terminal, paused.next_in) == (
        running.visible,
        "paused",
        False,
        None,
    )
    job_object = job.job_object(paused)
    assert (job_object["status"], job_object["estimated_finish"], job_object["finished_at"]) == (
        "paused",
        None,
        None,
    )
    job.resume()
    assert job.snapshot().status == "running" and job.snapshot().visible == running.visible
    # Events seen before the pause keep their times; every later one is 3 s later than without the pause.
    shifted = [job.event(i)["created_at"] - untouched.event(i)["created_at"] for i in range(job.n)]
    assert shifted == [0] * running.visible + [3] * (job.n - running.visible)
    tick(clock, wall, 4.99)  # 9.99 s of the 10 s lifecycle played
    assert not job.snapshot().terminal
    tick(clock, wall, 0.01)
    done = job.snapshot()
    assert (done.visible, done.status) == (106, "succeeded")
    assert job.job_object(done)["finished_at"] == 1_700_000_013
    with pytest.raises(NotAllowed, match="is 'succeeded'; only a running job can be paused"):
        job.pause()


def test_pausing_is_only_for_running_jobs() -> None:
    job, _clock, _wall = clocked_job()
    with pytest.raises(NotAllowed, match="'validating_files'"):
        job.pause()
    finished = Job(JobSpec(job_id="ftjob-old", n_events=20), "ftjob-old")
    with pytest.raises(NotAllowed, match="'succeeded'"):
        finished.pause()


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_finish_now_plays_the_rest_at_once(outcome: str) -> None:
    job, clock, wall = clocked_job()
    tick(clock, wall, 4.0)
    before = job.snapshot()
    seen = [job.event(i) for i in range(before.visible)]
    job.finish(outcome)
    after = job.snapshot()
    assert (after.visible, after.status, after.terminal) == (106, outcome, True)
    events = [job.event(i) for i in range(after.visible)]
    assert events[: before.visible] == seen
    assert {e["created_at"] for e in events[before.visible :]} == {1_700_000_004}
    closing = [e["message"] for e in events[-2:]]
    if outcome == "succeeded":
        assert closing == [
            f"New fine-tuned model created: {job.fine_tuned_name}",
            "The job has successfully completed",
        ]
        assert len(job.checkpoints(after)) == 3
    else:
        assert closing == [job.failure[2], "The job has failed"]
    assert job.job_object(after)["finished_at"] == 1_700_000_004
    with pytest.raises(NotAllowed, match=f"status '{outcome}'"):
        job.finish("cancelled")
    with pytest.raises(ValueError, match="outcome must be one of"):
        Job(JobSpec(n_events=20, duration=5.0), "ftjob-x").finish("done")


def test_finish_cancelled_cuts_like_a_cancel_even_while_paused() -> None:
    job, clock, wall = clocked_job()
    tick(clock, wall, 5.0)
    job.pause()
    tick(clock, wall, 1.0)
    visible = job.snapshot().visible
    job.finish("cancelled")
    snap = job.snapshot()
    assert (snap.visible, snap.status) == (visible + 2, "cancelled")
    assert [job.event(i)["message"] for i in range(visible, visible + 2)] == [
        "Job cancellation requested",
        "Job was cancelled",
    ]


def test_checkpoints_are_the_last_three_epochs_as_training_reaches_them() -> None:
    job, clock, wall = clocked_job(n_events=406)
    steps = job.total_steps
    assert job.n_epochs == 3
    assert job.checkpoint_steps == [math.ceil(steps / 3), math.ceil(2 * steps / 3), steps]
    seen: list[int] = []
    while True:
        snap = job.snapshot()
        found = job.checkpoints(snap)
        if len(found) not in seen:
            seen.append(len(found))
        # Listed once the metrics event of its step is visible, newest first.
        visible_steps = {
            e["data"]["step"] for e in (job.event(i) for i in range(snap.visible)) if e["type"] == "metrics"
        }
        assert [c["step_number"] for c in found] == sorted(
            (s for s in job.checkpoint_steps if s in visible_steps), reverse=True
        )
        if snap.terminal:
            break
        tick(clock, wall, 0.25)
    assert seen == [0, 1, 2, 3]
    final = job.checkpoints(job.snapshot())
    events = [job.event(i) for i in range(job.n)]
    metrics = {e["data"]["step"]: e for e in events if e["type"] == "metrics"}
    for checkpoint in final:
        step = checkpoint["step_number"]
        assert CHECKPOINT_ID.match(checkpoint["id"])
        assert checkpoint["fine_tuned_model_checkpoint"] == f"{job.fine_tuned_name}:ckpt-step-{step}"
        assert checkpoint["fine_tuning_job_id"] == "ftjob-clocked"
        assert checkpoint["created_at"] == metrics[step]["created_at"]
        assert checkpoint["metrics"]["step"] == step
        assert checkpoint["metrics"]["train_loss"] == metrics[step]["data"]["train_loss"]
        assert set(checkpoint["metrics"]) == {
            "step",
            "train_loss",
            "train_mean_token_accuracy",
            "valid_loss",
            "valid_mean_token_accuracy",
            "full_valid_loss",
            "full_valid_mean_token_accuracy",
        }
    assert final[0]["metrics"]["full_valid_loss"] == metrics[steps]["data"]["full_valid_loss"]
    # The events announce the checkpoints that have a block event after their step, and no others.
    announced = [e["message"] for e in events if e["message"].startswith("Checkpoint created")]
    assert announced == [
        f"Checkpoint created at step {s} with Snapshot ID: {job.fine_tuned_name}:ckpt-step-{s}"
        for s in job.checkpoint_steps
        if math.ceil(s / (BLOCK - 1)) - 1 < job.middle // BLOCK
    ]
    assert len(announced) >= 2


def test_checkpoints_follow_n_epochs_and_a_cancel() -> None:
    five = Job(JobSpec(job_id="ftjob-5", n_events=300, hyperparameters={"n_epochs": 5}), "ftjob-5")
    steps = five.total_steps
    assert [c["step_number"] for c in five.checkpoints(five.snapshot())] == [
        steps,
        math.ceil(4 * steps / 5),
        math.ceil(3 * steps / 5),
    ]
    tiny = Job(JobSpec(job_id="ftjob-6", n_events=MIN_EVENTS), "ftjob-6")
    assert tiny.checkpoints(tiny.snapshot()) == []
    job, clock, wall = clocked_job(n_events=406)
    while len(job.checkpoints(job.snapshot())) < 1:
        tick(clock, wall, 0.1)
    job.cancel()
    tick(clock, wall, 100.0)
    assert [c["step_number"] for c in job.checkpoints(job.snapshot())] == [job.checkpoint_steps[0]]


def test_history_creation_times_and_outcomes(simulator: Simulator) -> None:
    ids = simulator.add_history(30, running=4, metadata={"team": "old"})
    assert len(ids) == 30 and all(JOB_ID.match(job_id) for job_id in ids)
    jobs = [simulator.job(job_id) for job_id in ids]
    created = [job["created_at"] for job in jobs]
    assert [b - a for a, b in itertools.pairwise(created)] == [600] * 29
    assert time.time() - 3600 - 2 <= created[-1] <= time.time() - 3600 + 1
    statuses = [job["status"] for job in jobs]
    assert statuses[-4:] == ["running"] * 4
    assert statuses[:26] == [
        "cancelled" if k % 25 == 24 else "failed" if k % 10 == 9 else "succeeded" for k in range(26)
    ]
    assert all(job["metadata"] == {"team": "old"} for job in jobs)
    assert all(job["finished_at"] == job["created_at"] + 60 for job in jobs[:26])
    with pytest.raises(ValueError, match="running"):
        simulator.add_history(3, running=4)
    with pytest.raises(ValueError, match="n must be an int"):
        simulator.add_history(-1)
