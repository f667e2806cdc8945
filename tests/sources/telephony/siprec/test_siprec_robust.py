"""Bad input and too much of it: the listener answers each with a clear status and a log line, and a
real call recorded by SIPp beside them comes through whole. The bare UDP client (SipProbe) sends what
SIPp's scenarios cannot: garbage datagrams, odd bodies, a flood of INVITEs, broken RTP."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from callguard.core.config import SiprecConfig
from callguard.core.errors import ConfigError
from callguard.sources.telephony.siprec import SiprecListener
from tests.sources.telephony.siprec.siprec_pcap import write_pcap
from tests.sources.telephony.siprec.siprec_peer import (
    SDP_TWO_STREAMS,
    SIPP,
    RecordingHost,
    SipProbe,
    config,
    free_port,
    multipart_body,
    rtp_range,
    run_sipp,
    serve,
    sipp_report,
)


def status(response: str) -> int:
    return int(response.split(" ", 2)[1]) if response else 0


def probe_session(
    sip_port: int,
    *,
    listener_config: SiprecConfig | None = None,
    host: RecordingHost | None = None,
    script: object = None,
) -> tuple[RecordingHost, object]:
    host = host or RecordingHost()
    listener = SiprecListener(listener_config or config(sip_port))

    async def client() -> object:
        probe = SipProbe(sip_port)
        try:
            return await asyncio.to_thread(script, probe)  # type: ignore[arg-type]
        finally:
            probe.close()

    return host, serve(listener, host, client)


def test_bodies_that_are_no_recording_session_get_clear_refusals(caplog: pytest.LogCaptureFixture) -> None:
    sip_port = free_port(both=True)
    sdp = SDP_TWO_STREAMS.format(port=30000, port2=30002)

    def script(probe: SipProbe) -> dict[str, str]:
        answers = {}
        cid = probe.request("INVITE", content_type="application/sdp", body=sdp.encode())
        answers["plain call"] = probe.final(cid)
        cid = probe.request("INVITE", content_type="text/plain", body=b"hello", headers={"Require": "siprec"})
        answers["text"] = probe.final(cid)
        kind, body = multipart_body("v=0\r\nm=audio nope RTP/AVP 0\r\n")
        cid = probe.request("INVITE", content_type=kind, body=body)
        answers["bad sdp"] = probe.final(cid)
        kind, body = multipart_body(
            SDP_TWO_STREAMS.format(port=30000, port2=30002).replace("RTP/AVP 0", "RTP/AVP 18")
        )
        cid = probe.request("INVITE", content_type=kind, body=body)
        answers["g729 only"] = probe.final(cid)
        cid = probe.request("INVITE", content_type=kind, body=body, headers={"Require": "siprec, 100rel"})
        answers["100rel"] = probe.final(cid)
        return answers

    with caplog.at_level(logging.INFO, logger="callguard.sources.telephony.siprec"):
        host, answers = probe_session(sip_port, script=script)
    assert isinstance(answers, dict)
    assert status(answers["plain call"]) == 488 and "not a recording session" in answers["plain call"]
    assert status(answers["text"]) == 415 and "Accept: application/sdp" in answers["text"]
    assert status(answers["bad sdp"]) == 400 and "SDP: line 2: m= needs" in answers["bad sdp"]
    assert (
        status(answers["g729 only"]) == 488
        and "no audio stream in PCMU, PCMA or G722" in answers["g729 only"]
    )
    assert status(answers["100rel"]) == 420 and "Unsupported: 100rel" in answers["100rel"]
    assert host.lines == []
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "G729/8000" in logged and "415 Unsupported Media Type" in logged


def test_unreadable_metadata_still_records_with_roles_by_agent_side(caplog: pytest.LogCaptureFixture) -> None:
    sip_port = free_port(both=True)

    def script(probe: SipProbe) -> str:
        kind, body = multipart_body(
            SDP_TWO_STREAMS.format(port=30000, port2=30002), metadata="<recording><oops>"
        )
        cid = probe.request("INVITE", content_type=kind, body=body)
        answer = probe.final(cid)
        if status(answer) == 200:
            probe.ack(answer, cid)
        return answer

    with caplog.at_level(logging.INFO, logger="callguard.sources.telephony.siprec"):
        host, answer = probe_session(
            sip_port, listener_config=config(sip_port, agent_side="first"), script=script
        )
    assert isinstance(answer, str) and status(answer) == 200 and "a=recvonly" in answer
    assert any("unreadable metadata" in r.getMessage() for r in caplog.records)
    assert host.lines[0].start.facts.call_id.startswith("probe-")  # the SIP Call-ID: nothing better
    assert host.lines[0].ends == ["shutdown"]


def test_a_peer_outside_allowed_peers_gets_403_on_every_request() -> None:
    sip_port = free_port(both=True)
    kind, body = multipart_body(SDP_TWO_STREAMS.format(port=30000, port2=30002))

    def script(probe: SipProbe) -> list[int]:
        codes = [status(probe.final(probe.request("OPTIONS")))]
        codes.append(status(probe.final(probe.request("INVITE", content_type=kind, body=body))))
        return codes

    host, codes = probe_session(
        sip_port, listener_config=config(sip_port, allowed_peers=["192.0.2.0/24"]), script=script
    )
    assert codes == [403, 403] and host.lines == []


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match="agent_aor_pattern"):
        SiprecListener(SiprecConfig(agent_aor_pattern="(unclosed"))
    with pytest.raises(ConfigError, match="allowed_peers"):
        SiprecListener(SiprecConfig(allowed_peers=["sbc.example.com"]))
    with pytest.raises(ConfigError, match="rtp_ports"):
        SiprecListener(SiprecConfig(rtp_ports=[40000]))


@pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="SIPp's pcap player needs raw sockets (root)")
def test_garbage_a_flood_of_invites_and_broken_rtp_leave_a_real_call_whole(
    call_excerpt: dict[str, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While SIPp records a 4-second call: garbage datagrams, 12 INVITEs at once against max_dialogs=4
    (three more fit beside SIPp's call, the rest get 503 + Retry-After), a CANCEL, and broken RTP
    packets into the real call's ports. The real call's audio is still the fixture's, sample for sample."""
    n = 4 * 8000
    write_pcap(tmp_path / "call.pcap", [call_excerpt["agent"][:n], call_excerpt["customer"][:n]])
    sip_port = free_port(both=True)
    host = RecordingHost()
    listener = SiprecListener(config(sip_port, max_dialogs=4, rtp_ports=rtp_range()))
    kind, body = multipart_body(SDP_TWO_STREAMS.format(port=30000, port2=30002))

    def attack(probe: SipProbe) -> dict[str, object]:
        import socket
        import time

        def sipp_calls() -> list[dict[str, object]]:
            return [c for c in listener.describe() if str(c["remote"]).split(":")[1] != str(probe.port)]

        deadline = time.monotonic() + 10
        while not sipp_calls() and time.monotonic() < deadline:  # SIPp's call is up
            time.sleep(0.05)
        time.sleep(0.3)  # and its RTP flows
        for junk in (
            b"",
            b"\x00" * 40,
            b"INVITE\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            bytes(range(256)) * 4,
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n",
        ):
            probe.send_raw(junk)
        ids = [probe.request("INVITE", content_type=kind, body=body) for _ in range(12)]
        answers = [probe.final(cid) for cid in ids]
        for cid, answer in zip(ids, answers, strict=True):
            if status(answer) == 200:
                probe.ack(answer, cid)
        live = sipp_calls()
        assert live, "SIPp's call was not up"
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for stream in live[0]["streams"].values():  # type: ignore[union-attr]
            for junk in (b"\x00", b"\x40" + bytes(20), b"\x8f" + bytes(13), b"\xa0" + bytes(11) + b"\x00"):
                rtp.sendto(junk, ("127.0.0.1", stream["port"]))
        rtp.close()
        options = status(probe.final(probe.request("OPTIONS")))
        return {
            "answers": [status(a) for a in answers],
            "retry": sum("Retry-After: 10" in a for a in answers),
            "options": options,
        }

    async def both() -> tuple[object, dict[str, object]]:
        real = asyncio.ensure_future(
            run_sipp(
                "siprec_call.xml",
                sip_port,
                tmp_path,
                duration_ms=4600,
                keys={"pcap": str(tmp_path / "call.pcap")},
            )
        )
        probe = SipProbe(sip_port)
        try:
            flood = await asyncio.to_thread(attack, probe)
        finally:
            probe.close()
        return await real, flood

    with caplog.at_level(logging.INFO, logger="callguard.sources.telephony.siprec"):
        result, flood = serve(listener, host, both)
    assert result.returncode == 0, sipp_report(tmp_path, result)  # type: ignore[attr-defined]
    assert sorted(flood["answers"]) == [200] * 3 + [503] * 9, flood  # type: ignore[arg-type]
    assert flood["retry"] == 9 and flood["options"] == 200
    real = next(line for line in host.lines if line.start.facts.call_id == "UCID-0001")
    assert real.ends == ["bye"]
    for role in ("customer", "agent"):
        pcm, _ = real.role_audio(role)
        assert abs(len(pcm) / 8000 - 4.0) < 0.03
        assert np.array_equal(pcm, call_excerpt[role][: len(pcm)]), role
    assert any("bad RTP packet" in r.getMessage() for r in caplog.records)
    assert any("max_dialogs" in r.getMessage() for r in caplog.records)
    ended = next(
        r.getMessage()
        for r in caplog.records
        if "UCID" not in r.getMessage()
        and "ended (bye)" in r.getMessage()
        and real.start.stream_id in r.getMessage()
    )
    assert "bad 4" in ended or "bad 3" in ended


def test_a_cancel_after_the_answer_changes_nothing_and_the_bye_ends_the_call() -> None:
    sip_port = free_port(both=True)
    kind, body = multipart_body(SDP_TWO_STREAMS.format(port=30000, port2=30002))

    def script(probe: SipProbe) -> list[int]:
        cid = probe.request("INVITE", content_type=kind, body=body, branch="z9hG4bK-the-invite")
        answer = probe.final(cid)
        to_tag = answer.split("To:", 1)[1].split("\r\n", 1)[0].split("tag=", 1)[1].strip()
        probe.request("CANCEL", call_id=cid, branch="z9hG4bK-the-invite")
        cancel = probe.final(cid)
        probe.ack(answer, cid)
        probe.request("BYE", call_id=cid, to_tag=to_tag, cseq=2)
        return [status(answer), status(cancel), status(probe.final(cid))]

    host, codes = probe_session(sip_port, script=script)
    assert codes == [200, 200, 200]
    assert [line.ends for line in host.lines] == [["bye"]]


def test_an_sdp_only_recording_without_metadata_takes_its_roles_from_agent_side() -> None:
    """A network-based recorder that sends no metadata (Cisco NBR) but says it is an SRC (Require:
    siprec): recorded, the agent on the `agent_side` stream, the SIP Call-ID as the call id."""
    sip_port = free_port(both=True)
    sdp = SDP_TWO_STREAMS.format(port=30000, port2=30002).encode()

    def script(probe: SipProbe) -> tuple[str, str]:
        cid = probe.request("INVITE", content_type="application/sdp", body=sdp, headers={"Require": "siprec"})
        answer = probe.final(cid)
        probe.ack(answer, cid)
        return cid, answer

    host, (cid, answer) = probe_session(sip_port, script=script)  # type: ignore[misc]
    assert status(answer) == 200 and answer.count("a=recvonly") == 2
    start = host.lines[0].start
    assert start.facts.call_id == cid and start.agent_id == ""
    assert start.extra["roles"] == "agent is the second stream (no metadata)"


def test_over_tcp_the_answer_comes_back_on_the_connection_whatever_the_via_says() -> None:
    """RFC 3261 18.2.2: over TCP the response goes back on the request's connection, even when the Via
    names the peer's listening port (5999 here, where nothing listens) and asks no rport."""
    import socket

    sip_port = free_port(both=True)

    def script(probe: SipProbe) -> str:
        with socket.create_connection(("127.0.0.1", sip_port), timeout=3) as tcp:
            tcp.sendall(
                f"OPTIONS sip:srs@127.0.0.1:{sip_port} SIP/2.0\r\n"
                "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-tcp-1\r\n"
                "From: <sip:sbc@127.0.0.1:5999>;tag=t1\r\nTo: <sip:srs@127.0.0.1>\r\n"
                "Call-ID: tcp-options-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            return tcp.recv(65535).decode(errors="replace")

    _, answer = probe_session(sip_port, script=script)
    assert isinstance(answer, str) and answer.startswith("SIP/2.0 200 OK") and "tcp-options-1" in answer


def test_metadata_alone_in_an_update_or_a_reinvite_updates_the_facts() -> None:
    """RFC 7866 section 6.1.1: new metadata mid-call in an UPDATE, or in a re-INVITE with no offer."""
    from tests.sources.telephony.siprec.siprec_peer import METADATA

    sip_port = free_port(both=True)
    kind, body = multipart_body(SDP_TWO_STREAMS.format(port=30000, port2=30002))
    renamed = METADATA.replace(
        '<nameID aor="sip:agent-7@pbx.example"/>',
        '<nameID aor="sip:agent-8@pbx.example"><name>Robin</name></nameID>',
    )

    def script(probe: SipProbe) -> list[int]:
        cid = probe.request("INVITE", content_type=kind, body=body)
        answer = probe.final(cid)
        to_tag = answer.split("To:", 1)[1].split("\r\n", 1)[0].split("tag=", 1)[1].strip()
        probe.ack(answer, cid)
        probe.request(
            "UPDATE",
            call_id=cid,
            to_tag=to_tag,
            cseq=2,
            content_type="application/rs-metadata+xml",
            body=renamed.encode(),
        )
        codes = [status(answer), status(probe.final(cid))]
        probe.request(
            "INVITE",
            call_id=cid,
            to_tag=to_tag,
            cseq=3,
            content_type="application/rs-metadata",
            body=METADATA.encode(),
        )
        reinvite = probe.final(cid)
        codes.append(status(reinvite))
        codes.append(int("a=recvonly" in reinvite))  # the offer-less re-INVITE gets our last SDP again
        return codes

    host, codes = probe_session(sip_port, script=script)
    assert codes == [200, 200, 200, 1]
    line = host.lines[0]
    assert [(facts.agent_name, agent) for facts, agent in line.updates] == [
        ("Robin", "agent-8"),
        ("", "agent-7"),
    ]
    assert line.start.agent_id == "agent-7"


def test_the_host_factory_builds_the_listener_from_the_whole_config() -> None:
    from callguard.core.config import Config
    from callguard.sources.telephony.siprec import listener

    built = listener(Config())
    assert built.name == "siprec" and built.config == Config().serve.siprec
