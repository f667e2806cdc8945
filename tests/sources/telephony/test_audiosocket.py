"""The AudioSocket listener on 127.0.0.1 against a peer written from the protocol definition
(tests/live/serve/peers.py), with a host that records what it was handed: what Asterisk sends
arrives as typed blocks on the right speaker and stream time; every bad peer costs a log line and
its own connection, never the listener or another call."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from callguard.core.config import AudioSocketConfig
from callguard.core.events import AudioBlock
from callguard.core.facts import CallFacts
from callguard.sources.telephony.audiosocket import AudioSocketListener
from callguard.sources.telephony.base import CallRefused, StreamStart
from tests.live.serve.peers import AudioSocketPeer, header, message

HANGUP = message(0x00)


@dataclass
class RecordedLine:
    start: StreamStart
    blocks: list[AudioBlock] = field(default_factory=list)
    digits: list[tuple[str, float]] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def audio(self, block: AudioBlock) -> None:
        self.blocks.append(block)

    def dtmf(self, digit: str, t: float) -> None:
        self.digits.append((digit, t))

    def update(self, facts: CallFacts, agent_id: str = "") -> None:
        pass

    def end(self, reason: str) -> None:
        self.ended.append(reason)


class RecordingHost:
    """A CallHost that keeps every line it opened (up to `limit` at once)."""

    def __init__(self, limit: int = 100) -> None:
        self.lines: list[RecordedLine] = []
        self.limit = limit

    def open(self, start: StreamStart) -> RecordedLine:
        if sum(1 for line in self.lines if not line.ended) >= self.limit:
            raise CallRefused("at the limit")
        line = RecordedLine(start)
        self.lines.append(line)
        return line


class Running:
    def __init__(self, settings: AudioSocketConfig, host: RecordingHost) -> None:
        self.loop = asyncio.new_event_loop()
        self.listener = AudioSocketListener(settings)
        self.host = host
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.listener.start(host), self.loop).result(5)

    @property
    def port(self) -> int:
        return self.listener.port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def running(host: RecordingHost | None = None, **settings: Any) -> Running:
    values = {"enabled": True, "host": "127.0.0.1", "port": 0, "read_timeout_s": 0.6} | settings
    return Running(AudioSocketConfig(**values), host or RecordingHost())


@pytest.fixture
def server() -> Iterator[Running]:
    r = running()
    yield r
    r.stop()


def wait(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def test_frames_arrive_as_blocks_on_the_stream_clock(server: Running) -> None:
    call = uuid.uuid4()
    peer = AudioSocketPeer(server.port, call)
    pcm8 = tone(8000, 0.02)
    for _ in range(5):
        peer.audio(pcm8, 8000)
    peer.dtmf("5")
    pcm16 = tone(16000, 0.02)
    peer.audio(pcm16, 16000)  # Asterisk's 0x12 kind: slin16
    peer.hangup()
    assert peer.received() == b""  # a peer that hung up is not sent a hangup back
    wait(lambda: server.host.lines and server.host.lines[0].ended)
    line = server.host.lines[0]
    assert line.start.protocol == "audiosocket"
    assert line.start.stream_id == str(call) == line.start.facts.call_id
    assert [b.rate for b in line.blocks] == [8000] * 5 + [16000]
    assert all(b.role == "customer" for b in line.blocks)
    np.testing.assert_array_equal(line.blocks[0].pcm, pcm8)
    assert [round(b.t, 3) for b in line.blocks] == [0.0, 0.02, 0.04, 0.06, 0.08, 0.1]
    assert line.digits == [("5", pytest.approx(0.1))]
    assert line.ended == ["hangup"]


def test_two_connections_of_one_uuid_are_the_two_speakers(server: Running) -> None:
    call = uuid.uuid4()
    customer = AudioSocketPeer(server.port, call)
    for _ in range(10):
        customer.audio(tone(8000, 0.02), 8000)
    wait(lambda: server.host.lines and len(server.host.lines[0].blocks) == 10)
    agent = AudioSocketPeer(server.port, call)
    agent.audio(tone(8000, 0.02), 8000)
    third = AudioSocketPeer(server.port, call)
    assert third.received() == HANGUP  # one connection a speaker
    wait(lambda: any(b.role == "agent" for b in server.host.lines[0].blocks))
    assert len(server.host.lines) == 1
    joined = next(b for b in server.host.lines[0].blocks if b.role == "agent")
    assert joined.t == pytest.approx(0.2)  # the agent joins at the call's present
    customer.hangup()
    time.sleep(0.1)
    assert server.host.lines[0].ended == []  # the agent's connection is still on
    agent.hangup()
    wait(lambda: server.host.lines[0].ended == ["hangup"])


def test_audio_before_the_uuid_is_refused_with_a_hangup(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with caplog.at_level(logging.WARNING, logger="callguard.sources.audiosocket"):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(message(0x10, bytes(320)))
        sock.settimeout(3)
        assert sock.recv(16) == HANGUP
        sock.close()
    assert server.host.lines == []
    assert "the first message must be the 16-byte UUID" in caplog.text


def test_a_stream_that_stops_mid_call_ends_on_timeout(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    peer = AudioSocketPeer(server.port, uuid.uuid4())
    peer.audio(tone(8000, 0.02), 8000)
    peer.sock.sendall(header(0x10, 320) + bytes(100))  # a frame that never completes
    with caplog.at_level(logging.WARNING, logger="callguard.sources.audiosocket"):
        wait(lambda: server.host.lines and server.host.lines[0].ended)
    assert server.host.lines[0].ended == ["timeout"]
    assert peer.received() == HANGUP
    assert "no frame in time" in caplog.text


def test_malformed_messages_are_skipped_and_the_call_goes_on(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    peer = AudioSocketPeer(server.port, uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="callguard.sources.audiosocket"):
        peer.sock.sendall(message(0x42, b"junk"))  # an unknown kind
        peer.sock.sendall(message(0x03, b"xy"))  # DTMF of two bytes
        peer.sock.sendall(message(0x10, bytes(321)))  # an odd byte count
        peer.audio(tone(8000, 0.02), 8000)
        peer.hangup()
        wait(lambda: server.host.lines and server.host.lines[0].ended)
    line = server.host.lines[0]
    assert [len(b.pcm) for b in line.blocks] == [160, 160]
    assert line.digits == []
    assert line.ended == ["hangup"]
    for text in ("unknown kind", "DTMF message malformed", "odd byte count"):
        assert text in caplog.text


def test_rates_beyond_48_khz_and_asterisk_errors_end_the_call(server: Running) -> None:
    for kind, reason in ((0x17, "error: slin at 96000 Hz (expected 8 to 48 kHz)"),
                         (0xFF, "error: Asterisk error code 4")):  # fmt: skip
        peer = AudioSocketPeer(server.port, uuid.uuid4())
        peer.sock.sendall(message(kind, bytes([4]) if kind == 0xFF else bytes(320)))
        assert peer.received() == HANGUP
        peer.close()
        assert server.host.lines[-1].ended == [reason]


def test_a_refused_call_gets_a_hangup() -> None:
    r = running(RecordingHost(limit=1))
    try:
        first = AudioSocketPeer(r.port, uuid.uuid4())
        first.audio(tone(8000, 0.02), 8000)
        second = AudioSocketPeer(r.port, uuid.uuid4())
        assert second.received() == HANGUP
        first.hangup()
        wait(lambda: r.host.lines[0].ended == ["hangup"])
        assert len(r.host.lines) == 1
    finally:
        r.stop()


def test_a_flood_of_connections_is_bounded_and_real_calls_still_get_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    r = running(max_connections=4, read_timeout_s=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="callguard.sources.audiosocket"):
            idle = [socket.create_connection(("127.0.0.1", r.port)) for _ in range(12)]
            time.sleep(0.3)
            closed = 0
            for sock in idle:  # all at once, well within read_timeout_s: the held ones are still open
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        closed += 1
                except BlockingIOError:
                    pass
                except ConnectionError:
                    closed += 1
            assert closed == 8  # beyond the 4 held, each closed at once
            time.sleep(1.0)  # the 4 idle ones gave no UUID within read_timeout_s: closed
            peer = AudioSocketPeer(r.port, uuid.uuid4())
            peer.audio(tone(8000, 0.02), 8000)
            peer.hangup()
            wait(lambda: r.host.lines and r.host.lines[0].ended == ["hangup"])
        assert "too many at once" in caplog.text
        assert "gave no UUID" in caplog.text
        for sock in idle:
            sock.close()
    finally:
        r.stop()


def test_stop_ends_open_streams_as_shutdown() -> None:
    r = running()
    peer = AudioSocketPeer(r.port, uuid.uuid4())
    peer.audio(tone(8000, 0.02), 8000)
    wait(lambda: r.host.lines and r.host.lines[0].blocks)
    r.stop()
    assert r.host.lines[0].ended == ["shutdown"]
    peer.close()
