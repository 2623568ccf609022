"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_ftevents.connection_form import conn_fields, ui_field_behaviour_provider_info


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-ftevents",
        "name": "OpenAI fine-tuning events",
        "description": "Hook, sensor, deferrable trigger and export operator for the events of OpenAI "
        "(and Azure OpenAI) fine-tuning jobs.",
        "versions": ["0.1.0"],
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
                "connection-type": "openai_ftevents",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour_provider_info(),
            }
        ],
        "extra-links": ["airflow_ftevents.links.FineTuneJobLink"],
    }
