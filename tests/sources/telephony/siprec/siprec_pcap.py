"""Build the RTP captures SIPp plays (`play_pcap_audio`) from a fixture call.

A classic pcap file (libpcap 2.4, Ethernet link type) of IPv4/UDP/RTP frames, one μ-law stream per
channel of the call: channel 0 to UDP port BASE, channel 1 to BASE + 2. SIPp sends each frame to
the port of the first m=audio line of the answer plus the frame's offset from the lowest port in the
capture (send_packets.c, `port_diff`), so the recorder's answer must put the second stream two ports
above the first, which its port pool does. Frames leave in file order at their capture times:
"reordered" packets are written out of sequence order with increasing capture times, as a network
would deliver them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callguard.audio.g711 import encode_ulaw
from callguard.sources.telephony.siprec.rtp import RtpPacket, build_rtp

BASE_PORT = 30000
PTIME_S = 0.02
SAMPLES = 160  # 20 ms at 8 kHz


@dataclass
class Impairment:
    """What the network does to one stream, by packet index (0-based)."""

    drop: set[int] = field(default_factory=set)
    swap_after: set[int] = field(default_factory=set)  # packet i goes out after packet i + 1
    duplicate: set[int] = field(default_factory=set)


def _ipv4_udp(payload: bytes, src_port: int, dst_port: int) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,
        64,
        17,
        0,
        bytes([127, 0, 0, 1]),
        bytes([127, 0, 0, 1]),
    )
    words = struct.unpack("!10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    ethernet = b"\x00" * 12 + b"\x08\x00"
    return ethernet + header + udp


def stream_packets(
    pcm: np.ndarray, ssrc: int, *, seq0: int = 0, ts0: int = 0, codec: str = "PCMU"
) -> list[bytes]:
    """RTP packets of 20 ms for one channel: μ-law of 8 kHz PCM (payload type 0), or G.722 of 16 kHz
    PCM (payload type 9, the `G722` package's encoder; 160 bytes and 160 clock ticks a packet)."""
    if codec == "G722":
        import G722

        encoded = G722.G722(16000, 64000).encode(pcm[: len(pcm) // 320 * 320])
        payloads = [encoded[i : i + 160] for i in range(0, len(encoded), 160)]
        pt = 9
    else:
        payloads = [encode_ulaw(pcm[i * SAMPLES : (i + 1) * SAMPLES]) for i in range(len(pcm) // SAMPLES)]
        pt = 0
    packets = []
    for i, payload in enumerate(payloads):
        packet = RtpPacket(pt, (seq0 + i) & 0xFFFF, (ts0 + i * SAMPLES) & 0xFFFFFFFF, ssrc, i == 0, payload)
        packets.append(build_rtp(packet))
    return packets


def write_pcap(
    path: Path,
    channels: list[np.ndarray],
    impairments: list[Impairment] | None = None,
    *,
    seq0: int = 0,
    ts0: int = 0,
    codecs: list[str] | None = None,
    speed: float = 1.0,
) -> dict[str, int]:
    """One stream per channel, interleaved in time; returns what was done to them (counts).
    `speed` > 1 plays the capture faster than real time (capture times divided by it; the RTP
    timestamps, the stream's own clock, unchanged), for a whole call in a short test."""
    impairments = impairments or [Impairment() for _ in channels]
    frames: list[tuple[float, bytes]] = []
    done = {"packets": 0, "dropped": 0, "swapped": 0, "duplicated": 0}
    for number, (pcm, impairment) in enumerate(zip(channels, impairments, strict=True)):
        codec = (codecs or ["PCMU"] * len(channels))[number]
        packets = stream_packets(pcm, 0x1000 + number, seq0=seq0 + 1000 * number, ts0=ts0, codec=codec)
        order = list(range(len(packets)))
        for i in sorted(impairment.swap_after):
            if i + 1 < len(order):
                order[i], order[i + 1] = order[i + 1], order[i]
                done["swapped"] += 1
        port = BASE_PORT + 2 * number
        for slot, index in enumerate(order):
            if index in impairment.drop:
                done["dropped"] += 1
                continue
            # a stream's frames 20 ms apart; the two streams 1 ms apart so that they never tie
            when = (slot * PTIME_S + number * 0.001) / speed
            frames.append((when, _ipv4_udp(packets[index], 40000 + 2 * number, port)))
            done["packets"] += 1
            if index in impairment.duplicate:
                frames.append((when + 0.0005 / speed, _ipv4_udp(packets[index], 40000 + 2 * number, port)))
                done["duplicated"] += 1
    frames.sort(key=lambda f: f[0])
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for when, frame in frames:
            seconds = int(when)
            out.write(
                struct.pack(
                    "<IIII",
                    1_700_000_000 + seconds,
                    round((when - seconds) * 1e6),
                    len(frame),
                    len(frame),
                )
            )
            out.write(frame)
    return done
