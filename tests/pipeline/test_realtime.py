"""`drive`: a recording fed to a session as a live capture delivers it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callguard.audio.files import probe
from callguard.core.config import Config, load_config
from callguard.core.events import Event, Role
from callguard.pipeline.realtime import drive
from callguard.pipeline.session import CallSession

RATE = 16000  # the pipeline's rate: no resampling, so fed samples can be compared exactly


class FeedLog:
    """Stands where a CallSession would (drive needs only feed and end): notes what it is given, and when."""

    def __init__(self) -> None:
        self.fed: dict[Role, list[np.ndarray]] = {"customer": [], "agent": []}
        self.calls: list[tuple[Role, int, float]] = []  # role, samples, perf_counter()
        self.ended = False

    def feed(self, role: Role, pcm: np.ndarray) -> list[Event]:
        self.fed[role].append(pcm.copy())
        self.calls.append((role, len(pcm), time.perf_counter()))
        return []

    def end(self) -> list[Event]:
        self.ended = True
        return []

    def audio(self, role: Role) -> np.ndarray:
        return np.concatenate(self.fed[role])


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(None)


@pytest.fixture(scope="module")
def stereo_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """3.7 s of stereo noise at the pipeline rate, every sample distinct enough to check offsets."""
    samples = np.random.default_rng(9).integers(-20000, 20000, size=(round(3.7 * RATE), 2), dtype=np.int16)
    path = tmp_path_factory.mktemp("drive") / "stereo.wav"
    soundfile.write(path, samples, RATE, subtype="PCM_16")
    return path, samples


def run(config: Config, path: Path, **kwargs: object) -> tuple[FeedLog, object]:
    log = FeedLog()
    result = drive(probe(path, config.audio), config, log, **kwargs)  # type: ignore[arg-type]
    return log, result


def test_every_whole_frame_is_fed_once_in_blocks_each_speaker_in_turn(
    config: Config, stereo_wav: tuple[Path, np.ndarray]
) -> None:
    path, samples = stereo_wav
    log, result = run(config, path, speed=None)
    frame = RATE * config.audio.frame_ms // 1000
    whole = len(samples) // frame * frame
    assert np.array_equal(log.audio("customer"), samples[:whole, 0])
    assert np.array_equal(log.audio("agent"), samples[:whole, 1])
    block = round(config.daemon.block_ms / config.audio.frame_ms) * frame
    sizes = [n for role, n, _ in log.calls if role == "customer"]
    assert sizes[:-1] == [block] * (len(sizes) - 1) and 0 < sizes[-1] <= block and sizes[-1] % frame == 0
    assert [role for role, _, _ in log.calls] == ["customer", "agent"] * len(sizes)
    assert log.ended and result.audio_s == pytest.approx(whole / RATE)  # type: ignore[attr-defined]


def test_a_window_of_the_call_starts_where_asked(config: Config, stereo_wav: tuple[Path, np.ndarray]) -> None:
    path, samples = stereo_wav
    log, result = run(config, path, speed=None, start=1.5, stop=2.6)
    frame = RATE * config.audio.frame_ms // 1000
    frames = int((2.6 - 1.5) * 1000 // config.audio.frame_ms)
    first = round(1.5 * RATE)
    assert np.array_equal(log.audio("customer"), samples[first : first + frames * frame, 0])
    assert result.audio_s == pytest.approx(frames * frame / RATE)  # type: ignore[attr-defined]


def test_paced_blocks_are_never_delivered_before_they_were_spoken(
    config: Config, stereo_wav: tuple[Path, np.ndarray]
) -> None:
    path, _ = stereo_wav
    speed = 8.0
    log, result = run(config, path, speed=speed, stop=2.0)
    started = result.started  # type: ignore[attr-defined]
    spoken = 0  # samples of the customer's channel delivered so far
    for role, samples, at in log.calls:
        if role == "customer":
            spoken += samples
            assert at >= started + spoken / RATE / speed - 1e-4
    assert result.wall_s >= result.audio_s / speed  # type: ignore[attr-defined]


def test_a_real_session_follows_the_call_clock(config: Config, stereo_wav: tuple[Path, np.ndarray]) -> None:
    path, _ = stereo_wav
    session = CallSession(config, roles=("customer", "agent"))
    marks: list[float] = []
    result = drive(probe(path, config.audio), config, session, speed=None, stop=3.0, on_mark=marks.append)
    assert session.t == pytest.approx(result.audio_s) and session.ended
    # At the end of the first block past each second of call time, and at the end of the call.
    block_s = round(config.daemon.block_ms / config.audio.frame_ms) * config.audio.frame_ms / 1000
    assert block_s == pytest.approx(0.21)  # 7 frames of 30 ms for the default 200 ms
    assert marks == pytest.approx([1.05, 2.1, 3.0])
