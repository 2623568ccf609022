"""The package's triggers, importable from here (the path users and serialized trigger rows name).

- :class:`FineTuneJobTrigger` waits for one job (the deferrable sensor and operators).
- :class:`FineTuneJobWatcherTrigger` fires once per job that finishes (an AssetWatcher's trigger).
"""

from __future__ import annotations

from airflow_ftevents.triggers.job import (
    EVENT_STATUSES,
    FineTuneJobTrigger,
    error_from_event,
    progress_from_legacy_kwargs,
    trigger_event_payload,
    validate_trigger_event,
)
from airflow_ftevents.triggers.watcher import FineTuneJobWatcherTrigger

__all__ = [
    "EVENT_STATUSES",
    "FineTuneJobTrigger",
    "FineTuneJobWatcherTrigger",
    "error_from_event",
    "progress_from_legacy_kwargs",
    "trigger_event_payload",
    "validate_trigger_event",
]
