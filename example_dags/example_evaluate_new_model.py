"""Evaluate each newly fine-tuned model: a DAG scheduled on the Asset the fine-tuning DAG updates.

``example_fine_tune_wait_and_export`` starts a job with ``FineTuneJobOperator(outlets=[FINE_TUNED_MODEL])``.
When the job succeeds, the Asset's event carries the job's summary as its ``extra`` (``job_id``,
``status``, ``fine_tuned_model``, ``model``, ``trained_tokens``, ``finished_at``, ``best_checkpoint``),
and Airflow starts this DAG with that event in ``triggering_asset_events``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, task

# The same Asset the fine-tuning DAG names in its outlets (Assets are matched by name).
FINE_TUNED_MODEL = Asset("ftevents_example_fine_tuned_model")

with DAG(
    dag_id="example_evaluate_new_model",
    schedule=[FINE_TUNED_MODEL],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "fine-tuning"],
) as dag:

    @task
    def new_model(triggering_asset_events: Any = None) -> dict[str, Any]:
        """The newest model the triggering events announce (one run can gather several events)."""
        events = [e for asset_events in (triggering_asset_events or {}).values() for e in asset_events]
        if not events:
            raise ValueError(
                "No triggering asset event: run this DAG through its Asset, e.g. by running "
                "example_fine_tune_wait_and_export, not by hand"
            )
        extra = dict(events[-1].extra or {})
        print(f"New fine-tuned model {extra.get('fine_tuned_model')} from job {extra.get('job_id')}")
        return extra

    @task
    def evaluate(model: dict[str, Any]) -> dict[str, Any]:
        """A stand-in for an evaluation: a real one would call the model on a held-out set."""
        best = model.get("best_checkpoint") or {}
        loss = (best.get("metrics") or {}).get("full_valid_loss")
        verdict = "promote" if loss is not None and loss < 1.0 else "review"
        print(f"Evaluated {model.get('fine_tuned_model')}: full_valid_loss={loss} -> {verdict}")
        return {"fine_tuned_model": model.get("fine_tuned_model"), "verdict": verdict}

    evaluate(new_model())
