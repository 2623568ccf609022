"""Waiting for a job, as the Airflow tasks of this package do it: one poll, the log lines, the outcome.

``FineTuneJobSensor`` and ``FineTuneJobOperator`` wait the same way, so what a poll logs and how a
finished job, a trigger's event or a failure turn into the task's result is written here once. The
following itself is the core's :class:`~airflow_ftevents.core.follow.JobFollower`; this module only maps
its outcomes onto Airflow (log lines, ``AirflowFailException``, ``soft_fail``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from airflow_ftevents._compat import AirflowFailException, AirflowSkipException
from airflow_ftevents.core.follow import Finished, NewEvent, Outcome, Polled, PollFailed, UnknownStatus
from airflow_ftevents.core.jobstate import log_event


def log_outcome(log: logging.Logger | Any, job_id: str, outcome: Outcome, log_events: bool) -> None:
    """The task log line of one outcome, the same for every waiting task and the trigger."""
    if isinstance(outcome, NewEvent):
        if log_events:
            log_event(log, outcome.event)
    elif isinstance(outcome, UnknownStatus):
        log.warning("Job %s has status %r, unknown to this provider; still waiting", job_id, outcome.status)
    elif isinstance(outcome, PollFailed):
        log.warning("Polling job %s failed, will poll again: %s", job_id, outcome.error)
    elif isinstance(outcome, Polled):
        log.info(
            "Job %s is %s: %d new events, %d in all",
            job_id,
            outcome.status,
            outcome.new_events,
            outcome.event_count,
        )


def first_finished(
    log: logging.Logger | Any, job_id: str, outcomes: Iterable[Outcome], log_events: bool
) -> Finished | None:
    """Log every outcome of one poll (or of a whole wait); the job's end if it ended."""
    for outcome in outcomes:
        log_outcome(log, job_id, outcome, log_events)
        if isinstance(outcome, Finished):
            return outcome
    return None


def job_failed(message: str, soft_fail: bool) -> Exception:
    """A failed or cancelled job: no retry helps, so fail at once (or skip with ``soft_fail``)."""
    return AirflowSkipException(message) if soft_fail else AirflowFailException(message)


def finished_result(finished: Finished, soft_fail: bool) -> dict[str, Any]:
    """The summary of a succeeded job; raises for a failed or cancelled one."""
    if finished.succeeded:
        return finished.summary
    raise job_failed(finished.message, soft_fail)


def event_summary(
    event: Any, soft_fail: bool, log: logging.Logger | Any, on_timeout: Callable[[str], BaseException]
) -> dict[str, Any]:
    """Turn the trigger's one event into the job's summary, or raise what the task must raise.

    A ``timeout`` raises what ``on_timeout(message)`` returns: the sensor and the job operator answer
    it differently. An ``error`` raises the trigger's own exception again (class, status code, code,
    request id): an ordinary failure that retries may cure.
    """
    from airflow_ftevents.triggers import error_from_event, validate_trigger_event

    event = validate_trigger_event(event)
    status, message = event["status"], event["message"]
    if status == "success":
        if not isinstance(event.get("job"), dict):
            raise ValueError(f"Trigger event 'success' without a job summary: {event!r}")
        log.info("%s", message)
        return event["job"]
    if status in ("failed", "cancelled"):
        raise job_failed(message, soft_fail)
    if status == "timeout":
        raise on_timeout(message)
    raise error_from_event(event)


def announce_success(
    hook: Any, context: Any, outlets: Any, summary: dict[str, Any], api: str
) -> dict[str, Any]:
    """The job operator's result (summary plus model, result files, checkpoints), with each outlet
    Asset's event carrying the new model; two more reads, only for a job that succeeded."""
    from airflow_ftevents.assets import attach_asset_extra
    from airflow_ftevents.core.api import LEGACY
    from airflow_ftevents.core.jobtag import asset_extra, job_result

    job_id = summary["job_id"]
    job = hook.get_job(job_id)
    checkpoints = [] if api == LEGACY else list(hook.iter_checkpoints(job_id))
    result = job_result(summary, job, checkpoints)
    if attach_asset_extra(context, outlets, asset_extra(result, checkpoints)):
        hook.log.info("Job %s: the outlet Asset events carry %s", job_id, result.get("fine_tuned_model"))
    return result


def defer_wait(
    task: Any,
    context: Any,
    follower: Any,
    *,
    conn_id: str,
    poll_interval: float,
    end_time: float | None,
    timeout: Any = None,
    **trigger_kwargs: Any,
) -> None:
    """Hand the wait to ``FineTuneJobTrigger`` from where ``follower`` stands; resumes in
    ``task.execute_complete``. The follower's state is stored as the trigger's first checkpoint."""
    from airflow_ftevents.checkpoints import seed_checkpoint
    from airflow_ftevents.triggers import FineTuneJobTrigger

    progress = follower.to_dict()
    seed_checkpoint(context, progress)
    task.defer(
        trigger=FineTuneJobTrigger(
            job_id=follower.job_id,
            conn_id=conn_id,
            api=follower.api,
            poll_interval=poll_interval,
            end_time=end_time,
            progress=progress,
            page_size=follower.page_size,
            **trigger_kwargs,
        ),
        method_name="execute_complete",
        timeout=timeout,
    )
