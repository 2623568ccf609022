"""HTTP framing of the simulator: connections, requests in, whole or chunked responses out, resets.

Standard library only (it must start fast and run anywhere). HTTP/1.1 with keep-alive, so a
``requests.Session`` reuses one connection; every response is written with one ``sendall`` and
``TCP_NODELAY`` so small responses do not wait on delayed ACKs. :meth:`HttpServer.stop` closes every open
connection, which ends idle keep-alive readers and live streams at once. Nothing here knows endpoints:
each request becomes an :class:`Exchange` handed to the application callable.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from email.message import Message
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


def dumps(obj: Any, raw_utf8: bool = False) -> bytes:
    """Compact JSON; ``raw_utf8`` sends non-ASCII text as UTF-8 instead of ``\\u`` escapes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=not raw_utf8).encode()


def api_error(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """The API's error body (every error answer, framing's own included, has this shape)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ClientGone(Exception):
    """The peer closed the connection, or the server is stopping: abandon this response."""


class Exchange:
    """One request and the means to answer it, exactly once (or to reset the connection instead).

    ``on_answer`` is called with the status just before the answer goes out (0 for a reset), so a request
    log is complete by the time a client has read the response.
    """

    def __init__(self, handler: _Handler, method: str, body: bytes) -> None:
        self._handler = handler
        self.method = method
        self.raw_path: str = getattr(handler, "path", None) or ""  # unset when the request line is bad
        self.path, _, query = self.raw_path.partition("?")
        self.query: list[tuple[str, str]] = parse_qsl(query, keep_blank_values=True)
        self.params: dict[str, str] = dict(self.query)
        self.body = body
        self.headers: Message = getattr(handler, "headers", None) or Message()
        self.request_id = "req_" + uuid.uuid4().hex
        self.stopping: threading.Event = handler.server.stopping
        self.on_answer: Callable[[int], None] | None = None
        self._reset_instead = False

    # ----------------------------------------------------------------- state
    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless the server stops meanwhile; ``True`` when it is stopping."""
        return self.stopping.wait(max(seconds, 0.0))

    def close_after(self) -> None:
        """Close the connection once this answer is out."""
        self._handler.close_connection = True

    def reset_instead_of_answering(self) -> None:
        """Whatever is sent from now on is replaced by a connection reset (the work is still done)."""
        self._reset_instead = True

    # ----------------------------------------------------------------- answers
    def send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Iterable[tuple[str, str]] = (),
        cut: bool = False,
    ) -> None:
        """A whole response in one write; ``cut`` declares the full length, sends half, then closes."""
        if self._reset_instead:
            self.reset()
            return
        all_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("x-request-id", self.request_id),
            *headers,
        ]
        if cut:
            self.close_after()
            body = body[: len(body) // 2]
        self._announce(status)
        self._write(self._head(status, all_headers) + body)

    def send_json(
        self, status: int, obj: Any, raw_utf8: bool = False, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send(status, dumps(obj, raw_utf8), headers=headers)

    def error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_json(status, api_error(message, type_, code, param), headers=headers)

    def start_chunked(self, headers: Iterable[tuple[str, str]]) -> None:
        """Send a 200's head for a chunked body (a big JSON page or an event stream)."""
        if self._reset_instead:
            self.reset()
            raise ClientGone()
        head = [*headers, ("Transfer-Encoding", "chunked"), ("x-request-id", self.request_id)]
        self._announce(200)
        self._write(self._head(200, head))

    def chunk(self, data: bytes) -> None:
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self._write(b"0\r\n\r\n")

    def send_chunked(self, headers: Iterable[tuple[str, str]], pieces: Iterator[bytes]) -> None:
        """A large body with chunked encoding, generated piece by piece."""
        self.start_chunked(headers)
        for piece in pieces:
            self.chunk(piece)
        self.end_chunked()

    def reset(self) -> None:
        """Close the socket with a TCP reset and no response at all."""
        handler = self._handler
        handler.close_connection = True
        self._announce(0)
        with contextlib.suppress(OSError):
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError, ValueError):
            handler.rfile.close()
        with contextlib.suppress(OSError):
            handler.connection.close()

    # ----------------------------------------------------------------- wire
    def _announce(self, status: int) -> None:
        if self.on_answer is not None:
            self.on_answer(status)
        self._handler.log_status(status)

    def _head(self, status: int, headers: Iterable[tuple[str, str]]) -> bytes:
        handler = self._handler
        reason = handler.responses.get(status, ("Error",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            f"Server: {handler.server_version}",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("Connection: close" if handler.close_connection else "Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _write(self, data: bytes) -> None:
        try:
            self._handler.wfile.write(data)
        except OSError as exc:
            self._handler.close_connection = True
            raise ClientGone() from exc


class _Handler(BaseHTTPRequestHandler):
    """One connection; serves requests until the client or the server closes it."""

    protocol_version = "HTTP/1.1"
    server_version = "ftevents-simulator/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server: _ThreadingServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.opened(self.connection)
        if self.server.stopping.is_set():
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self.server.closed(self.connection)
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def handle(self) -> None:
        with contextlib.suppress(ClientGone, ConnectionError, TimeoutError, OSError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def log_status(self, status: int) -> None:
        if self.server.verbose:
            self.log_request(status)

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
        self.close_connection = True
        exchange = Exchange(self, getattr(self, "command", None) or "", b"")
        with contextlib.suppress(ClientGone):
            exchange.error(int(code), message or "Bad request.")

    def _dispatch(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            Exchange(self, method, b"").error(400, "Invalid Content-Length header.")
            return
        body = self.rfile.read(length) if length > 0 else b""
        exchange = Exchange(self, method, body)
        if self.server.stopping.is_set():
            self.close_connection = True
            exchange.error(503, "The simulator is shutting down.", "server_error", "service_unavailable")
            return
        self.server.app(exchange)


class _ThreadingServer(ThreadingHTTPServer):
    """Threading server that tracks its connections and handler threads, so stop() can end them all."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], app: Callable[[Exchange], None], family: int, verbose: bool
    ) -> None:
        self.address_family = family
        self.app = app
        self.verbose = verbose
        self.stopping = threading.Event()
        self.connections_accepted = 0
        self.handler_threads: set[threading.Thread] = set()
        self.lock = threading.Lock()
        self.sockets: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def opened(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.add(sock)
            self.connections_accepted += 1

    def closed(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.discard(sock)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._run, args=(request, client_address), daemon=True, name="ftevents-sim-conn"
        )
        with self.lock:
            self.handler_threads.add(thread)
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self.lock:
                self.handler_threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose:
            super().handle_error(request, client_address)


class HttpServer:
    """Serves ``app(exchange)`` for every request on ``host:port`` (0 = a free port) in daemon threads."""

    def __init__(self, host: str, port: int, app: Callable[[Exchange], None], verbose: bool = False) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._server = _ThreadingServer((host, port), app, family, verbose)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="ftevents-sim",
        )
        self._thread.start()

    @property
    def connections_accepted(self) -> int:
        return self._server.connections_accepted

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection (ending open streams) and wait for all threads."""
        server = self._server
        server.stopping.set()
        server.shutdown()
        server.server_close()
        deadline = time.monotonic() + timeout
        while True:
            with server.lock:
                sockets = list(server.sockets)
                alive = [t for t in server.handler_threads if t.is_alive()]
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if not alive or time.monotonic() > deadline:
                break
            alive[0].join(0.05)
        self._thread.join(timeout)
