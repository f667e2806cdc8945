"""Fixtures of the floor's tests: a real PostgreSQL cluster, a fresh database per test, a TLS certificate.

- `pg_dsn` (session): the admin DSN of a PostgreSQL cluster made with initdb/pg_ctl in a temporary folder
  owned by the `postgres` user (initdb refuses root), listening only on 127.0.0.1 at a free port, password
  (SCRAM) authentication over TCP; stopped and removed at the end of the session.
- `floor_dsn` (function): the DSN of a new database with the floor's migrations applied, dropped after.
- `empty_db_dsn` (function): the DSN of a new, empty database (for the migration tests).
- `tls_cert` (session): a self-signed certificate and key for 127.0.0.1 and localhost (openssl), with
  `client_context()` giving an ssl.SSLContext that trusts it and checks the host name.
- `make_event` (session): make_event(seq, kind, call_id="call-1", at=..., **data) -> a protocol event
  with plausible data for its kind, `data` overridden by the keyword arguments.
- `start_floor` (function): start_floor(sink_factory=None, **FloorConfig fields) starts the real app under
  uvicorn over HTTPS on 127.0.0.1 (a free port) in a thread, on `floor_dsn`; returns a FloorServer with
  `request()`, `enrol(name, team)` -> WorkstationClient, `supervisor(login, team)` -> SupervisorClient.
  `floor_server` is start_floor() with no alert sink; start_floor(channels_sink, channels=..., rules=...)
  runs the real dispatcher (callguard.floor.app.channels_sink); `RecordingSink().factory()` records.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from threading import Thread
from typing import Any

import psycopg
import pytest
import uvicorn
from floor_events import event
from pg import PgCluster, TlsCert, make_tls_cert, pg_bindir, start_cluster, stop_cluster
from pg import free_port as free_port  # the tests import it from here

from callguard.floor import AlertSink
from callguard.floor.alerts import Alert
from callguard.floor.app import SinkFactory, create_app
from callguard.floor.config import FloorConfig
from callguard.floor.db import add_user, apply_migrations, enrol_workstation


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = pg_bindir()
    cluster = start_cluster(bindir)
    try:
        yield cluster
    finally:
        stop_cluster(bindir, cluster)


@pytest.fixture(scope="session")
def pg_dsn(pg_cluster: PgCluster) -> str:
    """The admin DSN (database `postgres`) of the session's PostgreSQL cluster."""
    return pg_cluster.dsn()


TEMPLATE_DB = "floor_template"
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def floor_template(pg_cluster: PgCluster) -> str:
    """A database with the migrations applied once, copied for each test (CREATE DATABASE ... TEMPLATE)."""
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    with psycopg.connect(pg_cluster.dsn(TEMPLATE_DB)) as conn:
        apply_migrations(conn)
    return TEMPLATE_DB


def _new_database(cluster: PgCluster, template: str) -> Iterator[str]:
    name = f"floor_test_{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    try:
        yield cluster.dsn(name)
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def floor_dsn(pg_cluster: PgCluster, floor_template: str) -> Iterator[str]:
    """A fresh database with the floor's schema (every migration applied); dropped after the test."""
    yield from _new_database(pg_cluster, floor_template)


@pytest.fixture
def empty_db_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh empty database (no migration applied); dropped after the test."""
    yield from _new_database(pg_cluster, "template0")


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> TlsCert:
    return make_tls_cert(tmp_path_factory.mktemp("floor-tls"))


# --- a real floor: uvicorn over HTTPS on 127.0.0.1, in a thread of the test process ------------------------


@dataclass
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def all_headers(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


@dataclass
class FloorServer:
    """A running floor. `request` speaks HTTPS to it (the test certificate trusted, the host checked)."""

    port: int
    dsn: str
    tls: TlsCert
    config: FloorConfig

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def connection(self, timeout: float = 10.0) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls.client_context(),
                                           timeout=timeout)  # fmt: skip

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HttpAnswer:
        sent_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=sent_headers)
            response = conn.getresponse()
            return HttpAnswer(response.status, response.getheaders(), response.read())
        finally:
            conn.close()

    def enrol(self, name: str, team: str) -> WorkstationClient:
        """Enrol a workstation (as `callguard floor enrol` does); a client holding its credential."""
        with psycopg.connect(self.dsn) as conn:
            credential = enrol_workstation(conn, name, team)
        return WorkstationClient(self, name, credential)

    def add_user(self, login: str, role: str, team: str | None, name: str | None = None) -> str:
        """Add a supervisor or admin; return the password."""
        password = f"pw-{login}-{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn) as conn:
            add_user(conn, login, role, team, name or login.title(), password)
        return password

    def supervisor(self, login: str, team: str | None, role: str = "supervisor", name: str | None = None
                   ) -> SupervisorClient:  # fmt: skip
        """Add a user and log them in (POST /login, JSON)."""
        password = self.add_user(login, role, team, name)
        answer = self.request("POST", "/login", json_body={"login": login, "password": password})
        assert answer.status == 200, answer.body
        cookie = answer.header("set-cookie")
        assert cookie is not None
        return SupervisorClient(self, cookie.split(";", 1)[0], answer.json()["csrf_token"])


@dataclass
class WorkstationClient:
    floor: FloorServer
    name: str
    credential: str

    def post_events(self, events: list[dict[str, Any]], credential: str | None = None) -> HttpAnswer:
        token = self.credential if credential is None else credential
        return self.floor.request("POST", "/api/v1/events", json_body={"events": events},
                                  headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    def notices(self, after: int = 0, wait: float = 0) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {self.credential}"}
        path = f"/api/v1/notices?after={after}&wait={wait}"
        return self.floor.request("GET", path, headers=headers, timeout=wait + 10)


@dataclass
class SupervisorClient:
    floor: FloorServer
    cookie: str
    csrf_token: str

    def get(self, path: str) -> HttpAnswer:
        return self.floor.request("GET", path, headers={"Cookie": self.cookie})

    def post(self, path: str, *, csrf: bool = True, json_body: Any = None) -> HttpAnswer:
        headers = {"Cookie": self.cookie}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf_token
        return self.floor.request("POST", path, headers=headers, json_body=json_body, body=b"")


class RecordingSink:
    """An AlertSink keeping what the floor hands it, and whether the alert's event was already stored in
    the transaction it was handed in (the alert channels themselves are helper B's tests)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.event_stored: list[bool] = []
        self.received = threading.Event()

    async def enqueue(self, conn: psycopg.AsyncConnection[Any], alert: Alert) -> list[str]:
        workstation, _, seq = alert.id.rpartition(":")
        cur = await conn.execute(
            "SELECT count(*) FROM events e JOIN workstations w ON w.id = e.workstation_id"
            " WHERE w.name = %s AND e.seq = %s",
            (workstation, int(seq)),
        )
        row = await cur.fetchone()
        self.event_stored.append(row is not None and row[0] == 1)
        self.alerts.append(alert)
        self.received.set()
        return []

    def factory(self) -> SinkFactory:
        @contextlib.asynccontextmanager
        async def make(pool: Any, config: FloorConfig) -> AsyncIterator[AlertSink]:
            yield self

        return make


def run_floor_in_thread(
    config: FloorConfig, sink_factory: SinkFactory | None, port: int = 0
) -> tuple[uvicorn.Server, Thread]:
    cert_file, key_file = config.require_tls()
    app = create_app(config, sink_factory)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, ssl_certfile=str(cert_file),
                       ssl_keyfile=str(key_file), log_level="warning", timeout_graceful_shutdown=2)
    )  # fmt: skip
    thread = Thread(target=server.run, name="floor-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the floor did not start (see the log above)")
        time.sleep(0.02)
    return server, thread


StartFloor = Callable[..., FloorServer]


@pytest.fixture
def start_floor(floor_dsn: str, tls_cert: TlsCert) -> Iterator[StartFloor]:
    """start_floor(sink_factory=None, port=0, **config) -> a FloorServer on this test's database (on a free
    port unless given one); stopped after."""
    running: list[tuple[uvicorn.Server, Thread]] = []

    def start(sink_factory: SinkFactory | None = None, port: int = 0, **settings: Any) -> FloorServer:
        config = FloorConfig(dsn=floor_dsn, cert_file=tls_cert.cert_file, key_file=tls_cert.key_file,
                             **settings)  # fmt: skip
        server, thread = run_floor_in_thread(config, sink_factory, port)
        running.append((server, thread))
        port = server.servers[0].sockets[0].getsockname()[1]
        return FloorServer(port=port, dsn=floor_dsn, tls=tls_cert, config=config)

    yield start
    for server, _thread in running:
        server.should_exit = True
    for _server, thread in running:
        thread.join(15)


@pytest.fixture
def floor_server(start_floor: StartFloor) -> FloorServer:
    """A running floor with no alert channels, on a fresh database."""
    return start_floor()


@pytest.fixture(scope="session")
def make_event() -> Callable[..., dict[str, Any]]:
    """make_event(seq, kind, call_id="call-1", at=..., **data): tests/floor/floor_events.event."""
    return event
