"""SDP offer/answer for a recording session (RFC 4566, RFC 3264, RFC 7866 section 8.1.1).

The SRC offers one send-only `m=audio` line per recorded stream, each with `a=label`. The answer
mirrors every m-line (RFC 3264 keeps their number and order): an accepted audio line gets a local
RTP port, the codecs this recorder decodes and `a=recvonly`; any other line gets port 0 (rejected).
This module only reads and writes text; it opens no socket.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# Static payload types (RFC 3551) by encoding name and clock rate; DECODED says which this recorder takes.
STATIC_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}
DECODED = {"PCMU", "PCMA", "G722"}  # G.722's RTP clock is 8000 by RFC 3551, its audio 16 kHz
EVENTS = "TELEPHONE-EVENT"  # RFC 4733 DTMF


class SdpError(ValueError):
    """The SDP cannot be read: the message names the line and what was expected."""


@dataclass(frozen=True)
class Codec:
    payload_type: int
    name: str  # upper case: PCMU, PCMA, G722, TELEPHONE-EVENT, OPUS...
    clock_rate: int
    fmtp: str = ""


@dataclass
class Media:
    """One m= line of the offer."""

    index: int  # its place among the offer's m-lines (0-based)
    kind: str  # audio, video, image...
    port: int
    proto: str
    formats: list[str]
    address: str = ""  # c= of the line, else of the session
    label: str = ""
    direction: str = "sendrecv"
    codecs: list[Codec] = field(default_factory=list)  # in the offer's order of preference
    ptime_ms: int = 0

    @property
    def audio_codecs(self) -> list[Codec]:
        """The offered codecs this recorder can decode, in the offer's order."""
        return [c for c in self.codecs if c.name in DECODED]

    @property
    def event_codec(self) -> Codec | None:
        return next((c for c in self.codecs if c.name == EVENTS and c.clock_rate == 8000), None)


@dataclass
class Offer:
    origin_address: str
    address: str  # session-level c=, "" if every m-line has its own
    media: list[Media]


def parse_offer(text: str) -> Offer:
    """Read an SDP offer; SdpError for what is not SDP or an m-line this reader cannot place."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError(f"line 1: expected 'v=0', got {lines[0][:40]!r}" if lines else "empty SDP")
    session_address = ""
    origin_address = ""
    media: list[Media] = []
    rtpmaps: dict[int, tuple[str, int]] = {}
    fmtps: dict[int, str] = {}

    def close_media() -> None:
        if not media:
            return
        m = media[-1]
        for fmt in m.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            if pt in rtpmaps:
                name, rate = rtpmaps[pt]
            elif pt in STATIC_TYPES:
                name, rate = STATIC_TYPES[pt]
            else:
                continue  # a dynamic type without rtpmap: nobody can decode it
            m.codecs.append(Codec(pt, name, rate, fmtps.get(pt, "")))
        rtpmaps.clear()
        fmtps.clear()

    for number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number}: expected 'x=...', got {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"line {number}: o= needs 6 fields, got {len(parts)}")
            origin_address = parts[5]
        elif kind == "c":
            address = _connection_address(value, number)
            if media:
                media[-1].address = address
            else:
                session_address = address
        elif kind == "m":
            close_media()
            parts = value.split()
            if len(parts) < 3 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"line {number}: m= needs 'media port proto fmt...', got {value[:60]!r}")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SdpError(f"line {number}: port {port} is not a UDP port")
            media.append(Media(len(media), parts[0].lower(), port, parts[2], parts[3:], session_address))
        elif kind == "a" and media:
            name, _, arg = value.partition(":")
            m = media[-1]
            if name in ("sendonly", "recvonly", "sendrecv", "inactive"):
                m.direction = name
            elif name == "label":
                m.label = arg.strip()
            elif name == "ptime" and arg.strip().isdigit():
                m.ptime_ms = int(arg.strip())
            elif name == "rtpmap":
                _read_rtpmap(arg, number, rtpmaps)
            elif name == "fmtp":
                pt_text, _, params = arg.partition(" ")
                if pt_text.isdigit():
                    fmtps[int(pt_text)] = params.strip()
    close_media()
    for m in media:
        if not m.address and m.port:
            raise SdpError(f"m-line {m.index + 1} ({m.kind} {m.port}): no c= line for it or the session")
    return Offer(origin_address, session_address, media)


def _connection_address(value: str, number: int) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {number}: c= must be 'IN IP4|IP6 address', got {value[:60]!r}")
    address = parts[2].split("/")[0]
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise SdpError(f"line {number}: c= address {address!r} is not an IP address") from None
    return address


def _read_rtpmap(arg: str, number: int, rtpmaps: dict[int, tuple[str, int]]) -> None:
    pt_text, _, encoding = arg.partition(" ")
    pieces = encoding.strip().split("/")
    if not pt_text.isdigit() or len(pieces) < 2 or not pieces[1].isdigit():
        raise SdpError(f"line {number}: a=rtpmap must be 'PT NAME/RATE', got {arg[:60]!r}")
    rtpmaps[int(pt_text)] = (pieces[0].upper(), int(pieces[1]))


@dataclass(frozen=True)
class AnsweredMedia:
    """What the answer says for one offered m-line: a local port and the codecs kept, or rejected."""

    port: int = 0  # 0 = rejected
    codecs: tuple[Codec, ...] = ()


def build_answer(
    offer: Offer, answers: list[AnsweredMedia], local_address: str, session_id: int, version: int = 1
) -> str:
    """The SDP answer: one m-line per offered m-line, in order; a=recvonly on every accepted one
    (a=inactive where the offer paused the stream). `version` goes up by one with each new answer in
    the same session (RFC 3264 section 8)."""
    if len(answers) != len(offer.media):
        raise ValueError(f"{len(answers)} answers for {len(offer.media)} offered m-lines")
    family = "IP6" if ":" in local_address else "IP4"
    lines = [
        "v=0",
        f"o=callguard {session_id} {version} IN {family} {local_address}",
        "s=callguard recording",
        f"c=IN {family} {local_address}",
        "t=0 0",
    ]
    for m, answer in zip(offer.media, answers, strict=True):
        if answer.port == 0 or not answer.codecs:
            # RFC 3264 section 6: a rejected stream keeps its line, with port 0 and the offered formats
            lines.append(f"m={m.kind} 0 {m.proto} {' '.join(m.formats) or '0'}")
            continue
        lines.append(
            f"m=audio {answer.port} {m.proto} {' '.join(str(c.payload_type) for c in answer.codecs)}"
        )
        for c in answer.codecs:
            lines.append(f"a=rtpmap:{c.payload_type} {_rtpmap_name(c)}/{c.clock_rate}")
            if c.fmtp:
                lines.append(f"a=fmtp:{c.payload_type} {c.fmtp}")
        if m.label:
            lines.append(f"a=label:{m.label}")
        # RFC 3264 section 6.1: a send-only offer is answered receive-only; a paused (inactive) one inactive
        lines.append("a=recvonly" if m.direction in ("sendonly", "sendrecv") else "a=inactive")
    return "\r\n".join(lines) + "\r\n"


def _rtpmap_name(codec: Codec) -> str:
    return "telephone-event" if codec.name == EVENTS else codec.name
