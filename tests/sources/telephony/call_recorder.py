"""A CallHost for the telephony listeners' tests: the host's side of the contract (base.py), recording
what a listener hands it (the StreamStart, each block, keys, updates, the end), so a test can check
roles, facts, durations and audio. Not a stand-in for a peer: the peers are real clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from callguard.core.events import AudioBlock, Role
from callguard.core.facts import CallFacts
from callguard.sources.telephony.base import CallRefused, StreamStart


@dataclass
class RecordedCall:
    start: StreamStart
    blocks: list[AudioBlock] = field(default_factory=list)
    keys: list[tuple[str, float]] = field(default_factory=list)
    updates: list[tuple[CallFacts, str]] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)

    # CallLine
    def audio(self, block: AudioBlock) -> None:
        assert block.pcm.dtype == np.int16 and block.pcm.ndim == 1
        self.blocks.append(block)

    def dtmf(self, digit: str, t: float) -> None:
        self.keys.append((digit, t))

    def update(self, facts: CallFacts, agent_id: str = "") -> None:
        self.updates.append((facts, agent_id))

    def end(self, reason: str) -> None:
        self.ends.append(reason)

    # what the tests read
    def of(self, role: Role) -> list[AudioBlock]:
        return [b for b in self.blocks if b.role == role]

    def pcm(self, role: Role) -> np.ndarray:
        blocks = self.of(role)
        return np.concatenate([b.pcm for b in blocks]) if blocks else np.zeros(0, np.int16)

    def contiguous(self, role: Role) -> bool:
        """Every block of the role starts where the one before ended, from t = 0."""
        t = 0.0
        for block in self.of(role):
            if abs(block.t - t) > 1e-9:
                return False
            t += len(block.pcm) / block.rate
        return True


class CallRecorder:
    """The CallHost: opens a RecordedCall per stream, or refuses while `refusing`."""

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []
        self.refusing = False

    def open(self, start: StreamStart) -> RecordedCall:
        if self.refusing:
            raise CallRefused("at its call limit (the test's)")
        call = RecordedCall(start)
        self.calls.append(call)
        return call

    def call(self, stream_id: str) -> RecordedCall:
        return next(c for c in self.calls if c.start.stream_id == stream_id)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for `condition` on the running loop; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def stereo_excerpt(path: Path, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(customer, agent) int16 of a stereo 8 kHz fixture's excerpt: left is the customer, right the
    agent (the fixtures' convention). Of a μ-law fixture these are μ-law values: encode_ulaw gives
    back the bytes the recording holds."""
    info = sf.info(str(path))
    assert info.channels == 2 and info.samplerate == 8000
    pcm, _ = sf.read(str(path), dtype="int16", start=round(start_s * 8000), stop=round(end_s * 8000))
    return pcm[:, 0].copy(), pcm[:, 1].copy()


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))
