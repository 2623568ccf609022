"""Shared fixtures: an isolated AIRFLOW_HOME, a live simulator on loopback, and a connection to it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator

import pytest

# Before anything imports Airflow: a private home, no example DAGs, so tests never touch ~/airflow.
_HOME = tempfile.mkdtemp(prefix="ftevents-test-home-")
os.environ.setdefault("AIRFLOW_HOME", _HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault(
    "AIRFLOW__CORE__DAGS_FOLDER", os.path.join(os.path.dirname(__file__), "..", "example_dags")
)

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


@pytest.fixture
def sim_conn(sim, monkeypatch) -> str:
    """``openai_default`` pointing at the simulator (as an AIRFLOW_CONN_ environment variable)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", connection_json(sim.base_url))
    return CONN_ID
