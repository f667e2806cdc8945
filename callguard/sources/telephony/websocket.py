"""What the WebSocket inputs (Twilio Media Streams, Genesys AudioHook) share.

- `WebSocketListener`: binds one path on one address with the `websockets` asyncio server, refuses
  before the upgrade what must be refused (another path 404, the connection bound 503, a bad
  signature 401/403 by the protocol's own `authorize`), and runs one `WebSocketStream` a connection.
- `WebSocketStream`: one connection's receive loop, with what every stream needs: an idle timeout
  (no message for N s ends the call "timeout"), a bound on message size (the library closes 1009),
  sends that give up on a peer that stopped reading, and one log line a kind of trouble.
- `SpeakerTimeline`: one speaker's audio placed on its stream time, so that the host's blocks stay
  contiguous whatever the network did (gaps filled with silence, repeats and late arrivals dropped).
- `facts_from_attributes`: a stream's custom key/values (Twilio customParameters, AudioHook input
  variables) read as call facts, the agent id and what is left for the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl as ssl_module
from collections import Counter
from collections.abc import Mapping
from dataclasses import fields, replace
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from callguard.core.errors import ConfigError
from callguard.core.events import AudioBlock, Role
from callguard.core.facts import CallFacts
from callguard.sources.telephony.base import CallHost, CallLine

log = logging.getLogger("callguard.sources.telephony")

# A close code the host's refusal maps to: "try again later" (RFC 6455 registry).
TRY_AGAIN_LATER = 1013
MESSAGE_TOO_BIG = 1009


# --------------------------------------------------------------------------------------- timeline


class SpeakerTimeline:
    """One speaker's PCM pushed to the call's line at its place on the stream's clock.

    `place(start, pcm)` puts samples where the protocol's timestamp says: a gap (audio lost before it
    reached us) is filled with silence, a block that lies wholly before what was already pushed (a
    repeat, or one that came too late) is dropped, one that overlaps is trimmed. Within `tolerance`
    samples a block counts as contiguous, since timestamps are rounded to milliseconds. A jump beyond
    `max_gap_s` is not filled (an hour of silence helps no one): the clock is taken over from there,
    and that one discontinuity is logged."""

    def __init__(
        self,
        role: Role,
        rate: int,
        line: CallLine,
        *,
        label: str,
        tolerance_s: float = 0.010,
        max_gap_s: float = 60.0,
    ) -> None:
        self.role, self.rate, self.line, self.label = role, rate, line, label
        self.tolerance = round(tolerance_s * rate)
        self.max_gap = round(max_gap_s * rate)
        self.cursor = 0  # samples pushed so far = where the next block starts
        self.filled = 0  # samples of silence put in for lost audio
        self.dropped = 0  # blocks dropped as repeats or too late
        self.jumps = 0

    @property
    def t(self) -> float:
        """The speaker's stream time reached, in seconds."""
        return self.cursor / self.rate

    def push(self, pcm: np.ndarray) -> None:
        """Audio that follows on from what was pushed before."""
        if len(pcm):
            self.line.audio(AudioBlock(self.role, pcm, self.rate, self.cursor / self.rate))
            self.cursor += len(pcm)

    def silence(self, samples: int) -> None:
        """Audio known to be missing (lost, discarded, paused): zeros, a second at most a block."""
        self.filled += max(samples, 0)
        while samples > 0:
            chunk = min(samples, self.rate)
            self.push(np.zeros(chunk, dtype=np.int16))
            samples -= chunk

    def place(self, start: int, pcm: np.ndarray) -> None:
        end = start + len(pcm)
        if start > self.cursor + self.tolerance:
            gap = start - self.cursor
            if gap > self.max_gap:
                self.jumps += 1
                log.warning(
                    "%s: %s audio jumped %.1f s ahead (more than %.0f s): following it without filling",
                    self.label,
                    self.role,
                    gap / self.rate,
                    self.max_gap / self.rate,
                )
                self.cursor = start
            else:
                self.silence(gap)
        elif end <= self.cursor + self.tolerance:
            self.dropped += 1
            return
        elif start < self.cursor - self.tolerance:
            pcm = pcm[self.cursor - start :]
        self.push(pcm)


# ------------------------------------------------------------------------------------ call facts

_BOOL_FACTS = {"transfer_available", "transferred_in"}
_YES_NO = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# A custom parameter's name matches a fact's whatever its case and separators (customerName, customer-name).
_FACT_NAMES = {name.replace("_", ""): name for name in [f.name for f in fields(CallFacts)] + ["agent_id"]}
MAX_ATTRIBUTES = 64
MAX_VALUE_CHARS = 256


def _fact_name(key: str) -> str | None:
    return _FACT_NAMES.get(key.lower().replace("_", "").replace("-", "").replace(" ", ""))


def facts_from_attributes(
    attributes: Mapping[str, Any], *, call_id: str, source: str
) -> tuple[CallFacts, str, dict[str, str]]:
    """(facts, agent id, the rest) from a stream's custom key/values.

    Names that are call facts (call_id, customer_name, company, agent_name, language, queue,
    transfer_available, transferred_in) or agent_id fill those; any other goes to the rest, for the
    log. A value that cannot be used (a language callguard does not speak, "maybe" for a yes/no) is
    logged and kept in the rest. `call_id` is the stream's own id, used when no attribute names one."""
    known: dict[str, Any] = {}
    extra: dict[str, str] = {}
    agent_id = ""
    if len(attributes) > MAX_ATTRIBUTES:
        log.warning("%s: %d attributes, only the first %d are read", source, len(attributes), MAX_ATTRIBUTES)
    for key, value in list(attributes.items())[:MAX_ATTRIBUTES]:
        text = (value if isinstance(value, str) else json.dumps(value))[:MAX_VALUE_CHARS].strip()
        name = _fact_name(str(key))
        if name is None:
            extra[str(key)[:MAX_VALUE_CHARS]] = text
        elif name == "agent_id":
            agent_id = text
        elif name in _BOOL_FACTS:
            flag = _YES_NO.get(text.lower())
            if flag is None:
                log.warning("%s: %s=%r is not true or false: ignored", source, key, text)
                extra[str(key)] = text
            else:
                known[name] = flag
        else:
            known[name] = text
    try:
        facts = CallFacts.from_dict(known, source)
    except ConfigError as exc:  # only the language can be refused: the rest are plain strings
        log.warning("%s: %s: the call goes on without it", source, exc)
        extra["language"] = str(known.pop("language", ""))
        facts = CallFacts.from_dict(known, source)
    if not facts.call_id:
        facts = replace(facts, call_id=call_id)
    return facts, agent_id, extra


# ------------------------------------------------------------------------------------- secrets


def warn_if_others_can_read(path: Path, what: str) -> None:
    """A secret's file that its group or everyone can read is logged (it still works: IT decides)."""
    with contextlib.suppress(OSError):
        if path.stat().st_mode & 0o077:
            log.warning("%s %s can be read by other users: chmod 600 it", what, path)


# ------------------------------------------------------------------------------------- streams


class Complaints:
    """One warning per kind of trouble on a stream, then a count, told once more when it ends."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.counts: Counter[str] = Counter()

    def __call__(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if self.counts[kind] == 1:
            log.warning("%s: %s (%s); further ones are counted", self.label, kind, detail)

    def summary(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.counts.items())


def remote_of(connection: ServerConnection) -> str:
    """The peer's address as host:port, for log lines."""
    host, port, *_ = connection.remote_address or ("?", 0)
    return f"{host}:{port}"


class WebSocketStream:
    """One connection: its receive loop and its end. A protocol overrides `on_text` / `on_binary`,
    opens its CallLine when the stream says who the call is, and may override `goodbye`."""

    def __init__(self, listener: WebSocketListener, connection: ServerConnection) -> None:
        self.listener, self.connection = listener, connection
        self.remote = remote_of(connection)
        self.label = f"{listener.name} {self.remote}"
        self.line: CallLine | None = None
        self.ended = False
        self.finished = False  # the protocol said goodbye: the loop stops at the next turn
        self.complain = Complaints(self.label)

    # -- what a protocol implements

    async def on_text(self, message: str) -> None:
        self.complain("unexpected text message", f"{len(message)} characters")

    async def on_binary(self, message: bytes) -> None:
        self.complain("unexpected binary message", f"{len(message)} bytes")

    async def goodbye(self, reason: str) -> None:
        """Tell the peer the server ends the stream (shutdown, idle); then the socket is closed."""

    # -- shared

    def end(self, reason: str) -> None:
        if self.line is not None and not self.ended:
            self.ended = True
            self.line.end(reason)
            trouble = self.complain.summary()
            log.info("%s: ended (%s)%s", self.label, reason, f"; {trouble}" if trouble else "")

    async def send(self, message: str | bytes) -> bool:
        """Send, or give up on a peer that has stopped reading (its buffers full): False then."""
        try:
            await asyncio.wait_for(self.connection.send(message), self.listener.send_timeout_s)
            return True
        except TimeoutError:
            log.warning(
                "%s: the peer stopped reading for %g s: dropping it", self.label, self.listener.send_timeout_s
            )
            self.end("error: the peer stopped reading")
            self.finished = True
            self.connection.transport.abort()
        except ConnectionClosed:
            pass
        return False

    async def close(self, code: int, reason: str) -> None:
        self.finished = True
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await asyncio.wait_for(self.connection.close(code, reason[:120]), self.listener.send_timeout_s)

    async def run(self) -> None:
        idle = self.listener.idle_timeout_s
        try:
            while not self.finished:
                try:
                    message = await asyncio.wait_for(self.connection.recv(), idle)
                except TimeoutError:
                    log.warning("%s: no message for %g s: ending the stream", self.label, idle)
                    await self.goodbye(f"no message for {idle:g} s")
                    self.end("timeout")
                    await self.close(1001, f"no message for {idle:g} s")
                    return
                if isinstance(message, str):
                    await self.on_text(message)
                else:
                    await self.on_binary(message)
        except ConnectionClosed as closed:
            code = closed.sent.code if closed.sent is not None else None
            if code == MESSAGE_TOO_BIG:
                log.warning(
                    "%s: a message over %d bytes: connection closed",
                    self.label,
                    self.listener.max_message_bytes,
                )
                self.end(f"error: a message over {self.listener.max_message_bytes} bytes")
            elif closed.rcvd is None and closed.sent is None:
                self.end("error: connection lost")
            else:
                self.end("closed")

    async def shutdown(self) -> None:
        """The server is stopping: say so to the peer, end the call "shutdown", close 1001."""
        if self.finished and self.ended:
            return
        await self.goodbye("callguard is shutting down")
        self.end("shutdown")
        await self.close(1001, "callguard is shutting down")


class WebSocketListener:
    """A protocol's WebSocket server on one address and path; subclasses give `name`,
    `authorize(connection, request)` (None to let the upgrade go on, or the refusal) and
    `stream(connection)` (the protocol's WebSocketStream)."""

    name = "websocket"
    send_timeout_s = 5.0  # a peer that has not taken a message in this long has stopped reading
    handshake_timeout_s = 5.0  # a connection that has not finished its upgrade in this long is dropped
    max_message_bytes = 64 * 1024  # far above a protocol's own messages (Twilio 20 ms is ~400 bytes)

    def __init__(
        self,
        *,
        host: str,
        port: int,
        path: str,
        idle_timeout_s: float,
        max_connections: int,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.bind_host, self.port, self.path = host, port, path
        self.idle_timeout_s, self.max_connections, self.ssl = idle_timeout_s, max_connections, ssl
        self.call_host: CallHost | None = None
        self._server: Server | None = None
        self._streams: set[WebSocketStream] = set()
        self._stopping = False

    # -- what a protocol implements

    def authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        raise NotImplementedError

    def stream(self, connection: ServerConnection) -> WebSocketStream:
        raise NotImplementedError

    # -- Listener

    @property
    def bound_port(self) -> int:
        """The port listened on (the configured one, or the one the system chose for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def start(self, host: CallHost) -> None:
        self.call_host = host
        self._server = await serve(
            self._handle,
            self.bind_host,
            self.port,
            process_request=self._process_request,
            ssl=self.ssl,
            max_size=self.max_message_bytes,
            open_timeout=self.handshake_timeout_s,
            close_timeout=self.send_timeout_s,
            server_header=None,
            logger=logging.getLogger(f"callguard.sources.telephony.{self.name}.websockets"),
        )
        scheme = "wss" if self.ssl else "ws"
        log.info(
            "%s: listening on %s://%s:%d%s", self.name, scheme, self.bind_host, self.bound_port, self.path
        )

    async def stop(self) -> None:
        self._stopping = True
        if self._server is None:
            return
        self._server.close(close_connections=False)  # no new connection from here on
        await asyncio.gather(*(stream.shutdown() for stream in list(self._streams)), return_exceptions=True)
        self._server.close(close_connections=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), self.send_timeout_s * 2)
        log.info("%s: stopped", self.name)

    # -- the upgrade and the connection

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        remote = remote_of(connection)
        if request.path.partition("?")[0] != self.path:
            log.info("%s: %s asked for %r, not %r: 404", self.name, remote, request.path[:200], self.path)
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if self._stopping:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Shutting down\n")
        if len(self._streams) >= self.max_connections:
            log.warning(
                "%s: refused %s: %d streams open, the most this input takes (max_connections)",
                self.name,
                remote,
                len(self._streams),
            )
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Too many streams, try again later\n")
        return self.authorize(connection, request)

    async def _handle(self, connection: ServerConnection) -> None:
        if len(self._streams) >= self.max_connections:  # handshakes that raced past _process_request
            await connection.close(TRY_AGAIN_LATER, "too many streams")
            return
        stream = self.stream(connection)
        self._streams.add(stream)
        try:
            await stream.run()
        except Exception as exc:  # a bug on one stream costs that stream, never the listener
            log.exception("%s: stream failed", stream.label)
            stream.end(f"error: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await connection.close(1011, "internal error")
        finally:
            self._streams.discard(stream)
            if stream.line is not None and not stream.ended:
                stream.end("shutdown" if self._stopping else "closed")
