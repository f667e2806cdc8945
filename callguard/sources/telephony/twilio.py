"""Twilio Media Streams: a call's audio forked by `<Start><Stream>` (or `<Connect><Stream>`) over a
WebSocket, as JSON messages (https://www.twilio.com/docs/voice/media-streams/websocket-messages).

    connected -> start -> media* (dtmf, mark) -> stop

`start` says who the call is: streamSid, callSid, accountSid, the tracks, the media format (μ-law
8 kHz mono, the only one Media Streams carries) and the TwiML `<Parameter>`s as customParameters,
read as call facts (call_id, agent_id, customer_name, company, agent_name, language, queue...;
anything else is kept for the log). `media` carries 20 ms of base64 μ-law of one track, "inbound"
(the caller: the customer) or "outbound" (the agent), with `timestamp`, the milliseconds of stream
time where it plays: each track's audio is placed there (`SpeakerTimeline`), so a lost frame
becomes silence and a repeated or late one is dropped. Note the wire's quirks: sequenceNumber,
chunk and timestamp are JSON strings; dtmf.track is "inbound_track".

The upgrade request must carry X-Twilio-Signature: the account's auth token signs the URL Twilio
connected to (`public_url` when a proxy stands between, else this server's own), and a request it
does not sign is answered 403 before any upgrade.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import ssl as ssl_module
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from callguard.audio.g711 import decode_ulaw
from callguard.core.config import Config, TwilioConfig
from callguard.core.errors import ConfigError
from callguard.core.events import Role
from callguard.sources.telephony.base import CallRefused, Listener, StreamStart
from callguard.sources.telephony.signatures import twilio_signature_valid
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
TRACK_ROLES: dict[str, Role] = {"inbound": "customer", "outbound": "agent"}
DTMF_DIGITS = set("0123456789*#ABCD")


def read_auth_token(path: Path) -> str:
    """The account's auth token from its file (one line); a clear error naming the file otherwise."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            path, "", "Twilio auth token file not found ([serve.twilio] auth_token_file): put the account's "
            "auth token in it, readable by callguard only",
        ) from None  # fmt: skip
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"Twilio auth token file cannot be read ({exc})") from None
    if not token or len(token.split()) != 1:
        raise ConfigError(path, "", "must hold the Twilio auth token alone, on one line")
    warn_if_others_can_read(Path(path), "the Twilio auth token file")
    return token


class TwilioStream(WebSocketStream):
    """One Media Stream: its messages read into the call's line."""

    listener: TwilioListener

    def __init__(self, listener: TwilioListener, connection: ServerConnection) -> None:
        super().__init__(listener, connection)
        self.stream_sid = ""
        self.timelines: dict[str, SpeakerTimeline] = {}

    async def on_binary(self, message: bytes) -> None:
        self.complain("binary message (Media Streams sends JSON text)", f"{len(message)} bytes")

    async def on_text(self, message: str) -> None:
        try:
            data = json.loads(message)
        except json.JSONDecodeError as exc:
            self.complain("malformed JSON", f"{exc.msg} at {exc.pos}: {message[:80]!r}")
            return
        if not isinstance(data, dict):
            self.complain("message that is not a JSON object", message[:80])
            return
        event = data.get("event")
        match event:
            case "connected":
                log.debug(
                    "%s: connected (protocol %s %s)", self.label, data.get("protocol"), data.get("version")
                )
            case "start":
                await self.on_start(data)
            case "media":
                self.on_media(data)
            case "dtmf":
                self.on_dtmf(data)
            case "mark":
                log.debug("%s: mark %s", self.label, (data.get("mark") or {}).get("name"))
            case "stop":
                self.end("stop")
                await self.close(1000, "stop")
            case _:
                self.complain("unknown event", f"{str(event)[:40]!r}")

    def _same_stream(self, data: dict[str, Any]) -> bool:
        if self.line is None:
            self.complain(f"{data.get('event')} before start", "dropped")
            return False
        if data.get("streamSid", self.stream_sid) != self.stream_sid:
            self.complain("message of another streamSid", f"{str(data.get('streamSid'))[:40]!r}")
            return False
        return True

    async def on_start(self, data: dict[str, Any]) -> None:
        if self.line is not None:
            self.complain("second start", "ignored")
            return
        start = data.get("start")
        if not isinstance(start, dict):
            self.complain("start without its start object", "ignored")
            return
        stream_sid = start.get("streamSid") or data.get("streamSid")
        if not isinstance(stream_sid, str) or not stream_sid:
            self.complain("start without a streamSid", "ignored")
            return
        media_format = start.get("mediaFormat") or {}
        encoding, rate = media_format.get("encoding"), media_format.get("sampleRate")
        if encoding not in ("audio/x-mulaw", None) or rate not in (RATE, None):
            log.warning(
                "%s: stream %s is %s at %s Hz, not μ-law 8 kHz: refused",
                self.label,
                stream_sid,
                encoding,
                rate,
            )
            await self.close(1003, "only audio/x-mulaw at 8000 Hz")
            return
        call_sid = str(start.get("callSid") or "")
        custom = start.get("customParameters") or {}
        if not isinstance(custom, dict):
            self.complain("customParameters that is not an object", "ignored")
            custom = {}
        facts, agent_id, extra = facts_from_attributes(
            custom, call_id=call_sid or stream_sid, source=f"twilio stream {stream_sid} customParameters"
        )
        tracks = start.get("tracks")
        if not isinstance(tracks, list):
            tracks = ["inbound"]
        extra |= {
            "callSid": call_sid,
            "accountSid": str(start.get("accountSid") or ""),
            "tracks": ",".join(map(str, tracks)),
        }
        self.stream_sid = stream_sid
        self.label = f"twilio {stream_sid}"
        self.complain.label = self.label
        assert self.listener.call_host is not None
        start_info = StreamStart("twilio", stream_sid, facts, agent_id, self.remote, extra)
        try:
            line = self.listener.call_host.open(start_info)
        except CallRefused as refused:
            log.warning("%s: refused by the host: %s", self.label, refused)
            await self.close(TRY_AGAIN_LATER, f"refused: {refused}")
            return
        self.line = line
        self.timelines = {
            track: SpeakerTimeline(role, RATE, line, label=self.label) for track, role in TRACK_ROLES.items()
        }
        log.info(
            "%s: call %s (agent %s) from %s, tracks %s",
            self.label,
            facts.call_id,
            agent_id or "-",
            self.remote,
            extra["tracks"],
        )

    def on_media(self, data: dict[str, Any]) -> None:
        if not self._same_stream(data):
            return
        media = data.get("media")
        if not isinstance(media, dict):
            self.complain("media without its media object", "dropped")
            return
        timeline = self.timelines.get(str(media.get("track", "inbound")))
        if timeline is None:
            self.complain("media of an unknown track", f"{str(media.get('track'))[:20]!r}")
            return
        try:
            timestamp_ms = int(media.get("timestamp", ""))
            payload = base64.b64decode(media.get("payload", ""), validate=True)
        except (TypeError, ValueError, binascii.Error) as exc:
            self.complain("media with a bad timestamp or payload", f"{type(exc).__name__}: {exc}")
            return
        if timestamp_ms < 0:
            self.complain("media with a negative timestamp", str(timestamp_ms))
            return
        before = timeline.dropped
        timeline.place(timestamp_ms * RATE // 1000, decode_ulaw(payload))
        if timeline.dropped > before:
            self.complain("repeated or late media (dropped)", f"{timeline.role} at {timestamp_ms} ms")

    def on_dtmf(self, data: dict[str, Any]) -> None:
        if not self._same_stream(data):
            return
        digit = str((data.get("dtmf") or {}).get("digit", ""))
        if digit not in DTMF_DIGITS:
            self.complain("dtmf of an unknown digit", repr(digit[:4]))
            return
        assert self.line is not None
        self.line.dtmf(digit, self.timelines["inbound"].t)

    def end(self, reason: str) -> None:
        if self.line is not None and not self.ended:
            for timeline in self.timelines.values():
                if timeline.filled or timeline.dropped:
                    log.info(
                        "%s: %s track: %.2f s of lost audio filled with silence, %d late or repeated frames",
                        self.label,
                        timeline.role,
                        timeline.filled / RATE,
                        timeline.dropped,
                    )
        super().end(reason)


class TwilioListener(WebSocketListener):
    """[serve.twilio]: Media Streams on one address and path, each stream a call."""

    name = "twilio"

    def __init__(
        self, settings: TwilioConfig, auth_token: str, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        super().__init__(
            host=settings.host,
            port=settings.port,
            path=settings.path,
            idle_timeout_s=settings.idle_timeout_s,
            max_connections=settings.max_connections,
            ssl=ssl,
        )
        self.settings = settings
        self._auth_token = auth_token

    @classmethod
    def from_config(cls, config: Config, *, ssl: ssl_module.SSLContext | None = None) -> TwilioListener:
        """The listener [serve.twilio] describes, its auth token read from auth_token_file."""
        settings = config.serve.twilio
        return cls(settings, read_auth_token(config.path(settings.auth_token_file)), ssl=ssl)

    def signed_url(self, request: Request) -> str:
        """The URL Twilio signed: `public_url` when set, else this server's as the request names it."""
        if self.settings.public_url:
            return self.settings.public_url
        scheme = "wss" if self.ssl else "ws"
        return f"{scheme}://{request.headers.get('Host', '')}{request.path}"

    def authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        url = self.signed_url(request)
        signature = request.headers.get("X-Twilio-Signature")
        if twilio_signature_valid(self._auth_token, url, signature):
            return None
        remote = remote_of(connection)
        problem = "missing" if not signature else "does not sign " + url
        log.warning(
            "twilio: refused %s: X-Twilio-Signature %s (check auth_token_file and public_url)",
            remote,
            problem,
        )
        return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden: X-Twilio-Signature is missing or wrong\n")

    def stream(self, connection: ServerConnection) -> WebSocketStream:
        return TwilioStream(self, connection)


def _keeps_the_contract(listener: TwilioListener) -> Listener:
    return listener  # mypy's check that TwilioListener is a base.Listener
