"""The connection form, declared once: Airflow 3.2+ reads ``conn-fields`` from the provider info,
older releases call the hook's ``get_connection_form_widgets``; both are built from ``EXTRA_FIELDS``.
"""

from __future__ import annotations

from typing import Any

CONN_TYPE = "openai_ftevents"  # the one place: the hook and the provider info read it

# name -> (label, JSON type, description, default, enum)
EXTRA_FIELDS: dict[str, tuple[str, str, str, Any, list[str] | None]] = {
    "organization": ("Organization", "string", "Sent as the OpenAI-Organization header", None, None),
    "project": ("Project", "string", "Sent as the OpenAI-Project header", None, None),
    "api_type": (
        "API type",
        "string",
        "openai (Bearer key) or azure (api-key header)",
        "openai",
        ["openai", "azure"],
    ),
    "api_version": (
        "API version",
        "string",
        "Azure only: sent as the api-version query parameter",
        None,
        None,
    ),
    "timeout": ("Timeout (seconds)", "number", "Read timeout of each request", 600, None),
    "max_retries": (
        "Max retries",
        "integer",
        "Retries after the first try (429, 5xx, connection errors)",
        2,
        None,
    ),
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {
        "host": "https://api.openai.com/v1 (Azure: https://RESOURCE.openai.azure.com/openai/v1)",
        "password": "sk-...",
        "extra": '{"organization": "org-...", "project": "proj_..."}',
    },
}


def conn_fields() -> dict[str, Any]:
    """The ``conn-fields`` entry of the provider info (JSON-schema per extra field)."""
    fields: dict[str, Any] = {}
    for name, (label, kind, description, default, enum) in EXTRA_FIELDS.items():
        schema: dict[str, Any] = {"type": [kind, "null"]}
        if default is not None:
            schema["default"] = default
        if enum:
            schema["enum"] = enum
        fields[name] = {"label": label, "schema": schema, "description": description}
    return fields


def ui_field_behaviour_provider_info() -> dict[str, Any]:
    """The same behaviour in the provider-info spelling (dashes instead of underscores)."""
    return {
        "hidden-fields": UI_FIELD_BEHAVIOUR["hidden_fields"],
        "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
        "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
    }


def connection_form_widgets() -> dict[str, Any]:
    """WTForms widgets for Airflow releases that build the form from the hook (imported lazily)."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import IntegerField, StringField
    from wtforms.validators import NumberRange, Optional, any_of

    widgets: dict[str, Any] = {}
    for name, (label, kind, description, default, enum) in EXTRA_FIELDS.items():
        validators: list[Any] = [Optional()]
        field_cls: Any = StringField
        if kind == "integer":
            field_cls = IntegerField
            validators.append(NumberRange(min=0))
        if enum:
            validators.append(any_of(enum))
        widgets[name] = field_cls(
            lazy_gettext(label),
            widget=BS3TextFieldWidget(),
            description=description,
            default=default,
            validators=validators,
        )
    return widgets
