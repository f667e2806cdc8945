"""Replay a recording into a session as a live source would deliver it, with a clock on every event.

A live capture hands over the frame covering call time [t, t + frame] at wall time
t + frame after the call started, never earlier. `drive` keeps that contract (or
runs a given number of times faster, or unpaced), stamps every event with the
`time.perf_counter()` of the moment it left the session, and calls `on_mark` at
regular steps of call time, so that a measurement can sample CPU time and memory
as the call goes. `replay_file` feeds through it too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from callguard.audio.files import RecordingInfo, probe, read_blocks
from callguard.core.config import Config
from callguard.core.events import Event
from callguard.pipeline.session import CallSession

EventSink = Callable[[Event, float], None]  # the event and the perf_counter() when it was emitted
MarkSink = Callable[[float], None]  # call time reached


@dataclass(frozen=True, slots=True)
class DriveResult:
    audio_s: float  # call seconds fed (stop - start, to the frame)
    wall_s: float  # perf_counter seconds from the first frame to the end of the call
    started: float  # perf_counter() when feeding began: session call time T was due at started + T / speed


def open_call(path: Path, config: Config) -> RecordingInfo:
    """The recording's roles and rate (a session for it needs `roles=info.roles`)."""
    return probe(path, config.audio)


def drive(
    info: RecordingInfo,
    config: Config,
    session: CallSession,
    *,
    speed: float | None = 1.0,
    start: float = 0.0,
    stop: float | None = None,
    on_event: EventSink | None = None,
    on_mark: MarkSink | None = None,
    mark_every_s: float = 1.0,
    block_s: float | None = None,
) -> DriveResult:
    """Feed call time [start, stop) of `info` to `session`, paced at `speed` times real time (None: unpaced),
    then end the call. Audio before `start` is skipped (sought, not decoded): the session's clock
    starts at 0 there.
    """
    emit = on_event or (lambda _event, _at: None)
    rate = config.audio.rate
    frame_samples = rate * config.audio.frame_ms // 1000
    frame_s = frame_samples / rate
    limit = math.inf if stop is None else math.floor((stop - start) / frame_s + 1e-9)  # whole frames
    next_mark = mark_every_s
    block_s = config.daemon.block_ms / 1000 if block_s is None else block_s
    frames_per_block = max(1, round(block_s / frame_s))
    fed = 0
    started = time.perf_counter()
    # Audio arrives as a live capture delivers it: a block at a time (the daemon's devices deliver
    # [daemon] block_ms blocks), each speaker's in turn, each only once its last sample has been spoken.
    for block in _blocks(info, rate, frame_samples * frames_per_block, start):
        frames = int(min(limit - fed, len(block) // frame_samples))  # whole frames only
        if frames <= 0:
            break
        block = block[: frames * frame_samples]
        block_end = (fed + frames) * frame_s
        if speed is not None:
            wait = started + block_end / speed - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        for channel, role in enumerate(info.roles):
            for event in session.feed(role, block[:, channel]):
                emit(event, time.perf_counter())
        fed += frames
        if on_mark is not None and fed * frame_s >= next_mark:
            on_mark(fed * frame_s)
            next_mark += mark_every_s
    if info.truncated and stop is None:
        promised = (
            "" if info.promised_s == math.inf else f" of the {info.promised_s:.1f} s its header promised"
        )
        message = f"recording ends at {fed * frame_s:.1f} s{promised}: the file is truncated"
        for event in session.notice(message, "truncated"):
            emit(event, time.perf_counter())
    for event in session.end():
        emit(event, time.perf_counter())
    return DriveResult(audio_s=fed * frame_s, wall_s=time.perf_counter() - started, started=started)


def _blocks(info: RecordingInfo, rate: int, block_samples: int, start: float) -> Iterator[np.ndarray]:
    """Blocks of `block_samples` (samples, channels) int16 audio from `start` seconds on; the last one
    may be shorter. Only whole frames are used from it: a session frames what it is given."""
    pending = np.zeros((0, info.channels), dtype=np.int16)
    for block in read_blocks(info, rate, start):
        pending = np.concatenate((pending, block)) if len(pending) else block
        whole = len(pending) // block_samples * block_samples
        for offset in range(0, whole, block_samples):
            yield pending[offset : offset + block_samples]
        pending = pending[whole:]
    if len(pending):
        yield pending
