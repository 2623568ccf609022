"""Fixtures and helpers for the simulator's tests (``tests/test_simulator_*.py``): a shared simulator, an
authenticated session, validators built from the official OpenAPI excerpt (so "matches the API" is
checked, not assumed), and the small helpers every one of those files uses.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from airflow_ftevents.simulator import JobSpec, Simulator

SIM_KEY = "sk-sim-Jq4Xv8TtR2mW6pLz"  # fake key; asserted never to appear in responses
# The official OpenAPI excerpt, kept beside the tests so a fresh clone can run them.
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "openai-fine-tuning.yaml"
SCHEMA_NAMES = (
    "FineTuningJob",
    "FineTuningJobEvent",
    "ListFineTuningJobEventsResponse",
    "ListPaginatedFineTuningJobsResponse",
    "FineTuningJobCheckpoint",
    "ListFineTuningJobCheckpointsResponse",
    "CreateFineTuningJobRequest",
    "FineTune",
    "FineTuneEvent",
    "ListFineTuneEventsResponse",
)
PAUSED = "FineTuningJob+paused"  # the job schema with `paused` in its status enum (pause/resume exist)
REQUEST_ID = re.compile(r"^req_[0-9a-f]{32}$")
JOB_ID = re.compile(r"^ftjob-[A-Za-z0-9]{24}$")
EVENT_ID = re.compile(r"^ftevent-[A-Za-z0-9]{24}$")
CHECKPOINT_ID = re.compile(r"^ftckpt_[A-Za-z0-9]{24}$")


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
    # The excerpt's status enum predates pause/resume: a paused job is checked against it plus `paused`.
    paused = copy.deepcopy(document)
    paused["components"]["schemas"]["FineTuningJob"]["properties"]["status"]["enum"].append("paused")
    paused["$ref"] = "#/components/schemas/FineTuningJob"
    validators[PAUSED] = Draft202012Validator(paused)
    return validators


def yaml_schema(name: str) -> dict[str, Any]:
    """One component schema of the excerpt, as written."""
    return yaml.safe_load(SCHEMA_FILE.read_text())["components"]["schemas"][name]


def schema_properties(name: str) -> set[str]:
    """Declared property names of a schema, to check that default mode sends nothing beyond them."""
    return set(yaml_schema(name)["properties"])


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


def unique_id(prefix: str = "ftjob-t") -> str:
    """Jobs live in a module-wide simulator: give each test its own ids."""
    unique_id.counter += 1  # type: ignore[attr-defined]
    return f"{prefix}{unique_id.counter}"  # type: ignore[attr-defined]


unique_id.counter = 0  # type: ignore[attr-defined]


def add(sim: Simulator, **kwargs: Any) -> str:
    """Add a job with a fresh id unless the test names one."""
    kwargs.setdefault("job_id", unique_id())
    return sim.add_job(JobSpec(**kwargs))


def strip_to_legacy(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "fine-tune-event",
        "created_at": event["created_at"],
        "level": event["level"],
        "message": event["message"],
    }


def read_stream(response: requests.Response) -> tuple[list[dict[str, Any]], list[str]]:
    """(data events, other lines) of a legacy stream read to its end."""
    events, other = [], []
    for line in sse_lines(response):
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(json.loads(line[len("data: ") :]))
        elif line:
            other.append(line)
    return events, other


class FakeClock:
    """A monotonic clock the test moves by hand, for exact lifecycle arithmetic."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jobs_url(sim: Simulator) -> str:
    return f"{sim.base_url}/fine_tuning/jobs"


def control_url(sim: Simulator, path: str) -> str:
    """URL of a ``/_sim/`` control route of ``sim``."""
    return f"{sim.base_url[: -len('/v1')]}/_sim/{path}"
