"""Recording metadata (RFC 7865, `urn:ietf:params:xml:ns:recording:1`): who speaks on which stream.

Read the way SRCs write it, not only the way the RFC does: elements by local name whatever their
namespace prefix (Sonus writes `tns:`), ids as `participant_id`/`stream_id` (RFC 7865) or `id` (Acme
Packet, Avaya, older drafts), `<send>` in a `participantstreamassoc` or inside the `participant`
itself (older drafts), a participant's address in `nameID@aor` or an `<aor>` child. Vendor extension
data is searched for the original call's id (a `callData/callid`, Avaya's `ucid`, a `Call-ID` header).

The XML comes from the network: the standard library's expat (2.4 and later) refuses entity
expansion bombs and ElementTree never fetches external entities; the body's size is capped before.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


class MetadataError(ValueError):
    """The metadata is not readable XML of a recording."""


@dataclass(frozen=True)
class Participant:
    participant_id: str
    aor: str = ""  # sip:1001@pbx.example.com (as written)
    name: str = ""

    @property
    def user(self) -> str:
        """The AOR's user part: 'sip:1001@pbx' -> '1001'; '' when it has none."""
        address = re.sub(r"^(sips?|tel):", "", self.aor.strip().strip("<>"), flags=re.IGNORECASE)
        user = address.split("@", 1)[0] if "@" in address else ""
        return user.split(";", 1)[0]


@dataclass
class Metadata:
    participants: dict[str, Participant] = field(default_factory=dict)
    stream_labels: dict[str, str] = field(default_factory=dict)  # stream id -> its m-line's a=label
    senders: dict[str, str] = field(default_factory=dict)  # stream id -> participant id sending it
    session_ids: list[str] = field(default_factory=list)  # the recorded sessions' sipSessionID
    call_ids: list[str] = field(default_factory=list)  # the original call's ids from extension data

    def sender_of_label(self, label: str) -> Participant | None:
        """The participant who sends the stream of m-line label `label`, if the metadata says."""
        for stream_id, stream_label in self.stream_labels.items():
            if stream_label == label:
                participant_id = self.senders.get(stream_id, "")
                return self.participants.get(participant_id)
        return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].split(":")[-1].lower()


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _attr(element: ET.Element, *names: str) -> str:
    for name in names:
        value = element.get(name)
        if value:
            return value.strip()
    return ""


CALL_ID_NAMES = {"callid", "call-id", "ucid", "gcid", "callguid", "guid", "conversationid"}


def parse_metadata(xml_text: str) -> Metadata:
    """Participants, streams and who sends what; MetadataError when it is not a recording's XML."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise MetadataError(f"rs-metadata is not well-formed XML: {exc}") from None
    if _local(root.tag) not in ("recording", "recording_metadata"):
        raise MetadataError(f"rs-metadata root is <{_local(root.tag)}>, expected <recording>")
    meta = Metadata()
    for p in _children(root, "participant"):
        participant_id = _attr(p, "participant_id", "id")
        if not participant_id:
            continue
        aor, name = "", ""
        for name_id in _children(p, "nameid"):
            aor = aor or _attr(name_id, "aor")
            name = name or _text(next(iter(_children(name_id, "name")), None))
        aor = aor or _text(next(iter(_children(p, "aor")), None))
        meta.participants[participant_id] = Participant(participant_id, aor, name)
        for send in _children(p, "send"):  # older drafts and Acme: <send> inside <participant>
            meta.senders[_text(send)] = participant_id
    for s in _children(root, "stream"):
        stream_id = _attr(s, "stream_id", "id")
        label = _text(next(iter(_children(s, "label")), None))
        if stream_id and label:
            meta.stream_labels[stream_id] = label
    for assoc in _children(root, "participantstreamassoc"):
        participant_id = _attr(assoc, "participant_id", "id")
        for send in _children(assoc, "send"):
            meta.senders[_text(send)] = participant_id
    for session in _children(root, "session"):
        for sip_session in _children(session, "sipsessionid"):
            meta.session_ids.append(_text(sip_session).split(";", 1)[0])
    for element in root.iter():
        if _local(element.tag) in CALL_ID_NAMES and _text(element):
            meta.call_ids.append(_text(element).split(";", 1)[0])
        elif _local(element.tag) == "header" and element.get("label", "").lower() == "call-id":
            value = _text(next(iter(_children(element, "value")), None))
            if value:
                meta.call_ids.append(value)
    return meta
