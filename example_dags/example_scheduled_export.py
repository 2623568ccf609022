"""Every hour, export the events each job logged during that hour (dynamic task mapping).

The half-open window ``data_interval_start <= created_at < data_interval_end`` makes consecutive runs
partition each job's events exactly: concatenating the hourly files gives the full history, with no
event twice and none lost, and a re-run of one interval rewrites the same bytes.

A manual run without a logical date (``airflow dags trigger example_scheduled_export``, the UI's
trigger button) has no data interval; it exports the last full hour before the run, so it writes (or
rewrites, with the same bytes) the same file the scheduled run of that hour does. To export another
hour, trigger with a logical date: the timetable then gives the run that date's interval.

Environment (read where the DAG is parsed, i.e. by the dag-processor and the workers):

- ``FTEVENTS_JOB_IDS``: comma-separated job ids, default ``ftjob-demo`` (the job
  ``python -m airflow_ftevents.simulator`` holds when started without ``--job``).
- ``FTEVENTS_EXPORT_ROOT``: where the files go, default ``file:///tmp/ftevents-exports``.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_ftevents.operators import FineTuneEventsExportOperator

EXPORT_ROOT = os.environ.get("FTEVENTS_EXPORT_ROOT", "file:///tmp/ftevents-exports")
JOB_IDS = [j.strip() for j in os.environ.get("FTEVENTS_JOB_IDS", "ftjob-demo").split(",") if j.strip()]


def hour_window(
    data_interval_start: dt.datetime | None, data_interval_end: dt.datetime | None, run_after: dt.datetime
) -> dict[str, str]:
    """The run's data interval, or the last full hour before ``run_after`` when it has none."""
    if data_interval_start is not None and data_interval_end is not None:
        start, end = data_interval_start, data_interval_end
    else:
        end = run_after.astimezone(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
        start = end - dt.timedelta(hours=1)
    start, end = start.astimezone(dt.timezone.utc), end.astimezone(dt.timezone.utc)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "folder": f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}",
    }


with DAG(
    dag_id="example_scheduled_export",
    # A data-interval timetable: each run covers [data_interval_start, data_interval_end) of one hour.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "fine-tuning"],
) as dag:

    @task
    def export_window(
        dag_run: Any = None,
        data_interval_start: dt.datetime | None = None,
        data_interval_end: dt.datetime | None = None,
    ) -> dict[str, str]:
        """Which hour this run exports (manual runs without a logical date have no data interval)."""
        window = hour_window(data_interval_start, data_interval_end, dag_run.run_after)
        print(f"Exporting events created in [{window['start']}, {window['end']})")
        return window

    window = export_window()

    export = FineTuneEventsExportOperator.partial(
        task_id="export_interval",
        conn_id="openai_default",
        destination=EXPORT_ROOT + "/hourly/{{ ti.xcom_pull(task_ids='export_window')['folder'] }}/",
        created_after="{{ ti.xcom_pull(task_ids='export_window')['start'] }}",
        created_before="{{ ti.xcom_pull(task_ids='export_window')['end'] }}",
    ).expand(job_id=JOB_IDS)

    window >> export
