"""Helpers for tests and probe scripts (not used by callguard itself): run any stage on frames or
events, make small synthetic frames, write a config file for a real daemon of its own, and talk to
its API on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from callguard.audio.framing import Framer
from callguard.core.config import DEFAULT_CONFIG_DIR
from callguard.core.events import Event, Frame, Role
from callguard.stages.base import EventStage, FrameStage

# ---------------------------------------------------------------- running a stage


def run_frames(
    stage: FrameStage, frames: Iterable[Frame], t_end: float | None = None
) -> tuple[list[Frame], list[Event]]:
    """Every frame through `stage` in order, then its flush at `t_end`: the frames it let out and its
    events, in order. `t_end` defaults to the end of the last frame (frames spaced evenly, as a
    Framer cuts them; 0 with no frames)."""
    out: list[Frame] = []
    events: list[Event] = []
    previous: Frame | None = None
    last: Frame | None = None
    for frame in frames:
        previous, last = last, frame
        decided, produced = stage.process(frame)
        out += decided
        events += produced
    if t_end is None:
        t_end = 0.0 if last is None else last.t + (last.t - previous.t if previous is not None else 0.0)
    decided, produced = stage.flush(t_end)
    return out + decided, events + produced


def run_events(stage: EventStage, events: Iterable[Event], tick_at: Iterable[float] = ()) -> list[Event]:
    """`events` through `stage` in the order given, with a tick at each time of `tick_at` (ascending)
    once the events up to that time have been read, as a call's runner ticks after each block; the
    events after the last tick are read last. What the stage derives is returned, not fed back."""
    pending = list(events)
    at = 0
    out: list[Event] = []
    for t in tick_at:
        while at < len(pending) and pending[at].t <= t + 1e-9:
            out += stage.on_event(pending[at])
            at += 1
        out += stage.tick(t)
    for event in pending[at:]:
        out += stage.on_event(event)
    return out


def ticks(until: float, step: float, start: float = 0.0) -> list[float]:
    """Tick times from `start` to `until` included, every `step` seconds (rounded: no drift)."""
    count = int(round((until - start) / step, 9)) + 1
    return [round(start + i * step, 6) for i in range(count)]


# ---------------------------------------------------------------- synthetic audio


def frames_of(samples: np.ndarray, rate: int, frame_ms: int, speaker: Role = "customer") -> list[Frame]:
    """Int16 samples cut into frames by the pipeline's own Framer (levels measured, `speech` unset)."""
    return list(Framer(speaker, rate, frame_ms).push(np.asarray(samples, dtype=np.int16)))


def tone(seconds: float, rate: int, level_dbfs: float, hz: float = 400.0) -> np.ndarray:
    """A sine whose RMS is `level_dbfs`, as int16 samples (its peak is 3 dB above its RMS)."""
    amplitude = np.sqrt(2) * 10 ** (level_dbfs / 20) * 32768
    wave = amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)
    return np.clip(np.round(wave), -32768, 32767).astype(np.int16)


def silence(seconds: float, rate: int) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def noise(seconds: float, rate: int, level_dbfs: float, seed: int = 0) -> np.ndarray:
    """White noise whose RMS is about `level_dbfs`, as int16 samples (seeded: the same every run)."""
    white = np.random.default_rng(seed).normal(0.0, 10 ** (level_dbfs / 20) * 32768, round(seconds * rate))
    return np.clip(np.round(white), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------- a real daemon


def daemon_config_file(
    folder: Path, *, port: int, token: str, daemon: dict[str, Any] | None = None, extra: str = ""
) -> Path:
    """A config file for a daemon of its own: its store, models folder and port in `folder`, the
    shipped lexicons and prompts, and `daemon` settings over these defaults."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "token": token, "reload_poll_s": 0.5}
    values |= daemon or {}
    lines = [
        "[store]",
        f'path = "{folder / "incidents.sqlite3"}"',
        "[asr]",
        f'models_dir = "{folder / "models"}"',
        "[detector]",
        f'lexicon_en = "{DEFAULT_CONFIG_DIR / "lexicon_en.toml"}"',
        f'lexicon_fr = "{DEFAULT_CONFIG_DIR / "lexicon_fr.toml"}"',
        "[policy]",
        f'prompts_en = "{DEFAULT_CONFIG_DIR / "prompts_en.toml"}"',
        f'prompts_fr = "{DEFAULT_CONFIG_DIR / "prompts_fr.toml"}"',
        "[daemon]",
        *(f"{key} = {json.dumps(value)}" for key, value in values.items()),
        extra,
    ]
    path = folder / "callguard.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_daemon_writing_from_c(config: Path) -> int:
    """`callguard daemon --config CONFIG` in this process, with C code writing to fd 2 once it is
    ready (libc write and fprintf, as PortAudio and ALSA do) and a Python print on sys.stderr; then
    SIGTERM. For checking that every line of the daemon's stderr is JSON (run it in a subprocess)."""
    import ctypes
    import logging
    import os
    import signal
    import sys
    import threading

    from callguard.live.daemon import run_daemon

    ready = threading.Event()

    class Ready(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "daemon ready":
                ready.set()

    def write_from_c() -> None:
        ready.wait(60)  # not before: sounddevice points fd 2 at /dev/null while it starts PortAudio
        libc = ctypes.CDLL(None)
        line = b"ALSA lib pcm.c:2666:(snd_pcm_open_noupdate) Unknown PCM cards.pcm.rear\n"
        libc.write(2, line, len(line))
        stderr = ctypes.c_void_p.in_dll(libc, "stderr")
        libc.fprintf(stderr, b"PortAudio %s {not json\n", b"fprintf from C")
        libc.fflush(stderr)
        print("a Python print on sys.stderr", file=sys.stderr, flush=True)
        ready.wait(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    logging.getLogger("callguard.live.daemon").addHandler(Ready())
    threading.Thread(target=write_from_c, daemon=True).start()
    return run_daemon(config)


# ---------------------------------------------------------------- a local daemon's API


def api_request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any, http.client.HTTPResponse]:
    """One request to the API on 127.0.0.1:`port`: its status, its body (decoded when it is JSON,
    else the bytes) and the response (for its headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = dict(headers or {})
    if token:
        sent.setdefault("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    kind = response.getheader("Content-Type", "")
    parsed = json.loads(raw) if raw and kind.startswith("application/json") else raw
    return response.status, parsed, response


class EventStream:
    """GET /api/v1/events on 127.0.0.1:`port`, read on a thread: each message with the time.time()
    it arrived."""

    def __init__(self, port: int, token: str, timeout: float = 60.0) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/api/v1/events", headers={"Authorization": f"Bearer {token}"})
        self.response = self.conn.getresponse()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in self.response:
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith("data: "):
                    self.messages.append((time.time(), json.loads(line[6:])))

    def find(
        self, wanted: Callable[[dict[str, Any]], bool], timeout: float
    ) -> tuple[float, dict[str, Any]] | None:
        """The first message `wanted` accepts and when it came, waiting up to `timeout`; None if none."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, message in list(self.messages):
                if wanted(message):
                    return arrived, message
            time.sleep(0.005)
        return None

    def close(self) -> None:
        self.conn.close()
