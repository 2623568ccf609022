"""The job follower alone: plans answered in memory, no network, no Airflow."""

from __future__ import annotations

import json

import pytest
from api_fakes import LiveApi, make_events

from airflow_ftevents.core.api import ApiRequest
from airflow_ftevents.core.drivers import run_sync
from airflow_ftevents.core.follow import (
    Finished,
    JobFollower,
    NewEvent,
    Polled,
    PollFailed,
    TimedOut,
    UnknownStatus,
)
from airflow_ftevents.errors import FineTuneEventsAPIError, FineTuneEventsAuthError

JOB = "ftjob-live"


def poll(follower: JobFollower, api: LiveApi) -> list:
    return list(run_sync(follower.poll(), api))


def kinds(outcomes: list) -> list[str]:
    return [type(o).__name__ for o in outcomes]


def test_each_poll_emits_only_new_events_oldest_first_then_the_status() -> None:
    api = LiveApi([("validating_files", 2), ("running", 7), ("running", 7), ("succeeded", 12)])
    follower = JobFollower(JOB, page_size=3)

    first = poll(follower, api)
    assert first == [*(NewEvent(e) for e in api.all_events[:2]), Polled("validating_files", 2, 2)]
    second = poll(follower, api)
    assert second == [*(NewEvent(e) for e in api.all_events[2:7]), Polled("running", 5, 7)]
    assert poll(follower, api) == [Polled("running", 0, 7)]
    last = poll(follower, api)
    assert last[:-2] == [NewEvent(e) for e in api.all_events[7:12]]
    assert last[-2] == Polled("succeeded", 5, 12)
    finished = last[-1]
    assert isinstance(finished, Finished) and finished.succeeded
    assert finished.message == f"Fine-tuning job {JOB} succeeded"
    assert finished.summary == {
        "job_id": JOB,
        "status": "succeeded",
        "fine_tuned_model": None,
        "trained_tokens": None,
        "finished_at": None,
        "event_count": 12,
        "last_event": api.all_events[11],
    }


def test_the_status_is_read_before_the_events() -> None:
    api = LiveApi([("succeeded", 4)])
    poll(JobFollower(JOB), api)
    assert [r.segments[-1] for r in api.requests] == [JOB, "events"]


def test_an_unknown_status_is_reported_once_across_polls_and_a_restore() -> None:
    api = LiveApi([("throttled", 1), ("throttled", 1), ("running", 2), ("throttled", 3)])
    follower = JobFollower(JOB)
    assert kinds(poll(follower, api)) == ["NewEvent", "UnknownStatus", "Polled"]
    assert kinds(poll(follower, api)) == ["Polled"]
    restored = JobFollower.from_dict(json.loads(json.dumps(follower.to_dict())), JOB)
    assert restored.warned == ["throttled"]
    assert kinds(poll(restored, api)) == ["NewEvent", "Polled"]
    assert UnknownStatus("throttled") not in poll(restored, api)


def test_a_restore_from_to_dict_in_the_middle_of_a_job_repeats_and_loses_nothing() -> None:
    events = make_events(30)
    events[4] = {**events[4], "level": "error", "message": "bad row 17"}
    api = LiveApi([("running", 10), ("running", 18), ("failed", 30)], events)
    follower = JobFollower(JOB, page_size=4)
    seen = [o.event for o in poll(follower, api) if isinstance(o, NewEvent)]

    state = json.loads(json.dumps(follower.to_dict()))  # as a trigger row or a checkpoint holds it
    assert state == {
        "v": 1,
        "job_id": JOB,
        "tail": {"last_id": "ftevent-000009", "last_created_at": events[9]["created_at"], "count": 10},
        "last_event": events[9],
        "error_events": [
            {
                "id": "ftevent-000004",
                "created_at": events[4]["created_at"],
                "level": "error",
                "type": "message",
                "message": "bad row 17",
                "data": {},
            }
        ],
        "warned": [],
    }
    resumed = JobFollower.from_dict(state, JOB, page_size=4)
    outcomes = list(run_sync(resumed.follow(0), api, sleep=lambda s: None))
    seen += [o.event for o in outcomes if isinstance(o, NewEvent)]
    assert seen == events  # each event exactly once, in order, across the restore
    finished = outcomes[-1]
    assert isinstance(finished, Finished) and finished.status == "failed"
    assert finished.message == f"Fine-tuning job {JOB} failed; error events: bad row 17"
    assert finished.summary["event_count"] == 30


def test_from_dict_of_another_job_or_nothing_starts_fresh() -> None:
    assert JobFollower.from_dict({"job_id": "other", "tail": {"count": 5}}, JOB).event_count == 0
    assert JobFollower.from_dict(None, JOB) == JobFollower(JOB)


def test_follow_waits_through_core_polling_and_stops_when_finished() -> None:
    api = LiveApi([("queued", 0), ("running", 3), ("cancelled", 3)])
    sleeps: list[float] = []
    outcomes = list(run_sync(JobFollower(JOB).follow(5.0, rng=lambda: 1.0), api, sleep=sleeps.append))
    assert sleeps == [4.5, 4.5]  # poll_interval shortened by the full 10% jitter at rng() == 1
    assert kinds(outcomes)[-2:] == ["Polled", "Finished"]
    assert outcomes[-1].status == "cancelled" and not outcomes[-1].succeeded


def test_follow_ends_with_timed_out_at_the_wall_clock_deadline() -> None:
    api = LiveApi([("running", 1)])
    clock = iter([100.0, 104.0, 111.0])
    sleeps: list[float] = []
    outcomes = list(
        run_sync(
            JobFollower(JOB).follow(5.0, 110.0, clock=lambda: next(clock), rng=lambda: 0.0),
            api,
            sleeps.append,
        )
    )
    assert sleeps == [5.0, 5.0]
    assert outcomes[-1] == TimedOut(
        outcomes[-1].summary,
        f"Fine-tuning job {JOB} did not finish before the deadline (last status 'running')",
    )
    assert outcomes[-1].summary["event_count"] == 1
    assert api.polls == 3


def test_follow_tolerates_transient_errors_only_when_asked() -> None:
    transient = FineTuneEventsAPIError("busy", status_code=503, retryable=True)
    api = LiveApi([("running", 2), ("succeeded", 4)], fail={1: transient})
    outcomes = list(run_sync(JobFollower(JOB).follow(0, tolerate_errors=True), api, sleep=lambda s: None))
    assert outcomes[0] == PollFailed(transient)
    assert [o.event["id"] for o in outcomes if isinstance(o, NewEvent)] == [
        f"ftevent-00000{i}" for i in range(4)
    ]

    api = LiveApi([("running", 2)], fail={1: transient})
    with pytest.raises(FineTuneEventsAPIError) as info:
        list(run_sync(JobFollower(JOB).follow(0), api, sleep=lambda s: None))
    assert info.value is transient


def test_follow_never_tolerates_an_error_no_retry_can_cure() -> None:
    denied = FineTuneEventsAuthError("Incorrect API key provided", status_code=401, code="invalid_api_key")
    api = LiveApi([("running", 2)], fail={2: denied})
    with pytest.raises(FineTuneEventsAuthError) as info:
        list(run_sync(JobFollower(JOB).follow(0, tolerate_errors=True), api, sleep=lambda s: None))
    assert info.value is denied


def test_read_events_off_follows_the_status_alone() -> None:
    api = LiveApi([("running", 5), ("succeeded", 9)])
    outcomes = list(run_sync(JobFollower(JOB, read_events=False).follow(0), api, sleep=lambda s: None))
    assert kinds(outcomes) == ["Polled", "Polled", "Finished"]
    assert all(r.segments[-1] == JOB for r in api.requests)


def test_start_at_newest_skips_the_history() -> None:
    api = LiveApi([("running", 6), ("succeeded", 8)])
    api.visible = api.all_events[:6]
    follower = JobFollower(JOB)
    list(run_sync(follower.start_at_newest(), api))
    assert api.requests[-1] == ApiRequest(
        ("fine_tuning", "jobs", JOB, "events"),
        {"after": None, "limit": 1},
        f"GET events of fine-tuning job {JOB}",
    )
    outcomes = list(run_sync(follower.follow(0), api, sleep=lambda s: None))
    assert [o.event["id"] for o in outcomes if isinstance(o, NewEvent)] == [
        "ftevent-000006",
        "ftevent-000007",
    ]


def test_legacy_follower_skips_by_position() -> None:
    events = [{"object": "fine-tune-event", "created_at": 1, "level": "info", "message": "same"}] * 5

    def legacy(request: ApiRequest) -> dict:
        if request.segments[-1] == "events":
            return {"object": "list", "data": events[: legacy.count]}
        legacy.count += 2
        return {"id": "ft-1", "status": "succeeded" if legacy.count >= 5 else "running"}

    legacy.count = 1
    follower = JobFollower("ft-1", api="fine_tunes")
    outcomes = list(run_sync(follower.follow(0), legacy, sleep=lambda s: None))
    assert sum(isinstance(o, NewEvent) for o in outcomes) == 5  # identical events all kept, none twice
    assert follower.event_count == 5


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"api must be 'fine_tuning' .* got 'v2'"):
        JobFollower(JOB, api="v2")
    with pytest.raises(ValueError, match="page_size must be a whole number >= 1, got 0"):
        JobFollower(JOB, page_size=0)
    with pytest.raises(ValueError, match="poll_interval must be >= 0 seconds, got -1"):
        next(JobFollower(JOB).follow(-1))
