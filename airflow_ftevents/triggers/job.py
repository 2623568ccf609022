"""FineTuneJobTrigger: waits for a fine-tuning job to finish, asynchronously, in the triggerer.

Nothing here blocks the event loop: async HTTP (httpx), async connection lookup, ``asyncio.sleep``.
The deadline is wall-clock (unix seconds) so it survives a triggerer restart. Transient API errors
(those the retry policy would retry) are logged and polling goes on until the deadline; other errors
end the wait with an ``error`` event. Exactly one event is yielded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_ftevents.checkpoints import TriggerCheckpointStore, task_instance_state
from airflow_ftevents.core.api import CURRENT, check_api
from airflow_ftevents.core.checkpoint import DEFAULT_CHECKPOINT_INTERVAL, CheckpointPolicy
from airflow_ftevents.core.follow import (
    Finished,
    JobFollower,
    NewEvent,
    Polled,
    PollFailed,
    TimedOut,
    UnknownStatus,
)
from airflow_ftevents.core.jobstate import SUCCEEDED, log_event
from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE, TailState
from airflow_ftevents.errors import FineTuneEventsError

# Airflow 3.3 calls BaseTrigger.on_kill() on a user's kill only; older releases have no such hook.
NATIVE_ON_KILL = "on_kill" in vars(BaseTrigger)
EVENT_STATUSES = frozenset({"success", "failed", "cancelled", "timeout", "error"})


def trigger_event_payload(
    status: str,
    message: str,
    job: Mapping[str, Any] | None,
    error: FineTuneEventsError | None = None,
) -> dict[str, Any]:
    """The one shape of the trigger's event: ``{"status", "message", "job"}``.

    An ``error`` event also carries the exception's class and attributes (``"error"``), so the task
    raises the same exception the trigger met, with its status code, code and request id.
    """
    payload = {"status": status, "message": message, "job": dict(job) if job is not None else None}
    if error is not None:
        payload["error"] = error.to_dict()
    return payload


def error_from_event(event: Mapping[str, Any]) -> FineTuneEventsError:
    """The exception an ``error`` event stands for: the trigger's own, rebuilt from its attributes."""
    return FineTuneEventsError.from_dict(event.get("error"), str(event["message"]))


def validate_trigger_event(event: Any) -> dict[str, Any]:
    """Check a payload handed to ``execute_complete``; anything else fails loudly, naming what is wrong."""
    if not isinstance(event, Mapping):
        raise ValueError(f"Unexpected trigger event {event!r}: expected a dict with status, message and job")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise ValueError(
            f"Unexpected trigger event status {status!r} in {dict(event)!r}: expected one of "
            f"{sorted(EVENT_STATUSES)}"
        )
    if not isinstance(event.get("message"), str):
        raise ValueError(f"Trigger event without a message: {dict(event)!r}")
    job = event.get("job")
    if job is not None and (not isinstance(job, Mapping) or "job_id" not in job):
        raise ValueError(f"Trigger event with a malformed job summary: {dict(event)!r}")
    return dict(event)


def progress_from_legacy_kwargs(
    job_id: str,
    tail_state: Mapping[str, Any] | None,
    last_event: Mapping[str, Any] | None,
    error_events: list[Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """A follower state from the kwargs a 0.1.0 trigger row holds, so it resumes after an upgrade."""
    return {
        "job_id": job_id,
        "tail": TailState.from_dict(tail_state).to_dict(),
        "last_event": dict(last_event) if last_event else None,
        "error_events": [dict(e) for e in error_events or []],
        "warned": [],
    }


class FineTuneJobTrigger(BaseTrigger):
    """Follow a job every ``poll_interval`` seconds until it is terminal or ``end_time`` has passed.

    A thin async loop around the core's :class:`~airflow_ftevents.core.follow.JobFollower`, the same
    follower the sensor pokes with. Each wait is up to 10% shorter, at random, so triggers that woke
    together do not stay in step. While it waits, it saves the follower's state as an XCom of its task
    instance, at most once per ``checkpoint_interval`` and only when it moved; a trigger that starts
    (after a triggerer restart) resumes from the newest checkpoint, so at most one interval's events are
    logged again and none is lost.

    :param job_id: the fine-tuning job to watch.
    :param conn_id: Airflow connection of the API (see FineTuneEventsHook).
    :param api: ``"fine_tuning"`` or ``"fine_tunes"`` (legacy).
    :param poll_interval: seconds between polls (at most; see above).
    :param end_time: unix seconds after which the trigger gives up with a ``timeout`` event.
    :param progress: the follower's state at deferral (``JobFollower.to_dict()``).
    :param log_events: log each new event in the task log.
    :param page_size: events per page when reading new events.
    :param checkpoint_interval: seconds between two checkpoints at most; 0 keeps none.
    :param read_events: ``False`` follows the status only.
    :param cancel_on_kill: cancel the job when a user kills the task (marks it failed or success, or
        clears it) while it is deferred; never on a triggerer restart or a trigger timeout. Airflow 3.3+
        calls :meth:`on_kill` for exactly that; on 3.1 and 3.2, :meth:`cleanup` asks the triggerer for
        the task instance's state and cancels only when it is no longer ``deferred``.
    :param tail_state: (0.1.0 rows) where the sensor stopped reading events; use ``progress``.
    :param last_event: (0.1.0 rows) the newest event seen before deferring; use ``progress``.
    :param error_events: (0.1.0 rows) error-level events seen before deferring; use ``progress``.
    """

    # The public path: serialized rows, the trigger's logger name and reprs do not depend on the layout.
    __module__ = "airflow_ftevents.triggers"

    def __init__(
        self,
        job_id: str,
        conn_id: str = "openai_default",
        api: str = CURRENT,
        poll_interval: float = 60.0,
        end_time: float | None = None,
        progress: Mapping[str, Any] | None = None,
        log_events: bool = True,
        page_size: int = DEFAULT_PAGE_SIZE,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        read_events: bool = True,
        cancel_on_kill: bool = False,
        *,
        tail_state: Mapping[str, Any] | None = None,
        last_event: Mapping[str, Any] | None = None,
        error_events: list[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.conn_id = conn_id
        self.api = check_api(api)
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.log_events = log_events
        self.page_size = page_size
        self.checkpoint_interval = float(checkpoint_interval)
        self.cancel_on_kill = cancel_on_kill
        self._done = False  # the trigger fired its event: nothing left to cancel
        if progress is None and (tail_state or last_event or error_events):
            progress = progress_from_legacy_kwargs(job_id, tail_state, last_event, error_events)
        self.follower = JobFollower.from_dict(progress, job_id, self.api, page_size, read_events)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Plain JSON-safe kwargs, no secrets: the key is looked up from the connection at run time."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "conn_id": self.conn_id,
                "api": self.api,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "progress": self.follower.to_dict(),
                "log_events": self.log_events,
                "page_size": self.page_size,
                "checkpoint_interval": self.checkpoint_interval,
                "read_events": self.follower.read_events,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    async def _resume_from_checkpoint(self, store: TriggerCheckpointStore) -> None:
        try:
            stored = await store.load()
        except Exception as exc:  # no checkpoint is no reason to fail the wait
            self.log.warning("Could not read the checkpoint of job %s: %s", self.job_id, exc)
            return
        if not stored:
            return
        restored = JobFollower.from_dict(
            stored, self.job_id, self.api, self.page_size, self.follower.read_events
        )
        if restored.is_ahead_of(self.follower):
            self.log.info(
                "Resuming job %s from its checkpoint: %d events already logged",
                self.job_id,
                restored.event_count,
            )
            self.follower = restored

    async def _checkpoint(self, store: TriggerCheckpointStore, policy: CheckpointPolicy) -> None:
        state = self.follower.to_dict()
        now = time.time()
        if not policy.due(state, now):
            return
        try:
            await store.save(state)
        except Exception as exc:  # the next interval tries again; the wait goes on
            self.log.warning("Could not save the checkpoint of job %s: %s", self.job_id, exc)
        else:
            policy.saved(state, now)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_ftevents.async_client import AsyncFineTuneEventsClient

        try:
            client = await AsyncFineTuneEventsClient.from_connection(self.conn_id, self.api, logger=self.log)
        except Exception as exc:  # a missing or broken connection ends the wait with a clear event
            yield TriggerEvent(
                trigger_event_payload("error", f"Cannot use connection {self.conn_id!r}: {exc}", None)
            )
            return
        store = TriggerCheckpointStore(getattr(self, "task_instance", None))
        keep_checkpoints = self.checkpoint_interval > 0 and store.available
        if keep_checkpoints:
            await self._resume_from_checkpoint(store)
        policy = CheckpointPolicy(self.checkpoint_interval, self.follower.to_dict(), time.time())
        follower = self.follower
        plan = follower.follow(self.poll_interval, self.end_time, tolerate_errors=True)
        async with client:
            try:
                async for outcome in client.run(plan):
                    if isinstance(outcome, NewEvent):
                        if self.log_events:
                            log_event(self.log, outcome.event)
                    elif isinstance(outcome, Polled):
                        if keep_checkpoints:
                            await self._checkpoint(store, policy)
                        await client.release_idle(self.poll_interval)  # keep only what the next poll needs
                    elif isinstance(outcome, UnknownStatus):
                        self.log.warning(
                            "Job %s has status %r, unknown to this provider; still waiting",
                            self.job_id,
                            outcome.status,
                        )
                    elif isinstance(outcome, PollFailed):
                        self.log.warning(
                            "Polling job %s failed, will poll again: %s", self.job_id, outcome.error
                        )
                        await client.release_idle(self.poll_interval)  # keep only what the next poll needs
                    elif isinstance(outcome, Finished):
                        status = "success" if outcome.status == SUCCEEDED else outcome.status
                        self._done = True
                        yield TriggerEvent(trigger_event_payload(status, outcome.message, outcome.summary))
                        return
                    elif isinstance(outcome, TimedOut):
                        self._done = True
                        yield TriggerEvent(trigger_event_payload("timeout", outcome.message, outcome.summary))
                        return
            except FineTuneEventsError as exc:
                self._done = True
                yield TriggerEvent(trigger_event_payload("error", str(exc), follower.summary(), exc))

    # -- a user killed the deferred task ---------------------------------------------------------

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed the task (never a restart or a timeout): cancel the job."""
        if self.cancel_on_kill and not self._done:
            await self._cancel_job("the task was killed while deferred")

    async def cleanup(self) -> None:
        """Airflow 3.1/3.2 have no trigger ``on_kill``: cancel when the task instance left ``deferred``.

        A triggerer that restarts or shuts down leaves the task instance deferred, so it cancels nothing.
        """
        await super().cleanup()
        if not self.cancel_on_kill or self._done or NATIVE_ON_KILL:
            return
        state = await task_instance_state(getattr(self, "task_instance", None))
        if state is not None and state != "deferred":
            await self._cancel_job(f"the task instance became {state!r} while deferred")

    async def _cancel_job(self, why: str) -> None:
        from airflow_ftevents.async_client import AsyncFineTuneEventsClient

        try:
            async with await AsyncFineTuneEventsClient.from_connection(
                self.conn_id, self.api, logger=self.log
            ) as client:
                job = await client.cancel_job(self.job_id)
        except Exception as exc:
            self.log.error("Could not cancel fine-tuning job %s (%s): %s", self.job_id, why, exc)
            return
        self.log.warning(
            "Cancelled fine-tuning job %s because %s; it is now %s", self.job_id, why, job.get("status")
        )
