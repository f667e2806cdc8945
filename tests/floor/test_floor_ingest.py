"""Workstations → the floor: POST /api/v1/events on a real floor (uvicorn, HTTPS) and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from typing import Any

import psycopg
import pytest
from floor_events import event, recent

from callguard.floor import cli, store
from callguard.floor.db import enrol_workstation
from callguard.floor.protocol import parse_event


def count_events(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
        assert row is not None
        return int(row[0])


def test_enrolled_workstation_ingests_and_the_supervisor_sees_the_call(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    boss = floor_server.supervisor("nora", "north", name="Nora Petit")
    at = recent(4.12)
    kinds = ("call_started", "level", "abuse")
    answer = ws.post_events([event(seq, kind, at=at) for seq, kind in enumerate(kinds, 1)])
    assert answer.status == 200, answer.body
    assert answer.json() == {"stored": 3, "duplicates": 0}
    state = boss.get("/api/v1/floor/state").json()
    assert state["user"] == {"login": "nora", "name": "Nora Petit", "role": "supervisor", "team": "north"}
    [call] = state["calls"]
    assert (call["agent"], call["queue"], call["level"], call["workstation"], call["team"]) == (
        "Alice Martin", "billing", "abusive", "ws-01", "north",
    )  # fmt: skip
    assert call["started_at"] == recent(4.12)
    assert call["abuse_count"] == 1 and call["duration"] > 0
    with psycopg.connect(floor_server.dsn) as conn:
        seen = conn.execute("SELECT last_seen FROM workstations WHERE name = 'ws-01'").fetchone()
    assert seen is not None and seen[0] is not None


def test_wrong_or_revoked_credential_is_refused_and_nothing_is_stored(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    wrong = ws.post_events([event(1, "call_started")], credential="cgf_not-the-right-one")
    assert wrong.status == 401
    assert wrong.json() == {"error": "unknown or revoked workstation credential"}
    missing = floor_server.request("POST", "/api/v1/events", json_body={"events": [event(1, "call_started")]})
    assert missing.status == 401
    assert cli.main(["revoke", "ws-01", "--dsn", floor_server.dsn]) == 0
    revoked = ws.post_events([event(1, "call_started")])
    assert revoked.status == 401
    assert revoked.json()["error"] == "unknown or revoked workstation credential"
    polled = ws.notices()
    assert polled.status == 401
    assert count_events(floor_server.dsn) == 0


def test_a_resent_batch_stores_nothing_twice(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    batch = [event(seq, "abuse") for seq in range(1, 11)]
    assert ws.post_events(batch).json() == {"stored": 10, "duplicates": 0}
    assert ws.post_events(batch).json() == {"stored": 0, "duplicates": 10}
    # a resend overlapping new events: only the new ones are stored
    assert ws.post_events([*batch[5:], event(11, "abuse")]).json() == {"stored": 1, "duplicates": 5}
    assert count_events(floor_server.dsn) == 11
    # another workstation's seq 1 is its own event
    other = floor_server.enrol("ws-02", "north")
    assert other.post_events([event(1, "abuse")]).json() == {"stored": 1, "duplicates": 0}


BAD_EVENTS = [
    ({"seq": 0}, "events[1].seq"),
    ({"seq": "2"}, "events[1].seq"),
    ({"kind": "gossip"}, "events[1].kind"),
    ({"at": "yesterday"}, "events[1].at"),
    ({"at": "2026-12-01T17:03:04"}, "events[1].at"),
    ({"t": -1}, "events[1].t"),
    ({"call_id": ""}, "events[1].call_id"),
    ({"call_id": "x" * 129}, "events[1].call_id"),
    ({"data": {"category": "insult", "severity": 5, "words": []}}, "events[1].data.severity"),
    ({"data": {"category": "rudeness", "severity": 1, "words": []}}, "events[1].data.category"),
    ({"data": {"category": "insult", "severity": 1, "words": "idiot"}}, "events[1].data.words"),
    ({"data": "abuse"}, "events[1].data"),
]


@pytest.mark.parametrize(("change", "field"), BAD_EVENTS)
def test_a_bad_event_is_refused_naming_its_field_and_nothing_of_the_batch_is_stored(
    floor_server: Any, change: dict[str, Any], field: str
) -> None:
    ws = floor_server.enrol("ws-01", "north")
    bad = {**event(2, "abuse"), **change}
    answer = ws.post_events([event(1, "call_started"), bad, event(3, "abuse")])
    assert answer.status == 422, answer.body
    body = answer.json()
    assert body["field"] == field
    assert body["error"].startswith(f"{field}: expected ")
    assert count_events(floor_server.dsn) == 0


def test_kind_specific_checks_name_the_data_field(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    cases = [
        (event(1, "call_started", language="de"), "events[0].data.language"),
        (event(1, "level", level="furious"), "events[0].data.level"),
        (event(1, "prompt", alert="yes"), "events[0].data.alert"),
        (event(1, "action", action="shouted_back"), "events[0].data.action"),
        (event(1, "help", message="m" * 257), "events[0].data.message"),
        (event(1, "break", minutes="five"), "events[0].data.minutes"),
        (event(1, "call_ended", duration=-3), "events[0].data.duration"),
        (event(1, "threat_alert", prompt_id=""), "events[0].data.prompt_id"),
    ]
    for bad, field in cases:
        answer = ws.post_events([bad])
        assert (answer.status, answer.json()["field"]) == (422, field)
    assert count_events(floor_server.dsn) == 0


def test_limits_of_a_request(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    too_many = ws.post_events([event(seq, "break") for seq in range(1, 502)])
    assert too_many.status == 422
    assert too_many.json()["error"] == "events: expected at most 500 events per request, got '501 events'"
    assert ws.post_events([event(seq, "break") for seq in range(1, 501)]).json()["stored"] == 500
    huge = [event(1000 + i, "abuse", words=["w" * 100] * 100) for i in range(110)]
    headers = {"Authorization": f"Bearer {ws.credential}"}
    too_big = floor_server.request("POST", "/api/v1/events", json_body={"events": huge}, headers=headers)
    assert too_big.status == 413
    assert "at most 1000000 bytes" in too_big.json()["error"]
    not_json = floor_server.request("POST", "/api/v1/events", body=b"{events:", headers=headers)
    assert (not_json.status, not_json.json()["field"]) == (400, "body")
    nan = floor_server.request("POST", "/api/v1/events", body=b'{"events": [{"t": NaN}]}', headers=headers)
    assert nan.status == 400
    nul = json.dumps({"events": [event(2000, "help", message="a\u0000b")]}).encode()
    assert floor_server.request("POST", "/api/v1/events", body=nul, headers=headers).status == 422
    assert count_events(floor_server.dsn) == 500


def test_a_call_is_folded_in_seq_order_whatever_the_order_of_arrival(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    boss = floor_server.supervisor("nora", "north")
    # the threat alert and the help request travel first (their own request), ahead of smaller seqs
    assert ws.post_events([event(4, "threat_alert", at=recent(9))]).status == 200
    early = boss.get("/api/v1/floor/state").json()
    [call] = early["calls"]
    assert call["agent"] is None and call["started_at"] == recent(9)
    [alert] = early["alerts"]
    assert (alert["seq"], alert["title"], alert["words"]) == (4, "Threat of violence", ["hurt you"])
    later = [
        event(1, "call_started", at=recent(0)),
        event(2, "level", level="tense", previous="calm", at=recent(5)),
        event(3, "level", level="abusive", previous="tense", at=recent(8)),
        event(5, "level", level="transfer", previous="abusive", at=recent(10)),
    ]
    # and the ordinary sender's batch may itself be re-sent out of order
    assert ws.post_events(list(reversed(later))).json() == {"stored": 4, "duplicates": 0}
    [call] = boss.get("/api/v1/floor/state").json()["calls"]
    assert (call["agent"], call["level"], call["level_reached"]) == ("Alice Martin", "transfer", "transfer")
    assert call["started_at"] == recent(0) and call["threat_count"] == 1
    detail = boss.get(f"/api/v1/calls/{call['id']}").json()
    assert [e["seq"] for e in detail["events"]] == [1, 2, 3, 4, 5]
    assert [e["kind"] for e in detail["events"]] == [
        "call_started",
        "level",
        "level",
        "threat_alert",
        "level",
    ]
    # the alert now shows the call's agent and queue
    [alert] = boss.get("/api/v1/floor/state").json()["alerts"]
    assert (alert["agent"], alert["queue"]) == ("Alice Martin", "billing")
    ended = ws.post_events([event(6, "call_ended", level_reached="transfer")])
    assert ended.status == 200
    assert boss.get("/api/v1/floor/state").json()["calls"] == []


def test_two_batches_of_one_call_committing_at_once_both_count(floor_dsn: str) -> None:
    """The priority sender and the ordinary one store events of one call at the same time: the second
    fold waits for the first transaction and reads its events (without the call's lock it would
    overwrite the call with a fold that misses them)."""
    with psycopg.connect(floor_dsn) as conn:
        enrol_workstation(conn, "ws-01", "north")
        row = conn.execute("SELECT w.id, w.team_id FROM workstations w").fetchone()
    assert row is not None
    ws = store.Workstation(row[0], "ws-01", row[1], "north")
    outlet = store.Outlet(None, "https://floor/wallboard")

    async def race() -> None:
        first = await psycopg.AsyncConnection.connect(floor_dsn, autocommit=True)
        second = await psycopg.AsyncConnection.connect(floor_dsn, autocommit=True)
        try:
            held = first.transaction()
            await held.__aenter__()
            await store.store_batch(first, ws, [parse_event(event(1, "abuse"), "e")], outlet)
            later = asyncio.create_task(
                store.store_batch(second, ws, [parse_event(event(2, "threat_alert"), "e")], outlet)
            )
            await asyncio.sleep(0.3)  # the second batch has inserted its event and waits for the call
            assert not later.done()
            await held.__aexit__(None, None, None)
            await later
        finally:
            await first.close()
            await second.close()

    asyncio.run(race())
    with psycopg.connect(floor_dsn) as conn:
        assert conn.execute("SELECT abuse_count, threat_count, last_seq FROM calls").fetchone() == (1, 1, 2)


def test_the_floor_speaks_only_https_with_its_certificate(floor_server: Any) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", floor_server.port, timeout=5)
    with pytest.raises((http.client.HTTPException, OSError)):
        plain.request("GET", "/wallboard/")
        plain.getresponse()
    untrusting = http.client.HTTPSConnection("127.0.0.1", floor_server.port, timeout=5,
                                             context=ssl.create_default_context())  # fmt: skip
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.request("GET", "/wallboard/")
