"""The floor killed (kill -9) mid-stream: after its restart, the workstation's re-sent outbox is stored
exactly once. The real `callguard floor serve` process, a real PostgreSQL, HTTPS."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from floor_events import event

from callguard.floor.db import enrol_workstation

REPO = Path(__file__).resolve().parents[2]
CALLS = 30
BATCH = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def outbox_of_calls(calls: int) -> list[dict[str, Any]]:
    """A workstation's outbox: calls one after another, each with its escalation, seq 1, 2, ..."""
    kinds = [("call_started", {}), ("level", {"level": "tense", "previous": "calm"}), ("abuse", {}),
             ("level", {"level": "abusive", "previous": "tense"}), ("prompt", {}), ("abuse", {}),
             ("action", {"action": "limits_stated"}), ("call_ended", {})]  # fmt: skip
    events: list[dict[str, Any]] = []
    for number in range(calls):
        for kind, data in kinds:
            events.append(event(len(events) + 1, kind, call_id=f"call-{number}", **data))
    return events


class Floor:
    """`python -m callguard.floor.cli serve --config F` as a child process."""

    def __init__(self, config: Path, port: int, tls: Any) -> None:
        self.config, self.port, self.tls = config, port, tls
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callguard.floor.cli", "serve", "--config", str(self.config)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls.client_context(),
                                                   timeout=2)  # fmt: skip
                conn.request("GET", "/wallboard/")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the floor did not start within 30 s")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class OutboxSender:
    """Ships the outbox in order, BATCH events a request; an event leaves the outbox only when the floor
    answered 200; any error (refused connection, reset) is retried after a short pause."""

    def __init__(self, outbox: list[dict[str, Any]], port: int, credential: str, tls: Any) -> None:
        self.outbox = outbox
        self.port, self.credential, self.tls = port, credential, tls
        self.acked = 0  # events [0, acked) have been acknowledged
        self.stored = 0
        self.duplicates = 0
        self.failures = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while self.acked < len(self.outbox) and time.monotonic() < deadline:
            batch = self.outbox[self.acked : self.acked + BATCH]
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.tls.client_context(),
                                                   timeout=5)  # fmt: skip
                conn.request("POST", "/api/v1/events", body=json.dumps({"events": batch}),
                             headers={"Authorization": f"Bearer {self.credential}",
                                      "Content-Type": "application/json"})  # fmt: skip
                response = conn.getresponse()
                body = json.loads(response.read())
                conn.close()
            except (OSError, http.client.HTTPException, ValueError):
                self.failures += 1
                time.sleep(0.05)
                continue
            assert response.status == 200, body
            self.stored += body["stored"]
            self.duplicates += body["duplicates"]
            self.acked += len(batch)


def test_a_floor_killed_mid_stream_stores_each_resent_event_exactly_once(
    floor_dsn: str, tls_cert: Any, tmp_path: Path
) -> None:
    with psycopg.connect(floor_dsn) as conn:
        credential = enrol_workstation(conn, "ws-crash", "north")
    port = free_port()
    config = tmp_path / "floor.toml"
    config.write_text(
        f'listen = "127.0.0.1"\nport = {port}\ndsn = {floor_dsn!r}\n'
        f'cert_file = "{tls_cert.cert_file}"\nkey_file = "{tls_cert.key_file}"\n'
    )
    outbox = outbox_of_calls(CALLS)
    floor = Floor(config, port, tls_cert)
    sender = OutboxSender(outbox, port, credential, tls_cert)
    try:
        floor.start()
        sender.thread.start()
        while sender.acked < len(outbox) // 3:
            assert sender.thread.is_alive()
            time.sleep(0.005)
        floor.kill()
        with psycopg.connect(floor_dsn) as conn:
            at_kill = conn.execute("SELECT count(*) FROM events").fetchone()
        assert at_kill is not None and 0 < at_kill[0] < len(outbox), "the kill must land mid-stream"
        time.sleep(0.3)  # the sender meets a dead floor for a while
        floor.start()
        sender.thread.join(60)
        assert not sender.thread.is_alive() and sender.acked == len(outbox)
    finally:
        floor.stop()
    assert sender.failures >= 1
    assert sender.stored == len(outbox)
    with psycopg.connect(floor_dsn) as conn:
        seqs = [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]
        calls = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE ended_at IS NOT NULL), array_agg(DISTINCT abuse_count),"
            " array_agg(DISTINCT level_reached) FROM calls"
        ).fetchone()
    assert seqs == list(range(1, len(outbox) + 1))
    # every call folded from all its events: ended, two abuses, abusive reached
    assert calls == (CALLS, CALLS, [2], ["abusive"])
