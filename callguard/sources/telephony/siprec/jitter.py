"""A jitter buffer per RTP stream: packets in, the same packets out in sequence order.

Sequence numbers are extended past their 16-bit wrap (RFC 3550 appendix A.1). A packet that comes
in order leaves at once; one that comes after a gap waits for the missing ones up to `wait_s`, then
the gap is given up (`Lost`) and what follows leaves. Duplicates and packets older than a gap
already given up are dropped. A jump of the sequence number (a sender restart) is believed after two
packets in a row; a new SSRC releases what the old one left and starts over. No clock of its own:
the caller passes `now` (the receive loop's monotonic time) and polls while packets wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from callguard.sources.telephony.siprec.rtp import RtpPacket

MAX_DROPOUT = 3000  # a forward jump larger than this is a restart, not loss (RFC 3550 A.1)
MAX_MISORDER = 100  # a packet this far behind the newest is a late one, not a restart
MAX_HELD = 500  # ten seconds of 20 ms packets: more waiting than that is given up at once
SEQ_MOD = 1 << 16


@dataclass(frozen=True, slots=True)
class Lost:
    """`count` packets that never came (or came too late): the playout conceals them."""

    count: int


Released = RtpPacket | Lost


@dataclass
class JitterStats:
    received: int = 0
    released: int = 0
    lost: int = 0
    duplicates: int = 0
    late: int = 0  # came after their gap was given up
    reordered: int = 0  # came after a later packet, in time to be put back in place
    stray: int = 0  # a lone packet far out of sequence
    restarts: int = 0  # sequence jumps believed
    ssrc_changes: int = 0


class JitterBuffer:
    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.stats = JitterStats()
        self.ssrc: int | None = None
        self._next = 0  # the extended sequence number expected next
        self._max = 0  # the highest extended sequence number seen
        self._held: dict[int, tuple[RtpPacket, float]] = {}
        self._given_up: set[int] = set()
        self._probation: int | None = None  # after a stray packet: the sequence that would confirm a jump

    @property
    def waiting(self) -> int:
        return len(self._held)

    def push(self, packet: RtpPacket, now: float) -> list[Released]:
        self.stats.received += 1
        out: list[Released] = []
        if self.ssrc is not None and packet.ssrc != self.ssrc:
            self.stats.ssrc_changes += 1
            out += self.flush()
            self.ssrc = None
        if self.ssrc is None:
            self.ssrc = packet.ssrc
            self._next = self._max = packet.sequence + SEQ_MOD  # room below for late packets
            self._given_up.clear()
            self._probation = None
        ext = self._extend(packet.sequence, out)
        if ext is None:
            return out
        if ext < self._next:
            if ext in self._given_up:
                self.stats.late += 1
            else:
                self.stats.duplicates += 1
            return out
        if ext in self._held:
            self.stats.duplicates += 1
            return out
        if ext < self._max:
            self.stats.reordered += 1
        self._held[ext] = (packet, now)
        out += self._release_in_order()
        while len(self._held) > MAX_HELD:
            out += self._give_up_first_gap()
        out += self.poll(now)
        return out

    def poll(self, now: float) -> list[Released]:
        """Give up the gaps that have kept a later packet waiting for `wait_s`."""
        out: list[Released] = []
        while self._held and now - min(arrival for _, arrival in self._held.values()) >= self.wait_s:
            out += self._give_up_first_gap()
        return out

    def flush(self) -> list[Released]:
        """Everything still held, in order, gaps given up (the stream ends or changes SSRC)."""
        out: list[Released] = []
        while self._held:
            out += self._give_up_first_gap()
        return out

    def _extend(self, sequence: int, out: list[Released]) -> int | None:
        delta = (sequence - self._max) % SEQ_MOD
        if delta < MAX_DROPOUT:
            self._probation = None
            self._max += delta
            return self._max
        if delta <= SEQ_MOD - MAX_MISORDER:
            if sequence != self._probation:
                self.stats.stray += 1
                self._probation = (sequence + 1) % SEQ_MOD
                return None
            # two packets in a row from the new place: the sender restarted its numbering
            self.stats.restarts += 1
            out += self.flush()
            self._probation = None
            self._next = self._max = (self._max // SEQ_MOD + 2) * SEQ_MOD + sequence
            return self._max
        return self._max - (SEQ_MOD - delta)  # behind the newest: reordered, late or a duplicate

    def _release_in_order(self) -> list[Released]:
        out: list[Released] = []
        while self._next in self._held:
            packet, _ = self._held.pop(self._next)
            out.append(packet)
            self.stats.released += 1
            self._next += 1
        return out

    def _give_up_first_gap(self) -> list[Released]:
        first = min(self._held)
        missing = first - self._next
        out: list[Released] = []
        if missing > 0:
            self.stats.lost += missing
            out.append(Lost(missing))
            self._given_up.update(range(self._next, first))
            if len(self._given_up) > 4 * MAX_HELD:
                self._given_up = {s for s in self._given_up if s >= first - MAX_HELD}
        self._next = first
        return out + self._release_in_order()
