"""The peers `callguard serve` meets, for its tests and its bench: an Asterisk AudioSocket peer written
from the protocol definition (not from callguard's own listener), a panel's SSE stream, and an HTTP
client; plus a config for a server of its own in a folder."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from callguard.testing import EventStream, api_request, daemon_config_file

ADMIN = "admin-token-0123456789"
SLIN_KIND = {8000: 0x10, 12000: 0x11, 16000: 0x12, 24000: 0x13, 32000: 0x14, 44100: 0x15, 48000: 0x16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_config(
    folder: Path,
    *,
    serve: str = "",
    audiosocket: str = "",
    daemon: dict[str, Any] | None = None,
    floor: str = "",
    sections: str = "",
) -> Path:
    """A config of its own in `folder`: the store there, [serve] on a free port with the admin token,
    AudioSocket enabled on another free port; `serve` and `audiosocket` add lines to their sections,
    `sections` whole sections of its own (`[serve.siprec]`...) at the end."""
    extra = "\n".join(
        [
            "[serve]",
            f"port = {free_port()}",
            f'token = "{ADMIN}"',
            f'agents_file = "{folder / "agents.toml"}"',
            serve,
            "[serve.audiosocket]",
            "enabled = true",
            f"port = {free_port()}",
            audiosocket,
            *(["[floor]", floor] if floor else []),
            sections,
        ]
    )
    return daemon_config_file(
        folder, port=free_port(), token="unused-daemon-token", daemon=daemon, extra=extra
    )


def header(kind: int, length: int) -> bytes:
    return struct.pack("!BH", kind, length)


def message(kind: int, payload: bytes = b"") -> bytes:
    return header(kind, len(payload)) + payload


class AudioSocketPeer:
    """One connection as Asterisk's AudioSocket() makes it: the UUID first, then 20 ms slin frames
    (kind by rate: 0x10 for 8 kHz, 0x12 for 16 kHz...), DTMF, and the hangup."""

    def __init__(self, port: int, call_uuid: uuid.UUID) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.uuid = call_uuid
        self.sock.sendall(message(0x01, call_uuid.bytes))

    def audio(self, pcm: np.ndarray, rate: int) -> None:
        self.sock.sendall(message(SLIN_KIND[rate], pcm.astype("<i2").tobytes()))

    def dtmf(self, digit: str) -> None:
        self.sock.sendall(message(0x03, digit.encode()))

    def hangup(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(message(0x00))

    def received(self, timeout: float = 5.0) -> bytes:
        """What the server sent back (a hangup when it refused or ended the call), until it closes."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while chunk := self.sock.recv(4096):
                data += chunk
        except (TimeoutError, ConnectionError):
            pass
        return data

    def close(self) -> None:
        self.sock.close()


def stream_call(
    port: int,
    wav: Path,
    call_uuid: uuid.UUID,
    *,
    speed: float = 1.0,
    seconds: float | None = None,
    frame_ms: int = 20,
    started_at: list[float] | None = None,
) -> None:
    """Play a fixture call as Asterisk would fork it: a connection per channel (the left, customer,
    connects first), 20 ms frames paced at `speed` times real time, then a hangup on each.
    `started_at` gets the wall time (time.time()) at which stream time 0 was sent."""
    pcm, rate = sf.read(str(wav), dtype="int16", always_2d=True)
    if seconds is not None:
        pcm = pcm[: int(seconds * rate)]
    peers = [AudioSocketPeer(port, call_uuid) for _ in range(pcm.shape[1])]
    step = rate * frame_ms // 1000
    started = time.perf_counter()
    if started_at is not None:
        started_at.append(time.time())
    for i, offset in enumerate(range(0, len(pcm), step)):
        due = started + i * frame_ms / 1000 / speed
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        for channel, peer in enumerate(peers):
            peer.audio(pcm[offset : offset + step, channel], rate)
    for peer in peers:
        peer.hangup()
    for peer in peers:
        peer.received(timeout=2.0)
        peer.close()


class Http:
    """The API with one token: each request's status and its body (JSON decoded, else the text)."""

    def __init__(self, port: int, token: str | None = ADMIN) -> None:
        self.port = port
        self.token = token

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        status, answer, _ = api_request(self.port, method, path, body, headers, token=self.token, timeout=20)
        if isinstance(answer, bytes):
            return status, answer.decode(errors="replace") or None
        return status, answer


class PanelStream(EventStream):
    """A panel's SSE stream (GET /api/v1/events with a token), its messages collected as they come."""

    def __init__(self, port: int, token: str) -> None:
        super().__init__(port, token)
        assert self.response.status == 200, self.response.read()

    @property
    def panel_messages(self) -> list[dict[str, Any]]:
        return [message for _, message in list(self.messages)]

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        found = self.find(predicate, timeout)
        if found is None:
            raise AssertionError(f"no such panel message in {len(self.messages)}: {self.panel_messages[-5:]}")
        return found[1]

    def prompts(self, call_id: str | None = None) -> list[dict[str, Any]]:
        return [
            m["event"]
            for m in self.panel_messages
            if m.get("kind") == "event"
            and m["event"]["type"] == "prompt"
            and (call_id is None or m["call_id"] == call_id)
        ]

    def call_ids(self) -> set[str]:
        messages = self.panel_messages
        ids = {m["call_id"] for m in messages if "call_id" in m}
        for m in messages:
            if m.get("kind") == "calls":
                ids |= {c["call_id"] for c in m["calls"]}
        return ids
