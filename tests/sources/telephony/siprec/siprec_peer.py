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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from callguard.core.events import AudioBlock
from callguard.core.facts import CallFacts
from callguard.sources.telephony.base import CallRefused, StreamStart

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
