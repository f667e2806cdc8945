"""A live daemon for tests: its config, its HTTP API and event stream as a client sees them, and audio
queued as the capture callback queues it (for the API, panel, notification and floor tests)."""

from __future__ import annotations

import http.client
import socket
from pathlib import Path
from typing import Any

import numpy as np

from callguard.core.config import load_config
from callguard.live.daemon import Daemon, build_runtime
from callguard.sources.devices import CapturedBlock
from callguard.testing import EventStream, api_request, daemon_config_file

TOKEN = "test-token-0123456789"
ASTERISK_EN = Path("/usr/share/asterisk/sounds/en")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, *, port: int, daemon: dict[str, Any] | None = None, extra: str = "") -> Path:
    """A config file for a test daemon: its own store and port, the shipped lexicons and prompts."""
    return daemon_config_file(folder, port=port, token=TOKEN, daemon=daemon, extra=extra)


def speech_with_shouts(rate: int = 16000, shouts: int = 3) -> np.ndarray:
    """Real recorded speech (Asterisk prompts) at a normal level, with stretches 20 dB louder."""
    import soundfile as sf
    import soxr

    data, file_rate = sf.read(ASTERISK_EN / "demo-congrats.wav", dtype="float32")  # 30 s, one voice
    speech = soxr.resample(data, file_rate, rate)
    speech *= 10 ** (-26 / 20) / max(1e-9, float(np.sqrt(np.mean(speech**2))))
    parts = [speech[: 6 * rate]]
    for _ in range(shouts):
        parts.append(np.clip(speech[rate : 3 * rate] * 10.0, -0.99, 0.99))  # +20 dB
        parts.append(speech[3 * rate : 9 * rate])
    return (np.concatenate(parts) * 32767).astype(np.int16)


class Client:
    def __init__(self, port: int, token: str | None = TOKEN) -> None:
        self.port, self.token = port, token

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        return api_request(self.port, method, path, body, headers, token=self.token)


class SseReader(EventStream):
    """Reads /api/v1/events on a thread, stamping each message with its arrival time."""

    def __init__(self, port: int) -> None:
        super().__init__(port, TOKEN, timeout=30)
        assert self.response.status == 200

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> tuple[float, dict[str, Any]]:
        found = self.find(predicate, timeout)
        if found is None:
            raise AssertionError(f"no matching message in {timeout} s; got {[m for _, m in self.messages]}")
        return found


def start_daemon(folder: Path, extra: str = "", **settings: Any) -> Daemon:
    """The real daemon (pipeline, store, worker, API) with its sound devices left closed: blocks are
    queued by hand (queue_audio). `extra`: more TOML sections for its config file."""
    path = write_config(folder, port=free_port(), daemon={"auto_calls": False} | settings, extra=extra)
    config = load_config(path)
    running = Daemon(path, config, build_runtime(config, ""))
    running.start(capture=False)  # no sound device in these tests: blocks are queued by hand
    return running


def queue_audio(daemon: Daemon, pcm: np.ndarray, role_index: int = 0, block_s: float = 0.05) -> None:
    """Queue PCM as the capture callback would (as device 0, at the pipeline rate)."""
    n = int(daemon.config.audio.rate * block_s)
    for start in range(0, pcm.size, n):
        daemon.blocks.put(CapturedBlock(0, 1, daemon.config.audio.rate, pcm[start : start + n, None].copy()))
