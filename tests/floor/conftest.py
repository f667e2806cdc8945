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
import glob
import http.client
import itertools
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from typing import Any

import psycopg
import pytest
import uvicorn
from floor_events import event
from psycopg.conninfo import make_conninfo

from callguard.floor import AlertSink
from callguard.floor.alerts import Alert
from callguard.floor.app import SinkFactory, create_app
from callguard.floor.config import FloorConfig
from callguard.floor.db import add_user, apply_migrations, enrol_workstation

PG_USER = "postgres"


def pg_bindir() -> Path:
    """The folder of initdb/pg_ctl: pg_config's, else the newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        pytest.skip("PostgreSQL server binaries (initdb) not found: apt-get install postgresql")
    return Path(candidates[-1]).parent


def as_pg_user(argv: list[str]) -> list[str]:
    """The command run as the postgres user when we are root (the server refuses to run as root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *argv]
    return argv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PgCluster:
    root: Path
    port: int
    password: str

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=PG_USER, password=self.password, dbname=dbname
        )


def start_cluster(bindir: Path) -> PgCluster:
    root = Path(tempfile.mkdtemp(prefix="callguard-floor-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user=PG_USER, group=PG_USER)
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, user=PG_USER, group=PG_USER)
    subprocess.run(
        as_pg_user(
            [str(bindir / "initdb"), "-D", str(root / "data"), "-U", PG_USER, "--pwfile", str(pwfile),
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"]
        ),
        check=True, capture_output=True,
    )  # fmt: skip
    pwfile.unlink()
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between our probe and the server's bind
        cluster = PgCluster(root, free_port(), password)
        options = (
            f"-c listen_addresses=127.0.0.1 -p {cluster.port} -c unix_socket_directories={root} "
            # test data only: nothing needs to survive a crash of the machine
            "-c fsync=off -c max_connections=200"
        )
        started = subprocess.run(
            as_pg_user([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-l", str(root / "log"),
                        "-o", options, "-w", "-t", "30", "start"]),
            capture_output=True, text=True,
        )  # fmt: skip
        if started.returncode == 0:
            return cluster
        last_error = started.stdout + started.stderr + (root / "log").read_text(errors="replace")
    shutil.rmtree(root, ignore_errors=True)
    raise RuntimeError(f"the test PostgreSQL cluster did not start:\n{last_error}")


def stop_cluster(bindir: Path, cluster: PgCluster) -> None:
    subprocess.run(
        as_pg_user([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-m", "immediate", "-w", "stop"]),
        capture_output=True,
    )
    shutil.rmtree(cluster.root, ignore_errors=True)


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


@dataclass(frozen=True)
class TlsCert:
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only this certificate, host name checked (127.0.0.1 or localhost)."""
        return ssl.create_default_context(cafile=str(self.cert_file))


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> TlsCert:
    folder = tmp_path_factory.mktemp("floor-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return TlsCert(cert, key)


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
    config: FloorConfig, sink_factory: SinkFactory | None
) -> tuple[uvicorn.Server, Thread]:
    cert_file, key_file = config.require_tls()
    app = create_app(config, sink_factory)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file),
                       log_level="warning", timeout_graceful_shutdown=2)
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
    """start_floor(sink_factory=None, **config) -> a FloorServer on this test's database; stopped after."""
    running: list[tuple[uvicorn.Server, Thread]] = []

    def start(sink_factory: SinkFactory | None = None, **settings: Any) -> FloorServer:
        config = FloorConfig(dsn=floor_dsn, cert_file=tls_cert.cert_file, key_file=tls_cert.key_file,
                             **settings)  # fmt: skip
        server, thread = run_floor_in_thread(config, sink_factory)
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
