"""RTP packets (RFC 3550 section 5.1): the fixed header, CSRCs, the header extension, padding.

`parse_rtp` is the only reader of the wire format; anything that is not a version-2 RTP packet with a
whole header raises RtpError, which the receiver counts and logs, never more.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int  # 16 bits
    timestamp: int  # 32 bits, in the payload type's clock
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket:
    if len(data) < _HEADER.size:
        raise RtpError(f"{len(data)} bytes, shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    offset = _HEADER.size + 4 * (first & 0x0F)  # CSRC list
    if first & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            raise RtpError("header extension flag set but the packet ends before it")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding: the last byte counts the padding bytes, itself included
        padding = data[-1]
        if padding == 0 or end - padding < offset:
            raise RtpError(f"padding of {padding} bytes does not fit the packet")
        end -= padding
    if offset > end:
        raise RtpError(
            f"header of {offset} bytes (CSRCs, extension) is longer than the {len(data)}-byte packet"
        )
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80), bytes(data[offset:end]))


def build_rtp(
    packet: RtpPacket, *, csrcs: tuple[int, ...] = (), extension: bytes = b"", padding: int = 0
) -> bytes:
    """Serialise a packet (for tests and the pcap writer); `extension` is whole 32-bit words."""
    first = 0x80 | len(csrcs) | (0x10 if extension else 0) | (0x20 if padding else 0)
    out = bytearray(
        _HEADER.pack(
            first,
            (0x80 if packet.marker else 0) | packet.payload_type,
            packet.sequence & 0xFFFF,
            packet.timestamp & 0xFFFFFFFF,
            packet.ssrc,
        )
    )
    for csrc in csrcs:
        out += struct.pack("!I", csrc)
    if extension:
        if len(extension) % 4:
            raise ValueError("an RTP header extension is whole 32-bit words")
        out += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    out += packet.payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return bytes(out)
