"""Capture: the callback contract, device resolution, real recording through PulseAudio, and the
watchdog. A physical headset cannot be unplugged on this machine, so the unplug test alone uses a
stand-in for PortAudio (FakeBackend) whose device stops calling back and leaves the device list."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callguard.core.config import Config
from callguard.sources.devices import (
    CapturedBlock,
    CaptureSet,
    CaptureSpec,
    DeviceCapture,
    DeviceInfo,
    PortAudioBackend,
    resolve_device,
    specs_from_config,
)
from tests.pulse import play

# --- unit tests ----------------------------------------------------------------------------------


def test_specs_from_config() -> None:
    c = Config()
    assert specs_from_config(c) == [CaptureSpec("", ("customer",), "daemon.customer_device")]
    both = c.with_overrides(daemon={"customer_device": "Monitor of Built-in", "agent_device": "USB Headset"})
    assert [s.roles for s in specs_from_config(both)] == [("customer",), ("agent",)]
    stereo = both.with_overrides(
        daemon={"stereo_device": "pulse"}, audio={"stereo_roles": ["agent", "customer"]}
    )
    assert specs_from_config(stereo) == [CaptureSpec("pulse", ("agent", "customer"), "daemon.stereo_device")]


def test_resolve_device_by_name_or_part() -> None:
    devices = [
        DeviceInfo(0, "HDA Intel PCH: ALC257 Analog (hw:0,0)", "ALSA", 2, 48000),
        DeviceInfo(3, "Jabra EVOLVE 20 MS: USB Audio (hw:2,0)", "ALSA", 1, 16000),
        DeviceInfo(5, "pulse", "ALSA", 32, 44100),
    ]
    assert resolve_device(devices, "pulse").index == 5  # type: ignore[union-attr]
    # after a replug the hw number changes; a part of the name still finds it
    assert resolve_device(devices, "jabra evolve").index == 3  # type: ignore[union-attr]
    assert resolve_device(devices, "Plantronics") is None
    assert resolve_device(devices, "").name == "pulse"  # type: ignore[union-attr]


def test_callback_never_blocks_or_raises() -> None:
    blocks: queue.Queue[CapturedBlock] = queue.Queue(2)
    device = DeviceCapture(0, CaptureSpec("x", ("customer",), "k"), 16000, blocks, rate=16000)
    data = np.ones((800, 1), np.int16)
    for _ in range(5):
        device.callback(data, 800, None, None)
    assert (blocks.qsize(), device.dropped, device.callbacks) == (2, 3, 5)
    device.callback(None, 0, None, "input overflow")  # type: ignore[arg-type]  # a broken block
    assert device.overflows == 1 and (device.callback_errors + device.dropped) == 4
    data[0, 0] = 7
    assert blocks.get_nowait().data[0, 0] == 1  # the callback queued a copy, not PortAudio's buffer


def test_split_resamples_and_downmixes() -> None:
    blocks: queue.Queue[CapturedBlock] = queue.Queue()
    stereo = DeviceCapture(0, CaptureSpec("x", ("customer", "agent"), "k"), 16000, blocks)
    data = np.stack([np.full(4800, 1000, np.int16), np.full(4800, -1000, np.int16)], axis=1)
    parts = []
    for _ in range(4):
        parts.append(stereo.split(CapturedBlock(0, 1, 48000, data)))
    customer = np.concatenate([p[0].pcm for p in parts])
    agent = np.concatenate([p[1].pcm for p in parts])
    assert [block.role for block in parts[0]] == ["customer", "agent"]
    # each block says where it starts in that speaker's audio, at the pipeline rate
    assert (
        parts[0][0].t == 0.0 and parts[1][0].t == len(parts[0][0].pcm) / 16000 and parts[0][0].rate == 16000
    )
    # 48 kHz -> 16 kHz: a third of the samples, less what the streaming filter still holds
    assert 4 * 1600 - 1000 < customer.size <= 4 * 1600 and customer.dtype == np.int16
    assert np.median(customer) == pytest.approx(1000, abs=5) and np.median(agent) == pytest.approx(
        -1000, abs=5
    )
    mono = DeviceCapture(1, CaptureSpec("x", ("agent",), "k"), 16000, blocks)
    [block] = mono.split(CapturedBlock(1, 1, 16000, data))
    role, pcm = block.role, block.pcm
    assert role == "agent" and pcm.shape == (4800,) and np.all(pcm == 0)  # a mono role on a stereo device


# --- real capture through PulseAudio --------------------------------------------------------------


def test_real_capture_through_pulseaudio(pulse_server: dict[str, str], tmp_path: Path) -> None:
    """Stereo call into the null sink, recorded from its monitor by PortAudio's ALSA `pulse` device."""
    rate = 16000
    t = np.arange(int(2.5 * rate)) / rate
    left, right = 0.3 * np.sin(2 * np.pi * 440 * t), 0.05 * np.sin(2 * np.pi * 880 * t)
    wav = tmp_path / "call.wav"
    sf.write(wav, np.stack([left, right], axis=1), rate, subtype="PCM_16")
    script = """
import queue, time, numpy as np
from callguard.sources.devices import CaptureSet, CaptureSpec
blocks = queue.Queue(1000)
capture = CaptureSet([CaptureSpec("pulse", ("customer", "agent"), "daemon.stereo_device")], 16000, blocks)
capture.start()
deadline = time.monotonic() + 6
got = {"customer": [], "agent": []}
while time.monotonic() < deadline:
    try:
        block = blocks.get(timeout=0.1)
    except queue.Empty:
        continue
    for audio in capture.split(block):
        got[audio.role].append(audio.pcm)
capture.watchdog()
health = capture.health()[0]
capture.stop()
c, a = np.concatenate(got["customer"]), np.concatenate(got["agent"])
print(health["ok"], health["device"], int(np.abs(c).max()), int(np.abs(a).max()), c.size)
"""
    # PortAudio reads PULSE_SOURCE when it starts: run the recorder in its own process.
    recorder = subprocess.Popen(
        [sys.executable, "-c", script],
        env=pulse_server,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    play(pulse_server, wav).wait(timeout=20)
    out, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err
    ok, device, customer_peak, agent_peak, samples = out.split()
    assert ok == "True" and device == "pulse"
    assert int(samples) > 4 * rate  # it kept recording the whole 6 s window (less start-up)
    # left went to the customer, right to the agent, at the levels played (0.3 and 0.05 of full scale)
    assert 0.2 * 32767 < int(customer_peak) < 0.4 * 32767
    assert 0.02 * 32767 < int(agent_peak) < 0.1 * 32767


# --- the watchdog, with a device that is unplugged and plugged back -------------------------------


class FakeStream:
    """Calls back every 50 ms from its own thread, like PortAudio, until its device is unplugged."""

    def __init__(
        self, backend: FakeBackend, name: str, rate: int, channels: int, callback: Callable[..., None]
    ):
        self.backend, self.name, self.rate, self.channels, self.callback = (
            backend,
            name,
            rate,
            channels,
            callback,
        )
        self.active = False
        self._closed = threading.Event()

    def start(self) -> None:
        self.active = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        block = np.full((self.rate // 20, self.channels), 100, np.int16)
        while not self._closed.wait(0.05):
            with self.backend.cable:  # once unplug() returns, no callback of this device is under way
                if self.name in self.backend.unplugged:
                    continue  # a hung ALSA device: no error, no callback, stream still "active"
                self.callback(block, block.shape[0], None, None)

    def close(self) -> None:
        self._closed.set()
        self.active = False


class FakeBackend:
    """PortAudio's behaviour that matters here: a device list frozen until re-initialised."""

    def __init__(self) -> None:
        self.plugged = {"Monitor of softphone": 2, "USB Headset": 1}
        self.unplugged: set[str] = set()
        self.cable = threading.Lock()
        self.listed = dict(self.plugged)
        self.streams: list[FakeStream] = []
        self.reinitialized = 0

    def input_devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(i, name, "ALSA", ch, 16000) for i, (name, ch) in enumerate(self.listed.items())]

    def unplug(self, name: str) -> None:
        with self.cable:
            self.unplugged.add(name)

    def plug_back(self) -> None:
        with self.cable:
            self.unplugged.clear()

    def supports(self, device: int, rate: int, channels: int) -> bool:
        return True

    def open_input(
        self, device: int, rate: int, channels: int, blocksize: int, callback: Callable[..., None]
    ):
        name = list(self.listed)[device]
        if name in self.unplugged:
            raise RuntimeError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
        stream = FakeStream(self, name, rate, channels, callback)
        self.streams.append(stream)
        return stream

    def reinitialize(self) -> None:
        self.reinitialized += 1
        for stream in self.streams:
            stream.close()  # Pa_Terminate closes every stream
        self.listed = {n: c for n, c in self.plugged.items() if n not in self.unplugged}


def softphone_and_headset(backend: FakeBackend, blocks: queue.Queue[CapturedBlock]) -> CaptureSet:
    """The customer on the softphone's monitor, the agent on a USB headset, with a quick watchdog."""
    specs = [
        CaptureSpec("Monitor of softphone", ("customer",), "daemon.customer_device"),
        CaptureSpec("USB Headset", ("agent",), "daemon.agent_device"),
    ]
    return CaptureSet(
        specs, 16000, blocks, backend_factory=lambda: backend, stall_s=0.4, backoff_s=(0.3, 0.6)
    )


def test_unplugged_headset_is_retried_and_the_call_goes_on() -> None:
    backend = FakeBackend()
    blocks: queue.Queue[CapturedBlock] = queue.Queue(10000)
    capture = softphone_and_headset(backend, blocks)
    capture.start()

    def run_watchdog(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            capture.watchdog()
            time.sleep(0.05)

    def roles_received(seconds: float) -> set[str]:
        while not blocks.empty():
            blocks.get_nowait()
        run_watchdog(seconds)
        seen = set()
        while not blocks.empty():
            seen.update(audio.role for audio in capture.split(blocks.get_nowait()))
        return seen

    assert roles_received(0.3) == {"customer", "agent"}
    backend.unplug("USB Headset")  # the agent pulls the headset out mid-call
    assert roles_received(1.5) == {"customer"}  # the customer's audio keeps flowing throughout
    agent = capture.health()[1]
    assert agent["ok"] is False and agent["state"] == "lost" and agent["error"]
    assert backend.reinitialized >= 1  # it looked for the device again, re-initialising PortAudio
    assert capture.health()[0]["ok"] is True

    backend.plug_back()
    run_watchdog(1.5)
    assert roles_received(0.3) == {"customer", "agent"}
    health = capture.health()
    assert all(d["ok"] for d in health) and health[1]["reconnects"] >= 1
    capture.stop()


def test_an_unplugged_headsets_time_comes_back_as_silence() -> None:
    # The fake backend stands in for PortAudio and a physical headset, which cannot be unplugged here.
    backend = FakeBackend()
    blocks: queue.Queue[CapturedBlock] = queue.Queue(10000)
    capture = softphone_and_headset(backend, blocks)
    received = {"customer": 0, "agent": 0}
    silent_run = {"customer": 0, "agent": 0}

    def run(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            capture.watchdog()
            time.sleep(0.05)
            while not blocks.empty():
                for audio in capture.split(blocks.get_nowait()):
                    role, pcm = audio.role, audio.pcm
                    received[role] += len(pcm)
                    zeros = np.flatnonzero(pcm)  # the fake device's audio is never zero
                    silent_run[role] = max(silent_run[role], int(zeros[0]) if len(zeros) else len(pcm))

    capture.start()
    started = time.monotonic()
    run(0.5)
    backend.unplug("USB Headset")
    run(1.5)
    backend.plug_back()
    run(1.5)
    elapsed = time.monotonic() - started
    capture.stop()
    customer_s, agent_s = received["customer"] / 16000, received["agent"] / 16000
    # Without the fill the agent would be short by the time unplugged plus the reopening (about 2 s).
    assert abs(agent_s - customer_s) < 0.4, (agent_s, customer_s)
    assert elapsed - 0.5 < customer_s <= elapsed + 0.1, (customer_s, elapsed)
    assert silent_run["agent"] / 16000 > 1.2 and silent_run["customer"] / 16000 < 0.5, silent_run


def test_a_device_that_is_not_there_is_reported_by_name() -> None:
    backend = FakeBackend()
    blocks: queue.Queue[CapturedBlock] = queue.Queue(10)
    spec = CaptureSpec("Plantronics", ("agent",), "daemon.agent_device")
    capture = CaptureSet([spec], 16000, blocks, backend_factory=lambda: backend)
    capture.start()
    [health] = capture.health()
    assert health["ok"] is False and "daemon.agent_device = 'Plantronics'" in health["error"]
    capture.stop()


def test_portaudio_backend_lists_pulse(pulse_server: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from callguard.sources.devices import cmd_devices; exit(cmd_devices())"],
        env=pulse_server, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "pulse" in out.stdout and "channels" in out.stdout
    assert PortAudioBackend  # imported lazily by the module, constructed only on use
