"""FineTuneJobWatcherTrigger against the simulator: transitions once each, filters, faults, restarts,
a shared poll for several watchers.

The trigger runs outside a triggerer here, with the connection as an ``AIRFLOW_CONN_`` variable
(``sim_conn``). No assertion waits on time: "no more events" is checked after a counted number of
further polls (the simulator's request log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
from airflow.triggers.base import BaseEventTrigger
from conftest import API_KEY, CONN_ID, connection_json
from task_doubles import MemoryStore

from airflow_ftevents.simulator import JobSpec
from airflow_ftevents.triggers import FineTuneJobWatcherTrigger
from airflow_ftevents.triggers.watcher import SharedPoll

_loggers = 0
LIST_PATH = "/v1/fine_tuning/jobs"


class AsyncStore(MemoryStore):
    """Airflow 3.3.2's asset state store accessor: ``aget``/``aset`` next to the blocking calls."""

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.set(key, value)


def make(
    caplog: pytest.LogCaptureFixture | None = None, store: Any = None, **kwargs: Any
) -> FineTuneJobWatcherTrigger:
    global _loggers
    kwargs.setdefault("conn_id", CONN_ID)
    kwargs.setdefault("poll_interval", 0.05)
    trigger = FineTuneJobWatcherTrigger(**kwargs)
    _loggers += 1
    logger = logging.getLogger(f"test.watcher.{_loggers}")
    logger.setLevel(logging.DEBUG)
    trigger._log = logger
    trigger.asset_state_store = store
    if caplog is not None:
        caplog.set_level(logging.DEBUG, logger=logger.name)
    return trigger


class Collector:
    """Runs an event stream as a task; the payloads it yielded so far."""

    def __init__(self, stream: AsyncIterator[Any]) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(self._consume(stream))

    async def _consume(self, stream: AsyncIterator[Any]) -> None:
        async for event in stream:
            self.payloads.append(event.payload)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        async def reached() -> None:
            while len(self.payloads) < count:
                if self.task.done():
                    self.task.result()
                    raise AssertionError(f"the watcher ended after {self.payloads!r}")
                await asyncio.sleep(0.01)

        await asyncio.wait_for(reached(), timeout)
        return self.payloads

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def list_requests(sim: Any) -> int:
    return sum(
        1 for method, path, _ in list(sim.request_log) if method == "GET" and path.startswith(LIST_PATH + "?")
    )


async def polls(sim: Any, count: int, timeout: float = 20.0) -> None:
    """Wait until the jobs list was asked for ``count`` more times (each poll asks at least once)."""
    target = list_requests(sim) + count

    async def reached() -> None:
        while list_requests(sim) < target:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), timeout)


async def announced_saved(store: MemoryStore, job_id: str, timeout: float = 20.0) -> None:
    """Wait until the stored cursor says ``job_id`` was announced."""

    def done() -> bool:
        return any(job_id in json.loads(v)["announcer"]["announced"] for v in store.data.values())

    async def reached() -> None:
        while not done():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(reached(), timeout)


async def next_second() -> None:
    """Wait for the next whole second: the API's timestamps are whole seconds, and a watcher counts
    jobs that finished in the second it started as finished after it."""
    now = time.time()
    await asyncio.sleep(math.floor(now) + 1.01 - now)


def running(sim: Any, **spec: Any) -> str:
    return sim.add_job(JobSpec(n_events=20, duration=3600.0, **spec))


def ids(payloads: list[dict[str, Any]]) -> list[str]:
    return [p["job_id"] for p in payloads]


def test_serialize_is_the_public_path_with_plain_json_kwargs_and_no_key() -> None:
    trigger = FineTuneJobWatcherTrigger(
        statuses=["failed", "succeeded"], metadata={"team": "a"}, model="gpt-4o*", suffix="x", since=5
    )
    assert isinstance(trigger, BaseEventTrigger)
    path, kwargs = trigger.serialize()
    assert path == "airflow_ftevents.triggers.FineTuneJobWatcherTrigger"
    assert kwargs == {
        "conn_id": "openai_default",
        "statuses": ["failed", "succeeded"],
        "metadata": {"team": "a"},
        "model": "gpt-4o*",
        "suffix": "x",
        "poll_interval": 60.0,
        "since": 5,
    }
    again = FineTuneJobWatcherTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (path, kwargs)
    assert BaseEventTrigger.hash(path, kwargs) == BaseEventTrigger.hash(*again.serialize())
    assert API_KEY not in repr(trigger)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"poll_interval": 0}, "poll_interval must be a number of seconds > 0"),
        ({"statuses": ["done"]}, "only hold the terminal statuses"),
        ({"since": "last week"}, "since must be a datetime, an ISO-8601 string"),
        ({"conn_id": ""}, "conn_id must be the id of an Airflow connection"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FineTuneJobWatcherTrigger(**kwargs)


async def test_jobs_finishing_out_of_order_fire_one_event_each(sim, sim_conn, caplog) -> None:
    before = sim.add_job(JobSpec(n_events=20, duration=0.0))  # finished before the watcher started
    await next_second()
    a, b, c = running(sim), running(sim), running(sim)
    trigger = make(caplog, statuses=("succeeded", "failed"))
    collector = Collector(trigger.run())
    await polls(sim, 2)
    sim.finish_job(b, "succeeded")
    assert ids(await collector.wait_for(1)) == [b]
    sim.finish_job(c, "failed")
    sim.finish_job(a, "cancelled")  # not in statuses
    await collector.wait_for(2)
    await polls(sim, 3)
    await collector.stop()
    assert ids(collector.payloads) == [b, c] and before not in ids(collector.payloads)
    succeeded, failed = collector.payloads
    job_b = sim.job(b)
    assert succeeded == {
        "job_id": b,
        "status": "succeeded",
        "fine_tuned_model": job_b["fine_tuned_model"],
        "trained_tokens": job_b["trained_tokens"],
        "finished_at": job_b["finished_at"],
        "event_count": None,
        "last_event": None,
        "model": job_b["model"],
        "metadata": None,
        "error": None,
    }
    assert failed["status"] == "failed" and failed["error"] == sim.job(c)["error"]
    assert json.loads(json.dumps(collector.payloads)) == collector.payloads
    assert API_KEY not in caplog.text


async def test_jobs_created_over_http_are_filtered_by_metadata_model_and_suffix(sim, sim_conn) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"

    def create(model: str, suffix: str, team: str) -> str:
        body = {
            "model": model,
            "training_file": "file-t",
            "suffix": suffix,
            "metadata": {"team": team, "sim_seconds": "3600", "sim_events": "20"},
        }
        response = session.post(f"{sim.base_url}/fine_tuning/jobs", json=body, timeout=5)
        response.raise_for_status()
        return response.json()["id"]

    trigger = make(metadata={"team": "search"}, model="gpt-4o-mini*", suffix="ranker")
    collector = Collector(trigger.run())
    await polls(sim, 1)
    want = create("gpt-4o-mini-2024-07-18", "ranker", "search")
    other_team = create("gpt-4o-mini-2024-07-18", "ranker", "ads")
    other_model = create("gpt-3.5-turbo-0125", "ranker", "search")
    other_suffix = create("gpt-4o-mini-2024-07-18", "other", "search")
    await polls(sim, 2)
    for job_id in (other_team, other_model, other_suffix, want):
        sim.finish_job(job_id, "succeeded")
    await collector.wait_for(1)
    await polls(sim, 3)
    await collector.stop()
    session.close()
    assert ids(collector.payloads) == [want]
    assert collector.payloads[0]["metadata"]["team"] == "search"
    assert all(
        "metadata%5Bteam%5D=search" in path
        for m, path, _ in sim.request_log
        if path.startswith(LIST_PATH + "?")
    )


async def test_transient_errors_are_logged_and_the_next_poll_finds_the_job(sim, sim_conn, caplog) -> None:
    job_id = running(sim)
    trigger = make(caplog)
    collector = Collector(trigger.run())
    await polls(sim, 1)
    sim.inject("500", count=6, path="/fine_tuning/jobs")  # outlasts the client's 3 retries: a failed poll
    sim.finish_job(job_id)
    assert ids(await collector.wait_for(1)) == [job_id]
    await polls(sim, 2)
    await collector.stop()
    assert ids(collector.payloads) == [job_id]
    assert "Polling the fine-tuning jobs failed, will poll again" in caplog.text


async def test_a_bad_connection_is_logged_and_tried_again_without_ending_the_watcher(
    sim, monkeypatch, caplog
) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url, api_key="sk-wrong"))
    job_id = running(sim)
    trigger = make(caplog)
    collector = Collector(trigger.run())

    async def logged(text: str) -> None:
        while text not in caplog.text:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(logged("The watcher tries again at every poll"), 20)
    assert not collector.task.done()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
    await polls(sim, 2)  # the first good poll is the watcher's first look: the job is running
    sim.finish_job(job_id)
    assert ids(await collector.wait_for(1)) == [job_id]
    await collector.stop()
    assert "sk-wrong" not in caplog.text


async def test_missing_connection_is_logged_and_the_watcher_goes_on(sim, monkeypatch, caplog) -> None:
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", raising=False)
    trigger = make(caplog, conn_id="no_such_conn")
    collector = Collector(trigger.run())

    async def logged() -> None:
        while caplog.text.count("Cannot use connection 'no_such_conn'") < 2:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(logged(), 20)
    assert not collector.task.done()
    await collector.stop()


async def test_restart_with_an_asset_state_store_misses_nothing_and_repeats_nothing(
    sim, sim_conn, caplog
) -> None:
    store = AsyncStore()
    a, b, c = running(sim), running(sim), running(sim)
    first = Collector(make(store=store).run())
    await polls(sim, 1)
    sim.finish_job(a)
    await first.wait_for(1)
    await polls(sim, 1)

    await announced_saved(store, a)  # the cursor is saved a moment after the events left
    writes = store.writes
    await polls(sim, 3)
    assert store.writes == writes  # polls that find nothing new write nothing
    await first.stop()
    # Down: b finishes, d is created and finishes, e is created and still runs.
    sim.finish_job(b, "succeeded")
    d = running(sim)
    sim.finish_job(d, "succeeded")
    e = running(sim)
    requests_before = len(sim.request_log)
    second = Collector(make(caplog, store=store).run())
    await second.wait_for(2)
    first_poll = sim.request_log[requests_before:][:1]
    assert [path.split("?")[0] for _, path, _ in first_poll] == [LIST_PATH]
    sim.finish_job(c)
    sim.finish_job(e)
    await second.wait_for(4)
    await polls(sim, 3)
    await second.stop()
    assert ids(first.payloads) == [a]
    assert sorted(ids(second.payloads)[:2]) == sorted([b, d]) and sorted(ids(second.payloads)[2:]) == sorted(
        [c, e]
    )
    assert "Resuming from the stored cursor: 2 unfinished jobs tracked" in caplog.text


async def test_without_a_state_store_a_restart_repeats_nothing_and_announces_from_its_new_start(
    sim, sim_conn, caplog
) -> None:
    a, b = running(sim), running(sim)
    first = Collector(make().run())
    await polls(sim, 1)
    sim.finish_job(a)
    await first.wait_for(1)
    await first.stop()
    sim.finish_job(b)  # finishes while no watcher runs: not announced by the next one (documented)
    c = running(sim)
    await next_second()
    second = Collector(make(caplog).run())
    await polls(sim, 2)
    sim.finish_job(c)
    await second.wait_for(1)
    await polls(sim, 2)
    await second.stop()
    assert (ids(first.payloads), ids(second.payloads)) == ([a], [c])
    assert "keeps its cursor in memory" in caplog.text


async def test_a_store_shared_by_several_assets_falls_back_to_memory(sim, sim_conn, caplog) -> None:
    class SeveralAssets:
        async def aget(self, key: str, default: Any = None) -> Any:
            raise ValueError("Task has 2 concrete inlets and outlets")

        async def aset(self, key: str, value: Any) -> None:
            raise ValueError("Task has 2 concrete inlets and outlets")

    job_id = running(sim)
    collector = Collector(make(caplog, store=SeveralAssets()).run())
    await polls(sim, 1)
    sim.finish_job(job_id)
    assert ids(await collector.wait_for(1)) == [job_id]
    await collector.stop()
    assert "watches several assets" in caplog.text


class FanOut:
    """What the triggerer's shared-stream manager does, in small: one poll, a queue per subscriber."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.queues: list[asyncio.Queue[Any]] = []
        self.task = asyncio.ensure_future(self._poll(kwargs))

    async def _poll(self, kwargs: dict[str, Any]) -> None:
        async for item in FineTuneJobWatcherTrigger.open_shared_stream(kwargs):
            assert isinstance(item, SharedPoll)
            for queue in self.queues:
                queue.put_nowait(item)

    def subscribe(self) -> AsyncIterator[Any]:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.queues.append(queue)

        async def stream() -> AsyncIterator[Any]:
            while True:
                yield await queue.get()

        return stream()

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def test_watchers_of_one_connection_share_one_poll_and_filter_their_own_events(sim, sim_conn) -> None:
    a = running(sim, metadata={"team": "a"})
    b = running(sim, metadata={"team": "b"})
    c = running(sim, metadata={"team": "a"})
    watchers = [
        make(metadata={"team": "a"}),
        make(metadata={"team": "b"}),
        make(statuses=("failed",)),
    ]
    keys = {w.shared_stream_key() for w in watchers}
    assert len(keys) == 1
    fan = FanOut(watchers[0].serialize()[1])
    collectors = [Collector(w.filter_shared_stream(fan.subscribe())) for w in watchers]
    await polls(sim, 2)
    sim.finish_job(a, "succeeded")
    sim.finish_job(b, "succeeded")
    sim.finish_job(c, "failed")
    await collectors[0].wait_for(1)
    await collectors[1].wait_for(1)
    await collectors[2].wait_for(1)
    sim.request_log.clear()
    await polls(sim, 3)
    for collector in collectors:
        await collector.stop()
    await fan.stop()
    assert [ids(c.payloads) for c in collectors] == [[a], [b], [c]]
    # One poll for all three watchers: the list page, nothing else (no job is tracked any more).
    assert {path.split("?")[0] for _, path, _ in sim.request_log} == {LIST_PATH}
    assert all("metadata" not in path for _, path, _ in sim.request_log)


async def test_a_restarted_watcher_on_a_shared_poll_catches_up_from_its_stored_cursor(sim, sim_conn) -> None:
    store = AsyncStore()
    a, b = running(sim), running(sim)
    first_fan = FanOut(make().serialize()[1])
    first = Collector(make(store=store).filter_shared_stream(first_fan.subscribe()))
    await polls(sim, 1)
    sim.finish_job(a)
    await first.wait_for(1)

    await announced_saved(store, a)
    await first.stop()
    await first_fan.stop()
    sim.finish_job(b)  # while the triggerer is down
    second_fan = FanOut(make().serialize()[1])  # a new shared poll, started after b finished
    second = Collector(make(store=store).filter_shared_stream(second_fan.subscribe()))
    assert ids(await second.wait_for(1)) == [b]
    c = running(sim)
    await polls(sim, 2)
    sim.finish_job(c)
    await second.wait_for(2)
    await polls(sim, 3)
    await second.stop()
    await second_fan.stop()
    assert (ids(first.payloads), ids(second.payloads)) == ([a], [b, c])


async def test_the_triggerers_shared_stream_manager_runs_one_poll_for_all_watchers(sim, sim_conn) -> None:
    shared_stream = pytest.importorskip(
        "airflow.triggers.shared_stream", reason="Airflow before 3.3 runs each watcher on its own"
    )
    manager = shared_stream.SharedStreamManager()
    a = running(sim, metadata={"team": "a"})
    b = running(sim, metadata={"team": "b"})
    watchers = [make(metadata={"team": "a"}), make(metadata={"team": "b"})]
    collectors = [
        Collector(
            w.filter_shared_stream(manager.subscribe(trigger_id=i, trigger=w, key=w.shared_stream_key()))
        )
        for i, w in enumerate(watchers)
    ]
    await polls(sim, 2)
    sim.finish_job(b)
    sim.finish_job(a)
    await collectors[0].wait_for(1)
    await collectors[1].wait_for(1)
    sim.request_log.clear()
    await polls(sim, 3)
    for i, (watcher, collector) in enumerate(zip(watchers, collectors, strict=True)):
        await collector.stop()
        await manager.unsubscribe(i, watcher.shared_stream_key())
    assert [ids(c.payloads) for c in collectors] == [[a], [b]]
    assert {path.split("?")[0] for _, path, _ in sim.request_log} == {LIST_PATH}
