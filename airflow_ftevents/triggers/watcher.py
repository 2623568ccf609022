"""FineTuneJobWatcherTrigger: an AssetWatcher's trigger that fires once for every job that finishes.

A thin async loop around :mod:`airflow_ftevents.core.watch`: the core decides which jobs to look at
again, what counts as a transition and what the cursor is; this module does the I/O (async client,
asset state store, log lines) and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import time
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE
from airflow_ftevents.core.polling import next_poll_delay
from airflow_ftevents.core.watch import (
    CLOCK_MARGIN,
    Announce,
    JobFilter,
    JobTracker,
    JobWatch,
    TrackerPolled,
    WatchPolled,
)
from airflow_ftevents.core.window import to_unix_seconds
from airflow_ftevents.errors import FineTuneEventsError

CLASSPATH = "airflow_ftevents.triggers.FineTuneJobWatcherTrigger"
STATE_KEY_PREFIX = "ftevents_watcher"
# Seconds between handing events to the triggerer and saving the cursor that says they were handed
# out: the triggerer stores events within a second or two, and a cursor saved first would lose the
# events of a triggerer stopped in between (it drops the events it has not synced yet).
SAVE_DELAY = 5.0


@dataclass(frozen=True)
class SharedPoll:
    """What the shared poll hands every watcher of a connection: one complete poll of the account."""

    polled: TrackerPolled
    tracker: dict[str, Any]  # the poll's tracker, which a watcher keeps to catch up after a restart


def _since_value(since: Any) -> str | float | None:
    """``since`` as it is serialized: ISO text or unix seconds, checked now so a bad value fails at parse."""
    to_unix_seconds(since, "since")
    if isinstance(since, dt.datetime):
        return (since if since.tzinfo else since.replace(tzinfo=dt.timezone.utc)).isoformat()
    if isinstance(since, dt.date):
        return since.isoformat()
    if isinstance(since, bool) or since == "":
        return None
    return since


class FineTuneJobWatcherTrigger(BaseEventTrigger):
    """Fire one event for every fine-tuning job that enters one of ``statuses`` (an AssetWatcher's trigger).

    ``Asset("ft", watchers=[AssetWatcher(name="ft", trigger=FineTuneJobWatcherTrigger())])`` starts the
    DAGs scheduled on the asset once per job that finishes after the watcher started (or after
    ``since``), whoever created the job. The event's payload (the asset event's ``extra["payload"]``) is
    the job summary: ``job_id, status, fine_tuned_model, trained_tokens, finished_at, model, metadata,
    error``, and ``event_count``/``last_event`` as ``None`` (a watcher reads no events).

    Cost: the first poll reads the whole jobs list once (to find jobs that were already running); after
    that a poll costs at most ``floor(n / 100) + 2 + T`` requests (``n`` jobs created since the last
    poll, ``T`` unfinished jobs), one request when the unfinished jobs are among the newest 100,
    whatever the length of the account's history. State: the unfinished jobs, the newest job seen, and
    the jobs announced within the last poll interval plus two minutes.

    Restarts: on Airflow 3.3+ the cursor is kept in the watched asset's state store, a few seconds after
    each poll that changed it, so a restarted watcher announces what finished while it was down, and
    nothing twice (except after a hard crash in those few seconds, when the jobs of the last poll may be
    announced again: Airflow offers no way to store an event and a cursor together). On older Airflow,
    and when one trigger watches several assets, the cursor lives in memory: a restarted watcher
    announces jobs that finish after it started again (or after ``since``), so the jobs that finished
    while it was down are not announced. On Airflow versions with shared streams for event triggers,
    the watchers of one connection and poll interval share one poll (without the metadata filter on
    the list), and each filters its own events.

    Errors never end the watcher (an AssetWatcher that exits is dead until its DAG is parsed again):
    transient API errors are logged and the next poll tries again; a missing or broken connection and
    a rejected key are logged as errors, and the connection is read again at every poll interval, so
    fixing it is enough.

    :param conn_id: Airflow connection of the API (see FineTuneEventsHook).
    :param statuses: the terminal statuses to announce: any of succeeded, failed, cancelled.
    :param metadata: only jobs whose metadata holds all these pairs (also sent to the list).
    :param model: only jobs of this base model; ``"gpt-4o-mini*"`` matches a prefix.
    :param suffix: only jobs created with this suffix (taken from ``user_provided_suffix`` or the
        fine-tuned model's name; a failed job without ``user_provided_suffix`` has none).
    :param poll_interval: seconds between polls (at most; each wait is up to 10% shorter at random).
    :param since: announce jobs that finished at or after this instant (unix seconds or ISO 8601)
        instead of the watcher's start.
    """

    def __init__(
        self,
        conn_id: str = "openai_default",
        statuses: Iterable[str] | str = ("succeeded",),
        metadata: Mapping[str, str] | None = None,
        model: str | None = None,
        suffix: str | None = None,
        poll_interval: float = 60.0,
        since: Any = None,
    ) -> None:
        super().__init__()
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or poll_interval <= 0
        ):
            raise ValueError(f"poll_interval must be a number of seconds > 0, got {poll_interval!r}")
        if not isinstance(conn_id, str) or not conn_id:
            raise ValueError(f"conn_id must be the id of an Airflow connection, got {conn_id!r}")
        self.conn_id = conn_id
        self.filter = JobFilter(
            tuple(statuses) if not isinstance(statuses, str) else statuses, metadata, model, suffix
        )
        self.poll_interval = float(poll_interval)
        self.since = _since_value(since)
        self._store_warning_logged = False
        self._caught_up = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Plain JSON-safe kwargs, no secret; the same for the same watcher, so its hash is stable."""
        return (
            CLASSPATH,
            {
                "conn_id": self.conn_id,
                "statuses": list(self.filter.statuses),
                "metadata": self.filter.metadata,
                "model": self.filter.model,
                "suffix": self.filter.suffix,
                "poll_interval": self.poll_interval,
                "since": self.since,
            },
        )

    # -- the cursor in the asset state store (Airflow 3.3+) ----------------------------------------

    @property
    def state_key(self) -> str:
        """One key per watcher (connection and filter), so several watchers of one asset keep apart."""
        identity = {k: v for k, v in self.serialize()[1].items() if k not in ("poll_interval", "since")}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        return f"{STATE_KEY_PREFIX}:{digest}"

    def _store_unavailable(self, why: str) -> None:
        if not self._store_warning_logged:
            self.log.warning(
                "%s; the watcher keeps its cursor in memory, so after a restart it announces only jobs "
                "that finish after it started again",
                why,
            )
            self._store_warning_logged = True

    async def _load_state(self) -> Mapping[str, Any] | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            self._store_unavailable("This Airflow gives watchers no asset state store")
            return None
        try:
            if hasattr(store, "aget"):
                value = await store.aget(self.state_key, None)
            else:  # Airflow 3.3.0 and 3.3.1 have only the blocking call
                value = await asyncio.to_thread(store.get, self.state_key, None)
        except ValueError:
            self._store_unavailable("This watcher watches several assets, so it has no single state store")
            return None
        except Exception as exc:
            self.log.warning("Could not read the watcher's cursor, starting afresh: %s", exc)
            return None
        return value if isinstance(value, Mapping) else None

    async def _save_state(self, state: dict[str, Any]) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return
        try:
            if hasattr(store, "aset"):
                await store.aset(self.state_key, state)
            else:
                await asyncio.to_thread(store.set, self.state_key, state)
        except ValueError:
            self._store_unavailable("This watcher watches several assets, so it has no single state store")
        except Exception as exc:  # the next poll saves again
            self.log.warning("Could not save the watcher's cursor: %s", exc)

    async def _save_soon(self, watch: JobWatch, saved: str | None) -> str | None:
        """Save the cursor ``SAVE_DELAY`` seconds after the events it covers left, if it moved (a
        poll that found nothing new writes nothing); returns what is saved now."""
        fingerprint = watch.fingerprint()
        if fingerprint == saved or getattr(self, "asset_state_store", None) is None:
            return saved
        await asyncio.sleep(min(SAVE_DELAY, self.poll_interval / 2))
        await self._save_state(watch.to_dict())
        return watch.fingerprint()

    # -- polling ---------------------------------------------------------------------------------------

    @staticmethod
    async def _connect(conn_id: str, log: Any) -> Any:
        """The async client, or ``None`` after logging clearly why the connection cannot be used."""
        from airflow_ftevents.async_client import AsyncFineTuneEventsClient

        try:
            return await AsyncFineTuneEventsClient.from_connection(conn_id, logger=log)
        except Exception as exc:
            log.error(
                "Cannot use connection %r: %s. Fix the connection; the watcher tries again at every poll",
                conn_id,
                exc,
            )
            return None

    @staticmethod
    def _next_delay(poll_interval: float) -> float:
        """The interval shortened by up to 10% at random, so watchers started together spread out."""
        return next_poll_delay(poll_interval, None, 0.0) or 0.0

    @staticmethod
    def _log_failed_poll(log: Any, conn_id: str, exc: FineTuneEventsError) -> None:
        if exc.retryable:
            log.warning("Polling the fine-tuning jobs failed, will poll again: %s", exc)
        else:
            log.error(
                "Polling the fine-tuning jobs of connection %r failed: %s. The watcher tries again at "
                "every poll",
                conn_id,
                exc,
            )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll on its own (no shared stream): the watch's tracker and announcer in one loop."""
        start = time.time()
        stored = await self._load_state()
        watch = JobWatch.create(self.filter, start, self.since, stored, DEFAULT_PAGE_SIZE)
        if stored and watch.tracker.scanned:
            self.log.info(
                "Resuming from the stored cursor: %d unfinished jobs tracked", len(watch.tracker.tracked)
            )
        saved = watch.fingerprint() if stored else None
        client = None
        try:
            while True:
                begun = time.time()
                if client is None:
                    client = await self._connect(self.conn_id, self.log)
                if client is not None:
                    try:
                        async for outcome in client.run(watch.poll(begun)):
                            if isinstance(outcome, Announce):
                                self._log_announce(outcome.payload)
                                yield TriggerEvent(outcome.payload)
                            elif isinstance(outcome, WatchPolled):
                                self._log_poll(outcome.poll)
                    except FineTuneEventsError as exc:
                        self._log_failed_poll(self.log, self.conn_id, exc)
                        if not exc.retryable:  # a rejected key: read the connection again next time
                            await client.aclose()
                            client = None
                    saved = await self._save_soon(watch, saved)
                spent = time.time() - begun
                await asyncio.sleep(max(0.0, self._next_delay(self.poll_interval) - spent))
        finally:
            if client is not None:
                await client.aclose()

    def _log_announce(self, payload: Mapping[str, Any]) -> None:
        self.log.info(
            "Fine-tuning job %s %s (model %s, fine-tuned model %s)",
            payload["job_id"],
            payload["status"],
            payload["model"],
            payload["fine_tuned_model"],
        )

    def _log_poll(self, polled: TrackerPolled) -> None:
        self.log.debug(
            "Polled: %d requests, %d jobs listed, %d checked, %d unfinished tracked",
            polled.requests,
            polled.listed,
            polled.checked,
            polled.tracked,
        )
        for job_id in polled.forgotten:
            self.log.warning("Job %s is no longer known to the API; no longer watched", job_id)

    # -- one poll for every watcher of a connection (Airflow versions with shared streams) -----------

    def shared_stream_key(self) -> Hashable | None:
        """Watchers of one connection and poll interval share one poll of the account."""
        return (CLASSPATH, self.conn_id, self.poll_interval)

    @classmethod
    async def open_shared_stream(cls, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        """The shared poll: one tracker over every job of the connection, one :class:`SharedPoll` each
        poll, forever (errors are logged and the next poll tries again)."""
        import logging

        log = logging.getLogger(f"{cls.__module__}.shared")
        conn_id = str(kwargs.get("conn_id") or "openai_default")
        poll_interval = float(kwargs.get("poll_interval") or 60.0)
        # Jobs that finished a little before the poll began are handed out too: each watcher keeps
        # only what finished after its own start, whoever opened the poll.
        tracker = JobTracker(DEFAULT_PAGE_SIZE, None, time.time() - CLOCK_MARGIN)
        client = None
        try:
            while True:
                begun = time.time()
                if client is None:
                    client = await cls._connect(conn_id, log)
                if client is not None:
                    try:
                        async for polled in client.run(tracker.poll_emitting(begun)):
                            yield SharedPoll(polled, tracker.to_dict())
                    except FineTuneEventsError as exc:
                        cls._log_failed_poll(log, conn_id, exc)
                        if not exc.retryable:
                            await client.aclose()
                            client = None
                spent = time.time() - begun
                await asyncio.sleep(max(0.0, cls._next_delay(poll_interval) - spent))
        finally:
            if client is not None:
                await client.aclose()

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """This watcher's events from the shared poll; after a restart it first catches up on its own
        from its stored cursor (one poll from there), since the shared poll started without it."""
        start = time.time()
        stored = await self._load_state()
        watch = JobWatch.create(
            self.filter, start, self.since, stored, DEFAULT_PAGE_SIZE, list_metadata=False
        )
        saved = watch.fingerprint() if stored else None
        behind = bool(stored) and watch.tracker.scanned
        async for item in shared_stream:
            if not isinstance(item, SharedPoll):
                continue
            if behind:
                async for event in self._catch_up(watch):
                    yield event
                behind = not self._caught_up
            payloads = watch.announcer.consider(item.polled.finished, item.polled.started_at)
            if not behind:
                watch.announcer.advance(item.polled.started_at)
                watch.tracker = JobTracker.from_dict(item.tracker)
            for payload in payloads:
                self._log_announce(payload)
                yield TriggerEvent(payload)
            saved = await self._save_soon(watch, saved)

    async def _catch_up(self, watch: JobWatch) -> AsyncIterator[TriggerEvent]:
        """One poll of the stored tracker with a client of our own: the jobs that finished while down."""
        client = await self._connect(self.conn_id, self.log)
        if client is None:
            return
        try:
            async for outcome in client.run(watch.poll(time.time())):
                if isinstance(outcome, Announce):
                    self._log_announce(outcome.payload)
                    yield TriggerEvent(outcome.payload)
            self._caught_up = True
            self.log.info("Caught up from the stored cursor; following the shared poll")
        except FineTuneEventsError as exc:
            self._log_failed_poll(self.log, self.conn_id, exc)
        finally:
            await client.aclose()
