"""The package as Airflow sees it: provider registration, connection form, clean imports, DAG parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import airflow_ftevents
from airflow_ftevents.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.airflow


def _airflow_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
    )
    return env


def test_provider_info_matches_airflow_schema() -> None:
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    info = get_provider_info()
    jsonschema.validate(info, json.loads(schema_path.read_text()))
    assert info["package-name"] == "airflow-ftevents"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "openai_ftevents"
    assert conn["hook-class-name"] == "airflow_ftevents.hooks.FineTuneEventsHook"
    assert sorted(conn["conn-fields"]) == sorted(
        ["organization", "project", "api_type", "api_version", "timeout", "max_retries"]
    )
    assert conn["ui-field-behaviour"]["relabeling"] == {"host": "Base URL", "password": "API key"}


def test_entry_point_names_the_distribution() -> None:
    from importlib.metadata import distribution

    dist = distribution("airflow-ftevents")
    (entry,) = [ep for ep in dist.entry_points if ep.group == "apache_airflow_provider"]
    assert entry.load()()["package-name"] == dist.metadata["Name"]


def test_airflow_providers_list_shows_the_package(tmp_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    result = subprocess.run(
        [str(airflow), "providers", "list", "--output", "json"],
        env=_airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    start = result.stdout.index("[")
    providers = {p["package_name"]: p for p in json.loads(result.stdout[start:])}
    assert providers["airflow-ftevents"]["version"] == airflow_ftevents.__version__ == "0.2.0"


def test_modules_import_without_warnings() -> None:
    code = (
        "import airflow_ftevents, airflow_ftevents.hooks, airflow_ftevents.sensors, "
        "airflow_ftevents.operators, airflow_ftevents.triggers, airflow_ftevents.links"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_example_dags_parse_without_import_errors() -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "example_dags"))  # AIRFLOW__CORE__LOAD_EXAMPLES=False (conftest)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [
        "example_evaluate_new_model",
        "example_fine_tune_wait_and_export",
        "example_on_any_fine_tune_finished",
        "example_scheduled_export",
    ]
    wait_dag = bag.dags["example_fine_tune_wait_and_export"]  # get_dag() would query the DB
    assert [t.task_id for t in wait_dag.topological_sort()] == ["fine_tune", "export_events"]
