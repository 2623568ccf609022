"""Start a fine-tuning job, wait for it with the deferrable sensor, then export all of its events.

The main use of the package: a DAG starts a fine-tune, waits (often hours) without holding a worker
slot, then keeps the job's full event history as JSON Lines for audits and loss-curve dashboards.
Against the local simulator (see the README's demo) the job finishes in seconds.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_ftevents.operators import FineTuneEventsExportOperator
from airflow_ftevents.sensors import FineTuneJobSensor

EXPORT_ROOT = os.environ.get("FTEVENTS_EXPORT_ROOT", "file:///tmp/ftevents-exports")
# Seconds between the trigger's saved checkpoints: after a triggerer restart at most the events of one
# interval are logged again. Read where the DAG is parsed (dag-processor and workers).
CHECKPOINT_INTERVAL = float(os.environ.get("FTEVENTS_CHECKPOINT_INTERVAL", "60"))

with DAG(
    dag_id="example_fine_tune_wait_and_export",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "fine-tuning"],
    params={
        "model": Param("gpt-4o-mini-2024-07-18", type="string"),
        "training_file": Param("file-abc123", type="string"),
        # Read by the local simulator only: how the simulated job should run.
        "metadata": Param(
            {"sim_events": "120", "sim_seconds": "6", "sim_outcome": "succeeded"}, type="object"
        ),
    },
) as dag:

    @task
    def start_fine_tune(params: dict | None = None) -> str:
        """Start the job and hand its id to the sensor through XCom."""
        from airflow_ftevents.hooks import FineTuneEventsHook

        params = params or {}
        job = FineTuneEventsHook(conn_id="openai_default").create_job(
            model=params["model"], training_file=params["training_file"], metadata=params.get("metadata")
        )
        return job["id"]

    job_id = start_fine_tune()

    wait = FineTuneJobSensor(
        task_id="wait_for_fine_tune",
        job_id=job_id,
        conn_id="openai_default",
        deferrable=True,
        poke_interval=2,
        timeout=60 * 60 * 6,
        checkpoint_interval=CHECKPOINT_INTERVAL,
    )

    export = FineTuneEventsExportOperator(
        task_id="export_events",
        job_id=job_id,
        conn_id="openai_default",
        destination=EXPORT_ROOT + "/{{ dag.dag_id }}/{{ run_id | replace(':', '_') }}/",
        metrics_csv=True,
        # A failed job's events matter most: export them too, then fail the task (and so the run).
        trigger_rule="all_done",
        fail_on_job_failure=True,
    )

    wait >> export
