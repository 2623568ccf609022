"""The async driver (httpx) of the core's plans, for the trigger.

Everything runs on the triggerer's event loop without blocking it: async HTTP, async connection
lookup, ``asyncio.sleep`` between retries. Retry rules, paging, de-duplication and error messages
come from ``airflow_ftevents.core``, exactly as in the sync hook.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import requests.utils
from tenacity import AsyncRetrying

from airflow_ftevents.core.api import (
    LEGACY,
    ApiRequest,
    check_api,
    job_action_request,
    job_request,
    jobs_request,
)
from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.drivers import run_async
from airflow_ftevents.core.paging import DEFAULT_PAGE_SIZE, Plan, TailState, legacy_tail_plan, tail_new
from airflow_ftevents.core.responses import decode_json, require_mapping, transport_error
from airflow_ftevents.core.retry import retry_settings
from airflow_ftevents.core.spool import ReverseSpool
from airflow_ftevents.errors import FineTuneEventsError

log = logging.getLogger(__name__)

EVENTS_PER_STEP = 10  # events decoded and logged per step of the event loop
KEEPALIVE_SECONDS = 120.0
MAX_CACHED_REQUESTS = 16
# A trigger that sleeps this long or longer between polls closes its connection while it sleeps (see
# ``release_idle``); servers drop idle connections after about a minute anyway.
CLOSE_IDLE_AFTER_SECONDS = 30.0
_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client of the process.

    Building one loads the CA bundle: about 40 ms of blocking CPU and some memory per client, which a
    triggerer starting 1,000 triggers at once must not pay on its event loop (that is a stall of
    seconds). Same settings as httpx's default (certifi, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured).
    """
    global _ssl_context
    with _ssl_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


async def aload_config(
    conn_id: str, timeout: float | None = None, max_retries: int | None = None
) -> ApiConfig:
    """Read the connection in a worker thread, never on the event loop.

    ``BaseHook.aget_connection`` would be the natural call, but under ``dag.test()`` it cannot see
    connections stored in the metadata DB; ``sync_to_async`` works in the triggerer and in
    ``dag.test()`` on every supported release (it is what the dbt Cloud and Databricks hooks do).
    """
    from airflow.sdk import BaseHook
    from asgiref.sync import sync_to_async

    from airflow_ftevents._compat import mask_secret

    def load() -> ApiConfig:
        conn = BaseHook.get_connection(conn_id)
        if conn.password:
            mask_secret(conn.password)
        return ApiConfig.from_connection(conn, timeout=timeout, max_retries=max_retries)

    return await sync_to_async(load)()


@functools.lru_cache(maxsize=32)
def timeout_extensions(timeout: float, connect: float) -> dict[str, Any]:
    """The ``extensions`` of a request with these timeouts, one dict shared by every client and request.

    httpcore only reads it; one per client would be two more dicts that a thousand triggers keep alive.
    """
    return {"timeout": httpx.Timeout(timeout, connect=connect).as_dict()}


def environment_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``...).

    Resolved once per client with the same rules as the sync hook (``requests``), since requests
    go to one host.
    """
    proxies = requests.utils.get_environ_proxies(url)
    scheme = url.split(":", 1)[0].lower()
    return proxies.get(scheme) or proxies.get("all")


class AsyncFineTuneEventsClient:
    """Async reads of a job and of its new events; use ``async with`` so the HTTP client is closed.

    Requests go straight to an ``httpx.AsyncHTTPTransport`` (httpx's connection pool) rather than
    through ``httpx.AsyncClient``: a triggerer runs a thousand of these, and the client layer
    (cookies, auth and redirect flows, re-parsing the URL) costs a third of the CPU of a request and
    leaves every response in a reference cycle. Cyclic garbage is what makes the collector run
    full passes over the triggerer's heap, each one a stall of the event loop; this path leaves
    none, and neither does the retry policy. Between polls a trigger calls ``release_idle``, so it
    keeps alive as little as the next poll needs (the other thing that sets off full collections).
    """

    def __init__(
        self,
        config: ApiConfig,
        api: str = "fine_tuning",
        logger: logging.Logger | None = None,
        verify: ssl.SSLContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self.config = config
        self.api = check_api(api)
        self.log = logger or log
        self._verify = verify
        self._proxy = environment_proxy(config.base_url)
        self._own_transport = transport is None
        # Opened at the first request, closed again by ``release_idle`` before a long sleep.
        self._transport: httpx.AsyncBaseTransport | None = transport
        # Pairs of strings (a tuple of them is not tracked by the collector once it has seen it);
        # every ``httpx.Request`` copies its headers anyway.
        self._headers = tuple({**config.headers(), "Accept-Encoding": "gzip, deflate"}.items())
        self._extensions = timeout_extensions(config.timeout, config.connect_timeout)
        self._requests: dict[tuple[Any, ...], httpx.Request] = {}
        self._closed = False
        self._retrying_policy: AsyncRetrying | None = None

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
        config = await aload_config(conn_id, timeout, max_retries)
        # The shared TLS context is built in a thread the first time, so not even that blocks the loop.
        verify = _ssl_context or await asyncio.to_thread(shared_ssl_context)
        return cls(config, api, logger, verify)

    async def __aenter__(self) -> AsyncFineTuneEventsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The connection pool; opened again by the first request after ``release_idle`` closed it."""
        if self._transport is None:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed and cannot send requests")
            self._transport = httpx.AsyncHTTPTransport(
                verify=self._verify if self._verify is not None else shared_ssl_context(),
                # httpx drops idle connections after 5 s, so a trigger polling every 5 s or more would
                # open a new TCP (and TLS) connection for every poll; keep them as long as a usual poll
                # interval (a trigger sleeping longer closes its own, see ``release_idle``).
                limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS),
                proxy=self._proxy,
            )
        return self._transport

    @property
    def _retrying(self) -> AsyncRetrying:
        if self._retrying_policy is None:
            self._retrying_policy = AsyncRetrying(**retry_settings(self.config.max_retries, self.log))
        return self._retrying_policy

    def _drop_retrying(self) -> None:
        policy, self._retrying_policy = self._retrying_policy, None
        if policy is not None:
            # tenacity keeps the last call's actions, bound to the policy, inside the policy: a
            # reference cycle left for the collector. Clearing them lets it go by reference counting.
            policy.iter_state.reset()

    async def release_idle(self, sleep: float = 0.0) -> None:
        """Drop what only the next request needs before a ``sleep`` of that many seconds: the cached
        requests and the retry policy, and the connection too when the sleep is
        ``CLOSE_IDLE_AFTER_SECONDS`` or longer. Call it between requests only (a trigger between two
        polls); the next request builds them again.

        A trigger keeps them alive through its whole sleep otherwise: about fifty objects the collector
        tracks (each ``httpx.Request`` has its headers, URL and their parts), and some forty more for
        the connection and its pool, which a thousand triggers turn into the growth of the oldest
        generation that sets off CPython's full collections (stop-the-world passes over the
        triggerer's heap). A new connection per poll costs a TCP (and TLS) handshake and leaves a
        closed asyncio transport, a small reference cycle, to the collector: worth it only for long
        sleeps, which a server would end by dropping the idle connection anyway. A transport handed
        in by the caller is kept.
        """
        self._requests.clear()
        self._drop_retrying()
        if sleep >= CLOSE_IDLE_AFTER_SECONDS and self._own_transport and self._transport is not None:
            transport, self._transport = self._transport, None
            try:
                await transport.aclose()
            except Exception as exc:  # an idle connection that fails to close is no reason to stop
                self.log.debug("Closing the idle connection to %s failed: %s", self.config.base_url, exc)

    async def aclose(self) -> None:
        """Close the connections; a closed client cannot be used again."""
        self._closed = True
        self._requests.clear()
        self._drop_retrying()
        if self._transport is not None:
            await self._transport.aclose()

    def build_request(self, request: ApiRequest) -> httpx.Request:
        """The HTTP request for a plan's ``ApiRequest``: auth headers, escaped URL, timeouts, body.

        A GET is built once per distinct request and sent again on later polls (a GET without a body
        is never changed by sending it): a poll asks for the same two URLs every time.
        """
        config = self.config
        if request.method != "GET":
            url = httpx.URL(config.url(*request.segments), params=config.params(request.params))
            return httpx.Request(
                request.method, url, headers=self._headers, extensions=self._extensions, json=request.body
            )
        key = (request.segments, *request.params.items())
        built = self._requests.get(key)
        if built is None:
            url = httpx.URL(config.url(*request.segments), params=config.params(request.params))
            built = httpx.Request("GET", url, headers=self._headers, extensions=self._extensions)
            if len(self._requests) >= MAX_CACHED_REQUESTS:  # cursors of a long walk back come once
                self._requests.clear()
            self._requests[key] = built
        return built

    async def _fetch_once(self, request: ApiRequest) -> Any:
        config = self.config
        try:
            response = await self.transport.handle_async_request(self.build_request(request))
            try:
                body = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise transport_error(
                request.what,
                exc,
                config.base_url,
                config.timeout,
                isinstance(exc, httpx.TimeoutException),
                config.redact,
            ) from None
        return decode_json(response.status_code, response.headers, body, request.what, config.redact)

    async def _fetch(self, request: ApiRequest) -> Any:
        # Safe to share between concurrent calls: each call keeps its own RetryCallState, and the
        # policy's callbacks are plain functions that never suspend inside tenacity's bookkeeping.
        return await self._retrying(self._fetch_once, request)

    def run(self, plan: Plan) -> AsyncIterator[Any]:
        """Run one of the core's plans with this client's requests: what the plan emits, as it comes."""
        return run_async(plan, self._fetch)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        request = job_request(self.api, job_id)
        return dict(require_mapping(await self._fetch(request), request.what, ("status",)))

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job (a trigger whose task was killed); a job that already finished is returned as is."""
        request = job_action_request(job_id, "cancel")
        try:
            return dict(require_mapping(await self._fetch(request), request.what, ("status",)))
        except FineTuneEventsError as exc:
            if exc.status_code in (400, 409):  # the API refuses to cancel a finished job
                return await self.get_job(job_id)
            raise

    async def list_jobs(
        self, after: str | None = None, limit: int | None = None, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One page of jobs, newest created first (the watcher's poll)."""
        request = jobs_request(after, limit, metadata)
        return dict(require_mapping(await self._fetch(request), request.what, ("data",)))

    async def read_new_events(
        self, job_id: str, state: TailState, page_size: int = DEFAULT_PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Only the events new since ``state`` (which is updated), oldest first; same plan as the hook.

        Hands the event loop back every ``EVENTS_PER_STEP`` events: a trigger catching up on a long job
        decodes and logs thousands of events, which must not run as one step of the triggerer's loop.
        """
        plan = legacy_tail_plan(job_id, state) if self.api == LEGACY else tail_new(job_id, state, page_size)
        with ReverseSpool() as spool:
            async for page in self.run(plan):
                spool.add_page(page)
            for count, event in enumerate(spool.iter_events(), start=1):
                yield event
                if count % EVENTS_PER_STEP == 0:
                    await asyncio.sleep(0)
