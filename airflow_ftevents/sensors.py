"""FineTuneJobSensor: gate downstream tasks on a fine-tuning job's terminal state.

Airflow glue only: following the job (its status, only its new events, the summary, the failure
message) is ``core.follow.JobFollower``'s, the follower the trigger uses too; the event log lines are
``core.jobstate``'s. The hook and the trigger are imported inside methods because DAG files import this
module every few seconds.

Where the event cursor lives between pokes, so that each event is logged once:

- ``mode="poke"``: on the operator instance (the same object pokes until the end).
- ``deferrable=True``: handed to the trigger in its kwargs (``progress``), which logs from there on and
  keeps checkpoints of it while it waits (see ``FineTuneJobTrigger``).
- ``mode="reschedule"``: the task process restarts for every poke and Airflow 3 deletes the task's XCom
  at every restart (only a resume from deferral keeps it), so XCom cannot carry it. Airflow 3.3+ keeps it
  in ``context["task_state_store"]`` (scoped to the task instance, made for this); older releases keep it
  in an Airflow Variable named ``ftevents_cursor__<dag_id>__<run_id>__<task_id>__<map_index>``. Either is
  deleted when the sensor's try ends (success, failure, skip or timeout).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_ftevents._compat import (
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    default_deferrable,
)
from airflow_ftevents.core.api import CURRENT, check_api
from airflow_ftevents.core.checkpoint import DEFAULT_CHECKPOINT_INTERVAL
from airflow_ftevents.core.follow import JobFollower, NewEvent, UnknownStatus
from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE, check_page_size
from airflow_ftevents.links import FineTuneJobLink
from airflow_ftevents.waiting import event_summary, finished_result, first_finished

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_ftevents.hooks import FineTuneEventsHook

CURSOR_KEY = "ftevents_cursor"
# How long Airflow itself waits for the trigger beyond the trigger's own deadline: a backstop for a
# deployment without a running triggerer, never reached when the trigger works.
DEFER_GRACE_SECONDS = 300.0


def wall_clock() -> float:
    """Unix seconds: the trigger's deadline is wall-clock so it survives a triggerer restart."""
    return time.time()


class _CursorStore:
    """Keeps the progress of a reschedule-mode sensor where the next poke's process finds it."""

    def __init__(self, context: Context) -> None:
        self._store = context.get("task_state_store")
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        map_index = -1 if map_index is None else map_index
        self._variable = f"{CURSOR_KEY}__{ti.dag_id}__{ti.run_id}__{ti.task_id}__{map_index}"

    @property
    def where(self) -> str:
        if self._store is not None:
            return f"task_state_store key {CURSOR_KEY!r}"
        return f"Variable {self._variable!r}"

    def load(self) -> Any:
        if self._store is not None:
            return self._store.get(CURSOR_KEY)
        from airflow.sdk import Variable

        return Variable.get(self._variable, default=None, deserialize_json=True)

    def save(self, value: dict[str, Any]) -> None:
        if self._store is not None:
            self._store.set(CURSOR_KEY, value)
            return
        from airflow.sdk import Variable

        Variable.set(
            self._variable,
            value,
            description="airflow-ftevents: event cursor of a rescheduled FineTuneJobSensor (auto-deleted)",
            serialize_json=True,
        )

    def delete(self) -> None:
        if self._store is not None:
            self._store.delete(CURSOR_KEY)
            return
        from airflow.sdk import Variable

        Variable.delete(self._variable)


class FineTuneJobSensor(BaseSensorOperator):
    """Wait until a fine-tuning job is finished; succeed with a small summary when it succeeded.

    A failed or cancelled job fails the task at once without retries (it will not un-fail), or skips it
    with ``soft_fail=True``. API errors that outlast the hook's retries are ordinary failures, so the
    task's ``retries`` apply. Each poke logs only the events that are new since the previous one.

    :param job_id: the job to wait for (templated, typically an XCom of the task that created it).
    :param conn_id: Airflow connection of the API (see FineTuneEventsHook).
    :param api: ``"fine_tuning"`` (current API) or ``"fine_tunes"`` (legacy API).
    :param deferrable: wait in the triggerer instead of a worker slot; the job is checked once first,
        so a finished job never defers. Default: ``[operators] default_deferrable``.
    :param log_events: log each new event (metrics as one compact line, errors at error level).
    :param page_size: events per page when reading new events.
    :param checkpoint_interval: when deferred, seconds between two checkpoints of the trigger's progress
        at most (0: none); after a triggerer restart, at most this long a stretch of events is logged again.

    ``poke_interval``, ``timeout``, ``mode``, ``soft_fail`` and the rest go to BaseSensorOperator; the
    trigger polls every ``poke_interval`` seconds until the wall-clock deadline ``timeout`` sets.
    Returns (XCom ``return_value``): ``job_id``, ``status``, ``fine_tuned_model``, ``trained_tokens``,
    ``finished_at``, ``event_count`` (all events of the job seen), ``last_event``.
    """

    template_fields: Sequence[str] = ("job_id", "conn_id")
    operator_extra_links = (FineTuneJobLink(),)
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        job_id: str,
        conn_id: str = "openai_default",
        api: str = CURRENT,
        deferrable: bool = default_deferrable(),
        log_events: bool = True,
        page_size: int = DEFAULT_PAGE_SIZE,
        checkpoint_interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.conn_id = conn_id
        self.api = check_api(api)
        self.deferrable = deferrable
        self.log_events = log_events
        self.page_size = check_page_size(page_size)
        self.checkpoint_interval = checkpoint_interval
        self._follower: JobFollower | None = None

    @cached_property
    def hook(self) -> FineTuneEventsHook:
        from airflow_ftevents.hooks import FineTuneEventsHook

        return FineTuneEventsHook(conn_id=self.conn_id, api=self.api)

    def _close_hook(self) -> None:
        hook = self.__dict__.pop("hook", None)
        if hook is not None:
            hook.close()

    # -- execution ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        FineTuneJobLink.persist(context, self.job_id)
        try:
            if self.deferrable:
                return self._check_then_defer(context)
            if not self.reschedule:
                return self._announce(context, super().execute(context))
            try:
                result = super().execute(context)
            except AirflowRescheduleException:
                raise
            except BaseException:
                self._forget(context)
                raise
            self._forget(context)
            return self._announce(context, result)
        finally:
            self._close_hook()

    def poke(self, context: Context) -> PokeReturnValue:
        """Read the job, then its new events (the read after a terminal status holds the last ones)."""
        follower = self._load(context)
        outcomes = self.hook.poll_job(follower)
        self._save(context, follower, any(isinstance(o, (NewEvent, UnknownStatus)) for o in outcomes))
        finished = first_finished(self.log, self.job_id, outcomes, self.log_events)
        if finished is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=finished_result(finished, self.soft_fail))

    def _check_then_defer(self, context: Context) -> Any:
        deadline = wall_clock() + self.timeout
        try:
            result = self.poke(context)
        except (AirflowSkipException, AirflowRescheduleException):
            raise
        except Exception as exc:
            if self.never_fail:
                raise AirflowSkipException("Skipping due to never_fail is set to True.") from exc
            raise
        if result.is_done:
            self.log.info("Job %s already finished; not deferring", self.job_id)
            return self._announce(context, result.xcom_value)
        from airflow_ftevents.waiting import defer_wait

        follower = self._follower or JobFollower(self.job_id, self.api, self.page_size)
        self._close_hook()  # the worker slot is given back; do not keep its sockets open
        defer_wait(
            self,
            context,
            follower,
            conn_id=self.conn_id,
            poll_interval=self.poke_interval,
            end_time=deadline,
            timeout=timedelta(seconds=max(deadline - wall_clock(), 0.0) + DEFER_GRACE_SECONDS),
            log_events=self.log_events,
            checkpoint_interval=self.checkpoint_interval,
        )

    def execute_complete(self, context: Context, event: Any = None, **kwargs: Any) -> Any:
        """Turn the trigger's one event into the task's outcome; an unknown payload fails loudly.

        ``**kwargs``: a real triggerer passes the ``defer(kwargs=...)`` along (there are none today).
        """
        from airflow_ftevents.checkpoints import delete_checkpoint

        delete_checkpoint(context)
        try:
            return self._announce(context, event_summary(event, self.soft_fail, self.log, self._timed_out))
        finally:
            self._close_hook()

    def _announce(self, context: Context, summary: Any) -> Any:
        """With ``outlets``, each outlet Asset's event carries the new model (see ``assets.py``)."""
        if self.outlets and isinstance(summary, dict) and summary.get("status") == "succeeded":
            from airflow_ftevents.waiting import announce_success

            announce_success(self.hook, context, self.outlets, summary, self.api)
        return summary

    def _timed_out(self, message: str) -> BaseException:
        return AirflowSkipException(message) if self.soft_fail else AirflowSensorTimeout(message)

    # -- where the progress lives between pokes ----------------------------------------------------

    def _persists_externally(self) -> bool:
        return self.reschedule and not self.deferrable

    def _load(self, context: Context) -> JobFollower:
        if self._follower is not None and self._follower.job_id == self.job_id:
            return self._follower
        follower = JobFollower(self.job_id, self.api, self.page_size)
        if self._persists_externally():
            store = _CursorStore(context)
            follower = JobFollower.from_dict(store.load(), self.job_id, self.api, self.page_size)
            if follower.event_count:
                self.log.info(
                    "Resuming after %d events already logged (from %s)", follower.event_count, store.where
                )
        self._follower = follower
        return follower

    def _save(self, context: Context, follower: JobFollower, changed: bool) -> None:
        self._follower = follower
        if self._persists_externally() and changed:
            _CursorStore(context).save(follower.to_dict())

    def _forget(self, context: Context) -> None:
        self._follower = None
        try:
            _CursorStore(context).delete()
        except Exception as exc:  # cleanup must never hide the sensor's own outcome
            self.log.warning("Could not delete the stored event cursor: %s", exc)
