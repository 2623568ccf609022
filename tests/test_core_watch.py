"""The watch core without Airflow or HTTP: an in-memory account answers the plans' requests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from airflow_ftevents.core.api import ApiRequest
from airflow_ftevents.core.drivers import run_sync
from airflow_ftevents.core.watch import (
    CLOCK_MARGIN,
    Announce,
    Announcer,
    JobFilter,
    JobTracker,
    JobWatch,
    TrackerPolled,
    WatchPolled,
    job_suffix,
    watch_payload,
)
from airflow_ftevents.errors import FineTuneEventsAPIError, FineTuneEventsNotFoundError

T0 = 1_700_000_000.0


class Account:
    """Jobs newest created first, the list endpoint's paging and metadata filter, GET by id."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # oldest first
        self.requests: list[ApiRequest] = []
        self.fail_next: Exception | None = None
        self.clock = T0

    def create(self, metadata: dict[str, str] | None = None, model: str = "gpt-4o-mini", **kw: Any) -> str:
        job_id = f"ftjob-{len(self.order):05d}"
        self.clock += 1
        self.jobs[job_id] = {
            "id": job_id,
            "object": "fine_tuning.job",
            "model": model,
            "created_at": int(self.clock),
            "finished_at": None,
            "status": "running",
            "fine_tuned_model": None,
            "trained_tokens": None,
            "error": None,
            "metadata": metadata,
            **kw,
        }
        self.order.append(job_id)
        return job_id

    def history(self, n: int, running: int) -> list[str]:
        """``n`` old jobs, the newest ``running`` of them unfinished, the rest long finished."""
        ids = [self.create() for _ in range(n)]
        for job_id in ids[: n - running]:
            self.finish(job_id, at=T0 - 86_400)
        return ids

    def finish(self, job_id: str, outcome: str = "succeeded", at: float | None = None) -> None:
        self.clock += 1
        job = self.jobs[job_id]
        job.update(status=outcome, finished_at=int(at if at is not None else self.clock))
        if outcome == "succeeded":
            job.update(
                fine_tuned_model=f"ft:{job['model']}:org:{job.get('suffix_') or ''}:x1", trained_tokens=42
            )
        elif outcome == "failed":
            job["error"] = {"code": "invalid_n_examples", "message": "too few", "param": "training_file"}

    def fetch(self, request: ApiRequest) -> Any:
        self.requests.append(request)
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if request.segments == ("fine_tuning", "jobs"):
            params = request.params
            wanted = {k[9:-1]: v for k, v in params.items() if k.startswith("metadata[")}
            ids = [
                j
                for j in reversed(self.order)
                if all((self.jobs[j]["metadata"] or {}).get(k) == v for k, v in wanted.items())
            ]
            if params.get("after"):
                ids = ids[ids.index(params["after"]) + 1 :]
            limit = params.get("limit") or 20
            page = ids[:limit]
            return {
                "object": "list",
                "data": [dict(self.jobs[j]) for j in page],
                "has_more": len(ids) > limit,
            }
        job_id = request.segments[2]
        if job_id not in self.jobs:
            raise FineTuneEventsNotFoundError(f"no job {job_id}", status_code=404)
        return dict(self.jobs[job_id])


def poll(watch: JobWatch, account: Account) -> tuple[list[dict[str, Any]], TrackerPolled]:
    account.requests.clear()
    account.clock += 1
    outcomes = list(run_sync(watch.poll(account.clock), account.fetch))
    assert isinstance(outcomes[-1], WatchPolled)
    assert all(isinstance(o, Announce) for o in outcomes[:-1])
    return [o.payload for o in outcomes[:-1]], outcomes[-1].poll


def ids(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["job_id"] for p in payloads]


def fresh(account: Account, **filters: Any) -> JobWatch:
    return JobWatch.create(JobFilter(**filters), now=account.clock, page_size=100)


def test_jobs_finishing_out_of_creation_order_are_each_announced_once() -> None:
    account = Account()
    a, b, c = account.create(), account.create(), account.create()
    watch = fresh(account)
    assert poll(watch, account)[0] == []
    assert set(watch.tracker.tracked) == {a, b, c}
    account.finish(b)
    assert ids(poll(watch, account)[0]) == [b]
    account.finish(a)
    d = account.create()
    account.finish(d)  # created and finished between two polls: seen finished at once
    assert sorted(ids(poll(watch, account)[0])) == sorted([a, d])
    assert poll(watch, account)[0] == []
    account.finish(c)
    assert ids(poll(watch, account)[0]) == [c]
    for _ in range(3):
        assert poll(watch, account)[0] == []
    assert watch.tracker.tracked == {}


def test_jobs_finished_before_the_watcher_started_are_not_announced() -> None:
    account = Account()
    old = account.create()
    account.finish(old)
    account.clock += 1
    watch = fresh(account)
    assert poll(watch, account)[0] == []


def test_since_announces_what_finished_after_it_even_in_an_old_job() -> None:
    account = Account()
    account.history(50, running=0)  # finished a day before T0
    recent = account.create()
    account.finish(recent)
    since = account.clock - 5
    watch = JobWatch.create(JobFilter(), now=account.clock + 100, since=since)
    assert ids(poll(watch, account)[0]) == [recent]
    watch = JobWatch.create(JobFilter(), now=account.clock, since="2023-11-13T00:00:00Z")  # before T0-1 day
    assert len(poll(watch, account)[0]) == 51


def test_failed_and_cancelled_jobs_follow_the_statuses_and_carry_the_error() -> None:
    account = Account()
    a, b, c = account.create(), account.create(), account.create()
    watch = fresh(account, statuses=("failed", "canceled"))
    poll(watch, account)
    account.finish(a, "failed")
    account.finish(b, "succeeded")
    account.finish(c, "cancelled")
    payloads, _ = poll(watch, account)
    assert sorted(ids(payloads)) == sorted([a, c])
    failed = next(p for p in payloads if p["job_id"] == a)
    assert failed == {
        "job_id": a,
        "status": "failed",
        "fine_tuned_model": None,
        "trained_tokens": None,
        "finished_at": account.jobs[a]["finished_at"],
        "event_count": None,
        "last_event": None,
        "model": "gpt-4o-mini",
        "metadata": None,
        "error": {"code": "invalid_n_examples", "message": "too few", "param": "training_file"},
    }
    assert json.loads(json.dumps(payloads)) == payloads
    assert watch.tracker.tracked == {}  # the succeeded one was forgotten too


def test_filters_metadata_model_prefix_and_suffix() -> None:
    account = Account()
    want = account.create({"team": "search", "env": "prod"}, model="gpt-4o-mini-2024-07-18", suffix_="ranker")
    other_team = account.create(
        {"team": "ads", "env": "prod"}, model="gpt-4o-mini-2024-07-18", suffix_="ranker"
    )
    other_model = account.create({"team": "search", "env": "prod"}, model="gpt-3.5-turbo", suffix_="ranker")
    other_suffix = account.create(
        {"team": "search", "env": "prod"}, model="gpt-4o-mini-2024-07-18", suffix_="x"
    )
    watch = fresh(account, metadata={"team": "search"}, model="gpt-4o-mini*", suffix="ranker")
    poll(watch, account)
    assert set(watch.tracker.tracked) == {want, other_model, other_suffix}  # the list was filtered by the API
    assert all(r.params.get("metadata[team]") == "search" for r in account.requests)
    for job_id in (want, other_team, other_model, other_suffix):
        account.finish(job_id)
    assert ids(poll(watch, account)[0]) == [want]
    exact = JobFilter(model="gpt-3.5-turbo")
    assert exact.matches(account.jobs[other_model]) and not exact.matches(account.jobs[want])


def test_suffix_of_a_failed_job_comes_from_user_provided_suffix_only() -> None:
    assert job_suffix({"fine_tuned_model": "ft:gpt-4o-mini:org:ranker:abc"}) == "ranker"
    assert job_suffix({"fine_tuned_model": None, "user_provided_suffix": "ranker"}) == "ranker"
    assert job_suffix({"fine_tuned_model": None}) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"statuses": ("running",)}, "only hold the terminal statuses"),
        ({"statuses": ()}, "non-empty list"),
        ({"metadata": {"": "x"}}, "metadata must be a dict"),
        ({"model": "*"}, "model must be a non-empty string"),
        ({"suffix": 3}, "suffix must be a non-empty string"),
    ],
)
def test_bad_filters_say_what_is_wrong(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobFilter(**kwargs)


def test_bad_since_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="since must be a datetime, an ISO-8601 string"):
        JobWatch.create(JobFilter(), now=T0, since="yesterday")


def test_restart_from_a_stored_state_misses_nothing_and_repeats_nothing() -> None:
    account = Account()
    a, b, c = account.create(), account.create(), account.create()
    watch = fresh(account)
    poll(watch, account)
    account.finish(a)
    assert ids(poll(watch, account)[0]) == [a]
    stored = json.loads(json.dumps(watch.to_dict()))  # what the asset state store keeps
    # The triggerer is down: b finishes, d is created and finishes, e is created.
    account.finish(b)
    d = account.create()
    account.finish(d)
    e = account.create()
    account.clock += 3600
    restarted = JobWatch.create(JobFilter(), now=account.clock, state=stored)
    payloads, polled = poll(restarted, account)
    assert sorted(ids(payloads)) == sorted([b, d])
    assert polled.requests == 1  # no scan of the history: one list page holds the new and tracked jobs
    assert set(restarted.tracker.tracked) == {c, e}
    account.finish(c)
    account.finish(e)
    assert sorted(ids(poll(restarted, account)[0])) == sorted([c, e])


def test_a_restart_from_an_older_state_does_not_announce_again_what_the_newer_one_did() -> None:
    """The announcer remembers what it announced since the watermark: replaying a transition from the
    tracker of an older poll (a shared poll that started afresh) yields nothing."""
    account = Account()
    a = account.create()
    watch = fresh(account)
    poll(watch, account)
    tracker_before = json.loads(json.dumps(watch.tracker.to_dict()))
    account.finish(a)
    assert ids(poll(watch, account)[0]) == [a]
    state = watch.to_dict()
    state["tracker"] = tracker_before
    restarted = JobWatch.create(JobFilter(), now=account.clock, state=state)
    assert poll(restarted, account)[0] == []


def test_state_stays_bounded_and_json_safe() -> None:
    account = Account()
    running = [account.create() for _ in range(30)]
    watch = fresh(account)
    poll(watch, account)
    for job_id in running:
        account.finish(job_id)
    assert len(poll(watch, account)[0]) == 30
    assert watch.tracker.tracked == {}
    assert len(watch.announcer.announced) == 30
    account.clock += CLOCK_MARGIN + 10
    poll(watch, account)
    assert watch.announcer.announced == {}  # finished before the watermark: nothing left to remember
    assert len(json.dumps(watch.to_dict())) < 300


def test_steady_poll_costs_one_request_with_10000_old_jobs_of_which_100_run() -> None:
    account = Account()
    account.history(10_000, running=100)
    watch = fresh(account)
    _, first = poll(watch, account)
    assert (first.requests, first.tracked) == (100, 100)  # the one scan of the history at start
    _, steady = poll(watch, account)
    assert (steady.requests, steady.listed, steady.checked) == (1, 100, 0)
    for _ in range(150):  # jobs created since the last poll push the tracked ones down a page
        account.create()
    _, busier = poll(watch, account)
    assert (busier.requests, busier.checked, busier.tracked) == (3, 0, 250)


def test_tracked_jobs_deep_in_the_history_are_checked_one_by_one() -> None:
    account = Account()
    old_running = account.create()
    account.history(500, running=0)
    watch = fresh(account)
    poll(watch, account)
    assert list(watch.tracker.tracked) == [old_running]
    _, steady = poll(watch, account)
    # the first page meets no tracked job: stop paging and ask for the job instead
    assert (steady.requests, steady.checked) == (2, 1)
    assert [r.segments for r in account.requests] == [
        ("fine_tuning", "jobs"),
        ("fine_tuning", "jobs", old_running),
    ]
    account.finish(old_running)
    assert ids(poll(watch, account)[0]) == [old_running]


def test_a_failed_poll_changes_nothing_and_the_next_one_finds_the_transition() -> None:
    account = Account()
    old_running = account.create()
    account.history(150, running=0)
    watch = fresh(account)
    poll(watch, account)
    before = watch.to_dict()
    account.finish(old_running)
    account.fail_next = FineTuneEventsAPIError("boom", status_code=500, retryable=True)
    with pytest.raises(FineTuneEventsAPIError):
        poll(watch, account)
    assert watch.to_dict() == before
    assert ids(poll(watch, account)[0]) == [old_running]


def test_a_tracked_job_the_api_no_longer_knows_is_forgotten() -> None:
    account = Account()
    gone = account.create()
    account.history(150, running=0)
    watch = fresh(account)
    poll(watch, account)
    del account.jobs[gone]
    account.order.remove(gone)
    payloads, polled = poll(watch, account)
    assert (payloads, polled.forgotten, watch.tracker.tracked) == ([], (gone,), {})


def test_tracker_alone_emits_its_poll_for_a_shared_stream() -> None:
    account = Account()
    a = account.create()
    tracker = JobTracker(page_size=100, floor=account.clock)
    [first] = list(run_sync(tracker.poll_emitting(account.clock), account.fetch))
    assert first.finished == ()
    account.finish(a)
    [second] = list(run_sync(tracker.poll_emitting(account.clock), account.fetch))
    assert [job["id"] for job in second.finished] == [a]
    restored = JobTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    assert (restored.front_id, restored.tracked, restored.scanned) == (a, {}, True)


def test_a_stored_tracker_narrower_than_the_wanted_listing_is_not_reused() -> None:
    narrow = JobTracker(metadata={"team": "a"}, front_id="ftjob-1", scanned=True)
    assert JobTracker.from_dict(narrow.to_dict()).scanned is False  # would miss other teams' jobs
    assert JobTracker.from_dict(narrow.to_dict(), metadata={"team": "a", "env": "x"}).scanned is True
    wide = JobTracker(front_id="ftjob-1", scanned=True)
    assert JobTracker.from_dict(wide.to_dict(), metadata={"team": "a"}).scanned is True


def test_announcer_since_stays_a_floor_for_a_stored_state() -> None:
    stored = Announcer(JobFilter(), watermark=T0, announced={"ftjob-1": T0 + 5}).to_dict()
    assert Announcer.from_dict(stored, JobFilter(), now=T0 + 999).watermark == T0
    later = Announcer.from_dict(stored, JobFilter(), now=T0 + 999, since=T0 + 10)
    assert (later.watermark, later.announced) == (T0 + 10, {})


def test_payload_is_small_for_a_large_job_object() -> None:
    job: Mapping[str, Any] = {
        "id": "ftjob-1",
        "status": "succeeded",
        "model": "m",
        "hyperparameters": {"n_epochs": 3},
        "result_files": ["file-1"] * 50,
        "metadata": {"k": "v"},
    }
    payload = watch_payload(job)
    assert "result_files" not in payload and payload["metadata"] == {"k": "v"}


def test_a_poll_that_found_nothing_new_needs_no_save() -> None:
    account = Account()
    account.create()
    watch = fresh(account)
    poll(watch, account)
    before = watch.fingerprint()
    poll(watch, account)
    assert watch.fingerprint() == before  # only the watermark moved
    account.create()
    poll(watch, account)
    assert watch.fingerprint() != before


def test_a_finished_job_without_finished_at_counts_only_when_new_since_a_poll() -> None:
    account = Account()
    old = account.create()
    account.finish(old, "cancelled")
    account.jobs[old]["finished_at"] = None  # some cancelled jobs carry none
    watch = fresh(account, statuses=("cancelled",))
    assert poll(watch, account)[0] == []  # history: not a transition
    new = account.create()
    account.finish(new, "cancelled")
    account.jobs[new]["finished_at"] = None
    payloads, _ = poll(watch, account)
    assert ids(payloads) == [new] and watch.announcer.announced[new] == account.clock
