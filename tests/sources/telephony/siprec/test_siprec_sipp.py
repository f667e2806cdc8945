"""The SIPREC listener against SIPp (Debian's sip-tester), a real SIP peer, as the recording client.

SIPp sends the multipart INVITE of scenarios/siprec_call.xml, ACKs, plays the call's two directions
from a pcap that the test builds from a fixture call (abusive_stereo_en_ulaw, μ-law, 7 s with both
speakers), and hangs up. On the other side of the listener, RecordingHost keeps what the contract
hands over: the StreamStart, each role's blocks, the end. SIPp's play_pcap_audio sends through raw
sockets: these tests run as root, as the rest of the suite does here.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest

from callguard.sources.telephony.siprec import SiprecListener
from tests.sources.telephony.siprec.siprec_pcap import Impairment, write_pcap
from tests.sources.telephony.siprec.siprec_peer import (
    SIPP,
    RecordingHost,
    config,
    correlation,
    free_port,
    run_sipp,
    serve,
    sipp_report,
)

pytestmark = [
    pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed"),
    # play_pcap_audio writes through a raw socket (send_packets.c): root or CAP_NET_RAW
    pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's pcap player needs raw sockets (root)"),
]


def test_a_forked_call_is_recorded_with_roles_facts_and_its_audio(
    call_excerpt: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """UDP. The agent's stream is the first m-line: agent_aor_pattern, not agent_side ("second"),
    decides it. The audio of each role is the fixture's, sample for sample, contiguous in stream time."""
    # m-line 1 (label 1) carries the agent, m-line 2 the customer: pcap channel 0 -> port, 1 -> port + 2
    write_pcap(tmp_path / "call.pcap", [call_excerpt["agent"], call_excerpt["customer"]])
    sip_port = free_port(both=True)
    host = RecordingHost()
    listener = SiprecListener(config(sip_port))
    result = serve(
        listener,
        host,
        lambda: run_sipp(
            "siprec_call.xml",
            sip_port,
            tmp_path,
            keys={"pcap": str(tmp_path / "call.pcap")},
            duration_ms=7600,
        ),
    )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    assert len(host.lines) == 1
    line = host.lines[0]
    start = line.start
    assert start.protocol == "siprec" and start.stream_id and start.remote.startswith("127.0.0.1:")
    assert start.facts.call_id == "UCID-0001"  # the original call's id, from the metadata's extension data
    assert (start.facts.customer_name, start.facts.agent_name, start.agent_id) == (
        "Dana Smith",
        "Sam Agent",
        "agent-1042",
    )
    assert start.extra["customer_aor"] == "sip:+15551230001@carrier.example.net"
    assert start.extra["agent_aor"] == "sip:agent-1042@pbx.example.com"
    assert line.ends == ["bye"]
    for role in ("customer", "agent"):
        pcm, rate = line.role_audio(role)
        assert rate == 8000
        assert abs(len(pcm) / rate - 7.0) < 0.03, f"{role}: {len(pcm) / rate:.3f} s"
        assert correlation(pcm, call_excerpt[role]) > 0.999, role
        assert np.array_equal(pcm, call_excerpt[role][: len(pcm)]), role
    # the roles are not swapped: the customer's stream does not look like the agent's audio
    assert correlation(line.role_audio("customer")[0], call_excerpt["agent"]) < 0.5


def test_reordered_lost_and_duplicated_rtp_over_tcp_sip(
    call_excerpt: dict[str, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIP over TCP; the pcap swaps 30 pairs of packets, drops a burst of 5 and 10 scattered ones and
    repeats 8: each role still comes out contiguous and 7 s long, the reordered packets in place."""
    customer = Impairment(
        swap_after=set(range(20, 320, 10)), drop={100, 101, 102, 103, 104}, duplicate={50, 60, 70, 80}
    )
    agent = Impairment(drop=set(range(30, 330, 30)), duplicate={11, 22, 33, 44}, swap_after={200, 240})
    done = write_pcap(
        tmp_path / "impaired.pcap", [call_excerpt["agent"], call_excerpt["customer"]], [agent, customer]
    )
    assert done["swapped"] == 32 and done["dropped"] == 15 and done["duplicated"] == 8
    sip_port = free_port(both=True)
    host = RecordingHost()
    # 250 ms of wait: a swapped packet is 20 ms late on the wire, and a loaded machine may hold SIPp back
    listener = SiprecListener(config(sip_port, jitter_ms=250))
    with caplog.at_level(logging.INFO, logger="callguard.sources.telephony.siprec"):
        result = serve(
            listener,
            host,
            lambda: run_sipp(
                "siprec_call.xml",
                sip_port,
                tmp_path,
                transport="t1",
                keys={"pcap": str(tmp_path / "impaired.pcap")},
                duration_ms=7600,
            ),
        )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    line = host.lines[0]
    assert line.ends == ["bye"]
    for role in ("customer", "agent"):
        pcm, _ = line.role_audio(role)
        assert abs(len(pcm) / 8000 - 7.0) < 0.03, f"{role}: {len(pcm) / 8000:.3f} s"
        assert correlation(pcm, call_excerpt[role]) > 0.95, role
    # the customer's reordered packets came back in place: outside the lost burst, sample for sample
    pcm, _ = line.role_audio("customer")
    assert np.array_equal(pcm[: 100 * 160], call_excerpt["customer"][: 100 * 160])
    assert np.array_equal(pcm[105 * 160 :], call_excerpt["customer"][105 * 160 : len(pcm)])
    ended = [r.getMessage() for r in caplog.records if "ended (bye)" in r.getMessage()]
    assert len(ended) == 1
    assert "customer: 345 packets" in ended[0] and "lost 5" in ended[0] and "duplicates 4" in ended[0]
    assert "agent: 340 packets" in ended[0] and "lost 10" in ended[0]


def short_pcap(call_excerpt: dict[str, np.ndarray], path: Path, seconds: float = 3.0) -> Path:
    n = int(seconds * 8000)
    write_pcap(path, [call_excerpt["agent"][:n], call_excerpt["customer"][:n]])
    return path


def test_reinvite_updates_the_facts_keeps_the_call_and_carries_dtmf(
    call_excerpt: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """A re-INVITE with new metadata (the agent's name changed) keeps the same call and ports; SIPp's
    RFC 4733 digits after it, from an SSRC of their own, reach the line as DTMF."""
    pcap = short_pcap(call_excerpt, tmp_path / "short.pcap")
    sip_port = free_port(both=True)
    host = RecordingHost()
    listener = SiprecListener(config(sip_port))
    result = serve(
        listener,
        host,
        lambda: run_sipp(
            "siprec_reinvite.xml",
            sip_port,
            tmp_path,
            duration_ms=2500,
            keys={"pcap": str(pcap), "agent_name2": "Alex Transfer", "digits": "42#"},
        ),
    )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    assert len(host.lines) == 1, "the re-INVITE opened a second call"
    line = host.lines[0]
    assert [(f.agent_name, f.customer_name, agent) for f, agent in line.updates] == [
        ("Alex Transfer", "Dana Smith", "agent-1042")
    ]
    assert "".join(d for d, _ in line.digits) == "42#"
    origins = re.findall(
        r"o=callguard (\d+) (\d+) IN", (tmp_path / "sipp-messages.log").read_text(errors="replace")
    )
    assert len({sid for sid, _ in origins}) == 1 and sorted({v for _, v in origins}) == ["1", "2"]
    assert all(3.0 <= t < 8.0 for _, t in line.digits), line.digits
    assert line.ends == ["bye"]
    agent, _ = line.role_audio("agent")  # contiguous across the re-INVITE and the DTMF source
    assert correlation(agent[: 3 * 8000], call_excerpt["agent"][: 3 * 8000]) > 0.999


def test_a_stream_that_stops_ends_the_call_with_a_timeout_and_a_bye(
    call_excerpt: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """The pcap ends after 2 s and the SRC says nothing more: after rtp_timeout_s the recorder ends the
    call ("timeout") and sends a BYE, which SIPp's scenario waits for and answers."""
    pcap = short_pcap(call_excerpt, tmp_path / "short.pcap", seconds=2.0)
    sip_port = free_port(both=True)
    host = RecordingHost()
    listener = SiprecListener(config(sip_port, rtp_timeout_s=1.5))
    result = serve(
        listener, host, lambda: run_sipp("siprec_timeout.xml", sip_port, tmp_path, keys={"pcap": str(pcap)})
    )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    line = host.lines[0]
    assert line.ends == ["timeout"]
    for role in ("customer", "agent"):
        assert abs(len(line.role_audio(role)[0]) / 8000 - 2.0) < 0.03


def test_a_call_the_host_refuses_gets_503_with_retry_after(tmp_path: Path) -> None:
    sip_port = free_port(both=True)
    host = RecordingHost()
    host.refuse = "at max_calls (8)"
    listener = SiprecListener(config(sip_port))
    result = serve(listener, host, lambda: run_sipp("siprec_refused.xml", sip_port, tmp_path))
    assert result.returncode == 0, sipp_report(tmp_path, result)
    assert host.refused == 1 and host.lines == []
    messages = (tmp_path / "sipp-messages.log").read_text(errors="replace")
    assert "SIP/2.0 503" in messages and "Retry-After: 10" in messages and "at max_calls (8)" in messages
    assert listener.ports.free_blocks == 20, "the refused call kept its RTP ports"


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_options_keep_alive_is_answered(transport: str, tmp_path: Path) -> None:
    sip_port = free_port(both=True)
    listener = SiprecListener(config(sip_port))
    result = serve(
        listener, RecordingHost(), lambda: run_sipp("options.xml", sip_port, tmp_path, transport=transport)
    )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    messages = (tmp_path / "sipp-messages.log").read_text(errors="replace")
    assert "Supported: siprec" in messages


def test_an_unknown_codec_rejects_its_stream_and_records_the_other(
    call_excerpt: dict[str, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The second m-line offers only Opus: the answer gives it port 0, with a log line naming it, and
    the first stream (the agent's) is recorded alone."""
    pcap = short_pcap(call_excerpt, tmp_path / "short.pcap", seconds=2.0)
    sip_port = free_port(both=True)
    host = RecordingHost()
    listener = SiprecListener(config(sip_port))
    with caplog.at_level(logging.INFO, logger="callguard.sources.telephony.siprec"):
        result = serve(
            listener,
            host,
            lambda: run_sipp(
                "siprec_call.xml",
                sip_port,
                tmp_path,
                duration_ms=2300,
                keys={"pcap": str(pcap), "pt2": "97", "codec2": "opus", "rate2": "48000"},
            ),
        )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    assert any("m-line 2" in r.getMessage() and "OPUS/48000" in r.getMessage() for r in caplog.records)
    messages = (tmp_path / "sipp-messages.log").read_text(errors="replace")
    assert "m=audio 0 RTP/AVP 97 96" in messages
    line = host.lines[0]
    # one stream: a mixed recording is the customer's, whatever the metadata says of its sender
    assert {b.role for b in line.blocks} == {"customer"}
    pcm, _ = line.role_audio("customer")
    assert correlation(pcm, call_excerpt["agent"]) > 0.999


def test_a_g722_stream_is_decoded_at_16_khz(call_excerpt: dict[str, np.ndarray], tmp_path: Path) -> None:
    """The customer's stream offered and sent as G.722 (payload type 9): its blocks are 16 kHz and follow
    the fixture's audio (the codec's 22-sample delay aside)."""
    pytest.importorskip("G722")
    import soxr

    n = 2 * 8000
    wide = soxr.resample(call_excerpt["customer"][:n], 8000, 16000, quality="HQ").astype(np.int16)
    write_pcap(tmp_path / "g722.pcap", [call_excerpt["agent"][:n], wide], codecs=["PCMU", "G722"])
    sip_port = free_port(both=True)
    host = RecordingHost()
    listener = SiprecListener(config(sip_port))
    result = serve(
        listener,
        host,
        lambda: run_sipp(
            "siprec_call.xml",
            sip_port,
            tmp_path,
            duration_ms=2300,
            keys={"pcap": str(tmp_path / "g722.pcap"), "pt2": "9", "codec2": "G722", "rate2": "8000"},
        ),
    )
    assert result.returncode == 0, sipp_report(tmp_path, result)
    assert "a=rtpmap:9 G722/8000" in (tmp_path / "sipp-messages.log").read_text(errors="replace")
    line = host.lines[0]
    pcm, rate = line.role_audio("customer")
    assert rate == 16000 and abs(len(pcm) / rate - 2.0) < 0.03
    assert correlation(pcm[22 + 800 :], wide[800:]) > 0.95
    assert line.role_audio("agent")[1] == 8000
