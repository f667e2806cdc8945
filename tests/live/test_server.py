"""The daemon's HTTP API over real HTTP on 127.0.0.1: routes vs OpenAPI, authentication, the call
lifecycle, and server push latency. The daemon here is the real one (pipeline, SQLite store, worker);
only its sound devices are left closed and blocks are queued as the capture callback queues them."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import pytest

from callguard.live.daemon import Daemon
from callguard.live.server import ROUTES, openapi_schema, panel_session_value
from callguard.sinks.store import IncidentStore
from callguard.sources.devices import CapturedBlock
from tests.live.harness import (
    TOKEN,
    Client,
    SseReader,
    queue_audio,
    speech_with_shouts,
    start_daemon,
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    running = start_daemon(tmp_path)
    yield running
    running.shutdown()


# --- tests ---------------------------------------------------------------------------------------


def test_openapi_documents_exactly_the_routes() -> None:
    schema = openapi_schema()
    documented = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    served = {(r.method, r.path) for r in ROUTES}
    assert documented == served
    for route in ROUTES:
        operation = schema["paths"][route.path][route.method.lower()]
        # public routes say so; every other route falls under the global bearer/cookie security
        assert (operation.get("security") == []) == (not route.auth), route
    assert schema["openapi"].startswith("3.")


def test_every_api_route_needs_the_token(daemon: Daemon) -> None:
    port = daemon.server.port
    anonymous, wrong = Client(port, token=None), Client(port, token="not-the-token")
    for route in ROUTES:
        path = route.path.replace("{call_id}", "C-1").replace("{name}", "panel.js")
        status, _, _ = anonymous.request(route.method, path, body={} if route.method == "POST" else None)
        if route.auth:
            assert status == 401, route
            assert wrong.request(route.method, path, body={} if route.method == "POST" else None)[0] == 401
        elif route.path == "/panel/login":  # public, and without a valid one-time code it opens nothing
            assert status == 401, route
        else:
            assert status in (200, 302), route
    status, body, _ = Client(port).request("GET", "/health")
    assert status == 503  # no device open in this test: capture fails, and health says so
    assert body["store"]["ok"] and body["capture"]["ok"] is False
    assert body["model"]["mode"] == "loudness-only"
    assert daemon.server.httpd.server_address[0] == "127.0.0.1"


def test_panel_cookie_from_the_token(daemon: Daemon) -> None:
    port = daemon.server.port
    status, _, response = Client(port).request("POST", "/api/v1/session")
    assert status == 200
    cookie = response.getheader("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";")[0]
    assert value == f"callguard_panel={panel_session_value(TOKEN)}"
    by_cookie = Client(port, token=None)
    assert by_cookie.request("GET", "/api/v1/calls/current", headers={"Cookie": value})[0] == 200
    foreign = {"Cookie": value, "Origin": "http://evil.example"}
    assert by_cookie.request("POST", "/api/v1/calls", body={"call_id": "x"}, headers=foreign)[0] == 403
    # a form post (no JSON) with the cookie is refused too
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request(
        "POST", "/api/v1/calls", body=b"call_id=x",
        headers={"Cookie": value, "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert conn.getresponse().status == 415


def test_call_lifecycle_over_http(daemon: Daemon) -> None:
    api = Client(daemon.server.port)
    facts = {
        "call_id": "C-42", "customer_name": "Ms Martin", "company": "Acme", "agent_name": "Sam",
        "language": "en", "transfer_available": False, "transferred_in": False,
    }  # fmt: skip
    status, state, _ = api.request("POST", "/api/v1/calls", body=facts)
    assert status == 201, state
    assert state["active"] and state["facts"]["customer_name"] == "Ms Martin"
    assert api.request("POST", "/api/v1/calls", body=facts)[0] == 409
    status, error, _ = api.request("POST", "/api/v1/calls/C-42/actions", body={"action": "dance"})
    assert status == 422 and "limits_stated" in error["error"]
    assert api.request("POST", "/api/v1/calls/C-9/actions", body={"action": "limits_stated"})[0] == 404
    status, state, _ = api.request("POST", "/api/v1/calls/C-42/actions", body={"action": "limits_stated"})
    assert status == 200 and state["actions"] == ["limits_stated"]
    assert api.request("GET", "/api/v1/calls/current")[1]["call_id"] == "C-42"
    status, ended, _ = api.request("POST", "/api/v1/calls/C-42/end")
    assert status == 200 and ended["active"] is False
    assert api.request("GET", "/api/v1/calls/current")[1]["active"] is False
    store = IncidentStore(daemon.config.path(daemon.config.store.path))
    [record] = store.calls()
    assert (record.call_id, record.company, record.actions, record.end_reason) == ("C-42", "Acme", 1, "api")


@pytest.mark.parametrize("call_id", ["call 42", "50%", "appel-é-ü", "a" * 128])
def test_any_printable_call_id_can_be_ended_and_acted_on(daemon: Daemon, call_id: str) -> None:
    """Issue 17.1: the router compared the percent-encoded segment with the id; every later call got 409."""
    api = Client(daemon.server.port)
    segment = quote(call_id, safe="")
    assert api.request("POST", "/api/v1/calls", body={"call_id": call_id})[0] == 201
    status, state, _ = api.request(
        "POST", f"/api/v1/calls/{segment}/actions", body={"action": "limits_stated"}
    )
    assert status == 200 and state["actions"] == ["limits_stated"], state
    status, ended, _ = api.request("POST", f"/api/v1/calls/{segment}/end")
    assert status == 200 and ended["active"] is False
    assert api.request("POST", "/api/v1/calls", body={"call_id": "next"})[0] == 201  # not stuck in 409
    assert api.request("POST", "/api/v1/calls/next/end")[0] == 200


@pytest.mark.parametrize("call_id", ["a/b", "line\r\nbreak", "", "a" * 129])
def test_a_call_id_that_no_url_can_carry_is_refused_at_start(daemon: Daemon, call_id: str) -> None:
    status, error, _ = Client(daemon.server.port).request("POST", "/api/v1/calls", body={"call_id": call_id})
    assert status == 422 and "call_id" in error["error"]


def test_the_bearer_scheme_is_case_insensitive(daemon: Daemon) -> None:
    """Issue 17.16: RFC 7235 schemes are case-insensitive."""
    port = daemon.server.port
    for scheme in ("bearer", "BEARER", "Bearer"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        assert Client(port, token=None).request("GET", "/api/v1/calls/current", headers=headers)[0] == 200
    assert (
        Client(port, token=None).request("GET", "/api/v1/calls/current", headers={"Authorization": TOKEN})[0]
        == 401
    )


def test_a_burst_of_new_connections_is_served(daemon: Daemon) -> None:
    """Issue 17.2: the stdlib's listen backlog of 5 reset connections of a burst of 50."""
    assert daemon.server.httpd.request_queue_size >= 128
    port = daemon.server.port
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(50)]
    try:
        for s in sockets:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = [s.recv(64) for s in sockets]
    finally:
        for s in sockets:
            s.close()
    assert all(a.startswith(b"HTTP/1.") for a in answers)


def test_bad_call_facts_name_the_key(daemon: Daemon) -> None:
    api = Client(daemon.server.port)
    status, error, _ = api.request(
        "POST", "/api/v1/calls", body={"call_id": "C-1", "transfer_available": "yes"}
    )
    assert status == 422 and "transfer_available" in error["error"]
    status, error, _ = api.request("POST", "/api/v1/calls", body={"customer_name": "x"})
    assert status == 422 and "call_id" in error["error"]
    conn = http.client.HTTPConnection("127.0.0.1", daemon.server.port, timeout=5)
    conn.request(
        "POST", "/api/v1/calls", body=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert conn.getresponse().status == 400


def test_prompts_are_pushed_within_200_ms(daemon: Daemon) -> None:
    api = Client(daemon.server.port)
    events = SseReader(daemon.server.port)
    try:
        events.wait_for(lambda m: m.get("kind") == "state")  # a new subscriber first gets the state
        api.request(
            "POST", "/api/v1/calls", body={"call_id": "C-7", "customer_name": "Ms Martin", "language": "en"}
        )
        events.wait_for(lambda m: m.get("kind") == "state" and m.get("active"))
        # an agent action: from the HTTP request to the panel's stream
        sent = time.time()
        api.request("POST", "/api/v1/calls/C-7/actions", body={"action": "acknowledged"})
        arrived, _ = events.wait_for(lambda m: m.get("event", {}).get("type") == "action")
        assert arrived - sent < 0.2
        # shouting in real recorded speech: the pipeline raises the level and a prompt is pushed
        queue_audio(daemon, speech_with_shouts())
        arrived, message = events.wait_for(lambda m: m.get("event", {}).get("type") == "prompt", timeout=30)
        assert message["event"]["level"] != "calm" and message["event"]["title"]
        assert arrived - message["wall"] < 0.2  # published by the worker -> read by the client
        shouts = [m for _, m in events.messages if m.get("event", {}).get("type") == "shouting"]
        assert shouts, "the prompt should come from shouting"
    finally:
        events.close()


def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_without_a_cti_a_call_starts_on_speech_and_ends_on_silence(tmp_path: Path) -> None:
    daemon = start_daemon(tmp_path, auto_calls=True, auto_call_speech_s=1.0, auto_call_end_silence_s=3.0)
    try:
        rate = daemon.config.audio.rate
        silence = np.zeros(4 * rate, np.int16)
        queue_audio(daemon, silence)  # silence (and a quiet line) starts nothing
        wait_until(lambda: daemon.blocks.empty())
        assert daemon.call is None
        speech = speech_with_shouts(rate, shouts=0)[: 5 * rate]
        queue_audio(daemon, speech)
        wait_until(lambda: daemon.call is not None)
        call_id = daemon.call.call_id  # type: ignore[union-attr]
        assert call_id.startswith("auto-") and daemon.call.source == "auto"  # type: ignore[union-attr]
        queue_audio(daemon, silence)
        wait_until(lambda: daemon.call is None)
    finally:
        daemon.shutdown()
    store = IncidentStore(daemon.config.path(daemon.config.store.path))
    [record] = store.calls()
    assert (record.call_id, record.source, record.end_reason) == (call_id, "auto", "silence")
    # the call holds the speech that started it (pre-roll) and ends 3 s into the silence
    assert 5.0 <= (record.duration or 0) <= 9.0


def test_a_bad_block_never_stops_the_daemon(daemon: Daemon) -> None:
    api = Client(daemon.server.port)
    assert api.request("POST", "/api/v1/calls", body={"call_id": "B-1"})[0] == 201
    rate = daemon.config.audio.rate
    daemon.blocks.put(CapturedBlock(7, 1, rate, np.zeros((800, 1), np.int16)))  # from no known device
    daemon.blocks.put(CapturedBlock(0, 1, rate, np.zeros((0, 0), np.int16)))  # empty, wrong shape
    queue_audio(daemon, speech_with_shouts(rate, shouts=0)[: 2 * rate])
    wait_until(lambda: daemon.blocks.empty())
    health = api.request("GET", "/health")[1]
    assert health["worker"]["ok"] and health["worker"]["bad_blocks"] >= 1
    state = api.request("GET", "/api/v1/calls/current")[1]
    assert state["active"] and state["call_id"] == "B-1"
    assert api.request("POST", "/api/v1/calls/B-1/end")[0] == 200


def test_malformed_requests_are_400s_not_tracebacks(daemon: Daemon, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 17.6 and 17.13: a negative or non-numeric length, deep JSON, a non-ASCII token."""
    port = daemon.server.port

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    auth = f"Authorization: Bearer {TOKEN}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for length in ("-1", "abc"):
        answer = raw(f"POST /api/v1/calls HTTP/1.1\r\n{auth}Content-Length: {length}\r\n\r\n{{}}".encode())
        assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length must be a number" in answer, answer
    deep = b"[" * 20000 + b"]" * 20000
    answer = raw(f"POST /api/v1/calls HTTP/1.1\r\n{auth}Content-Length: {len(deep)}\r\n\r\n".encode() + deep)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:80]
    name = "x" * 10_000
    status, error, _ = Client(port).request(
        "POST", "/api/v1/calls", body={"call_id": "big", "customer_name": name}
    )
    assert status == 422 and "customer_name: at most 256 characters" in error["error"]
    answer = raw(
        "GET /api/v1/calls/current HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer é\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:80]
    assert not [r for r in caplog.records if r.exc_info], "nothing unauthenticated writes a traceback"


def test_a_foreign_host_header_is_refused(daemon: Daemon) -> None:
    """Issue 17.14: a DNS-rebinding page reaches 127.0.0.1 under its own name."""
    port = daemon.server.port
    assert Client(port).request("GET", "/health", headers={"Host": f"evil.example:{port}"})[0] == 421
    assert Client(port).request("GET", "/api/v1/calls/current", headers={"Host": "evil.example"})[0] == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert Client(port).request("GET", "/api/v1/calls/current", headers={"Host": host})[0] == 200, host


def test_a_generated_token_survives_a_restart_and_stays_out_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17.10: without daemon.token, a token is made once, kept in a 600 file, never logged."""
    caplog.set_level("INFO")
    first = start_daemon(tmp_path, token="")
    token = first.runtime.token
    first.shutdown()
    again = start_daemon(tmp_path, token="")
    try:
        assert again.runtime.token == token
        assert Client(again.server.port, token=token).request("GET", "/api/v1/calls/current")[0] == 200
    finally:
        again.shutdown()
    logged = " ".join(r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    assert "daemon ready" in logged and token not in logged


def test_abuse_on_the_wire_carries_no_transcript(daemon: Daemon) -> None:
    """Issue 17.4: the SSE stream and /calls/current carried the whole utterance, card number included."""
    from callguard.core.events import Abuse, Match

    api = Client(daemon.server.port)
    events = SseReader(daemon.server.port)
    try:
        assert api.request("POST", "/api/v1/calls", body={"call_id": "W-1", "language": "en"})[0] == 201
        said = "my card is 4111 1111 1111 1111 and my email is ann@example.com you idiot"
        lexical = Match(category="insult", severity=2, words=("idiot",), term="idiot*", directed=True)
        semantic = Match(
            category="threat", severity=2, words=tuple(said.split()), term="semantic head 0.91",
            directed=False, source="semantic", score=0.91, like=("i know where you live",),
        )  # fmt: skip
        abuse = Abuse(
            t=1.0, speaker="customer", category="insult", severity=2, words=("idiot",),
            matches=(lexical, semantic), text=said,
        )  # fmt: skip
        assert daemon.call is not None
        daemon._handle(daemon.call, [abuse])
        _, message = events.wait_for(lambda m: m.get("event", {}).get("type") == "abuse")
        current = api.request("GET", "/api/v1/calls/current")[1]
    finally:
        events.close()
    for wire in (json.dumps(message), json.dumps(current)):
        assert "4111" not in wire and "ann@example.com" not in wire and "my card" not in wire
    sent = message["event"]
    assert sent["words"] == ["idiot"] and [m["words"] for m in sent["matches"]] == [["idiot"], []]
    assert sent["matches"][1]["like"] == ["i know where you live"]


def test_a_flood_of_idle_connections_does_not_lock_the_panel_out(daemon: Daemon) -> None:
    """Issue 17.3: 246 connections that sent nothing made /health time out for everyone."""
    from callguard.live.server import MAX_CONNECTIONS, REQUEST_TIMEOUT_S

    port = daemon.server.port
    flood = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_CONNECTIONS + 100)]
    try:
        time.sleep(0.5)  # the server has accepted them all by now
        for _ in range(5):
            started = time.monotonic()
            assert Client(port).request("GET", "/api/v1/calls/current")[0] == 200
            assert time.monotonic() - started < 2.0
        # a connection that never finishes its request is closed by the server, not held for ever
        slow = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S + 10)
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # headers never end
        started = time.monotonic()
        answer = slow.recv(100)  # the server's close (or a 408), not our own time-out
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        assert REQUEST_TIMEOUT_S - 1 <= time.monotonic() - started <= REQUEST_TIMEOUT_S + 5
        slow.close()
    finally:
        for s in flood:
            s.close()


def test_headers_sent_a_line_at_a_time_are_cut_off_and_never_lock_the_panel_out(daemon: Daemon) -> None:
    """Found by scripts/probe_daemon.py (issue 17.3): connections that send a header line every
    second or so, never the blank line, were never closed (each read came within the time-out)
    and, past the cap, kept the panel out."""
    import select

    from callguard.live.server import MAX_CONNECTIONS, REQUEST_TIMEOUT_S

    port = daemon.server.port
    slow = []
    for _ in range(MAX_CONNECTIONS + 20):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(s)
    try:
        started = time.monotonic()
        open_ = set(slow)
        while open_ and time.monotonic() - started < REQUEST_TIMEOUT_S + 4:
            answered = set(select.select(list(open_), [], [], 0)[0])  # closed, or a 408
            for s in open_ - answered:
                with contextlib.suppress(OSError):
                    s.sendall(b"X-Slow: 1\r\n")
            open_ -= answered
            assert Client(port).request("GET", "/api/v1/calls/current")[0] == 200, "the panel is served"
            time.sleep(1.0)
        assert not open_, f"{len(open_)} connections still held after {REQUEST_TIMEOUT_S + 4} s"
    finally:
        for s in slow:
            s.close()


def test_a_slow_disk_never_delays_the_prompts(daemon: Daemon) -> None:
    """Issue 18.3: store writes ran on the audio worker; now they queue behind it."""
    assert daemon.store is not None
    slow_record = daemon.store.record

    def record_on_a_stalled_disk(call: int | None, event: Any, message: Any = None) -> None:
        time.sleep(0.3)  # each write: a disk that takes 300 ms to sync
        slow_record(call, event, message)

    daemon.store.record = record_on_a_stalled_disk  # type: ignore[method-assign]
    api = Client(daemon.server.port)
    events = SseReader(daemon.server.port)
    try:
        assert api.request("POST", "/api/v1/calls", body={"call_id": "SLOW-1", "language": "en"})[0] == 201
        queue_audio(daemon, speech_with_shouts())
        arrived, message = events.wait_for(lambda m: m.get("event", {}).get("type") == "prompt", timeout=30)
        assert arrived - message["wall"] < 0.2
        assert daemon.health()["store"]["backlog"] > 0  # the writes are still waiting: the prompt did not
    finally:
        events.close()
    status, _, _ = api.request("POST", "/api/v1/calls/SLOW-1/end")
    assert status == 200
    store = IncidentStore(daemon.config.path(daemon.config.store.path))
    [record] = store.calls()
    assert record.end_reason == "api" and store.details(record.id)["prompts"], "nothing lost on the way"


def test_a_one_time_panel_link_opens_the_panel_once(daemon: Daemon) -> None:
    """Issue 17.15: the token stayed in the browser's history (/panel/#token=...). A login link
    asked for with the token opens the panel once; the address left in the history opens nothing."""
    api = Client(daemon.server.port)
    status, answer, _ = api.request("POST", "/api/v1/panel-links")
    assert status == 201 and TOKEN not in answer["url"], answer
    link = urlsplit(answer["url"])
    assert link.path == "/panel/login" and link.netloc == f"127.0.0.1:{daemon.server.port}"
    anonymous = Client(daemon.server.port, token=None)
    status, _, response = anonymous.request("GET", f"{link.path}?{link.query}")
    assert status == 303 and response.getheader("Location") == "/panel/"
    cookie = (response.getheader("Set-Cookie") or "").split(";")[0]
    assert cookie == f"callguard_panel={panel_session_value(TOKEN)}"
    assert anonymous.request("GET", "/api/v1/calls/current", headers={"Cookie": cookie})[0] == 200
    again, body, _ = anonymous.request("GET", f"{link.path}?{link.query}")
    assert again == 401 and b"expired or was used" in body, "a link from the history opens nothing"
    assert anonymous.request("GET", "/panel/login?code=guess")[0] == 401
    # the panel's own cookie cannot mint links for another browser
    minted = anonymous.request("POST", "/api/v1/panel-links", headers={"Cookie": cookie})
    assert minted[0] == 403


def test_callguard_panel_prints_a_working_link(daemon: Daemon) -> None:
    from callguard.live.daemon import panel_login_link

    link = urlsplit(panel_login_link(daemon.config))
    status, _, _ = Client(daemon.server.port, token=None).request("GET", f"{link.path}?{link.query}")
    assert status == 303


def test_a_full_disk_freed_recovers_health_and_stores_the_call_it_missed(daemon: Daemon) -> None:
    """Issue 17.18: after a full disk was freed, /health stayed failing until the next write, and
    the call started while the disk was full was never stored. The disk is full as SQLite sees it:
    the store's file may not grow (max_page_count), and writes fail with "database or disk is full"."""
    from tests.sinks.test_store import fill_the_disk, free_the_disk

    store = daemon.store
    assert store is not None
    api = Client(daemon.server.port)
    assert api.request("POST", "/api/v1/calls", body={"call_id": "BEFORE"})[0] == 201
    fill_the_disk(store)
    posted = 0
    while posted < 3000:  # actions until the file's pages are full and a write is refused
        assert api.request("POST", "/api/v1/calls/BEFORE/actions", body={"action": "acknowledged"})[0] == 200
        posted += 1
        daemon.sinks.flush(5)
        if daemon.health()["store"]["held"]:
            break
    assert api.request("POST", "/api/v1/calls/BEFORE/end")[0] == 200
    during = {"call_id": "DURING", "customer_name": "Ms Lee"}
    assert api.request("POST", "/api/v1/calls", body=during)[0] == 201
    assert api.request("POST", "/api/v1/calls/DURING/actions", body={"action": "limits_stated"})[0] == 200
    assert api.request("POST", "/api/v1/calls/DURING/end")[0] == 200
    status, health, _ = api.request("GET", "/health")
    assert status == 503 and not health["store"]["ok"] and health["store"]["held"] > 3
    assert "database or disk is full" in health["store"]["error"]

    free_the_disk(store)  # and nothing is written from now on: health must recover by itself
    deadline = time.monotonic() + 10
    while (health := api.request("GET", "/health")[1])["store"]["held"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health["store"]["ok"] and health["store"]["held"] == 0 and not health["store"]["error"], health
    reader = IncidentStore(daemon.config.path(daemon.config.store.path))
    calls = {c.call_id: c for c in reader.calls()}
    assert calls["DURING"].customer_name == "Ms Lee" and calls["DURING"].end_reason == "api"
    assert [a["action"] for a in reader.details(calls["DURING"].id)["actions"]] == ["limits_stated"]
    assert calls["BEFORE"].end_reason == "api" and calls["BEFORE"].actions == posted, "nothing lost"


def test_a_store_that_cannot_be_opened_at_start_gets_the_calls_made_meanwhile(tmp_path: Path) -> None:
    """Issue 17.18, the other way a call was never stored: the store could not be opened when the
    daemon started (here its folder cannot be made: a file stands in its way), and the calls made
    meanwhile were written nowhere. They are held, and written once the store opens."""
    from callguard.core.config import load_config
    from callguard.live.daemon import build_runtime
    from tests.live.harness import free_port, write_config

    blocker = tmp_path / "store"
    blocker.write_text("not a folder")
    config_path = write_config(tmp_path, port=free_port(), daemon={"auto_calls": False})
    text = config_path.read_text().replace(
        str(tmp_path / "incidents.sqlite3"), str(blocker / "incidents.sqlite3")
    )
    config_path.write_text(text)
    config = load_config(config_path)
    daemon = Daemon(config_path, config, build_runtime(config, ""))
    daemon.start(capture=False)
    try:
        api = Client(daemon.server.port)
        health = api.request("GET", "/health")[1]["store"]
        assert not health["ok"] and "cannot open the incident store" in health["error"]
        assert (
            api.request("POST", "/api/v1/calls", body={"call_id": "EARLY", "customer_name": "Ms Lee"})[0]
            == 201
        )
        assert api.request("POST", "/api/v1/calls/EARLY/actions", body={"action": "limits_stated"})[0] == 200
        assert api.request("POST", "/api/v1/calls/EARLY/end")[0] == 200
        assert api.request("GET", "/health")[1]["store"]["held"] >= 3
        blocker.unlink()  # the way is clear; nothing is sent from now on
        deadline = time.monotonic() + 10
        while not (health := api.request("GET", "/health")[1]["store"])["ok"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health["ok"] and health["held"] == 0 and not health["error"], health
    finally:
        daemon.shutdown()
    reader = IncidentStore(blocker / "incidents.sqlite3")
    [stored] = reader.calls()
    assert (stored.call_id, stored.customer_name, stored.end_reason) == ("EARLY", "Ms Lee", "api")
    assert [a["action"] for a in reader.details(stored.id)["actions"]] == ["limits_stated"]
