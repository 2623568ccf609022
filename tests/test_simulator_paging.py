"""Cursor paging of a job's events: newest first, exact ``after``/``limit`` arithmetic, refused cursors."""

from __future__ import annotations

import math

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    add,
    job_url,
    walk_pages,
)

from airflow_ftevents.simulator import Simulator  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http


@pytest.mark.parametrize("n_events", [6, 7, 21, 57, 200])
def test_newest_first_paging_is_exact(simulator: Simulator, http: requests.Session, n_events: int) -> None:
    job_id = add(simulator, n_events=n_events)
    expected = list(reversed(simulator.events(job_id)))
    for limit in (1, 3, 20, 100, None):
        simulator.request_log.clear()
        events, pages = walk_pages(http, simulator, job_id, limit)
        size = 20 if limit is None else limit
        assert events == expected
        assert len(pages) == max(1, math.ceil(n_events / size))
        remaining = n_events
        for page in pages:
            assert len(page["data"]) == min(size, remaining)
            remaining -= len(page["data"])
            assert page["has_more"] is (remaining > 0)
        assert len(simulator.request_log) == len(pages)
    assert len({e["id"] for e in expected}) == n_events
    # `after` continues exactly after any event, and the oldest event ends the walk.
    for index in range(0, n_events, 1 if n_events < 60 else 7):
        after = expected[index]["id"]
        page = http.get(job_url(simulator, job_id, "/events"), params={"after": after, "limit": 5}).json()
        assert page["data"] == expected[index + 1 : index + 6]
        assert page["has_more"] is (index + 6 < n_events)


def test_bad_cursors_and_limits_are_refused(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=30)
    other = add(simulator, n_events=30)
    url = job_url(simulator, job_id, "/events")
    for after in (simulator.events(other)[5]["id"], "ftevent-" + "0" * 24, "garbage"):
        response = http.get(url, params={"after": after})
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            "after",
            "invalid_cursor",
        )
    for limit in ("0", "-1", "x"):
        response = http.get(url, params={"limit": limit})
        assert response.status_code == 400 and response.json()["error"]["param"] == "limit"
    # An id of an event that is not visible yet is not a valid cursor either.
    live = add(simulator, n_events=30, duration=30.0)
    future = simulator.event_at(live, 20)["id"]
    assert http.get(job_url(simulator, live, "/events"), params={"after": future}).status_code == 400


def test_million_event_job_pages_exactly_at_start_middle_and_end(
    simulator: Simulator, http: requests.Session
) -> None:
    job_id = add(simulator, n_events=1_000_000, seed=11)  # events are computed per request, never stored
    assert simulator.event_count(job_id) == 1_000_000
    url = job_url(simulator, job_id, "/events")
    after = None
    newest = []
    for _ in range(3):
        page = http.get(url, params={"limit": 100, **({"after": after} if after else {})}).json()
        assert page["has_more"] is True and len(page["data"]) == 100
        newest.extend(page["data"])
        after = page["data"][-1]["id"]
    assert newest == [simulator.event_at(job_id, i) for i in range(999_999, 999_699, -1)]
    assert newest[0]["message"] == "The job has successfully completed"

    page = http.get(url, params={"limit": 100, "after": simulator.event_at(job_id, 500_000)["id"]}).json()
    assert page["data"] == [simulator.event_at(job_id, i) for i in range(499_999, 499_899, -1)]
    assert page["has_more"] is True

    page = http.get(url, params={"limit": 100, "after": simulator.event_at(job_id, 150)["id"]}).json()
    assert [e["id"] for e in page["data"]] == [
        simulator.event_at(job_id, i)["id"] for i in range(149, 49, -1)
    ]
    page = http.get(url, params={"limit": 100, "after": page["data"][-1]["id"]}).json()
    assert len(page["data"]) == 50 and page["has_more"] is False
    assert page["data"][-1]["message"] == f"Created fine-tuning job: {job_id}"
    legacy = http.get(job_url(simulator, job_id, legacy=True)).json()
    assert legacy["status"] == "succeeded"
