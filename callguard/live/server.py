"""The daemon's local HTTP API, its server push (SSE) and the prompts panel.

Standard library only (`ThreadingHTTPServer`): the softphone or CTI connector
starts and ends calls and records agent actions; the panel page subscribes to
`/api/v1/events` and gets every prompt as it fires.

Authentication. Every API route needs the token from `daemon.token`, either as
`Authorization: Bearer <token>` (connectors, scripts) or as the panel's session
cookie. The agent opens the panel through a one-time login link that `callguard
panel` asks the daemon for (`POST /api/v1/panel-links`, bearer only):
`/panel/login?code=<code>` sets the cookie and forgets the code, so what stays in
the browser's history opens nothing. (`/panel/#token=<token>` still works for
integrations: panel.js exchanges the fragment at `POST /api/v1/session`, but the
token may then stay in the history.) The cookie is HttpOnly and SameSite=Strict;
EventSource and the buttons send it by themselves (a browser cannot put a header on EventSource). The cookie
holds an HMAC of the token, not the token, and stops working when IT changes
the token. Cross-site pages cannot use it: SameSite=Strict, JSON bodies only
(a cross-site JSON POST needs a preflight that this server never grants), and
a foreign `Origin` is refused. The static panel files and `/openapi.json`
carry no data and need no token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import queue
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from callguard.core.events import ACTIONS, LEVELS

log = logging.getLogger("callguard.live.server")

PANEL_DIR = Path(__file__).resolve().parent / "panel"
PANEL_FILES = {
    "index.html": "text/html; charset=utf-8",
    "panel.js": "text/javascript; charset=utf-8",
    "panel.css": "text/css; charset=utf-8",
}
COOKIE_NAME = "callguard_panel"
MAX_BODY_BYTES = 64 * 1024
MAX_FIELD_CHARS = 256
KEEPALIVE_S = 10.0
MAX_CONNECTIONS = 128  # the panel, its event stream, the CTI and a few scripts need a handful
LOGIN_CODE_S = 120.0  # how long a one-time panel login link works
REQUEST_TIMEOUT_S = 5.0  # each read or write of a request (or a keep-alive's next request) within this


class ApiError(Exception):
    """An API failure with its HTTP status; the message goes to the client as JSON."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CallController(Protocol):
    """What the server asks of the daemon. Each method may raise ApiError."""

    def start_call(self, facts: dict[str, Any]) -> dict[str, Any]: ...
    def end_call(self, call_id: str) -> dict[str, Any]: ...
    def agent_action(self, call_id: str, action: str) -> dict[str, Any]: ...
    def request_help(self, call_id: str, message: str) -> dict[str, Any]: ...
    def take_break(self, minutes: float) -> dict[str, Any]: ...
    def call_state(self) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...


@dataclass
class EventHub:
    """Fan-out of panel messages to every SSE subscriber, each with its own bounded queue."""

    max_pending: int = 500
    _subscribers: list[queue.Queue[dict[str, Any] | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sequence: int = 0

    def subscribe(self) -> queue.Queue[dict[str, Any] | None]:
        q: queue.Queue[dict[str, Any] | None] = queue.Queue(self.max_pending)
        with self._lock:
            self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue[dict[str, Any] | None]) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    def publish(self, message: dict[str, Any]) -> None:
        """Never blocks: a subscriber that fell `max_pending` behind is disconnected (it reconnects)."""
        with self._lock:
            self._sequence += 1
            message = {"seq": self._sequence, "wall": time.time(), **message}
            for q in list(self._subscribers):
                try:
                    q.put_nowait(message)
                except queue.Full:
                    self._subscribers.remove(q)
                    _put_sentinel(q)

    def close(self) -> None:
        with self._lock:
            for q in self._subscribers:
                _put_sentinel(q)
            self._subscribers.clear()

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)


def _put_sentinel(q: queue.Queue[dict[str, Any] | None]) -> None:
    # Make room for the end-of-stream marker so the handler thread wakes up and leaves.
    while True:
        try:
            q.put_nowait(None)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()


def panel_session_value(token: str) -> str:
    """The cookie value for a token: an HMAC, so the cookie is not the token itself."""
    return hmac.new(token.encode(), b"callguard panel session", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI form, with {call_id}
    handler: str  # name of the ApiHandler method
    auth: bool = True

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$")


ROUTES: tuple[Route, ...] = (
    Route("GET", "/", "redirect_panel", auth=False),
    Route("GET", "/panel", "redirect_panel", auth=False),
    Route("GET", "/panel/", "panel_file", auth=False),
    Route("GET", "/panel/login", "panel_login", auth=False),
    Route("GET", "/panel/{name}", "panel_file", auth=False),
    Route("GET", "/openapi.json", "openapi", auth=False),
    Route("GET", "/health", "health"),
    Route("POST", "/api/v1/session", "session"),
    Route("POST", "/api/v1/panel-links", "new_panel_link"),
    Route("GET", "/api/v1/calls/current", "call_state"),
    Route("POST", "/api/v1/calls", "start_call"),
    Route("POST", "/api/v1/calls/{call_id}/end", "end_call"),
    Route("POST", "/api/v1/calls/{call_id}/actions", "agent_action"),
    Route("POST", "/api/v1/calls/{call_id}/help", "request_help"),
    Route("POST", "/api/v1/break", "take_break"),
    Route("GET", "/api/v1/events", "events"),
)


class _HeadReader:
    """The connection's reader while a request's line and headers arrive: all of them within one
    deadline, so a client that sends a header line every few seconds (each read within the
    socket's time-out) is cut off like one that sends nothing."""

    def __init__(self, raw: Any, connection: socket.socket, deadline: float) -> None:
        self.raw, self._connection, self._deadline = raw, connection, deadline

    def readline(self, limit: int = -1) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request line and headers not complete within {REQUEST_TIMEOUT_S:g} s")
        self._connection.settimeout(left)
        line: bytes = self.raw.readline(limit)
        return line


class _Server(ThreadingHTTPServer):
    """The stdlib server with a listen backlog and a cap on connections held at once.

    A flood of connections that send nothing (246 of them made /health time out for everyone), or
    their headers a line at a time, must not lock the panel and the CTI out: at the cap, the
    connection that has waited longest without completing its request's headers is closed to make
    room, so a client that sends its request at once is always served. A request's headers must
    arrive within REQUEST_TIMEOUT_S in all, and every other read and write times out too."""

    request_queue_size = 128  # the stdlib's 5 reset half of a burst of 50 new connections

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._held: set[int] = set()  # connections holding a slot
        self._waiting: dict[int, socket.socket] = {}  # connected, no request line yet; oldest first

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._held) >= MAX_CONNECTIONS and self._waiting:
                oldest = self._waiting.pop(next(iter(self._waiting)))
                self._held.discard(id(oldest))  # its slot is free now; its thread ends on the shutdown
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
            if len(self._held) >= MAX_CONNECTIONS:  # every slot busy with a real request: refuse
                self.shutdown_request(request)
                return
            self._held.add(id(request))
            self._waiting[id(request)] = request
        super().process_request(request, client_address)

    def started_request(self, request: Any) -> None:
        with self._lock:
            self._waiting.pop(id(request), None)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._held.discard(id(request))
                self._waiting.pop(id(request), None)


class PanelServer:
    """The HTTP server in its own thread. `token` is asked for at each request, so a reload applies."""

    def __init__(
        self,
        controller: CallController,
        hub: EventHub,
        token: Callable[[], str],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
    ) -> None:
        self.controller = controller
        self.hub = hub
        self.token = token
        handler = type("BoundApiHandler", (ApiHandler,), {"app": self})
        self.httpd = _Server((host, port), handler)
        bound = self.httpd.server_address[1]
        names = {"127.0.0.1", "localhost", "[::1]", host.lower() if ":" not in host else f"[{host.lower()}]"}
        # Bound to a wildcard, the daemon is reached by names it cannot know: IT's choice to expose it.
        wildcard = host in ("0.0.0.0", "::", "")
        self.allowed_hosts: frozenset[str] | None = (
            None if wildcard else frozenset(name for n in names for name in (n, f"{n}:{bound}"))
        )
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._login_codes: dict[str, float] = {}  # one-time panel login codes -> when they expire
        self._codes_lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.httpd.server_address[0]
        if isinstance(host, bytes):  # only for AF_UNIX, which this server never binds
            host = host.decode()
        return f"http://{host}:{self.port}"

    def panel_link(self) -> str:
        return f"{self.base_url}/panel/#token={self.token()}"

    def new_login_code(self) -> str:
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._codes_lock:
            self._login_codes = {c: t for c, t in self._login_codes.items() if t > now}
            self._login_codes[code] = now + LOGIN_CODE_S
        return code

    def use_login_code(self, code: str) -> bool:
        """True once for a code that was given and has not expired; never again."""
        with self._codes_lock:
            expires = self._login_codes.pop(code, 0.0)
        return expires > time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.hub.close()
        self.httpd.shutdown()
        self.httpd.server_close()


class ApiHandler(BaseHTTPRequestHandler):
    app: PanelServer  # set on the bound subclass
    server_version = "callguard"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # SSE messages are small: send each at once
    # Every socket read and write: a slow-header or idle connection is closed after it. The event
    # stream writes a keep-alive every KEEPALIVE_S, well within it.
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)

    # --- dispatch --------------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        # the request line (or a keep-alive's wait for the next one) and the headers: one deadline
        raw = self.rfile
        self.rfile = _HeadReader(raw, self.connection, time.monotonic() + REQUEST_TIMEOUT_S)  # type: ignore[assignment]
        try:
            super().handle_one_request()
        finally:
            self._end_of_head()
            self.rfile = raw

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        finally:
            self._end_of_head()
            self.server.started_request(self.connection)  # type: ignore[attr-defined]

    def _end_of_head(self) -> None:
        """The body, and the answer, with the plain reader and the per-read time-out."""
        if isinstance(self.rfile, _HeadReader):
            self.rfile = self.rfile.raw
            self.connection.settimeout(self.timeout)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        host = (self.headers.get("Host") or "").strip().lower()
        allowed = self.app.allowed_hosts
        if allowed is not None and host not in allowed:  # a DNS-rebinding page names its own host
            self._send_json(421, {"error": f"Host {host[:80]!r} is not this daemon's address"})
            return
        matched_path = False
        for route in ROUTES:
            found = route.pattern.match(path)
            if not found:
                continue
            matched_path = True
            if route.method != method:
                continue
            try:
                if route.auth:
                    self._authenticate(method)
                # path parameters arrive percent-encoded: compare the id, not its URL form
                getattr(self, route.handler)(**{k: unquote(v) for k, v in found.groupdict().items()})
            except ApiError as exc:
                self._answer_if_listening(exc.status, {"error": exc.message})
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client went away (or stalled): nobody to answer
            except Exception as exc:  # one bad request never stops the server
                log.exception("http handler failed", extra={"fields": {"path": path}})
                self._answer_if_listening(500, {"error": f"internal error: {exc}"})
            return
        if matched_path:
            self._send_json(405, {"error": f"{method} not allowed on {path}"})
        else:
            self._send_json(404, {"error": f"no such route: {path}"})

    def _authenticate(self, method: str) -> None:
        token = self.app.token()
        header = self.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return
        cookie = _cookie(self.headers.get("Cookie", ""), COOKIE_NAME)
        if cookie and hmac.compare_digest(cookie, panel_session_value(token)):
            origin = self.headers.get("Origin")
            if origin and urlsplit(origin).netloc != self.headers.get("Host", ""):
                raise ApiError(403, f"cross-origin request from {origin} refused")
            return
        raise ApiError(401, "missing or wrong token (Authorization: Bearer <daemon.token>)")

    # --- responses -------------------------------------------------------------------------------

    def _answer_if_listening(self, status: int, body: Any) -> None:
        """An error answer; a client that already hung up (a refused 200 MB upload) is no error."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            self._send_json(status, body)
        self.close_connection = True  # an unread body would be read as the next request

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_json(self) -> dict[str, Any]:
        kind = self.headers.get("Content-Type", "").split(";")[0].strip()
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isdigit():  # "-1" would read to the end of the stream, whatever its size
            raise ApiError(400, f"Content-Length must be a number of bytes, got {declared[:40]!r}")
        length = int(declared)
        if length > MAX_BODY_BYTES:
            raise ApiError(413, f"body of {length} bytes is over the limit of {MAX_BODY_BYTES}")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        if kind != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, got {kind or 'none'}")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"body is not valid JSON ({exc})") from None
        except RecursionError:
            raise ApiError(400, "body is nested too deeply") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"body must be a JSON object, got {type(body).__name__}")
        for key, value in body.items():  # no API field is a document: a 200 MB name is not stored
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise ApiError(422, f"{key}: at most {MAX_FIELD_CHARS} characters, got {len(value)}")
            if isinstance(value, (dict, list)):
                raise ApiError(422, f"{key}: must be a string, a number or a boolean")
        return body

    # --- routes ----------------------------------------------------------------------------------

    def redirect_panel(self) -> None:
        self.send_response(302)
        self.send_header("Location", "/panel/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def panel_file(self, name: str = "index.html") -> None:
        if name not in PANEL_FILES:
            raise ApiError(404, f"no such panel file: {name}")
        data = (PANEL_DIR / name).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", PANEL_FILES[name])
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        # The panel needs nothing from elsewhere; forbid it all.
        self.send_header(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        )
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)

    def new_panel_link(self) -> None:
        # a page holding the panel's cookie must not mint links for another browser: the token only
        if not self.headers.get("Authorization", "").lower().startswith("bearer "):
            raise ApiError(403, "panel links are given for the bearer token only, not the panel's cookie")
        self._read_json()
        code = self.app.new_login_code()
        base = f"http://{self.headers.get('Host') or f'127.0.0.1:{self.app.port}'}"
        self._send_json(201, {"url": f"{base}/panel/login?code={code}", "expires_s": LOGIN_CODE_S})

    def panel_login(self) -> None:
        code = parse_qs(urlsplit(self.path).query).get("code", [""])[0]
        if not self.app.use_login_code(code):
            text = "This panel link has expired or was used already: run `callguard panel` for a new one.\n"
            data = text.encode()
            self.send_response(401)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(303)
        self.send_header("Location", "/panel/")
        self.send_header("Set-Cookie", self._session_cookie())
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _session_cookie(self) -> str:
        """The panel's session cookie (for POST /api/v1/session and a one-time login link)."""
        return f"{COOKIE_NAME}={panel_session_value(self.app.token())}; HttpOnly; SameSite=Strict; Path=/"

    def openapi(self) -> None:
        self._send_json(200, openapi_schema())

    def health(self) -> None:
        report = self.app.controller.health()
        self._send_json(200 if report.get("status") != "failing" else 503, report)

    def session(self) -> None:
        self._send_json(200, {"ok": True}, {"Set-Cookie": self._session_cookie()})

    def call_state(self) -> None:
        self._send_json(200, self.app.controller.call_state())

    def start_call(self) -> None:
        self._send_json(201, self.app.controller.start_call(self._read_json()))

    def end_call(self, call_id: str) -> None:
        self._read_json()  # no body expected, but drain it so keep-alive stays in step
        self._send_json(200, self.app.controller.end_call(call_id))

    def agent_action(self, call_id: str) -> None:
        body = self._read_json()
        action = body.get("action")
        if action not in ACTIONS:
            raise ApiError(422, f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        self._send_json(200, self.app.controller.agent_action(call_id, action))

    def request_help(self, call_id: str) -> None:
        message = self._read_json().get("message", "")
        if not isinstance(message, str):
            raise ApiError(422, f"message must be a string, got {type(message).__name__}")
        self._send_json(200, self.app.controller.request_help(call_id, message))

    def take_break(self) -> None:
        minutes = self._read_json().get("minutes", 5)
        if isinstance(minutes, bool) or not isinstance(minutes, int | float):
            raise ApiError(422, f"minutes must be a number, got {type(minutes).__name__}")
        self._send_json(200, self.app.controller.take_break(float(minutes)))

    def events(self) -> None:
        subscription = self.app.hub.subscribe()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")
            self.end_headers()
            self.close_connection = True
            # A (re)connecting panel first gets the whole current state, then live messages.
            self._send_event({"kind": "state", **self.app.controller.call_state()})
            while True:
                try:
                    message = subscription.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")
                    continue
                if message is None:
                    return
                self._send_event(message)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return
        finally:
            self.app.hub.unsubscribe(subscription)

    def _send_event(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False)
        seq = message.get("seq")
        head = f"id: {seq}\n" if seq is not None else ""
        self.wfile.write(f"{head}data: {data}\n\n".encode())


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


# --- OpenAPI -------------------------------------------------------------------------------------

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _json_response(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _json_object(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


def openapi_schema() -> dict[str, Any]:
    """The API as an OpenAPI 3.1 document (served at /openapi.json; a test checks it against ROUTES)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callguard daemon API",
            "version": "1",
            "description": "Local API of the callguard daemon for softphones and CTI connectors. Every "
            "operation except the panel files and this document needs `Authorization: Bearer "
            "<daemon.token>` (or the panel's session cookie, obtained at POST /api/v1/session).",
        },
        "servers": [{"url": "http://127.0.0.1:8765"}],
        "security": [{"bearer": []}, {"panelCookie": []}],
        "paths": {
            "/": {"get": _public("Redirect to the panel", {"302": {"description": "to /panel/"}})},
            "/panel": {"get": _public("Redirect to the panel", {"302": {"description": "to /panel/"}})},
            "/panel/": {
                "get": _public(
                    "The prompts panel page. Open it as /panel/#token=<daemon.token> the first time.",
                    {"200": {"description": "HTML page", "content": {"text/html": {}}}},
                )
            },
            "/panel/{name}": {
                "get": {
                    **_public(
                        "A static file of the panel (index.html, panel.js, panel.css)",
                        {"200": {"description": "the file"}, "404": _ERROR},
                    ),
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                }
            },
            "/openapi.json": {"get": _public("This document", {"200": {"description": "OpenAPI 3.1 JSON"}})},
            "/health": {
                "get": {
                    "summary": "Whether capture, the speech model and the incident store work",
                    "responses": {
                        "200": _json_response("ok or degraded", "#/components/schemas/Health"),
                        "503": _json_response(
                            "failing (store or all capture down)", "#/components/schemas/Health"
                        ),
                        "401": _ERROR,
                    },
                }
            },
            "/panel/login": {
                "get": {
                    **_public(
                        "Open the panel with a one-time code from POST /api/v1/panel-links: sets the "
                        "session cookie, then redirects to /panel/",
                        {
                            "303": {"description": "to /panel/, cookie set"},
                            "401": {"description": "used or expired"},
                        },
                    ),
                    "parameters": [
                        {"name": "code", "in": "query", "required": True, "schema": {"type": "string"}}
                    ],
                }
            },
            "/api/v1/panel-links": {
                "post": {
                    "summary": "A one-time panel login link (bearer token only), valid for 120 s",
                    "responses": {
                        "201": _json_object("the link"),
                        "401": _ERROR,
                        "403": _ERROR,
                    },
                }
            },
            "/api/v1/session": {
                "post": {
                    "summary": "Exchange the bearer token for the panel's session cookie",
                    "responses": {
                        "200": {
                            "description": "cookie set",
                            "headers": {"Set-Cookie": {"schema": {"type": "string"}}},
                        },
                        "401": _ERROR,
                    },
                }
            },
            "/api/v1/calls/current": {
                "get": {
                    "summary": "The current call: facts, level, last prompt, timeline",
                    "responses": {
                        "200": _json_response("call state", "#/components/schemas/CallState"),
                        "401": _ERROR,
                    },
                }
            },
            "/api/v1/calls": {
                "post": {
                    "summary": "Start a call (ends a call that was started automatically on speech)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/CallFacts"}}
                        },
                    },
                    "responses": {
                        "201": _json_response("call started", "#/components/schemas/CallState"),
                        "400": _ERROR,
                        "401": _ERROR,
                        "409": _ERROR,
                        "415": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/v1/calls/{call_id}/end": {
                "post": {
                    "summary": "End the call: it is closed and stored",
                    "parameters": [_CALL_ID],
                    "responses": {
                        "200": _json_response("the call's summary", "#/components/schemas/CallState"),
                        "401": _ERROR,
                        "404": _ERROR,
                    },
                }
            },
            "/api/v1/calls/{call_id}/help": {
                "post": {
                    "summary": "The agent asks for a supervisor: sent to the floor first of all",
                    "parameters": [_CALL_ID],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"message": {"type": "string", "maxLength": 256}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json_object(
                            "queued for the floor; the panel's stream says when it got there"
                        ),
                        "401": _ERROR,
                        "404": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/v1/break": {
                "post": {
                    "summary": "The agent takes a break between calls (for the floor's daily figures)",
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "minutes": {"type": "number", "minimum": 1, "maximum": 120}
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json_object("recorded"),
                        "401": _ERROR,
                        "409": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/v1/calls/{call_id}/actions": {
                "post": {
                    "summary": "Record what the agent did; it feeds back into the escalation ladder",
                    "parameters": [_CALL_ID],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["action"],
                                    "properties": {"action": {"type": "string", "enum": list(ACTIONS)}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json_response(
                            "call state after the action", "#/components/schemas/CallState"
                        ),
                        "401": _ERROR,
                        "404": _ERROR,
                        "422": _ERROR,
                    },
                }
            },
            "/api/v1/events": {
                "get": {
                    "summary": "Server-sent events: first the call state (kind=state), then one message per "
                    "call start/end, prompt, level change, detection, agent action, notice and health change",
                    "responses": {
                        "200": {"description": "event stream", "content": {"text/event-stream": {}}},
                        "401": _ERROR,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "panelCookie": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "CallFacts": {
                    "type": "object",
                    "required": ["call_id"],
                    "properties": {
                        "call_id": {"type": "string", "minLength": 1},
                        "customer_name": {"type": "string"},
                        "company": {"type": "string"},
                        "agent_name": {"type": "string"},
                        "language": {"type": "string", "enum": ["", "en", "fr"]},
                        "transfer_available": {"type": "boolean"},
                        "transferred_in": {"type": "boolean"},
                    },
                },
                "CallState": {
                    "type": "object",
                    "properties": {
                        "active": {"type": "boolean"},
                        "call_id": {"type": "string"},
                        "facts": {"$ref": "#/components/schemas/CallFacts"},
                        "level": {
                            "type": "string",
                            "enum": list(LEVELS),
                        },
                        "t": {"type": "number"},
                        "prompt": {"type": ["object", "null"]},
                        "alert": {"type": ["object", "null"]},
                        "timeline": {"type": "array", "items": {"type": "object"}},
                        "mode": {"type": "string", "enum": ["speech", "loudness-only"]},
                        "language": {"type": "string"},
                        "summary": {"type": ["object", "null"]},
                    },
                },
                "Health": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded", "failing"]},
                        "capture": {"type": "object"},
                        "model": {"type": "object"},
                        "store": {"type": "object"},
                    },
                },
            },
        },
    }


def _public(summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": responses}
