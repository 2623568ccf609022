"""Evaluate every fine-tuned model as soon as its job succeeds, whoever started the job.

Event-driven scheduling (Airflow 3): the asset ``openai_fine_tunes`` has an ``AssetWatcher`` whose
trigger, :class:`~airflow_ftevents.triggers.FineTuneJobWatcherTrigger`, runs in the triggerer and fires
once for every fine-tuning job that finishes after it started, including jobs created from a
notebook, the dashboard or another service. Each event becomes an asset event whose
``extra["payload"]`` is the job summary, and the DAG runs on it. Jobs finishing close together may
arrive in one run, so the tasks handle a list.

Environment (read where the DAG is parsed):

- ``FTEVENTS_WATCH_CONN``: the connection, default ``openai_default``.
- ``FTEVENTS_WATCH_POLL``: seconds between polls of the jobs list, default 60.
- ``FTEVENTS_WATCH_STATUSES``: comma-separated statuses to run on, default ``succeeded``.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_ftevents.triggers import FineTuneJobWatcherTrigger

STATUSES = [s.strip() for s in os.environ.get("FTEVENTS_WATCH_STATUSES", "succeeded").split(",") if s.strip()]

FINE_TUNES = Asset(
    "openai_fine_tunes",
    watchers=[
        AssetWatcher(
            name="openai_fine_tunes_watcher",
            trigger=FineTuneJobWatcherTrigger(
                conn_id=os.environ.get("FTEVENTS_WATCH_CONN", "openai_default"),
                statuses=STATUSES,
                poll_interval=float(os.environ.get("FTEVENTS_WATCH_POLL", "60")),
            ),
        )
    ],
)


with DAG(
    dag_id="example_on_any_fine_tune_finished",
    schedule=[FINE_TUNES],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "openai", "fine-tuning"],
    doc_md=__doc__,
):

    @task
    def finished_jobs(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """The jobs whose events started this run, as the watcher reported them."""
        jobs = [
            event.extra["payload"]
            for events in (triggering_asset_events or {}).values()
            for event in events
            if isinstance(getattr(event, "extra", None), dict) and "payload" in event.extra
        ]
        for job in jobs:
            print(f"Fine-tuning job {job['job_id']} {job['status']}: model {job['fine_tuned_model']}")
        return jobs

    @task
    def evaluate(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stand-in for an evaluation: one score per fine-tuned model (replace with a real eval)."""
        results = []
        for job in jobs:
            model = job.get("fine_tuned_model")
            if not model:
                print(f"Job {job['job_id']} has no fine-tuned model ({job['status']}); nothing to evaluate")
                continue
            score = round(1.0 - 1.0 / (1 + (job.get("trained_tokens") or 0) / 1000), 3)
            print(f"Evaluated {model}: score {score}")
            results.append({"job_id": job["job_id"], "model": model, "score": score})
        return results

    evaluate(finished_jobs())
