"""Test doubles of what a task runner hands the sensor and operator, and the expected job summary.

Shared by the sensor, trigger, operator and fault tests, so the oracle for a summary is written once.
"""

from __future__ import annotations

import json
import logging
from typing import Any


class FakeTI:
    """The parts of a RuntimeTaskInstance the sensor, BaseSensorOperator and the operator touch."""

    map_index = -1

    def __init__(self, dag_id: str = "dag", task_id: str = "wait", run_id: str = "run") -> None:
        self.dag_id, self.task_id, self.run_id = dag_id, task_id, run_id
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


class MemoryStore:
    """Stand-in for Airflow 3.3's ``context["task_state_store"]``; values must be JSON."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def expected_summary(sim: Any, job_id: str, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The summary a follower of ``job_id`` must return, from the simulator's own records."""
    job = sim.job(job_id)
    events = sim.events(job_id) if events is None else events
    return {
        "job_id": job_id,
        "status": job["status"],
        "fine_tuned_model": job["fine_tuned_model"],
        "trained_tokens": job["trained_tokens"],
        "finished_at": job["finished_at"],
        "event_count": len(events),
        "last_event": events[-1],  # exactly as the API sent it
    }


class Records(logging.Handler):
    """Every log record a task or trigger emitted, for exact assertions on its log lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int | None = None) -> list[str]:
        return [r.getMessage() for r in self.records if level is None or r.levelno == level]


def capture(op: Any) -> Records:
    """Give an operator (or trigger) a plain logger whose records the test can read."""
    logger = logging.getLogger(f"test.ftevents.{id(op)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Records()
    logger.handlers[:] = [handler]
    for attribute in ("_log", "_cached_logger"):  # where LoggingMixin / DAG nodes cache their logger
        object.__setattr__(op, attribute, logger)
    assert op.log is logger
    return handler
