"""The payloads a recording stream carries: G.711 μ-law and A-law, G.722, RFC 4733 DTMF events.

G.722 is the `G722` package (Sippy Software's libg722, the ITU-T reference code as a C extension):
its RTP clock is 8000 (RFC 3551's historical error) while its audio is 16 kHz, so a 20 ms packet is
160 bytes, 160 clock ticks and 320 samples. Where that package is missing, G.722 is left out of the
SDP answer (`can_decode`), never accepted and then dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from callguard.audio.g711 import decode_alaw, decode_ulaw
from callguard.sources.telephony.siprec.sdp import Codec

try:
    import G722 as _g722
except ImportError:  # the `serve` extra is not installed: G.722 is not offered in answers
    _g722 = None

EVENT_DIGITS = "0123456789*#ABCD"  # RFC 4733 events 0-15


class Decoder(Protocol):
    rate: int  # of the PCM it returns

    def decode(self, payload: bytes) -> np.ndarray: ...


class UlawDecoder:
    rate = 8000

    def decode(self, payload: bytes) -> np.ndarray:
        return decode_ulaw(payload)


class AlawDecoder:
    rate = 8000

    def decode(self, payload: bytes) -> np.ndarray:
        return decode_alaw(payload)


class G722Decoder:
    """Stateful (sub-band ADPCM): one per stream and SSRC."""

    rate = 16000

    def __init__(self) -> None:
        if _g722 is None:
            raise RuntimeError("G.722 needs the G722 package (pip install 'callguard[serve]')")
        self._codec: Any = _g722.G722(16000, 64000)

    def decode(self, payload: bytes) -> np.ndarray:
        return np.asarray(self._codec.decode(payload), dtype=np.int16)


def can_decode(codec: Codec) -> bool:
    if codec.name in ("PCMU", "PCMA"):
        return codec.clock_rate == 8000
    if codec.name == "G722":
        return codec.clock_rate == 8000 and _g722 is not None
    return False


def make_decoder(codec: Codec) -> Decoder:
    if codec.name == "PCMU":
        return UlawDecoder()
    if codec.name == "PCMA":
        return AlawDecoder()
    if codec.name == "G722":
        return G722Decoder()
    raise ValueError(f"no decoder for {codec.name}/{codec.clock_rate}")


@dataclass(frozen=True, slots=True)
class ToneEvent:
    """One RFC 4733 telephone-event payload."""

    event: int
    end: bool
    volume: int
    duration: int  # in RTP clock ticks since the event's timestamp

    @property
    def digit(self) -> str:
        return EVENT_DIGITS[self.event] if self.event < len(EVENT_DIGITS) else ""


def parse_tone_event(payload: bytes) -> ToneEvent:
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload of {len(payload)} bytes, expected 4")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return ToneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)
