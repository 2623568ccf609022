"""FineTuneEventsExportOperator: every event of a fine-tuning job to XCom or to object storage.

Only Airflow glue lives here (templating, waiting, deferral, XCom, the extra link). Reading the events
is the hook's job (:meth:`FineTuneEventsHook.iter_event_blocks`), writing them is :mod:`.export`'s.
DAG files import this module every few seconds, so the hook, the trigger and fsspec are imported only
when a task runs.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_ftevents.core.api import CURRENT, check_api
from airflow_ftevents.core.paging import check_page_size
from airflow_ftevents.job_operator import FineTuneJobOperator
from airflow_ftevents.links import FineTuneJobLink

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow < 3.2
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]

try:
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow < 3.2
    from airflow.configuration import conf  # type: ignore[no-redef]

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_ftevents.core.window import EventWindow
    from airflow_ftevents.export import Destination
    from airflow_ftevents.hooks import FineTuneEventsHook

__all__ = ["FineTuneEventsExportOperator", "FineTuneJobOperator"]

DEFAULT_WAIT_TIMEOUT = 7 * 24 * 60 * 60  # seconds, like a sensor's default


def _seconds(value: float | dt.timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise ValueError(f"{name} must be a number of seconds >= 0 or a timedelta, got {value!r}")
    return float(seconds)


class FineTuneEventsExportOperator(BaseOperator):
    """Export the events of a fine-tuning job, oldest first, to XCom or to a JSON Lines file.

    :param job_id: the fine-tuning job (templated).
    :param conn_id: Airflow connection of the API (see ``FineTuneEventsHook``).
    :param api: ``"fine_tuning"`` (current API) or ``"fine_tunes"`` (legacy API).
    :param destination: ``None``: the events are the task's XCom return value (at most
        ``max_xcom_events``). Otherwise a URL or ``ObjectStoragePath`` (templated):
        ``file:///data/ft/job.jsonl``, ``s3://aws_conn_id@bucket/prefix/job.jsonl``; a URL ending in
        ``/`` names a folder, and the file is ``<job_id>.jsonl`` inside it. The file is published whole
        or not at all, and the task returns a manifest (``uri``, ``job_id``, ``count``,
        ``first_event_id``, ``last_event_id``, ``first_created_at``, ``last_created_at``, ``status``,
        ``bytes``).
    :param created_after: keep events with ``created_at >= created_after`` (templated; datetime,
        ISO-8601 string or unix seconds; naive values are UTC).
    :param created_before: keep events with ``created_at < created_before`` (templated), so
        ``{{ data_interval_start }}`` / ``{{ data_interval_end }}`` partition a job's events exactly.
    :param wait_for_completion: wait until the job is finished (succeeded, failed or cancelled) first.
    :param poll_interval: seconds between two checks of the job while waiting.
    :param timeout: how long to wait for the job (seconds or timedelta); then the task fails.
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param fail_on_job_failure: after exporting the events of a failed or cancelled job, fail the task
        (the file and its manifest are written first). By default the task succeeds and the manifest's
        ``status`` says how the job ended.
    :param max_xcom_events: without ``destination``, more events than this fail the task.
    :param page_size: events per API request.
    :param metrics_csv: also write ``<name>.metrics.csv`` next to the JSON Lines file: one row per
        metrics event (step, created_at, train_loss, valid_loss, ... the union of the metrics keys).
    :param loss_plot: also write ``<name>.loss.png``, the training and validation loss by step
        (needs matplotlib: ``pip install 'airflow-ftevents[plot]'``).
    """

    template_fields: Sequence[str] = ("job_id", "conn_id", "destination", "created_after", "created_before")
    operator_extra_links = (FineTuneJobLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        job_id: str,
        conn_id: str = "openai_default",
        api: str = CURRENT,
        destination: Any = None,
        created_after: Any = None,
        created_before: Any = None,
        wait_for_completion: bool = False,
        poll_interval: float = 60.0,
        timeout: float | dt.timedelta = DEFAULT_WAIT_TIMEOUT,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        fail_on_job_failure: bool = False,
        max_xcom_events: int = 10_000,
        page_size: int = 100,
        metrics_csv: bool = False,
        loss_plot: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_api(api)
        check_page_size(page_size)
        if isinstance(max_xcom_events, bool) or not isinstance(max_xcom_events, int) or max_xcom_events < 0:
            raise ValueError(f"max_xcom_events must be a whole number >= 0, got {max_xcom_events!r}")
        if destination is None and (metrics_csv or loss_plot):
            raise ValueError("metrics_csv and loss_plot are written next to the export: set `destination`")
        self.job_id = job_id
        self.conn_id = conn_id
        self.api = api
        self.destination = destination
        self.created_after = created_after
        self.created_before = created_before
        self.wait_for_completion = wait_for_completion
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.timeout = _seconds(timeout, "timeout")
        self.deferrable = deferrable
        self.fail_on_job_failure = fail_on_job_failure
        self.max_xcom_events = max_xcom_events
        self.page_size = page_size
        self.metrics_csv = metrics_csv
        self.loss_plot = loss_plot

    # -- helpers -----------------------------------------------------------------------------------

    def _hook(self) -> FineTuneEventsHook:
        from airflow_ftevents.hooks import FineTuneEventsHook

        return FineTuneEventsHook(conn_id=self.conn_id, api=self.api)

    def _check_rendered(self) -> EventWindow:
        """Fail (without retries: they cannot help) on values that only rendering revealed."""
        from airflow_ftevents.core.window import EventWindow

        if not isinstance(self.job_id, str) or not self.job_id.strip():
            raise AirflowFailException(f"job_id must be a non-empty string, got {self.job_id!r}")
        try:
            return EventWindow.from_bounds(self.created_after, self.created_before)
        except ValueError as exc:
            raise AirflowFailException(str(exc)) from None

    def _destination(self) -> Destination:
        from airflow_ftevents.export import ExportDestinationError, at_path, resolve_destination

        dest = self.destination
        try:
            if isinstance(dest, str):
                from airflow.sdk.io import attach

                return resolve_destination(dest, self.job_id, lambda p, c: attach(p, conn_id=c).fs)
            if hasattr(dest, "fs") and hasattr(dest, "path"):  # an ObjectStoragePath
                folder = str(dest).endswith("/") or bool(dest.is_dir())
                protocol = getattr(dest, "protocol", "") or "file"
                conn_id = getattr(dest, "conn_id", None)
                return at_path(dest.fs, dest.path, protocol, conn_id, folder, self.job_id)
        except ValueError as exc:
            raise AirflowFailException(f"destination: {exc}") from None
        except ExportDestinationError as exc:  # a filesystem missing on the worker: no retry installs it
            raise AirflowFailException(str(exc)) from exc
        raise AirflowFailException(
            f"destination must be a URL string or an ObjectStoragePath, got {type(dest).__name__} {dest!r}"
        )

    # -- execution ---------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        self._check_rendered()
        FineTuneJobLink.persist(context, self.job_id)
        if self.loss_plot:
            from airflow_ftevents.export import require_matplotlib

            try:
                require_matplotlib()
            except RuntimeError as exc:
                raise AirflowFailException(str(exc)) from None
        if self.wait_for_completion:
            self._wait(context, time.time() + self.timeout)
        return self._export()

    def _wait(self, context: Context, deadline: float) -> None:
        """Return once the job is finished; defer to the triggerer if asked to and it is not yet.

        The status alone is followed (the export reads every event afterwards), with the same follower
        and the same polling rules as the sensor.
        """
        from airflow_ftevents.core.follow import (
            Finished,
            JobFollower,
            Polled,
            PollFailed,
            TimedOut,
            UnknownStatus,
        )
        from airflow_ftevents.core.jobstate import is_terminal

        hook = self._hook()
        follower = JobFollower(self.job_id, self.api, self.page_size, read_events=False)
        reported: set[str] = set()
        try:
            for outcome in hook.follow_job(follower, self.poll_interval, deadline, tolerate_errors=True):
                if isinstance(outcome, Finished):
                    self.log.info("Job %s is %s", self.job_id, outcome.status)
                    return
                if isinstance(outcome, UnknownStatus):
                    self.log.warning("Status %r is unknown to this provider; still waiting", outcome.status)
                elif isinstance(outcome, PollFailed):
                    self.log.warning(
                        "Checking job %s failed, will check again: %s", self.job_id, outcome.error
                    )
                elif isinstance(outcome, Polled):
                    if outcome.status not in reported:
                        reported.add(outcome.status)
                        self.log.info("Job %s is %s; waiting for it to finish", self.job_id, outcome.status)
                    if self.deferrable and not is_terminal(outcome.status):
                        self._defer(context, hook, deadline)
                elif isinstance(outcome, TimedOut):
                    raise AirflowException(
                        f"Fine-tuning job {self.job_id} did not finish within timeout={self.timeout:g} s "
                        f"(last status {outcome.summary['status']!r}); nothing was exported"
                    )
        finally:
            hook.close()

    def _defer(self, context: Context, hook: FineTuneEventsHook, deadline: float) -> None:
        """Hand the wait to FineTuneJobTrigger, starting its event log at the newest event already there.

        Without that start, the trigger's first poll would read (and log) the job's whole history.
        """
        from airflow_ftevents.core.follow import JobFollower
        from airflow_ftevents.waiting import defer_wait

        follower = JobFollower(self.job_id, self.api, self.page_size)
        list(hook.run(follower.start_at_newest()))
        defer_wait(
            self, context, follower, conn_id=self.conn_id, poll_interval=self.poll_interval, end_time=deadline
        )

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: export once the job finished, whatever its outcome."""
        from airflow_ftevents.checkpoints import delete_checkpoint
        from airflow_ftevents.triggers import error_from_event, validate_trigger_event

        delete_checkpoint(context)
        event = validate_trigger_event(event)
        status = event["status"]
        if status == "error":  # the trigger's own exception, with its status code and request id
            raise error_from_event(event)
        if status == "timeout":
            raise AirflowException(f"{event['message']}; nothing was exported")
        if status != "success":
            self.log.warning("%s; exporting its events anyway", event["message"])
        return self._export()

    def _export(self) -> Any:
        from airflow_ftevents.core.jobstate import failure_message, is_terminal, job_status
        from airflow_ftevents.export import (
            ExportDestinationError,
            XComLimitError,
            collect_events,
            export_events,
        )

        window = self._check_rendered()
        dest = None if self.destination is None else self._destination()
        hook = self._hook()
        try:
            # The status is read before the events: when it is terminal, the export holds every event.
            job = hook.get_job(self.job_id)
            status = job_status(job)
            blocks = hook.iter_event_blocks(self.job_id, self.page_size, window)
            if dest is None:
                try:
                    events = collect_events(blocks, self.max_xcom_events, self.job_id)
                except XComLimitError as exc:
                    raise AirflowFailException(str(exc)) from None
                self.log.info("Returning %d events of job %s (%s) as XCom", len(events), self.job_id, status)
                return events
            self.log.info("Exporting the events of job %s (%s) to %s", self.job_id, status, dest.uri)
            try:
                manifest = export_events(
                    blocks,
                    dest,
                    job_id=self.job_id,
                    status=status,
                    metrics_csv=self.metrics_csv,
                    loss_plot=self.loss_plot,
                    log=self.log,
                )
            except ExportDestinationError as exc:  # a wrong or forbidden path: retries cannot help
                if exc.retryable:
                    raise
                raise AirflowFailException(str(exc)) from exc
        finally:
            hook.close()
        if self.fail_on_job_failure and is_terminal(status) and status != "succeeded":
            raise AirflowException(f"{failure_message(self.job_id, job)}; its events were exported first")
        return manifest
