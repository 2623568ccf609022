"""Shared fixtures: an isolated AIRFLOW_HOME, a live simulator on loopback, and a connection to it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Airflow: a private home, no example DAGs, so tests never touch ~/airflow.
_HOME = tempfile.mkdtemp(prefix="ftevents-test-home-")
os.environ.setdefault("AIRFLOW_HOME", _HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__DAGS_FOLDER", os.path.join(os.path.dirname(__file__), "..", "example_dags")
)

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-ftevents-Zq8LmW3xR7vT2nK9"  # a fake key, asserted absent from logs and errors
CONN_ID = "openai_default"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def sim() -> Iterator[object]:
    """A simulator on a free loopback port, stopped after the test."""
    from airflow_ftevents.simulator import Simulator

    with Simulator(api_key=API_KEY, keepalive_interval=0.2) as simulator:
        yield simulator


def connection_json(base_url: str, api_key: str = API_KEY, **extra: object) -> str:
    extra = {"max_retries": 3, "timeout": 5, **extra}
    return json.dumps({"conn_type": "openai_ftevents", "host": base_url, "password": api_key, "extra": extra})


def sim_metadata(events: int = 30, seconds: float = 0.5, outcome: str = "succeeded") -> dict[str, str]:
    """The job metadata that tells the simulator how a created job runs."""
    return {"sim_events": str(events), "sim_seconds": str(seconds), "sim_outcome": outcome}


@pytest.fixture
def sim_conn(sim, monkeypatch) -> str:
    """``openai_default`` pointing at the simulator (as an AIRFLOW_CONN_ environment variable)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
    return CONN_ID


def airflow_env(home: object, **extra: str) -> dict[str, str]:
    """Environment for an ``airflow`` subprocess with its own home; no connection leaks in from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``airflow db migrate`` once per session; tests copy the resulting sqlite file."""
    home = tmp_path_factory.mktemp("airflow-template")
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=airflow_env(home),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return home / "airflow.db"


@pytest.fixture
def airflow_home(tmp_path: Path, migrated_airflow_db: Path) -> Path:
    """A private AIRFLOW_HOME holding a freshly migrated metadata DB."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy(migrated_airflow_db, home / "airflow.db")
    return home
