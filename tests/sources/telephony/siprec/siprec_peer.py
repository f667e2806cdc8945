"""The two sides around the SIPREC listener in its tests: SIPp as the recording client, and a CallHost
that keeps what it is given (the host's side of the contract, written for the tests: it records,
it does not pretend to be a peer).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from callguard.core.config import SiprecConfig
from callguard.core.events import AudioBlock
from callguard.core.facts import CallFacts
from callguard.sources.telephony.base import CallRefused, StreamStart
from callguard.sources.telephony.siprec import SiprecListener

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp")


@dataclass
class RecordedLine:
    start: StreamStart
    blocks: list[AudioBlock] = field(default_factory=list)
    digits: list[tuple[str, float]] = field(default_factory=list)
    updates: list[tuple[CallFacts, str]] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)

    def audio(self, block: AudioBlock) -> None:
        self.blocks.append(block)

    def dtmf(self, digit: str, t: float) -> None:
        self.digits.append((digit, t))

    def update(self, facts: CallFacts, agent_id: str = "") -> None:
        self.updates.append((facts, agent_id))

    def end(self, reason: str) -> None:
        self.ends.append(reason)

    def role_blocks(self, role: str) -> list[AudioBlock]:
        return [b for b in self.blocks if b.role == role]

    def role_audio(self, role: str) -> tuple[np.ndarray, int]:
        """A role's PCM laid out by block.t; raises if the blocks leave a hole or overlap."""
        blocks = self.role_blocks(role)
        if not blocks:
            return np.zeros(0, dtype=np.int16), 8000
        rate = blocks[0].rate
        position = 0
        for block in blocks:
            start = round(block.t * rate)
            assert abs(start - position) <= 1, (
                f"{role}: block at {block.t:.4f} s, the previous ended at {position / rate:.4f} s"
            )
            position = start + len(block.pcm)
        return np.concatenate([b.pcm for b in blocks]).astype(np.int16), rate


class RecordingHost:
    """A CallHost that keeps every line; `refuse` makes it refuse the next calls (CallRefused)."""

    def __init__(self) -> None:
        self.lines: list[RecordedLine] = []
        self.refuse = ""
        self.refused = 0

    def open(self, start: StreamStart) -> RecordedLine:
        if self.refuse:
            self.refused += 1
            raise CallRefused(self.refuse)
        line = RecordedLine(start)
        self.lines.append(line)
        return line


def free_port(kind: int = socket.SOCK_DGRAM, both: bool = False) -> int:
    """A port free for UDP (and TCP too, when `both`) on 127.0.0.1."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not both:
            return port
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port on 127.0.0.1")


def rtp_range() -> list[int]:
    """An RTP range of 40 ports that nothing else here is using (two agents' tests may run at once)."""
    for _ in range(200):
        first = random.randrange(20000, 29000, 2)
        try:
            socks = []
            for port in range(first, first + 40):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return [first, first + 39]
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free RTP range on 127.0.0.1")


async def run_sipp(
    scenario: str,
    sip_port: int,
    tmp: Path,
    *,
    transport: str = "u1",
    keys: dict[str, str] | None = None,
    duration_ms: int = 1000,
    timeout_s: float = 40.0,
) -> subprocess.CompletedProcess[str]:
    """One call of `scenario` against 127.0.0.1:sip_port; SIPp's exit status says if it went as written."""
    assert SIPP is not None, "sipp is missing: apt-get install sip-tester"
    defaults = {
        "pt2": "0",
        "codec2": "PCMU",
        "rate2": "8000",
        "agent_aor": "sip:agent-1042@pbx.example.com",
        "agent_name": "Sam Agent",
        "customer_aor": "sip:+15551230001@carrier.example.net",
        "customer_name": "Dana Smith",
        "ucid": "UCID-0001",
        "pcap": str(tmp / "none.pcap"),
        "agent_name2": "Sam Agent",
    }
    defaults.update(keys or {})
    args = [
        SIPP,
        f"127.0.0.1:{sip_port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-m",
        "1",
        "-l",
        "1",
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port(socket.SOCK_STREAM if transport.startswith("t") else socket.SOCK_DGRAM)),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_port() & ~1),
        "-d",
        str(duration_ms),
        "-nostdin",
        "-timeout",
        f"{int(timeout_s)}s",
        "-timeout_error",
        "-trace_err",
        "-error_file",
        str(tmp / "sipp-errors.log"),
        "-trace_msg",
        "-message_file",
        str(tmp / "sipp-messages.log"),
    ]
    for key, value in defaults.items():
        args += ["-key", key, value]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=tmp
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout_s + 10)
    return subprocess.CompletedProcess(
        args, process.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )


def sipp_report(tmp: Path, result: subprocess.CompletedProcess[str]) -> str:
    """What SIPp said and logged, for an assertion's message."""
    logs = ""
    for name in ("sipp-errors.log", "sipp-messages.log"):
        path = tmp / name
        if path.exists():
            logs += f"\n--- {name}\n" + path.read_text(errors="replace")[-6000:]
    return f"sipp exit {result.returncode}\nstderr: {result.stderr[-3000:]}{logs}"


SDP_TWO_STREAMS = (
    "v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
    "m=audio {port2} RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n"
)
METADATA = (
    '<?xml version="1.0"?><recording xmlns="urn:ietf:params:xml:ns:recording:1">'
    '<participant participant_id="a"><nameID aor="sip:+15550000001@carrier.example"/></participant>'
    '<participant participant_id="b"><nameID aor="sip:agent-7@pbx.example"/></participant>'
    '<stream stream_id="s1"><label>1</label></stream><stream stream_id="s2"><label>2</label></stream>'
    '<participantstreamassoc participant_id="a"><send>s1</send></participantstreamassoc>'
    '<participantstreamassoc participant_id="b"><send>s2</send></participantstreamassoc></recording>'
)


def multipart_body(sdp: str, metadata: str = METADATA, boundary: str = "probe-b") -> tuple[str, bytes]:
    body = (
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n"
        f"--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\n"
        f"Content-Disposition: recording-session\r\n\r\n{metadata}\r\n--{boundary}--\r\n"
    )
    return f"multipart/mixed;boundary={boundary}", body.encode()


class SipProbe:
    """A bare SIP-over-UDP client for the cases SIPp's scenarios cannot say: garbage, floods, odd bodies.
    Blocking: run it in a thread (asyncio.to_thread) beside the listener's loop."""

    def __init__(self, sip_port: int) -> None:
        self.server = ("127.0.0.1", sip_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3.0)
        self.port = int(self.sock.getsockname()[1])
        self.count = 0
        self.finals: dict[str, str] = {}

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def request(
        self,
        method: str,
        *,
        call_id: str = "",
        content_type: str = "",
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        to_tag: str = "",
        cseq: int = 1,
        branch: str = "",
    ) -> str:
        self.count += 1
        call_id = call_id or f"probe-{self.port}-{self.count}"
        branch = branch or f"z9hG4bK-probe-{self.count}"
        lines = [
            f"{method} sip:srs@127.0.0.1:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <sip:probe@127.0.0.1:{self.port}>;tag=probe{self.port}",
            f"To: <sip:srs@127.0.0.1:{self.server[1]}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:probe@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        self.send_raw(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return call_id

    def final(self, call_id: str) -> str:
        """The final response (>= 200) to the last request of `call_id`; '' if none within 3 s.
        Finals of other calls that arrive meanwhile are kept for their own turn."""
        if call_id in self.finals:
            return self.finals.pop(call_id)
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return ""
            text = data.decode(errors="replace")
            status = text.split(" ", 2)[1] if text.startswith("SIP/2.0 ") else ""
            if not status.isdigit() or int(status) < 200:
                continue
            lines = text.split("\r\n")
            got = next((line[len("Call-ID: ") :] for line in lines if line.startswith("Call-ID: ")), "")
            if got == call_id:
                return text
            self.finals.setdefault(got, text)

    def ack(self, response: str, call_id: str) -> None:
        to_tag = response.split("To:", 1)[1].split("\r\n", 1)[0].split("tag=", 1)[1].strip()
        self.request("ACK", call_id=call_id, to_tag=to_tag)


def config(sip_port: int, **overrides: Any) -> SiprecConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": sip_port,
        "rtp_ports": rtp_range(),
        "agent_aor_pattern": r"^sip:agent-",
        "jitter_ms": 60,
        "rtp_timeout_s": 5.0,
    }
    values.update(overrides)
    return SiprecConfig(**values)


def serve(
    listener: SiprecListener, host: RecordingHost, client: Callable[[], Coroutine[Any, Any, Any]]
) -> Any:
    async def run() -> Any:
        await listener.start(host)
        try:
            return await client()
        finally:
            await listener.stop()

    return asyncio.run(run())


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.corrcoef(a[:n].astype(np.float64), b[:n].astype(np.float64))[0, 1])
