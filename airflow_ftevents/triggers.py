"""FineTuneJobTrigger: waits for a fine-tuning job to finish, asynchronously, in the triggerer.

Nothing here blocks the event loop: async HTTP (httpx), async connection lookup, ``asyncio.sleep``.
The deadline is wall-clock (unix seconds) so it survives a triggerer restart. Transient API errors
(those the retry policy would retry) are logged and polling goes on until the deadline; other errors
end the wait with an ``error`` event. Exactly one event is yielded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_ftevents.core.jobstate import (
    MAX_ERROR_EVENTS,
    SUCCEEDED,
    failure_message,
    is_known,
    is_terminal,
    job_status,
    job_summary,
    log_event,
    remember_error_event,
)
from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE, TailState
from airflow_ftevents.core.polling import next_poll_delay
from airflow_ftevents.errors import FineTuneEventsError

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


class FineTuneJobTrigger(BaseTrigger):
    """Poll a job every ``poll_interval`` seconds until it is terminal or ``end_time`` has passed.

    Each wait is up to 10% shorter, at random, so triggers that woke together do not stay in step.

    :param job_id: the fine-tuning job to watch.
    :param conn_id: Airflow connection of the API (see FineTuneEventsHook).
    :param api: ``"fine_tuning"`` or ``"fine_tunes"`` (legacy).
    :param poll_interval: seconds between polls (at most; see above).
    :param end_time: unix seconds after which the trigger gives up with a ``timeout`` event.
    :param tail_state: where the sensor stopped reading events, so each event is logged once.
    :param last_event: the newest event seen before deferring (for the summary).
    :param error_events: error-level events seen before deferring (compact), for the failure message.
    :param log_events: log each new event in the task log.
    """

    def __init__(
        self,
        job_id: str,
        conn_id: str = "openai_default",
        api: str = "fine_tuning",
        poll_interval: float = 60.0,
        end_time: float | None = None,
        tail_state: Mapping[str, Any] | None = None,
        last_event: Mapping[str, Any] | None = None,
        log_events: bool = True,
        page_size: int = DEFAULT_PAGE_SIZE,
        error_events: list[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.conn_id = conn_id
        self.api = api
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.state = TailState.from_dict(tail_state)
        self.last_event = dict(last_event) if last_event else None
        self.log_events = log_events
        self.page_size = page_size
        self.error_events = [dict(e) for e in (error_events or [])][-MAX_ERROR_EVENTS:]

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
                "tail_state": self.state.to_dict(),
                "last_event": self.last_event,
                "log_events": self.log_events,
                "page_size": self.page_size,
                "error_events": self.error_events,
            },
        )

    def _summary(self, job: Mapping[str, Any]) -> dict[str, Any]:
        return job_summary(self.job_id, job, self.state.count, self.last_event)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_ftevents.async_client import AsyncFineTuneEventsClient

        job: dict[str, Any] = {}
        warned_status: set[str] = set()
        try:
            client = await AsyncFineTuneEventsClient.from_connection(self.conn_id, self.api, logger=self.log)
        except Exception as exc:  # a missing or broken connection ends the wait with a clear event
            yield TriggerEvent(
                trigger_event_payload("error", f"Cannot use connection {self.conn_id!r}: {exc}", None)
            )
            return
        async with client:
            while True:
                try:
                    job = await client.get_job(self.job_id)
                    async for event in client.read_new_events(self.job_id, self.state, self.page_size):
                        self.last_event = event
                        self.error_events = remember_error_event(self.error_events, event)
                        if self.log_events:
                            log_event(self.log, event)
                except FineTuneEventsError as exc:
                    if not exc.retryable:
                        yield TriggerEvent(trigger_event_payload("error", str(exc), self._summary(job), exc))
                        return
                    self.log.warning("Polling job %s failed, will poll again: %s", self.job_id, exc)
                else:
                    status = job_status(job)
                    if is_terminal(status):
                        yield TriggerEvent(self._final_event(status, job))
                        return
                    if not is_known(status) and status not in warned_status:
                        warned_status.add(status)
                        self.log.warning(
                            "Job %s has status %r, unknown to this provider; still waiting",
                            self.job_id,
                            status,
                        )
                delay = next_poll_delay(self.poll_interval, self.end_time, time.time())
                if delay is None:
                    yield TriggerEvent(
                        trigger_event_payload(
                            "timeout",
                            f"Fine-tuning job {self.job_id} did not finish before the deadline "
                            f"(last status {job_status(job) if job else 'unknown'!r})",
                            self._summary(job),
                        )
                    )
                    return
                await asyncio.sleep(delay)

    def _final_event(self, status: str, job: Mapping[str, Any]) -> dict:
        summary = self._summary(job)
        if status == SUCCEEDED:
            model = job.get("fine_tuned_model")
            return trigger_event_payload(
                "success",
                f"Fine-tuning job {self.job_id} succeeded" + (f": {model}" if model else ""),
                summary,
            )
        return trigger_event_payload(status, failure_message(self.job_id, job, self.error_events), summary)
