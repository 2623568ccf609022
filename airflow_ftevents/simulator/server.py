"""HTTP server of the simulator: both endpoint families, auth, errors, streams and fault injection.

Standard library only (it must start fast and run anywhere). HTTP/1.1 with keep-alive, so a
``requests.Session`` reuses one connection; every response is written with one ``sendall`` and
``TCP_NODELAY`` so small responses do not wait on delayed ACKs. :meth:`Simulator.stop` closes every open
connection, which ends idle keep-alive readers and live streams at once.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

from airflow_ftevents.simulator import faults as F
from airflow_ftevents.simulator.faults import Applied, FaultPlan
from airflow_ftevents.simulator.model import MIN_EVENTS, OUTCOMES, Job, JobSpec, random_alnum

# Route prefixes: OpenAI (/v1), Azure v1 (/openai/v1) and older Azure routes (/openai, with api-version).
_PREFIXES: tuple[tuple[str, ...], ...] = (("openai", "v1"), ("v1",), ("openai",))
_STREAM_BATCH = 256  # events per chunk when a stream catches up
_CHUNKED_LIST_OVER = 20_000  # legacy lists longer than this are sent chunked instead of built in memory
_HTML_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_ERRORS: dict[int, tuple[str, str | None, str]] = {
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
_BAD_KEY = (
    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
)
_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY), or as the api-key header."
)


def _dumps(obj: Any, raw_utf8: bool = False) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=not raw_utf8).encode()


def api_error(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """The API's error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _ClientGone(Exception):
    """The peer closed the connection, or the simulator is stopping: abandon this response."""


class _Server(ThreadingHTTPServer):
    """Threading server that tracks its handler threads, so stop() can wait for every one of them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: Simulator, family: int) -> None:
        self.address_family = family
        self.sim = sim
        self.handler_threads: set[threading.Thread] = set()
        self.threads_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine without DNS.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="ftevents-sim-conn"
        )
        with self.threads_lock:
            self.handler_threads.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.threads_lock:
                self.handler_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.sim.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One connection; serves requests until the client or the simulator closes it."""

    protocol_version = "HTTP/1.1"
    server_version = "ftevents-simulator/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _Server
    _request_id = ""
    _control = False

    # ----------------------------------------------------------------- connection life
    def setup(self) -> None:
        super().setup()
        sim = self.server.sim
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with sim._lock:
            sim._conns.add(self.connection)
            sim.connections_accepted += 1
        if sim._stopping.is_set():
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        sim = self.server.sim
        with sim._lock:
            sim._conns.discard(self.connection)
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def handle(self) -> None:
        with contextlib.suppress(_ClientGone, ConnectionError, TimeoutError, OSError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Requests that http.server rejects (malformed, unsupported method) still get the API's shape."""
        self._request_id = "req_" + uuid.uuid4().hex
        self.close_connection = True
        with contextlib.suppress(_ClientGone):
            self._error(int(code), message or "Bad request.", "invalid_request_error", None)

    # ----------------------------------------------------------------- low-level writing
    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as exc:
            self.close_connection = True
            raise _ClientGone() from exc

    def _head(self, status: int, headers: Iterable[tuple[str, str]]) -> bytes:
        reason = self.responses.get(status, ("Error",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            f"Server: {self.server_version}",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("Connection: close" if self.close_connection else "Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _log(self, status: int) -> None:
        if not self._control:
            command, path = getattr(self, "command", None) or "", getattr(self, "path", None) or ""
            self.server.sim.request_log.append((command, path, int(status)))
        if self.server.sim.verbose:
            self.log_request(status)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
        fault: Applied | None = None,
    ) -> None:
        """Send a whole response in one write; ``malformed_json``/``drop_body`` faults bend it here."""
        kind = fault.kind if fault else None
        if kind == "malformed_json":
            body = body[: max(1, len(body) // 2)]
        all_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-request-id", self._request_id),
            *headers,
        ]
        if fault:
            all_headers += list(fault.params.get("headers", {}).items())
        if kind == "drop_body":
            self.close_connection = True
            self._log(status)
            self._write(self._head(status, all_headers) + body[: len(body) // 2])
            return
        self._log(status)
        self._write(self._head(status, all_headers) + body)

    def _send_json(self, status: int, obj: Any, fault: Applied | None = None, **kw: Any) -> None:
        self._send(status, _dumps(obj, self.server.sim.raw_utf8), fault=fault, **kw)

    def _start_chunked(self, headers: list[tuple[str, str]], fault: Applied | None) -> None:
        """Log a 200 and send its head for a chunked body (a big JSON page or an event stream)."""
        headers = [*headers, ("Transfer-Encoding", "chunked"), ("x-request-id", self._request_id)]
        if fault:
            headers += list(fault.params.get("headers", {}).items())
        self._log(200)
        self._write(self._head(200, headers))

    def _send_chunked_json(self, pieces: Iterator[bytes], fault: Applied | None) -> None:
        """Send a large JSON body with chunked encoding, generated piece by piece."""
        self._start_chunked([("Content-Type", "application/json")], fault)
        for piece in pieces:
            self._chunk(piece)
        self._write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _reset(self) -> None:
        """Close the socket with a TCP reset and no response at all."""
        self.close_connection = True
        self._log(0)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError, ValueError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    def _error(
        self, status: int, message: str, type_: str, code: str | None, param: str | None = None, **kw: Any
    ) -> None:
        self._send_json(status, api_error(message, type_, code, param), **kw)

    # ----------------------------------------------------------------- request handling
    def _dispatch(self, method: str) -> None:
        self._request_id = "req_" + uuid.uuid4().hex
        self._control = False
        sim = self.server.sim
        raw = self.path
        path, _, query = raw.partition("?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self._error(400, "Invalid Content-Length header.", "invalid_request_error", None)
            return
        body = self.rfile.read(length) if length > 0 else b""
        if sim._stopping.is_set():
            self.close_connection = True
            self._error(503, "The simulator is shutting down.", "server_error", "service_unavailable")
            return
        if path.startswith("/_sim/"):
            self._control = True
            self._handle_control(method, path, body)
            return
        if not self._authorized():
            return
        route = self._route(method, path, params)
        if route is None:
            self._error(404, f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url")
            return
        name, job_id = route
        fault = sim._faults.take(raw, name)
        if fault is not None and self._apply_fault_early(fault):
            return
        try:
            self._serve(name, job_id, params, body, fault)
        except _ClientGone:
            raise
        except Exception as exc:  # a bug in the simulator must still answer in the API's shape
            self.close_connection = True
            self._error(500, f"Simulator error: {type(exc).__name__}: {exc}", "server_error", "server_error")

    def _authorized(self) -> bool:
        key = self.server.sim.api_key
        if not key:
            return True
        offered = []
        auth = self.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        if self.headers.get("api-key"):
            offered.append(self.headers.get("api-key", "").strip())
        if any(hmac.compare_digest(o.encode(), key.encode()) for o in offered):
            return True
        self._error(401, _BAD_KEY if offered else _NO_KEY, "invalid_request_error", "invalid_api_key")
        return False

    @staticmethod
    def _route(method: str, path: str, params: dict[str, str]) -> tuple[str, str | None] | None:
        """Endpoint name and decoded job id; ids are split on raw ``/`` first, then percent-decoded."""
        raw = path.split("/")[1:]
        if len(raw) > 1 and raw[-1] == "":
            raw = raw[:-1]
        segments = [unquote(s) for s in raw]
        for prefix in _PREFIXES:
            if tuple(segments[: len(prefix)]) == prefix:
                rest = segments[len(prefix) :]
                break
        else:
            return None
        if rest[:2] == ["fine_tuning", "jobs"]:
            tail = rest[2:]
            if not tail:
                return {"GET": (F.JOBS_LIST, None), "POST": (F.CREATE, None)}.get(method)
            if len(tail) == 1 and method == "GET":
                return F.JOB, tail[0]
            if len(tail) == 2 and tail[1] == "events" and method == "GET":
                return F.EVENTS, tail[0]
            if len(tail) == 2 and tail[1] == "cancel" and method == "POST":
                return F.CANCEL, tail[0]
            return None
        if rest[:1] == ["fine-tunes"] and method == "GET":
            tail = rest[1:]
            if not tail:
                return F.LEGACY_LIST, None
            if len(tail) == 1:
                return F.LEGACY_JOB, tail[0]
            if len(tail) == 2 and tail[1] == "events":
                stream = params.get("stream", "false").strip().lower() in ("true", "1")
                return (F.LEGACY_STREAM if stream else F.LEGACY_EVENTS), tail[0]
        return None

    def _apply_fault_early(self, fault: Applied) -> bool:
        """Faults that replace the response; ``True`` when nothing else must be sent."""
        kind, params = fault.kind, fault.params
        if kind == "slow":
            self.server.sim._stopping.wait(float(params.get("delay", 1.0)))
            return False
        if kind == "reset":
            self._reset()
            return True
        if kind == "html":
            self._send(200, _HTML_PAGE, content_type="text/html", fault=fault)
            return True
        if kind.isdigit():
            status = int(kind)
            type_, code, message = _ERRORS.get(
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
            self._error(
                status, str(params.get("message", message)), type_, code, headers=headers, fault=fault
            )
            return True
        return False

    def _serve(
        self, name: str, job_id: str | None, params: dict[str, str], body: bytes, fault: Applied | None
    ) -> None:
        sim = self.server.sim
        if name == F.JOBS_LIST:
            self._jobs_list(params, fault)
            return
        if name == F.LEGACY_LIST:
            data = [sim._legacy_object(job) for job in sim._all_jobs()]
            self._send_json(200, {"object": "list", "data": _bend_jobs(data, fault)}, fault)
            return
        if name == F.CREATE:
            self._create(body, fault)
            return
        assert job_id is not None
        job = sim._get(job_id)
        if job is None:
            if name in (F.LEGACY_JOB, F.LEGACY_EVENTS, F.LEGACY_STREAM):
                message, param = f"No such fine-tune: {job_id}", "fine_tune_id"
            else:
                message, param = f"Fine-tuning job {job_id} not found.", "fine_tuning_job_id"
            self._error(404, message, "invalid_request_error", "fine_tune_not_found", param, fault=fault)
            return
        if name == F.JOB:
            self._send_json(200, _bend_job(sim._job_object(job), fault), fault)
        elif name == F.LEGACY_JOB:
            self._send_json(200, _bend_job(sim._legacy_object(job), fault), fault)
        elif name == F.CANCEL:
            if not job.cancel():
                status = job.snapshot().status
                self._error(
                    400,
                    f"Job {job_id} has already completed with status {status!r} and cannot be cancelled.",
                    "invalid_request_error",
                    "job_not_cancellable",
                    fault=fault,
                )
                return
            self._send_json(200, sim._job_object(job), fault)
        elif name == F.EVENTS:
            self._events(job, params, fault)
        elif name == F.LEGACY_EVENTS:
            self._legacy_list(job, fault)
        elif name == F.LEGACY_STREAM:
            self._stream(job, fault)

    def _limit(self, params: dict[str, str]) -> int | None:
        text = params.get("limit")
        if text is None or text == "":
            return 20
        try:
            limit = int(text)
        except ValueError:
            limit = 0
        if limit < 1:
            self._error(
                400,
                f"Invalid 'limit': expected a positive integer, got {text!r}.",
                "invalid_request_error",
                "invalid_value",
                "limit",
            )
            return None
        return limit

    def _events(self, job: Job, params: dict[str, str], fault: Applied | None) -> None:
        sim = self.server.sim
        limit = self._limit(params)
        if limit is None:
            return
        kind = fault.kind if fault else None
        snap = job.snapshot(realistic=sim.realistic)
        if kind == "empty_has_more":
            self._send_json(200, {"object": "list", "data": [], "has_more": True}, fault)
            return
        before = snap.visible
        after = params.get("after")
        if after and kind != "repeated_cursor":
            index = job.index_of(after)
            if index is None or index >= snap.visible:
                self._error(
                    400,
                    f"Invalid 'after': {after!r} is not the id of an event of this job.",
                    "invalid_request_error",
                    "invalid_cursor",
                    "after",
                    fault=fault,
                )
                return
            before = index
        data, has_more = job.page(snap.visible, before, limit, sim.realistic)
        if kind == "repeated_cursor":
            has_more = True
        elif kind == "data_null":
            for event in data:
                event["data"] = None
        elif kind == "unknown_fields":
            for event in data:
                _add_unknown_fields(event)
        self._send_json(200, {"object": "list", "data": data, "has_more": has_more}, fault)

    def _legacy_list(self, job: Job, fault: Applied | None) -> None:
        visible = job.snapshot().visible
        unknown = fault is not None and fault.kind == "unknown_fields"
        raw_utf8 = self.server.sim.raw_utf8

        def event(i: int) -> dict[str, Any]:
            ev = job.legacy_event(i)
            return _add_unknown_fields(ev) if unknown else ev

        if visible > _CHUNKED_LIST_OVER and (
            fault is None or fault.kind not in ("drop_body", "malformed_json")
        ):

            def pieces() -> Iterator[bytes]:
                yield b'{"object":"list","data":['
                for start in range(0, visible, 1000):
                    part = b",".join(
                        _dumps(event(i), raw_utf8) for i in range(start, min(visible, start + 1000))
                    )
                    yield (b"," if start else b"") + part
                yield b"]}"

            self._send_chunked_json(pieces(), fault)
            return
        self._send_json(200, {"object": "list", "data": [event(i) for i in range(visible)]}, fault)

    def _jobs_list(self, params: dict[str, str], fault: Applied | None) -> None:
        sim = self.server.sim
        limit = self._limit(params)
        if limit is None:
            return
        kind = fault.kind if fault else None
        if kind == "empty_has_more":
            self._send_json(200, {"object": "list", "data": [], "has_more": True}, fault)
            return
        jobs = list(reversed(sim._all_jobs()))  # newest first
        after = params.get("after")
        if after and kind != "repeated_cursor":
            ids = [job.job_id for job in jobs]
            if after not in ids:
                self._error(
                    400,
                    f"Invalid 'after': no fine-tuning job {after!r}.",
                    "invalid_request_error",
                    "invalid_cursor",
                    "after",
                    fault=fault,
                )
                return
            jobs = jobs[ids.index(after) + 1 :]
        page = [sim._job_object(job) for job in jobs[:limit]]
        has_more = kind == "repeated_cursor" or len(jobs) > limit
        self._send_json(200, {"object": "list", "data": _bend_jobs(page, fault), "has_more": has_more}, fault)

    def _create(self, body: bytes, fault: Applied | None) -> None:
        sim = self.server.sim
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._error(
                400, "The request body must be a JSON object.", "invalid_request_error", "invalid_json"
            )
            return
        try:
            job = sim._create_from_request(payload)
        except ValueError as exc:
            param = exc.args[1] if len(exc.args) > 1 else None
            self._error(400, str(exc.args[0]), "invalid_request_error", "invalid_value", param, fault=fault)
            return
        self._send_json(200, sim._job_object(job), fault)

    def _stream(self, job: Job, fault: Applied | None) -> None:
        """Legacy SSE: oldest first, following the job live, keep-alive comments, then ``[DONE]``."""
        sim = self.server.sim
        kind = fault.kind if fault else None
        drop_after: int | None = None
        if kind == "drop_stream":
            assert fault is not None
            drop_after = int(fault.params.get("after_events", 1))
        unknown = kind == "unknown_fields"
        self._start_chunked([("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")], fault)

        def line(i: int) -> bytes:
            event = job.legacy_event(i)
            if unknown:
                _add_unknown_fields(event)
            return b"data: " + _dumps(event, sim.raw_utf8) + b"\n\n"

        position = 0
        last_write = time.monotonic()
        while True:
            if sim._stopping.is_set():
                self.close_connection = True
                return
            snap = job.snapshot()
            if drop_after is not None and position >= drop_after:
                self.close_connection = True
                if fault is not None and fault.params.get("partial"):
                    nxt = line(position) if position < snap.visible else b"data: [DONE]\n\n"
                    self._chunk(nxt[: max(1, len(nxt) // 2)])
                return
            if position < snap.visible:
                end = min(snap.visible, position + _STREAM_BATCH)
                if drop_after is not None:
                    end = min(end, drop_after)
                self._chunk(b"".join(line(i) for i in range(position, end)))
                position = end
                last_write = time.monotonic()
                continue
            if snap.terminal:
                if drop_after is not None:  # the stream is dropped before [DONE] whatever after_events says
                    self.close_connection = True
                    return
                self._chunk(b"data: [DONE]\n\n")
                self._write(b"0\r\n\r\n")
                return
            now = time.monotonic()
            idle = now - last_write
            keepalive = sim.keepalive_interval
            if keepalive > 0 and idle >= keepalive:
                self._chunk(b": keep-alive\n\n")
                last_write = now
                continue
            wait = 0.1
            if keepalive > 0:
                wait = min(wait, keepalive - idle)
            if snap.next_in is not None:
                wait = min(wait, snap.next_in + 0.001)
            sim._stopping.wait(max(wait, 0.001))

    # ----------------------------------------------------------------- control endpoints
    def _handle_control(self, method: str, path: str, body: bytes) -> None:
        """``/_sim/...``: drive an out-of-process simulator (no auth, never logged, never faulted)."""
        sim = self.server.sim
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            self._error(
                400, "The request body must be a JSON object.", "invalid_request_error", "invalid_json"
            )
            return
        try:
            if path == "/_sim/faults" and method == "POST":
                sim.inject(
                    str(payload.get("kind")),
                    payload.get("count", 1),
                    payload.get("path"),
                    **(payload.get("params") or {}),
                )
                self._send_json(200, {"pending": sim._faults.pending()})
            elif path == "/_sim/faults" and method == "GET":
                self._send_json(200, {"pending": sim._faults.pending()})
            elif path == "/_sim/faults" and method == "DELETE":
                sim.clear_faults()
                self._send_json(200, {"pending": []})
            elif path == "/_sim/random_faults" and method == "POST":
                sim.set_random_faults(
                    payload.get("rate", 0.05),
                    payload.get("kinds"),
                    payload.get("seed"),
                    payload.get("path"),
                    **(payload.get("params") or {}),
                )
                self._send_json(200, {"rate": payload.get("rate", 0.05)})
            elif path == "/_sim/jobs" and method == "POST":
                job_id = sim.add_job(JobSpec(**payload))
                self._send_json(200, sim.job(job_id))
            elif path == "/_sim/requests" and method == "GET":
                self._send_json(200, {"data": [list(entry) for entry in list(sim.request_log)]})
            elif path == "/_sim/requests" and method == "DELETE":
                sim.request_log.clear()
                self._send_json(200, {"data": []})
            else:
                self._error(404, f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url")
        except (TypeError, ValueError) as exc:
            self._error(400, str(exc), "invalid_request_error", "invalid_value")


def _add_unknown_fields(obj: dict[str, Any]) -> dict[str, Any]:
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
        _add_unknown_fields(job)
    return job


def _bend_jobs(jobs: list[dict[str, Any]], fault: Applied | None) -> list[dict[str, Any]]:
    return [_bend_job(job, fault) for job in jobs]


class Simulator:
    """A local stand-in for the fine-tuning API, over real HTTP; start it, add jobs, point clients at it.

    ``realistic=True`` adds shapes the real service sends beyond the schema (``data: null`` on the
    "Fine-tuning job started" event, an extra event field, a ``paused`` moment while running). Jobs created
    with ``POST /fine_tuning/jobs`` use ``default_events``/``default_duration``/``default_outcome`` unless
    their metadata sets ``sim_events``/``sim_seconds``/``sim_outcome``. ``raw_utf8=True`` sends non-ASCII
    text in JSON bodies and streams as raw UTF-8 instead of ``\\u`` escapes (clients must read both).
    """

    def __init__(
        self,
        api_key: str | None = "sk-sim-test",
        host: str = "127.0.0.1",
        port: int = 0,
        realistic: bool = False,
        keepalive_interval: float = 15.0,
        default_events: int = 200,
        default_duration: float = 10.0,
        default_outcome: str = "succeeded",
        verbose: bool = False,
        raw_utf8: bool = False,
    ) -> None:
        JobSpec(n_events=default_events, duration=default_duration, outcome=default_outcome)  # validates them
        self.api_key = api_key
        self.host = host
        self.port = port
        self.realistic = realistic
        self.keepalive_interval = float(keepalive_interval)
        self.default_events = default_events
        self.default_duration = float(default_duration)
        self.default_outcome = default_outcome
        self.verbose = verbose
        self.raw_utf8 = raw_utf8
        self.request_log: list[tuple[str, str, int]] = []
        self.connections_accepted = 0
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._faults = FaultPlan()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> Simulator:
        """Bind (a free port when ``port=0``) and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._server = _Server((self.host, self.port), self, family)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="ftevents-sim",
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection (ending open streams) and wait for all threads; idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            with server.threads_lock:
                alive = [t for t in server.handler_threads if t.is_alive()]
            if not alive or time.monotonic() > deadline:
                break
            alive[0].join(0.05)
        if thread is not None:
            thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Base URL of the current API family, e.g. ``http://127.0.0.1:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    # ----------------------------------------------------------------- jobs
    def add_job(self, spec: JobSpec) -> str:
        """Add a job (its lifecycle starts now) and return its id (random when ``spec.job_id`` is None)."""
        with self._lock:
            job_id = spec.job_id
            while job_id is None or (spec.job_id is None and job_id in self._jobs):
                job_id = "ftjob-" + random_alnum(24)
            self._jobs[job_id] = Job(spec, job_id)
        return job_id

    def _create_from_request(self, payload: dict[str, Any]) -> Job:
        """A job from a ``POST /fine_tuning/jobs`` body; ``ValueError(message, param)`` when invalid."""
        for name in ("model", "training_file"):
            if not isinstance(payload.get(name), str) or not payload[name]:
                raise ValueError(f"Missing required parameter: '{name}'.", name)
        for name in ("suffix", "validation_file"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                raise ValueError(f"Invalid type for '{name}': expected a string.", name)
        metadata = payload.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ValueError("Invalid 'metadata': expected an object of string values.", "metadata")
        meta = metadata or {}
        try:
            n_events = int(meta.get("sim_events", self.default_events))
            duration = float(meta.get("sim_seconds", self.default_duration))
        except ValueError:
            raise ValueError(
                "Invalid 'metadata': sim_events must be an int, sim_seconds a number.", "metadata"
            ) from None
        outcome = meta.get("sim_outcome", self.default_outcome)
        if outcome not in OUTCOMES or n_events < MIN_EVENTS or duration < 0:
            raise ValueError(
                f"Invalid 'metadata': needs sim_outcome in {OUTCOMES}, sim_events >= {MIN_EVENTS}, "
                "sim_seconds >= 0.",
                "metadata",
            )
        seed = payload.get("seed")
        spec = JobSpec(
            n_events=n_events,
            duration=duration,
            outcome=outcome,
            model=payload["model"],
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            training_file=payload["training_file"],
            validation_file=payload.get("validation_file"),
            suffix=payload.get("suffix"),
            metadata=metadata,
        )
        return self._jobs[self.add_job(spec)]

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished; its visible events stay, two closing events follow."""
        job = self._require(job_id)
        if not job.cancel():
            raise ValueError(f"job {job_id!r} has already finished")
        return self._job_object(job)

    def _get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _require(self, job_id: str) -> Job:
        job = self._get(job_id)
        if job is None:
            raise KeyError(f"no simulated job {job_id!r}")
        return job

    def _all_jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def job_ids(self) -> list[str]:
        """Ids of all jobs, oldest first."""
        return [job.job_id for job in self._all_jobs()]

    def _job_object(self, job: Job) -> dict[str, Any]:
        return job.job_object(job.snapshot(realistic=self.realistic), self.realistic)

    def _legacy_object(self, job: Job) -> dict[str, Any]:
        return job.legacy_object(job.snapshot())

    def job(self, job_id: str) -> dict[str, Any]:
        """Current-API job object as ``GET /fine_tuning/jobs/{id}`` would return it now."""
        return self._job_object(self._require(job_id))

    def legacy_job(self, job_id: str) -> dict[str, Any]:
        """Legacy job object as ``GET /fine-tunes/{id}`` would return it now."""
        return self._legacy_object(self._require(job_id))

    def event_count(self, job_id: str) -> int:
        """Number of events visible now."""
        return self._require(job_id).snapshot().visible

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Current-API events visible now, oldest first, exactly as the server serializes them."""
        job = self._require(job_id)
        return [job.event(i, self.realistic) for i in range(job.snapshot().visible)]

    def legacy_events(self, job_id: str) -> list[dict[str, Any]]:
        """The same events in the legacy shape (no id), oldest first."""
        job = self._require(job_id)
        return [job.legacy_event(i) for i in range(job.snapshot().visible)]

    def event_at(self, job_id: str, index: int) -> dict[str, Any]:
        """Event ``index`` (0 = oldest) in O(1), visible yet or not: cursors into the middle of big jobs."""
        job = self._require(job_id)
        if not 0 <= index < job.total():
            raise IndexError(f"job {job_id!r} has {job.total()} events, no index {index}")
        return job.event(index, self.realistic)

    # ----------------------------------------------------------------- faults
    def inject(self, kind: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        """Queue a fault for the next ``count`` requests it applies to whose path contains ``path``."""
        self._faults.inject(kind, count, path, params)

    def set_random_faults(
        self,
        rate: float = 0.05,
        kinds: list[str] | tuple[str, ...] | None = None,
        seed: int | None = None,
        path: str | None = None,
        **params: Any,
    ) -> None:
        """Give each request a ``rate`` chance of a fault drawn from ``kinds`` (seeded); 0 turns it off."""
        self._faults.set_random(rate, kinds, seed, path, params)

    def clear_faults(self) -> None:
        """Drop queued faults and turn the random mode off."""
        self._faults.clear()

    def pending_faults(self) -> list[dict[str, Any]]:
        return self._faults.pending()
