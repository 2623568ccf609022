"""Connection settings (ApiConfig): defaults, extras, the official provider's form, Azure, URLs, redaction;
and the API family check."""

from __future__ import annotations

import pytest

from airflow_ftevents.core.api import check_api
from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.errors import FineTuneEventsError

KEY = "sk-test-core-Qw3rTy7uI9oP"


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


def test_from_connection_puts_a_split_base_url_back_together() -> None:
    from types import SimpleNamespace

    def base_url(host: str, port: int | None, schema: str | None) -> str:
        conn = SimpleNamespace(host=host, port=port, schema=schema, password=KEY, extra_dejson={})
        return ApiConfig.from_connection(conn).base_url

    assert base_url("http://127.0.0.1", 8080, "v1") == "http://127.0.0.1:8080/v1"
    assert base_url("api.example.com", None, "v1") == "https://api.example.com/v1"
    assert base_url("http://h:9/v2", 8080, "v1") == "http://h:9/v2"  # the host's own port and path win
    assert base_url("https://api.openai.com/v1", None, None) == "https://api.openai.com/v1"
