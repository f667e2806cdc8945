"""The HTTP side of `callguard serve` (ASGI, starlette): each agent's panel, the CTI, health.

Credentials. Every API route needs one: the admin/CTI token (`[serve] token`) as
`Authorization: Bearer`, or an agent's own token (its SHA-256 in the agents file) as a bearer, or
the panel's session cookie that an agent's token or a one-time login link sets. An agent sees and
acts on their own calls only; the admin token sees every call, starts CTI calls and reads /health.
The panel login is the daemon's: `POST /api/v1/panel-links` (the admin for any agent, an agent for
themselves, bearer only) gives `/panel/login?code=...`, valid once for 120 s, which sets the
HttpOnly, SameSite=Strict cookie; `/panel/#token=<agent token>` works too (exchanged at
`POST /api/v1/session`). Cookie-authenticated POSTs from a foreign Origin are refused, bodies are
JSON objects of at most 64 KB with fields of at most 256 characters, and bound to a loopback
address the server answers only requests that name it in `Host` (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from callguard.core.events import ACTIONS
from callguard.live.serve.agents import AgentDirectory
from callguard.live.serve.host import ServeHost
from callguard.live.server import PANEL_DIR as DAEMON_PANEL_DIR
from callguard.live.server import ApiError

PANEL_DIR = Path(__file__).resolve().parent / "panel"
PANEL_FILES = {
    "index.html": (PANEL_DIR / "index.html", "text/html; charset=utf-8"),
    "serve.js": (PANEL_DIR / "serve.js", "text/javascript; charset=utf-8"),
    "serve.css": (PANEL_DIR / "serve.css", "text/css; charset=utf-8"),
    "panel.css": (DAEMON_PANEL_DIR / "panel.css", "text/css; charset=utf-8"),  # the daemon panel's look
}
COOKIE_NAME = "callguard_serve"
MAX_BODY_BYTES = 64 * 1024
MAX_FIELD_CHARS = 256
KEEPALIVE_S = 10.0
LOGIN_CODE_S = 120.0
CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@dataclass(frozen=True)
class Principal:
    agent_id: str | None  # None: the admin (every call)
    cookie: bool = False

    @property
    def admin(self) -> bool:
        return self.agent_id is None


class LoginCodes:
    """One-time panel login codes -> (agent, expiry)."""

    def __init__(self) -> None:
        self._codes: dict[str, tuple[str, float]] = {}

    def new(self, agent_id: str) -> str:
        now = time.monotonic()
        self._codes = {c: v for c, v in self._codes.items() if v[1] > now}
        code = secrets.token_urlsafe(24)
        self._codes[code] = (agent_id, now + LOGIN_CODE_S)
        return code

    def use(self, code: str) -> str | None:
        agent_id, expires = self._codes.pop(code, ("", 0.0))
        return agent_id if expires > time.monotonic() else None


def create_app(
    host: ServeHost, agents: AgentDirectory, admin_token: str, *, bound_host: str, port: int
) -> Starlette:
    codes = LoginCodes()

    def authenticate(request: Request) -> Principal:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            given = credentials.strip()
            if hmac.compare_digest(given.encode(), admin_token.encode()):
                return Principal(None)
            agent = agents.agent_for_token(given)
            if agent is not None:
                return Principal(agent)
            raise ApiError(401, "wrong token (an agent's panel token, or [serve] token)")
        cookie = request.cookies.get(COOKIE_NAME, "")
        agent = agents.agent_for_cookie(cookie, admin_token) if cookie else None
        if agent is not None:
            origin = request.headers.get("origin")
            if (
                request.method != "GET"
                and origin
                and urlsplit(origin).netloc != request.headers.get("host", "")
            ):
                raise ApiError(403, f"cross-origin request from {origin} refused")
            return Principal(agent, cookie=True)
        raise ApiError(
            401, "missing or wrong credential (Authorization: Bearer <token>, or the panel's cookie)"
        )

    def guarded(
        handler: Callable[[Request, Principal], Awaitable[Response]], *, admin: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                who = authenticate(request)
                if admin and not who.admin:
                    raise ApiError(403, "this needs the admin/CTI token ([serve] token)")
                return await handler(request, who)
            except ApiError as exc:
                return JSONResponse({"error": exc.message}, exc.status, headers={"Cache-Control": "no-store"})

        return endpoint

    def session_cookie(agent_id: str) -> str:
        value = agents.cookie_value(agent_id, admin_token)
        return f"{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/"

    async def redirect_panel(request: Request) -> Response:
        return RedirectResponse("/panel/", 302)

    async def panel_file(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        if name not in PANEL_FILES:
            return JSONResponse({"error": f"no such panel file: {name}"}, 404)
        path, kind = PANEL_FILES[name]
        headers = {
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
        }
        return FileResponse(path, media_type=kind, headers=headers)

    async def panel_login(request: Request) -> Response:
        agent_id = codes.use(request.query_params.get("code", ""))
        if agent_id is None:
            return PlainTextResponse(
                "This panel link has expired or was used already: ask for a new one.\n",
                401,
                headers={"Cache-Control": "no-store"},
            )
        headers = {
            "Set-Cookie": session_cookie(agent_id),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        }
        return Response(status_code=303, headers={"Location": "/panel/", **headers})

    async def session(request: Request, who: Principal) -> Response:
        if who.admin or who.cookie:
            raise ApiError(403, "a panel session is opened with an agent's own token")
        assert who.agent_id is not None
        return JSONResponse(
            {"ok": True, "agent_id": who.agent_id}, headers={"Set-Cookie": session_cookie(who.agent_id)}
        )

    async def panel_link(request: Request, who: Principal) -> Response:
        if who.cookie:
            raise ApiError(403, "panel links are given for a bearer token only, not the panel's cookie")
        body = await read_json(request)
        agent_id = who.agent_id or body.get("agent_id", "")
        if not isinstance(agent_id, str) or not agents.knows(agent_id):
            raise ApiError(422, f"agent_id: no agent {agent_id!r} in the agents file")
        base = f"{request.url.scheme}://{request.headers.get('host') or f'127.0.0.1:{port}'}"
        url = f"{base}/panel/login?code={codes.new(str(agent_id))}"
        return JSONResponse({"url": url, "expires_s": LOGIN_CODE_S, "agent_id": agent_id}, 201)

    async def list_calls(request: Request, who: Principal) -> Response:
        return JSONResponse({"agent_id": who.agent_id, "calls": host.calls_of(who.agent_id)})

    async def cti_start(request: Request, who: Principal) -> Response:
        body = await read_json(request)
        return JSONResponse(await asyncio.to_thread(host.cti_start, body), 201)

    async def agent_action(request: Request, who: Principal) -> Response:
        body = await read_json(request)
        action = body.get("action")
        if action not in ACTIONS:
            raise ApiError(422, f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        call_id = request.path_params["call_id"]
        return JSONResponse(await asyncio.to_thread(host.agent_action, who.agent_id, call_id, action))

    async def request_help(request: Request, who: Principal) -> Response:
        message = (await read_json(request)).get("message", "")
        if not isinstance(message, str):
            raise ApiError(422, f"message must be a string, got {type(message).__name__}")
        call_id = request.path_params["call_id"]
        return JSONResponse(await asyncio.to_thread(host.request_help, who.agent_id, call_id, message))

    async def health(request: Request, who: Principal) -> Response:
        report = host.health()
        report["agents"] = {"count": len(agents), "error": agents.last_error}
        return JSONResponse(report, 503 if report["status"] == "failing" else 200)

    async def events(request: Request, who: Principal) -> Response:
        subscription = host.hub.subscribe(who.agent_id)

        async def stream() -> AsyncIterator[bytes]:
            try:
                # A (re)connecting panel first gets its whole list, then live messages.
                yield _sse({"kind": "calls", "agent_id": who.agent_id, "calls": host.calls_of(who.agent_id)})
                while True:
                    try:
                        message = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    if message is None:
                        return
                    yield _sse(message)
            finally:
                host.hub.unsubscribe(subscription)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream; charset=utf-8", headers=headers)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    routes = [
        Route("/openapi.json", openapi),
        Route("/", redirect_panel),
        Route("/panel", redirect_panel),
        Route("/panel/", panel_file),
        Route("/panel/login", panel_login),
        Route("/panel/{name}", panel_file),
        Route("/health", guarded(health, admin=True)),
        Route("/api/v1/session", guarded(session), methods=["POST"]),
        Route("/api/v1/panel-links", guarded(panel_link), methods=["POST"]),
        Route("/api/v1/calls", guarded(list_calls), methods=["GET"]),
        Route("/api/v1/calls", guarded(cti_start, admin=True), methods=["POST"]),
        Route("/api/v1/calls/{call_id}/actions", guarded(agent_action), methods=["POST"]),
        Route("/api/v1/calls/{call_id}/help", guarded(request_help), methods=["POST"]),
        Route("/api/v1/events", guarded(events)),
    ]
    middleware = []
    if bound_host not in ("0.0.0.0", "::", ""):  # bound to a wildcard, IT chose the names it is reached by
        names = {
            "127.0.0.1",
            "localhost",
            "[::1]",
            bound_host if ":" not in bound_host else f"[{bound_host}]",
        }
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=sorted(names)))
    return Starlette(routes=routes, middleware=middleware)


async def read_json(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length", "0").strip()
    if not declared.isdigit():
        raise ApiError(400, f"Content-Length must be a number of bytes, got {declared[:40]!r}")
    if int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"body of {declared} bytes is over the limit of {MAX_BODY_BYTES}")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ApiError(413, f"body over the limit of {MAX_BODY_BYTES} bytes")
    if not raw:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {kind or 'none'}")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"body must be a JSON object, got {type(body).__name__}")
    for key, value in body.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise ApiError(422, f"{key}: at most {MAX_FIELD_CHARS} characters, got {len(value)}")
        if isinstance(value, (dict, list)):
            raise ApiError(422, f"{key}: must be a string, a number or a boolean")
    return body


def _sse(message: dict[str, Any]) -> bytes:
    seq = message.get("seq")
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}data: {json.dumps(message, ensure_ascii=False)}\n\n".encode()


# What each API route is, for /openapi.json (a test checks it against the app's routes).
API: tuple[tuple[str, str, str, str], ...] = (
    (
        "GET",
        "/health",
        "admin",
        "Open calls with each one's CPU, lag, step and drops; process CPU; store, floor",
    ),
    ("POST", "/api/v1/session", "agent", "Exchange an agent's bearer token for the panel's session cookie"),
    (
        "POST",
        "/api/v1/panel-links",
        "bearer",
        "A one-time panel login link: the admin for {agent_id}, an agent for themselves",
    ),
    ("GET", "/api/v1/calls", "any", "The caller's calls, newest first (the admin: every call)"),
    (
        "POST",
        "/api/v1/calls",
        "admin",
        "A CTI call start: {call_id, agent_id, call facts} joins that call's stream",
    ),
    (
        "POST",
        "/api/v1/calls/{call_id}/actions",
        "any",
        "Record the agent's action {action} on their open call",
    ),
    ("POST", "/api/v1/calls/{call_id}/help", "any", "The agent asks for a supervisor {message}"),
    (
        "GET",
        "/api/v1/events",
        "any",
        "Server-sent events: the caller's calls (kind=calls), then call, event, gone, floor",
    ),
)


def openapi_schema() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path, who, summary in API:
        operation: dict[str, Any] = {
            "summary": summary,
            "description": f"Credential: {who} ('any': an agent's token or cookie, or the admin token).",
            "responses": {"200": {"description": "JSON"}, "401": {"description": "no or wrong credential"}},
        }
        if "{call_id}" in path:
            operation["parameters"] = [
                {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ]
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "callguard serve API", "version": "1"},
        "security": [{"bearer": []}, {"panelCookie": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "panelCookie": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME},
            }
        },
        "paths": paths,
    }
