"""Call recordings in: decoded and resampled in blocks.

Decoding is libsndfile's (soundfile): PCM, mu-law, A-law and float WAV, FLAC
and the rest. Resampling is soxr's streaming resampler, so an hour-long call is
read in blocks and never held in memory whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from callguard.core.config import AudioConfig
from callguard.core.errors import AudioError
from callguard.core.events import Role

BLOCK_SECONDS = 1.0
MIN_RATE, MAX_RATE = 8000, 48000  # telephony to studio; outside it is a damaged header, not a call
_DATA_SIZE_MISMATCH = re.compile(r"^data\s*:\s*(\d+)\s*\(should be", re.MULTILINE)
_BYTES_PER_SECOND = re.compile(r"^\s*Bytes/sec\s*:\s*(\d+)", re.MULTILINE)
# A recorder that streams (sox or ffmpeg to a pipe) cannot know the length and writes a huge
# placeholder size (0x7ffff000, 0xffffffff): the file is whole, not truncated.
_STREAMED_SIZE = 0x7FFF0000


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    path: Path
    rate: int
    channels: int
    subtype: str
    duration: float
    roles: tuple[Role, ...]
    promised_s: float | None = None  # a truncated file: the duration its header promised

    @property
    def truncated(self) -> bool:
        return self.promised_s is not None


def channel_roles(channels: int, config: AudioConfig, path: Path | str = "") -> tuple[Role, ...]:
    """Which party each channel carries: mono is one role, stereo two."""
    if channels == 1:
        return (config.mono_role,)
    if channels == 2:
        roles = tuple(config.stereo_roles)
        # Two channels with one role would be framed as one interleaved stream: garbage.
        if len(set(roles)) != 2 or len(roles) != 2:
            raise AudioError(
                path, f"audio.stereo_roles must name 2 different roles for a stereo file, got {list(roles)}"
            )
        return roles  # type: ignore[return-value]
    raise AudioError(path, f"{channels} channels: expected a mono or stereo recording")


def probe(path: Path | str, config: AudioConfig) -> RecordingInfo:
    """Open a recording far enough to know it is usable; a one-line error otherwise."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a folder, expected an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        info = soundfile.info(str(path))
    except soundfile.LibsndfileError as exc:
        reason = str(exc).split(": ", 1)[-1].strip() or "unreadable"
        raise AudioError(path, f"not a readable audio file ({reason.rstrip('.')})") from None
    except (OSError, RuntimeError) as exc:
        raise AudioError(path, f"cannot be read ({exc})") from None
    # A recorder that crashed mid-call leaves a header promising more than the file holds: replay
    # what it holds (the session says where it ends), unless it holds nothing.
    mismatch = _DATA_SIZE_MISMATCH.search(info.extra_info or "")
    promised_s = None
    if mismatch and int(mismatch[1]) < _STREAMED_SIZE:
        if info.frames <= 0:
            raise AudioError(path, "truncated: the header promises audio, the file holds none")
        rate = _BYTES_PER_SECOND.search(info.extra_info or "")
        promised_s = int(mismatch[1]) / int(rate[1]) if rate and int(rate[1]) > 0 else math.inf
    if info.frames <= 0:
        raise AudioError(path, "holds no audio (0 samples)")
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioError(path, f"sample rate {info.samplerate} Hz: expected {MIN_RATE} to {MAX_RATE} Hz")
    return RecordingInfo(
        path=path,
        rate=info.samplerate,
        channels=info.channels,
        subtype=info.subtype,
        duration=info.frames / info.samplerate,
        roles=channel_roles(info.channels, config, path),
        promised_s=promised_s,
    )


def read_blocks(info: RecordingInfo, rate: int, start_s: float = 0.0) -> Iterator[np.ndarray]:
    """Blocks of int16 audio at `rate`, shape (samples, channels), from `start_s` seconds in (sought, not
    decoded: an hour-long call replayed from its 50th minute starts at once)."""
    resampler = (
        soxr.ResampleStream(info.rate, rate, info.channels, dtype="float32", quality="HQ")
        if info.rate != rate
        else None
    )
    block = max(1, int(info.rate * BLOCK_SECONDS))
    try:
        with soundfile.SoundFile(str(info.path)) as source:
            if start_s > 0:
                source.seek(min(round(start_s * info.rate), source.frames))
            while True:
                data = source.read(block, dtype="float32", always_2d=True)
                last = len(data) < block
                if resampler is not None:
                    data = resampler.resample_chunk(data, last=last)
                if len(data):
                    yield _to_int16(data)
                if last:
                    return
    except soundfile.LibsndfileError as exc:
        raise AudioError(info.path, f"decoding failed ({exc})") from None


def _to_int16(data: np.ndarray) -> np.ndarray:
    return (np.clip(data, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)
