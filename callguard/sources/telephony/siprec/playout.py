"""One stream's packets, in sequence order, to contiguous PCM in stream time.

Stream time is counted in RTP clock ticks from the call's first packet (a stream that starts later
starts with silence), so a speaker's blocks follow each other with no hole and no overlap: `t` of a
block is where the previous one ended, and both speakers' `t` are the same call's time. A gap
in the timestamps is filled (silence, or the last packet repeated and faded out when packets were
lost) when it is believable: no longer than the packets lost, or than the time that passed since the
last one (a sender that stops sending in silence, RFC 3551 section 4.1). A timestamp jump that is
neither, or a step back, restarts the mapping without a fill, and so does a new SSRC (after a fill
of the time it took, for a sender that failed over).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from callguard.sources.telephony.siprec.codecs import Decoder, parse_tone_event
from callguard.sources.telephony.siprec.jitter import Lost, Released
from callguard.sources.telephony.siprec.rtp import RtpPacket

log = logging.getLogger(__name__)

CLOCK = 8000  # every payload this recorder takes (G.711, G.722, telephone-event) is clocked at 8000
FADE_S = 0.06  # a lost packet is repeated with a fade to silence over at most this long
MAX_BLOCK_S = 1.0  # a long fill is handed over in blocks of at most this


@dataclass(frozen=True, slots=True)
class Audio:
    t: float  # stream seconds
    pcm: np.ndarray  # int16
    rate: int
    concealed: bool = False


@dataclass(frozen=True, slots=True)
class Digit:
    digit: str
    t: float


@dataclass
class PlayoutStats:
    packets: int = 0
    concealed_s: float = 0.0
    jumps: int = 0
    unknown_payload: int = 0
    bad_events: int = 0


class Playout:
    def __init__(
        self,
        decoders: dict[int, Callable[[], Decoder]],
        event_type: int | None,
        name: str,
        origin: Callable[[float], float] | None = None,
    ) -> None:
        self._factories = decoders
        # the call's time 0 (its first RTP packet on any stream): a stream that starts later starts
        # with that much silence, so that the two speakers' times are one call's time
        self._origin = origin
        self._event_type = event_type
        self._name = name  # for log lines: "call-id/customer"
        self._decoders: dict[int, Decoder] = {}
        self.stats = PlayoutStats()
        self._ssrc: int | None = None
        self._pos = 0  # stream time in clock ticks: where the next block starts
        self._ts = 0  # the RTP timestamp expected at _pos
        self._lost = 0  # packets given up since the last one played
        self._last: np.ndarray = np.zeros(0, dtype=np.int16)
        self._last_rate = 8000
        self._last_ticks = 160
        self._last_time = 0.0
        self._events_seen: set[int] = set()
        self._unknown_logged: set[int] = set()

    def rebind(self, decoders: dict[int, Callable[[], Decoder]], event_type: int | None) -> None:
        """New payload types (a re-INVITE); the stream time and its source go on."""
        self._factories = decoders
        self._event_type = event_type
        self._decoders = {pt: d for pt, d in self._decoders.items() if pt in decoders}

    @property
    def t(self) -> float:
        """Where the stream is: the end of the last block handed over."""
        return self._pos / CLOCK

    def take(self, item: Released, now: float) -> list[Audio | Digit]:
        if isinstance(item, Lost):
            self._lost += item.count
            return []
        if item.payload_type == self._event_type:
            return self._event(item)
        factory = self._factories.get(item.payload_type)
        if factory is None:
            self.stats.unknown_payload += 1
            if item.payload_type not in self._unknown_logged:
                self._unknown_logged.add(item.payload_type)
                log.warning(
                    "siprec %s: RTP payload type %d was not in the SDP answer: dropped",
                    self._name,
                    item.payload_type,
                )
            return []
        out: list[Audio | Digit] = []
        if self._ssrc is None:
            first = self._decoders[item.payload_type] = factory()
            self._last_rate = first.rate
            late = now - self._origin(now) if self._origin is not None else 0.0
            if late > 0.02:
                out += self._fill(int(late * CLOCK), repeat=False)
        if item.ssrc != self._ssrc:
            out += self._new_source(item, now)
        delta = _signed32(item.timestamp - self._ts)
        if delta > 0:
            slack = max(3 * self._last_ticks, int(0.2 * CLOCK))
            believable = max(self._lost * self._last_ticks, int((now - self._last_time) * CLOCK)) + slack
            if delta <= believable:
                out += self._fill(delta, repeat=self._lost > 0 and not item.marker)
            else:
                self.stats.jumps += 1
                log.info(
                    "siprec %s: RTP timestamp jumped %.1f s ahead: stream time goes on without a gap",
                    self._name,
                    delta / CLOCK,
                )
        elif delta < 0:
            self.stats.jumps += 1
            log.info(
                "siprec %s: RTP timestamp went back %.3f s: stream time goes on", self._name, -delta / CLOCK
            )
        decoder = self._decoders.get(item.payload_type)
        if decoder is None:
            decoder = self._decoders[item.payload_type] = factory()
        pcm = decoder.decode(item.payload)
        ticks = len(pcm) * CLOCK // decoder.rate
        out.append(Audio(self._pos / CLOCK, pcm, decoder.rate))
        self.stats.packets += 1
        self._pos += ticks
        self._ts = (item.timestamp + ticks) & 0xFFFFFFFF
        self._lost = 0
        self._last, self._last_rate, self._last_ticks, self._last_time = pcm, decoder.rate, max(ticks, 1), now
        return out

    def _new_source(self, packet: RtpPacket, now: float) -> list[Audio | Digit]:
        out: list[Audio | Digit] = []
        if self._ssrc is not None:
            gap = now - self._last_time - self._last_ticks / CLOCK
            log.info(
                "siprec %s: new SSRC %08x after %08x (%.2f s of silence)",
                self._name,
                packet.ssrc,
                self._ssrc,
                max(gap, 0.0),
            )
            if gap > 0.02:
                out += self._fill(int(gap * CLOCK), repeat=False)
            self._decoders.clear()  # a stateful decoder (G.722) starts again with the new source
        self._ssrc = packet.ssrc
        self._ts = packet.timestamp
        self._lost = 0
        self._events_seen.clear()
        return out

    def _fill(self, ticks: int, *, repeat: bool) -> list[Audio | Digit]:
        rate = self._last_rate
        total = ticks * rate // CLOCK
        pcm = np.zeros(total, dtype=np.int16)
        if repeat and len(self._last):
            fade = min(total, int(FADE_S * rate))
            copies = np.resize(self._last, fade).astype(np.float32)
            pcm[:fade] = (copies * np.linspace(1.0, 0.0, fade, dtype=np.float32)).astype(np.int16)
        out: list[Audio | Digit] = []
        step = int(MAX_BLOCK_S * rate)
        for start in range(0, total, step):
            out.append(
                Audio(self._pos / CLOCK + start / rate, pcm[start : start + step], rate, concealed=True)
            )
        self._pos += ticks
        self.stats.concealed_s += ticks / CLOCK
        return out

    def _event(self, packet: RtpPacket) -> list[Audio | Digit]:
        try:
            event = parse_tone_event(packet.payload)
        except ValueError as exc:
            self.stats.bad_events += 1
            log.info("siprec %s: bad telephone-event packet: %s", self._name, exc)
            return []
        # an event is repeated in several packets with the same timestamp: one digit per timestamp.
        # A zero duration is no event yet (SIPp's start packet; RTP no-op fillers look the same).
        if (
            packet.timestamp in self._events_seen
            or not event.digit
            or (event.duration == 0 and not event.end)
        ):
            return []
        self._events_seen.add(packet.timestamp)
        if len(self._events_seen) > 64:
            self._events_seen = {packet.timestamp}
        if packet.ssrc != self._ssrc:  # events from a source of their own: now, in stream time
            return [Digit(event.digit, self._pos / CLOCK)]
        offset = _signed32(packet.timestamp - self._ts)
        return [Digit(event.digit, max(0.0, (self._pos + offset) / CLOCK))]


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value
