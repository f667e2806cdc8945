"""The session recording server (SRS, RFC 7866): SIP over UDP and TCP, one CallLine per recording.

SIP itself is `aiosipua` (transactions, dialogs, 2xx retransmission until ACK, CANCEL matching,
hardened parsing) on the host's asyncio loop; this module decides what a recording session is and
answers it: the multipart body, the SDP answer with a port per stream, the metadata's roles and
facts, re-INVITEs (new metadata or media, same call), BYE, CANCEL, OPTIONS, and the refusals:

- 403 to a peer outside `allowed_peers` (loopback only when empty), on every request;
- 415 / 400 / 488 to a body that is not a recording session's, with a Warning that says why;
- 420 to a Require this server does not do; 503 + Retry-After when the host refuses the call
  (CallRefused), when `max_dialogs` are open, or when the RTP range is full.

One peer's bad message is a log line and an answer, never the listener.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from aiosipua import IncomingCall, SipMessage, SipRequest, SipResponse, SipUAS, parse_sdp
from aiosipua.dialog import DialogState
from aiosipua.transport import SipTransport, TcpSipTransport, UdpSipTransport

from callguard.core.config import Config, SiprecConfig
from callguard.core.errors import ConfigError
from callguard.core.events import Role
from callguard.sources.telephony.base import CallHost, CallLine, CallRefused, Listener, StreamStart
from callguard.sources.telephony.siprec.body import BodyError, split_body
from callguard.sources.telephony.siprec.codecs import can_decode
from callguard.sources.telephony.siprec.media import CallMedia, PortPool
from callguard.sources.telephony.siprec.metadata import Metadata, MetadataError, parse_metadata
from callguard.sources.telephony.siprec.roles import StreamPlan, plan_call
from callguard.sources.telephony.siprec.sdp import (
    AnsweredMedia,
    Codec,
    Offer,
    SdpError,
    build_answer,
    parse_offer,
)

log = logging.getLogger(__name__)

USER_AGENT = "callguard-srs"
RETRY_AFTER_S = 10
FORGET_S = 32.0  # a refused INVITE's transaction is kept this long for its ACK (64 x T1)
SUPPORTED = {"siprec"}
ACCEPTED = "application/sdp, application/rs-metadata+xml, application/rs-metadata, multipart/mixed"


@dataclass
class Recording:
    """One recording session: its SIP dialog, its CallLine and its media."""

    call_id: str
    uas: _RecorderUAS
    call: IncomingCall
    remote: str
    line: CallLine | None = None
    media: CallMedia | None = None
    ports: list[int] = field(default_factory=list)
    roles: dict[int, Role] = field(default_factory=dict)  # m-line index -> role
    answer: SipResponse | None = None  # the last final response to its current INVITE
    branch: str = ""
    cseq: int = 0
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    ended: bool = False
    local: str = ""  # the address in our SDP answers
    sdp_version: int = 0  # of our last SDP answer (o= line)
    labels: dict[int, str] = field(default_factory=dict)  # m-line index -> a=label of its stream


class Throttle:
    """One warning per key per `every_s`, with the count of those it held back: a flood of bad input
    costs a log line every few seconds, not one per packet."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, text: str) -> None:
        now = time.monotonic()
        last, held = self._last.get(key, (-1e9, 0))
        if now - last < self.every_s:
            self._last[key] = (last, held + 1)
            return
        if len(self._last) > 10000:
            self._last.clear()
        self._last[key] = (now, 0)
        log.warning(
            "siprec: %s%s", text, f" ({held} more like it in the last {self.every_s:.0f} s)" if held else ""
        )


_unreadable = Throttle()


def _readable(data: bytes, addr: tuple[str, int]) -> bool:
    """Whether aiosipua will parse it: a message it cannot is one short line here (its own log line
    carries a traceback per message)."""
    try:
        SipMessage.parse(data)
    except Exception as exc:
        text = f"unreadable SIP message from {addr[0]}:{addr[1]}: {str(exc)[:120]}"
        _unreadable.warn(f"unreadable {addr[0]}", text)
        return False
    return True


class _RecorderUAS(SipUAS):
    """aiosipua's UAS with INVITE retransmissions answered from the transaction (RFC 3261 17.2.1)
    rather than taken as a new call or a re-INVITE with a stale CSeq."""

    def __init__(self, transport: SipTransport, listener: SiprecListener) -> None:
        super().__init__(transport, user_agent=USER_AGENT)
        self.listener = listener
        self._cancel_pending = self._handlers["CANCEL"]
        self._handlers["CANCEL"] = self._handle_cancel

    def _handle_cancel(self, request: SipRequest, addr: tuple[str, int]) -> None:
        """A CANCEL after the 200 has no effect but its own 200 (RFC 3261 9.2); aiosipua would drop the
        answered call from its table, and the BYE that follows would get 481."""
        call = self._calls.get(request.call_id or "")
        if call is not None and call.dialog.state == DialogState.CONFIRMED:
            self.listener.reply(self, request, 200, "OK")
            return
        self._cancel_pending(request, addr)

    def _handle_invite(self, request: SipRequest, addr: tuple[str, int]) -> None:
        if self.listener.retransmitted(self, request):
            return
        super()._handle_invite(request, addr)

    def restore(self, call: IncomingCall) -> None:
        self._calls[call.call_id] = call

    def forget(self, call_id: str, call: IncomingCall) -> None:
        """Drop a refused or ended call the peer never ACKed or BYEd (its transaction is over)."""
        if self._calls.get(call_id) is call:
            self._calls.pop(call_id, None)
            self._remove_invite_transaction(call.invite)


class _TcpTransport(TcpSipTransport):
    """Answers go back on the connection the request came on (RFC 3261 18.2.2), even when the Via's
    sent-by port is the peer's listening port rather than that connection's source port."""

    def _dispatch(self, data: bytes, addr: tuple[str, int]) -> None:
        if _readable(data, addr):
            super()._dispatch(data, addr)

    def send_reply(self, response: SipResponse) -> None:
        vias = response.via
        if vias:
            host = vias[0].received or vias[0].host
            rport = vias[0].rport or ""
            port = int(rport) if rport.isdigit() else (vias[0].port or 5060)
            if (host, port) not in self._connections:
                same_host = [addr for addr in self._connections if addr[0] == host]
                if same_host:
                    self.send(response, same_host[-1])
                    return
        super().send_reply(response)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: _UdpTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner.received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("siprec: UDP error: %s", exc)


class _UdpTransport(UdpSipTransport):
    """aiosipua's UDP transport with a protocol of its own: aiosipua's asserts that the loop's transport
    is an asyncio.DatagramTransport, which Python 3.11's selector transport is not (an error logged by
    every start, though harmless)."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=self.local_addr
        )
        self._udp_transport = transport

    def received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data.strip() and _readable(data, addr):  # a bare CRLF is a keep-alive (RFC 5626)
            self._dispatch(data, addr)


def _branch(request: SipRequest) -> str:
    vias = request.via
    return (vias[0].branch or "") if vias else ""


def _cseq(request: SipRequest) -> int:
    cseq = request.cseq
    return cseq.seq if cseq is not None else 0


class SiprecListener:
    """`Listener` for SIPREC: `SiprecListener.from_config(config)` (or `SiprecListener(config.serve.siprec)`);
    a bad setting raises ConfigError here, an address in use OSError from `start`."""

    name = "siprec"

    @classmethod
    def from_config(cls, config: Config) -> SiprecListener:
        """The listener [serve.siprec] describes."""
        return cls(config.serve.siprec)

    def __init__(self, config: SiprecConfig) -> None:
        self.config = config
        source = "[serve.siprec]"
        if len(config.rtp_ports) != 2 or not 1024 <= config.rtp_ports[0] < config.rtp_ports[1] <= 65535:
            raise ConfigError(
                source, "rtp_ports", f"must be [first, last] within 1024-65535, got {config.rtp_ports}"
            )
        if config.rtp_ports[1] - config.rtp_ports[0] < 3:
            raise ConfigError(
                source, "rtp_ports", f"needs at least 4 ports (2 streams), got {config.rtp_ports}"
            )
        try:
            self._agent_pattern = re.compile(config.agent_aor_pattern) if config.agent_aor_pattern else None
        except re.error as exc:
            raise ConfigError(
                source, "agent_aor_pattern", f"{config.agent_aor_pattern!r} is not a regex: {exc}"
            ) from None
        self._peers: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for peer in config.allowed_peers:
            try:
                self._peers.append(ipaddress.ip_network(peer, strict=False))
            except ValueError:
                raise ConfigError(
                    source, "allowed_peers", f"{peer!r} is not an address or CIDR block"
                ) from None
        self.ports = PortPool(config.rtp_ports[0], config.rtp_ports[1])
        self._host: CallHost | None = None
        self._uases: list[_RecorderUAS] = []
        self._recordings: dict[str, Recording] = {}
        self._refusals = Throttle()
        self.refused = 0  # requests refused (any status), for the host's figures

    # --- Listener ---------------------------------------------------------------------------------

    async def start(self, host: CallHost) -> None:
        self._host = host
        address = (self.config.host, self.config.port)
        for transport in (_UdpTransport(local_addr=address), _TcpTransport(local_addr=address)):
            uas = _RecorderUAS(transport, self)
            uas.on_invite = lambda call, uas=uas: self._on_invite(uas, call)
            uas.on_reinvite = lambda call, uas=uas: self._on_reinvite(uas, call)
            uas.on_bye = lambda call, request: self._on_bye(call)
            uas.on_cancel = lambda request, addr: self._on_cancel(request)
            uas.on_ack_timeout = lambda call: self._end(
                call.call_id, "error: no ACK for the 200 OK", bye=False
            )
            uas.on_options = lambda request, addr, uas=uas: self._on_options(uas, request)
            uas.on_update = lambda call, request: self._on_update(call, request)
            try:
                await uas.start()
            except OSError:
                await self.stop()
                raise
            self._uases.append(uas)
            screen = transport.on_message
            assert screen is not None
            transport.on_message = lambda msg, addr, uas=uas, inner=screen: self._screen(
                uas, msg, addr, inner
            )
        log.info(
            "siprec: recording server on %s:%d (UDP and TCP), RTP %d-%d", *address, *self.config.rtp_ports
        )

    async def stop(self) -> None:
        for call_id in list(self._recordings):
            self._end(call_id, "shutdown", bye=True)
        await asyncio.sleep(0)  # let the BYEs leave before the sockets close
        for uas in self._uases:
            await uas.stop()
        self._uases.clear()

    # --- what the host may read -------------------------------------------------------------------

    def describe(self) -> list[dict[str, object]]:
        """The open recordings, for the host's health page and the log: who, where, how much."""
        out: list[dict[str, object]] = []
        for r in self._recordings.values():
            if r.ended or r.media is None:
                continue
            streams = {
                s.role: {
                    "port": s.port,
                    "packets": s.packets,
                    "seconds": round(s.playout.t, 2),
                    "lost": s.jitter.stats.lost,
                    "bad": s.bad_packets,
                }
                for s in r.media.streams.values()
            }
            out.append(
                {
                    "call_id": r.call_id,
                    "remote": r.remote,
                    "streams": streams,
                    "seconds": round(time.monotonic() - r.started, 1),
                }
            )
        return out

    # --- screening --------------------------------------------------------------------------------

    def _allowed(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if not self._peers:
            return ip.is_loopback
        return any(ip in net for net in self._peers)

    def _screen(
        self, uas: _RecorderUAS, message: SipRequest | SipResponse, addr: tuple[str, int], inner: Any
    ) -> None:
        if isinstance(message, SipRequest) and not self._allowed(addr[0]):
            self._note_refusal(
                addr[0], f"{message.method} from {addr[0]}:{addr[1]}: not in allowed_peers: 403"
            )
            if message.method != "ACK":
                self.reply(uas, message, 403, "Forbidden", "not an allowed recording client")
            return
        inner(message, addr)

    def _note_refusal(self, key: str, text: str) -> None:
        self.refused += 1
        self._refusals.warn(key, text)

    def reply(
        self,
        uas: SipUAS,
        request: SipRequest,
        status: int,
        reason: str,
        warning: str = "",
        headers: dict[str, str] | None = None,
    ) -> SipResponse:
        response = SipResponse(status_code=status, reason_phrase=reason)
        for via in request.headers.get("via"):
            response.headers.append("Via", via)
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = request.headers.get_first(name)
            if value:
                if name == "To" and status > 100 and ";tag=" not in value:
                    value += ";tag=cg" + format(abs(hash((request.call_id, _branch(request)))) % 10**10, "d")
                response.headers.set_single(name, value)
        self._decorate(response, warning, headers)
        self._send(uas, response)
        return response

    def _decorate(self, response: SipResponse, warning: str, headers: dict[str, str] | None) -> None:
        response.headers.set_single("User-Agent", USER_AGENT)
        if warning:
            text = warning.replace('"', "'").replace("\r", " ").replace("\n", " ")[:200]
            response.headers.set_single("Warning", f'399 {self.config.host} "{text}"')
        for name, value in (headers or {}).items():
            response.headers.set_single(name, value)

    def _send(self, uas: SipUAS, response: SipResponse) -> None:
        try:
            uas.transport.send_reply(response)
        except (RuntimeError, ValueError, OSError) as exc:
            log.warning("siprec: could not send %d %s: %s", response.status_code, response.reason_phrase, exc)

    def _refuse(
        self,
        uas: _RecorderUAS,
        call: IncomingCall,
        status: int,
        reason: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        response = call.dialog.create_response(call.invite, status, reason)
        self._decorate(response, detail, headers)
        self._send(uas, response)
        call.dialog.terminate()
        self._note_refusal(
            f"{call.source_addr[0]} {status}",
            f"INVITE {call.call_id} from {call.source_addr[0]}: {status} {reason}: {detail}",
        )
        recording = self._recordings.get(call.call_id)
        if recording is not None and recording.call is call:
            recording.answer = response
            recording.ended = True
        asyncio.get_running_loop().call_later(FORGET_S, self._forget, uas, call)

    def _forget(self, uas: _RecorderUAS, call: IncomingCall) -> None:
        uas.forget(call.call_id, call)
        recording = self._recordings.get(call.call_id)
        if recording is not None and recording.call is call and recording.ended:
            del self._recordings[call.call_id]

    def retransmitted(self, uas: _RecorderUAS, request: SipRequest) -> bool:
        """An INVITE we already have (same branch and CSeq): answer it again, start nothing."""
        recording = self._recordings.get(request.call_id or "")
        if recording is None or recording.branch != _branch(request) or recording.cseq != _cseq(request):
            return False
        if recording.answer is not None:
            self._send(uas, recording.answer)
        return True

    # --- INVITE -----------------------------------------------------------------------------------

    def _on_options(self, uas: SipUAS, request: SipRequest) -> None:
        self.reply(
            uas,
            request,
            200,
            "OK",
            headers={"Allow": "INVITE, ACK, BYE, CANCEL, OPTIONS", "Accept": ACCEPTED, "Supported": "siprec"},
        )

    def _on_invite(self, uas: _RecorderUAS, call: IncomingCall) -> None:
        request = call.invite
        recording = Recording(
            call.call_id,
            uas,
            call,
            f"{call.source_addr[0]}:{call.source_addr[1]}",
            branch=_branch(request),
            cseq=_cseq(request),
        )
        old = self._recordings.get(call.call_id)
        if old is not None and not old.ended:
            self._refuse(uas, call, 482, "Loop Detected", "a recording with this Call-ID is already open")
            if old.uas is uas:
                uas.restore(old.call)  # aiosipua filed the newcomer under the Call-ID: the open call keeps it
            return
        self._recordings[call.call_id] = recording
        unsupported = self._unsupported(request)
        if unsupported:
            self._refuse(
                uas, call, 420, "Bad Extension", f"Require: {unsupported}", {"Unsupported": unsupported}
            )
            return
        try:
            offer, meta, meta_note = self._read_offer(request, new_call=True)
        except BodyError as exc:
            headers = {"Accept": ACCEPTED} if exc.status == 415 else None
            self._refuse(uas, call, exc.status, exc.reason, exc.detail, headers)
            return
        assert offer is not None  # need_sdp: split_body refused a body without SDP
        answers, streams = self._choose_streams(call.call_id, offer)
        if not streams:
            self._refuse(
                uas, call, 488, "Not Acceptable Here", "no audio stream in PCMU, PCMA or G722 to record"
            )
            return
        active = sum(1 for r in self._recordings.values() if not r.ended)
        if active > self.config.max_dialogs:
            self._refuse(
                uas,
                call,
                503,
                "Service Unavailable",
                f"{self.config.max_dialogs} recordings open (max_dialogs)",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
            return
        base = self.ports.take(len(streams))
        if base is None:
            self._refuse(
                uas,
                call,
                503,
                "Service Unavailable",
                "every RTP port of rtp_ports is in use",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
            return
        recording.ports = [base + 2 * i for i in range(len(streams))]
        recording.task = asyncio.get_running_loop().create_task(
            self._answer(recording, offer, answers, streams, meta, meta_note)
        )

    def _unsupported(self, request: SipRequest) -> str:
        tags = [t.strip().lower() for value in request.headers.get("require") for t in value.split(",")]
        return ", ".join(t for t in tags if t and t not in SUPPORTED)

    def _read_offer(
        self, request: SipRequest, *, new_call: bool
    ) -> tuple[Offer | None, Metadata | None, str]:
        """The offer (None in an in-dialog request that carries only metadata) and the metadata."""
        body = split_body(request.content_type or "", request.body or b"", need_sdp=new_call)
        contact = " ".join(request.headers.get("contact")).lower()
        options = " ".join(request.headers.get("require") + request.headers.get("supported")).lower()
        if new_call and not body.metadata and "+sip.src" not in contact and "siprec" not in options:
            raise BodyError(
                488,
                "Not Acceptable Here",
                "not a recording session: no rs-metadata, no +sip.src in Contact, no siprec option tag",
            )
        try:
            offer = parse_offer(body.sdp) if body.sdp else None
        except SdpError as exc:
            raise BodyError(400, "Bad Request", f"SDP: {exc}") from None
        meta: Metadata | None = None
        note = "no metadata"
        if body.metadata:
            try:
                meta = parse_metadata(body.metadata)
                counts = f"{len(meta.participants)} participants, {len(meta.stream_labels)} streams"
                note = f"{body.metadata_type}: {counts}"
            except MetadataError as exc:
                note = f"unreadable metadata ({exc}): roles by agent_side"
                log.warning("siprec %s: %s", request.call_id, note)
        return offer, meta, note

    def _choose_streams(self, call_id: str, offer: Offer) -> tuple[list[AnsweredMedia], list[StreamPlan]]:
        """Which offered m-lines are recorded (at most two audio lines we can decode); ports come later."""
        answers: list[AnsweredMedia] = []
        streams: list[StreamPlan] = []
        for m in offer.media:
            codecs = [c for c in m.codecs if can_decode(c)]
            why = ""
            if m.kind != "audio":
                why = f"{m.kind}, not audio"
            elif m.port == 0:
                why = "port 0 in the offer"
            elif not m.proto.upper().startswith("RTP/AVP"):
                why = f"transport {m.proto} (this recorder takes RTP/AVP, no SRTP)"
            elif not codecs:
                offered = ", ".join(f"{c.name}/{c.clock_rate}" for c in m.codecs) or " ".join(m.formats)
                why = f"no codec it decodes (PCMU, PCMA, G722) among {offered}"
            elif len(streams) == 2:
                why = "a third audio stream (one customer and one agent are recorded)"
            if why:
                log.warning(
                    "siprec %s: m-line %d (%s, label %s) rejected: %s",
                    call_id,
                    m.index + 1,
                    m.kind,
                    m.label or "none",
                    why,
                )
                answers.append(AnsweredMedia())
                continue
            chosen: list[Codec] = [codecs[0]]
            if m.event_codec is not None:
                chosen.append(m.event_codec)
            answers.append(AnsweredMedia(port=-1, codecs=tuple(chosen)))  # the port is set when allocated
            streams.append(StreamPlan(m.index, m.label))
        return answers, streams

    async def _answer(
        self,
        recording: Recording,
        offer: Offer,
        answers: list[AnsweredMedia],
        streams: list[StreamPlan],
        meta: Metadata | None,
        meta_note: str,
    ) -> None:
        call = recording.call
        media: CallMedia | None = None
        try:
            plan = plan_call(
                streams,
                meta,
                call.call_id,
                agent_side=self.config.agent_side,
                agent_pattern=self._agent_pattern,
            )
            holder: list[CallLine] = []
            media = CallMedia(
                call.call_id,
                _Deferred(holder),
                self.config.jitter_ms / 1000,
                self.config.rtp_timeout_s,
                lambda: self._end(call.call_id, "timeout", bye=True),
            )
            # RTP from the SRC, the addresses of its SDP, or any allowed peer (an SBC's media address may
            # differ from its signalling one); anything else is dropped and counted
            known = {call.source_addr[0]} | {m.address for m in offer.media if m.address}

            def sources(address: str) -> bool:
                return address in known or self._allowed(address)

            by_index = dict(zip((s.index for s in streams), recording.ports, strict=True))
            local = self._local_address(call)
            for stream in streams:
                await media.open(
                    stream.index,
                    plan.roles[stream.index],
                    self.config.host,
                    by_index[stream.index],
                    list(answers[stream.index].codecs),
                    sources,
                )
            if recording.ended:  # CANCELled (or the server stopped) while the sockets were bound
                media.close()
                self._release_ports(recording)
                return
            start = StreamStart(
                "siprec", call.call_id, plan.facts, plan.agent_id, recording.remote, plan.extra
            )
            assert self._host is not None
            try:
                line = self._host.open(start)
            except CallRefused as exc:
                media.close()
                self._release_ports(recording)
                self._refuse(
                    recording.uas,
                    call,
                    503,
                    "Service Unavailable",
                    f"the server refused the call: {exc}",
                    {"Retry-After": str(RETRY_AFTER_S)},
                )
                return
            holder.append(line)
            recording.line, recording.media = line, media
            recording.roles = dict(plan.roles)
            recording.labels = {s.index: s.label for s in streams}
            final = [
                AnsweredMedia(by_index[i], a.codecs) if i in by_index else a for i, a in enumerate(answers)
            ]
            media.paused = all(offer.media[i].direction == "inactive" for i in by_index)
            self._accept(recording, offer, final, local)
            media.start()
        except asyncio.CancelledError:
            if media is not None and recording.media is None:
                media.close()
                self._release_ports(recording)
            raise
        except Exception as exc:
            if media is not None:
                media.close()
            if isinstance(exc, OSError):
                # a port of the block is taken by another program: the pool keeps the block, the next
                # call gets another one
                log.warning(
                    "siprec %s: RTP ports %s cannot be bound (%s): left out of the pool",
                    call.call_id,
                    recording.ports,
                    exc,
                )
                recording.ports = []
            self._release_ports(recording)
            if recording.line is not None:
                recording.line.end(f"error: {exc}")
            if isinstance(exc, OSError):
                self._refuse(
                    recording.uas, call, 503, "Service Unavailable", f"RTP port: {exc}", {"Retry-After": "1"}
                )
            else:
                log.exception("siprec %s: the answer failed", call.call_id)
                self._refuse(
                    recording.uas, call, 500, "Server Internal Error", f"{type(exc).__name__}: {exc}"
                )
            return
        roles = ", ".join(f"m{i + 1}={role}:{by_index[i]}" for i, role in plan.roles.items())
        log.info(
            "siprec %s from %s: recording (%s; %s; %s) call_id=%s agent=%s",
            call.call_id,
            recording.remote,
            roles,
            plan.reason,
            meta_note,
            plan.facts.call_id,
            plan.agent_id or "-",
        )

    def _accept(self, recording: Recording, offer: Offer, answers: list[AnsweredMedia], local: str) -> None:
        call = recording.call
        recording.sdp_version += 1
        session_id = int(recording.started * 1000) % 10**9
        text = build_answer(offer, answers, local, session_id, recording.sdp_version)
        call.advertised_addr = (local, self.config.port)  # the Contact: not 0.0.0.0 on a wildcard bind
        call.accept(parse_sdp(text))
        # kept to answer a retransmission of this INVITE (RFC 3261 17.2.1) as the first answer went
        recording.answer = call.dialog.create_response(
            call.invite, 200, "OK", contact=f"<sip:{local}:{self.config.port}>"
        )
        recording.answer.text = text
        recording.answer.headers.set_single("Content-Type", "application/sdp")
        recording.local = local

    def _local_address(self, call: IncomingCall) -> str:
        """The address this host reaches the SRC from: the bound one, or for a wildcard bind the one the
        kernel routes from (a connected UDP socket sends nothing)."""
        if self.config.host not in ("0.0.0.0", "::", ""):
            return self.config.host
        family = socket.AF_INET6 if ":" in call.source_addr[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((call.source_addr[0], call.source_addr[1] or 5060))
            return str(probe.getsockname()[0])

    def _release_ports(self, recording: Recording) -> None:
        for port in recording.ports:
            self.ports.release(port)
        recording.ports = []

    # --- in-dialog --------------------------------------------------------------------------------

    def _on_reinvite(self, uas: _RecorderUAS, call: IncomingCall) -> None:
        recording = self._recordings.get(call.call_id)
        if recording is None or recording.ended or recording.media is None or recording.line is None:
            self.reply(uas, call.invite, 481, "Call/Transaction Does Not Exist")
            return
        recording.branch, recording.cseq = _branch(call.invite), _cseq(call.invite)
        recording.answer = None  # a retransmission of this re-INVITE waits for its own answer
        recording.task = asyncio.get_running_loop().create_task(self._reanswer_safely(recording))

    async def _reanswer_safely(self, recording: Recording) -> None:
        try:
            await self._reanswer(recording)
        except Exception as exc:  # one bad re-INVITE costs its answer, not the call
            log.exception("siprec %s: the re-INVITE's answer failed", recording.call_id)
            response = recording.call.dialog.create_response(
                recording.call.invite, 500, "Server Internal Error"
            )
            self._decorate(response, f"{type(exc).__name__}: {exc}", None)
            self._send(recording.uas, response)

    async def _reanswer(self, recording: Recording) -> None:
        call, uas, media, line = recording.call, recording.uas, recording.media, recording.line
        assert media is not None and line is not None
        request = call.invite
        if not request.body:  # a session refresh or an offer-less re-INVITE: the same answer again
            self._accept_again(recording)
            return
        try:
            offer, meta, meta_note = self._read_offer(request, new_call=False)
        except BodyError as exc:
            response = call.dialog.create_response(request, exc.status, exc.reason)
            self._decorate(response, exc.detail, None)
            self._send(uas, response)
            recording.answer = response
            log.warning(
                "siprec %s: re-INVITE refused: %d %s: %s (the call goes on)",
                call.call_id,
                exc.status,
                exc.reason,
                exc.detail,
            )
            return
        if offer is None:  # metadata only: new facts, the same media and answer
            self._update_facts(recording, meta, meta_note)
            self._accept_again(recording)
            return
        answers, streams = self._choose_streams(call.call_id, offer)
        kept = {s.index for s in streams}
        for index in [i for i in media.streams if i not in kept]:
            log.info(
                "siprec %s: re-INVITE removed m-line %d (%s)", call.call_id, index + 1, recording.roles[index]
            )
            port = media.streams[index].port
            media.close_stream(index)
            self.ports.release(port)
            recording.ports.remove(port)  # released once: the pool may give it to another call now
        final: list[AnsweredMedia] = list(answers)
        for stream in streams:
            codecs = list(answers[stream.index].codecs)
            if stream.index in media.streams:
                media.recodec(stream.index, codecs)
                final[stream.index] = AnsweredMedia(media.streams[stream.index].port, tuple(codecs))
            else:
                log.warning(
                    "siprec %s: re-INVITE adds m-line %d: not recorded (roles are set at the start)",
                    call.call_id,
                    stream.index + 1,
                )
                final[stream.index] = AnsweredMedia()
        self._update_facts(recording, meta, meta_note, offer)
        media.paused = bool(media.streams) and all(
            offer.media[i].direction == "inactive" for i in media.streams
        )
        if media.paused:
            log.info("siprec %s: the SRC paused the recording (inactive streams)", call.call_id)
        self._accept(recording, offer, final, recording.local)

    def _update_facts(
        self, recording: Recording, meta: Metadata | None, note: str, offer: Offer | None = None
    ) -> None:
        """New metadata in the dialog: the facts and the agent change, each stream keeps its role."""
        if meta is None or recording.media is None or recording.line is None:
            return
        labels = (
            {i: offer.media[i].label for i in recording.media.streams}
            if offer is not None
            else recording.labels
        )
        kept = [StreamPlan(i, labels.get(i, "")) for i in sorted(recording.media.streams)]
        if not kept:
            return
        plan = plan_call(
            kept,
            meta,
            recording.call_id,
            agent_side=self.config.agent_side,
            agent_pattern=self._agent_pattern,
            keep=recording.roles,
        )
        recording.line.update(plan.facts, plan.agent_id)
        log.info(
            "siprec %s: new metadata (%s) call_id=%s agent=%s",
            recording.call_id,
            note,
            plan.facts.call_id,
            plan.agent_id or "-",
        )

    def _on_update(self, call: IncomingCall, request: SipRequest) -> Any:
        """UPDATE (RFC 3311): the SRC's way to send new metadata mid-call (RFC 7866 section 6.1.1).
        An SDP offer in it is answered with the current answer: the media stays as it is."""
        recording = self._recordings.get(call.call_id)
        if recording is None or recording.ended or not request.body:
            return None
        try:
            _, meta, note = self._read_offer(request, new_call=False)
        except BodyError as exc:
            log.warning("siprec %s: UPDATE body ignored: %s", call.call_id, exc)
            return None
        self._update_facts(recording, meta, note)
        return call.sdp_answer if (request.content_type or "").startswith("application/sdp") else None

    def _accept_again(self, recording: Recording) -> None:
        call = recording.call
        if call.sdp_answer is not None:
            call.accept(call.sdp_answer)
        else:
            call.accept()

    def _on_bye(self, call: IncomingCall) -> None:
        self._end(call.call_id, "bye", bye=False)

    def _on_cancel(self, request: SipRequest) -> None:
        recording = self._recordings.get(request.call_id or "")
        if recording is not None and recording.line is None and not recording.ended:
            # aiosipua answered 200 and 487; the answer task sees `ended` and closes what it bound
            log.info("siprec %s: CANCELled before the answer", recording.call_id)
            recording.ended = True
            del self._recordings[recording.call_id]

    def _end(self, call_id: str, reason: str, *, bye: bool) -> None:
        recording = self._recordings.pop(call_id, None)
        if recording is None or recording.ended:
            return
        recording.ended = True
        if recording.task is not None and not recording.task.done() and recording.line is None:
            recording.task.cancel()
        if bye and recording.call.dialog.state == DialogState.CONFIRMED:
            try:
                recording.call.hangup()
            except (RuntimeError, OSError) as exc:
                log.info("siprec %s: BYE not sent: %s", call_id, exc)
        recording.uas.forget(call_id, recording.call)
        media = recording.media
        summary = ""
        if media is not None:
            summary = "; ".join(s.summary() for s in media.streams.values())
            media.close()  # what the jitter buffers still hold goes out before the end
        self._release_ports(recording)
        if recording.line is not None:
            recording.line.end(reason)
            log.info(
                "siprec %s: ended (%s) after %.1f s: %s",
                call_id,
                reason,
                time.monotonic() - recording.started,
                summary or "no media",
            )


class _Deferred:
    """The CallLine a call's media writes to, known only once the host opened it (after the sockets)."""

    def __init__(self, holder: list[CallLine]) -> None:
        self._holder = holder

    def audio(self, block: Any) -> None:
        if self._holder:
            self._holder[0].audio(block)

    def dtmf(self, digit: str, t: float) -> None:
        if self._holder:
            self._holder[0].dtmf(digit, t)

    def update(self, facts: Any, agent_id: str = "") -> None:
        if self._holder:
            self._holder[0].update(facts, agent_id)

    def end(self, reason: str) -> None:
        if self._holder:
            self._holder[0].end(reason)


def _keeps_the_contract(listener: SiprecListener) -> Listener:
    return listener  # mypy's check that SiprecListener is a base.Listener
