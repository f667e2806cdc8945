"""`callguard daemon --replay FILE`: a recorded call played into the live daemon as if it came from the
devices, at the pace it was spoken, through the whole live path (worker, pipeline, sinks, store), as a
user runs it: the command line in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from callguard.sinks.store import IncidentStore
from tests.live.harness import free_port, write_config


def test_a_replayed_call_goes_the_live_way_and_is_stored(
    tmp_path: Path, fixture_call: Callable[[str], Path]
) -> None:
    wav = fixture_call("threat_en")
    config = write_config(tmp_path, port=free_port(), daemon={"auto_calls": False})
    call_info = tmp_path / "call.json"
    call_info.write_text(
        json.dumps({"call_id": "CTI-9", "agent_name": "Ana", "queue": "billing", "language": "en"})
    )
    command = [
        sys.executable, "-m", "callguard.cli", "--config", str(config), "daemon", "--replay", str(wav),
        "--transcript", str(wav.with_name(wav.stem + ".transcript.json")), "--call-info", str(call_info),
    ]  # fmt: skip
    started = time.monotonic()
    daemon = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines: list[dict[str, object]] = []
    try:
        assert daemon.stderr is not None
        for raw in daemon.stderr:
            lines.append(json.loads(raw))
            if lines[-1]["msg"] == "recording played; the daemon goes on (panel, API) until stopped":
                break
        played_in = time.monotonic() - started
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    messages = [line["msg"] for line in lines]
    assert "call started" in messages and "call ended" in messages, messages
    alerts = [line for line in lines if line["msg"] == "prompt" and line.get("alert")]
    assert alerts and alerts[0]["call_id"] == "CTI-9", "the threat in the recording raised its alert"
    duration = json.loads((wav.with_name(wav.stem + ".truth.json")).read_text())["duration"]
    assert played_in >= duration * 0.9, (
        f"played at the pace it was spoken ({played_in:.1f} s for {duration} s)"
    )
    ended = next(line for line in lines if line["msg"] == "call ended")
    assert ended["reason"] == "recording ended" and ended["level_reached"] == "abusive"
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    [record] = store.calls()
    assert record.call_id == "CTI-9" and record.level_reached == "abusive"
    assert any(d["category"] == "threat" for d in store.details(record.id)["detections"])


def test_a_recording_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path, port=free_port())
    broken = tmp_path / "call.wav"
    broken.write_bytes(b"RIFF not a wave file at all")
    done = subprocess.run(
        [sys.executable, "-m", "callguard.cli", "--config", str(config), "daemon", "--replay", str(broken)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "call.wav" in done.stderr and "cannot start" in done.stderr, done.stderr
