"""VAD on real voices (Asterisk's English prompts): segments where speech is, no flicker, no frame lost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from callguard.audio.framing import Framer
from callguard.core.config import VadConfig
from callguard.core.events import Event, Frame, SpeechEnd, SpeechStart
from callguard.stages.vad import VoiceActivityDetector
from callguard.testing import frames_of, run_frames, silence

SOUNDS = Path("/usr/share/asterisk/sounds/en")
NOISE_FLOOR_DBFS = -70.0  # a quiet telephone line, as the generated fixtures use
TOLERANCE_S = 0.3

pytestmark = pytest.mark.skipif(not SOUNDS.is_dir(), reason="asterisk-core-sounds-en-wav is not installed")


@dataclass
class Call:
    rate: int
    pcm: np.ndarray  # int16 mono
    truth: list[tuple[float, float]]  # speech spans, in seconds


def prompt(name: str, rate: int) -> np.ndarray:
    """An Asterisk prompt (8 kHz) at `rate`, float in [-1, 1]."""
    samples, file_rate = soundfile.read(SOUNDS / f"{name}.wav", dtype="float32")
    return soxr.resample(samples, file_rate, rate) if file_rate != rate else samples


def active_span(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """First and last 10 ms within 40 dB of the clip's loudest: where the voice really is."""
    hop = rate // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop).astype(np.float64)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    active = np.flatnonzero(level > level.max() - 40)
    return active[0] / 100, (active[-1] + 1) / 100


def build_call(rate: int, parts: list[str | float], seed: int = 1) -> Call:
    """Prompts and pauses (seconds) in sequence over a steady noise floor."""
    pieces, truth, t = [], [], 0.0
    for part in parts:
        if isinstance(part, float):
            piece = np.zeros(round(part * rate), dtype=np.float32)
        else:
            piece = prompt(part, rate)
            start, end = active_span(piece, rate)
            truth.append((t + start, t + end))
        pieces.append(piece)
        t += len(piece) / rate
    audio = np.concatenate(pieces)
    audio += np.random.default_rng(seed).normal(0, 10 ** (NOISE_FLOOR_DBFS / 20), len(audio))
    return Call(rate, (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16), truth)


@pytest.fixture(scope="session")
def two_utterances() -> dict[int, Call]:
    """1 s of line noise, a 2.7 s sentence, 2 s of noise, a 1.7 s sentence, 1.5 s of noise."""
    parts: list[str | float] = [1.0, "vm-nonumber", 2.0, "all-circuits-busy-now", 1.5]
    return {rate: build_call(rate, parts) for rate in (8000, 16000, 32000, 48000)}


def run_vad(
    call: Call, frame_ms: int, config: VadConfig | None = None, block: int = 1000
) -> tuple[list[Frame], list[Frame], list[Event]]:
    """The framer's frames (the call pushed `block` samples at a time), the frames the VAD released
    (flush included) and its events."""
    framer = Framer("customer", call.rate, frame_ms)
    framed = [f for at in range(0, len(call.pcm), block) for f in framer.push(call.pcm[at : at + block])]
    vad = VoiceActivityDetector(config or VadConfig(), call.rate, frame_ms, "customer")
    released, events = run_frames(vad, framed, framer.t)
    return framed, released, events


def segments(events: list[Event]) -> list[tuple[float, float]]:
    starts = [e.t for e in events if isinstance(e, SpeechStart)]
    ends = [e.t for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == len(ends), "every start has its end"
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStart, SpeechEnd] * len(starts), "starts and ends alternate"
    return list(zip(starts, ends, strict=True))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_segments_match_the_speech(two_utterances: dict[int, Call], rate: int, frame_ms: int) -> None:
    call = two_utterances[rate]
    _, _, events = run_vad(call, frame_ms)
    found = segments(events)
    assert len(found) == len(call.truth), f"found {found}, truth {call.truth}"
    for (start, end), (true_start, true_end) in zip(found, call.truth, strict=True):
        assert start == pytest.approx(true_start, abs=TOLERANCE_S)
        assert end == pytest.approx(true_end, abs=TOLERANCE_S)
    for event in events:
        assert event.speaker == "customer"
        if isinstance(event, SpeechEnd):
            start = max(s for s, _ in found if s <= event.t)
            assert event.duration == pytest.approx(event.t - start)


@pytest.mark.parametrize("rate", [32000, 48000])
def test_wideband_rates(two_utterances: dict[int, Call], rate: int) -> None:
    assert len(segments(run_vad(two_utterances[rate], 30)[2])) == 2


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_every_frame_comes_out_once_in_order(
    two_utterances: dict[int, Call], rate: int, frame_ms: int
) -> None:
    framed, released, _ = run_vad(two_utterances[rate], frame_ms, block=777)
    assert [f.t for f in released] == [f.t for f in framed]
    assert all(a.pcm == b.pcm for a, b in zip(framed, released, strict=True))


@pytest.mark.parametrize("frame_ms", [10, 30])
def test_speech_flags_cover_the_speech_and_not_the_silence(
    two_utterances: dict[int, Call], frame_ms: int
) -> None:
    call = two_utterances[8000]
    _, released, events = run_vad(call, frame_ms)
    padding = VadConfig().padding_ms / 1000
    for frame in released:
        middle = frame.t + frame_ms / 2000
        if any(start + 0.1 < middle < end - 0.1 for start, end in call.truth):
            assert frame.speech, f"frame at {frame.t:.2f} s is inside speech"
        if all(middle < start - padding - 0.1 or middle > end + padding + 0.1 for start, end in call.truth):
            assert not frame.speech, f"frame at {frame.t:.2f} s is in the silence"
    # Each segment's frames, from its start to its end, are all flagged.
    for start, end in segments(events):
        inside = [f for f in released if start <= f.t < end]
        assert inside and all(f.speech for f in inside)


def pause_inside(rate: int, pause_s: float) -> Call:
    """One sentence cut in its middle with a pause of `pause_s` of line noise."""
    sentence = prompt("vm-nonumber", rate)
    cut = len(sentence) // 2
    pieces = [
        np.zeros(rate, np.float32),
        sentence[:cut],
        np.zeros(round(pause_s * rate), np.float32),
        sentence[cut:],
        np.zeros(rate, np.float32),
    ]
    audio = np.concatenate(pieces) + np.random.default_rng(5).normal(
        0, 10 ** (NOISE_FLOOR_DBFS / 20), sum(map(len, pieces))
    )
    return Call(rate, (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16), [])


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_a_short_pause_does_not_split_the_segment(frame_ms: int) -> None:
    assert len(segments(run_vad(pause_inside(8000, 0.2), frame_ms)[2])) == 1


def test_a_long_pause_does_split_it() -> None:
    assert len(segments(run_vad(pause_inside(8000, 1.2), 30)[2])) == 2


def test_a_click_does_not_open_a_segment() -> None:
    rate = 8000
    audio = np.zeros(2 * rate, dtype=np.float32)
    audio[rate : rate + 480] = 0.5 * np.sin(2 * np.pi * 300 * np.arange(480) / rate)  # 60 ms burst
    call = Call(rate, (audio * 32768).astype(np.int16), [])
    framed, released, events = run_vad(call, 30)
    assert events == []
    assert len(released) == len(framed) and not any(f.speech for f in released)


def test_flush_closes_an_open_segment_at_the_end_of_the_call(two_utterances: dict[int, Call]) -> None:
    call = two_utterances[8000]
    cut = round((call.truth[0][0] + 1.0) * call.rate)  # the call is cut a second into the first sentence
    framed, released, events = run_vad(Call(call.rate, call.pcm[:cut], call.truth[:1]), 30)
    ((start, end),) = segments(events)
    assert start == pytest.approx(call.truth[0][0], abs=TOLERANCE_S)
    assert end == pytest.approx(framed[-1].t + 0.03, abs=TOLERANCE_S)
    assert [f.t for f in released] == [f.t for f in framed]


def test_flush_releases_frames_still_waiting_in_the_window() -> None:
    vad = VoiceActivityDetector(VadConfig(), 8000, 30, "agent")
    frames = frames_of(silence(0.12, 8000), 8000, 30, "agent")  # fewer frames than the window holds
    released = [f for frame in frames for f in vad.process(frame)[0]]
    assert released == []
    frames, events = vad.flush(0.12)
    assert [f.t for f in frames] == [0.0, 0.03, 0.06, 0.09] and events == []
    assert vad.flush(0.12) == ([], [])


def test_padding_is_configurable() -> None:
    """A 2 s window bridges the 1.2 s pause that the default 300 ms window splits at."""
    call = pause_inside(8000, 1.2)
    assert len(segments(run_vad(call, 30, VadConfig(padding_ms=2000))[2])) == 1
    assert len(segments(run_vad(call, 30, VadConfig(padding_ms=300))[2])) == 2


@pytest.mark.parametrize(("rate", "frame_ms"), [(44100, 30), (8000, 25), (16000, 40), (11025, 10)])
def test_rates_and_frames_webrtcvad_cannot_take(rate: int, frame_ms: int) -> None:
    with pytest.raises(ValueError, match=f"{frame_ms} ms frames at {rate} Hz"):
        VoiceActivityDetector(VadConfig(), rate, frame_ms, "customer")
