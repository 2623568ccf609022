"""Every hour, export the events each job logged during that hour (dynamic task mapping).

The half-open window ``data_interval_start <= created_at < data_interval_end`` makes consecutive runs
partition each job's events exactly: concatenating the hourly files gives the full history, with no
event twice and none lost, and a re-run of one interval rewrites the same bytes.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_ftevents.operators import FineTuneEventsExportOperator

EXPORT_ROOT = os.environ.get("FTEVENTS_EXPORT_ROOT", "file:///tmp/ftevents-exports")
INTERVAL_START = "{{ data_interval_start.strftime('%Y%m%dT%H%M%S') }}"
INTERVAL_END = "{{ data_interval_end.strftime('%Y%m%dT%H%M%S') }}"
JOB_IDS = [j for j in os.environ.get("FTEVENTS_JOB_IDS", "ftjob-demo-1,ftjob-demo-2").split(",") if j]

with DAG(
    dag_id="example_scheduled_export",
    # A data-interval timetable: each run covers [data_interval_start, data_interval_end) of one hour.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "fine-tuning"],
) as dag:
    FineTuneEventsExportOperator.partial(
        task_id="export_interval",
        conn_id="openai_default",
        destination=f"{EXPORT_ROOT}/hourly/{INTERVAL_START}-{INTERVAL_END}/",
        created_after="{{ data_interval_start }}",
        created_before="{{ data_interval_end }}",
    ).expand(job_id=JOB_IDS)
