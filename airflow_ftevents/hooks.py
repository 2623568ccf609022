"""FineTuneEventsHook: authenticated, retried, paged and streamed reads of fine-tuning job events.

The hook is the thin sync driver (requests) of the plans in ``airflow_ftevents.core``; the sensor and
the export operator use it, the trigger uses :mod:`airflow_ftevents.async_client` with the same plans.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
from airflow.sdk import BaseHook
from tenacity import Retrying

from airflow_ftevents._compat import mask_secret
from airflow_ftevents.connection_form import CONN_TYPE
from airflow_ftevents.core.api import (
    CURRENT,
    LEGACY,
    ApiRequest,
    check_api,
    checkpoints_request,
    create_job_request,
    events_request,
    job_action_request,
    job_request,
    jobs_request,
    legacy_events_request,
    legacy_stream_request,
)
from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.drivers import run_sync
from airflow_ftevents.core.follow import JobFollower, NewEvent, Outcome
from airflow_ftevents.core.jobstate import is_terminal, job_status
from airflow_ftevents.core.legacy_stream import LegacyStreamResume, ReconnectBudget
from airflow_ftevents.core.paging import (
    DEFAULT_PAGE_SIZE,
    Plan,
    TailState,
    check_page_size,
    legacy_events,
    legacy_tail_plan,
    tail_new,
    walk_back,
    walk_checkpoints,
    walk_jobs,
)
from airflow_ftevents.core.responses import decode_json, require_mapping, transport_error
from airflow_ftevents.core.retry import retry_settings
from airflow_ftevents.core.spool import ReverseSpool, SpillForm
from airflow_ftevents.core.sse import SSEDecoder
from airflow_ftevents.core.window import EventWindow
from airflow_ftevents.errors import (
    FineTuneEventsConnectionError,
    FineTuneEventsError,
    FineTuneEventsResponseError,
)


class FineTuneEventsHook(BaseHook):
    """Read the events of an OpenAI (or Azure OpenAI) fine-tuning job.

    :param conn_id: Airflow connection: password = API key, host = base URL, extras ``organization``,
        ``project``, ``timeout``, ``max_retries``, ``api_type`` (``azure``), ``api_version``.
        A connection made for the official OpenAI provider works as it is.
    :param api: ``"fine_tuning"`` (current API, default) or ``"fine_tunes"`` (legacy API).
    :param timeout: seconds per request (read timeout); overrides the connection's extra.
    :param max_retries: retries after the first try; overrides the connection's extra.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "openai_default"
    conn_type = CONN_TYPE
    hook_name = "OpenAI fine-tuning events"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        api: str = CURRENT,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.api = check_api(api)
        self._timeout = timeout
        self._max_retries = max_retries
        self._config: ApiConfig | None = None
        self._session: requests.Session | None = None
        # The body and JSON of the last response, so a page can be spooled as the bytes it came in.
        self._last_response: tuple[bytes, Any] = (b"", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r}, api={self.api!r})"

    @classmethod
    def from_config(cls, config: ApiConfig, api: str = CURRENT) -> FineTuneEventsHook:
        """A hook that needs no Airflow connection (the ``ftevents`` command, scripts, tests)."""
        hook = cls(api=api)
        hook._config = config
        return hook

    # -- connection -------------------------------------------------------------------------------

    @classmethod
    def config_from_connection(
        cls, conn: Any, timeout: float | None = None, max_retries: int | None = None
    ) -> ApiConfig:
        """Build the request settings from an Airflow Connection, masking its key in every log."""
        if conn.password:
            mask_secret(conn.password)
        return ApiConfig.from_connection(conn, timeout=timeout, max_retries=max_retries)

    @property
    def config(self) -> ApiConfig:
        if self._config is None:
            self._config = self.config_from_connection(
                self.get_connection(self.conn_id), self._timeout, self._max_retries
            )
        return self._config

    def get_conn(self) -> requests.Session:
        """A pooled session carrying the auth headers."""
        if self._session is None:
            session = requests.Session()
            session.headers.update(self.config.headers())
            # Proxies and CA bundle from the environment, resolved once for the API's host (NO_PROXY
            # honoured): requests would re-read the whole environment and ~/.netrc on every request,
            # over half of the client's CPU in a long export. netrc must not replace our auth anyway.
            env = session.merge_environment_settings(self.config.base_url, {}, None, None, None)
            session.trust_env = False
            session.proxies.update(env["proxies"])
            session.verify = env["verify"]
            self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # -- one send path ------------------------------------------------------------------------------

    def _send_once(self, request: ApiRequest, **kwargs: Any) -> requests.Response:
        config = self.config
        try:
            return self.get_conn().request(
                request.method,
                config.url(*request.segments),
                params=config.params(request.params),
                json=request.body,
                timeout=(config.connect_timeout, config.timeout),
                **kwargs,
            )
        except requests.RequestException as exc:
            raise transport_error(
                request.what,
                exc,
                config.base_url,
                config.timeout,
                isinstance(exc, requests.Timeout),
                config.redact,
            ) from None

    def _fetch_json_once(self, request: ApiRequest) -> Any:
        response = self._send_once(request)
        try:
            body = response.content
        except requests.RequestException as exc:
            raise FineTuneEventsConnectionError(
                f"{request.what}: the connection dropped while reading the body ({type(exc).__name__})",
                code="connection_error",
                hint="The server or a proxy cut the response; retries were exhausted",
                retryable=True,
            ) from None
        value = decode_json(response.status_code, response.headers, body, request.what, self.config.redact)
        self._last_response = (body, value)
        return value

    def _fetch(self, request: ApiRequest) -> Any:
        """One request with retries; the plans of the core call this for every request they need."""
        for attempt in Retrying(**retry_settings(self.config.max_retries, self.log, request.what)):
            with attempt:
                return self._fetch_json_once(request)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def run(self, plan: Plan) -> Iterator[Any]:
        """Run one of the core's plans with this hook's requests: what the plan emits, as it comes."""
        return run_sync(plan, self._fetch)

    # -- public API --------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> dict[str, Any]:
        """The job object (``status``, ``error``, ``fine_tuned_model``, ...)."""
        request = job_request(self.api, job_id)
        return dict(require_mapping(self._fetch(request), request.what, ("status",)))

    def list_events(self, job_id: str, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """Exactly one page as the API returns it (current API: newest first).

        On the legacy API this is the whole ``stream=false`` list (oldest first); ``after`` and ``limit``
        do not apply there and are refused rather than silently ignored.
        """
        if self.api == LEGACY:
            if after is not None or limit is not None:
                raise ValueError("after and limit do not apply to the legacy fine-tunes API; omit them")
            request = legacy_events_request(job_id)
        else:
            if limit is not None:
                check_page_size(limit)
            request = events_request(job_id, after, limit)
        return self._page(request)

    def _page(self, request: ApiRequest) -> dict[str, Any]:
        return dict(require_mapping(self._fetch(request), request.what, ("data",)))

    def _body_of(self, page: list[dict[str, Any]]) -> bytes | None:
        """The last response's body if ``page`` is exactly its ``data`` list (same objects, same order)."""
        body, value = self._last_response
        data = value.get("data") if isinstance(value, Mapping) else None
        if isinstance(data, list) and len(data) == len(page) and all(map(operator.is_, page, data)):
            return body
        return None

    def _fill(self, spool: ReverseSpool, plan: Any, job_id: str) -> ReverseSpool:
        started = last_log = time.monotonic()
        for pages, page in enumerate(self.run(plan), start=1):
            spool.add_page(page, self._body_of(page))
            now = time.monotonic()
            if now - last_log >= 10:
                last_log = now
                self.log.info(
                    "Job %s: read %d events in %d pages so far (%.0f events/s)",
                    job_id,
                    spool.count,
                    pages,
                    spool.count / max(now - started, 1e-9),
                )
        return spool

    def _spooled(
        self, job_id: str, page_size: int, window: EventWindow | None, spill: SpillForm
    ) -> ReverseSpool:
        """Every event of the job read (newest page first) into a spool, ready to replay oldest first."""
        check_page_size(page_size)
        plan = legacy_events(job_id) if self.api == LEGACY else walk_back(job_id, page_size, window=window)
        spool = ReverseSpool(spill=spill)
        try:
            if self.api == LEGACY and window is not None and not window.unbounded:
                for page in self.run(plan):
                    spool.add_page([e for e in page if window.contains(e)])
            else:
                self._fill(spool, plan, job_id)
        except BaseException:
            spool.close()
            raise
        return spool

    def iter_event_blocks(
        self, job_id: str, page_size: int = DEFAULT_PAGE_SIZE, window: EventWindow | None = None
    ) -> Iterator[bytes]:
        """Every event of the job as JSON Lines blocks, oldest first: what the export writes.

        Pages are read newest first and spooled (memory bounded, spilled to a temporary file as the
        lines themselves), then replayed oldest first. Nothing is yielded before the whole read succeeded.
        """
        with self._spooled(job_id, page_size, window, "lines") as spool:
            yield from spool.iter_pages()

    def iter_events(
        self, job_id: str, page_size: int = DEFAULT_PAGE_SIZE, window: EventWindow | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every event of the job, oldest first, each exactly once, in bounded memory.

        The same read as :meth:`iter_event_blocks`, spooled as decoded events: no event is encoded to
        JSON and decoded again on the way.
        """
        with self._spooled(job_id, page_size, window, "events") as spool:
            for page in spool.iter_event_pages():
                yield from page

    def read_new_events(
        self, job_id: str, state: TailState, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """Only the events that are new since ``state`` (which is updated), oldest first.

        Current API: reads the newest pages until the newest id already seen. Legacy API: the list
        again, skipping by position.
        """
        plan = legacy_tail_plan(job_id, state) if self.api == LEGACY else tail_new(job_id, state, page_size)
        with ReverseSpool() as spool:
            self._fill(spool, plan, job_id)
            yield from spool.iter_events()

    def poll_job(self, follower: JobFollower) -> list[Outcome]:
        """One poll of a followed job (status, then new events): the sensor's poke."""
        return list(self.run(follower.poll()))

    def follow_job(
        self,
        follower: JobFollower,
        poll_interval: float,
        end_time: float | None = None,
        *,
        tolerate_errors: bool = False,
    ) -> Iterator[Outcome]:
        """Follow a job until it is terminal or ``end_time`` (unix seconds) passed: every outcome."""
        return self.run(follower.follow(poll_interval, end_time, tolerate_errors=tolerate_errors))

    def stream_events(
        self,
        job_id: str,
        poll_interval: float = 10.0,
        page_size: int = DEFAULT_PAGE_SIZE,
        state: TailState | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Follow a job live: each event once, oldest first, as it appears; return when the job finished.

        Current API: polls the job, then reads only what is new; the status is read *before* the events,
        so the read that follows a terminal status holds the last events. Legacy API: the server-sent
        events stream to ``[DONE]``, reconnecting after a drop without duplicates or gaps. ``state``
        (updated as events come) lets a caller resume after an error without repeating an event.
        """
        if poll_interval < 0:
            raise ValueError(f"poll_interval must be >= 0 seconds, got {poll_interval!r}")
        state = state if state is not None else TailState()
        if self.api == LEGACY:
            yield from self._stream_legacy(job_id, state)
            return
        follower = JobFollower(job_id, self.api, page_size, tail=state)
        for outcome in self.follow_job(follower, poll_interval):
            if isinstance(outcome, NewEvent):
                yield outcome.event

    # -- legacy server-sent events -----------------------------------------------------------------

    def _stream_once(self, job_id: str, resume: LegacyStreamResume) -> Iterator[dict[str, Any]]:
        request = legacy_stream_request(job_id)
        response = self._send_once(request, stream=True, headers={"Accept": "text/event-stream"})
        with response:
            if response.status_code >= 400:
                decode_json(
                    response.status_code, response.headers, response.content, request.what, self.config.redact
                )
            self._check_event_stream(response, request)
            decoder = SSEDecoder()
            resume.new_connection()
            try:
                for chunk in response.iter_content(chunk_size=None):
                    for sse in decoder.feed(chunk):
                        event = resume.accept(sse, job_id)
                        if event is not None:
                            yield event
                        elif resume.done:
                            return
            except requests.RequestException as exc:
                raise FineTuneEventsConnectionError(
                    f"The event stream of fine-tune {job_id} dropped after {resume.position} events "
                    f"({type(exc).__name__})",
                    code="stream_dropped",
                    retryable=True,
                ) from None
        raise FineTuneEventsConnectionError(
            f"The event stream of fine-tune {job_id} ended before [DONE] after {resume.position} events",
            code="stream_dropped",
            retryable=True,
        )

    def _check_event_stream(self, response: requests.Response, request: ApiRequest) -> None:
        """A success status whose body is no event stream (a proxy's HTML page) is named as such.

        Without this, such a body decodes to no events and the stream looks merely cut short. A missing
        Content-Type is given the benefit of the doubt.
        """
        content_type = response.headers.get("content-type") or ""
        if not content_type or "event-stream" in content_type.lower():
            return
        try:
            head = next(response.iter_content(chunk_size=512), b"")
        except requests.RequestException:
            head = b""
        snippet = " ".join(head.decode("utf-8", "replace").split())[:120]
        raise FineTuneEventsResponseError(
            self.config.redact(
                f"{request.what} returned HTTP {response.status_code} with {content_type} instead of an "
                f"event stream (text/event-stream): {snippet!r}"
            ),
            status_code=response.status_code,
            code="not_event_stream",
            request_id=response.headers.get("x-request-id"),
            hint="A proxy or gateway may be answering instead of the API; check the connection's base URL",
            retryable=True,
        )

    def _stream_legacy(self, job_id: str, state: TailState) -> Iterator[dict[str, Any]]:
        """Reconnect loop for the legacy stream.

        Not tenacity: the retry budget starts afresh whenever a connection delivered new events, so a
        long stream that drops every hour is followed to the end, while one that fails repeatedly
        without progress stops after ``max_retries`` reconnects with a clear error.
        """
        resume = LegacyStreamResume(state.count)
        budget = ReconnectBudget(self.config.max_retries)
        while True:
            before = resume.position
            try:
                for event in self._stream_once(job_id, resume):
                    state.count = resume.position
                    yield event
                return
            except FineTuneEventsError as exc:
                delay = budget.after_failure(exc, resume.position > before, job_id)
                self.log.warning("%s; reconnecting in %.2f s (%d events so far)", exc, delay, resume.position)
                time.sleep(delay)

    # -- jobs ------------------------------------------------------------------------------------------

    def _require_current(self, what: str) -> None:
        if self.api == LEGACY:
            raise ValueError(
                f"{what} uses the current fine_tuning API; the legacy fine_tunes API has no such call"
            )

    def create_job(self, model: str, training_file: str, **fields: Any) -> dict[str, Any]:
        """Start a fine-tuning job (``POST /fine_tuning/jobs``); returns the new job object.

        ``fields`` are the create request's other fields (``JOB_CREATE_FIELDS``: validation_file,
        method, hyperparameters, suffix, seed, metadata, integrations, and any the API adds); ``None``
        values are not sent. Tried once, never retried: a retried POST whose first attempt reached the
        server would start a second, billed job. ``FineTuneJobOperator`` resolves an unknown outcome by
        listing the jobs tagged with its task instance before it tries again.
        """
        self._require_current("create_job")
        request = create_job_request(model, training_file, fields)
        return dict(require_mapping(self._fetch_json_once(request), request.what, ("id", "status")))

    def list_jobs(
        self, after: str | None = None, limit: int | None = None, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One page of jobs as the API returns it, newest created first; ``metadata={"k": "v"}`` is sent
        as ``metadata[k]=v`` (every pair must match)."""
        self._require_current("list_jobs")
        if limit is not None:
            check_page_size(limit)
        return self._page(jobs_request(after, limit, metadata))

    def iter_jobs(
        self, metadata: dict[str, str] | None = None, page_size: int = DEFAULT_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        """Every job (matching ``metadata``), newest created first, each once."""
        self._require_current("iter_jobs")
        seen: set[str] = set()
        for page in self.run(walk_jobs(metadata, page_size)):
            for job in page:
                if job.get("id") not in seen:
                    seen.add(job.get("id"))
                    yield dict(job)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job (``POST /fine_tuning/jobs/{id}/cancel``); returns the job.

        Cancelling a job that already finished is not an error: the job is returned as it is.
        Retried like a read: cancelling twice has the same effect as once.
        """
        self._require_current("cancel_job")
        request = job_action_request(job_id, "cancel")
        try:
            return dict(require_mapping(self._fetch(request), request.what, ("status",)))
        except FineTuneEventsError as exc:
            if exc.status_code in (400, 409):  # the API refuses to cancel a finished job
                job = self.get_job(job_id)
                if is_terminal(job_status(job)):
                    return job
            raise

    def list_checkpoints(
        self, job_id: str, after: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of a job's checkpoints as the API returns it, newest first."""
        self._require_current("list_checkpoints")
        if limit is not None:
            check_page_size(limit)
        return self._page(checkpoints_request(job_id, after, limit))

    def iter_checkpoints(self, job_id: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every checkpoint of a job, newest first."""
        self._require_current("iter_checkpoints")
        for page in self.run(walk_checkpoints(job_id, page_size)):
            yield from (dict(checkpoint) for checkpoint in page)

    # -- Airflow UI --------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one cheap authenticated read."""
        try:
            self._page(jobs_request(limit=1))
        except FineTuneEventsError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI shows the message instead of a stack trace
            return False, f"{type(exc).__name__}: {exc}"
        return True, f"Connection OK: listed fine-tuning jobs at {self.config.base_url}"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_ftevents.connection_form import UI_FIELD_BEHAVIOUR

        return UI_FIELD_BEHAVIOUR

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from airflow_ftevents.connection_form import connection_form_widgets

        return connection_form_widgets()
