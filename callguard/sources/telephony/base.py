"""The contract between a telephony protocol and the server that runs its calls.

A protocol (SIPREC, Twilio Media Streams, Genesys AudioHook, Asterisk AudioSocket) is a transport
and a decoder: it accepts a stream, says who the call is (`StreamStart`), and pushes each speaker's
decoded PCM to the `CallLine` the host opened for it. The host (`callguard serve`) owns everything
after that: resampling to the pipeline's rate, the call's session on a bounded pool, its sinks and
the agent's panel. A protocol never blocks on the pipeline: `CallLine` methods return at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from callguard.core.events import AudioBlock
from callguard.core.facts import CallFacts


@dataclass(frozen=True)
class StreamStart:
    """Who a forked call is, from the protocol's own metadata."""

    protocol: str  # "siprec", "twilio", "audiohook", "audiosocket"
    stream_id: str  # the protocol's id: SIP Call-ID, Twilio streamSid, AudioHook session id, UUID
    facts: CallFacts  # call_id from the stream (or its custom parameters), names, language, queue
    agent_id: str = ""  # whose panel shows it; '' = not in the metadata (config's default or CTI join)
    remote: str = ""  # the peer's address, for log lines
    extra: Mapping[str, str] = field(default_factory=dict)  # metadata kept for the log (participants...)


class CallRefused(Exception):
    """The host will not take this stream (at its call limit, stopping, or not allowed): the protocol
    answers its peer with its own refusal (SIP 503, WebSocket close 1013, AudioSocket hangup)."""


class CallLine(Protocol):
    """One call's way into the host. Every method returns at once and may be called from any thread."""

    def audio(self, block: AudioBlock) -> None:
        """One speaker's mono int16 PCM at the stream's own rate (8 to 48 kHz). `block.t` is the
        speaker's stream time in seconds: lost audio is concealed by the protocol (silence or its
        codec's concealment), so a speaker's blocks are contiguous."""

    def dtmf(self, digit: str, t: float) -> None:
        """A key pressed on the call (0-9, *, #, A-D)."""

    def update(self, facts: CallFacts, agent_id: str = "") -> None:
        """Newer call facts from the stream (an AudioHook update, a SIPREC re-INVITE's metadata)."""

    def end(self, reason: str) -> None:
        """The stream is over: "hangup", "bye", "stop", "closed", "timeout", "error: ...". Idempotent."""


class CallHost(Protocol):
    def open(self, start: StreamStart) -> CallLine:
        """A new call; raises CallRefused when the host cannot take it."""


class Listener(Protocol):
    """A protocol's server side, bound to its configured address: started on the host's asyncio loop,
    it opens a CallLine per stream. One misbehaving peer costs a log line, never the listener."""

    name: str  # "siprec", "twilio", "audiohook", "audiosocket"

    async def start(self, host: CallHost) -> None:
        """Bind and accept; raises OSError (address in use...) before any call is taken."""

    async def stop(self) -> None:
        """Stop accepting, end every open stream (reason "shutdown") and release the sockets."""
