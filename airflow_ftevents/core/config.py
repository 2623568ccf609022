"""Where to send requests and how to authenticate them, built from an Airflow connection's fields.

Pure data: the sync hook and the async client both build their requests from an :class:`ApiConfig`,
so OpenAI and Azure auth, path escaping and the ``api-version`` parameter are written once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_ftevents.core.api import ApiFamily
from airflow_ftevents.errors import FineTuneEventsError, InvalidJobIdError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 600.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 2
API_FAMILIES = tuple(family.value for family in ApiFamily)


def _first(*values: Any) -> Any:
    for value in values:
        if value not in (None, ""):
            return value
    return None


def _as_float(name: str, value: Any, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FineTuneEventsError(
            f"Connection extra {name!r} must be a number of seconds, got {value!r}",
            hint=f"Fix {name!r} in the connection's extra JSON",
        ) from None
    if number <= 0:
        raise FineTuneEventsError(
            f"Connection extra {name!r} must be greater than 0, got {value!r}",
            hint=f"Fix {name!r} in the connection's extra JSON",
        )
    return number


def _as_retries(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_MAX_RETRIES
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0 or str(number) != str(value).strip():
        raise FineTuneEventsError(
            f"Connection extra 'max_retries' must be a whole number >= 0, got {value!r}",
            hint="Fix 'max_retries' in the connection's extra JSON",
        )
    return number


@dataclass(frozen=True)
class ApiConfig:
    """Everything needed to address the API; ``repr`` never shows the key."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    organization: str | None = None
    project: str | None = None
    api_type: str = "openai"
    api_version: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES

    @classmethod
    def from_connection(
        cls, conn: Any, *, timeout: float | None = None, max_retries: int | None = None
    ) -> ApiConfig:
        """Read an Airflow ``Connection`` (ours, or one made for the official OpenAI provider).

        ``timeout`` and ``max_retries`` override the connection's extras. The sync hook, the async
        client and the command line all come through here, so none of them needs the others.
        """
        host = conn.host
        if host and (conn.port or conn.schema):
            # A connection may split the base URL into host, port and schema (path); put it back.
            parts = urlsplit(host if "://" in host else f"https://{host}")
            netloc = parts.netloc if parts.port or not conn.port else f"{parts.netloc}:{conn.port}"
            path = parts.path if parts.path.strip("/") or not conn.schema else f"/{conn.schema}"
            host = urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))
        config = cls.from_fields(host=host, password=conn.password, extra=conn.extra_dejson)
        overrides: dict[str, Any] = {}
        if timeout is not None:
            overrides["timeout"] = float(timeout)
        if max_retries is not None:
            overrides["max_retries"] = int(max_retries)
        return replace(config, **overrides) if overrides else config

    @classmethod
    def from_fields(
        cls, *, host: str | None, password: str | None, extra: Mapping[str, Any] | str | None
    ) -> ApiConfig:
        """Build from a connection's host, password (the key) and extra (a dict or its JSON)."""
        if isinstance(extra, str):
            try:
                extra = json.loads(extra) if extra.strip() else {}
            except ValueError:
                raise FineTuneEventsError(
                    "The connection's extra is not valid JSON", hint="Fix the extra field of the connection"
                ) from None
        extra = dict(extra or {})
        client_kwargs = extra.get("openai_client_kwargs") or {}
        if not isinstance(client_kwargs, Mapping):
            client_kwargs = {}
        if not password:
            raise FineTuneEventsError(
                "The connection has no API key",
                hint="Put the API key in the connection's password field",
            )
        base_url = _first(host, extra.get("base_url"), client_kwargs.get("base_url"), DEFAULT_BASE_URL)
        base_url = str(base_url).strip().rstrip("/")
        if "://" not in base_url:
            base_url = "https://" + base_url
        api_type = str(_first(extra.get("api_type"), "openai")).lower()
        if api_type not in ("openai", "azure"):
            raise FineTuneEventsError(
                f"Connection extra 'api_type' must be 'openai' or 'azure', got {api_type!r}",
                hint="Fix 'api_type' in the connection's extra JSON",
            )
        return cls(
            api_key=password,
            base_url=base_url,
            organization=_first(extra.get("organization"), client_kwargs.get("organization")),
            project=_first(extra.get("project"), client_kwargs.get("project")),
            api_type=api_type,
            api_version=_first(extra.get("api_version"), client_kwargs.get("api_version")),
            timeout=_as_float(
                "timeout", _first(extra.get("timeout"), client_kwargs.get("timeout")), DEFAULT_TIMEOUT
            ),
            connect_timeout=_as_float(
                "connect_timeout", extra.get("connect_timeout"), DEFAULT_CONNECT_TIMEOUT
            ),
            max_retries=_as_retries(_first(extra.get("max_retries"), client_kwargs.get("max_retries"))),
        )

    def headers(self) -> dict[str, str]:
        """Auth and identity headers: Bearer for OpenAI, ``api-key`` (and no Bearer) for Azure."""
        headers = {"Accept": "application/json", "User-Agent": "airflow-ftevents"}
        if self.api_type == "azure":
            headers["api-key"] = self.api_key
        else:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.organization:
            headers["OpenAI-Organization"] = str(self.organization)
        if self.project:
            headers["OpenAI-Project"] = str(self.project)
        return headers

    def url(self, *segments: str) -> str:
        """Join path segments, each percent-escaped, so a job id can never change the path or query."""
        for segment in segments:
            # "", "." and ".." survive escaping and are then collapsed by requests/httpx (dot segments):
            # no escaping can keep them in place, so they are refused instead of reaching another path.
            if str(segment) in ("", ".", ".."):
                raise InvalidJobIdError(
                    f"A job id cannot be {str(segment)!r}: it would change the request path"
                )
        return self.base_url + "".join("/" + quote(str(s), safe="") for s in segments)

    def params(self, params: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Query parameters without ``None`` values, plus ``api-version`` when the connection sets one."""
        out = {
            k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in (params or {}).items()
            if v is not None
        }
        if self.api_version:
            out["api-version"] = str(self.api_version)
        return out

    def redact(self, text: str) -> str:
        """Remove the key from any text that might echo it (error bodies, exception messages)."""
        if self.api_key and len(self.api_key) >= 4:
            return text.replace(self.api_key, "***")
        return text
