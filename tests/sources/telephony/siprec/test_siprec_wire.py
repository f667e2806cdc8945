"""The SIPREC wire formats read and written with no network: RTP headers, SDP offer/answer, the
multipart body, the RFC 7865 metadata in the shapes SRCs send, and the roles decided from it."""

from __future__ import annotations

import re

import pytest

from callguard.sources.telephony.siprec.body import BodyError, split_body
from callguard.sources.telephony.siprec.metadata import MetadataError, parse_metadata
from callguard.sources.telephony.siprec.roles import StreamPlan, plan_call
from callguard.sources.telephony.siprec.rtp import RtpError, RtpPacket, build_rtp, parse_rtp
from callguard.sources.telephony.siprec.sdp import AnsweredMedia, Codec, SdpError, build_answer, parse_offer

# --- RTP ---------------------------------------------------------------------------------------------


def test_rtp_header_with_csrcs_extension_and_padding() -> None:
    original = RtpPacket(8, 65535, 0xFFFFFFF0, 0xDEADBEEF, True, b"\x55" * 160)
    data = build_rtp(original, csrcs=(1, 2, 3), extension=b"\x10\x20\x30\x40" * 2, padding=4)
    assert len(data) == 12 + 12 + 4 + 8 + 160 + 4
    assert parse_rtp(data) == original


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x00\x00", "shorter than the 12-byte"),
        (b"\x40" + bytes(11) + b"\xff" * 10, "version 1"),
        (b"\x8f" + bytes(11) + b"\xff" * 10, "longer than"),  # 15 CSRCs announced, 10 bytes follow
        (b"\x90" + bytes(11), "ends before it"),
        (b"\xa0" + bytes(11) + b"\xff\x00", "padding of 0"),
        (b"\xa0" + bytes(11) + b"\x01\x09", "does not fit"),
    ],
)
def test_bad_rtp_packets_raise_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp(data)


# --- SDP ---------------------------------------------------------------------------------------------

OFFER = """v=0
o=SBC 1 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 20000 RTP/AVP 18 8 0 101
a=rtpmap:18 G729/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=label:inbound
a=sendonly
m=video 20002 RTP/AVP 96
a=rtpmap:96 H264/90000
m=audio 20004 RTP/AVP 96
c=IN IP4 192.0.2.11
a=rtpmap:96 opus/48000/2
a=label:outbound
a=inactive
"""


def test_an_offer_is_read_with_its_labels_codecs_and_addresses() -> None:
    offer = parse_offer(OFFER.replace("\n", "\r\n"))
    first, video, second = offer.media
    assert (first.label, first.direction, first.address) == ("inbound", "sendonly", "192.0.2.10")
    assert [c.name for c in first.codecs] == ["G729", "PCMA", "PCMU", "TELEPHONE-EVENT"]
    assert [c.name for c in first.audio_codecs] == ["PCMA", "PCMU"]
    assert first.event_codec == Codec(101, "TELEPHONE-EVENT", 8000, "0-15")
    assert video.kind == "video"
    assert (second.address, second.direction, second.audio_codecs) == ("192.0.2.11", "inactive", [])


def test_the_answer_mirrors_every_m_line_and_receives_only() -> None:
    offer = parse_offer(OFFER)
    pcma, event = Codec(8, "PCMA", 8000), Codec(101, "TELEPHONE-EVENT", 8000, "0-15")
    text = build_answer(
        offer, [AnsweredMedia(40000, (pcma, event)), AnsweredMedia(), AnsweredMedia()], "127.0.0.1", 7
    )
    lines = text.split("\r\n")
    assert [line for line in lines if line.startswith("m=")] == [
        "m=audio 40000 RTP/AVP 8 101",
        "m=video 0 RTP/AVP 96",
        "m=audio 0 RTP/AVP 96",
    ]
    assert "a=rtpmap:101 telephone-event/8000" in lines and "a=fmtp:101 0-15" in lines
    assert "a=label:inbound" in lines and "a=recvonly" in lines and "c=IN IP4 127.0.0.1" in lines
    paused = parse_offer(OFFER.replace("a=sendonly", "a=inactive"))
    assert "a=inactive" in build_answer(
        paused, [AnsweredMedia(40000, (pcma,)), AnsweredMedia(), AnsweredMedia()], "127.0.0.1", 7
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty SDP"),
        ("hello", "expected 'v=0'"),
        ("v=0\r\no=x 1 1 IN IP4\r\n", "o= needs 6 fields"),
        ("v=0\r\nc=IN IP4 pbx.example.com\r\n", "not an IP address"),
        ("v=0\r\nm=audio eighty RTP/AVP 0\r\n", "m= needs"),
        ("v=0\r\nm=audio 99999 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\n", "not a UDP port"),
        ("v=0\r\nm=audio 4000 RTP/AVP 0\r\n", "no c= line"),
        ("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96\r\n", "a=rtpmap must be"),
        ("v=0\r\n\x00garbage\r\n", "expected 'x=...'"),
    ],
)
def test_bad_sdp_names_the_line(text: str, message: str) -> None:
    with pytest.raises(SdpError, match=re.escape(message)):
        parse_offer(text)


# --- body --------------------------------------------------------------------------------------------


def multipart(*parts: tuple[str, str], boundary: str = "b0undary") -> bytes:
    body = ""
    for headers, content in parts:
        body += f"--{boundary}\r\n{headers}\r\n\r\n{content}\r\n"
    return (body + f"--{boundary}--\r\n").encode()


def test_the_multipart_body_gives_its_sdp_and_metadata_in_either_type() -> None:
    for kind in ("application/rs-metadata+xml", "application/rs-metadata"):
        body = multipart(
            ("Content-Type: application/sdp", "v=0"),
            (f"Content-Type: {kind}\r\nContent-Disposition: recording-session", "<recording/>"),
        )
        parts = split_body('multipart/mixed; boundary="b0undary"', body)
        assert (parts.sdp.strip(), parts.metadata.strip(), parts.metadata_type) == (
            "v=0",
            "<recording/>",
            kind,
        )


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"hello", 415),
        ("", b"", 415),
        ("multipart/mixed", b"--x\r\n\r\n", 400),
        ("multipart/mixed;boundary=nothere", b"no parts at all", 400),
        (
            "multipart/mixed;boundary=b0undary",
            multipart(("Content-Type: application/rs-metadata+xml", "<r/>")),
            488,
        ),
        # not UTF-8
        (
            "multipart/mixed;boundary=b0undary",
            multipart(("Content-Type: application/sdp", "v=0")).replace(b"v=0", b"v=0\xff"),
            400,
        ),
    ],
)
def test_a_body_that_is_no_recording_session_gets_its_status(
    content_type: str, body: bytes, status: int
) -> None:
    with pytest.raises(BodyError) as caught:
        split_body(content_type, body)
    assert caught.value.status == status


def test_a_bare_sdp_body_is_taken_as_sdp() -> None:
    assert split_body("application/sdp", b"v=0\r\n").sdp == "v=0\r\n"


# --- metadata: three shapes SRCs write -------------------------------------------------------------------

RFC_STYLE = """<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="S1"><sipSessionID>ab12cd;remote=ef34</sipSessionID></session>
  <participant participant_id="P1"><nameID aor="sip:alice@example.com">
      <name xml:lang="en">Alice</name></nameID></participant>
  <participant participant_id="P2"><nameID aor="sip:2001@pbx.example.com">
      <name>Agent Two</name></nameID></participant>
  <stream stream_id="T1" session_id="S1"><label>10</label></stream>
  <stream stream_id="T2" session_id="S1"><label>11</label></stream>
  <participantstreamassoc participant_id="P1"><send>T1</send><recv>T2</recv></participantstreamassoc>
  <participantstreamassoc participant_id="P2"><send>T2</send><recv>T1</recv></participantstreamassoc>
</recording>"""

# ids in `id`, <send> inside the participant, extension data with the call's UCID (Acme Packet, Avaya)
ACME_STYLE = """<?xml version='1.0' encoding='UTF-8'?>
<recording xmlns='urn:ietf:params:xml:ns:recording'>
  <session id="S9"><extensiondata xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
    <apkt:ucid>00FA0810ABCDEF;encoding=hex</apkt:ucid></extensiondata></session>
  <participant id="A" session="S9"><nameID aor="sip:+33100000000@carrier.example">
      <name>+33100000000</name></nameID>
    <send>X</send></participant>
  <participant id="B" session="S9"><nameID aor="sip:7001@cc.example">
      <name>7001</name></nameID><send>Y</send></participant>
  <stream id="X" session="S9"><label>201</label><mode>separate</mode></stream>
  <stream id="Y" session="S9"><label>202</label><mode>separate</mode></stream>
</recording>"""

# a namespace prefix on every element, and the original call's Call-ID in a callData group (Sonus)
PREFIXED_STYLE = """<?xml version="1.0" encoding="UTF-8"?>
<tns:recording xmlns:tns='urn:ietf:params:xml:ns:recording'>
  <tns:group group_id="G"><callData xmlns='urn:ietf:params:xml:ns:callData'>
      <callid>orig-call-77</callid></callData></tns:group>
  <tns:participant participant_id="P1"><tns:nameID aor="5550001@192.0.2.5">
      <tns:name>Caller</tns:name></tns:nameID></tns:participant>
  <tns:participant participant_id="P2"><tns:nameID aor="6001@192.0.2.6">
      <tns:name> </tns:name></tns:nameID></tns:participant>
  <tns:stream stream_id="S1" session_id="X"><tns:label>1</tns:label></tns:stream>
  <tns:stream stream_id="S2" session_id="X"><tns:label>2</tns:label></tns:stream>
  <tns:participantstreamassoc participant_id="P1"><tns:send>S2</tns:send></tns:participantstreamassoc>
  <tns:participantstreamassoc participant_id="P2"><tns:send>S1</tns:send></tns:participantstreamassoc>
</tns:recording>"""


def test_rfc_metadata_ties_each_label_to_its_sender() -> None:
    meta = parse_metadata(RFC_STYLE)
    alice, agent = meta.sender_of_label("10"), meta.sender_of_label("11")
    assert alice is not None and agent is not None
    assert (alice.aor, alice.name, agent.user) == ("sip:alice@example.com", "Alice", "2001")
    assert meta.session_ids == ["ab12cd"] and meta.call_ids == []


def test_acme_style_metadata_with_sends_inside_participants_and_a_ucid() -> None:
    meta = parse_metadata(ACME_STYLE)
    sender = meta.sender_of_label("202")
    assert sender is not None and sender.user == "7001"
    assert meta.call_ids == ["00FA0810ABCDEF"]


def test_prefixed_metadata_and_a_call_data_call_id() -> None:
    meta = parse_metadata(PREFIXED_STYLE)
    first = meta.sender_of_label("1")
    assert first is not None and first.aor == "6001@192.0.2.6" and first.user == "6001" and first.name == ""
    assert meta.call_ids == ["orig-call-77"]


@pytest.mark.parametrize(
    ("xml", "message"), [("<recording><participant>", "not well-formed"), ("<html/>", "expected <recording>")]
)
def test_bad_metadata_raises(xml: str, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_metadata(xml)


def test_an_entity_expansion_bomb_is_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
        + ']><recording><participant participant_id="p"><nameID aor="&i;"/></participant></recording>'
    )
    with pytest.raises(MetadataError):
        parse_metadata(bomb)


# --- roles ---------------------------------------------------------------------------------------------


def test_the_agent_is_the_participant_whose_aor_matches() -> None:
    meta = parse_metadata(RFC_STYLE)
    plan = plan_call(
        [StreamPlan(0, "10"), StreamPlan(1, "11")],
        meta,
        "sip-call-1",
        agent_side="first",
        agent_pattern=re.compile(r"@pbx\.example\.com$"),
    )
    assert plan.roles == {0: "customer", 1: "agent"}
    assert (plan.facts.customer_name, plan.facts.agent_name, plan.agent_id) == ("Alice", "Agent Two", "2001")
    assert plan.facts.call_id == "ab12cd"  # the recorded call's Session-ID, not the recording's Call-ID
    assert plan.extra["customer_aor"] == "sip:alice@example.com" and plan.extra["sip_call_id"] == "sip-call-1"


@pytest.mark.parametrize(
    ("side", "roles"), [("first", {0: "agent", 1: "customer"}), ("second", {0: "customer", 1: "agent"})]
)
def test_agent_side_decides_when_the_metadata_cannot(side: str, roles: dict[int, str]) -> None:
    for meta, pattern in ((None, None), (parse_metadata(ACME_STYLE), re.compile("nobody"))):
        plan = plan_call(
            [StreamPlan(0, "201"), StreamPlan(1, "202")],
            meta,
            "sip-call-2",
            agent_side=side,
            agent_pattern=pattern,
        )
        assert plan.roles == roles
    assert plan.facts.call_id == "00FA0810ABCDEF"
    no_meta = plan_call(
        [StreamPlan(0, "1"), StreamPlan(1, "2")], None, "sip-call-3", agent_side=side, agent_pattern=None
    )
    assert no_meta.facts.call_id == "sip-call-3" and no_meta.agent_id == ""


def test_new_metadata_in_a_reinvite_changes_the_facts_not_the_roles() -> None:
    meta = parse_metadata(RFC_STYLE.replace("Agent Two", "Agent Three"))
    plan = plan_call(
        [StreamPlan(0, "10"), StreamPlan(1, "11")],
        meta,
        "sip-call-4",
        agent_side="second",
        agent_pattern=re.compile("alice"),
        keep={0: "customer", 1: "agent"},
    )
    assert plan.roles == {0: "customer", 1: "agent"}  # the pattern would have made stream 0 the agent's
    assert (plan.facts.agent_name, plan.agent_id) == ("Agent Three", "2001")
