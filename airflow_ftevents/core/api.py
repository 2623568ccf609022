"""Every request the package makes, built in one place: the API family, the request type, the builders.

Pure data. The sync hook and the async client each have one send path that turns an
:class:`ApiRequest` into HTTP, so a URL, a query parameter or a request body is written once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class ApiFamily(str, Enum):
    """The two fine-tuning APIs: current (``/fine_tuning/jobs``) and legacy (``/fine-tunes``)."""

    CURRENT = "fine_tuning"
    LEGACY = "fine_tunes"


CURRENT = ApiFamily.CURRENT.value
LEGACY = ApiFamily.LEGACY.value


def check_api(api: str) -> str:
    """Validate the ``api`` argument early, with the accepted values in the message; returns the plain str."""
    try:
        return ApiFamily(api).value
    except ValueError:
        raise ValueError(
            f"api must be 'fine_tuning' (current API) or 'fine_tunes' (legacy API), got {api!r}"
        ) from None


@dataclass(frozen=True)
class ApiRequest:
    """One request to perform: path segments (escaped by the driver), query parameters, JSON body.

    ``what`` names the request in log lines and errors (never with a secret in it).
    """

    segments: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    what: str = "request"
    method: str = "GET"
    body: Mapping[str, Any] | None = None


def job_request(api: str, job_id: str) -> ApiRequest:
    if api == LEGACY:
        return ApiRequest(("fine-tunes", job_id), {}, f"GET fine-tune {job_id}")
    return ApiRequest(("fine_tuning", "jobs", job_id), {}, f"GET fine-tuning job {job_id}")


def events_request(job_id: str, after: str | None = None, limit: int | None = None) -> ApiRequest:
    return ApiRequest(
        ("fine_tuning", "jobs", job_id, "events"),
        {"after": after, "limit": limit},
        f"GET events of fine-tuning job {job_id}" + (f" after {after}" if after else ""),
    )


def legacy_events_request(job_id: str) -> ApiRequest:
    return ApiRequest(
        ("fine-tunes", job_id, "events"), {"stream": False}, f"GET events of fine-tune {job_id}"
    )


def legacy_stream_request(job_id: str) -> ApiRequest:
    return ApiRequest(
        ("fine-tunes", job_id, "events"), {"stream": True}, f"GET event stream of fine-tune {job_id}"
    )


def metadata_params(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``{"k": "v"}`` as the list endpoint's ``metadata[k]=v`` query parameters."""
    return {f"metadata[{key}]": str(value) for key, value in (metadata or {}).items()}


def jobs_request(
    after: str | None = None, limit: int | None = None, metadata: Mapping[str, str] | None = None
) -> ApiRequest:
    return ApiRequest(
        ("fine_tuning", "jobs"),
        {"after": after, "limit": limit, **metadata_params(metadata)},
        "GET fine-tuning jobs" + (f" after {after}" if after else ""),
    )


# The create request's fields besides model and training_file, as the API documents them.
JOB_CREATE_FIELDS = (
    "validation_file",
    "method",
    "hyperparameters",
    "suffix",
    "seed",
    "metadata",
    "integrations",
)


def create_job_request(model: str, training_file: str, fields: Mapping[str, Any]) -> ApiRequest:
    """``POST /fine_tuning/jobs``; fields whose value is ``None`` are left out of the body."""
    body = {"model": model, "training_file": training_file, **fields}
    return ApiRequest(
        ("fine_tuning", "jobs"),
        {},
        "POST fine-tuning job",
        "POST",
        {key: value for key, value in body.items() if value is not None},
    )


def job_action_request(job_id: str, action: str) -> ApiRequest:
    """``POST /fine_tuning/jobs/{id}/cancel`` (or ``pause``, ``resume``)."""
    return ApiRequest(
        ("fine_tuning", "jobs", job_id, action), {}, f"POST {action} fine-tuning job {job_id}", "POST", None
    )


def checkpoints_request(job_id: str, after: str | None = None, limit: int | None = None) -> ApiRequest:
    return ApiRequest(
        ("fine_tuning", "jobs", job_id, "checkpoints"),
        {"after": after, "limit": limit},
        f"GET checkpoints of fine-tuning job {job_id}" + (f" after {after}" if after else ""),
    )
