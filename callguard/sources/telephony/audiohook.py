"""Genesys Cloud AudioHook Monitor: a conversation's audio streamed to us over a WebSocket
(the AudioHook protocol, version 2, as Genesys' reference implementation speaks it).

Text frames are JSON messages, binary frames audio. Every message has `version` "2", `id` (the
session id, also the `Audiohook-Session-Id` header), `type`, `seq` (1, 2, ... per sender) and
`parameters`; the client's carry `serverseq` (the last server seq it saw) and `position`, ours
`clientseq`. The client (Genesys) drives the session:

    open -> opened   audio frames, ping -> pong, paused / resumed, discarded, update, error
    close -> closed  (we may ask for it with disconnect)

`open` offers media formats; we take PCMU (or L16) at 8 kHz, stereo `["external", "internal"]`
before mono: external is the customer, internal the agent, interleaved a sample each in the order
the channels are listed. Its conversationId, participant (ani, aniName, dnis), language and the
flow's custom attributes (customConfig, inputVariables) are the call's facts. Audio paused or
discarded by the client is filled with silence, so each speaker's time stays the call's.

The upgrade request is signed (RFC 9421, hmac-sha256, keyid = the X-API-KEY, key = that key's
client secret from `keys_file`), covering @request-target, @authority and the audiohook-* and
x-api-key headers, with created (at most 10 s old), expires and a nonce used once: anything else
is answered 401 before the upgrade.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import ssl as ssl_module
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from callguard.audio.g711 import decode_ulaw
from callguard.core.config import AudioHookConfig, Config, read_toml
from callguard.core.errors import ConfigError
from callguard.core.events import Role
from callguard.core.facts import CallFacts
from callguard.sources.telephony.base import CallRefused, Listener, StreamStart
from callguard.sources.telephony.signatures import (
    NonceCache,
    SignaturePolicy,
    SignatureRejected,
    SignedRequest,
    verify_request,
)
from callguard.sources.telephony.websocket import (
    TRY_AGAIN_LATER,
    SpeakerTimeline,
    WebSocketListener,
    WebSocketStream,
    facts_from_attributes,
    remote_of,
    warn_if_others_can_read,
)

log = logging.getLogger("callguard.sources.telephony")

RATE = 8000
CHANNEL_ROLES: dict[str, Role] = {"external": "customer", "internal": "agent"}
# What a signature must cover (the components Genesys signs), and how fresh it must be.
SIGNED_COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
SIGNATURE_POLICY = SignaturePolicy(
    required=SIGNED_COMPONENTS, max_age_s=10.0, skew_s=3.0, require_nonce=True, min_nonce_chars=22
)
_DURATION = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?")
SAMPLE_BYTES = {"PCMU": 1, "L16": 2}
CLOSE_TRANSACTION_S = 1.0  # how long a stopping server waits for the client's close after its disconnect


def load_keys(path: Path) -> dict[str, bytes]:
    """keys_file: a TOML table of API key = client secret (base64), one pair per Genesys integration."""
    document = read_toml(path, "AudioHook keys file ([serve.audiohook] keys_file)")
    keys: dict[str, bytes] = {}
    for api_key, secret in document.items():
        if not isinstance(secret, str):
            raise ConfigError(
                path, api_key, f"must be the client secret as a base64 string, got {type(secret).__name__}"
            )
        try:
            keys[api_key] = base64.b64decode(secret, validate=True)
        except binascii.Error:
            raise ConfigError(path, api_key, "the client secret is not valid base64") from None
        if not keys[api_key]:
            raise ConfigError(path, api_key, "the client secret is empty: unsigned sessions are not accepted")
    if not keys:
        raise ConfigError(path, "", 'no API key: add `"API key" = "client secret (base64)"`')
    warn_if_others_can_read(Path(path), "the AudioHook keys file")
    return keys


def duration_s(value: Any) -> float | None:
    """An ISO 8601 duration as the protocol writes them ("PT1.25S") in seconds; None if it is not one."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if not match or value == "PT":
        return None
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


@dataclass(frozen=True)
class MediaFormat:
    format: str  # "PCMU" or "L16"
    channels: tuple[str, ...]  # "external", "internal", in interleaving order

    def as_parameter(self) -> dict[str, Any]:
        return {"type": "audio", "format": self.format, "channels": list(self.channels), "rate": RATE}


def choose_media(offered: Any) -> MediaFormat | None:
    """The offer we take: 8 kHz audio, PCMU before L16, both channels before one; None if none fits."""
    usable: list[MediaFormat] = []
    for entry in offered if isinstance(offered, list) else []:
        if not isinstance(entry, dict) or entry.get("type") != "audio" or entry.get("rate") != RATE:
            continue
        channels = entry.get("channels")
        if entry.get("format") not in SAMPLE_BYTES or not isinstance(channels, list) or not channels:
            continue
        if len(set(channels)) != len(channels) or not set(channels) <= set(CHANNEL_ROLES):
            continue
        usable.append(MediaFormat(entry["format"], tuple(channels)))
    usable.sort(key=lambda m: (-len(m.channels), m.format != "PCMU"))
    return usable[0] if usable else None


class AudioHookSession(WebSocketStream):
    """One AudioHook session: the protocol's state, its sequence numbers, and the call's line."""

    listener: AudioHookListener

    def __init__(self, listener: AudioHookListener, connection: ServerConnection) -> None:
        super().__init__(listener, connection)
        headers = connection.request.headers if connection.request else {}
        self.session_id = headers.get("Audiohook-Session-Id", "")
        self.organization_id = headers.get("Audiohook-Organization-Id", "")
        self.correlation_id = headers.get("Audiohook-Correlation-Id", "")
        self.label = f"audiohook {self.session_id[:36] or self.remote}"
        self.complain.label = self.label
        self.state = "opening"  # opening -> active <-> paused; disconnected once we ask; closed by the client
        self.seq = 0  # ours
        self.clientseq = 0  # the last the client sent
        self.media: MediaFormat | None = None
        self.timelines: dict[str, SpeakerTimeline] = {}
        self.attributes: dict[str, Any] = {}  # the flow's custom attributes
        self.open_params: dict[str, Any] = {}  # open's parameters, as updates change them
        self.closed = asyncio.Event()  # the close transaction is done

    # -- sending

    async def reply(self, type_: str, parameters: Mapping[str, Any]) -> bool:
        self.seq += 1
        message = {
            "version": "2",
            "type": type_,
            "seq": self.seq,
            "clientseq": self.clientseq,
            "id": self.session_id,
            "parameters": dict(parameters),
        }
        return await self.send(json.dumps(message))

    async def disconnect(self, reason: str, info: str) -> None:
        """Ask the client to end the session (it answers with its close transaction); once is enough."""
        if self.state not in ("closed", "disconnected"):
            self.state = "disconnected"
            await self.reply("disconnect", {"reason": reason, "info": info})

    async def goodbye(self, reason: str) -> None:
        await self.disconnect("error", reason)

    async def shutdown(self) -> None:
        """disconnect "completed", end the call "shutdown", and give the client a second to run its
        close transaction (its close answered closed by the receive loop) before the socket goes."""
        if self.finished and self.ended:
            return
        open_ = self.state in ("active", "paused")
        await self.disconnect("completed", "callguard is shutting down")
        self.end("shutdown")
        if open_:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), CLOSE_TRANSACTION_S)
        await self.close(1001, "callguard is shutting down")

    # -- receiving

    async def on_text(self, message: str) -> None:
        try:
            data = json.loads(message)
        except json.JSONDecodeError as exc:
            self.complain("malformed JSON", f"{exc.msg} at {exc.pos}: {message[:80]!r}")
            return
        problem = _malformed(data)
        if problem:
            self.complain("malformed message", problem)
            return
        if data["id"] != self.session_id:
            self.complain("message of another session id", f"{str(data['id'])[:40]!r}")
            return
        seq, serverseq = data["seq"], data["serverseq"]
        if seq <= self.clientseq:
            self.complain("repeated or old seq (dropped)", f"{data['type']} seq {seq} after {self.clientseq}")
            return
        if seq != self.clientseq + 1:
            self.complain("seq gap", f"{data['type']} seq {seq} after {self.clientseq}")
        self.clientseq = seq
        if serverseq > self.seq:
            self.complain("serverseq ahead of what we sent (dropped)", f"{serverseq} > {self.seq}")
            return
        handler = _HANDLERS.get(data["type"])
        if handler is None:
            self.complain("unknown message type", f"{str(data['type'])[:40]!r}")
            return
        await handler(self, data["parameters"])

    async def on_open(self, params: dict[str, Any]) -> None:
        if self.state != "opening":
            self.complain("second open", "ignored")
            return
        if params.get("organizationId") != self.organization_id:
            log.warning(
                "%s: open's organizationId %r is not the signed audiohook-organization-id %r",
                self.label,
                params.get("organizationId"),
                self.organization_id,
            )
            await self.disconnect("unauthorized", "organizationId does not match audiohook-organization-id")
            return
        media = choose_media(params.get("media"))
        if media is None:
            log.warning(
                "%s: no offered media is PCMU or L16 at 8 kHz: %s", self.label, str(params.get("media"))[:300]
            )
            await self.disconnect("error", "no supported media: PCMU or L16 at 8000 Hz, external/internal")
            return
        self.attributes, self.open_params = _attributes(params), dict(params)
        facts, agent_id, extra = self._facts(params)
        start = StreamStart("audiohook", self.session_id, facts, agent_id, self.remote, extra)
        assert self.listener.call_host is not None
        try:
            line = self.listener.call_host.open(start)
        except CallRefused as refused:
            log.warning("%s: refused by the host: %s", self.label, refused)
            await self.disconnect("error", f"refused: {refused}")
            await self.close(TRY_AGAIN_LATER, f"refused: {refused}")
            return
        self.line, self.media = line, media
        self.timelines = {
            channel: SpeakerTimeline(CHANNEL_ROLES[channel], RATE, line, label=self.label)
            for channel in CHANNEL_ROLES
        }
        opened: dict[str, Any] = {"media": [media.as_parameter()], "startPaused": False}
        if params.get("supportedLanguages") is True:
            opened["supportedLanguages"] = ["en-US", "fr-FR"]
        if await self.reply("opened", opened):
            self.state = "active"
            log.info(
                "%s: conversation %s (agent %s) from %s, %s %s",
                self.label,
                facts.call_id,
                agent_id or "-",
                self.remote,
                media.format,
                "+".join(media.channels),
            )

    def _facts(self, params: dict[str, Any]) -> tuple[CallFacts, str, dict[str, str]]:
        participant = params.get("participant")
        if not isinstance(participant, dict):
            participant = {}
        named: dict[str, Any] = {}
        if isinstance(params.get("conversationId"), str):
            named["call_id"] = params["conversationId"]
        if isinstance(params.get("language"), str):
            named["language"] = params["language"]
        if isinstance(participant.get("aniName"), str) and participant["aniName"]:
            named["customer_name"] = participant["aniName"]
        facts, agent_id, extra = facts_from_attributes(
            named | self.attributes, call_id=self.session_id, source=f"{self.label} open"
        )
        for key in ("id", "ani", "dnis"):
            if isinstance(participant.get(key), str):
                extra[f"participant.{key}"] = participant[key]
        extra |= {"organizationId": self.organization_id, "correlationId": self.correlation_id}
        return facts, agent_id, extra

    async def on_binary(self, message: bytes) -> None:
        if self.state != "active" or self.media is None:
            self.complain(f"audio while {self.state}", f"{len(message)} bytes dropped")
            return
        width = SAMPLE_BYTES[self.media.format]
        frame = width * len(self.media.channels)
        if len(message) % frame:
            self.complain(
                "audio frame not a whole number of samples", f"{len(message)} bytes, {frame} a sample"
            )
            message = message[: len(message) - len(message) % frame]
        if self.media.format == "PCMU":
            samples = decode_ulaw(message)
        else:
            samples = np.frombuffer(message, dtype=">i2").astype(np.int16)
        interleaved = samples.reshape(-1, len(self.media.channels))
        for index, channel in enumerate(self.media.channels):
            self.timelines[channel].push(np.ascontiguousarray(interleaved[:, index]))

    def _fill(self, params: dict[str, Any], what: str) -> None:
        seconds = duration_s(params.get("discarded"))
        if seconds is None:
            self.complain(f"{what} without a valid discarded duration", str(params.get("discarded"))[:40])
            return
        if self.media is not None:
            for channel in self.media.channels:
                self.timelines[channel].silence(round(seconds * RATE))

    async def on_ping(self, params: dict[str, Any]) -> None:
        await self.reply("pong", {})

    async def on_paused(self, params: dict[str, Any]) -> None:
        if self.state == "active":
            self.state = "paused"
            log.info("%s: paused by the client", self.label)

    async def on_resumed(self, params: dict[str, Any]) -> None:
        if self.state == "paused":
            self.state = "active"
            self._fill(params, "resumed")

    async def on_discarded(self, params: dict[str, Any]) -> None:
        self._fill(params, "discarded")

    async def on_update(self, params: dict[str, Any]) -> None:
        if self.line is None:
            self.complain("update before opened", "ignored")
            return
        self.attributes |= _attributes(params)
        self.open_params |= {
            key: params[key] for key in ("conversationId", "participant", "language") if key in params
        }
        facts, agent_id, _ = self._facts(self.open_params)
        self.line.update(facts, agent_id)

    async def on_error(self, params: dict[str, Any]) -> None:
        log.warning(
            "%s: the client reports error %s: %s",
            self.label,
            params.get("code"),
            str(params.get("message"))[:200],
        )

    async def on_close(self, params: dict[str, Any]) -> None:
        reason = str(params.get("reason", "end"))
        await self.reply("closed", {})
        self.state = "closed"
        self.closed.set()
        self.end(
            "closed"
            if reason in ("end", "disconnect", "reconnect")
            else f"error: the client closed ({reason[:40]})"
        )


def _malformed(data: Any) -> str:
    """Why `data` is not a client message ('' when it is one)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("version") != "2":
        return f"version {str(data.get('version'))[:10]!r}, not '2'"
    for key, kind in (("id", str), ("type", str), ("seq", int), ("serverseq", int), ("parameters", dict)):
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key} missing or not a {kind.__name__}"
    if data["seq"] < 1 or data["serverseq"] < 0:
        return f"seq {data['seq']} / serverseq {data['serverseq']} out of range"
    return ""


def _attributes(params: dict[str, Any]) -> dict[str, Any]:
    """The flow's custom attributes: customConfig and inputVariables, the latter winning."""
    merged: dict[str, Any] = {}
    for key in ("customConfig", "inputVariables"):
        if isinstance(params.get(key), dict):
            merged |= params[key]
    return merged


_HANDLERS: dict[str, Callable[[AudioHookSession, dict[str, Any]], Any]] = {
    "open": AudioHookSession.on_open,
    "ping": AudioHookSession.on_ping,
    "paused": AudioHookSession.on_paused,
    "resumed": AudioHookSession.on_resumed,
    "discarded": AudioHookSession.on_discarded,
    "update": AudioHookSession.on_update,
    "error": AudioHookSession.on_error,
    "close": AudioHookSession.on_close,
}


class AudioHookListener(WebSocketListener):
    """[serve.audiohook]: AudioHook Monitor sessions on one address and path, each a call."""

    name = "audiohook"

    def __init__(
        self,
        settings: AudioHookConfig,
        keys: Mapping[str, bytes],
        *,
        ssl: ssl_module.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            host=settings.host,
            port=settings.port,
            path=settings.path,
            idle_timeout_s=settings.idle_timeout_s,
            max_connections=settings.max_connections,
            ssl=ssl,
        )
        self.settings, self._keys, self._clock = settings, dict(keys), clock
        self._nonces = NonceCache()

    @classmethod
    def from_config(cls, config: Config, *, ssl: ssl_module.SSLContext | None = None) -> AudioHookListener:
        """The listener [serve.audiohook] describes, its API keys read from keys_file."""
        settings = config.serve.audiohook
        return cls(settings, load_keys(config.path(settings.keys_file)), ssl=ssl)

    def authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        remote = remote_of(connection)
        signed = SignedRequest.of(
            "GET", request.path, request.headers.raw_items(), "https" if self.ssl else "http"
        )
        api_key = signed.header("x-api-key") or ""
        try:
            if not api_key:
                raise SignatureRejected("invalid", "no X-API-KEY header")
            for name in ("audiohook-organization-id", "audiohook-session-id", "audiohook-correlation-id"):
                if not signed.header(name):
                    raise SignatureRejected("invalid", f"no {name} header")
            verified = verify_request(
                signed,
                lambda keyid: self._keys.get(keyid) if keyid == api_key else None,
                now=self._clock(),
                policy=SIGNATURE_POLICY,
                nonces=self._nonces,
            )
        except SignatureRejected as rejected:
            log.warning("audiohook: refused %s (X-API-KEY %s): %s", remote, api_key[:8] + "...", rejected)
            return connection.respond(HTTPStatus.UNAUTHORIZED, f"Unauthorized: {rejected.code}\n")
        log.debug("audiohook: %s signed by %s...", remote, verified.keyid[:8])
        return None

    def stream(self, connection: ServerConnection) -> WebSocketStream:
        return AudioHookSession(self, connection)


def _keeps_the_contract(listener: AudioHookListener) -> Listener:
    return listener  # mypy's check that AudioHookListener is a base.Listener
