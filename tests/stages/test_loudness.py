"""Loudness: frame levels, a per-speaker baseline from speech frames only, and shouting against it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from callguard.core.config import LoudnessConfig, VadConfig
from callguard.core.events import Event, Frame, Shouting
from callguard.stages.base import FrameChain
from callguard.stages.loudness import LoudnessTracker, frame_level_db
from callguard.stages.vad import VoiceActivityDetector
from callguard.testing import frames_of, run_frames, tone

RATE, FRAME_MS = 8000, 30
FRAME_S = FRAME_MS / 1000
SAMPLES = RATE * FRAME_MS // 1000
SOUNDS = Path("/usr/share/asterisk/sounds/en")


def sine(level_dbfs: float, hz: float = 400.0) -> bytes:
    """One frame of a sine whose RMS is `level_dbfs` (its peak 3 dB above: over -3 dBFS it clips)."""
    return tone(FRAME_S, RATE, level_dbfs, hz).tobytes()


class Feed:
    """Frames at fixed levels, one after another, with their call times."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    @property
    def t(self) -> float:
        return len(self.frames) * FRAME_S

    def add(self, seconds: float, level_dbfs: float, speech: bool = True) -> float:
        """Append `seconds` of frames; returns the time they start."""
        start = self.t
        pcm = sine(level_dbfs)
        level = frame_level_db(pcm)  # what the Framer gives each frame
        for _ in range(round(seconds / FRAME_S)):
            self.frames.append(
                Frame(t=round(self.t, 6), speaker="customer", pcm=pcm, speech=speech, level_db=level)
            )
        return start


def run(
    frames: Iterable[Frame], config: LoudnessConfig | None = None, **kwargs: float
) -> tuple[LoudnessTracker, list[Frame], list[Shouting]]:
    tracker = LoudnessTracker(config or LoudnessConfig(), FRAME_MS, "customer", **kwargs)
    out, events = run_frames(tracker, frames)
    return tracker, out, shouting(events)


def shouting(events: list[Event]) -> list[Shouting]:
    """The tracker's events, each checked to be shouting: it says nothing else."""
    assert all(isinstance(e, Shouting) for e in events)
    return [e for e in events if isinstance(e, Shouting)]


# ---------------------------------------------------------------------------
# Frame level


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    assert frame_level_db(sine(-3.0103, hz=1000)) == pytest.approx(-3.01, abs=0.02)
    peak = np.round(32767 * np.sin(2 * np.pi * 1000 * np.arange(SAMPLES) / RATE)).astype(np.int16)
    assert frame_level_db(peak.tobytes()) == pytest.approx(-3.01, abs=0.02)


def test_full_scale_square_is_0_dbfs_and_halving_is_minus_6() -> None:
    square = np.full(SAMPLES, -32768, dtype=np.int16)
    assert frame_level_db(square.tobytes()) == pytest.approx(0.0, abs=1e-6)
    assert frame_level_db((square // 2).tobytes()) == pytest.approx(-6.02, abs=0.01)


def test_silence_is_the_floor() -> None:
    # the floor is a float32 logarithm: -120 to within its last bits, not exactly
    assert frame_level_db(bytes(2 * SAMPLES)) == pytest.approx(-120.0, abs=1e-3)
    assert frame_level_db(b"") == pytest.approx(-120.0, abs=1e-3)


def test_frames_pass_through_unchanged() -> None:
    feed = Feed()
    feed.add(0.3, -30.0)
    feed.add(0.3, -50.0, speech=False)
    _, out, _ = run(feed.frames)
    assert out == feed.frames


# ---------------------------------------------------------------------------
# Baseline


def test_baseline_waits_for_enough_speech() -> None:
    feed = Feed()
    feed.add(2.5, -30.0)
    tracker, _, _ = run(feed.frames)
    assert tracker.baseline_db is None  # baseline_speech_s is 3 s
    feed.add(0.6, -30.0)
    tracker, _, _ = run(feed.frames)
    assert tracker.baseline_db == pytest.approx(-30.0, abs=0.5)


def test_baseline_learns_from_speech_frames_only() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    feed.add(20.0, -6.0, speech=False)  # loud hold music that the VAD passed but the gate took out
    feed.add(1.0, -30.0)
    tracker, _, shouts = run(feed.frames)
    assert tracker.baseline_db == pytest.approx(-30.0, abs=0.5)
    assert shouts == []


def test_baseline_ignores_speech_frames_under_the_floor() -> None:
    feed = Feed()
    feed.add(10.0, -65.0)  # line hiss inside the VAD's padding, under floor_dbfs (-55)
    feed.add(4.0, -30.0)
    tracker, _, _ = run(feed.frames)
    assert tracker.baseline_db == pytest.approx(-30.0, abs=0.5)


def test_a_few_shouts_do_not_drag_the_baseline_up() -> None:
    feed = Feed()
    for _ in range(5):
        feed.add(6.0, -30.0)
        feed.add(1.0, -12.0)
    tracker, _, _ = run(feed.frames)
    assert tracker.baseline_db == pytest.approx(-30.0, abs=0.5)


# ---------------------------------------------------------------------------
# Shouting


def test_shouting_15_db_over_the_baseline() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    onset = feed.add(1.5, -15.0)
    feed.add(2.0, -30.0)
    _, _, shouts = run(feed.frames)
    assert len(shouts) == 1
    shout = shouts[0]
    assert shout.speaker == "customer" and shout.reason == "baseline"
    assert shout.t == pytest.approx(onset, abs=0.1)
    assert shout.level_db == pytest.approx(-15.0, abs=0.5)
    assert shout.baseline_db == pytest.approx(-30.0, abs=0.5)
    assert shout.duration == pytest.approx(LoudnessConfig().min_shout_s, abs=FRAME_S)


def test_5_db_louder_is_not_shouting() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    feed.add(3.0, -25.0)
    assert run(feed.frames)[2] == []


def test_too_short_a_shout_is_not_shouting() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    feed.add(0.3, -12.0)  # min_shout_s is 0.6
    feed.add(1.0, -30.0)
    feed.add(0.3, -12.0)
    assert run(feed.frames)[2] == []


def test_a_shout_broken_by_a_pause_must_start_over() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    for _ in range(3):
        feed.add(0.45, -12.0)
        feed.add(0.3, -80.0, speech=False)
    assert run(feed.frames)[2] == []


def test_margin_and_duration_are_configurable() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    onset = feed.add(0.8, -24.0)
    _, _, shouts = run(feed.frames, LoudnessConfig(margin_db=5.0, min_shout_s=0.3))
    # The 300 ms smoothing takes a quarter second to climb 5 of the 6 dB.
    assert len(shouts) == 1 and shouts[0].t == pytest.approx(onset, abs=0.3)
    assert run(feed.frames, LoudnessConfig(margin_db=7.0, min_shout_s=0.3))[2] == []


def test_a_per_speaker_margin_overrides_the_config() -> None:
    """The agent's own channel is judged with policy.agent_margin_db."""
    feed = Feed()
    feed.add(4.0, -30.0)
    feed.add(1.0, -22.0)
    assert run(feed.frames)[2] == []
    assert len(run(feed.frames, margin_db=6.0)[2]) == 1


def test_ceiling_before_any_baseline() -> None:
    feed = Feed()
    onset = feed.add(1.0, 0.0)  # an overdriven scream in the first second
    tracker, _, shouts = run(feed.frames)
    assert tracker.baseline_db is None
    assert len(shouts) == 1
    assert shouts[0].reason == "ceiling" and shouts[0].baseline_db is None
    assert shouts[0].t == pytest.approx(onset, abs=0.05)
    assert shouts[0].level_db >= LoudnessConfig().ceiling_dbfs


def test_loud_but_under_the_ceiling_before_a_baseline_is_not_shouting() -> None:
    feed = Feed()
    feed.add(2.0, -8.0)
    assert run(feed.frames)[2] == []


def test_cooldown_between_shouts() -> None:
    feed = Feed()
    feed.add(4.0, -30.0)
    first = feed.add(1.0, -12.0)
    feed.add(2.0, -30.0)
    feed.add(1.0, -12.0)  # 3 s after the first: inside the 5 s cooldown
    feed.add(3.0, -30.0)
    third = feed.add(1.0, -12.0)  # 7 s after the first
    _, _, shouts = run(feed.frames)
    assert [s.t for s in shouts] == pytest.approx([first, third], abs=0.1)

    no_cooldown = run(feed.frames, LoudnessConfig(cooldown_s=0.0))[2]
    assert len(no_cooldown) == 3


# ---------------------------------------------------------------------------
# Real voice, through the real VAD: relative to the speaker, whatever the line gain


def real_call() -> tuple[np.ndarray, float]:
    """Eight sentences at normal effort (about -22 dBFS), then one 15 dB louder (peaks clip, as shouts do)."""
    names = [
        "vm-nonumber",
        "all-circuits-busy-now",
        "conf-invalid",
        "vm-tocallnum",
        "dir-welcome",
        "call-fwd-on-busy",
        "vm-repeat",
        "agent-loginok",
        "vm-nonumber",
    ]
    pause = np.zeros(RATE * 8 // 10, dtype=np.float32)
    pieces, loud_at = [pause], 0.0
    for i, name in enumerate(names):
        samples, rate = soundfile.read(SOUNDS / f"{name}.wav", dtype="float32")
        samples = soxr.resample(samples, rate, RATE) if rate != RATE else samples
        if i == len(names) - 1:
            loud_at = sum(map(len, pieces)) / RATE
            samples = samples * 10 ** (15 / 20)
        pieces += [samples, pause]
    audio = np.concatenate(pieces) + np.random.default_rng(2).normal(
        0, 10 ** (-70 / 20), sum(map(len, pieces))
    )
    return audio, loud_at


@pytest.fixture(scope="module")
def call_with_a_shout() -> tuple[np.ndarray, float]:
    if not SOUNDS.is_dir():
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    return real_call()


def vad_then_loudness(audio: np.ndarray) -> tuple[LoudnessTracker, list[Shouting]]:
    vad = VoiceActivityDetector(VadConfig(), RATE, FRAME_MS, "customer")
    tracker = LoudnessTracker(LoudnessConfig(), FRAME_MS, "customer")
    pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)
    _, events = run_frames(FrameChain([vad, tracker]), frames_of(pcm, RATE, FRAME_MS))
    return tracker, [e for e in events if isinstance(e, Shouting)]


def test_real_voice_shout_is_found_whatever_the_line_gain(
    call_with_a_shout: tuple[np.ndarray, float],
) -> None:
    audio, loud_at = call_with_a_shout
    baselines = []
    for line_gain_db in (0.0, -20.0):
        tracker, shouts = vad_then_loudness(audio * 10 ** (line_gain_db / 20))
        assert tracker.baseline_db is not None
        baselines.append(tracker.baseline_db)
        assert len(shouts) == 1, shouts
        assert shouts[0].reason == "baseline"
        assert loud_at <= shouts[0].t <= loud_at + 1.0
        assert shouts[0].level_db - shouts[0].baseline_db >= LoudnessConfig().margin_db  # type: ignore[operator]
    assert baselines[0] == pytest.approx(-22.0, abs=3.0)
    # The baseline follows the line. (Not exactly: the absolute floor drops the quietest speech frames.)
    assert baselines[0] - baselines[1] == pytest.approx(20.0, abs=3.0)


def test_real_voice_at_normal_effort_is_not_shouting(call_with_a_shout: tuple[np.ndarray, float]) -> None:
    audio, loud_at = call_with_a_shout
    normal = audio[: round(loud_at * RATE)]
    for gain_db in (0.0, -20.0):
        assert vad_then_loudness(normal * 10 ** (gain_db / 20))[1] == []


def test_speaker_of_the_event_is_the_trackers() -> None:
    tracker = LoudnessTracker(LoudnessConfig(), FRAME_MS, "agent")
    pcm = sine(0.0)
    frames = [
        Frame(t=i * FRAME_S, speaker="agent", pcm=pcm, speech=True, level_db=frame_level_db(pcm))
        for i in range(40)
    ]
    shouts = shouting(run_frames(tracker, frames)[1])
    assert [s.speaker for s in shouts] == ["agent"]
