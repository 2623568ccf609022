"""FineTuneJobOperator: start a fine-tune, wait for it, never start (and bill) it twice.

Airflow glue only. What makes it safe lives in the core and the hook:

- ``core.jobtag``: each job is tagged with its task instance (a metadata pair that does not change
  between tries); before creating, the operator lists the jobs with that tag and re-attaches to one
  that is neither failed nor cancelled. A create request whose outcome is unknown (a timeout, a reset
  after it was sent) is resolved the same way, before anything is retried.
- ``core.follow`` + ``waiting``: the wait is the sensor's, poke or deferrable, with the same log lines
  and failure rules.
- ``cancel_on_kill``: a user's kill (mark failed or success, clear), the operator's ``timeout`` or its
  ``execution_timeout`` cancels the job; a triggerer restart does not (see ``FineTuneJobTrigger``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_ftevents._compat import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    default_deferrable,
)
from airflow_ftevents.core.api import CURRENT, JOB_CREATE_FIELDS
from airflow_ftevents.core.checkpoint import DEFAULT_CHECKPOINT_INTERVAL
from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE, check_page_size
from airflow_ftevents.links import FineTuneJobLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_ftevents.core.follow import JobFollower
    from airflow_ftevents.hooks import FineTuneEventsHook

# How often, and how far apart, the jobs list is read again after a create request of unknown outcome:
# a server that timed out may still be creating the job.
UNKNOWN_OUTCOME_LOOKS = (0.0, 2.0, 5.0)
DEFER_GRACE_SECONDS = 300.0


def _seconds(value: float | dt.timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{name} must be a number of seconds > 0 or a timedelta, got {value!r}")
    return float(seconds)


class FineTuneJobOperator(BaseOperator):
    """Start a fine-tuning job (or re-attach to the one this task instance started) and wait for it.

    :param model: the base model (templated).
    :param training_file: the uploaded training file id (templated).
    :param validation_file: the uploaded validation file id (templated).
    :param method: the fine-tuning method object, e.g. ``{"type": "supervised", "supervised": {...}}``
        (templated).
    :param hyperparameters: legacy hyperparameters object (templated).
    :param suffix: up to 64 characters added to the fine-tuned model's name (templated).
    :param seed: the job's seed.
    :param metadata: up to 15 pairs of your own (templated); the operator adds
        ``airflow_task_instance`` = ``dag_id/run_id/task_id/map_index``.
    :param integrations: e.g. Weights & Biases, as the API takes them.
    :param conn_id: Airflow connection of the API (see ``FineTuneEventsHook``).
    :param wait_for_completion: wait until the job is finished; ``False`` returns the job id at once.
    :param deferrable: wait in the triggerer instead of a worker slot. Default:
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between two polls of the job.
    :param timeout: how long to wait (seconds or timedelta), ``None`` for no limit; when it passes the
        job is cancelled (with ``cancel_on_kill``) and the task fails.
    :param cancel_on_kill: cancel the job when the task is killed or times out.
    :param log_events: log each new event of the job.
    :param soft_fail: skip instead of failing when the job failed or was cancelled.
    :param page_size: events per page when reading new events.
    :param checkpoint_interval: when deferred, seconds between two checkpoints of the wait at most.

    Returns (XCom ``return_value``), once the job succeeded: the sensor's summary (``job_id``,
    ``status``, ``fine_tuned_model``, ``trained_tokens``, ``finished_at``, ``event_count``,
    ``last_event``) plus ``model``, ``result_files`` and ``checkpoints`` (each with
    ``fine_tuned_model_checkpoint``, ``step_number``, ``metrics``). The job id is also pushed at once
    as XCom ``job_id``. Each outlet Asset's event carries ``job_id``, ``status``, ``fine_tuned_model``,
    ``model``, ``trained_tokens``, ``finished_at`` and ``best_checkpoint`` as its ``extra``.
    """

    template_fields: Sequence[str] = (
        "model",
        "training_file",
        "validation_file",
        "method",
        "hyperparameters",
        "suffix",
        "metadata",
        "conn_id",
    )
    template_fields_renderers = {"method": "json", "hyperparameters": "json", "metadata": "json"}
    operator_extra_links = (FineTuneJobLink(),)
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        model: str,
        training_file: str,
        validation_file: str | None = None,
        method: dict[str, Any] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        metadata: dict[str, str] | None = None,
        integrations: list[dict[str, Any]] | None = None,
        conn_id: str = "openai_default",
        wait_for_completion: bool = True,
        deferrable: bool = default_deferrable(),
        poll_interval: float = 60,
        timeout: float | dt.timedelta | None = None,
        cancel_on_kill: bool = True,
        log_events: bool = True,
        soft_fail: bool = False,
        page_size: int = DEFAULT_PAGE_SIZE,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or poll_interval < 0
        ):
            raise ValueError(f"poll_interval must be a number of seconds >= 0, got {poll_interval!r}")
        self.model = model
        self.training_file = training_file
        self.validation_file = validation_file
        self.method = method
        self.hyperparameters = hyperparameters
        self.suffix = suffix
        self.seed = seed
        self.metadata = metadata
        self.integrations = integrations
        self.conn_id = conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.timeout = _seconds(timeout, "timeout")
        self.cancel_on_kill = cancel_on_kill
        self.log_events = log_events
        self.soft_fail = soft_fail
        self.page_size = check_page_size(page_size)
        self.checkpoint_interval = checkpoint_interval
        self.job_id: str | None = None

    @cached_property
    def hook(self) -> FineTuneEventsHook:
        from airflow_ftevents.hooks import FineTuneEventsHook

        return FineTuneEventsHook(conn_id=self.conn_id)

    def _close_hook(self) -> None:
        hook = self.__dict__.pop("hook", None)
        if hook is not None:
            hook.close()

    # -- start, or re-attach -----------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        from airflow_ftevents.core.jobtag import tagged_metadata, task_instance_tag

        ti = context["ti"]
        tag = task_instance_tag(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        try:
            metadata = tagged_metadata(self.metadata, tag)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None
        started = time.time()
        try:
            job = self._find_job(tag)
            if job is not None:
                self.log.info(
                    "Re-attaching to fine-tuning job %s (%s), started by an earlier try of this task",
                    job["id"],
                    job.get("status"),
                )
            else:
                job = self._create(metadata, tag)
            self.job_id = job["id"]
            ti.xcom_push(key="job_id", value=self.job_id)
            FineTuneJobLink.persist(context, self.job_id)
            if not self.wait_for_completion:
                return self.job_id
            return self._wait(context, started)
        finally:
            self._close_hook()

    def _find_job(self, tag: str) -> dict[str, Any] | None:
        from airflow_ftevents.core.jobtag import TASK_INSTANCE_KEY, reattachable_job

        return reattachable_job(self.hook.iter_jobs(metadata={TASK_INSTANCE_KEY: tag}), tag)

    def _create(self, metadata: dict[str, str], tag: str) -> dict[str, Any]:
        """One POST; if its outcome is unknown, the jobs list says whether the job exists."""
        from airflow_ftevents.errors import FineTuneEventsConnectionError

        try:
            fields = {name: getattr(self, name) for name in JOB_CREATE_FIELDS}
            job = self.hook.create_job(self.model, self.training_file, **{**fields, "metadata": metadata})
        except FineTuneEventsConnectionError as exc:
            self.log.warning(
                "The create request's outcome is unknown (%s); looking for the job by its tag %r", exc, tag
            )
            for delay in UNKNOWN_OUTCOME_LOOKS:
                time.sleep(delay)
                job = self._find_job(tag)
                if job is not None:
                    self.log.info("The job was created after all: %s", job["id"])
                    return job
            raise AirflowException(
                f"Creating the fine-tuning job failed and no job of this task instance exists ({exc}); "
                "a retry of the task looks for it again before creating one"
            ) from exc
        self.log.info("Created fine-tuning job %s (%s)", job["id"], job.get("status"))
        return job

    # -- wait ----------------------------------------------------------------------------------------

    def _deadline(self, started: float) -> float | None:
        """The wait's wall-clock end: ``timeout``, or ``execution_timeout`` if that comes first, so a
        deferred wait ends in the trigger (which lets this task cancel the job) rather than in Airflow."""
        ends = []
        if self.timeout is not None:
            ends.append(started + self.timeout)
        if self.execution_timeout is not None:
            ends.append(started + self.execution_timeout.total_seconds())
        return min(ends) if ends else None

    def _wait(self, context: Context, started: float) -> Any:
        from airflow_ftevents.core.follow import JobFollower
        from airflow_ftevents.waiting import finished_result, first_finished

        follower = JobFollower(self.job_id, page_size=self.page_size)
        deadline = self._deadline(started)
        try:
            if self.deferrable:
                finished = first_finished(
                    self.log, self.job_id, self.hook.poll_job(follower), self.log_events
                )
                if finished is None:
                    self._defer(context, follower, deadline)
            else:
                outcomes = self.hook.follow_job(follower, self.poll_interval, deadline, tolerate_errors=True)
                finished = first_finished(self.log, self.job_id, outcomes, self.log_events)
        except AirflowTaskTimeout:
            self._cancel("its execution_timeout passed")
            raise
        if finished is None:
            raise self._timed_out(
                f"Fine-tuning job {self.job_id} did not finish before the deadline (timeout={self.timeout}, "
                f"execution_timeout={self.execution_timeout})"
            )
        return self._succeeded(context, finished_result(finished, self.soft_fail))

    def _defer(self, context: Context, follower: JobFollower, deadline: float | None) -> None:
        from airflow_ftevents.waiting import defer_wait

        self._close_hook()  # the worker slot is given back; do not keep its sockets open
        timeout = None
        if deadline is not None:
            timeout = dt.timedelta(seconds=max(deadline - time.time(), 0.0) + DEFER_GRACE_SECONDS)
        defer_wait(
            self,
            context,
            follower,
            conn_id=self.conn_id,
            poll_interval=self.poll_interval,
            end_time=deadline,
            timeout=timeout,
            log_events=self.log_events,
            checkpoint_interval=self.checkpoint_interval,
            cancel_on_kill=self.cancel_on_kill,
        )

    def execute_complete(self, context: Context, event: Any = None, **kwargs: Any) -> Any:
        """Resume after the trigger: the job's result, or the failure it ended in."""
        from airflow_ftevents.checkpoints import delete_checkpoint
        from airflow_ftevents.waiting import event_summary

        delete_checkpoint(context)
        try:
            if isinstance(event, dict) and isinstance(event.get("job"), dict):
                self.job_id = event["job"].get("job_id") or self.job_id
            summary = event_summary(event, self.soft_fail, self.log, self._timed_out)
            return self._succeeded(context, summary)
        finally:
            self._close_hook()

    def _succeeded(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        from airflow_ftevents.waiting import announce_success

        return announce_success(self.hook, context, self.outlets, summary, CURRENT)

    # -- cancel ---------------------------------------------------------------------------------------

    def _timed_out(self, message: str) -> BaseException:
        self._cancel("the operator's timeout passed")
        return AirflowException(message)

    def _cancel(self, why: str) -> None:
        if not self.cancel_on_kill or not self.job_id:
            return
        try:
            job = self.hook.cancel_job(self.job_id)
        except Exception as exc:  # the task's own outcome must not be hidden by the cleanup
            self.log.error("Could not cancel fine-tuning job %s (%s): %s", self.job_id, why, exc)
            return
        self.log.warning(
            "Cancelled fine-tuning job %s because %s; it is now %s", self.job_id, why, job["status"]
        )

    def on_kill(self) -> None:
        """The task was killed while it ran (marked failed or success, or cleared): cancel the job."""
        self._cancel("the task was killed")
