"""Turn one HTTP response (status, headers, body bytes) into JSON or a clear FineTuneEventsError.

Shared by the sync and async drivers so both say the same thing about the same failure. JSON is
decoded with msgspec, which Airflow itself requires (apache-airflow-core depends on it), falling back
to the standard library for anything it refuses, so values and errors stay the standard library's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from airflow_ftevents.core.retry_rules import header, is_retryable_status, server_delay
from airflow_ftevents.errors import (
    FineTuneEventsAPIError,
    FineTuneEventsAuthError,
    FineTuneEventsConnectionError,
    FineTuneEventsError,
    FineTuneEventsNotFoundError,
    FineTuneEventsResponseError,
)

_HINTS = {
    400: "Check the request parameters (job id, cursor, limit)",
    401: "Check the API key in the connection's password (and extra 'api_type' for Azure)",
    403: "Check that the key's organization and project may read this job",
    404: "Check the job id, the base URL, and that api='fine_tuning' or 'fine_tunes' matches the job",
    408: "The service timed out; retries were exhausted, try again later or raise 'max_retries'",
    409: "The service reported a conflict; retries were exhausted, try again later",
    429: "Rate limited; retries were exhausted: lower concurrency, poll less often or raise 'max_retries'",
}


_msgspec_decode = msgspec.json.Decoder().decode


def loads(body: bytes) -> Any:
    """``json.loads(body)``, about twice as fast: msgspec (which Airflow itself depends on) decodes
    what it accepts to the same values, and the rest (NaN, a byte order mark, UTF-16, lone
    surrogates, invalid JSON) goes to ``json.loads``, so results and errors stay those of the stdlib."""
    try:
        return _msgspec_decode(body)
    except ValueError:  # msgspec.DecodeError
        return json.loads(body)


def loads_lines(block: bytes) -> list[Any]:
    """The values of a block of JSON lines (each ended by a newline; JSON escapes newlines inside
    strings), decoded as one JSON array."""
    if not block:
        return []
    try:
        return _msgspec_decode(b"[" + block[:-1].replace(b"\n", b",") + b"]")
    except ValueError:
        return [json.loads(line) for line in block.splitlines()]


def _no_redact(text: str) -> str:
    return text


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def api_error(
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes,
    what: str,
    redact: Callable[[str], str] = _no_redact,
) -> FineTuneEventsAPIError:
    """The exception for an error status, with the API's message, code and request id."""
    message = code = None
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, Mapping):
        err = payload.get("error")
        if isinstance(err, Mapping):
            message = err.get("message")
            code = err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = err
    if not message:
        message = f"{what} failed" + (f": {_snippet(body)}" if body else "")
    retryable = is_retryable_status(status, headers)
    cls: type[FineTuneEventsAPIError] = FineTuneEventsAPIError
    if status in (401, 403):
        cls = FineTuneEventsAuthError
    elif status == 404:
        cls = FineTuneEventsNotFoundError
    hint = _HINTS.get(status)
    if hint is None and status >= 500:
        hint = "The service failed and retries were exhausted; try again later or raise 'max_retries'"
    return cls(
        redact(str(message)),
        status_code=status,
        code=None if code is None else redact(str(code)),
        request_id=header(headers, "x-request-id"),
        hint=hint,
        retryable=retryable,
        retry_after=server_delay(headers) if retryable else None,
    )


def decode_json(
    status: int,
    headers: Mapping[str, str] | None,
    body: bytes,
    what: str,
    redact: Callable[[str], str] = _no_redact,
) -> Any:
    """JSON of a response, raising for an error status or for a success status that is not JSON.

    A non-JSON body on a success status (an HTML page from a proxy, a cut-off body) is marked
    retryable: such pages are usually transient, and the retry budget bounds the cost.
    """
    if status >= 400:
        raise api_error(status, headers, body, what, redact)
    try:
        return loads(body)
    except ValueError:
        content_type = header(headers, "content-type") or "no content type"
        raise FineTuneEventsResponseError(
            redact(
                f"{what} returned HTTP {status} with a body that is not JSON ({content_type}): "
                f"{_snippet(body)!r}"
            ),
            status_code=status,
            code="invalid_json",
            request_id=header(headers, "x-request-id"),
            hint="A proxy or gateway may be answering instead of the API; check the connection's base URL",
            retryable=True,
        ) from None


def require_mapping(value: Any, what: str, keys: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """Check the shape of a decoded body before anything relies on it."""
    if not isinstance(value, Mapping) or any(k not in value for k in keys):
        shown = type(value).__name__ if not isinstance(value, Mapping) else f"keys {sorted(value)[:8]}"
        raise FineTuneEventsResponseError(
            f"{what} returned an unexpected JSON shape ({shown}); expected an object with {list(keys)}",
            code="unexpected_shape",
            hint="Check that the connection's base URL points at an OpenAI-compatible API",
        )
    return value


__all__ = ["FineTuneEventsError", "api_error", "decode_json", "loads", "loads_lines", "require_mapping"]


def transport_error(
    what: str,
    exc: BaseException,
    base_url: str,
    timeout: float,
    timed_out: bool,
    redact: Callable[[str], str] = _no_redact,
) -> FineTuneEventsConnectionError:
    """The exception for a request that got no usable response (same words for requests and httpx)."""
    if timed_out:
        return FineTuneEventsConnectionError(
            f"{what} timed out ({type(exc).__name__})",
            code="timeout",
            hint=f"The server did not answer within {timeout:g} s; raise the connection's extra 'timeout' "
            "or try again later",
            retryable=True,
        )
    return FineTuneEventsConnectionError(
        redact(f"{what} failed: {type(exc).__name__}: {exc}"),
        code="connection_error",
        hint=f"Check that {base_url} is reachable; the connection failed on every retry",
        retryable=True,
    )
