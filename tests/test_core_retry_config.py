"""The sans-I/O core: retry decisions and delays, connection settings, and error/response decoding."""

from __future__ import annotations

import email.utils
import logging
import pickle

import pytest
from tenacity import Retrying

from airflow_ftevents.core.api import ApiRequest, check_api
from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.polling import next_poll_delay
from airflow_ftevents.core.responses import api_error, decode_json, require_mapping, transport_error
from airflow_ftevents.core.retry import (
    backoff_delay,
    header,
    is_retryable_status,
    retry_settings,
    server_delay,
)
from airflow_ftevents.errors import (
    FineTuneEventsAPIError,
    FineTuneEventsAuthError,
    FineTuneEventsConnectionError,
    FineTuneEventsError,
    FineTuneEventsNotFoundError,
    FineTuneEventsResponseError,
)

KEY = "sk-test-core-Qw3rTy7uI9oP"
NOW = 1_721_692_800.0

# -- retry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (408, True),
        (409, True),
        (422, False),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
    ],
)
def test_is_retryable_status(status, retryable):
    assert is_retryable_status(status) is retryable
    assert is_retryable_status(status, {}) is retryable


@pytest.mark.parametrize("value", ["true", "True", " TRUE "])
def test_x_should_retry_true_forces_a_retry(value):
    assert is_retryable_status(400, {"x-should-retry": value}) is True
    assert is_retryable_status(404, {"X-Should-Retry": value}) is True


@pytest.mark.parametrize("value", ["false", "False"])
def test_x_should_retry_false_forbids_a_retry(value):
    assert is_retryable_status(503, {"x-should-retry": value}) is False
    assert is_retryable_status(429, {"X-Should-Retry": value}) is False


def test_x_should_retry_other_values_are_ignored():
    assert is_retryable_status(503, {"x-should-retry": "maybe"}) is True
    assert is_retryable_status(400, {"x-should-retry": "1"}) is False


def test_header_lookup_is_case_insensitive():
    assert header({"Retry-After": "3"}, "retry-after") == "3"
    assert header({"retry-after": "3"}, "Retry-After") == "3"
    assert header(None, "x") is None
    assert header({}, "x") is None
    assert header({"a": "1"}, "b") is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms wins
        ({"retry-after-ms": "abc", "retry-after": "2"}, 2.0),  # unparsable ms: fall back to seconds
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "60"}, 60.0),
        ({"retry-after": "0"}, 0.0),
    ],
)
def test_server_delay_values(headers, expected):
    assert server_delay(headers, now=NOW) == expected


def test_server_delay_http_date_future_and_past():
    future = email.utils.formatdate(NOW + 30, usegmt=True)
    assert server_delay({"Retry-After": future}, now=NOW) == 30.0
    past = email.utils.formatdate(NOW - 30, usegmt=True)
    assert server_delay({"Retry-After": past}, now=NOW) == 0.0  # already due: retry now
    far = email.utils.formatdate(NOW + 3600, usegmt=True)
    assert server_delay({"Retry-After": far}, now=NOW) is None


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"retry-after": "61"},
        {"retry-after": "-1"},
        {"retry-after": "3600"},
        {"retry-after-ms": "60001"},
        {"retry-after-ms": "-5"},
        {"retry-after-ms": "nan"},
        {"retry-after": "inf"},
        {"retry-after": "soon"},
        {"retry-after": ""},
        {"retry-after": "Mon, 99 Foo 20xx"},
    ],
)
def test_server_delay_out_of_range_or_garbage_is_none(headers):
    assert server_delay(headers, now=NOW) is None


@pytest.mark.parametrize(
    ("retry", "base"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (20, 8.0)]
)
def test_backoff_bounds(retry, base):
    assert backoff_delay(retry, rng=lambda: 0.0) == base
    assert backoff_delay(retry, rng=lambda: 1.0) == base * 0.75
    assert backoff_delay(retry, rng=lambda: 0.5) == base * 0.875
    for _ in range(50):
        assert base * 0.75 <= backoff_delay(retry) <= base


def _retrying(max_retries: int, sleeps: list, log: logging.Logger | None = None) -> Retrying:
    return Retrying(sleep=sleeps.append, **retry_settings(max_retries, log, "GET thing"))


def _run(retrying: Retrying, outcomes: list) -> tuple[object, int]:
    calls = 0

    def attempt():
        nonlocal calls
        calls += 1
        outcome = outcomes[calls - 1]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return retrying(attempt), calls


def test_retry_settings_honour_server_delay_then_succeed(caplog):
    sleeps: list[float] = []
    logger = logging.getLogger("test.ftevents.retry")
    busy = FineTuneEventsAPIError("busy", status_code=429, retryable=True, retry_after=3.0)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        result, calls = _run(_retrying(2, sleeps, logger), [busy, busy, "ok"])
    assert (result, calls, sleeps) == ("ok", 3, [3.0, 3.0])
    assert [r.getMessage() for r in caplog.records] == [
        "GET thing failed ([HTTP 429] busy); retry 1 of 2 in 3.00 s",
        "GET thing failed ([HTTP 429] busy); retry 2 of 2 in 3.00 s",
    ]


def test_retry_settings_without_what_name_the_request_of_each_call(caplog):
    """One policy object per client: the message names the ApiRequest the retried call was given."""
    sleeps: list[float] = []
    logger = logging.getLogger("test.ftevents.retry.label")
    retrying = Retrying(sleep=sleeps.append, **retry_settings(1, logger))
    busy = FineTuneEventsAPIError("busy", status_code=503, retryable=True, retry_after=0.25)
    outcomes = {"a": [busy, "A"], "b": [busy, "B"]}

    def fetch(request: ApiRequest) -> str:
        outcome = outcomes[request.params["k"]].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    with caplog.at_level(logging.WARNING, logger=logger.name):
        assert retrying(fetch, ApiRequest(("x",), {"k": "a"}, "GET job a")) == "A"
        assert retrying(fetch, ApiRequest(("x",), {"k": "b"}, "GET job b")) == "B"
        assert retrying(lambda: "no argument") == "no argument"
    assert [r.getMessage() for r in caplog.records] == [
        "GET job a failed ([HTTP 503] busy); retry 1 of 1 in 0.25 s",
        "GET job b failed ([HTTP 503] busy); retry 1 of 1 in 0.25 s",
    ]


def test_retry_settings_backoff_without_server_delay_and_stop_after_max_retries_plus_one():
    sleeps: list[float] = []
    down = FineTuneEventsAPIError("down", status_code=503, retryable=True)
    with pytest.raises(FineTuneEventsAPIError) as info:
        _run(_retrying(3, sleeps), [down] * 10)
    assert info.value is down
    assert len(sleeps) == 3  # 4 attempts
    for got, base in zip(sleeps, [0.5, 1.0, 2.0], strict=True):
        assert base * 0.75 <= got <= base


def test_retry_settings_do_not_retry_non_retryable_or_foreign_errors():
    sleeps: list[float] = []
    with pytest.raises(FineTuneEventsNotFoundError):
        _run(_retrying(5, sleeps), [FineTuneEventsNotFoundError("nope", status_code=404), "ok"])
    with pytest.raises(KeyError):
        _run(_retrying(5, sleeps), [KeyError("x"), "ok"])
    assert sleeps == []


def test_retry_settings_zero_retries_is_one_attempt():
    sleeps: list[float] = []
    with pytest.raises(FineTuneEventsConnectionError):
        _run(_retrying(0, sleeps), [FineTuneEventsConnectionError("x", retryable=True), "ok"])
    assert sleeps == []


# -- polling schedule ----------------------------------------------------------------------------


def test_next_poll_delay_is_the_interval_less_up_to_ten_percent_jitter():
    assert next_poll_delay(60.0, None, 0.0, rng=lambda: 0.0) == 60.0
    assert next_poll_delay(60.0, None, 0.0, rng=lambda: 0.5) == 57.0
    assert next_poll_delay(60.0, None, 0.0, rng=lambda: 1.0) == 54.0
    delays = {next_poll_delay(60.0, None, 0.0) for _ in range(200)}
    assert len(delays) > 100 and all(54.0 <= d <= 60.0 for d in delays)


def test_next_poll_delay_keeps_the_deadline():
    assert next_poll_delay(60.0, 1_000.0, 990.0, rng=lambda: 0.0) == 10.0
    assert next_poll_delay(60.0, 1_000.0, 900.0, rng=lambda: 0.5) == 57.0
    assert next_poll_delay(60.0, 1_000.0, 1_000.0) is None
    assert next_poll_delay(60.0, 1_000.0, 1_000.5) is None


# -- config --------------------------------------------------------------------------------------


def test_config_defaults():
    config = ApiConfig.from_fields(host=None, password=KEY, extra=None)
    assert config == ApiConfig(
        api_key=KEY,
        base_url="https://api.openai.com/v1",
        organization=None,
        project=None,
        api_type="openai",
        api_version=None,
        timeout=600.0,
        connect_timeout=5.0,
        max_retries=2,
    )
    assert config.headers() == {
        "Accept": "application/json",
        "User-Agent": "airflow-ftevents",
        "Authorization": f"Bearer {KEY}",
    }
    assert config.params() == {}


def test_config_from_extras():
    config = ApiConfig.from_fields(
        host="http://127.0.0.1:8080/v1/",
        password=KEY,
        extra={
            "organization": "org-1",
            "project": "proj_1",
            "timeout": "30",
            "connect_timeout": 2,
            "max_retries": "5",
        },
    )
    assert (config.base_url, config.organization, config.project) == (
        "http://127.0.0.1:8080/v1",
        "org-1",
        "proj_1",
    )
    assert (config.timeout, config.connect_timeout, config.max_retries) == (30.0, 2.0, 5)
    assert config.headers() == {
        "Accept": "application/json",
        "User-Agent": "airflow-ftevents",
        "Authorization": f"Bearer {KEY}",
        "OpenAI-Organization": "org-1",
        "OpenAI-Project": "proj_1",
    }


def test_config_extra_as_json_string_and_host_without_scheme():
    config = ApiConfig.from_fields(host="api.example.com/v1", password=KEY, extra='{"max_retries": 0}')
    assert (config.base_url, config.max_retries) == ("https://api.example.com/v1", 0)
    assert ApiConfig.from_fields(host="", password=KEY, extra="  ").base_url == "https://api.openai.com/v1"
    assert ApiConfig.from_fields(host=None, password=KEY, extra={"base_url": "http://b/v1"}).base_url == (
        "http://b/v1"
    )


def test_config_from_official_provider_connection():
    extra = {
        "openai_client_kwargs": {
            "organization": "org-official",
            "project": "proj_official",
            "base_url": "https://proxy.example.com/v1",
            "timeout": 20,
            "max_retries": 4,
        }
    }
    config = ApiConfig.from_fields(host=None, password=KEY, extra=extra)
    assert (config.base_url, config.organization, config.project) == (
        "https://proxy.example.com/v1",
        "org-official",
        "proj_official",
    )
    assert (config.timeout, config.max_retries) == (20.0, 4)
    # top-level extras and the host win over openai_client_kwargs
    config = ApiConfig.from_fields(
        host="https://h/v1", password=KEY, extra={**extra, "organization": "org-top", "max_retries": 1}
    )
    assert (config.base_url, config.organization, config.max_retries) == ("https://h/v1", "org-top", 1)
    # a non-mapping openai_client_kwargs is ignored
    assert (
        ApiConfig.from_fields(host=None, password=KEY, extra={"openai_client_kwargs": "x"}).organization
        is None
    )


def test_config_azure_uses_api_key_header_and_api_version():
    config = ApiConfig.from_fields(
        host="https://res.openai.azure.com/openai",
        password=KEY,
        extra={"api_type": "Azure", "api_version": "2024-10-21"},
    )
    assert config.api_type == "azure"
    headers = config.headers()
    assert headers == {"Accept": "application/json", "User-Agent": "airflow-ftevents", "api-key": KEY}
    assert "Authorization" not in headers
    assert config.params({"after": "ftevent-1", "limit": 10, "x": None}) == {
        "after": "ftevent-1",
        "limit": "10",
        "api-version": "2024-10-21",
    }
    assert config.params() == {"api-version": "2024-10-21"}


def test_config_params_drop_none_and_lowercase_bools():
    config = ApiConfig(api_key=KEY)
    assert config.params({"stream": False, "after": None, "limit": 5}) == {"stream": "false", "limit": "5"}
    assert config.params({"stream": True}) == {"stream": "true"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"timeout": "abc"}, "Connection extra 'timeout' must be a number of seconds, got 'abc'"),
        ({"timeout": [1]}, "Connection extra 'timeout' must be a number of seconds, got [1]"),
        ({"timeout": 0}, "Connection extra 'timeout' must be greater than 0, got 0"),
        ({"timeout": -5}, "Connection extra 'timeout' must be greater than 0, got -5"),
        ({"connect_timeout": "x"}, "Connection extra 'connect_timeout' must be a number of seconds, got 'x'"),
        ({"max_retries": -1}, "Connection extra 'max_retries' must be a whole number >= 0, got -1"),
        ({"max_retries": "two"}, "Connection extra 'max_retries' must be a whole number >= 0, got 'two'"),
        ({"max_retries": 1.5}, "Connection extra 'max_retries' must be a whole number >= 0, got 1.5"),
        ({"max_retries": True}, "Connection extra 'max_retries' must be a whole number >= 0, got True"),
        ({"api_type": "bedrock"}, "Connection extra 'api_type' must be 'openai' or 'azure', got 'bedrock'"),
    ],
)
def test_config_bad_extras_raise_clear_errors(extra, message):
    with pytest.raises(FineTuneEventsError) as info:
        ApiConfig.from_fields(host=None, password=KEY, extra=extra)
    assert info.value.message == message
    assert info.value.hint is not None and "extra JSON" in info.value.hint
    assert KEY not in str(info.value)


def test_config_missing_key_and_bad_extra_json():
    with pytest.raises(FineTuneEventsError) as info:
        ApiConfig.from_fields(host=None, password="", extra=None)
    assert (
        str(info.value) == "The connection has no API key. Put the API key in the connection's password field"
    )
    with pytest.raises(FineTuneEventsError) as info:
        ApiConfig.from_fields(host=None, password=KEY, extra="{not json")
    assert (
        str(info.value) == "The connection's extra is not valid JSON. Fix the extra field of the connection"
    )


def test_config_repr_hides_the_key():
    config = ApiConfig.from_fields(host=None, password=KEY, extra={"organization": "org-1"})
    assert KEY not in repr(config)
    assert KEY not in str(config)
    assert repr(config) == (
        "ApiConfig(base_url='https://api.openai.com/v1', organization='org-1', project=None, "
        "api_type='openai', api_version=None, timeout=600.0, connect_timeout=5.0, max_retries=2)"
    )


@pytest.mark.parametrize(
    ("job_id", "path"),
    [
        ("ftjob-abc", "/fine_tuning/jobs/ftjob-abc/events"),
        ("../x?y z", "/fine_tuning/jobs/..%2Fx%3Fy%20z/events"),
        ("a/b", "/fine_tuning/jobs/a%2Fb/events"),
        ("a#b&c=d", "/fine_tuning/jobs/a%23b%26c%3Dd/events"),
        ("é", "/fine_tuning/jobs/%C3%A9/events"),
    ],
)
def test_url_escapes_each_segment(job_id, path):
    config = ApiConfig(api_key=KEY, base_url="https://h/v1")
    assert config.url("fine_tuning", "jobs", job_id, "events") == "https://h/v1" + path


@pytest.mark.parametrize("job_id", ["", ".", ".."])
def test_url_refuses_segments_that_cannot_be_escaped(job_id):
    # requests and httpx collapse dot segments (and "%2E" is unquoted back to "."), so these would
    # reach another path: /fine_tuning/events, /fine_tuning/jobs/events, /fine_tuning/jobs//events
    with pytest.raises(ValueError) as info:
        ApiConfig(api_key=KEY).url("fine_tuning", "jobs", job_id, "events")
    assert str(info.value) == f"A job id cannot be {job_id!r}: it would change the request path"
    assert ApiConfig(api_key=KEY, base_url="https://h/v1").url("fine_tuning", "jobs", "...") == (
        "https://h/v1/fine_tuning/jobs/..."
    )


def test_redact():
    config = ApiConfig(api_key=KEY)
    assert config.redact(f"Incorrect API key provided: {KEY}. Again {KEY}") == (
        "Incorrect API key provided: ***. Again ***"
    )
    assert config.redact("nothing secret") == "nothing secret"
    assert ApiConfig(api_key="abc").redact("abcabc") == "abcabc"  # too short to be a real key


def test_check_api():
    assert check_api("fine_tuning") == "fine_tuning"
    assert check_api("fine_tunes") == "fine_tunes"
    with pytest.raises(ValueError) as info:
        check_api("finetune")
    assert str(info.value) == (
        "api must be 'fine_tuning' (current API) or 'fine_tunes' (legacy API), got 'finetune'"
    )


# -- responses -----------------------------------------------------------------------------------


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


def test_from_connection_puts_a_split_base_url_back_together() -> None:
    from types import SimpleNamespace

    def base_url(host: str, port: int | None, schema: str | None) -> str:
        conn = SimpleNamespace(host=host, port=port, schema=schema, password=KEY, extra_dejson={})
        return ApiConfig.from_connection(conn).base_url

    assert base_url("http://127.0.0.1", 8080, "v1") == "http://127.0.0.1:8080/v1"
    assert base_url("api.example.com", None, "v1") == "https://api.example.com/v1"
    assert base_url("http://h:9/v2", 8080, "v1") == "http://h:9/v2"  # the host's own port and path win
    assert base_url("https://api.openai.com/v1", None, None) == "https://api.openai.com/v1"
