"""Supervisors ⇄ the floor ⇄ workstations: login, the live state and its stream, acknowledgements reaching
the workstation's long poll, team scoping, CSRF, incidents, figures. A real floor over HTTPS, real
PostgreSQL."""

from __future__ import annotations

import csv
import http.client
import io
import json
import threading
import time
from typing import Any

import psycopg
import pytest
from floor_events import RECENT_DAY, event, recent

from callguard.floor.app import channels_sink


def post_threat(ws: Any, seq: int = 1, call_id: str = "call-1", **data: Any) -> dict[str, Any]:
    answer = ws.post_events([event(seq, "threat_alert", call_id=call_id, **data)])
    assert answer.status == 200, answer.body
    return answer.json()


def open_alert(boss: Any, kind: str = "alerts") -> dict[str, Any]:
    [alert] = boss.get("/api/v1/floor/state").json()[kind]
    return alert


def test_login_sets_a_strict_session_cookie_and_gives_a_csrf_token(floor_server: Any) -> None:
    password = floor_server.add_user("nora", "supervisor", "north", "Nora Petit")
    wrong = floor_server.request("POST", "/login", json_body={"login": "nora", "password": "not-it-at-all"})
    assert (wrong.status, wrong.json()) == (401, {"error": "wrong login or password"})
    unknown = floor_server.request("POST", "/login", json_body={"login": "nobody", "password": password})
    assert unknown.status == 401 and unknown.header("set-cookie") is None
    missing = floor_server.request("POST", "/login", json_body={"login": "nora"})
    assert (missing.status, missing.json()["field"]) == (422, "password")
    answer = floor_server.request("POST", "/login", json_body={"login": "nora", "password": password})
    assert answer.status == 200
    cookie = answer.header("set-cookie")
    assert cookie is not None
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    body = answer.json()
    assert len(body["csrf_token"]) >= 20 and body["user"]["team"] == "north"
    session = {"Cookie": cookie.split(";", 1)[0]}
    assert (
        floor_server.request("GET", "/api/v1/me", headers=session).json()["csrf_token"] == body["csrf_token"]
    )
    # the wallboard's form posts urlencoded and is sent on to the page
    form = floor_server.request(
        "POST", "/login", body=f"login=nora&password={password}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert (form.status, form.header("location")) == (303, "/wallboard/")
    assert form.header("set-cookie") is not None


def test_logout_needs_csrf_and_ends_the_session(floor_server: Any) -> None:
    boss = floor_server.supervisor("nora", "north")
    assert boss.post("/logout", csrf=False).status == 403
    assert boss.get("/api/v1/floor/state").status == 200
    assert boss.post("/logout").status == 200
    after = boss.get("/api/v1/floor/state")
    assert after.status == 401 and "login required" in after.json()["error"]


def test_every_route_but_login_and_the_page_needs_a_credential(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    post_threat(ws)
    routes = [
        ("GET", "/api/v1/floor/state"), ("GET", "/api/v1/floor/stream"), ("GET", "/api/v1/me"),
        ("GET", "/api/v1/calls/1"), ("POST", "/api/v1/alerts/1/ack"), ("POST", "/api/v1/help/1/on-my-way"),
        ("GET", "/api/v1/incidents"), ("GET", "/api/v1/incidents?format=csv"), ("GET", "/api/v1/figures"),
        ("POST", "/logout"), ("POST", "/api/v1/events"), ("GET", "/api/v1/notices?wait=0"),
    ]  # fmt: skip
    for method, path in routes:
        answer = floor_server.request(method, path, body=b"" if method == "POST" else None)
        assert answer.status == 401, (method, path, answer.status)
        assert answer.header("cache-control") == "no-store"
    # a workstation's credential is not a supervisor's session, nor the reverse
    bearer = {"Authorization": f"Bearer {ws.credential}"}
    assert floor_server.request("GET", "/api/v1/floor/state", headers=bearer).status == 401
    page = floor_server.request("GET", "/wallboard/")
    assert page.status == 200 and b"<html" in page.body.lower()
    assert "default-src 'self'" in (page.header("content-security-policy") or "")
    assert floor_server.request("GET", "/").header("location") == "/wallboard/"


def test_an_acknowledgement_reaches_the_workstations_long_poll_within_a_second(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    boss = floor_server.supervisor("nora", "north", name="Nora Petit")
    post_threat(ws, seq=7)
    alert = open_alert(boss)
    assert alert["acknowledged_by"] is None
    # nothing yet: a poll with wait=0 answers at once, empty
    assert ws.notices(after=0, wait=0).json() == {"notices": []}
    polled: dict[str, Any] = {}

    def poll() -> None:
        polled["answer"] = ws.notices(after=0, wait=10)
        polled["at"] = time.monotonic()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)  # the poll is waiting on the floor
    assert poller.is_alive()
    acked_at = time.monotonic()
    ack = boss.post(f"/api/v1/alerts/{alert['id']}/ack")
    assert ack.status == 200, ack.body
    poller.join(5)
    assert not poller.is_alive()
    assert polled["at"] - acked_at < 1.0
    [notice] = polled["answer"].json()["notices"]
    assert (notice["kind"], notice["seq"], notice["call_id"], notice["by"]) == (
        "acknowledged", 7, "call-1", "Nora Petit",
    )  # fmt: skip
    # the alert shows who and when; asking again after the notice's id finds nothing new
    seen = open_alert(boss)
    assert seen["acknowledged_by"] == "Nora Petit" and seen["acknowledged_at"] == notice["at"]
    assert ws.notices(after=notice["id"], wait=0).json() == {"notices": []}
    again = boss.post(f"/api/v1/alerts/{alert['id']}/ack")
    assert again.status == 409 and "already answered by Nora Petit" in again.json()["error"]


def test_on_my_way_answers_a_help_request(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    boss = floor_server.supervisor("nora", "north", name="Nora Petit")
    assert ws.post_events([event(3, "help", message="he knows my address")]).status == 200
    help_request = open_alert(boss, "help")
    assert help_request["message"] == "he knows my address"
    # a help request is not a threat alert: the ack route does not answer it
    assert boss.post(f"/api/v1/alerts/{help_request['id']}/ack").status == 404
    assert boss.post(f"/api/v1/help/{help_request['id']}/on-my-way").status == 200
    [notice] = ws.notices(wait=0).json()["notices"]
    assert (notice["kind"], notice["seq"], notice["by"]) == ("on_my_way", 3, "Nora Petit")


def test_a_supervisor_sees_and_answers_only_their_team(floor_server: Any) -> None:
    north_ws = floor_server.enrol("ws-n", "north")
    south_ws = floor_server.enrol("ws-s", "south")
    post_threat(north_ws, call_id="north-call", at=recent(4))
    post_threat(south_ws, call_id="south-call", at=recent(4))
    assert south_ws.post_events([event(2, "help", call_id="south-call", at=recent(5))]).status == 200
    north = floor_server.supervisor("nora", "north")
    admin = floor_server.supervisor("root", None, role="admin")
    north_state = north.get("/api/v1/floor/state").json()
    assert [a["call_id"] for a in north_state["alerts"]] == ["north-call"]
    assert north_state["help"] == [] and [c["call_id"] for c in north_state["calls"]] == ["north-call"]
    admin_state = admin.get("/api/v1/floor/state").json()
    assert sorted(a["call_id"] for a in admin_state["alerts"]) == ["north-call", "south-call"]
    south_alert = next(a for a in admin_state["alerts"] if a["team"] == "south")
    south_help = admin_state["help"][0]
    south_call = next(c for c in admin_state["calls"] if c["team"] == "south")
    assert north.post(f"/api/v1/alerts/{south_alert['id']}/ack").status == 404
    assert north.post(f"/api/v1/help/{south_help['id']}/on-my-way").status == 404
    assert north.get(f"/api/v1/calls/{south_call['id']}").status == 404
    assert south_ws.notices(wait=0).json() == {"notices": []}
    assert north.get("/api/v1/incidents?team=south").status == 403
    assert {row["team"] for row in north.get("/api/v1/incidents").json()["incidents"]} == {"north"}
    assert [t["team"] for t in north.get(f"/api/v1/figures?day={RECENT_DAY}").json()["teams"]] == ["north"]
    assert admin.post(f"/api/v1/alerts/{south_alert['id']}/ack").status == 200
    assert [n["kind"] for n in south_ws.notices(wait=0).json()["notices"]] == ["acknowledged"]


def test_state_changing_requests_need_the_csrf_token(floor_server: Any) -> None:
    ws = floor_server.enrol("ws-01", "north")
    boss = floor_server.supervisor("nora", "north")
    post_threat(ws)
    alert = open_alert(boss)
    refused = boss.post(f"/api/v1/alerts/{alert['id']}/ack", csrf=False)
    assert refused.status == 403 and "X-CSRF-Token" in refused.json()["error"]
    forged = floor_server.request(
        "POST", f"/api/v1/alerts/{alert['id']}/ack", body=b"",
        headers={"Cookie": boss.cookie, "X-CSRF-Token": "guessed-token-value-xx"},
    )  # fmt: skip
    assert forged.status == 403
    # another supervisor's token is not this session's
    other = floor_server.supervisor("olga", "north")
    crossed = floor_server.request(
        "POST", f"/api/v1/alerts/{alert['id']}/ack", body=b"",
        headers={"Cookie": boss.cookie, "X-CSRF-Token": other.csrf_token},
    )  # fmt: skip
    assert crossed.status == 403
    assert open_alert(boss)["acknowledged_at"] is None
    assert boss.post(f"/api/v1/alerts/{alert['id']}/ack").status == 200


def test_incidents_filter_by_team_agent_day_category_and_export_csv(floor_server: Any) -> None:
    north = floor_server.enrol("ws-n", "north")
    south = floor_server.enrol("ws-s", "south")
    day1, day2 = "2026-12-01T10:00:00.000Z", "2026-12-02T10:00:00.000Z"
    north.post_events([
        event(1, "call_started", call_id="n1", at=day1, agent="Alice"),
        event(2, "abuse", call_id="n1", at=day1, category="insult", words=["=cmd|' /C calc'!A0"]),
        event(3, "threat_alert", call_id="n1", at=day1),
        event(4, "call_started", call_id="n2", at=day2, agent="Bob"),
        event(5, "abuse", call_id="n2", at=day2, category="profanity", words=["damn"]),
        event(6, "prompt", call_id="n2", at=day2),
    ])  # fmt: skip
    south.post_events([
        event(1, "call_started", call_id="s1", at=day1, agent="Chloé"),
        event(2, "help", call_id="s1", at=day1, message="please come"),
    ])  # fmt: skip
    admin = floor_server.supervisor("root", None, role="admin")

    def incidents(query: str) -> list[dict[str, Any]]:
        answer = admin.get(f"/api/v1/incidents?{query}")
        assert answer.status == 200, answer.body
        return answer.json()["incidents"]

    everything = incidents("")
    assert len(everything) == 4  # abuse, threat_alert, help; not call_started nor prompt
    assert [row["at"] for row in everything] == sorted((row["at"] for row in everything), reverse=True)
    assert {(r["team"], r["kind"]) for r in incidents("team=south")} == {("south", "help")}
    assert {r["call_id"] for r in incidents("agent=Bob")} == {"n2"}
    assert {r["call_id"] for r in incidents("day=2026-12-01")} == {"n1", "s1"}
    assert [r["kind"] for r in incidents("category=threat")] == ["threat_alert"]
    assert [r["words"] for r in incidents("category=profanity")] == [["damn"]]
    assert [r["category"] for r in incidents("category=help&team=south&day=2026-12-01")] == ["help"]
    assert incidents("day=2026-12-03") == []
    for bad, field in (("day=12/01/2026", "day"), ("category=rude", "category"), ("format=xml", "format")):
        refused = admin.get(f"/api/v1/incidents?{bad}")
        assert (refused.status, refused.json()["field"]) == (422, field)
    exported = admin.get("/api/v1/incidents?day=2026-12-01&format=csv")
    assert exported.status == 200
    assert (
        exported.header(
            "content-type",
        )
        == "text/csv; charset=utf-8"
    )
    assert 'filename="incidents-2026-12-01.csv"' in (exported.header("content-disposition") or "")
    rows = list(csv.DictReader(io.StringIO(exported.body.decode())))
    assert len(rows) == 3
    insult = next(row for row in rows if row["category"] == "insult")
    assert (insult["team"], insult["agent"], insult["workstation"]) == ("north", "Alice", "ws-n")
    # a caller's words are not run as a spreadsheet formula
    assert insult["words"] == "'=cmd|' /C calc'!A0"
    assert next(row for row in rows if row["kind"] == "help")["detail"] == "please come"


def test_figures_per_team_for_a_day_of_the_sites_time_zone(start_floor: Any) -> None:
    floor = start_floor(timezone="Europe/Paris")
    north = floor.enrol("ws-n", "north")
    floor.enrol("ws-idle", "east")
    # 23:30 UTC on 1 December is 00:30 on 2 December in Paris
    late, early = "2026-12-01T23:30:00.000Z", "2026-12-01T08:00:00.000Z"
    north.post_events([
        event(1, "call_started", call_id="a", at=late),
        event(2, "level", call_id="a", at=late, level="abusive", previous="tense"),
        event(3, "level", call_id="a", at=late, level="transfer", previous="abusive"),
        event(4, "threat_alert", call_id="a", at=late),
        event(5, "action", call_id="a", at=late, action="transferred"),
        event(6, "call_ended", call_id="a", at=late, level_reached="transfer"),
        event(7, "call_started", call_id="b", at=late),
        event(8, "call_ended", call_id="b", at=late, level_reached="release"),
        event(9, "action", call_id="b", at=late, action="released"),
        event(10, "break", call_id="b", at=late, minutes=10),
        event(11, "call_started", call_id="c", at=late),
        event(12, "call_ended", call_id="c", at=late, level_reached="calm"),
        event(13, "call_started", call_id="d", at=early),
        event(14, "level", call_id="d", at=early, level="abusive", previous="tense"),
        event(15, "help", call_id="d", at=early),
    ])  # fmt: skip
    admin = floor.supervisor("root", None, role="admin")
    answer = admin.get("/api/v1/figures?day=2026-12-02").json()
    assert (answer["day"], answer["timezone"]) == ("2026-12-02", "Europe/Paris")
    teams = {row["team"]: row for row in answer["teams"]}
    assert teams["north"] == {
        "team": "north", "calls": 3, "abusive_calls": 2, "threats": 1, "transfers": 1, "releases": 1,
        "help_requests": 0, "breaks": 1, "break_minutes": 10.0,
    }  # fmt: skip
    assert teams["east"]["calls"] == 0 and teams["east"]["abusive_calls"] == 0
    first = {row["team"]: row for row in admin.get("/api/v1/figures?day=2026-12-01").json()["teams"]}
    assert (first["north"]["calls"], first["north"]["abusive_calls"], first["north"]["help_requests"]) == (
        1,
        1,
        1,
    )
    assert admin.get("/api/v1/figures?day=tomorrow").json()["field"] == "day"


def read_sse(response: http.client.HTTPResponse, wanted: str, timeout: float) -> tuple[str, Any]:
    """The next event named `wanted` on an open stream (others skipped)."""
    deadline = time.monotonic() + timeout
    name, data = "", ""
    while time.monotonic() < deadline:
        line = response.readline().decode()
        if not line:
            raise AssertionError("the stream ended")
        line = line.rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and name:
            if name == wanted:
                return name, json.loads(data)
            name, data = "", ""
    raise AssertionError(f"no {wanted!r} event within {timeout} s")


def test_the_stream_brings_the_state_then_each_change_of_the_team(floor_server: Any) -> None:
    north_ws = floor_server.enrol("ws-n", "north")
    south_ws = floor_server.enrol("ws-s", "south")
    boss = floor_server.supervisor("nora", "north", name="Nora Petit")
    conn = floor_server.connection(timeout=5)
    try:
        conn.request("GET", "/api/v1/floor/stream", headers={"Cookie": boss.cookie})
        stream = conn.getresponse()
        assert stream.status == 200 and stream.getheader("content-type", "").startswith("text/event-stream")
        _, state = read_sse(stream, "state", 5)
        assert state["alerts"] == [] and state["user"]["login"] == "nora"
        post_threat(south_ws, call_id="south-call")  # another team's: not on this stream
        sent_at = time.monotonic()
        post_threat(north_ws, seq=2, call_id="north-call", title="He said he will wait outside")
        _, alert = read_sse(stream, "alert", 5)
        assert time.monotonic() - sent_at < 1.0
        assert (alert["call_id"], alert["title"], alert["team"]) == (
            "north-call", "He said he will wait outside", "north",
        )  # fmt: skip
        _, call = read_sse(stream, "call", 5)
        assert call["call_id"] == "north-call"
        assert north_ws.post_events([event(3, "help", call_id="north-call")]).status == 200
        _, help_request = read_sse(stream, "help", 5)
        assert help_request["seq"] == 3
        assert boss.post(f"/api/v1/alerts/{alert['id']}/ack").status == 200
        _, ack = read_sse(stream, "ack", 5)
        assert (ack["id"], ack["acknowledged_by"]) == (alert["id"], "Nora Petit")
    finally:
        conn.close()


def test_the_sink_gets_each_alert_in_the_transaction_that_stores_it(start_floor: Any) -> None:
    from tests.floor.conftest import RecordingSink

    sink = RecordingSink()
    floor = start_floor(sink.factory())
    ws = floor.enrol("ws-01", "north")
    boss = floor.supervisor("nora", "north", name="Nora Petit")
    batch = [
        event(1, "call_started"), event(2, "level", level="tense", previous="calm"),
        event(3, "abuse"), event(4, "level", level="abusive", previous="tense"),
        event(5, "threat_alert"), event(6, "help"),
    ]  # fmt: skip
    assert ws.post_events(batch).status == 200
    assert [(a.id, a.kind, a.state) for a in sink.alerts] == [
        ("ws-01:4", "abusive", "firing"), ("ws-01:5", "threat", "firing"), ("ws-01:6", "help", "firing"),
    ]  # fmt: skip
    assert sink.event_stored == [True, True, True]
    assert sink.alerts[1].agent == "Alice Martin" and sink.alerts[1].team == "north"
    assert sink.alerts[1].url == floor.config.wallboard_url
    assert ws.post_events(batch).json()["stored"] == 0
    assert len(sink.alerts) == 3  # a resend is not an alert again
    assert boss.post(f"/api/v1/alerts/{open_alert(boss)['id']}/ack").status == 200
    resolved = sink.alerts[-1]
    assert (resolved.id, resolved.state, resolved.resolved_by) == ("ws-01:5", "resolved", "Nora Petit")


class FailingSink:
    async def enqueue(self, conn: Any, alert: Any) -> list[str]:
        raise RuntimeError("the outbox is broken")


def test_a_batch_whose_alert_cannot_be_queued_is_not_stored(start_floor: Any) -> None:
    import contextlib

    @contextlib.asynccontextmanager
    async def failing(pool: Any, config: Any) -> Any:
        yield FailingSink()

    floor = start_floor(failing)
    ws = floor.enrol("ws-01", "north")
    assert ws.post_events([event(1, "call_started"), event(2, "threat_alert")]).status == 500
    with psycopg.connect(floor.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (0,)


@pytest.mark.parametrize("send_resolved", [True])
def test_the_real_dispatcher_posts_a_threat_alert_to_a_webhook(start_floor: Any, send_resolved: bool) -> None:
    received: list[dict[str, Any]] = []
    import http.server

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{hook.server_address[1]}/hooks/floor"
        floor = start_floor(
            channels_sink,
            channels={"chat": {"type": "webhook", "url": url, "send_resolved": send_resolved}},
            rules={"threats": {"kinds": ["threat"], "channels": ["chat"]}},
        )
        ws = floor.enrol("ws-01", "north")
        boss = floor.supervisor("nora", "north", name="Nora Petit")
        post_threat(ws, seq=5)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(received) == 1 and "ws-01" in json.dumps(received[0])
        assert boss.post(f"/api/v1/alerts/{open_alert(boss)['id']}/ack").status == 200
        deadline = time.monotonic() + 5
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(received) == 2 and "Nora Petit" in json.dumps(received[1])
    finally:
        hook.shutdown()


def test_a_session_ends_after_session_hours(start_floor: Any) -> None:
    floor = start_floor(session_hours=1.5 / 3600)
    boss = floor.supervisor("nora", "north")
    assert boss.get("/api/v1/floor/state").status == 200
    time.sleep(1.7)
    ended = boss.get("/api/v1/floor/state")
    assert ended.status == 401 and "expired" in ended.json()["error"]


def test_password_guessing_is_throttled_per_login(floor_server: Any) -> None:
    password = floor_server.add_user("nora", "supervisor", "north")
    floor_server.add_user("olga", "supervisor", "north")
    for _attempt in range(5):
        guess = floor_server.request("POST", "/login", json_body={"login": "olga", "password": "guess-guess"})
        assert guess.status == 401
    # even the right password waits now; another login does not
    blocked = floor_server.request("POST", "/login", json_body={"login": "olga", "password": "guess-guess"})
    assert blocked.status == 429 and "too many failed logins" in blocked.json()["error"]
    assert (
        floor_server.request("POST", "/login", json_body={"login": "nora", "password": password}).status
        == 200
    )
