"""The two stage shapes: frame stages chained (FrameChain), and the harness that runs any stage."""

from __future__ import annotations

import numpy as np
import pytest

from callguard.core.config import GateConfig, LanguageConfig, LoudnessConfig, VadConfig
from callguard.core.events import LanguageDecided, Shouting, SpeechEnd, SpeechStart, Transcript
from callguard.stages.base import FrameChain
from callguard.stages.gate import NonSpeechGate
from callguard.stages.language import LanguageDecider
from callguard.stages.loudness import LoudnessTracker
from callguard.stages.vad import VoiceActivityDetector
from callguard.testing import frames_of, noise, run_events, run_frames, silence, ticks, tone

RATE, FRAME_MS = 8000, 30


def loud_call() -> np.ndarray:
    """Quiet, then noise that webrtcvad calls speech: at -30 dBFS for 4 s, then 22 dB louder for 1 s."""
    loud = [noise(4.0, RATE, -30.0, seed=1), noise(1.0, RATE, -8.0, seed=2)]
    return np.concatenate([silence(1.0, RATE), *loud, silence(1.0, RATE)])


def vad() -> VoiceActivityDetector:
    return VoiceActivityDetector(VadConfig(), RATE, FRAME_MS, "customer")


def loudness() -> LoudnessTracker:
    return LoudnessTracker(LoudnessConfig(baseline_speech_s=1.0), FRAME_MS, "customer")


def test_a_chain_gives_what_its_stages_give_one_after_the_other() -> None:
    frames = frames_of(loud_call(), RATE, FRAME_MS)
    chained, events = run_frames(FrameChain([vad(), loudness()]), frames)
    decided, vad_events = run_frames(vad(), frames)
    passed, loud_events = run_frames(loudness(), decided)
    assert [(f.t, f.speech) for f in chained] == [(f.t, f.speech) for f in passed]
    assert len(chained) == len(frames)
    assert sorted(events, key=repr) == sorted(vad_events + loud_events, key=repr)
    kinds = [type(e) for e in events]
    assert SpeechStart in kinds and Shouting in kinds, kinds  # the call does exercise both stages


def test_a_chain_reports_a_shout_between_its_segments_start_and_end() -> None:
    """Events come out in call order across stages: the VAD's start, the tracker's shout, the VAD's end."""
    _, events = run_frames(FrameChain([vad(), loudness()]), frames_of(loud_call(), RATE, FRAME_MS))
    kinds = [type(e) for e in events]
    shout = kinds.index(Shouting)
    assert kinds.index(SpeechStart) < shout < kinds.index(SpeechEnd)


def test_a_chains_flush_sends_held_frames_through_the_later_stages() -> None:
    chain = FrameChain([vad(), NonSpeechGate(GateConfig(), RATE, FRAME_MS), loudness()])
    frames = frames_of(silence(0.12, RATE), RATE, FRAME_MS)  # fewer frames than the VAD's window holds
    assert [out for frame in frames for out in chain.process(frame)[0]] == []
    held, events = chain.flush(0.12)
    assert [f.t for f in held] == [f.t for f in frames] and events == []
    assert chain.flush(0.12) == ([], [])


def test_an_empty_chain_passes_frames_on() -> None:
    frames = frames_of(tone(0.3, RATE, -20.0), RATE, FRAME_MS)
    assert run_frames(FrameChain([]), frames) == (frames, [])


def test_run_events_ticks_once_the_events_up_to_each_tick_are_read() -> None:
    decider = LanguageDecider(LanguageConfig(auto_min_words=3))
    words = [Transcript(t=t, speaker="customer", text="the and it is", final=True) for t in (1.0, 2.0)]
    given = LanguageDecider(LanguageConfig(), given="fr", source="cli")
    assert run_events(given, words, tick_at=[0.0, 1.0]) == [
        LanguageDecided(t=0.0, speaker="system", lang="fr", source="cli")
    ]
    decided = run_events(decider, words, tick_at=[0.5])  # the words come after the only tick
    assert [(e.t, e.lang) for e in decided if isinstance(e, LanguageDecided)] == [(1.0, "en")]


def test_ticks_include_both_ends_without_drift() -> None:
    assert ticks(1.0, 0.25) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert ticks(0.95, 0.1, start=0.5) == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert len(ticks(3600.0, 0.1)) == 36001
