"""Start a fine-tuning job, wait for it in the triggerer, hand the model on, then export all its events.

The main use of the package: a DAG starts a fine-tune with ``FineTuneJobOperator`` (never twice for one
task instance, cancelled if the task is killed), waits (often hours) without holding a worker slot, then
keeps the job's full event history as JSON Lines for audits and loss-curve dashboards, for a failed job
too. When the job succeeds, the ``FINE_TUNED_MODEL`` Asset's event carries the new model, which starts
``example_evaluate_new_model``. Against the local simulator (see the README's demo) the job finishes in
seconds.
"""

from __future__ import annotations

import importlib.util
import os

import pendulum
from airflow.sdk import DAG, Asset, Param

from airflow_ftevents.operators import FineTuneEventsExportOperator, FineTuneJobOperator

EXPORT_ROOT = os.environ.get("FTEVENTS_EXPORT_ROOT", "file:///tmp/ftevents-exports")
# Seconds between the trigger's saved checkpoints: after a triggerer restart at most the events of one
# interval are logged again. Read where the DAG is parsed (dag-processor and workers).
CHECKPOINT_INTERVAL = float(os.environ.get("FTEVENTS_CHECKPOINT_INTERVAL", "60"))
# The loss plot needs matplotlib (pip install 'airflow-ftevents[plot]'); without it, no plot.
LOSS_PLOT = importlib.util.find_spec("matplotlib") is not None
FINE_TUNED_MODEL = Asset("ftevents_example_fine_tuned_model")

with DAG(
    dag_id="example_fine_tune_wait_and_export",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "fine-tuning"],
    render_template_as_native_obj=True,  # "{{ params.metadata }}" renders to the dict itself
    params={
        "model": Param("gpt-4o-mini-2024-07-18", type="string"),
        "training_file": Param("file-abc123", type="string"),
        # Read by the local simulator only: how the simulated job should run.
        "metadata": Param(
            {"sim_events": "120", "sim_seconds": "6", "sim_outcome": "succeeded"}, type="object"
        ),
    },
) as dag:
    fine_tune = FineTuneJobOperator(
        task_id="fine_tune",
        model="{{ params.model }}",
        training_file="{{ params.training_file }}",
        metadata="{{ params.metadata }}",
        conn_id="openai_default",
        deferrable=True,
        poll_interval=2,
        timeout=60 * 60 * 6,
        checkpoint_interval=CHECKPOINT_INTERVAL,
        outlets=[FINE_TUNED_MODEL],
    )

    export = FineTuneEventsExportOperator(
        task_id="export_events",
        job_id="{{ ti.xcom_pull(task_ids='fine_tune', key='job_id') }}",
        conn_id="openai_default",
        destination=EXPORT_ROOT + "/{{ dag.dag_id }}/{{ run_id | replace(':', '_') }}/",
        metrics_csv=True,
        loss_plot=LOSS_PLOT,
        # A failed job's events matter most: export them too, then fail the task (and so the run).
        trigger_rule="all_done",
        fail_on_job_failure=True,
    )

    fine_tune >> export
