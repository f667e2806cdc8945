"""A call's RTP: one UDP socket per recorded stream, its jitter buffer and playout, into the CallLine.

Everything runs on the host's asyncio loop: a datagram is parsed, put in place and, when its turn
comes, decoded (a table look-up for G.711) and handed to `CallLine.audio`, which returns at once.
A poll every 20 ms gives up gaps that waited long enough and notices a call whose RTP stopped.
Packets from an address that is not the SRC's are dropped: the ports are open to the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from callguard.core.events import AudioBlock, Role
from callguard.sources.telephony.base import CallLine
from callguard.sources.telephony.siprec.codecs import Decoder, make_decoder
from callguard.sources.telephony.siprec.jitter import JitterBuffer, Released
from callguard.sources.telephony.siprec.playout import Audio, Playout
from callguard.sources.telephony.siprec.rtp import RtpError, parse_rtp
from callguard.sources.telephony.siprec.sdp import Codec

log = logging.getLogger(__name__)

POLL_S = 0.02


class PortPool:
    """The configured RTP range, handed out in blocks of two ports per stream (RTP even, RTCP odd)."""

    def __init__(self, first: int, last: int) -> None:
        self.first = first + (first % 2)  # RTP on even ports (RFC 3550 section 11)
        self.last = last
        self._taken: set[int] = set()
        self._next = self.first

    @property
    def free_blocks(self) -> int:
        return (self.last + 1 - self.first) // 2 - len(self._taken)

    def take(self, streams: int) -> int | None:
        """The first port of `streams` consecutive pairs, or None when the range is full. The search
        starts after the last block handed out, so that a port just freed is not reused at once."""
        span = 2 * streams
        size = (self.last + 1 - self.first) // 2 * 2  # whole pairs only
        if size < span:
            return None
        for step in range(0, size, 2):
            base = self.first + (self._next - self.first + step) % size
            ports = range(base, base + span, 2)
            if base + span > self.first + size or any(p in self._taken for p in ports):
                continue
            self._taken.update(ports)
            self._next = base + span if base + span < self.first + size else self.first
            return base
        return None

    def release(self, port: int) -> None:
        self._taken.discard(port)


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, stream: MediaStream) -> None:
        self.stream = stream

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.stream.received(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("siprec %s: RTP socket error: %s", self.stream.name, exc)


@dataclass
class MediaStream:
    """One recorded stream: a socket, a jitter buffer, a playout, a role."""

    name: str
    role: Role
    port: int
    line: CallLine
    sources: Callable[[str], bool]  # whether RTP may come from this address
    jitter: JitterBuffer
    playout: Playout
    transport: asyncio.DatagramTransport | None = None
    last_packet: float = field(default_factory=time.monotonic)
    packets: int = 0
    bad_packets: int = 0
    foreign_packets: int = 0
    _logged_bad: int = 0

    def received(self, data: bytes, source: str) -> None:
        if not self.sources(source):
            self.foreign_packets += 1
            if self.foreign_packets in (1, 100, 10000):
                log.warning(
                    "siprec %s: RTP from %s, not the recorder client: dropped (%d so far)",
                    self.name,
                    source,
                    self.foreign_packets,
                )
            return
        try:
            packet = parse_rtp(data)
        except RtpError as exc:
            self.bad_packets += 1
            if self.bad_packets in (1, 10, 100, 1000) or self.bad_packets % 10000 == 0:
                log.warning("siprec %s: bad RTP packet (%d so far): %s", self.name, self.bad_packets, exc)
            return
        now = time.monotonic()
        self.last_packet = now
        self.packets += 1
        self._play(self.jitter.push(packet, now), now)

    def poll(self, now: float) -> None:
        if self.jitter.waiting:
            self._play(self.jitter.poll(now), now)

    def finish(self) -> None:
        now = time.monotonic()
        self._play(self.jitter.flush(), now)

    def _play(self, released: list[Released], now: float) -> None:
        for item in released:
            for out in self.playout.take(item, now):
                if isinstance(out, Audio):
                    self.line.audio(AudioBlock(self.role, out.pcm, out.rate, out.t))
                else:
                    self.line.dtmf(out.digit, out.t)

    def summary(self) -> str:
        j, p = self.jitter.stats, self.playout.stats
        return (
            f"{self.role}: {p.packets} packets, {self.playout.t:.1f} s, lost {j.lost}, late {j.late}, "
            f"duplicates {j.duplicates}, reordered {j.reordered}, concealed {p.concealed_s:.2f} s, "
            f"bad {self.bad_packets}, jumps {p.jumps}, SSRC changes {j.ssrc_changes}"
        )


def decoder_factories(codecs: list[Codec]) -> tuple[dict[int, Callable[[], Decoder]], int | None]:
    factories: dict[int, Callable[[], Decoder]] = {}
    event: int | None = None
    for codec in codecs:
        if codec.name == "TELEPHONE-EVENT":
            event = codec.payload_type
        else:
            factories[codec.payload_type] = functools.partial(make_decoder, codec)
    return factories, event


class CallMedia:
    """The streams of one call, their poll, and the RTP time-out."""

    def __init__(
        self, name: str, line: CallLine, jitter_s: float, timeout_s: float, on_timeout: Callable[[], None]
    ) -> None:
        self.name = name
        self.line = line
        self.jitter_s = jitter_s
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self.streams: dict[int, MediaStream] = {}  # m-line index -> stream
        self.paused = False  # every stream inactive (the SRC paused the recording, RFC 7866 section 8.1.2)
        self._task: asyncio.Task[None] | None = None
        self._quiet_since = time.monotonic()
        self.origin: float | None = None  # when the call's first RTP packet came, on any stream

    def _call_origin(self, now: float) -> float:
        if self.origin is None:
            self.origin = now
        return self.origin

    async def open(
        self,
        index: int,
        role: Role,
        host: str,
        port: int,
        codecs: list[Codec],
        sources: Callable[[str], bool],
    ) -> MediaStream:
        factories, event = decoder_factories(codecs)
        name = f"{self.name}/{role}"
        playout = Playout(factories, event, name, origin=self._call_origin)
        stream = MediaStream(name, role, port, self.line, sources, JitterBuffer(self.jitter_s), playout)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _RtpProtocol(stream), local_addr=(host, port)
        )
        stream.transport = transport
        self.streams[index] = stream
        return stream

    def recodec(self, index: int, codecs: list[Codec]) -> None:
        """A re-INVITE changed a stream's codecs: the same stream time goes on with the new types."""
        factories, event = decoder_factories(codecs)
        self.streams[index].playout.rebind(factories, event)

    def start(self) -> None:
        self._quiet_since = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    def close_stream(self, index: int) -> None:
        stream = self.streams.pop(index)
        stream.finish()
        if stream.transport is not None:
            stream.transport.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for index in list(self.streams):
            self.close_stream(index)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            now = time.monotonic()
            for stream in list(self.streams.values()):
                stream.poll(now)
            last = max([s.last_packet for s in self.streams.values()] + [self._quiet_since])
            if self.paused:
                self._quiet_since = now
            elif now - last > self.timeout_s:
                log.warning("siprec %s: no RTP for %.1f s: the call ends (timeout)", self.name, now - last)
                self._task = None
                self.on_timeout()
                return
