"""Retry decisions and delays: which statuses retry, the server's requested delay, the backoff, and
the tenacity settings built from them."""

from __future__ import annotations

import email.utils
import logging

import pytest
from tenacity import Retrying

from airflow_ftevents.core.api import ApiRequest
from airflow_ftevents.core.retry import (
    backoff_delay,
    header,
    is_retryable_status,
    retry_settings,
    server_delay,
)
from airflow_ftevents.errors import (
    FineTuneEventsAPIError,
    FineTuneEventsConnectionError,
    FineTuneEventsNotFoundError,
)

NOW = 1_721_692_800.0


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
