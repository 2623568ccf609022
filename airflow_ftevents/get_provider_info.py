"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_ftevents import __version__
from airflow_ftevents.connection_form import CONN_TYPE, conn_fields, ui_field_behaviour_provider_info


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-ftevents",
        "name": "OpenAI fine-tuning events",
        "description": "OpenAI (and Azure OpenAI) fine-tuning jobs and their events: a hook, a job operator "
        "that never bills twice, a sensor, deferrable and AssetWatcher triggers, an export operator and a "
        "UI view.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "OpenAI fine-tuning events",
                "external-doc-url": "https://platform.openai.com/docs/api-reference/fine-tuning",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {"integration-name": "OpenAI fine-tuning events", "python-modules": ["airflow_ftevents.hooks"]}
        ],
        "sensors": [
            {"integration-name": "OpenAI fine-tuning events", "python-modules": ["airflow_ftevents.sensors"]}
        ],
        "operators": [
            {
                "integration-name": "OpenAI fine-tuning events",
                "python-modules": ["airflow_ftevents.operators"],
            }
        ],
        "triggers": [
            {"integration-name": "OpenAI fine-tuning events", "python-modules": ["airflow_ftevents.triggers"]}
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_ftevents.hooks.FineTuneEventsHook",
                "hook-name": "OpenAI fine-tuning events",
                "connection-type": CONN_TYPE,
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour_provider_info(),
            }
        ],
        "extra-links": ["airflow_ftevents.links.FineTuneJobLink"],
    }
