"""The API endpoints of the simulator: the route table, auth, faults, and one method per endpoint.

Routes are matched on percent-decoded path segments (split on raw ``/`` first, so an id may hold an
escaped ``/``) under ``/v1``, ``/openai/v1`` and ``/openai``. Choices where the API documents nothing:

- an ``after`` that is not a visible event/job/checkpoint id is a 400 (``param: "after"``,
  ``code: "invalid_cursor"``); ``limit`` must be a positive integer (400 otherwise), with no maximum;
- cancelling, pausing or resuming a job whose status does not allow it is a 400 (``job_not_cancellable``,
  ``job_not_pausable``, ``job_not_resumable``): the API's answer to cancelling a finished job is not
  documented, and clients are to treat an error there as "already finished" and read the job. A
  simulator made with ``cancel_finished="unchanged"`` answers 200 with the job as it is instead, so a
  client can be tested against both answers;
- checkpoints are listed newest first (highest step first), ``limit`` 10 by default.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import unquote

from airflow_ftevents.simulator import faults as F
from airflow_ftevents.simulator.faults import Applied, FaultPlan
from airflow_ftevents.simulator.framing import ClientGone, Exchange, api_error, dumps
from airflow_ftevents.simulator.jobs import JobStore, parse_metadata_filter
from airflow_ftevents.simulator.model import Job, NotAllowed
from airflow_ftevents.simulator.validation import BadRequest, Defaults, spec_from_request

# Route prefixes: OpenAI (/v1), Azure v1 (/openai/v1) and older Azure routes (/openai, with api-version).
PREFIXES: tuple[tuple[str, ...], ...] = (("openai", "v1"), ("v1",), ("openai",))
JOB_ID = "{id}"


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path segments after the prefix (``{id}`` is the job id) and its name."""

    method: str
    segments: tuple[str, ...]
    name: str


ROUTE_TABLE: tuple[Route, ...] = (
    Route("GET", ("fine_tuning", "jobs"), F.JOBS_LIST),
    Route("POST", ("fine_tuning", "jobs"), F.CREATE),
    Route("GET", ("fine_tuning", "jobs", JOB_ID), F.JOB),
    Route("GET", ("fine_tuning", "jobs", JOB_ID, "events"), F.EVENTS),
    Route("GET", ("fine_tuning", "jobs", JOB_ID, "checkpoints"), F.CHECKPOINTS),
    Route("POST", ("fine_tuning", "jobs", JOB_ID, "cancel"), F.CANCEL),
    Route("POST", ("fine_tuning", "jobs", JOB_ID, "pause"), F.PAUSE),
    Route("POST", ("fine_tuning", "jobs", JOB_ID, "resume"), F.RESUME),
    Route("GET", ("fine-tunes",), F.LEGACY_LIST),
    Route("GET", ("fine-tunes", JOB_ID), F.LEGACY_JOB),
    Route("GET", ("fine-tunes", JOB_ID, "events"), F.LEGACY_EVENTS),  # LEGACY_STREAM with stream=true
)
LEGACY_ROUTES = frozenset({F.LEGACY_JOB, F.LEGACY_EVENTS, F.LEGACY_STREAM})

STREAM_BATCH = 256  # events per chunk when a stream catches up
CHUNKED_LIST_OVER = 20_000  # legacy lists longer than this are sent chunked instead of built in memory
HTML_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: (
        "server_error",
        "server_error",
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: (
        "server_error",
        "service_unavailable",
        "The engine is currently overloaded, please try again later.",
    ),
}
BAD_KEY = (
    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
)
NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY), or as the api-key header."
)
CANCEL_FINISHED = ("error", "unchanged")


def match(method: str, path: str, params: dict[str, str]) -> tuple[str, str | None] | None:
    """Endpoint name and decoded job id of a request, or None (404)."""
    raw = path.split("/")[1:]
    if len(raw) > 1 and raw[-1] == "":
        raw = raw[:-1]
    segments = [unquote(s) for s in raw]
    for prefix in PREFIXES:
        if tuple(segments[: len(prefix)]) == prefix:
            rest = segments[len(prefix) :]
            break
    else:
        return None
    for route in ROUTE_TABLE:
        if route.method != method or len(route.segments) != len(rest):
            continue
        job_id = None
        for want, have in zip(route.segments, rest, strict=True):
            if want == JOB_ID:
                job_id = have
            elif want != have:
                break
        else:
            if route.name == F.LEGACY_EVENTS and params.get("stream", "false").strip().lower() in (
                "true",
                "1",
            ):
                return F.LEGACY_STREAM, job_id
            return route.name, job_id
    return None


class Settings(Protocol):
    """What the endpoints read from the simulator on every request (tests may change it between requests)."""

    api_key: str | None
    realistic: bool
    raw_utf8: bool
    keepalive_interval: float
    default_events: int
    default_duration: float
    default_outcome: str
    cancel_finished: str
    request_log: list[tuple[str, str, int]]


def add_unknown_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Fields and an event type newer than the schema, as a future API version might send."""
    obj["x_unreleased_field"] = {"nested": [1, 2, 3], "note": "a field this client does not know"}
    if obj.get("type") == "message":
        obj["type"] = "checkpoint"
    return obj


def _bend_job(job: dict[str, Any], fault: Applied | None) -> dict[str, Any]:
    if fault is None:
        return job
    if fault.kind == "unknown_status":
        job["status"] = str(fault.params.get("status", "paused"))
    elif fault.kind == "unknown_fields":
        add_unknown_fields(job)
    return job


class _Call:
    """One API request being answered: the exchange, its fault, and fault-aware sending."""

    def __init__(self, exchange: Exchange, fault: Applied | None, raw_utf8: bool) -> None:
        self.exchange = exchange
        self.fault = fault
        self.kind = fault.kind if fault else None
        self.raw_utf8 = raw_utf8
        self.extra_headers = list(fault.params.get("headers", {}).items()) if fault else []

    def send(self, status: int, body: bytes, content_type: str = "application/json", **kw: Any) -> None:
        if self.kind == "malformed_json":
            body = body[: max(1, len(body) // 2)]
        headers = [*kw.pop("headers", ()), *self.extra_headers]
        self.exchange.send(status, body, content_type, headers, cut=self.kind == "drop_body")

    def json(self, status: int, obj: Any, **kw: Any) -> None:
        self.send(status, dumps(obj, self.raw_utf8), **kw)

    def error(
        self,
        status: int,
        message: str,
        code: str | None,
        param: str | None = None,
        type_: str = "invalid_request_error",
        **kw: Any,
    ) -> None:
        self.json(status, api_error(message, type_, code, param), **kw)

    def start_chunked(self, headers: list[tuple[str, str]]) -> None:
        self.exchange.start_chunked([*headers, *self.extra_headers])


class ApiRoutes:
    """Serves the API endpoints from a :class:`JobStore`, with auth, faults and the request log."""

    def __init__(self, settings: Settings, store: JobStore, faults: FaultPlan) -> None:
        self.settings = settings
        self.store = store
        self.faults = faults
        self._handlers: dict[str, Callable[[_Call, Job, dict[str, str]], None]] = {
            F.JOB: self._job,
            F.EVENTS: self._events,
            F.CHECKPOINTS: self._checkpoints,
            F.CANCEL: self._cancel,
            F.PAUSE: self._pause,
            F.RESUME: self._resume,
            F.LEGACY_JOB: self._legacy_job,
            F.LEGACY_EVENTS: self._legacy_events,
            F.LEGACY_STREAM: self._stream,
        }

    # ----------------------------------------------------------------- entry
    def __call__(self, exchange: Exchange) -> None:
        settings = self.settings
        log = settings.request_log
        exchange.on_answer = lambda status: log.append((exchange.method, exchange.raw_path, int(status)))
        if not self._authorized(exchange):
            return
        route = match(exchange.method, exchange.path, exchange.params)
        if route is None:
            exchange.error(404, f"Invalid URL ({exchange.method} {exchange.path})", code="unknown_url")
            return
        name, job_id = route
        fault = self.faults.take(exchange.raw_path, name)
        call = _Call(exchange, fault, settings.raw_utf8)
        if fault is not None and self._apply_fault_early(call):
            return
        try:
            self._serve(call, name, job_id)
        except ClientGone:
            raise
        except Exception as exc:  # a bug in the simulator must still answer in the API's shape
            exchange.close_after()
            call.error(
                500, f"Simulator error: {type(exc).__name__}: {exc}", "server_error", type_="server_error"
            )

    def _authorized(self, exchange: Exchange) -> bool:
        key = self.settings.api_key
        if not key:
            return True
        offered = []
        auth = exchange.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        if exchange.headers.get("api-key"):
            offered.append(exchange.headers.get("api-key", "").strip())
        if any(hmac.compare_digest(o.encode(), key.encode()) for o in offered):
            return True
        exchange.error(401, BAD_KEY if offered else NO_KEY, code="invalid_api_key")
        return False

    def _apply_fault_early(self, call: _Call) -> bool:
        """Faults that replace the response; ``True`` when nothing else must be sent."""
        assert call.fault is not None
        kind, params = call.fault.kind, call.fault.params
        if kind == "slow":
            call.exchange.wait(float(params.get("delay", 1.0)))
            return False
        if kind == "reset":
            call.exchange.reset()
            return True
        if kind == "reset_after_processing":
            call.exchange.reset_instead_of_answering()
            return False
        if kind == "html":
            call.send(200, HTML_PAGE, content_type="text/html")
            return True
        if kind.isdigit():
            status = int(kind)
            type_, code, message = STATUS_ERRORS.get(
                status,
                ("server_error" if status >= 500 else "invalid_request_error", None, "Simulated error."),
            )
            headers: list[tuple[str, str]] = []
            if "retry_after" in params:
                headers.append(("Retry-After", str(params["retry_after"])))
            if "retry_after_ms" in params:
                headers.append(("retry-after-ms", str(params["retry_after_ms"])))
            if params.get("retry_after_date"):
                ahead = 1.0 if params["retry_after_date"] is True else float(params["retry_after_date"])
                headers.append(("Retry-After", formatdate(time.time() + ahead, usegmt=True)))
            call.error(status, str(params.get("message", message)), code, type_=type_, headers=headers)
            return True
        return False

    def _serve(self, call: _Call, name: str, job_id: str | None) -> None:
        params = call.exchange.params
        if name == F.JOBS_LIST:
            self._jobs_list(call, params)
            return
        if name == F.LEGACY_LIST:
            data = [_bend_job(job.legacy_object(job.snapshot()), call.fault) for job in self.store.jobs()]
            call.json(200, {"object": "list", "data": data})
            return
        if name == F.CREATE:
            self._create(call)
            return
        assert job_id is not None
        job = self.store.get(job_id)
        if job is None:
            if name in LEGACY_ROUTES:
                message, param = f"No such fine-tune: {job_id}", "fine_tune_id"
            else:
                message, param = f"Fine-tuning job {job_id} not found.", "fine_tuning_job_id"
            call.error(404, message, "fine_tune_not_found", param)
            return
        self._handlers[name](call, job, params)

    # ----------------------------------------------------------------- helpers
    def _job_object(self, job: Job) -> dict[str, Any]:
        realistic = self.settings.realistic
        return job.job_object(job.snapshot(realistic=realistic), realistic)

    @staticmethod
    def _limit(call: _Call, params: dict[str, str], default: int = 20) -> int | None:
        text = params.get("limit")
        if text is None or text == "":
            return default
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if limit < 1:
            call.error(
                400, f"Invalid 'limit': expected a positive integer, got {text!r}.", "invalid_value", "limit"
            )
            return None
        return limit

    # ----------------------------------------------------------------- current API
    def _job(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        call.json(200, _bend_job(self._job_object(job), call.fault))

    def _create(self, call: _Call) -> None:
        settings = self.settings
        try:
            body = json.loads(call.exchange.body or b"null")
        except ValueError:
            body = None
        defaults = Defaults(settings.default_events, settings.default_duration, settings.default_outcome)
        try:
            spec = spec_from_request(body, defaults)
        except BadRequest as exc:
            call.error(400, exc.message, exc.code, exc.param)
            return
        call.json(200, self._job_object(self.store.add(spec)))

    def _cancel(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        try:
            job.cancel()
        except NotAllowed as exc:
            if self.settings.cancel_finished == "unchanged":
                call.json(200, self._job_object(job))
                return
            message = (
                f"Job {job.job_id} has already completed with status {exc.status!r} and cannot be cancelled."
            )
            call.error(400, message, "job_not_cancellable")
            return
        call.json(200, self._job_object(job))

    def _pause(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        try:
            job.pause()
        except NotAllowed as exc:
            call.error(400, str(exc), "job_not_pausable")
            return
        call.json(200, self._job_object(job))

    def _resume(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        try:
            job.resume()
        except NotAllowed as exc:
            call.error(400, str(exc), "job_not_resumable")
            return
        call.json(200, self._job_object(job))

    def _events(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        realistic = self.settings.realistic
        limit = self._limit(call, params)
        if limit is None:
            return
        kind = call.kind
        snap = job.snapshot(realistic=realistic)
        if kind == "empty_has_more":
            call.json(200, {"object": "list", "data": [], "has_more": True})
            return
        before = snap.visible
        after = params.get("after")
        if after and kind != "repeated_cursor":
            index = job.index_of(after)
            if index is None or index >= snap.visible:
                call.error(
                    400,
                    f"Invalid 'after': {after!r} is not the id of an event of this job.",
                    "invalid_cursor",
                    "after",
                )
                return
            before = index
        data, has_more = job.page(snap.visible, before, limit, realistic)
        if kind == "repeated_cursor":
            has_more = True
        elif kind == "data_null":
            for event in data:
                event["data"] = None
        elif kind == "unknown_fields":
            for event in data:
                add_unknown_fields(event)
        call.json(200, {"object": "list", "data": data, "has_more": has_more})

    def _checkpoints(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        limit = self._limit(call, params, default=10)
        if limit is None:
            return
        if call.kind == "empty_has_more":
            call.json(
                200, {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": True}
            )
            return
        found = job.checkpoints(job.snapshot())
        after = params.get("after")
        if after and call.kind != "repeated_cursor":
            ids = [checkpoint["id"] for checkpoint in found]
            if after not in ids:
                call.error(
                    400,
                    f"Invalid 'after': {after!r} is not the id of a checkpoint of this job.",
                    "invalid_cursor",
                    "after",
                )
                return
            found = found[ids.index(after) + 1 :]
        page = found[:limit]
        if call.kind == "unknown_fields":
            page = [add_unknown_fields(checkpoint) for checkpoint in page]
        call.json(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": call.kind == "repeated_cursor" or len(found) > limit,
            },
        )

    def _jobs_list(self, call: _Call, params: dict[str, str]) -> None:
        limit = self._limit(call, params)
        if limit is None:
            return
        kind = call.kind
        if kind == "empty_has_more":
            call.json(200, {"object": "list", "data": [], "has_more": True})
            return
        after = params.get("after") or None
        if kind == "repeated_cursor":
            after = None
        try:
            jobs, has_more = self.store.page(after, limit, parse_metadata_filter(call.exchange.query))
        except KeyError:
            call.error(400, f"Invalid 'after': no fine-tuning job {after!r}.", "invalid_cursor", "after")
            return
        data = [_bend_job(self._job_object(job), call.fault) for job in jobs]
        call.json(200, {"object": "list", "data": data, "has_more": has_more or kind == "repeated_cursor"})

    # ----------------------------------------------------------------- legacy API
    def _legacy_job(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        call.json(200, _bend_job(job.legacy_object(job.snapshot()), call.fault))

    def _legacy_events(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        visible = job.snapshot().visible
        unknown = call.kind == "unknown_fields"
        raw_utf8 = call.raw_utf8

        def event(i: int) -> dict[str, Any]:
            ev = job.legacy_event(i)
            return add_unknown_fields(ev) if unknown else ev

        if visible > CHUNKED_LIST_OVER and call.kind not in ("drop_body", "malformed_json"):

            def pieces() -> Iterator[bytes]:
                yield b'{"object":"list","data":['
                for start in range(0, visible, 1000):
                    part = b",".join(
                        dumps(event(i), raw_utf8) for i in range(start, min(visible, start + 1000))
                    )
                    yield (b"," if start else b"") + part
                yield b"]}"

            call.start_chunked([("Content-Type", "application/json")])
            for piece in pieces():
                call.exchange.chunk(piece)
            call.exchange.end_chunked()
            return
        call.json(200, {"object": "list", "data": [event(i) for i in range(visible)]})

    def _stream(self, call: _Call, job: Job, params: dict[str, str]) -> None:
        """Legacy SSE: oldest first, following the job live, keep-alive comments, then ``[DONE]``."""
        exchange = call.exchange
        drop_after: int | None = None
        if call.kind == "drop_stream":
            assert call.fault is not None
            drop_after = int(call.fault.params.get("after_events", 1))
        unknown = call.kind == "unknown_fields"
        raw_utf8 = call.raw_utf8
        call.start_chunked([("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])

        def line(i: int) -> bytes:
            event = job.legacy_event(i)
            if unknown:
                add_unknown_fields(event)
            return b"data: " + dumps(event, raw_utf8) + b"\n\n"

        position = 0
        last_write = time.monotonic()
        while True:
            if exchange.stopping.is_set():
                exchange.close_after()
                return
            snap = job.snapshot()
            if drop_after is not None and position >= drop_after:
                exchange.close_after()
                if call.fault is not None and call.fault.params.get("partial"):
                    nxt = line(position) if position < snap.visible else b"data: [DONE]\n\n"
                    exchange.chunk(nxt[: max(1, len(nxt) // 2)])
                return
            if position < snap.visible:
                end = min(snap.visible, position + STREAM_BATCH)
                if drop_after is not None:
                    end = min(end, drop_after)
                exchange.chunk(b"".join(line(i) for i in range(position, end)))
                position = end
                last_write = time.monotonic()
                continue
            if snap.terminal:
                if drop_after is not None:  # the stream is dropped before [DONE] whatever after_events says
                    exchange.close_after()
                    return
                exchange.chunk(b"data: [DONE]\n\n")
                exchange.end_chunked()
                return
            now = time.monotonic()
            idle = now - last_write
            keepalive = self.settings.keepalive_interval
            if keepalive > 0 and idle >= keepalive:
                exchange.chunk(b": keep-alive\n\n")
                last_write = now
                continue
            wait = 0.1
            if keepalive > 0:
                wait = min(wait, keepalive - idle)
            if snap.next_in is not None:
                wait = min(wait, snap.next_in + 0.001)
            exchange.wait(max(wait, 0.001))
