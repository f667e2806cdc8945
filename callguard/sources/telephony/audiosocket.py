"""Asterisk AudioSocket: a TCP listener for the `AudioSocket()` dialplan application and channel.

Wire format (the protocol definition of CyCoreSystems/audiosocket, and Asterisk's
res/res_audiosocket.c): each message is a 1-byte kind, a 2-byte big-endian payload length, then the
payload. Kinds: 0x00 hangup, 0x01 the call's UUID (16 bytes, the first message), 0x03 a DTMF digit
(1 ASCII byte), 0x10 signed linear 16-bit little-endian mono at 8 kHz, 0x11-0x16 the same at 12, 16,
24, 32, 44.1 and 48 kHz (Asterisk's slin12...slin48 kinds, in the order of its enum; 0x17 and 0x18,
96 and 192 kHz, are refused: callguard takes 8 to 48 kHz), 0xff an error (1-byte code).

One connection carries one direction: what Asterisk reads from the channel it runs on. Both speakers
of a call come as two connections with the same UUID (one `AudioSocket()` on each leg, or a
`ChanSpy` on each): the first is `[serve.audiosocket] first_role` (the customer by default), the
second the other speaker, its stream time starting where the first's is when it connects. The call
ends when its last connection does. A third connection with the same UUID is refused.

Every peer problem is one log line and that connection's end, never the listener's: a malformed
frame, audio before the UUID, a stream that stops mid-call (no whole frame within `read_timeout_s`:
the call ends "timeout"), more connections than `max_connections` (a new one is closed at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callguard.core.config import AudioSocketConfig, Config
from callguard.core.events import AudioBlock, Role
from callguard.core.facts import CallFacts
from callguard.sources.telephony.base import CallHost, CallLine, CallRefused, StreamStart

log = logging.getLogger("callguard.sources.audiosocket")

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_ERROR = 0xFF
SLIN_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000}
REFUSED_RATES = {0x17: 96000, 0x18: 192000}
HEADER = struct.Struct("!BH")
DTMF_DIGITS = frozenset("0123456789*#ABCD")
WRITE_TIMEOUT_S = 2.0


class ProtocolError(Exception):
    """A peer broke the protocol: the message says how, for the log line."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket message (for the hangup we send, and for tests' peers)."""
    return HEADER.pack(kind, len(payload)) + payload


@dataclass
class _Call:
    """A UUID's call: its line, and the connections (speakers) on it."""

    line: CallLine
    roles: set[Role] = field(default_factory=set)
    time_s: dict[Role, float] = field(default_factory=dict)  # each speaker's stream time so far


class AudioSocketListener:
    name = "audiosocket"

    def __init__(self, settings: AudioSocketConfig) -> None:
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._host: CallHost | None = None
        self._calls: dict[str, _Call] = {}
        self._connections: set[asyncio.Task[Any]] = set()
        self.refused_connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: CallHost) -> None:
        self._host = host
        self._server = await asyncio.start_server(
            self._accept, self.settings.host, self.settings.port, limit=2**17, backlog=256
        )
        log.info("audiosocket listening", extra={"fields": {"host": self.settings.host, "port": self.port}})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        for call in self._calls.values():
            call.line.end("shutdown")
        self._calls.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # --- one connection ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if len(self._connections) >= self.settings.max_connections:
            self.refused_connections += 1
            if self.refused_connections <= 10 or self.refused_connections % 100 == 0:
                log.warning(
                    "audiosocket connection refused: too many at once",
                    extra={
                        "fields": {
                            "remote": peer,
                            "max_connections": self.settings.max_connections,
                            "refused": self.refused_connections,
                        }
                    },
                )
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug here costs this connection only
            log.exception("audiosocket connection failed", extra={"fields": {"remote": peer}})
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        timeout = self.settings.read_timeout_s
        try:
            kind, payload = await _read(reader, timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            log.warning("audiosocket connection gave no UUID", extra={"fields": {"remote": peer}})
            return
        if kind != KIND_UUID or len(payload) != 16:
            log.warning(
                "audiosocket protocol error: the first message must be the 16-byte UUID (kind 0x01)",
                extra={"fields": {"remote": peer, "kind": f"0x{kind:02x}", "length": len(payload)}},
            )
            await _hangup(writer)
            return
        call_uuid = str(uuid.UUID(bytes=payload))
        joined = self._join(call_uuid, peer)
        if joined is None:
            await _hangup(writer)
            return
        call, role = joined
        reason = "shutdown"  # unless the stream says otherwise: cancelled, the listener is stopping
        try:
            reason = await self._stream(reader, call, role, call_uuid, peer)
        except Exception as exc:
            reason = f"error: {exc}"
            raise
        finally:
            self._leave(call_uuid, call, role, reason)
        if reason.startswith("error") or reason == "timeout":
            await _hangup(writer)

    def _join(self, call_uuid: str, peer: str) -> tuple[_Call, Role] | None:
        assert self._host is not None
        first: Role = self.settings.first_role
        second: Role = "agent" if first == "customer" else "customer"
        call = self._calls.get(call_uuid)
        if call is None:
            start = StreamStart(
                protocol="audiosocket", stream_id=call_uuid, facts=CallFacts(call_id=call_uuid), remote=peer
            )
            try:
                line = self._host.open(start)
            except CallRefused as exc:
                log.warning(
                    "audiosocket call refused",
                    extra={"fields": {"uuid": call_uuid, "remote": peer, "reason": str(exc)}},
                )
                return None
            call = self._calls[call_uuid] = _Call(line)
            call.roles.add(first)
            call.time_s[first] = 0.0
            return call, first
        if second in call.roles or second in call.time_s:
            log.warning(
                "audiosocket: a third connection for one call refused (one per speaker)",
                extra={"fields": {"uuid": call_uuid, "remote": peer}},
            )
            return None
        call.roles.add(second)
        call.time_s[second] = max(call.time_s.values(), default=0.0)  # joins at the call's present
        log.info("audiosocket second speaker joined", extra={"fields": {"uuid": call_uuid, "role": second}})
        return call, second

    def _leave(self, call_uuid: str, call: _Call, role: Role, reason: str) -> None:
        call.roles.discard(role)
        if not call.roles:
            self._calls.pop(call_uuid, None)
            call.line.end(reason)

    async def _stream(
        self, reader: asyncio.StreamReader, call: _Call, role: Role, call_uuid: str, peer: str
    ) -> str:
        """Messages until the end of this connection; returns why it ended."""
        timeout = self.settings.read_timeout_s
        odd_logged = False
        while True:
            try:
                kind, payload = await _read(reader, timeout)
            except TimeoutError:
                log.warning(
                    "audiosocket stream stopped: no frame in time",
                    extra={"fields": {"uuid": call_uuid, "role": role, "timeout_s": timeout}},
                )
                return "timeout"
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    log.warning(
                        "audiosocket frame cut short by the connection's end",
                        extra={"fields": {"uuid": call_uuid, "role": role}},
                    )
                    return "error: frame cut short"
                return "closed"  # the peer closed without a hangup message
            except ConnectionError as exc:
                log.warning(
                    "audiosocket connection lost", extra={"fields": {"uuid": call_uuid, "error": str(exc)}}
                )
                return "closed"
            if kind in SLIN_RATES:
                rate = SLIN_RATES[kind]
                if len(payload) % 2:
                    if not odd_logged:
                        log.warning(
                            "audiosocket audio of an odd byte count: last byte dropped",
                            extra={"fields": {"uuid": call_uuid, "length": len(payload)}},
                        )
                        odd_logged = True
                    payload = payload[:-1]
                pcm = np.frombuffer(payload, dtype="<i2").astype(np.int16)
                if len(pcm):
                    t = call.time_s[role]
                    call.line.audio(AudioBlock(role=role, pcm=pcm, rate=rate, t=t))
                    call.time_s[role] = t + len(pcm) / rate
            elif kind == KIND_HANGUP:
                return "hangup"
            elif kind == KIND_DTMF:
                digit = payload[:1].decode("ascii", "replace").upper()
                if len(payload) == 1 and digit in DTMF_DIGITS:
                    call.line.dtmf(digit, call.time_s[role])
                else:
                    log.warning(
                        "audiosocket DTMF message malformed: skipped",
                        extra={"fields": {"uuid": call_uuid, "payload": payload[:8].hex()}},
                    )
            elif kind == KIND_ERROR:
                code = payload[0] if payload else -1
                log.warning(
                    "audiosocket error from Asterisk", extra={"fields": {"uuid": call_uuid, "code": code}}
                )
                return f"error: Asterisk error code {code}"
            elif kind in REFUSED_RATES:
                log.warning(
                    "audiosocket audio rate not taken: callguard takes 8 to 48 kHz",
                    extra={
                        "fields": {"uuid": call_uuid, "kind": f"0x{kind:02x}", "rate": REFUSED_RATES[kind]}
                    },
                )
                return f"error: slin at {REFUSED_RATES[kind]} Hz (expected 8 to 48 kHz)"
            elif kind == KIND_UUID:
                log.warning(
                    "audiosocket: a second UUID message on a connection: skipped",
                    extra={"fields": {"uuid": call_uuid, "remote": peer}},
                )
            else:
                log.warning(
                    "audiosocket message of an unknown kind: skipped",
                    extra={"fields": {"uuid": call_uuid, "kind": f"0x{kind:02x}", "length": len(payload)}},
                )


async def _read(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """One whole message within `timeout` (a peer that sends a header and stalls times out too)."""
    async with asyncio.timeout(timeout):
        kind, length = HEADER.unpack(await reader.readexactly(HEADER.size))
        payload = await reader.readexactly(length) if length else b""
    return kind, payload


async def _hangup(writer: asyncio.StreamWriter) -> None:
    """Tell Asterisk to hang up; a peer that does not read is not waited for."""
    with contextlib.suppress(Exception):
        writer.write(frame(KIND_HANGUP))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)


def _peer(writer: asyncio.StreamWriter) -> str:
    address = writer.get_extra_info("peername")
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


def listener(config: Config) -> AudioSocketListener:
    """The registry's factory (callguard/live/serve/listeners.py)."""
    return AudioSocketListener(config.serve.audiosocket)
