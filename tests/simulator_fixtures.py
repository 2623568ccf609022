"""Fixtures and helpers for the simulator's tests: a shared simulator, an authenticated session, and
validators built from the official OpenAPI excerpt (so "matches the API" is checked, not assumed).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from airflow_ftevents.simulator import Simulator

SIM_KEY = "sk-sim-Jq4Xv8TtR2mW6pLz"  # fake key; asserted never to appear in responses
# The official OpenAPI excerpt, kept beside the tests so a fresh clone can run them.
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "openai-fine-tuning.yaml"
SCHEMA_NAMES = (
    "FineTuningJob",
    "FineTuningJobEvent",
    "ListFineTuningJobEventsResponse",
    "FineTune",
    "FineTuneEvent",
    "ListFineTuneEventsResponse",
)


def _as_json_schema(node: Any) -> Any:
    """Rewrite the OpenAPI 3.0 idioms the excerpt still uses into JSON Schema 2020-12.

    ``nullable: true`` (legacy schemas) becomes a type list; a boolean ``exclusiveMinimum`` next to
    ``minimum`` (learning_rate_multiplier) becomes the numeric form, otherwise ``True`` would mean "> 1".
    """
    if isinstance(node, dict):
        node = {key: _as_json_schema(value) for key, value in node.items()}
        if node.pop("nullable", False) and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if (
            isinstance(node.get("exclusiveMinimum"), bool)
            and node.pop("exclusiveMinimum")
            and "minimum" in node
        ):
            node["exclusiveMinimum"] = node.pop("minimum")
        return node
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    return node


def load_validators() -> dict[str, Draft202012Validator]:
    """One validator per schema name; ``$ref``s resolve against the whole document."""
    document = _as_json_schema(yaml.safe_load(SCHEMA_FILE.read_text()))
    validators = {}
    for name in SCHEMA_NAMES:
        root = copy.copy(document)
        root["$ref"] = f"#/components/schemas/{name}"
        validators[name] = Draft202012Validator(root)
    return validators


def schema_properties(name: str) -> set[str]:
    """Declared property names of a schema, to check that default mode sends nothing beyond them."""
    document = yaml.safe_load(SCHEMA_FILE.read_text())
    return set(document["components"]["schemas"][name]["properties"])


@pytest.fixture(scope="session")
def validators() -> dict[str, Draft202012Validator]:
    return load_validators()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[Simulator]:
    """One simulator per test module (starting one is cheap, but a module reuses it)."""
    with Simulator(api_key=SIM_KEY, keepalive_interval=0.2) as sim:
        yield sim


@pytest.fixture
def simulator(shared_sim: Simulator) -> Iterator[Simulator]:
    """The shared simulator with no faults pending and an empty request log."""
    shared_sim.clear_faults()
    shared_sim.request_log.clear()
    yield shared_sim
    shared_sim.clear_faults()


@pytest.fixture
def http(simulator: Simulator) -> Iterator[requests.Session]:
    """A keep-alive session that sends the simulator's key."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {SIM_KEY}"
        yield session


def job_url(sim: Simulator, job_id: str, tail: str = "", legacy: bool = False) -> str:
    """URL of a job (percent-encoding the id as a path segment) or of one of its sub-resources."""
    family = "fine-tunes" if legacy else "fine_tuning/jobs"
    return f"{sim.base_url}/{family}/{quote(job_id, safe='')}{tail}"


def walk_pages(
    session: requests.Session, sim: Simulator, job_id: str, limit: int | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of a job's current-API events, following ``after``; (events newest first, pages)."""
    events: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        response = session.get(job_url(sim, job_id, "/events"), params=params, timeout=10)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        events.extend(page["data"])
        if not page["has_more"]:
            return events, pages
        assert page["data"], "has_more with an empty page"
        after = page["data"][-1]["id"]
        assert len(pages) < 100_000


def sse_lines(response: requests.Response) -> Iterator[str]:
    """Lines of an event stream as text (the simulator only sends LF line ends)."""
    for raw in response.iter_lines(chunk_size=None, decode_unicode=False):
        yield raw.decode()
