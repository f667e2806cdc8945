"""The real peers the alert channels are tested against, each on 127.0.0.1 at a free port:

- `Rsyslog`: Debian's rsyslogd with its own config (TCP and UDP inputs), writing every message it
  parsed as one JSON line (its RFC 5424 fields) to a file that `records()` reads;
- `Alertmanager`: Debian's prometheus-alertmanager, clustering off, its storage in a temp folder;
- `WebhookReceiver`: an HTTP(S) server in a thread recording each POST (path, headers, JSON body);
- `SmtpSink`: aiosmtpd's Controller, optionally requiring STARTTLS and a login, keeping each message;
- `make_alert`: a sample threat alert, with words that each format must escape.
"""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import http.server
import json
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from callguard.floor.alerts import Alert

# what the workstation sends: already redacted; characters each format must escape
TRICKY_WORDS = ("je vais te tuer", 'say "it"] \\ now', "a=b|c")
AT = datetime(2026, 12, 1, 17, 3, 4, 120000, tzinfo=UTC)


def make_alert(alert_id: str = "ws-12:41", **changes: Any) -> Alert:
    fields: dict[str, Any] = {
        "id": alert_id, "kind": "threat", "state": "firing", "team": "north", "workstation": "ws-12",
        "agent": "Alice Martin", "queue": "billing", "call_id": "call-7", "at": AT, "category": "threat",
        "words": TRICKY_WORDS, "title": "Threat of violence", "url": "https://floor.example/wallboard#alert-41",
    }  # fmt: skip
    fields.update(changes)
    return Alert(**fields)


RSYSLOGD = "/usr/sbin/rsyslogd"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 now, for TCP (and, with SOCK_DGRAM, for UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A TCP port on 127.0.0.1 where nothing listens: connecting is refused."""
    return free_port()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


def _accepts_tcp(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    return _accepts_tcp(port) or process.poll() is not None


def _require(binary: str, package: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} not installed: apt-get install {package}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- rsyslog --------------------------------------------------------------------------------------------

# each message rsyslog parsed, as the RFC 5424 fields it found (its own property names)
_RSYSLOG_CONFIG = """
global(workDirectory="{folder}")
module(load="imtcp")
module(load="imudp")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="floor")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="floor")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="protocol_version" name="protocol-version" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="timestamp" name="timestamp" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="floor") {{
  action(type="omfile" file="{output}" template="fields")
}}
"""


@dataclass
class Rsyslog:
    folder: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def output(self) -> Path:
        return self.folder / "received.jsonl"

    @classmethod
    @contextlib.contextmanager
    def running(cls, folder: Path) -> Iterator[Rsyslog]:
        _require(RSYSLOGD, "rsyslog")
        folder.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):  # a port probed free can be taken before rsyslogd binds it
            port = free_port()
            config = folder / "rsyslog.conf"
            output = folder / "received.jsonl"
            config.write_text(_RSYSLOG_CONFIG.format(folder=folder, port=port, output=output))
            process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(config), "-i", str(folder / "rsyslogd.pid")],
                stdout=subprocess.DEVNULL,
                stderr=(folder / "rsyslogd.log").open("wb"),
            )
            try:
                wait_until(partial(_listening, port, process), 10, "rsyslogd listening")
            except AssertionError:
                _stop(process)
                raise
            if process.poll() is None:
                break
        else:
            raise RuntimeError(f"rsyslogd did not start: {(folder / 'rsyslogd.log').read_text()}")
        try:
            yield cls(folder, port, process)
        finally:
            _stop(process)

    def records(self) -> list[dict[str, str]]:
        if not self.output.exists():
            return []
        lines = self.output.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        wait_until(lambda: len(self.records()) >= count, timeout, f"{count} messages written by rsyslogd")
        return self.records()


# --- Alertmanager ---------------------------------------------------------------------------------------

_ALERTMANAGER_CONFIG = """
route:
  receiver: nowhere
  group_wait: 1h
receivers:
  - name: nowhere
"""


@dataclass
class Alertmanager:
    url: str
    process: subprocess.Popen[bytes]

    @classmethod
    @contextlib.contextmanager
    def running(cls, folder: Path) -> Iterator[Alertmanager]:
        _require(ALERTMANAGER, "prometheus-alertmanager")
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "alertmanager.yml"
        config.write_text(_ALERTMANAGER_CONFIG)
        for _attempt in range(3):
            port = free_port()
            log = folder / "alertmanager.log"
            process = subprocess.Popen(
                [ALERTMANAGER, f"--config.file={config}", f"--storage.path={folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                stdout=subprocess.DEVNULL, stderr=log.open("wb"),
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            wait_until(partial(_ready_or_ended, url, process), 15, "alertmanager ready")
            if process.poll() is None:
                break
        else:
            raise RuntimeError(f"alertmanager did not start: {log.read_text()}")
        try:
            yield cls(url, process)
        finally:
            _stop(process)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts Alertmanager holds as active (resolved ones it leaves out)."""
        query = "&".join(f"filter={key}%3D%22{value}%22" for key, value in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as answer:
            alerts: list[dict[str, Any]] = json.load(answer)
        return alerts


def _ready_or_ended(url: str, process: subprocess.Popen[bytes]) -> bool:
    return _ready(url) or process.poll() is not None


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


# --- webhook receiver -----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class WebhookReceiver:
    """Records every POST; answers `status` (200 by default)."""

    server: http.server.ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    status: int = 200

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hooks/floor") -> str:
        scheme = "https" if isinstance(self.server.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    @classmethod
    @contextlib.contextmanager
    def running(cls, tls: ssl.SSLContext | None = None, port: int = 0) -> Iterator[WebhookReceiver]:
        receiver: WebhookReceiver | None = None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                assert receiver is not None
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length).decode("utf-8"))
                receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads what was received."""

        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        receiver = cls(server)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield receiver
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        wait_until(lambda: len(self.received) >= count, timeout, f"{count} webhook POSTs received")
        return list(self.received)


# --- SMTP -----------------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """aiosmtpd's server: each message received, parsed, with the envelope's sender and recipients."""

    controller: Controller
    messages: list[tuple[Envelope, email.message.EmailMessage]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls, tls: ssl.SSLContext | None = None, login: tuple[str, str] | None = None
    ) -> Iterator[SmtpSink]:
        sink: SmtpSink | None = None

        class Handler:
            async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
                assert sink is not None and isinstance(envelope.content, bytes)
                # SMTP's CRLF line ends back to Python's \n, as the sender wrote the text
                content = envelope.content.replace(b"\r\n", b"\n")
                parsed = email.message_from_bytes(content, policy=email.policy.default)
                assert isinstance(parsed, email.message.EmailMessage)
                sink.messages.append((envelope, parsed))
                return "250 OK"

        def authenticate(
            server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = (
                login is not None
                and isinstance(auth_data, LoginPassword)
                and (auth_data.login.decode(), auth_data.password.decode()) == login
            )
            # handled=False: aiosmtpd answers 535 itself on a failure
            return AuthResult(success=ok, handled=False)

        options: dict[str, Any] = {}
        if tls is not None:
            options.update(tls_context=tls, require_starttls=True)
        if login is not None:
            options.update(authenticator=authenticate, auth_require_tls=True)
        controller = Controller(Handler(), hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        sink = cls(controller)
        try:
            yield sink
        finally:
            controller.stop()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[Envelope, email.message.EmailMessage]]:
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} e-mails received")
        return list(self.messages)


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
