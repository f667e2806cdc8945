"""A real workstation daemon and a real floor: threats and help requests reach the supervisors, their
answers reach the agent's panel, and nothing is lost while the floor is away.

The daemon is the real one (pipeline, SQLite store and outbox, floor link, API) with its sound devices
closed; the floor is the real app under uvicorn over HTTPS on a real PostgreSQL. The threat comes from
the real pipeline: a generated call replayed with its transcript (the Korean test model cannot
hear English words), its events handed to the live call as the session would hand them."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from callguard.core.config import load_config
from callguard.core.events import Abuse, Event, LevelChange, Prompt
from callguard.core.facts import CallFacts
from callguard.live.daemon import Daemon
from callguard.qa.replay import replay_file
from tests.floor.conftest import FloorServer, StartFloor, TlsCert, free_port
from tests.live.harness import Client, SseReader, start_daemon


def replayed_threat(wav: Path) -> list[Event]:
    """What the real pipeline finds in a generated call with a threat: abuse, levels, prompts, the alert."""
    found: list[Event] = []
    replay_file(
        wav,
        load_config(),
        facts=CallFacts(call_id="threat_en", language="en"),
        transcript=wav.with_name(wav.stem + ".transcript.json"),
        on_event=found.append,
    )
    kept = [e for e in found if isinstance(e, Abuse | LevelChange | Prompt)]
    # on the live call's clock: it has just started, so the replay's first event is its time zero
    kept = [dataclasses.replace(e, t=round(e.t - kept[0].t, 3)) for e in kept]
    assert any(isinstance(e, Prompt) and e.alert for e in kept), f"{wav.name} holds a threat"
    return kept


@pytest.fixture(scope="module")
def threat_events(fixture_call: Callable[[str], Path]) -> list[Event]:
    return replayed_threat(fixture_call("threat_en"))


def start_workstation(
    folder: Path, floor_port: int, credential: str, tls: TlsCert, **settings: Any
) -> Daemon:
    """A daemon enrolled on the floor at `floor_port` (its credential in a file, the floor's cert trusted)."""
    secret = folder / "floor-credential"
    secret.write_text(credential + "\n")
    secret.chmod(0o600)
    return start_daemon(folder, extra=floor_section(floor_port, secret, tls, **settings))


def floor_section(floor_port: int, credential: Path, tls: TlsCert, **settings: Any) -> str:
    values = {
        "url": f"https://127.0.0.1:{floor_port}",
        "credential_file": str(credential),
        "ca_file": str(tls.cert_file),
        "alert_timeout_s": 1.0,
        "retry_max_s": 1.0,
        "poll_s": 0.2,
    } | settings
    # a JSON string is a TOML basic string, and its numbers are TOML's
    return "[floor]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


@pytest.fixture
def workstation(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    running: list[Daemon] = []

    def start(floor_port: int, credential: str, tls: TlsCert, **settings: Any) -> Daemon:
        daemon = start_workstation(tmp_path, floor_port, credential, tls, **settings)
        running.append(daemon)
        return daemon

    yield start
    for daemon in running:
        daemon.shutdown()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


def start_call(daemon: Daemon, call_id: str) -> Client:
    api = Client(daemon.server.port)
    facts = {
        "call_id": call_id,
        "language": "en",
        "agent_name": "Ana",
        "queue": "billing",
        "customer_name": "Ms X",
    }
    assert api.request("POST", "/api/v1/calls", body=facts)[0] == 201
    return api


def hand_to_call(daemon: Daemon, events: list[Event]) -> None:
    """The events, into the live call on the daemon's worker, as its session hands them over."""
    daemon._on_worker(lambda: daemon._handle(daemon.call, events))  # type: ignore[arg-type]


def floor_events(floor: FloorServer) -> list[tuple[int, str, str]]:
    with psycopg.connect(floor.dsn) as conn:
        rows = conn.execute("SELECT seq, call_id, kind FROM events ORDER BY seq").fetchall()
    return [(int(seq), call_id, kind) for seq, call_id, kind in rows]


def test_a_threat_reaches_the_supervisor_and_the_acknowledgement_the_agent(
    start_floor: StartFloor, workstation: Callable[..., Daemon], threat_events: list[Event]
) -> None:
    floor = start_floor()
    ws = floor.enrol("ws-ana", "north")
    marie = floor.supervisor("marie", "north", name="Marie Curie")
    daemon = workstation(floor.port, ws.credential, floor.tls)
    panel = SseReader(daemon.server.port)
    try:
        api = start_call(daemon, "C-77")
        alert_at = next(i for i, e in enumerate(threat_events) if isinstance(e, Prompt) and e.alert)
        hand_to_call(daemon, threat_events[:alert_at])
        sent = time.monotonic()
        hand_to_call(daemon, [threat_events[alert_at]])
        alerts = wait_for(
            lambda: marie.get("/api/v1/floor/state").json()["alerts"], 5, "the alert on the floor"
        )
        latency = time.monotonic() - sent
        [alert] = alerts
        assert alert["agent"] == "Ana" and alert["queue"] == "billing", alert
        assert latency < 1.0, f"the threat took {latency:.2f} s to reach the floor"
        assert "Ms X" not in str(marie.get("/api/v1/floor/state").json()), "no customer name leaves"

        assert marie.post(f"/api/v1/alerts/{alert['id']}/ack").status == 200
        _, seen = panel.wait_for(lambda m: m.get("kind") == "floor" and m.get("state") == "notice", timeout=5)
        assert seen["notice"]["kind"] == "acknowledged" and seen["notice"]["by"] == "Marie Curie"
        assert seen["notice"]["call_id"] == "C-77"

        status, answer, _ = api.request(
            "POST", "/api/v1/calls/C-77/help", body={"message": "irate, please come"}
        )
        assert status == 200 and answer["floor"] is True
        [help_request] = wait_for(
            lambda: marie.get("/api/v1/floor/state").json()["help"], 5, "help on the floor"
        )
        assert marie.post(f"/api/v1/help/{help_request['id']}/on-my-way").status == 200
        _, coming = panel.wait_for(
            lambda m: m.get("kind") == "floor" and m.get("notice", {}).get("kind") == "on_my_way", timeout=5
        )
        assert coming["notice"]["by"] == "Marie Curie"
        hand_to_call(daemon, threat_events[alert_at + 1 :])
        assert api.request("POST", "/api/v1/calls/C-77/end")[0] == 200
        status, answer, _ = api.request("POST", "/api/v1/break", body={"minutes": 7})
        assert status == 200 and answer["break"] is True
        assert api.request("POST", "/api/v1/break", body={"minutes": 0})[0] == 422
    finally:
        panel.close()
    store = daemon.store
    assert store is not None
    wait_for(lambda: store.outbox_pending_count() == 0, 5, "the outbox emptied")
    kinds = [kind for _, _, kind in floor_events(floor)]
    assert kinds[0] == "call_started" and kinds[-2] == "call_ended"
    assert {"threat_alert", "help", "abuse", "level", "prompt"} <= set(kinds)
    assert kinds[-1] == "break", "the break after the call"
    [north] = marie.get(f"/api/v1/figures?day={time.strftime('%Y-%m-%d', time.gmtime())}").json()["teams"]
    assert north["breaks"] == 1 and north["break_minutes"] == 7 and north["threats"] == 1, north
    assert not daemon.health()["floor"]["error"]


def test_the_floor_away_loses_nothing_and_the_agent_is_told(
    start_floor: StartFloor,
    workstation: Callable[..., Daemon],
    threat_events: list[Event],
    tls_cert: TlsCert,
    floor_dsn: str,
) -> None:
    port = free_port()
    with psycopg.connect(floor_dsn) as conn:  # enrolled before its floor first starts
        from callguard.floor.db import enrol_workstation

        credential = enrol_workstation(conn, "ws-ben", "north")
    daemon = workstation(port, credential, tls_cert)
    panel = SseReader(daemon.server.port)
    try:
        start_call(daemon, "C-78")
        hand_to_call(daemon, threat_events)
        _, unreached = panel.wait_for(
            lambda m: m.get("kind") == "floor" and m.get("state") == "unreached", timeout=6
        )
        assert unreached["call_id"] == "C-78" and unreached["about"] == "threat_alert"
        health = daemon.health()
        assert health["status"] != "ok" and not health["floor"]["ok"] and health["floor"]["pending"] > 0
        assert daemon.store is not None
        queued = daemon.store.outbox_pending_count()

        floor = start_floor(port=port)  # the floor is back
        wait_for(lambda: daemon.store is not None and daemon.store.outbox_pending_count() == 0, 10, "sent")
    finally:
        panel.close()
    rows = floor_events(floor)
    assert len(rows) == queued and len({seq for seq, _, _ in rows}) == queued, "each event once"
    assert rows[0][2] == "call_started", "in order"
    wait_for(lambda: daemon.health()["floor"]["ok"], 5, "the floor link well again")


def test_a_revoked_workstation_is_refused_and_says_so(
    floor_server: FloorServer, workstation: Callable[..., Daemon]
) -> None:
    ws = floor_server.enrol("ws-cat", "north")
    with psycopg.connect(floor_server.dsn) as conn:
        from callguard.floor.db import revoke_workstation

        revoke_workstation(conn, "ws-cat")
    daemon = workstation(floor_server.port, ws.credential, floor_server.tls)
    start_call(daemon, "C-79")
    error = wait_for(lambda: daemon.health()["floor"]["error"], 5, "the refusal in /health")
    assert "401" in error and "revoked" in error, error
    assert floor_events(floor_server) == []


def test_a_message_the_floor_cannot_read_is_set_aside_and_the_rest_goes_on(
    floor_server: FloorServer, workstation: Callable[..., Daemon], threat_events: list[Event]
) -> None:
    """A newer workstation's kind of message, or a bug: refused alone (422), it must not hold up the
    threat behind it, as a whole batch retried for ever would."""
    from callguard.sinks.outbox import FloorMessage

    ws = floor_server.enrol("ws-dan", "north")
    daemon = workstation(floor_server.port, ws.credential, floor_server.tls)
    store = daemon.store
    assert store is not None
    daemon.floor.stop()  # type: ignore[union-attr]  # queue first, so that the batch holds both
    start_call(daemon, "C-80")
    daemon.sinks.flush(5)
    store.record(
        None, threat_events[0], FloorMessage("C-80", "kind_from_the_future", 1.0, "2026-12-01T17:00:00.000Z")
    )
    hand_to_call(daemon, threat_events)
    daemon.sinks.flush(5)
    daemon._start_floor(daemon.config)  # the floor link again, with everything queued
    wait_for(lambda: store.outbox_pending_count() == 0, 10, "the outbox emptied")
    kinds = [kind for _, _, kind in floor_events(floor_server)]
    assert "threat_alert" in kinds and "kind_from_the_future" not in kinds
    with sqlite3.connect(store.path) as db:
        [(kind, why)] = db.execute("SELECT kind, rejected FROM outbox WHERE rejected IS NOT NULL").fetchall()
    assert kind == "kind_from_the_future" and "422" in why, why
