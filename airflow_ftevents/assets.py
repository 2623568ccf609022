"""Handing a finished fine-tune to downstream DAGs: the outlet Assets' events carry the new model.

A task of this package that succeeds with ``outlets`` puts a small, JSON-safe description of the job
(``job_id``, ``status``, ``fine_tuned_model``, ``model``, ``trained_tokens``, ``finished_at``,
``best_checkpoint``) in each outlet Asset's event ``extra``. A DAG scheduled on that Asset reads it
from ``triggering_asset_events``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def attach_asset_extra(context: Mapping[str, Any], outlets: Iterable[Any], extra: Mapping[str, Any]) -> int:
    """Set ``extra`` on the event of every outlet Asset of the task; returns how many were set."""
    from airflow.sdk import Asset

    events = context.get("outlet_events")
    if events is None:
        return 0
    count = 0
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            events[outlet].extra.update(dict(extra))
            count += 1
    return count
