"""Checks of a ``POST /fine_tuning/jobs`` body, answered the way the API answers them.

Every field of ``CreateFineTuningJobRequest`` is checked for type and range; the first problem becomes a
400 with the API's wording style and codes (``missing_required_parameter``, ``invalid_type``,
``unknown_parameter``, ``invalid_value``, ``string_above_max_length``, ...) and the dotted ``param`` that
was wrong, so a client's error handling is tested against the real shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from airflow_ftevents.core.api import JOB_CREATE_FIELDS
from airflow_ftevents.core.jobtag import MAX_KEY_LENGTH, MAX_METADATA_PAIRS, MAX_VALUE_LENGTH
from airflow_ftevents.simulator.model import MIN_EVENTS, OUTCOMES, JobSpec

FIELDS = frozenset({"model", "training_file", *JOB_CREATE_FIELDS})
METHODS = ("supervised", "dpo", "reinforcement")
SEED_MAX = 2_147_483_647
METADATA_PAIRS, METADATA_KEY_MAX, METADATA_VALUE_MAX = MAX_METADATA_PAIRS, MAX_KEY_LENGTH, MAX_VALUE_LENGTH
# Steering keys: a job created over HTTP runs as its metadata says (they are echoed back like any pair).
SIM_EVENTS, SIM_SECONDS, SIM_OUTCOME = "sim_events", "sim_seconds", "sim_outcome"


class BadRequest(Exception):
    """A 400 answer: what was wrong, the parameter and the API's error code."""

    def __init__(self, message: str, param: str | None, code: str) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class Defaults:
    """How a job created over HTTP runs unless its metadata says otherwise."""

    n_events: int
    duration: float
    outcome: str


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _type_error(param: str, expected: str, value: Any) -> BadRequest:
    return BadRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param,
        "invalid_type",
    )


def _string(
    body: dict[str, Any], name: str, param: str, nullable: bool, max_length: int | None = None
) -> None:
    value = body.get(name)
    if value is None:
        if name in body and not nullable:
            raise _type_error(param, "a string", value)
        return
    if not isinstance(value, str):
        raise _type_error(param, "a string", value)
    if not value:
        raise BadRequest(
            f"Invalid '{param}': string too short. Expected a string with minimum length 1, "
            "but got an empty string instead.",
            param,
            "string_below_min_length",
        )
    if max_length is not None and len(value) > max_length:
        raise BadRequest(
            f"Invalid '{param}': string too long. Expected a string with maximum length {max_length}, "
            f"but got a string with length {len(value)} instead.",
            param,
            "string_above_max_length",
        )


def _integer(value: Any, param: str, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(param, "an integer", value)
    if value < low:
        raise BadRequest(
            f"Invalid '{param}': integer below minimum value. Expected a value greater than or equal to "
            f"{low}, but got {value} instead.",
            param,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        raise BadRequest(
            f"Invalid '{param}': integer above maximum value. Expected a value less than or equal to "
            f"{high}, but got {value} instead.",
            param,
            "integer_above_max_value",
        )


def _number(value: Any, param: str, low: float, high: float | None) -> None:
    """A number in (low, high]: learning rates, beta and compute multipliers exclude their minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _type_error(param, "a number", value)
    if value <= low or (high is not None and value > high):
        bound = f"greater than {low}" + (f" and at most {high}" if high is not None else "")
        raise BadRequest(
            f"Invalid '{param}': expected a number {bound}, but got {value} instead.", param, "invalid_value"
        )


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error(param, "an object", value)
    return value


def _no_unknown(obj: dict[str, Any], allowed: frozenset[str] | set[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            param = f"{prefix}.{key}" if prefix else key
            raise BadRequest(f"Unknown parameter: '{param}'.", param, "unknown_parameter")


def _auto_or(value: Any, param: str, check: Any) -> None:
    if value == "auto":
        return
    check(value, param)


_HYPER: dict[str, Any] = {
    "batch_size": lambda v, p: _integer(v, p, 1, 256),
    "learning_rate_multiplier": lambda v, p: _number(v, p, 0.0, None),
    "n_epochs": lambda v, p: _integer(v, p, 1, 50),
}
_HYPER_BY_METHOD: dict[str, dict[str, Any]] = {
    "supervised": _HYPER,
    "dpo": {**_HYPER, "beta": lambda v, p: _number(v, p, 0.0, 2.0)},
    "reinforcement": {
        **_HYPER,
        "compute_multiplier": lambda v, p: _number(v, p, 0.00001, 10.0),
        "eval_interval": lambda v, p: _integer(v, p, 1, None),
        "eval_samples": lambda v, p: _integer(v, p, 1, None),
    },
}
_REASONING = ("default", "low", "medium", "high")


def _hyperparameters(value: Any, param: str, method: str) -> None:
    checks = _HYPER_BY_METHOD[method]
    hyper = _object(value, param)
    allowed = set(checks) | ({"reasoning_effort"} if method == "reinforcement" else set())
    _no_unknown(hyper, allowed, param)
    for name, item in hyper.items():
        if name == "reasoning_effort":
            if item not in _REASONING:
                raise BadRequest(
                    f"Invalid value for '{param}.{name}': expected one of {', '.join(_REASONING)}.",
                    f"{param}.{name}",
                    "invalid_value",
                )
            continue
        _auto_or(item, f"{param}.{name}", checks[name])


def _method(value: Any) -> None:
    method = _object(value, "method")
    if "type" not in method:
        raise BadRequest(
            "Missing required parameter: 'method.type'.", "method.type", "missing_required_parameter"
        )
    kind = method["type"]
    if kind not in METHODS:
        raise BadRequest(
            f"Invalid value: {kind!r}. Supported values are: 'supervised', 'dpo', and 'reinforcement'.",
            "method.type",
            "invalid_value",
        )
    _no_unknown(method, {"type", *METHODS}, "method")
    for other in METHODS:
        if other != kind and other in method:
            raise BadRequest(
                f"Invalid 'method.{other}': not allowed when 'method.type' is {kind!r}.",
                f"method.{other}",
                "invalid_value",
            )
    section = method.get(kind)
    if section is None:
        if kind == "reinforcement":
            raise BadRequest(
                "Missing required parameter: 'method.reinforcement.grader'.",
                "method.reinforcement.grader",
                "missing_required_parameter",
            )
        return
    section = _object(section, f"method.{kind}")
    allowed = {"hyperparameters", "grader"} if kind == "reinforcement" else {"hyperparameters"}
    _no_unknown(section, allowed, f"method.{kind}")
    if kind == "reinforcement":
        grader = section.get("grader")
        if grader is None:
            raise BadRequest(
                "Missing required parameter: 'method.reinforcement.grader'.",
                "method.reinforcement.grader",
                "missing_required_parameter",
            )
        if not isinstance(_object(grader, "method.reinforcement.grader").get("type"), str):
            raise BadRequest(
                "Missing required parameter: 'method.reinforcement.grader.type'.",
                "method.reinforcement.grader.type",
                "missing_required_parameter",
            )
    if "hyperparameters" in section:
        _hyperparameters(section["hyperparameters"], f"method.{kind}.hyperparameters", kind)


def _metadata(value: Any) -> None:
    metadata = _object(value, "metadata")
    if len(metadata) > METADATA_PAIRS:
        raise BadRequest(
            f"Invalid 'metadata': too many properties. Expected an object with at most {METADATA_PAIRS} "
            f"properties, but got an object with {len(metadata)} properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, item in metadata.items():
        if len(key) > METADATA_KEY_MAX:
            raise BadRequest(
                f"Invalid 'metadata': keys must be at most {METADATA_KEY_MAX} characters, got {len(key)}.",
                "metadata",
                "invalid_value",
            )
        if not isinstance(item, str):
            raise _type_error(f"metadata.{key}", "a string", item)
        if len(item) > METADATA_VALUE_MAX:
            raise BadRequest(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"{METADATA_VALUE_MAX}, but got a string with length {len(item)} instead.",
                f"metadata.{key}",
                "string_above_max_length",
            )


def _integrations(value: Any) -> None:
    if not isinstance(value, list):
        raise _type_error("integrations", "an array", value)
    if len(value) > 5:
        raise BadRequest(
            f"Invalid 'integrations': array too long. Expected an array with maximum length 5, but got an "
            f"array with length {len(value)} instead.",
            "integrations",
            "array_above_max_length",
        )
    for n, item in enumerate(value):
        param = f"integrations[{n}]"
        entry = _object(item, param)
        _no_unknown(entry, {"type", "wandb"}, param)
        if entry.get("type") != "wandb":
            raise BadRequest(
                f"Invalid value for '{param}.type': only 'wandb' is supported.",
                f"{param}.type",
                "invalid_value",
            )
        if "wandb" not in entry:
            raise BadRequest(
                f"Missing required parameter: '{param}.wandb'.",
                f"{param}.wandb",
                "missing_required_parameter",
            )
        wandb = _object(entry["wandb"], f"{param}.wandb")
        _no_unknown(wandb, {"project", "name", "entity", "tags"}, f"{param}.wandb")
        if "project" not in wandb:
            raise BadRequest(
                f"Missing required parameter: '{param}.wandb.project'.",
                f"{param}.wandb.project",
                "missing_required_parameter",
            )
        _string(wandb, "project", f"{param}.wandb.project", nullable=False)
        for name in ("name", "entity"):
            _string(wandb, name, f"{param}.wandb.{name}", nullable=True)
        tags = wandb.get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            raise _type_error(f"{param}.wandb.tags", "an array of strings", tags)


def _steering(metadata: dict[str, str] | None, defaults: Defaults) -> tuple[int, float, str]:
    """(events, seconds, outcome) of a job created over HTTP, from its ``sim_*`` metadata."""
    meta = metadata or {}
    try:
        n_events = int(meta.get(SIM_EVENTS, defaults.n_events))
        duration = float(meta.get(SIM_SECONDS, defaults.duration))
    except ValueError:
        raise BadRequest(
            f"Invalid 'metadata': {SIM_EVENTS} must be an int, {SIM_SECONDS} a number.",
            "metadata",
            "invalid_value",
        ) from None
    outcome = meta.get(SIM_OUTCOME, defaults.outcome)
    if outcome not in OUTCOMES or n_events < MIN_EVENTS or not math.isfinite(duration) or duration < 0:
        raise BadRequest(
            f"Invalid 'metadata': needs {SIM_OUTCOME} in {OUTCOMES}, {SIM_EVENTS} >= {MIN_EVENTS}, "
            f"{SIM_SECONDS} >= 0.",
            "metadata",
            "invalid_value",
        )
    return n_events, duration, outcome


def spec_from_request(body: Any, defaults: Defaults) -> JobSpec:
    """The job a create request asks for; :class:`BadRequest` for the first thing wrong with it."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", None, "invalid_json")
    _no_unknown(body, FIELDS, "")
    for name in ("model", "training_file"):
        if body.get(name) is None:
            raise BadRequest(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        _string(body, name, name, nullable=False)
    _string(body, "validation_file", "validation_file", nullable=True)
    _string(body, "suffix", "suffix", nullable=True, max_length=64)
    if body.get("seed") is not None:
        _integer(body["seed"], "seed", 0, SEED_MAX)
    if body.get("hyperparameters") is not None:
        _hyperparameters(body["hyperparameters"], "hyperparameters", "supervised")
    if body.get("method") is not None:
        _method(body["method"])
        if body.get("hyperparameters") is not None:
            raise BadRequest(
                "Invalid 'hyperparameters': pass them under 'method' when 'method' is given, not both.",
                "hyperparameters",
                "invalid_value",
            )
    if body.get("metadata") is not None:
        _metadata(body["metadata"])
    if body.get("integrations") is not None:
        _integrations(body["integrations"])
    metadata = body.get("metadata")
    n_events, duration, outcome = _steering(metadata, defaults)
    return JobSpec(
        n_events=n_events,
        duration=duration,
        outcome=outcome,
        model=body["model"],
        seed=body.get("seed"),
        training_file=body["training_file"],
        validation_file=body.get("validation_file"),
        suffix=body.get("suffix"),
        metadata=dict(metadata) if metadata is not None else None,
        method=body.get("method"),
        hyperparameters=body.get("hyperparameters"),
        integrations=body.get("integrations"),
    )
