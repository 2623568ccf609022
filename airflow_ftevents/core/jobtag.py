"""Tagging a job with the task instance that started it, so no task instance ever starts (and bills) two.

The tag is one metadata pair whose value stays the same across tries of a task instance: dag_id,
run_id, task_id and map_index, not the try number. Before creating a job, the job operator lists the
jobs carrying its tag; a job that is neither failed nor cancelled is re-attached instead of creating a
new one. A POST whose outcome is unknown (a timeout, a reset after the request was sent) is resolved
the same way. The API's metadata limits are checked before any request: 16 pairs, keys of at most 64
characters, string values of at most 512.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_ftevents.core.jobstate import CANCELLED, FAILED, job_status

TASK_INSTANCE_KEY = "airflow_task_instance"
MAX_METADATA_PAIRS = 16
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 512
_NOT_REATTACHABLE = frozenset({FAILED, CANCELLED})


def task_instance_tag(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """``dag_id/run_id/task_id/map_index``; a SHA-256 of it when that is longer than a value may be.

    dag ids and task ids cannot contain ``/``, so the run id (which can) is still unambiguous.
    """
    tag = f"{dag_id}/{run_id}/{task_id}/{-1 if map_index is None else map_index}"
    if len(tag) <= MAX_VALUE_LENGTH:
        return tag
    return "sha256:" + hashlib.sha256(tag.encode()).hexdigest()


def tagged_metadata(metadata: Mapping[str, Any] | None, tag: str) -> dict[str, str]:
    """The user's metadata with the task instance's tag beside it; raises ValueError naming what to fix."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a dict of strings, got {type(metadata).__name__} {metadata!r}")
    if TASK_INSTANCE_KEY in metadata:
        raise ValueError(
            f"metadata key {TASK_INSTANCE_KEY!r} is reserved: the operator tags each job with its task "
            "instance there; use another key"
        )
    if len(metadata) > MAX_METADATA_PAIRS - 1:
        raise ValueError(
            f"metadata has {len(metadata)} pairs; the API allows {MAX_METADATA_PAIRS} and the operator uses "
            f"one ({TASK_INSTANCE_KEY!r}), so at most {MAX_METADATA_PAIRS - 1} are yours: drop some"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"metadata keys must be non-empty strings, got {key!r}")
        if len(key) > MAX_KEY_LENGTH:
            raise ValueError(
                f"metadata key {key[:20]!r}... has {len(key)} characters; the API allows {MAX_KEY_LENGTH}"
            )
        if not isinstance(value, str):
            raise ValueError(
                f"metadata value of {key!r} must be a string, got {type(value).__name__} {value!r}; "
                "convert it with str() or json.dumps()"
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise ValueError(
                f"metadata value of {key!r} has {len(value)} characters; the API allows {MAX_VALUE_LENGTH}"
            )
    return {**metadata, TASK_INSTANCE_KEY: tag}


def is_tagged(job: Mapping[str, Any], tag: str) -> bool:
    metadata = job.get("metadata")
    return isinstance(metadata, Mapping) and metadata.get(TASK_INSTANCE_KEY) == tag


def reattachable_job(jobs: Iterable[Mapping[str, Any]], tag: str) -> dict[str, Any] | None:
    """The newest job of this task instance that is neither failed nor cancelled, if any.

    ``jobs`` come newest first (as the API lists them); each is checked for the tag here too, since an
    OpenAI-compatible server may ignore the ``metadata`` filter of the list.
    """
    for job in jobs:
        if is_tagged(job, tag) and job_status(job) not in _NOT_REATTACHABLE:
            return dict(job)
    return None


def _validation_loss(checkpoint: Mapping[str, Any]) -> float | None:
    metrics = checkpoint.get("metrics")
    if not isinstance(metrics, Mapping):
        return None
    for name in ("full_valid_loss", "valid_loss"):
        value = metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def compact_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fine_tuned_model_checkpoint": checkpoint.get("fine_tuned_model_checkpoint"),
        "step_number": checkpoint.get("step_number"),
        "metrics": dict(checkpoint.get("metrics") or {}),
    }


def best_checkpoint(checkpoints: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The checkpoint with the lowest validation loss (``full_valid_loss``, else ``valid_loss``);
    without validation metrics, the one of the highest step (the newest)."""
    listed = list(checkpoints)
    if not listed:
        return None
    scored = [(loss, c) for c in listed if (loss := _validation_loss(c)) is not None]
    if scored:
        return compact_checkpoint(min(scored, key=lambda pair: pair[0])[1])
    return compact_checkpoint(max(listed, key=lambda c: c.get("step_number") or 0))


def job_result(
    summary: Mapping[str, Any], job: Mapping[str, Any], checkpoints: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The job operator's return value: the sensor's summary plus the model, result files, checkpoints."""
    listed = [compact_checkpoint(c) for c in checkpoints]
    return {
        **summary,
        "model": job.get("model"),
        "result_files": list(job.get("result_files") or []),
        "checkpoints": listed,
    }


ASSET_EXTRA_KEYS = ("job_id", "status", "fine_tuned_model", "model", "trained_tokens", "finished_at")


def asset_extra(result: Mapping[str, Any], checkpoints: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What an outlet Asset's event carries: small and JSON-safe, for downstream DAGs to read the model."""
    return {
        **{key: result.get(key) for key in ASSET_EXTRA_KEYS},
        "best_checkpoint": best_checkpoint(checkpoints),
    }
