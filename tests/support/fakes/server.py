"""A loopback HTTP server with a request log and switchable faults, shared by every fake upstream.

Each fake registers route handlers `(method, path) -> handler(request) -> Reply`. Tests then
assert on `requests` (what the bridge really sent) and flip faults: `slow`, `fail_with`,
`drop_connections`, `respond_raw`, `go_down` / `come_up`.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any  # None when the body is empty or not JSON
    at: float  # time.time() on arrival


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None  # JSON-encoded unless `raw` is given
    raw: bytes | None = None
    content_type: str = "application/json"
    # No Content-Length: the body ends when the connection closes (HTTP/1.0), as a streaming
    # or misbehaving server would send it.
    omit_length: bool = False


Handler = Callable[[RecordedRequest], Reply]


@dataclass
class Faults:
    delay_s: float = 0.0
    status: int | None = None
    drop: bool = False
    raw: Reply | None = None


@dataclass
class FakeServer:
    """Start with `start()`; `url` is `http://127.0.0.1:<port>` plus the fake's prefix."""

    prefix: str = ""
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    tls: ssl.SSLContext | None = None  # serve https with this server-side context

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "FakeServer":
        self._stopping.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _make_handler(self))
        self._httpd.daemon_threads = True
        # A client that hangs up or refuses our test certificate is expected, not a traceback.
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    go_down = stop

    def come_up(self) -> None:
        """Listen again on the same port."""
        self.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.prefix}"

    # --- faults --------------------------------------------------------------------------------
    def slow(self, delay_s: float) -> None:
        self.faults.delay_s = delay_s

    def fail_with(self, status: int) -> None:
        self.faults.status = status

    def drop_connections(self) -> None:
        self.faults.drop = True

    def respond_raw(
        self, body: bytes, status: int = 200, content_type: str = "application/json", omit_length: bool = False
    ) -> None:
        self.faults.raw = Reply(status, raw=body, content_type=content_type, omit_length=omit_length)

    def heal(self) -> None:
        self.faults = Faults()

    # --- the request log -----------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == self.prefix + path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _dispatch(self, request: RecordedRequest) -> Reply | None:
        """The reply to send, or None to drop the connection."""
        faults = self.faults
        if faults.delay_s:
            self._stopping.wait(faults.delay_s)
        if faults.drop:
            return None
        if faults.raw is not None:
            return faults.raw
        if faults.status is not None:
            return Reply(faults.status, {"error": "server_error", "message": "injected failure"})
        path = request.path.removeprefix(self.prefix) if request.path.startswith(self.prefix) else None
        handler = self.routes.get((request.method, path or ""))
        if handler is None:
            return Reply(404, {"error": "not_found"})
        return handler(request)


def _make_handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                decoded = json.loads(body) if body else None
            except ValueError:
                decoded = None
            request = RecordedRequest(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                json=decoded,
                at=time.time(),
            )
            server._record(request)
            reply = server._dispatch(request)
            if reply is None:
                self.close_connection = True
                return
            payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                if not reply.omit_length:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its budget ran out): that is the point of `slow`

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return _Handler
