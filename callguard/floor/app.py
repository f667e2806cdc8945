"""The floor's HTTPS application (starlette, served by uvicorn): the workstations' API, the supervisors'
API and the wallboard page. The routes and their bodies are docs/floor-protocol.md's.

Supervisors' side, beyond the protocol's list: `GET /api/v1/me` (who is logged in and the CSRF token, for
a page reloaded with its cookie), `GET /api/v1/calls/{id}` (a call's events: flagged words, prompts) and
`event: state` as the first event of `/api/v1/floor/stream` (the whole state, so no change falls between
the page's first read and its stream), `event: expired` when the session ends while streaming. `POST
/login` with a urlencoded form answers 303 to /wallboard/, with JSON it answers the CSRF token.

Errors are JSON `{"error": "...", "field": "..."}` (field when one is to blame): 400 body not JSON, 401 no
or bad credential or session, 403 CSRF token or another team asked for, 404 not on this viewer's floor,
409 already answered, 413 body over 1 MB, 422 a bad field, 429 too many failed logins.

Alert channels: each stored event that makes an alert (callguard.floor.alerts: threat_alert, help, a level
to abusive/transfer/release), and each acknowledgement or "on my way", is handed to the AlertSink inside
the transaction that stores it; in service the sink is callguard.floor.dispatch's Dispatcher, which keeps
its own outbox in PostgreSQL and sends it from a task that lives as long as the app (`channels_sink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callguard.floor import AlertSink, auth, db, store
from callguard.floor.config import FloorConfig
from callguard.floor.protocol import ABUSE_CATEGORIES, MAX_BODY_BYTES, ProtocolError, parse_batch
from callguard.floor.store import Viewer, Workstation

log = logging.getLogger("callguard.floor")

WALLBOARD_DIR = Path(__file__).parent / "wallboard"
MAX_LOGIN_BYTES = 16_384
# a login that failed LOGIN_FAILURES times within LOGIN_WINDOW_S is refused until the window has passed
LOGIN_FAILURES = 5
LOGIN_WINDOW_S = 300.0
LOGIN_TRACKED = 10_000
MAX_NOTICE_WAIT = 30.0
DEFAULT_NOTICE_WAIT = 25.0
STREAM_HEARTBEAT = 15.0
STREAM_QUEUE = 1000
POOL_MAX = 20
INCIDENT_CATEGORIES = (*ABUSE_CATEGORIES, "help")
MAX_INCIDENTS = 100_000
CSV_COLUMNS = ("at", "team", "workstation", "agent", "queue", "call_id", "seq", "kind", "category",
               "severity", "words", "detail", "answered_by", "answered_at")  # fmt: skip

# an alert sink is built with the floor's pool (a channel may keep its deliveries in PostgreSQL) and its
# config ([channels], [rules]); it lives as long as the app
SinkFactory = Callable[[AsyncConnectionPool, FloorConfig], AbstractAsyncContextManager[AlertSink]]


class ApiError(Exception):
    """An answer other than 2xx, as JSON {"error": ..., "field": ...}."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        super().__init__(message)


# --- in-process fan-out: the wallboards' streams and the workstations' long polls -------------------------


class FloorFeed:
    """The changes of the floor, fanned out to every open wallboard stream that may see their team."""

    def __init__(self) -> None:
        self._subscribers: dict[asyncio.Queue[tuple[str, dict[str, Any]] | None], int | None] = {}

    def subscribe(self, scope: int | None) -> asyncio.Queue[tuple[str, dict[str, Any]] | None]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue(STREAM_QUEUE)
        self._subscribers[queue] = scope
        return queue

    def unsubscribe(self, queue: asyncio.Queue[tuple[str, dict[str, Any]] | None]) -> None:
        self._subscribers.pop(queue, None)

    def publish(self, team_id: int, event: str, payload: dict[str, Any]) -> None:
        for queue, scope in list(self._subscribers.items()):
            if scope is not None and scope != team_id:
                continue
            try:
                queue.put_nowait((event, payload))
            except asyncio.QueueFull:
                # a stream that cannot keep up is ended; the page reconnects and reads the state again
                self.unsubscribe(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    def close(self) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()


class NoticeBoard:
    """Wakes the long polls of a workstation when a notice for it is stored."""

    def __init__(self) -> None:
        self._waiters: defaultdict[int, set[asyncio.Future[None]]] = defaultdict(set)
        self.closed = False  # the floor is stopping: every poll answers at once

    def waiter(self, workstation_id: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed:
            future.set_result(None)
        else:
            self._waiters[workstation_id].add(future)
        return future

    def discard(self, workstation_id: int, future: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(workstation_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiters[workstation_id]

    def post(self, workstation_id: int) -> None:
        for future in self._waiters.pop(workstation_id, set()):
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        self.closed = True
        for workstation_id in list(self._waiters):
            self.post(workstation_id)


class LoginThrottle:
    """Refuses a login's attempts for a while after too many failures (password guessing, per login)."""

    def __init__(self, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW_S) -> None:
        self.failures = failures
        self.window = window
        self._recent: defaultdict[str, list[float]] = defaultdict(list)

    def _pruned(self, login: str, now: float) -> list[float]:
        recent = [at for at in self._recent.get(login, []) if now - at < self.window]
        if recent:
            self._recent[login] = recent
        else:
            self._recent.pop(login, None)
        return recent

    def retry_after(self, login: str, now: float) -> float:
        """Seconds until this login may try again (0: now)."""
        recent = self._pruned(login, now)
        return 0.0 if len(recent) < self.failures else self.window - (now - recent[0])

    def failed(self, login: str, now: float) -> None:
        self._recent[login].append(now)
        if len(self._recent) > LOGIN_TRACKED:
            # guesses at many logins: forget the failures that have left the window
            for known in list(self._recent):
                self._pruned(known, now)

    def succeeded(self, login: str) -> None:
        self._recent.pop(login, None)


@dataclass
class Floor:
    """Everything a request needs, built at the app's start and closed at its end."""

    config: FloorConfig
    pool: AsyncConnectionPool
    outlet: store.Outlet
    feed: FloorFeed = field(default_factory=FloorFeed)
    notices: NoticeBoard = field(default_factory=NoticeBoard)
    logins: LoginThrottle = field(default_factory=LoginThrottle)


def floor_of(request: Request) -> Floor:
    floor: Floor = request.app.state.floor
    return floor


# --- request helpers ------------------------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"body: expected at most {limit} bytes, got {declared}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body: expected at most {limit} bytes, got more")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> object:
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"body: expected JSON ({error})", "body") from None


async def workstation_of(request: Request) -> Workstation:
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    ws = None
    if scheme.lower() == "bearer" and credential.strip():
        async with floor_of(request).pool.connection() as conn:
            ws = await store.authenticate_workstation(conn, credential.strip())
    if ws is None:
        client = request.client.host if request.client else "?"
        log.warning("refused a workstation request from %s: unknown or revoked credential", client)
        raise ApiError(401, "unknown or revoked workstation credential")
    return ws


async def viewer_of(request: Request, *, changes_state: bool) -> Viewer:
    token = request.cookies.get(auth.SESSION_COOKIE)
    viewer = None
    if token:
        async with floor_of(request).pool.connection() as conn:
            viewer = await store.session_viewer(conn, token)
    if viewer is None:
        raise ApiError(401, "login required (no session, or it has expired)")
    if changes_state and not auth.csrf_matches(viewer.csrf_token, request.headers.get(auth.CSRF_HEADER)):
        raise ApiError(403, "missing or wrong X-CSRF-Token header (the login answer gives it)")
    return viewer


def _query_int(request: Request, key: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, f"{key}: expected an integer, got {raw!r}", key) from None
    if not low <= value <= high:
        raise ApiError(422, f"{key}: expected an integer from {low} to {high}, got {value}", key)
    return value


def _query_day(request: Request, key: str) -> date | None:
    raw = request.query_params.get(key)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ApiError(422, f"{key}: expected a day as YYYY-MM-DD, got {raw!r}", key) from None


# --- workstations' API ----------------------------------------------------------------------------------


async def post_events(request: Request) -> Response:
    floor = floor_of(request)
    ws = await workstation_of(request)
    body = await read_body(request, MAX_BODY_BYTES)
    if b"\\u0000" in body:
        raise ApiError(422, "body: expected no NUL character (\\u0000) in any string", "body")
    try:
        events = parse_batch(parse_json(body))
    except ProtocolError as error:
        log.warning("refused a batch of workstation %s: %s", ws.name, error)
        raise ApiError(422, str(error), error.field) from None
    async with floor.pool.connection() as conn:
        batch = await store.store_batch(conn, ws, events, floor.outlet)
    # alerts first: they are what a supervisor must see at once
    for alert in batch.alerts:
        floor.feed.publish(ws.team_id, "alert" if alert["kind"] == "threat" else "help", alert)
    for call in batch.calls:
        floor.feed.publish(ws.team_id, "call", call)
    return JSONResponse({"stored": batch.stored, "duplicates": batch.duplicates})


async def get_notices(request: Request) -> Response:
    floor = floor_of(request)
    ws = await workstation_of(request)
    after = _query_int(request, "after", 0, 0, 2**62)
    raw_wait = request.query_params.get("wait")
    try:
        wait = DEFAULT_NOTICE_WAIT if raw_wait in (None, "") else float(raw_wait)
    except ValueError:
        raise ApiError(
            422, f"wait: expected a number of seconds from 0 to 30, got {raw_wait!r}", "wait"
        ) from None
    if not 0 <= wait <= MAX_NOTICE_WAIT:
        raise ApiError(422, f"wait: expected a number of seconds from 0 to 30, got {raw_wait!r}", "wait")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        # registered before the query, so a notice stored in between still wakes us
        waiter = floor.notices.waiter(ws.id)
        try:
            async with floor.pool.connection() as conn:
                notices = await store.notices_after(conn, ws.id, after)
            remaining = deadline - loop.time()
            while not notices and remaining > 0 and not waiter.done():
                # a workstation that hung up (a daemon stopping) frees its poll within a second
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), min(remaining, 1.0))
                if not waiter.done() and await request.is_disconnected():
                    return Response(status_code=204)
                remaining = deadline - loop.time()
            if notices or remaining <= 0 or floor.notices.closed:  # closed: the floor is stopping
                return JSONResponse({"notices": notices})
        finally:
            floor.notices.discard(ws.id, waiter)


# --- supervisors' API -----------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    floor = floor_of(request)
    body = await read_body(request, MAX_LOGIN_BYTES)
    is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    if is_form:
        fields = {key: values[0] for key, values in parse_qs(body.decode(errors="replace")).items()}
    else:
        parsed = parse_json(body)
        fields = parsed if isinstance(parsed, dict) else {}
    for key in ("login", "password"):
        if not isinstance(fields.get(key), str) or not fields[key]:
            raise ApiError(422, f"{key}: expected a non-empty string", key)
    now = asyncio.get_running_loop().time()
    wait = floor.logins.retry_after(fields["login"], now)
    if wait > 0:
        raise ApiError(429, f"too many failed logins for this login: try again in {math.ceil(wait)} s")
    async with floor.pool.connection() as conn:
        opened = await store.open_session(
            conn, fields["login"], fields["password"], floor.config.session_hours
        )
    if opened is None:
        floor.logins.failed(fields["login"], now)
        log.warning("failed login for %r", fields["login"][:64])
        raise ApiError(401, "wrong login or password")
    floor.logins.succeeded(fields["login"])
    token, viewer = opened
    response: Response
    if is_form:
        response = RedirectResponse("/wallboard/", status_code=303)
    else:
        response = JSONResponse({"csrf_token": viewer.csrf_token, "user": viewer.to_json()})
    response.set_cookie(
        auth.SESSION_COOKIE, token, max_age=int(floor.config.session_hours * 3600), path="/",
        secure=True, httponly=True, samesite="strict",
    )  # fmt: skip
    return response


async def logout(request: Request) -> Response:
    await viewer_of(request, changes_state=True)
    async with floor_of(request).pool.connection() as conn:
        await store.close_session(conn, request.cookies[auth.SESSION_COOKIE])
    response = JSONResponse({"logged_out": True})
    response.delete_cookie(auth.SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


async def me(request: Request) -> Response:
    viewer = await viewer_of(request, changes_state=False)
    return JSONResponse({"csrf_token": viewer.csrf_token, "user": viewer.to_json()})


async def floor_state(request: Request) -> Response:
    viewer = await viewer_of(request, changes_state=False)
    async with floor_of(request).pool.connection() as conn:
        return JSONResponse(await store.floor_state(conn, viewer))


def sse(event: str, payload: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def floor_stream(request: Request) -> Response:
    floor = floor_of(request)
    viewer = await viewer_of(request, changes_state=False)
    token = request.cookies[auth.SESSION_COOKIE]
    queue = floor.feed.subscribe(viewer.scope)

    async def events() -> AsyncIterator[str]:
        try:
            async with floor.pool.connection() as conn:
                yield sse("state", await store.floor_state(conn, viewer))
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), STREAM_HEARTBEAT)
                except TimeoutError:
                    async with floor.pool.connection() as conn:
                        if await store.session_viewer(conn, token) is None:
                            yield sse("expired", {"error": "login required (the session has ended)"})
                            return
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                yield sse(*item)
        finally:
            floor.feed.unsubscribe(queue)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


async def _answer(request: Request, kind: str) -> Response:
    floor = floor_of(request)
    viewer = await viewer_of(request, changes_state=True)
    alert_id: int = request.path_params["id"]
    async with floor.pool.connection() as conn:
        try:
            answer = await store.answer_alert(conn, viewer, alert_id, kind, floor.outlet)
        except store.AnswerError as error:
            raise ApiError(error.status, str(error)) from None
    floor.notices.post(answer.workstation_id)
    floor.feed.publish(answer.alert["team_id"], "ack", answer.alert)
    return JSONResponse({"alert": answer.alert, "notice": answer.notice})


async def ack_alert(request: Request) -> Response:
    return await _answer(request, "threat")


async def help_on_my_way(request: Request) -> Response:
    return await _answer(request, "help")


async def call_detail(request: Request) -> Response:
    viewer = await viewer_of(request, changes_state=False)
    async with floor_of(request).pool.connection() as conn:
        detail = await store.call_events(conn, viewer, request.path_params["id"])
    if detail is None:
        raise ApiError(404, f"no call {request.path_params['id']} on your floor")
    return JSONResponse(detail)


def incident_filter(request: Request, viewer: Viewer, default_limit: int) -> store.IncidentFilter:
    params = request.query_params
    team = params.get("team") or None
    if team is not None and viewer.scope is not None and team != viewer.team:
        raise ApiError(403, f"team: you see only your team ({viewer.team}), not {team!r}", "team")
    category = params.get("category") or None
    if category is not None and category not in INCIDENT_CATEGORIES:
        raise ApiError(422, f"category: expected one of {', '.join(INCIDENT_CATEGORIES)}, got {category!r}",
                       "category")  # fmt: skip
    return store.IncidentFilter(
        team=team,
        agent=params.get("agent") or None,
        day=_query_day(request, "day"),
        category=category,
        limit=_query_int(request, "limit", default_limit, 1, MAX_INCIDENTS),
    )


def csv_cell(value: object) -> str:
    """A CSV cell; a text that a spreadsheet would run as a formula (=, +, -, @) is quoted with '."""
    text = "; ".join(value) if isinstance(value, list) else "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def get_incidents(request: Request) -> Response:
    floor = floor_of(request)
    viewer = await viewer_of(request, changes_state=False)
    output = request.query_params.get("format", "json")
    if output not in ("json", "csv"):
        raise ApiError(422, f"format: expected json or csv, got {output!r}", "format")
    # the page shows the latest; an export is the whole history the filter selects
    wanted = incident_filter(request, viewer, 1000 if output == "json" else MAX_INCIDENTS)
    async with floor.pool.connection() as conn:
        rows = await store.incidents(conn, viewer, wanted, floor.config.zone)
    if output == "json":
        return JSONResponse({"incidents": rows})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(row[column]) for column in CSV_COLUMNS])
    name = f"incidents-{wanted.day.isoformat() if wanted.day else 'all'}.csv"
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def get_figures(request: Request) -> Response:
    floor = floor_of(request)
    viewer = await viewer_of(request, changes_state=False)
    day = _query_day(request, "day") or datetime.now(floor.config.zone).date()
    async with floor.pool.connection() as conn:
        teams = await store.figures(conn, viewer, day, floor.config.zone)
    return JSONResponse({"day": day.isoformat(), "timezone": floor.config.timezone, "teams": teams})


async def root(request: Request) -> Response:
    return RedirectResponse("/wallboard/", status_code=307)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    body: dict[str, Any] = {"error": exc.message}
    if exc.field is not None:
        body["field"] = exc.field
    return JSONResponse(body, status_code=exc.status)


# --- security headers -----------------------------------------------------------------------------------

SECURITY_HEADERS = [
    (b"strict-transport-security", b"max-age=31536000"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; "
        b"style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class SecurityHeaders:
    """Adds the headers above to every answer, and no-store to all but the page's files (the answers are
    about people's calls)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = not scope["path"].startswith("/wallboard")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if is_api and not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# --- the app --------------------------------------------------------------------------------------------


@asynccontextmanager
async def channels_sink(pool: AsyncConnectionPool, config: FloorConfig) -> AsyncIterator[AlertSink]:
    """The alert channels of the config ([channels], [rules], [delivery]), their dispatcher running."""
    from callguard.floor.dispatch import DeliverySettings, Dispatcher
    from callguard.floor.rules import routing_from_config

    routing = routing_from_config(config.channels, config.rules)
    try:
        dispatcher = Dispatcher(config.dsn, routing, DeliverySettings.from_table(config.delivery))
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop), name="alert-dispatcher")
        try:
            yield dispatcher
        finally:
            stop.set()
            await running
    finally:
        await routing.aclose()


def create_app(config: FloorConfig, sink_factory: SinkFactory | None = channels_sink) -> Starlette:
    """The floor's ASGI app. At its start it applies pending migrations, opens its connection pool and
    starts its alert sink (sink_factory None: alerts reach only the wallboard)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(db.migrate, config.dsn)
        pool = AsyncConnectionPool(
            config.dsn, min_size=2, max_size=POOL_MAX, kwargs={"autocommit": True}, open=False
        )
        await pool.open(wait=True, timeout=30)
        try:
            async with contextlib.AsyncExitStack() as stack:
                sink = (
                    None
                    if sink_factory is None
                    else await stack.enter_async_context(sink_factory(pool, config))
                )
                floor = Floor(config=config, pool=pool, outlet=store.Outlet(sink, config.wallboard_url))
                app.state.floor = floor
                loop = asyncio.get_running_loop()

                def release() -> None:
                    floor.notices.close()
                    floor.feed.close()

                # for the server's stop signal: open polls and streams answer now, not after its grace
                app.state.release_waiters = lambda: loop.call_soon_threadsafe(release)
                try:
                    yield
                finally:
                    floor.feed.close()
                    floor.notices.close()
        finally:
            await pool.close()

    routes = [
        Route("/", root),
        Route("/api/v1/events", post_events, methods=["POST"]),
        Route("/api/v1/notices", get_notices, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/v1/me", me, methods=["GET"]),
        Route("/api/v1/floor/state", floor_state, methods=["GET"]),
        Route("/api/v1/floor/stream", floor_stream, methods=["GET"]),
        Route("/api/v1/calls/{id:int}", call_detail, methods=["GET"]),
        Route("/api/v1/alerts/{id:int}/ack", ack_alert, methods=["POST"]),
        Route("/api/v1/help/{id:int}/on-my-way", help_on_my_way, methods=["POST"]),
        Route("/api/v1/incidents", get_incidents, methods=["GET"]),
        Route("/api/v1/figures", get_figures, methods=["GET"]),
        Mount(
            "/wallboard",
            app=StaticFiles(directory=WALLBOARD_DIR, html=True, check_dir=False),
            name="wallboard",
        ),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={ApiError: api_error})
    app.add_middleware(SecurityHeaders)
    return app
