"""Decoding the API's answers: error bodies into exact exceptions, JSON bodies, shapes, transport errors."""

from __future__ import annotations

import pickle

import pytest

from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.responses import api_error, decode_json, require_mapping, transport_error
from airflow_ftevents.errors import (
    FineTuneEventsAPIError,
    FineTuneEventsAuthError,
    FineTuneEventsConnectionError,
    FineTuneEventsNotFoundError,
    FineTuneEventsResponseError,
)

KEY = "sk-test-core-Qw3rTy7uI9oP"


def test_openai_error_body():
    body = (
        b'{"error": {"message": "Rate limit reached for requests", "type": "requests", '
        b'"param": null, "code": "rate_limit_exceeded"}}'
    )
    exc = api_error(429, {"x-request-id": "req_123", "retry-after": "2"}, body, "GET events")
    assert type(exc) is FineTuneEventsAPIError
    assert (exc.status_code, exc.code, exc.message, exc.request_id) == (
        429,
        "rate_limit_exceeded",
        "Rate limit reached for requests",
        "req_123",
    )
    assert (exc.retryable, exc.retry_after) == (True, 2.0)
    assert str(exc) == (
        "[HTTP 429, code=rate_limit_exceeded] Rate limit reached for requests (request id req_123). "
        "Rate limited; retries were exhausted: lower concurrency, poll less often or raise 'max_retries'"
    )


def test_error_type_used_when_code_missing():
    exc = api_error(400, {}, b'{"error": {"message": "Bad after", "type": "invalid_request_error"}}', "GET e")
    assert (exc.code, exc.message, exc.retryable, exc.retry_after) == (
        "invalid_request_error",
        "Bad after",
        False,
        None,
    )


def test_azure_error_body_with_string_code():
    body = b'{"error": {"code": "404", "message": "Resource not found"}}'
    exc = api_error(404, {"apim-request-id": "a"}, body, "GET fine-tuning job x")
    assert type(exc) is FineTuneEventsNotFoundError
    assert (exc.status_code, exc.code, exc.message, exc.request_id, exc.retryable) == (
        404,
        "404",
        "Resource not found",
        None,
        False,
    )
    assert str(exc) == (
        "[HTTP 404, code=404] Resource not found. "
        "Check the job id, the base URL, and that api='fine_tuning' or 'fine_tunes' matches the job"
    )


@pytest.mark.parametrize(("status", "cls"), [(401, FineTuneEventsAuthError), (403, FineTuneEventsAuthError)])
def test_auth_errors(status, cls):
    exc = api_error(status, {}, b'{"error": {"message": "no", "code": "invalid_api_key"}}', "GET x")
    assert type(exc) is cls
    assert exc.retryable is False


def test_error_as_plain_string_and_non_json_error_bodies():
    assert api_error(400, {}, b'{"error": "bad cursor"}', "GET x").message == "bad cursor"
    exc = api_error(502, {}, b"<html>\n  <body>Bad   Gateway</body></html>", "GET events")
    assert exc.message == "GET events failed: <html> <body>Bad Gateway</body></html>"
    assert (exc.code, exc.retryable, exc.retry_after) == (None, True, None)
    assert str(exc).endswith(
        ". The service failed and retries were exhausted; try again later or raise 'max_retries'"
    )
    assert api_error(500, {}, b"", "GET events").message == "GET events failed"
    long_body = b"x" * 500
    assert api_error(500, {}, long_body, "GET e").message == "GET e failed: " + "x" * 120 + "..."


def test_error_body_echoing_the_key_is_redacted():
    config = ApiConfig(api_key=KEY)
    body = f'{{"error": {{"message": "Incorrect API key provided: {KEY}", "code": "{KEY}"}}}}'.encode()
    exc = api_error(401, {}, body, "GET x", config.redact)
    assert exc.message == "Incorrect API key provided: ***"
    assert exc.code == "***"
    assert KEY not in str(exc) and KEY not in repr(exc)


def test_decode_json_success():
    assert decode_json(200, {}, b'{"data": [], "has_more": false}', "GET x") == {
        "data": [],
        "has_more": False,
    }


def test_decode_json_error_status_raises_api_error():
    with pytest.raises(FineTuneEventsNotFoundError) as info:
        decode_json(404, {"x-request-id": "req_9"}, b'{"error": {"message": "No such job"}}', "GET job")
    assert (info.value.message, info.value.request_id) == ("No such job", "req_9")


def test_non_json_success_body_is_retryable_response_error_with_snippet():
    html = b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>"
    with pytest.raises(FineTuneEventsResponseError) as info:
        decode_json(200, {"Content-Type": "text/html", "x-request-id": "req_h"}, html, "GET events of job j")
    exc = info.value
    assert (exc.status_code, exc.code, exc.request_id, exc.retryable) == (200, "invalid_json", "req_h", True)
    assert exc.message == (
        "GET events of job j returned HTTP 200 with a body that is not JSON (text/html): "
        "'<html> <head><title>502 Bad Gateway</title></head> <body>nginx</body></html>'"
    )
    with pytest.raises(FineTuneEventsResponseError, match=r"\(no content type\): '\{\"data\": \['"):
        decode_json(200, {}, b'{"data": [', "GET x")


def test_require_mapping():
    assert require_mapping({"status": "x"}, "GET job", ("status",)) == {"status": "x"}
    with pytest.raises(FineTuneEventsResponseError) as info:
        require_mapping({"id": "x"}, "GET job", ("status",))
    assert (
        info.value.message
        == "GET job returned an unexpected JSON shape (keys ['id']); expected an object with ['status']"
    )
    with pytest.raises(FineTuneEventsResponseError, match=r"\(str\)"):
        require_mapping("x", "GET job")


def test_transport_errors():
    exc = transport_error("GET job", TimeoutError("slow"), "https://h/v1", 30.0, True)
    assert (type(exc), exc.code, exc.retryable, exc.message) == (
        FineTuneEventsConnectionError,
        "timeout",
        True,
        "GET job timed out (TimeoutError)",
    )
    assert "within 30 s" in exc.hint
    redact = ApiConfig(api_key=KEY).redact
    exc = transport_error("GET job", OSError(f"refused {KEY}"), "https://h/v1", 30.0, False, redact)
    assert (exc.code, exc.message) == ("connection_error", "GET job failed: OSError: refused ***")
    assert exc.hint == "Check that https://h/v1 is reachable; the connection failed on every retry"


def test_errors_survive_pickling_with_their_attributes():
    exc = FineTuneEventsNotFoundError("No such job", status_code=404, code="404", request_id="r1", hint="h")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is FineTuneEventsNotFoundError
    assert (back.message, back.status_code, back.code, back.request_id, back.hint, str(back)) == (
        "No such job",
        404,
        "404",
        "r1",
        "h",
        str(exc),
    )
