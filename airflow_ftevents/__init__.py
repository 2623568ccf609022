"""Apache Airflow provider for the events of OpenAI (and OpenAI-compatible) fine-tuning jobs.

Kept import-light: DAG files are parsed every few seconds, so the hook, sensor, trigger and operator
live in their own modules and are imported only where used.
"""

from __future__ import annotations

from airflow_ftevents.errors import FineTuneEventsError, InvalidJobIdError

__version__ = "0.2.0"  # the one place: pyproject.toml and the provider info read it
__all__ = ["FineTuneEventsError", "InvalidJobIdError", "__version__"]
