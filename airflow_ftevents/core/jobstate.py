"""Job status rules: what is finished, what it ended as, and the small summary users get in XCom.

The job's ``status`` is the authority (event wording is not stable, and Azure logs events after the
terminal one). Unknown statuses such as ``paused`` or ``pending`` mean "not finished yet".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL_STATUSES = frozenset({SUCCEEDED, FAILED, CANCELLED})
KNOWN_STATUSES = frozenset(
    {"validating_files", "queued", "running", "created", "pending", "paused", *TERMINAL_STATUSES}
)
_ALIASES = {"canceled": CANCELLED, "cancelling": "cancelling", "success": SUCCEEDED}


def job_status(job: Mapping[str, Any]) -> str:
    """The job's status in lower case (``"unknown"`` when missing), with US spelling folded in."""
    raw = job.get("status")
    status = str(raw).strip().lower() if raw is not None else "unknown"
    return _ALIASES.get(status, status)


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


def is_known(status: str) -> bool:
    return status in KNOWN_STATUSES


MAX_ERROR_EVENTS = 10  # error-level events quoted when a job fails


def compact_event(event: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An error event, trimmed to what a failure message quotes."""
    if event is None:
        return None
    keys = ("id", "created_at", "level", "type", "message", "data")
    return {k: event[k] for k in keys if k in event}


def remember_error_event(kept: list[dict[str, Any]], event: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The error-level events to quote if the job fails: the newest ``MAX_ERROR_EVENTS``, compact.

    ``kept`` itself is returned for any other event, so a follower pays nothing per ordinary event.
    """
    if event.get("level") != "error":
        return kept
    return [*kept[-(MAX_ERROR_EVENTS - 1) :], compact_event(event) or {}]


def job_summary(
    job_id: str, job: Mapping[str, Any], event_count: int, last_event: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The sensor's return value: small, JSON-safe, and the same for both API families."""
    return {
        "job_id": job_id,
        "status": job_status(job),
        "fine_tuned_model": job.get("fine_tuned_model"),
        "trained_tokens": job.get("trained_tokens"),
        "finished_at": job.get("finished_at"),
        "event_count": event_count,
        "last_event": dict(last_event) if last_event is not None else None,  # exactly as the API sent it
    }


def failure_message(
    job_id: str, job: Mapping[str, Any], error_events: Iterable[Mapping[str, Any]] = ()
) -> str:
    """Why a job did not succeed, from its ``error`` object and its error-level events."""
    status = job_status(job)
    parts = [f"Fine-tuning job {job_id} {status}"]
    error = job.get("error")
    if isinstance(error, Mapping) and (error.get("message") or error.get("code")):
        detail = str(error.get("message") or "")
        if error.get("code"):
            detail += f" (code {error['code']}"
            detail += f", param {error['param']})" if error.get("param") else ")"
        parts.append(f"error: {detail.strip()}")
    messages = [str(e.get("message", "")) for e in error_events]
    if messages:
        parts.append("error events: " + " | ".join(messages[-MAX_ERROR_EVENTS:]))
    return "; ".join(parts)


def format_event(event: Mapping[str, Any]) -> str:
    """One compact log line per event: metrics as ``step k/N loss=...``, the rest as their message."""
    data = event.get("data")
    if event.get("type") == "metrics" and isinstance(data, Mapping) and "step" in data:
        step = f"step {data.get('step')}" + (f"/{data['total_steps']}" if data.get("total_steps") else "")
        metrics = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in data.items()
            if k not in ("step", "total_steps")
        )
        return f"[metrics] {step} {metrics}".rstrip()
    return f"[{event.get('level', 'info')}] {event.get('message', '')}"


def log_event(log: logging.Logger | logging.LoggerAdapter, event: Mapping[str, Any]) -> None:
    """Log one event at its own level, so error events stand out in the task log."""
    level = {"error": logging.ERROR, "warn": logging.WARNING, "warning": logging.WARNING}.get(
        str(event.get("level")), logging.INFO
    )
    log.log(level, "%s", format_event(event))
