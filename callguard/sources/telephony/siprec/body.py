"""The body of a SIPREC INVITE: a multipart/mixed (RFC 5621) of SDP and the recording metadata.

RFC 7866 section 8.1.1: the SDP offer and `application/rs-metadata+xml` (RFC 9806's name; RFC 7866
said `application/rs-metadata`, which SRCs still send) with `Content-Disposition: recording-session`.
A bare `application/sdp` body is a recording session too when the SRC says so (`+sip.src`, `siprec`
option tag): network-based recorders without metadata (Cisco NBR) send that. The MIME parsing is the
standard library's `email` package, not a hand-written splitter.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass

METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")
MAX_METADATA_BYTES = 256 * 1024


class BodyError(ValueError):
    """The body is not what a recording session carries; `status` is the SIP answer it deserves."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RecordingBody:
    sdp: str
    metadata: str = ""  # "" = none in the body
    metadata_type: str = ""


def split_body(content_type: str, body: bytes, *, need_sdp: bool = True) -> RecordingBody:
    """The SDP and metadata of an INVITE's body; BodyError (400, 415 or 488) when it has no SDP.
    With `need_sdp` false (a metadata update in an UPDATE or an offer-less re-INVITE, RFC 7866
    section 6.1.1), a bare metadata body is taken too and `sdp` may be ''."""
    main = content_type.split(";", 1)[0].strip().lower()
    if main == "application/sdp":
        return RecordingBody(_text(body, "application/sdp"))
    if main in METADATA_TYPES and not need_sdp:
        if len(body) > MAX_METADATA_BYTES:
            raise BodyError(413, "Request Entity Too Large", f"{main} body of {len(body)} bytes")
        return RecordingBody("", _text(body, main), main)
    if main != "multipart/mixed":
        raise BodyError(
            415, "Unsupported Media Type", f"body is {main or 'missing'}, expected multipart/mixed"
        )
    if "boundary" not in content_type.lower():
        raise BodyError(400, "Bad Request", "multipart/mixed without a boundary parameter")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(head + body)
    if not message.is_multipart():
        raise BodyError(400, "Bad Request", "multipart/mixed body has no parts (boundary not found)")
    sdp = ""
    metadata = ""
    metadata_type = ""
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type().lower()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if kind == "application/sdp" and not sdp:
            sdp = _text(data, kind)
        elif kind in METADATA_TYPES and not metadata:
            if len(data) > MAX_METADATA_BYTES:
                raise BodyError(413, "Request Entity Too Large", f"{kind} part of {len(data)} bytes")
            metadata = _text(data, kind)
            metadata_type = kind
    if not sdp and need_sdp:
        raise BodyError(488, "Not Acceptable Here", "multipart/mixed body has no application/sdp part")
    return RecordingBody(sdp, metadata, metadata_type)


def _text(data: bytes, kind: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, "Bad Request", f"{kind} part is not UTF-8 (byte {exc.start})") from None
