"""The async driver (httpx) of the core's plans, for the trigger.

Everything runs on the triggerer's event loop without blocking it: async HTTP, async connection
lookup, ``asyncio.sleep`` between retries. Retry rules, paging, de-duplication and error messages
come from ``airflow_ftevents.core``, exactly as in the sync hook.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from tenacity import AsyncRetrying

from airflow_ftevents.core.config import ApiConfig, check_api
from airflow_ftevents.core.drivers import run_async
from airflow_ftevents.core.paging import (
    DEFAULT_PAGE_SIZE,
    LEGACY,
    ApiRequest,
    TailState,
    job_request,
    legacy_tail_plan,
    tail_new,
)
from airflow_ftevents.core.responses import decode_json, require_mapping, transport_error
from airflow_ftevents.core.retry import retry_settings
from airflow_ftevents.core.spool import ReverseSpool

log = logging.getLogger(__name__)


async def aget_connection(conn_id: str) -> Any:
    """Look a connection up without blocking the event loop, on every supported Airflow release."""
    from airflow.sdk import BaseHook

    getter = getattr(BaseHook, "aget_connection", None)
    if getter is not None:
        return await getter(conn_id)
    from asgiref.sync import sync_to_async  # pragma: no cover - releases without aget_connection

    return await sync_to_async(BaseHook.get_connection)(conn_id)  # pragma: no cover


class AsyncFineTuneEventsClient:
    """Async reads of a job and of its new events; use ``async with`` so the HTTP client is closed."""

    def __init__(self, config: ApiConfig, api: str = "fine_tuning", logger: logging.Logger | None = None):
        self.config = config
        self.api = check_api(api)
        self.log = logger or log
        self._client = httpx.AsyncClient(
            headers=config.headers(),
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.config.base_url!r}, api={self.api!r})"

    @classmethod
    async def from_connection(
        cls,
        conn_id: str,
        api: str = "fine_tuning",
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        logger: logging.Logger | None = None,
    ) -> AsyncFineTuneEventsClient:
        from airflow_ftevents.hooks import FineTuneEventsHook

        conn = await aget_connection(conn_id)
        return cls(FineTuneEventsHook.config_from_connection(conn, timeout, max_retries), api, logger)

    async def __aenter__(self) -> AsyncFineTuneEventsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _fetch_once(self, request: ApiRequest) -> Any:
        config = self.config
        try:
            response = await self._client.get(
                config.url(*request.segments), params=config.params(request.params)
            )
        except httpx.HTTPError as exc:
            raise transport_error(
                request.what,
                exc,
                config.base_url,
                config.timeout,
                isinstance(exc, httpx.TimeoutException),
                config.redact,
            ) from None
        return decode_json(
            response.status_code, response.headers, response.content, request.what, config.redact
        )

    async def _fetch(self, request: ApiRequest) -> Any:
        async for attempt in AsyncRetrying(**retry_settings(self.config.max_retries, self.log, request.what)):
            with attempt:
                return await self._fetch_once(request)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def get_job(self, job_id: str) -> dict[str, Any]:
        request = job_request(self.api, job_id)
        return dict(require_mapping(await self._fetch(request), request.what, ("status",)))

    async def read_new_events(
        self, job_id: str, state: TailState, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Only the events new since ``state`` (which is updated), oldest first; same plan as the hook."""
        plan = legacy_tail_plan(job_id, state) if self.api == LEGACY else tail_new(job_id, state, page_size)
        with ReverseSpool() as spool:
            async for page in run_async(plan, self._fetch):
                spool.add_page(page)
            for event in spool.iter_events():
                yield event
