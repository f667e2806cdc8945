"""The jitter buffer (sequence order) and the playout (stream time) on packets made here, with no network."""

from __future__ import annotations

import numpy as np
import pytest

from callguard.audio.g711 import encode_ulaw
from callguard.sources.telephony.siprec.codecs import G722Decoder, UlawDecoder, parse_tone_event
from callguard.sources.telephony.siprec.jitter import JitterBuffer, Lost, Released
from callguard.sources.telephony.siprec.playout import Audio, Digit, Playout
from callguard.sources.telephony.siprec.rtp import RtpPacket


def packet(
    seq: int, *, ts: int | None = None, ssrc: int = 1, pt: int = 0, payload: bytes = b"", marker: bool = False
) -> RtpPacket:
    return RtpPacket(
        pt,
        seq & 0xFFFF,
        (seq * 160 if ts is None else ts) & 0xFFFFFFFF,
        ssrc,
        marker,
        payload or bytes([0xFF]) * 160,
    )


def seqs(released: list[Released]) -> list[int | str]:
    return [f"lost {r.count}" if isinstance(r, Lost) else r.sequence for r in released]


def test_in_order_packets_leave_at_once() -> None:
    buffer = JitterBuffer(0.06)
    assert [seqs(buffer.push(packet(s), 0.02 * s)) for s in range(5)] == [[0], [1], [2], [3], [4]]
    assert buffer.waiting == 0


def test_a_reordered_packet_is_put_back_in_place_within_the_wait() -> None:
    buffer = JitterBuffer(0.06)
    out = buffer.push(packet(10), 0.0) + buffer.push(packet(12), 0.02) + buffer.push(packet(11), 0.04)
    assert seqs(out) == [10, 11, 12]
    assert buffer.stats.reordered == 1 and buffer.stats.lost == 0


def test_a_gap_is_given_up_after_the_wait_and_a_late_packet_is_dropped() -> None:
    buffer = JitterBuffer(0.06)
    out = buffer.push(packet(1), 0.0) + buffer.push(packet(4), 0.02) + buffer.push(packet(5), 0.04)
    assert seqs(out) == [1]
    assert buffer.poll(0.07) == []  # packet 4 has waited 50 ms
    assert seqs(buffer.poll(0.081)) == ["lost 2", 4, 5]
    assert buffer.push(packet(3), 0.1) == []
    assert buffer.stats.late == 1 and buffer.stats.lost == 2


def test_with_no_wait_a_gap_is_given_up_at_once() -> None:
    buffer = JitterBuffer(0.0)
    assert seqs(buffer.push(packet(1), 0.0) + buffer.push(packet(3), 0.0)) == [1, "lost 1", 3]


def test_duplicates_are_dropped_whether_held_or_released() -> None:
    buffer = JitterBuffer(0.06)
    out = (
        buffer.push(packet(1), 0)
        + buffer.push(packet(1), 0)
        + buffer.push(packet(3), 0)
        + buffer.push(packet(3), 0)
    )
    assert seqs(out) == [1]
    assert buffer.stats.duplicates == 2


def test_the_sequence_number_wraps_around() -> None:
    buffer = JitterBuffer(0.06)
    out: list[Released] = []
    for seq in (65533, 65534, 0, 65535, 1, 2):
        out += buffer.push(packet(seq), 0.0)
    assert seqs(out) == [65533, 65534, 65535, 0, 1, 2]
    assert buffer.stats.lost == 0


def test_a_lone_stray_packet_is_dropped_and_a_restart_is_believed_after_two() -> None:
    buffer = JitterBuffer(0.06)
    out = buffer.push(packet(100), 0) + buffer.push(packet(30000), 0) + buffer.push(packet(101), 0)
    assert seqs(out) == [100, 101]
    assert buffer.stats.stray == 1
    out = buffer.push(packet(40000), 0) + buffer.push(packet(40001), 0) + buffer.push(packet(40002), 0)
    assert seqs(out) == [40001, 40002]  # the first of the new numbering is taken for a stray
    assert buffer.stats.restarts == 1


def test_a_new_ssrc_releases_what_the_old_one_left_and_starts_over() -> None:
    buffer = JitterBuffer(0.06)
    out = buffer.push(packet(1), 0) + buffer.push(packet(3), 0) + buffer.push(packet(500, ssrc=2), 0)
    assert seqs(out) == [1, "lost 1", 3, 500]
    assert buffer.stats.ssrc_changes == 1


def test_a_flood_of_gaps_never_holds_more_than_its_bound() -> None:
    buffer = JitterBuffer(10.0)
    buffer.push(packet(0), 0)
    for seq in range(2, 1200, 2):  # every other packet lost, and a wait that never ends
        buffer.push(packet(seq), 0)
    assert buffer.waiting <= 500


# --- playout ----------------------------------------------------------------------------------------


def tone(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 3000).astype(np.int16)


def ulaw_packets(pcm: np.ndarray, *, ssrc: int = 1, seq0: int = 0, ts0: int = 0) -> list[RtpPacket]:
    return [
        RtpPacket(0, seq0 + i, ts0 + 160 * i, ssrc, False, encode_ulaw(pcm[160 * i : 160 * (i + 1)]))
        for i in range(len(pcm) // 160)
    ]


def play(playout: Playout, items: list[tuple[Released, float]]) -> list[Audio | Digit]:
    out: list[Audio | Digit] = []
    for item, now in items:
        out += playout.take(item, now)
    return out


def contiguous(blocks: list[Audio]) -> np.ndarray:
    position = 0.0
    for block in blocks:
        assert block.t == pytest.approx(position, abs=1e-6)
        position += len(block.pcm) / block.rate
    return np.concatenate([b.pcm for b in blocks])


def new_playout() -> Playout:
    return Playout({0: UlawDecoder}, 101, "test/customer")


def test_lost_packets_are_concealed_by_a_fading_repeat_and_time_stays_contiguous() -> None:
    pcm = tone(160 * 10, 1)
    packets = ulaw_packets(pcm)
    items: list[tuple[Released, float]] = [(p, 0.02 * i) for i, p in enumerate(packets[:4])]
    items += [(Lost(2), 0.12), (packets[6], 0.13)] + [(p, 0.02 * (7 + i)) for i, p in enumerate(packets[7:])]
    out = play(new_playout(), items)
    audio = [o for o in out if isinstance(o, Audio)]
    assert [o.concealed for o in audio].count(True) == 1
    samples = contiguous(audio)
    assert len(samples) == len(pcm)
    gap = samples[4 * 160 : 6 * 160].astype(np.int32)
    assert np.abs(gap[:40]).mean() > 5 * np.abs(gap[-40:]).mean()  # faded, not cut
    decoded = UlawDecoder().decode(encode_ulaw(pcm))
    assert np.array_equal(samples[6 * 160 :], decoded[6 * 160 :])


def test_silence_suppression_is_filled_with_silence_for_the_time_that_passed() -> None:
    pcm = tone(160 * 4, 2)
    first, later = ulaw_packets(pcm[:320]), ulaw_packets(pcm[320:], seq0=2, ts0=320 + 8000 * 2)
    later[0] = RtpPacket(0, later[0].sequence, later[0].timestamp, 1, True, later[0].payload)  # talkspurt
    out = play(new_playout(), [(first[0], 0.0), (first[1], 0.02), (later[0], 2.04), (later[1], 2.06)])
    samples = contiguous([o for o in out if isinstance(o, Audio)])
    assert len(samples) == 4 * 160 + 2 * 8000
    assert not samples[320 : 320 + 16000].any()  # silence, no repeated speech


def test_a_timestamp_jump_that_time_does_not_explain_restarts_stream_time_without_a_hole() -> None:
    pcm = tone(160 * 4, 3)
    packets = ulaw_packets(pcm)
    jumped = [RtpPacket(0, p.sequence, p.timestamp + 8000 * 3600, 1, False, p.payload) for p in packets[2:]]
    playout = new_playout()
    out = play(playout, [(packets[0], 0.0), (packets[1], 0.02), (jumped[0], 0.04), (jumped[1], 0.06)])
    assert len(contiguous([o for o in out if isinstance(o, Audio)])) == 4 * 160
    assert playout.stats.jumps == 1


def test_a_new_ssrc_goes_on_after_the_silence_it_took() -> None:
    pcm = tone(160 * 4, 4)
    first = ulaw_packets(pcm[:320], ssrc=1)
    second = ulaw_packets(pcm[320:], ssrc=2, seq0=9000, ts0=123456)
    out = play(new_playout(), [(first[0], 0.0), (first[1], 0.02), (second[0], 1.04), (second[1], 1.06)])
    samples = contiguous([o for o in out if isinstance(o, Audio)])
    assert len(samples) == pytest.approx(4 * 160 + 8000, abs=2)


def test_dtmf_events_give_one_digit_each_at_their_stream_time() -> None:
    audio = ulaw_packets(tone(160 * 5, 5))

    def event(seq: int, ts: int, digit: int, duration: int, end: bool = False) -> RtpPacket:
        payload = bytes([digit, (0x80 if end else 0) | 10]) + duration.to_bytes(2, "big")
        return RtpPacket(101, seq, ts, 1, False, payload)

    items: list[tuple[Released, float]] = [(audio[0], 0.0), (audio[1], 0.02)]
    items += [
        (event(2, 320, 11, 0), 0.04),
        (event(3, 320, 11, 160), 0.06),
        (event(4, 320, 11, 320, True), 0.08),
    ]
    items += [(event(5, 320, 11, 320, True), 0.09), (event(6, 960, 5, 160), 0.1)]
    out = play(new_playout(), items)
    digits = [(o.digit, o.t) for o in out if isinstance(o, Digit)]
    assert digits == [("#", pytest.approx(0.04)), ("5", pytest.approx(0.12))]
    assert parse_tone_event(bytes([1, 0x8A, 0, 160])).end


def test_g722_decodes_a_wideband_stream_at_16_khz() -> None:
    pytest.importorskip("G722")
    import G722

    t = np.arange(16000) / 16000
    wide = (6000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    encoded = G722.G722(16000, 64000).encode(wide)
    packets = [
        RtpPacket(9, i, 160 * i, 7, False, encoded[160 * i : 160 * (i + 1)])
        for i in range(len(encoded) // 160)
    ]
    playout = Playout({9: G722Decoder}, None, "test/agent")
    out = play(playout, [(p, 0.02 * i) for i, p in enumerate(packets)])
    audio = [o for o in out if isinstance(o, Audio)]
    assert {a.rate for a in audio} == {16000}
    samples = contiguous(audio)
    assert len(samples) == 16000 and playout.t == pytest.approx(1.0)
    delay = 22  # the G.722 QMF filter pair's delay, in samples
    assert (
        np.corrcoef(samples[delay + 100 : 15000].astype(float), wide[100 : 15000 - delay].astype(float))[0, 1]
        > 0.99
    )


def test_a_payload_type_not_in_the_answer_is_dropped() -> None:
    playout = new_playout()
    assert playout.take(packet(1, pt=18), 0.0) == []
    assert playout.stats.unknown_payload == 1


def test_a_stream_that_starts_after_the_other_starts_with_that_much_silence() -> None:
    origin = {"t": None}

    def call_origin(now: float) -> float:
        if origin["t"] is None:
            origin["t"] = now
        return origin["t"]

    first = Playout({0: UlawDecoder}, None, "test/customer", origin=call_origin)
    second = Playout({0: UlawDecoder}, None, "test/agent", origin=call_origin)
    a = play(first, [(p, 10.0 + 0.02 * i) for i, p in enumerate(ulaw_packets(tone(480, 6)))])
    b = play(second, [(p, 10.5 + 0.02 * i) for i, p in enumerate(ulaw_packets(tone(480, 7)))])
    assert next(x.t for x in a if isinstance(x, Audio)) == 0.0
    b_audio = [x for x in b if isinstance(x, Audio)]
    assert b_audio[0].concealed and not b_audio[0].pcm.any()
    assert b_audio[1].t == pytest.approx(0.5)  # the agent's first word is half a second into the call
    contiguous(b_audio)


def test_the_port_pool_hands_out_even_pairs_and_takes_them_back() -> None:
    from callguard.sources.telephony.siprec.media import PortPool

    pool = PortPool(40001, 40010)  # an odd first port and a range of 10: pairs at 40002, 40004 ... 40008
    assert pool.take(2) == 40002 and pool.take(2) == 40006
    assert pool.take(2) is None and pool.take(1) is None
    pool.release(40002)
    pool.release(40004)
    assert pool.take(2) == 40002
    assert pool.free_blocks == 0
    for port in (40002, 40004, 40006, 40008):
        pool.release(port)
    taken = [pool.take(1) for _ in range(5)]
    assert taken[:4] == [40006, 40008, 40002, 40004] and taken[4] is None  # after the last one, then around
